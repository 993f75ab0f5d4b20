package ipvs

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/ipvs"
	"sigs.k8s.io/knftables"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proxy/internal/proxy"
)

// fakeHandle is IPVS in memory; calls counts every mutation.
type fakeHandle struct {
	services map[string]*ipvs.Service
	dests    map[string]map[string]*ipvs.Destination
	calls    []string
}

func newFakeHandle() *fakeHandle {
	return &fakeHandle{services: map[string]*ipvs.Service{}, dests: map[string]map[string]*ipvs.Destination{}}
}

func destKey(d *ipvs.Destination) string {
	a, _ := netip.AddrFromSlice(d.Address)
	return netip.AddrPortFrom(a.Unmap(), d.Port).String()
}

func (f *fakeHandle) GetServices() ([]*ipvs.Service, error) {
	var out []*ipvs.Service
	for _, s := range f.services {
		c := *s
		out = append(out, &c)
	}
	return out, nil
}
func (f *fakeHandle) NewService(s *ipvs.Service) error {
	k := serviceKey(s)
	if _, ok := f.services[k]; ok {
		return fmt.Errorf("%s exists", k)
	}
	c := *s
	f.services[k] = &c
	f.dests[k] = map[string]*ipvs.Destination{}
	f.calls = append(f.calls, "NewService "+k)
	return nil
}
func (f *fakeHandle) UpdateService(s *ipvs.Service) error {
	k := serviceKey(s)
	c := *s
	f.services[k] = &c
	f.calls = append(f.calls, "UpdateService "+k)
	return nil
}
func (f *fakeHandle) DelService(s *ipvs.Service) error {
	k := serviceKey(s)
	delete(f.services, k)
	delete(f.dests, k)
	f.calls = append(f.calls, "DelService "+k)
	return nil
}
func (f *fakeHandle) GetDestinations(s *ipvs.Service) ([]*ipvs.Destination, error) {
	var out []*ipvs.Destination
	for _, d := range f.dests[serviceKey(s)] {
		c := *d
		out = append(out, &c)
	}
	return out, nil
}
func (f *fakeHandle) NewDestination(s *ipvs.Service, d *ipvs.Destination) error {
	c := *d
	f.dests[serviceKey(s)][destKey(d)] = &c
	f.calls = append(f.calls, "NewDestination "+serviceKey(s)+" "+destKey(d))
	return nil
}
func (f *fakeHandle) UpdateDestination(s *ipvs.Service, d *ipvs.Destination) error {
	c := *d
	f.dests[serviceKey(s)][destKey(d)] = &c
	f.calls = append(f.calls, "UpdateDestination "+serviceKey(s)+" "+destKey(d))
	return nil
}
func (f *fakeHandle) DelDestination(s *ipvs.Service, d *ipvs.Destination) error {
	delete(f.dests[serviceKey(s)], destKey(d))
	f.calls = append(f.calls, "DelDestination "+serviceKey(s)+" "+destKey(d))
	return nil
}

type fakeAddrs struct {
	created bool
	addrs   map[netip.Addr]bool
}

func (f *fakeAddrs) EnsureInterface(name string) error { f.created = true; return nil }
func (f *fakeAddrs) List(string) ([]netip.Addr, error) {
	var out []netip.Addr
	for a := range f.addrs {
		out = append(out, a)
	}
	return out, nil
}
func (f *fakeAddrs) Add(_ string, a netip.Addr) error { f.addrs[a] = true; return nil }
func (f *fakeAddrs) Del(_ string, a netip.Addr) error { delete(f.addrs, a); return nil }

func ptr[T any](v T) *T { return &v }

func svc(name, ip string, nodePort int32, affinity bool) *corev1.Service {
	s := &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: "1"},
		Spec: &corev1.ServiceSpec{Type: "ClusterIP", ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}}}
	if nodePort != 0 {
		s.Spec.Type = "NodePort"
		s.Spec.Ports[0].NodePort = nodePort
	}
	if affinity {
		s.Spec.SessionAffinity = "ClientIP"
	}
	return s
}

func epSlice(name, rv string, ips ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name + "-x", ResourceVersion: rv,
		Labels: map[string]string{proxy.LabelServiceName: name}}, AddressType: "IPv4",
		Ports: []*discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr("TCP"), Port: ptr(int32(8080))}}}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, &discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr("node-b"),
			Conditions: &discoveryv1.EndpointConditions{Ready: ptr(true)}})
	}
	return s
}

func newTestProxier(t *testing.T) (*Proxier, *fakeHandle, *fakeAddrs, *knftables.Fake) {
	t.Helper()
	h, a, nft := newFakeHandle(), &fakeAddrs{addrs: map[netip.Addr]bool{}}, knftables.NewFake(knftables.IPv4Family, "skiff-proxy")
	p, err := New(Config{Family: proxy.IPv4, Handle: h, Addresses: a, NFT: nft, Hostname: "node-a",
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	p.OnNodeChange(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: "node-a"},
		Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: "192.168.0.10"}}}})
	p.OnServicesSynced()
	p.OnEndpointSlicesSynced()
	return p, h, a, nft
}

func mustSync(t *testing.T, p *Proxier) {
	t.Helper()
	if err := p.SyncNow(); err != nil {
		t.Fatal(err)
	}
}

func dests(h *fakeHandle, key string) []string {
	var out []string
	for k := range h.dests[key] {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestReconcileCreatesServicesDestinationsAndVIPs(t *testing.T) {
	p, h, a, nft := newTestProxier(t)
	p.OnServiceAdd(svc("web", "10.96.0.10", 30080, true))
	p.OnEndpointSliceAdd(epSlice("web", "1", "10.244.1.5", "10.244.2.5"))
	p.OnServiceAdd(svc("empty", "10.96.0.11", 0, false))
	mustSync(t, p)

	web := h.services["tcp/10.96.0.10:80"]
	if web == nil {
		t.Fatalf("no virtual server for the ClusterIP; have %v", h.services)
	}
	if web.SchedName != "rr" || web.Flags&flagPersistent == 0 || web.Timeout != 10800 {
		t.Errorf("ClientIP affinity not persistent for 3h: sched %q flags %#x timeout %d", web.SchedName, web.Flags, web.Timeout)
	}
	if got := dests(h, "tcp/10.96.0.10:80"); !slices.Equal(got, []string{"10.244.1.5:8080", "10.244.2.5:8080"}) {
		t.Errorf("real servers %v", got)
	}
	if got := dests(h, "tcp/192.168.0.10:30080"); len(got) != 2 {
		t.Errorf("NodePort virtual server on the node IP has real servers %v", got)
	}
	if !a.created || !a.addrs[netip.MustParseAddr("10.96.0.10")] || !a.addrs[netip.MustParseAddr("10.96.0.11")] {
		t.Errorf("VIPs not on %s: %v", DummyInterface, a.addrs)
	}
	if a.addrs[netip.MustParseAddr("192.168.0.10")] {
		t.Error("the node IP was bound to the dummy interface")
	}
	dump := nft.Dump()
	if !strings.Contains(dump, "no-endpoint-services { 10.96.0.11 . tcp . 80 : goto reject-chain }") {
		t.Errorf("the Service without endpoints is not rejected:\n%s", dump)
	}
	if !strings.Contains(dump, "masquerade-all-sources { 192.168.0.10 . tcp . 30080 }") {
		t.Errorf("NodePort traffic is not masqueraded:\n%s", dump)
	}
}

func TestReconcileChangesOnlyWhatChanged(t *testing.T) {
	p, h, a, _ := newTestProxier(t)
	p.OnServiceAdd(svc("web", "10.96.0.10", 0, false))
	p.OnServiceAdd(svc("api", "10.96.0.12", 0, false))
	first := epSlice("web", "1", "10.244.1.5", "10.244.2.5")
	p.OnEndpointSliceAdd(first)
	p.OnEndpointSliceAdd(epSlice("api", "1", "10.244.3.5"))
	// Someone else's IPVS service, not on our interface: never ours to
	// touch.
	foreign := &ipvs.Service{Address: []byte{172, 16, 0, 1}, Protocol: 6, Port: 443, SchedName: "wrr"}
	if err := h.NewService(foreign); err != nil {
		t.Fatal(err)
	}
	mustSync(t, p)

	h.calls = nil
	p.OnEndpointSliceUpdate(first, epSlice("web", "2", "10.244.1.5"))
	mustSync(t, p)
	if want := []string{"DelDestination tcp/10.96.0.10:80 10.244.2.5:8080"}; !slices.Equal(h.calls, want) {
		t.Errorf("calls %v, want %v", h.calls, want)
	}

	h.calls = nil
	p.OnServiceDelete(svc("api", "10.96.0.12", 0, false))
	mustSync(t, p)
	if want := []string{"DelService tcp/10.96.0.12:80"}; !slices.Equal(h.calls, want) {
		t.Errorf("calls %v, want %v", h.calls, want)
	}
	if a.addrs[netip.MustParseAddr("10.96.0.12")] {
		t.Error("the deleted Service's VIP is still bound")
	}
	if h.services["tcp/172.16.0.1:443"] == nil {
		t.Error("the foreign IPVS service was deleted")
	}
}

// A virtual server a previous run left on one of our VIPs is deleted once
// nothing wants it, though this run never made it.
func TestReconcileDeletesLeftoversOnOurVIPs(t *testing.T) {
	h, a := newFakeHandle(), &fakeAddrs{addrs: map[netip.Addr]bool{netip.MustParseAddr("10.96.0.99"): true}}
	if err := h.NewService(&ipvs.Service{Address: []byte{10, 96, 0, 99}, Protocol: 6, Port: 80, SchedName: "rr"}); err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Handle: h, Addresses: a}
	if err := r.Reconcile(nil); err != nil {
		t.Fatal(err)
	}
	if len(h.services) != 0 || len(a.addrs) != 0 {
		t.Errorf("leftovers remain: services %v, VIPs %v", h.services, a.addrs)
	}
}

func TestAvailableNamesWhatIsMissing(t *testing.T) {
	err := Available(filepath.Join(t.TempDir(), "ip_vs"))
	if err == nil || !strings.Contains(err.Error(), "no IPVS") || !strings.Contains(err.Error(), "--proxy-mode nftables") {
		t.Errorf("Available on a kernel without IPVS: %v", err)
	}
	if err := Available(t.TempDir()); err != nil {
		t.Errorf("Available with the file present: %v", err)
	}
}
