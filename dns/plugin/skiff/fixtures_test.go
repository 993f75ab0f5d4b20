package skiff

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	"google.golang.org/protobuf/proto"

	"skiff.dev/client/fake"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// The cluster the answers are checked against, after upstream's
// handler_test.go fixtures where a case has an upstream twin.

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: name}}
}

func service(ns, name string, spec *corev1.ServiceSpec) *corev1.Service {
	return &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func svcPort(name, protocol string, port int32) *corev1.ServicePort {
	return &corev1.ServicePort{Name: name, Protocol: protocol, Port: port}
}

func slicePort(name, protocol string, port int32) *discoveryv1.EndpointPort {
	return &discoveryv1.EndpointPort{Name: proto.String(name), Protocol: proto.String(protocol), Port: proto.Int32(port)}
}

func endpoint(addr string, ready bool, hostname string) *discoveryv1.Endpoint {
	e := &discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: &discoveryv1.EndpointConditions{Ready: proto.Bool(ready)}}
	if hostname != "" {
		e.Hostname = proto.String(hostname)
	}
	return e
}

func endpointSlice(ns, name, svc, addressType string, ports []*discoveryv1.EndpointPort, eps ...*discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		Metadata:    &metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{labelSvcName: svc}},
		AddressType: addressType, Ports: ports, Endpoints: eps,
	}
}

func pod(ns, name string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name}, Status: &corev1.PodStatus{Phase: "Running"}}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, &corev1.PodIP{Ip: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

func http80() []*corev1.ServicePort { return []*corev1.ServicePort{svcPort("http", "TCP", 80)} }

func cluster() []scheme.Object {
	byPod := endpoint("172.0.0.30", true, "")
	byPod.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "testns", Name: "named-pod-0"}
	return []scheme.Object{
		namespace("testns"), namespace("podns"), namespace("emptyns"), namespace("kube-system"),

		service("testns", "svc1", &corev1.ServiceSpec{ClusterIP: "10.0.0.1", ClusterIPs: []string{"10.0.0.1"}, Ports: http80()}),
		endpointSlice("testns", "svc1-abcde", "svc1", "IPv4", []*discoveryv1.EndpointPort{slicePort("http", "TCP", 8080)},
			endpoint("172.0.1.1", true, "")),
		service("testns", "svcempty", &corev1.ServiceSpec{ClusterIP: "10.0.0.2", Ports: http80()}),
		service("testns", "svc6", &corev1.ServiceSpec{ClusterIP: "1234:abcd::1", ClusterIPs: []string{"1234:abcd::1"}, Ports: http80()}),
		service("testns", "svc-dual-stack", &corev1.ServiceSpec{ClusterIP: "10.0.0.3", ClusterIPs: []string{"10.0.0.3", "10::3"}, Ports: http80()}),
		service("testns", "svc-noip", &corev1.ServiceSpec{Ports: http80()}),
		service("testns", "dns", &corev1.ServiceSpec{ClusterIP: "10.0.0.53", Ports: []*corev1.ServicePort{
			svcPort("dns", "UDP", 53), svcPort("dns-tcp", "TCP", 53)}}),

		// Headless: five ready addresses across two families, two of them
		// under one hostname, and one that is not ready.
		service("testns", "hdls1", &corev1.ServiceSpec{ClusterIP: "None", ClusterIPs: []string{"None"}, Ports: http80()}),
		endpointSlice("testns", "hdls1-v4", "hdls1", "IPv4", []*discoveryv1.EndpointPort{slicePort("http", "TCP", 80)},
			endpoint("172.0.0.2", true, ""), endpoint("172.0.0.3", true, ""),
			endpoint("172.0.0.4", true, "dup-name"), endpoint("172.0.0.5", true, "dup-name"),
			endpoint("172.0.0.9", false, "")),
		endpointSlice("testns", "hdls1-v6", "hdls1", "IPv6", []*discoveryv1.EndpointPort{slicePort("http", "TCP", 80)},
			endpoint("5678:abcd::1", true, ""), endpoint("5678:abcd::2", true, "")),
		service("testns", "hdlsprtls", &corev1.ServiceSpec{ClusterIP: "None"}),
		endpointSlice("testns", "hdlsprtls-x", "hdlsprtls", "IPv4", nil, endpoint("172.0.0.20", true, "")),
		service("testns", "hdlsempty", &corev1.ServiceSpec{ClusterIP: "None", Ports: http80()}),
		service("testns", "named", &corev1.ServiceSpec{ClusterIP: "None", Ports: http80()}),
		endpointSlice("testns", "named-x", "named", "IPv4", []*discoveryv1.EndpointPort{slicePort("http", "TCP", 80)}, byPod),

		// A StatefulSet's governing Service: its pods' hostnames.
		service("testns", "web", &corev1.ServiceSpec{ClusterIP: "None", Ports: []*corev1.ServicePort{svcPort("web", "TCP", 80)}}),
		endpointSlice("testns", "web-x", "web", "IPv4", []*discoveryv1.EndpointPort{slicePort("web", "TCP", 80)},
			endpoint("10.1.0.10", true, "web-0"), endpoint("10.1.0.11", true, "web-1")),

		service("testns", "external", &corev1.ServiceSpec{Type: "ExternalName", ExternalName: "ext.interwebs.test", Ports: http80()}),
		service("testns", "external-internal", &corev1.ServiceSpec{Type: "ExternalName", ExternalName: "svc1.testns.svc.cluster.local"}),
		service("testns", "external-ip", &corev1.ServiceSpec{Type: "ExternalName", ExternalName: "1.2.3.4"}),

		// This server's own Service, found through its pod's address.
		service("kube-system", "kube-dns", &corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}, Ports: []*corev1.ServicePort{
			svcPort("dns", "UDP", 53), svcPort("dns-tcp", "TCP", 53), svcPort("metrics", "TCP", 9153)}}),
		endpointSlice("kube-system", "kube-dns-x", "kube-dns", "IPv4", []*discoveryv1.EndpointPort{slicePort("dns", "UDP", 53)},
			endpoint("10.244.0.5", true, "")),

		pod("podns", "pod-a", "10.240.0.1", "fd00::1"),
	}
}

// upstub answers names outside the cluster, as a forward plugin would.
type upstub struct{}

func (upstub) Lookup(_ context.Context, state request.Request, name string, typ uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, typ)
	if name == "ext.interwebs.test." && typ == dns.TypeA {
		m.Answer = []dns.RR{test.A("ext.interwebs.test. 5 IN A 1.2.3.4")}
	}
	return m, nil
}

// nextHandler stands for the plugins after skiff: it answers every query
// with one TXT record "next", so a test sees that a query fell through.
var nextHandler = test.HandlerFunc(func(_ context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Answer = []dns.RR{test.TXT(r.Question[0].Name + " 1 IN TXT next")}
	return dns.RcodeSuccess, w.WriteMsg(m)
})

// fromCorefile parses a skiff block as the server would and runs the
// plugin over a fake clientset holding objs, until the test ends.
func fromCorefile(t *testing.T, corefile string, objs ...scheme.Object) (*Skiff, *fake.Clientset) {
	t.Helper()
	s, err := parse(caddy.NewTestController("dns", corefile))
	if err != nil {
		t.Fatalf("parse %q: %v", corefile, err)
	}
	s.Upstream = upstub{}
	s.Next = nextHandler
	s.localIPs = []net.IP{net.ParseIP("10.244.0.5").To4()}
	cs := fake.NewClientset(objs...)
	ctx, cancel := context.WithCancel(context.Background())
	s.startCache(ctx, cs.Client)
	t.Cleanup(func() {
		cancel()
		s.cache.Shutdown()
		cs.Close()
	})
	ctx2, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	if !s.waitForSync(ctx2) {
		t.Fatal("the cache did not sync in 10s")
	}
	return s, cs
}

const defaultBlock = `skiff cluster.local in-addr.arpa ip6.arpa {
	pods insecure
}`

// serve asks s one question through ServeDNS and returns the reply.
func serve(t *testing.T, s *Skiff, qname string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	w := dnstest.NewRecorder(&test.ResponseWriter{})
	if _, err := s.ServeDNS(context.Background(), w, m); err != nil {
		t.Fatalf("%s %s: ServeDNS: %v", qname, dns.TypeToString[qtype], err)
	}
	if w.Msg == nil {
		t.Fatalf("%s %s: no reply written", qname, dns.TypeToString[qtype])
	}
	return w.Msg
}

// soa is the authority section of every negative answer in cluster.local.
func soa(ttl string) dns.RR { return soaFor("cluster.local.", ttl) }

func soaFor(zone, ttl string) dns.RR {
	return test.SOA(zone + " " + ttl + " IN SOA ns.dns." + zone + " hostmaster." + zone + " 1 7200 1800 86400 " + ttl)
}

// check runs cases against s: rcode, every section (SortAndCheck), and
// that answers from our zones are authoritative.
func check(t *testing.T, s *Skiff, cases []test.Case) {
	t.Helper()
	for _, tc := range cases {
		t.Run(dns.TypeToString[tc.Qtype]+" "+tc.Qname, func(t *testing.T) {
			resp := serve(t, s, tc.Qname, tc.Qtype)
			if err := test.SortAndCheck(resp, tc); err != nil {
				t.Errorf("%v\n%s", err, resp)
			}
			if !resp.Authoritative && !fellThrough(resp) {
				t.Errorf("answer is not authoritative:\n%s", resp)
			}
		})
	}
}

// fellThrough: nextHandler wrote resp.
func fellThrough(resp *dns.Msg) bool {
	if len(resp.Answer) != 1 {
		return false
	}
	txt, ok := resp.Answer[0].(*dns.TXT)
	return ok && len(txt.Txt) == 1 && txt.Txt[0] == "next"
}
