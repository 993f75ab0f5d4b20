package app

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
