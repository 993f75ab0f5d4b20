package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/knftables"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proxy/internal/conntrack"
)

func TestValidateNamesTheFlag(t *testing.T) {
	cases := []struct {
		flag string
		set  func(*Options)
	}{
		{"--proxy-mode", func(o *Options) { o.ProxyMode = "iptables" }},
		{"--cluster-cidr", func(o *Options) { o.ClusterCIDR = "10.244.0.0" }},
		{"--cluster-cidr", func(o *Options) { o.ClusterCIDR = "10.244.0.0/16,10.245.0.0/16" }},
		{"--nodeport-addresses", func(o *Options) { o.NodePortAddresses = []string{"eth0"} }},
		{"--nodeport-addresses", func(o *Options) { o.NodePortAddresses = []string{"primary", "10.0.0.0/8"} }},
		{"--metrics-bind-address", func(o *Options) { o.MetricsBindAddress = "10249" }},
		{"--healthz-bind-address", func(o *Options) { o.HealthzBindAddress = "localhost" }},
		{"--sync-period", func(o *Options) { o.SyncPeriod = 0 }},
		{"--min-sync-period", func(o *Options) { o.MinSyncPeriod = time.Hour }},
		{"--hostname-override", func(o *Options) { o.HostnameOverride = "a b" }},
	}
	for _, tc := range cases {
		o := NewOptions()
		tc.set(o)
		err := o.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.flag+":") {
			t.Errorf("%s: got %v, want an error naming %s", tc.flag, err, tc.flag)
		}
	}
	o := NewOptions()
	o.ClusterCIDR = "10.244.0.0/16,fd00:10:244::/56"
	o.NodePortAddresses = []string{"192.168.0.0/16", "::/0"}
	if err := o.Validate(); err != nil {
		t.Errorf("valid flags rejected: %v", err)
	}
}

func TestFlagsParseIntoOptions(t *testing.T) {
	cmd := NewCommand()
	if err := cmd.Flags().Parse([]string{"--proxy-mode=ipvs", "--cluster-cidr=10.244.0.0/16", "--hostname-override=Node-A",
		"--min-sync-period=2s", "--nodeport-addresses=10.0.0.0/8", "--masquerade-all"}); err != nil {
		t.Fatal(err)
	}
	get := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }
	if get("proxy-mode") != "ipvs" || get("min-sync-period") != "2s" || get("masquerade-all") != "true" ||
		get("metrics-bind-address") != "127.0.0.1:10249" || get("healthz-bind-address") != "0.0.0.0:10256" || get("sync-period") != "30s" {
		t.Errorf("flags: mode %s min %s masq %s metrics %s healthz %s sync %s", get("proxy-mode"), get("min-sync-period"),
			get("masquerade-all"), get("metrics-bind-address"), get("healthz-bind-address"), get("sync-period"))
	}
	o := NewOptions()
	o.HostnameOverride = "Node-A"
	if h, _ := o.hostname(); h != "node-a" {
		t.Errorf("hostname %q, want it lower-cased as the kubelet registers it", h)
	}
}

type nopConntrack struct{}

func (nopConntrack) DeleteUDP(Family, []conntrack.Filter) (int, error) { return 0, nil }

func ptr[T any](v T) *T { return &v }

// The whole path on the fake apiserver: informers to rules, a change
// applied within the min sync period, the network programming latency
// measured from the slice's trigger time, /healthz as upstream's JSON.
func TestProxyProgramsWhatTheAPIServerHolds(t *testing.T) {
	svc := &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: &corev1.ServiceSpec{Type: "ClusterIP", ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}}}
	slice := &discoveryv1.EndpointSlice{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web-1",
		Labels:      map[string]string{"kubernetes.io/service-name": "web"},
		Annotations: map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": time.Now().UTC().Format(time.RFC3339Nano)}},
		AddressType: "IPv4",
		Ports:       []*discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr("TCP"), Port: ptr(int32(8080))}},
		Endpoints: []*discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: ptr("node-b"),
			Conditions: &discoveryv1.EndpointConditions{Ready: ptr(true)}}}}
	node := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "node-a"},
		Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: "192.168.0.10"}}}}
	other := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "node-b"},
		Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: "192.168.0.11"}}}}
	cs := fake.NewClientset(svc, slice, node, other)
	defer cs.Close()

	nft := knftables.NewFake(knftables.IPv4Family, TableName)
	reg := prometheus.NewRegistry()
	p, err := New(Config{Client: cs.Client, Hostname: "node-a", Families: []Family{IPv4},
		NFT: map[Family]knftables.Interface{IPv4: nft}, Conntrack: nopConntrack{}, Registerer: reg,
		MinSyncPeriod: 10 * time.Millisecond, SyncPeriod: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Start(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("proxy stopped: %v", err)
	case <-ctx.Done():
		t.Fatal("proxy never ready")
	}
	dump := nft.Dump()
	if !strings.Contains(dump, ": 10.244.1.5 . 8080 }") || !strings.Contains(dump, "nodeport-ips { 192.168.0.10 }") {
		t.Fatalf("first sync did not program the Service or the node's address:\n%s", dump)
	}
	if strings.Contains(dump, "192.168.0.11") {
		t.Errorf("another node's address was programmed:\n%s", dump)
	}
	if n := testutil.CollectAndCount(reg, "kubeproxy_network_programming_duration_seconds"); n != 1 {
		t.Errorf("network programming latency not observed")
	}

	slice.Endpoints[0].Addresses = []string{"10.244.1.6"}
	if _, err := client.For[*discoveryv1.EndpointSlice](cs.Client, "default").Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(nft.Dump(), ": 10.244.1.6 . 8080 }") {
		if time.Now().After(deadline) {
			t.Fatalf("endpoint change not programmed:\n%s", nft.Dump())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(prometheusGauge(t, reg, "kubeproxy_sync_proxy_rules_last_timestamp_seconds")); got == 0 {
		t.Error("last sync timestamp not set")
	}
	for _, m := range []string{"kubeproxy_sync_proxy_rules_duration_seconds", "kubeproxy_sync_full_proxy_rules_duration_seconds",
		"kubeproxy_sync_partial_proxy_rules_duration_seconds"} {
		if testutil.CollectAndCount(reg, m) != 1 {
			t.Errorf("%s not exported", m)
		}
	}

	rec := httptest.NewRecorder()
	p.health.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	var h struct {
		Healthy      bool `json:"healthy"`
		NodeEligible bool `json:"nodeEligible"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &h) != nil || !h.Healthy || !h.NodeEligible {
		t.Errorf("/healthz: %d %s", rec.Code, rec.Body)
	}
	cancel()
	if err := <-done; err != nil && ctx.Err() == nil {
		t.Errorf("Start: %v", err)
	}
}

func prometheusGauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name})
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return g
		}
	}
	t.Fatalf("%s not registered", name)
	return nil
}

// The health check node port of an eTP=Local LoadBalancer, end to end over
// the fake apiserver, in either mode: opened on the node's address once the proxy syncs,
// 503 while this node has no endpoint, 200 once it has one, closed with the
// Service.
func TestHealthCheckNodePortFollowsLocalEndpoints(t *testing.T) {
	for _, mode := range []string{"nftables", "ipvs"} {
		t.Run(mode, func(t *testing.T) { testHealthCheckNodePort(t, mode) })
	}
}

// nopIPVS is a kernel without virtual servers: what the ipvs proxier does
// with them is internal/ipvs's tests' business.
type nopIPVS struct{}

func (nopIPVS) GetServices() ([]*mobyipvs.Service, error)                          { return nil, nil }
func (nopIPVS) NewService(*mobyipvs.Service) error                                 { return nil }
func (nopIPVS) UpdateService(*mobyipvs.Service) error                              { return nil }
func (nopIPVS) DelService(*mobyipvs.Service) error                                 { return nil }
func (nopIPVS) GetDestinations(*mobyipvs.Service) ([]*mobyipvs.Destination, error) { return nil, nil }
func (nopIPVS) NewDestination(*mobyipvs.Service, *mobyipvs.Destination) error      { return nil }
func (nopIPVS) UpdateDestination(*mobyipvs.Service, *mobyipvs.Destination) error   { return nil }
func (nopIPVS) DelDestination(*mobyipvs.Service, *mobyipvs.Destination) error      { return nil }
func (nopIPVS) EnsureInterface(string) error                                       { return nil }
func (nopIPVS) List(string) ([]netip.Addr, error)                                  { return nil, nil }
func (nopIPVS) Add(string, netip.Addr) error                                       { return nil }
func (nopIPVS) Del(string, netip.Addr) error                                       { return nil }

func testHealthCheckNodePort(t *testing.T, mode string) {
	freePort := func() int {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	lb := func(name, ip string, hc int) *corev1.Service {
		return &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: &corev1.ServiceSpec{Type: "LoadBalancer", ClusterIP: ip, ClusterIPs: []string{ip},
				ExternalTrafficPolicy: "Local", HealthCheckNodePort: int32(hc),
				Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, NodePort: int32(30000 + hc%1000)}}}}
	}
	port, port2 := freePort(), freePort()
	svc, svc2 := lb("lb", "10.96.0.20", port), lb("lb2", "10.96.0.21", port2)
	slice := &discoveryv1.EndpointSlice{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "lb-1",
		Labels: map[string]string{"kubernetes.io/service-name": "lb"}}, AddressType: "IPv4",
		Ports: []*discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr("TCP"), Port: ptr(int32(8080))}},
		Endpoints: []*discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: ptr("node-b"),
			Conditions: &discoveryv1.EndpointConditions{Ready: ptr(true)}}}}
	// The node's own address is where NodePorts, and so health checks, are
	// (--nodeport-addresses primary); loopback keeps the test on this host.
	node := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "node-a"},
		Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: "127.0.0.1"}}}}
	cs := fake.NewClientset(svc, svc2, slice, node)
	defer cs.Close()
	p, err := New(Config{Client: cs.Client, Hostname: "node-a", Families: []Family{IPv4}, Mode: mode,
		NFT:        map[Family]knftables.Interface{IPv4: knftables.NewFake(knftables.IPv4Family, TableName)},
		IPVSHandle: nopIPVS{}, IPVSAddresses: nopIPVS{},
		Conntrack: nopConntrack{}, Registerer: prometheus.NewRegistry(), MinSyncPeriod: 10 * time.Millisecond, SyncPeriod: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Start(ctx) }()

	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	probePort := func(port int) (int, string, error) {
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	probe := func() (int, string, error) { return probePort(port) }
	await := func(what string, ok func(code int, body string, err error) bool) {
		t.Helper()
		var code int
		var body string
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if code, body, err = probe(); ok(code, body, err) {
				return
			}
		}
		t.Fatalf("%s: last answer %d %q, %v", what, code, body, err)
	}
	await("503 without a local endpoint", func(code int, body string, err error) bool {
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, `"localEndpoints":0`)
	})

	slice.Endpoints[0].NodeName = ptr("node-a")
	if _, err := client.For[*discoveryv1.EndpointSlice](cs.Client, "default").Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	await("200 with the local endpoint", func(code int, body string, err error) bool {
		return err == nil && code == http.StatusOK &&
			body == `{"service":{"namespace":"default","name":"lb"},"localEndpoints":1,"serviceProxyHealthy":true}`
	})

	if _, err := client.For[*corev1.Service](cs.Client, "default").Delete(ctx, "lb", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await("closed with the Service", func(_ int, _ string, err error) bool { return errors.Is(err, syscall.ECONNREFUSED) })
	if code, _, err := probePort(port2); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("the other Service's health check: %d, %v", code, err)
	}
	cancel()
	if err := <-done; err != nil && ctx.Err() == nil {
		t.Errorf("Start: %v", err)
	}
	if _, _, err := probePort(port2); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("health check still answering after the proxy stopped: %v", err)
	}
}
