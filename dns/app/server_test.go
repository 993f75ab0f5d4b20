package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/client"
	"skiff.dev/client/config"
	"skiff.dev/client/fake"
	"skiff.dev/dns/app"
	"skiff.dev/dns/internal/testpki"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// relay serves the fake clientset's API over TLS on 127.0.0.1, as the
// apiserver serves its own, so skiff-dns reaches it the way a pod reaches
// the apiserver: a TLS connection verified against a CA file, a bearer
// token on every call. The fake itself only listens in memory.
type relay struct {
	apipb.UnimplementedAPIServer
	api   apipb.APIClient
	token string
	calls atomic.Int64
}

func (r *relay) authorize(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+r.token {
		return status.Error(codes.Unauthenticated, "Unauthorized")
	}
	r.calls.Add(1)
	return nil
}

func (r *relay) List(ctx context.Context, req *apipb.ListRequest) (*apipb.ListResponse, error) {
	return r.api.List(ctx, req)
}

func (r *relay) Get(ctx context.Context, req *apipb.GetRequest) (*anypb.Any, error) {
	return r.api.Get(ctx, req)
}

func (r *relay) Watch(req *apipb.WatchRequest, out grpc.ServerStreamingServer[apipb.WatchEvent]) error {
	in, err := r.api.Watch(out.Context(), req)
	if err != nil {
		return err
	}
	for {
		ev, err := in.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := out.Send(ev); err != nil {
			return err
		}
	}
}

// serveRelay starts a relay to cs on 127.0.0.1 and returns its address.
func serveRelay(t *testing.T, cs *fake.Clientset, cert testpki.Cert, token string) (string, *relay) {
	t.Helper()
	pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{api: cs.Client.API, token: token}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewServerTLSFromCert(&pair)),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := r.authorize(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := r.authorize(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	apipb.RegisterAPIServer(srv, r)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), r
}

// freePort is a port free for both TCP and UDP on 127.0.0.1 a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return fmt.Sprint(port)
	}
	t.Fatal("no port free for both TCP and UDP")
	return ""
}

// addonCorefile is the Corefile of manifests/addons/coredns.yaml's
// ConfigMap, as the pod mounts it.
func addonCorefile(t *testing.T) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "manifests", "addons", "coredns.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	docs, err := codec.ReadManifests(f, codec.Options{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if cm, ok := d.Object.(*corev1.ConfigMap); ok && cm.GetMetadata().GetName() == "coredns" {
			return cm.GetData()["Corefile"]
		}
	}
	t.Fatal("the addon has no coredns ConfigMap")
	return ""
}

// rewrite replaces each old with its new in s, failing when one is not
// there: the test must notice the Corefile changing under it.
func rewrite(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("the Corefile has no %q:\n%s", pairs[i], s)
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

func objects() []scheme.Object {
	ns := func(n string) scheme.Object { return &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: n}} }
	return []scheme.Object{
		ns("default"), ns("kube-system"),
		&corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web"},
			Spec: &corev1.ServiceSpec{ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20"},
				Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}}},
		&corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "db"},
			Spec: &corev1.ServiceSpec{ClusterIP: "None", Ports: []*corev1.ServicePort{{Name: "pg", Protocol: "TCP", Port: 5432}}}},
		&discoveryv1.EndpointSlice{
			Metadata:    &metav1.ObjectMeta{Namespace: "default", Name: "db-x", Labels: map[string]string{"kubernetes.io/service-name": "db"}},
			AddressType: "IPv4",
			Ports:       []*discoveryv1.EndpointPort{{Name: proto.String("pg"), Protocol: proto.String("TCP"), Port: proto.Int32(5432)}},
			Endpoints: []*discoveryv1.Endpoint{
				{Addresses: []string{"10.244.0.7"}, Hostname: proto.String("db-0"), Conditions: &discoveryv1.EndpointConditions{Ready: proto.Bool(true)}},
			},
		},
	}
}

// The addon's own Corefile, served by skiff-dns's plugin chain as the pod
// runs it: in-cluster credentials, every plugin of the addon, queries over
// UDP and TCP on 127.0.0.1.
func TestAddonCorefileServes(t *testing.T) {
	cs := fake.NewClientset(objects()...)
	t.Cleanup(cs.Close)
	cert := testpki.New(t)
	addr, rl := serveRelay(t, cs, cert, "sa-token")

	// The pod's view: the kubelet's KUBERNETES_SERVICE_* variables and the
	// ServiceAccount volume.
	host, port, _ := net.SplitHostPort(addr)
	t.Setenv("KUBERNETES_SERVICE_HOST", host)
	t.Setenv("KUBERNETES_SERVICE_PORT", port)
	sa := t.TempDir()
	for name, data := range map[string][]byte{"token": []byte("sa-token\n"), "ca.crt": cert.CertPEM, "namespace": []byte("kube-system")} {
		if err := os.WriteFile(filepath.Join(sa, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	saved := config.ServiceAccountDir
	config.ServiceAccountDir = sa
	t.Cleanup(func() { config.ServiceAccountDir = saved })

	dnsPort, healthPort, readyPort, metricsPort := freePort(t), freePort(t), freePort(t), freePort(t)
	corefile := rewrite(t, addonCorefile(t),
		".:53 {", ".:"+dnsPort+" {",
		"health {", "health 127.0.0.1:"+healthPort+" {",
		// The drain a rolling update needs, not a test's shutdown.
		"lameduck 5s", "lameduck 10ms",
		"ready\n", "ready 127.0.0.1:"+readyPort+"\n",
		"prometheus :9153", "prometheus 127.0.0.1:"+metricsPort,
	)
	inst := start(t, corefile)
	waitHTTP(t, "http://127.0.0.1:"+readyPort+"/ready")
	waitHTTP(t, "http://127.0.0.1:"+healthPort+"/health")
	if rl.calls.Load() == 0 {
		t.Error("skiff-dns never called the API with the ServiceAccount token")
	}

	server := "127.0.0.1:" + dnsPort
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			expect(t, network, server, "web.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess,
				"web.default.svc.cluster.local.\t30\tIN\tA\t10.96.0.20")
			expect(t, network, server, "_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess,
				"_http._tcp.web.default.svc.cluster.local.\t30\tIN\tSRV\t0 100 80 web.default.svc.cluster.local.")
			expect(t, network, server, "db-0.db.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess,
				"db-0.db.default.svc.cluster.local.\t30\tIN\tA\t10.244.0.7")
			expect(t, network, server, "20.0.96.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess,
				"20.0.96.10.in-addr.arpa.\t30\tIN\tPTR\tweb.default.svc.cluster.local.")
			expect(t, network, server, "10-244-0-9.default.pod.cluster.local.", dns.TypeA, dns.RcodeSuccess,
				"10-244-0-9.default.pod.cluster.local.\t30\tIN\tA\t10.244.0.9")
			// `cache 30` caps every TTL at 30 s, the schema's 28800 too.
			expect(t, network, server, "dns-version.cluster.local.", dns.TypeTXT, dns.RcodeSuccess,
				"dns-version.cluster.local.\t30\tIN\tTXT\t\"1.1.0\"")
			expect(t, network, server, "nosuch.default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError)
			// Without forward nothing leaves the cluster's zones.
			expect(t, network, server, "example.org.", dns.TypeA, dns.RcodeServerFailure)
		})
	}

	// The programming latency of a slice the endpointslice controller
	// stamped is on /metrics.
	ctx := context.Background()
	if _, err := client.For[*discoveryv1.EndpointSlice](cs.Client, "default").Create(ctx, &discoveryv1.EndpointSlice{
		Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web-x", Labels: map[string]string{"kubernetes.io/service-name": "web"},
			Annotations: map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": time.Now().Format(time.RFC3339Nano)}},
		AddressType: "IPv4",
		Endpoints:   []*discoveryv1.Endpoint{{Addresses: []string{"10.244.0.8"}}}}); err != nil {
		t.Fatal(err)
	}
	want := `coredns_kubernetes_dns_programming_duration_seconds_count{service_kind="cluster_ip"}`
	deadline := time.Now().Add(10 * time.Second)
	for metrics := get(t, "http://127.0.0.1:"+metricsPort+"/metrics"); !strings.Contains(metrics, want); metrics = get(t, "http://127.0.0.1:"+metricsPort+"/metrics") {
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %s after 10s", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if metrics := get(t, "http://127.0.0.1:"+metricsPort+"/metrics"); !strings.Contains(metrics, `coredns_dns_requests_total{`) {
		t.Error("/metrics lacks coredns_dns_requests_total")
	}

	stop(t, inst)
	if _, err := exchange("tcp", server, "web.default.svc.cluster.local.", dns.TypeA); err == nil {
		t.Error("the server still answers after it stopped")
	}
}

// A Corefile that names a kubeconfig: the out-of-cluster way, as a
// developer runs skiff-dns against `make run`'s apiserver.
func TestKubeconfigCorefile(t *testing.T) {
	cs := fake.NewClientset(objects()...)
	t.Cleanup(cs.Close)
	cert := testpki.New(t)
	addr, _ := serveRelay(t, cs, cert, "admin-token")
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := config.NewAdmin(addr, cert.CertPEM, nil, nil)
	cfg.Users[0].User.Token = "admin-token"
	if err := cfg.Write(kc); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	inst := start(t, fmt.Sprintf(".:%s {\n  skiff cluster.local {\n    kubeconfig %s\n  }\n}\n", port, kc))
	defer stop(t, inst)
	server := "127.0.0.1:" + port
	for _, network := range []string{"udp", "tcp"} {
		expect(t, network, server, "web.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess,
			"web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.20")
	}

	// What the watch brings is served (no cache plugin here to hold on to
	// the NXDOMAIN of the first tries).
	if _, err := client.For[*corev1.Service](cs.Client, "default").Create(context.Background(), &corev1.Service{
		Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "api"},
		Spec:     &corev1.ServiceSpec{ClusterIP: "10.96.0.30", Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := exchange("udp", server, "api.default.svc.cluster.local.", dns.TypeA)
		if err == nil && m.Rcode == dns.RcodeSuccess && len(m.Answer) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new Service was not served in 10s: %v %v", m, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCorefileErrorsStopTheServer(t *testing.T) {
	if err := app.Configure(); err != nil {
		t.Fatal(err)
	}
	for corefile, want := range map[string]string{
		".:0 {\n  skiff cluster.local {\n    kubeconfig /nonexistent/kubeconfig\n  }\n}\n": "/nonexistent/kubeconfig",
		".:0 {\n  kubernetes cluster.local\n}\n":                                           "Unknown directive 'kubernetes'",
		".:0 {\n  whoami\n}\n":                                                             "Unknown directive 'whoami'",
	} {
		inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), Filepath: "Corefile", ServerTypeName: "dns"})
		if err == nil {
			stop(t, inst)
			t.Errorf("started on %q", corefile)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start on %q: %v, want it to say %q", corefile, err, want)
		}
	}
}

func start(t *testing.T, corefile string) *caddy.Instance {
	t.Helper()
	if err := app.Configure(); err != nil {
		t.Fatal(err)
	}
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), Filepath: "Corefile", ServerTypeName: "dns"})
	if err != nil {
		t.Fatalf("starting on\n%s: %v", corefile, err)
	}
	return inst
}

// stop does what coremain does on SIGTERM: stop listening, then let each
// plugin release what it holds.
func stop(t *testing.T, inst *caddy.Instance) {
	t.Helper()
	if err := inst.Stop(); err != nil {
		t.Error(err)
	}
	for _, err := range inst.ShutdownCallbacks() {
		t.Error(err)
	}
}

func exchange(network, server, name string, qtype uint16) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, server)
	return r, err
}

// expect asks server over network and checks the rcode and the answer,
// record by record in their text form.
func expect(t *testing.T, network, server, name string, qtype uint16, rcode int, answer ...string) {
	t.Helper()
	r, err := exchange(network, server, name, qtype)
	if err != nil {
		t.Errorf("%s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
		return
	}
	var got []string
	for _, rr := range r.Answer {
		got = append(got, rr.String())
	}
	if r.Rcode != rcode || strings.Join(got, "\n") != strings.Join(answer, "\n") {
		t.Errorf("%s %s over %s: %s %q, want %s %q", name, dns.TypeToString[qtype], network,
			dns.RcodeToString[r.Rcode], got, dns.RcodeToString[rcode], answer)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// waitHTTP waits until url answers 200.
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 in 10s (%v)", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
