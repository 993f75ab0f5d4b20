package proxy

import (
	"net/netip"
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func svc(rv string, mutate ...func(*corev1.ServiceSpec)) *corev1.Service {
	s := &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "web", ResourceVersion: rv},
		Spec: &corev1.ServiceSpec{Type: "ClusterIP", ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10", "fd00::10"},
			Ports: []*corev1.ServicePort{{Name: "dns", Protocol: "UDP", Port: 53}}}}
	for _, m := range mutate {
		m(s.Spec)
	}
	return s
}

func epSlice(name, rv, trigger string, eps ...*discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: rv,
		Labels: map[string]string{LabelServiceName: "web"}}, AddressType: "IPv4", Endpoints: eps,
		Ports: []*discoveryv1.EndpointPort{{Name: ptr("dns"), Protocol: ptr("UDP"), Port: ptr(int32(5353))}}}
	if trigger != "" {
		s.Metadata.Annotations = map[string]string{AnnotationLastChangeTriggerTime: trigger}
	}
	return s
}

func endpoint(ip, node string, ready, serving, terminating *bool) *discoveryv1.Endpoint {
	return &discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr(node),
		Conditions: &discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}}
}

func TestServicePortsPerFamily(t *testing.T) {
	for _, tc := range []struct {
		family Family
		ip     string
	}{{IPv4, "10.96.0.10"}, {IPv6, "fd00::10"}} {
		ps := ServicePorts(svc("1"), tc.family)
		if len(ps) != 1 || ps[0].ClusterIP != netip.MustParseAddr(tc.ip) || ps[0].Port != 53 || ps[0].Name.Protocol != "UDP" {
			t.Errorf("%s: %+v", tc.family, ps)
		}
	}
	for name, s := range map[string]*corev1.Service{
		"headless":     svc("1", func(s *corev1.ServiceSpec) { s.ClusterIP, s.ClusterIPs = "None", []string{"None"} }),
		"externalname": svc("1", func(s *corev1.ServiceSpec) { s.Type, s.ClusterIP, s.ClusterIPs = "ExternalName", "", nil }),
	} {
		if ps := ServicePorts(s, IPv4); len(ps) != 0 {
			t.Errorf("%s Service has ports to program: %+v", name, ps)
		}
	}
	other := svc("1")
	other.Metadata.Labels = map[string]string{LabelServiceProxyName: "someone-else"}
	if ps := ServicePorts(other, IPv4); len(ps) != 0 {
		t.Errorf("Service of another proxy programmed: %+v", ps)
	}
	aff := ServicePorts(svc("1", func(s *corev1.ServiceSpec) { s.SessionAffinity = "ClientIP" }), IPv4)
	if aff[0].StickyMaxAgeSeconds != 10800 {
		t.Errorf("default ClientIP timeout %d, want upstream's 10800", aff[0].StickyMaxAgeSeconds)
	}
	local := ServicePorts(svc("1", func(s *corev1.ServiceSpec) { s.ExternalTrafficPolicy = "Local" }), IPv4)
	if local[0].ExternalPolicyLocal {
		t.Error("externalTrafficPolicy Local applied to a ClusterIP-only Service")
	}
}

// Endpoint conditions as upstream reads them: absent ready means ready;
// absent serving follows ready.
func TestEndpointConditions(t *testing.T) {
	tr, fa := ptr(true), ptr(false)
	eps := Endpoints(NamespacedName{"ns", "web"}, []*discoveryv1.EndpointSlice{epSlice("a", "1", "",
		endpoint("10.0.0.1", "me", nil, nil, nil),
		endpoint("10.0.0.2", "other", fa, tr, tr),
		endpoint("10.0.0.3", "other", fa, nil, nil),
	)}, "me")
	got := eps[ServicePortName{NamespacedName: NamespacedName{"ns", "web"}, Port: "dns", Protocol: "UDP"}]
	if len(got) != 3 {
		t.Fatalf("endpoints %v", got)
	}
	if e := got[0]; !e.Ready || !e.Serving || e.Terminating || !e.IsLocal || e.Port != 5353 {
		t.Errorf("no conditions: %+v", e)
	}
	if e := got[1]; e.Ready || !e.Serving || !e.Terminating || e.IsLocal {
		t.Errorf("serving, terminating: %+v", e)
	}
	if e := got[2]; e.Ready || e.Serving {
		t.Errorf("not ready, serving unset: %+v", e)
	}
}

func TestApplyReportsChangesStaleEndpointsAndTriggerTimes(t *testing.T) {
	tr := NewTracker(IPv4, "me")
	svcs, eps := ServicePortMap{}, EndpointsMap{}
	trigger := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tr.ServiceUpdate(nil, svc("1"))
	first := epSlice("a", "1", trigger.Format(time.RFC3339Nano),
		endpoint("10.0.0.1", "x", ptr(true), nil, nil), endpoint("10.0.0.2", "x", ptr(true), nil, nil))
	tr.EndpointSliceUpdate(first, false)
	res := tr.Apply(svcs, eps)
	nn := NamespacedName{"ns", "web"}
	if _, ok := res.UpdatedServices[nn]; !ok || len(svcs) != 1 || len(res.NewlyActiveUDP) != 1 {
		t.Fatalf("first apply: %+v, services %v", res, svcs)
	}
	if got := res.LastChangeTriggerTimes[nn]; len(got) != 1 || !got[0].Equal(trigger) {
		t.Errorf("trigger times %v, want [%s]", got, trigger)
	}

	// The same object again (an informer resync) is no change.
	if tr.EndpointSliceUpdate(first, false) || tr.ServiceUpdate(svc("1"), svc("1")) {
		t.Error("an unchanged resourceVersion asked for a sync")
	}
	if res := tr.Apply(svcs, eps); len(res.UpdatedServices) != 0 {
		t.Errorf("nothing changed, got %+v", res)
	}

	tr.EndpointSliceUpdate(epSlice("a", "2", "", endpoint("10.0.0.1", "x", ptr(true), nil, nil)), false)
	res = tr.Apply(svcs, eps)
	if len(res.StaleEndpoints) != 1 || res.StaleEndpoints[0].Endpoint.IP != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("stale endpoints %+v, want 10.0.0.2", res.StaleEndpoints)
	}
	if len(res.LastChangeTriggerTimes) != 0 {
		t.Errorf("a slice without the annotation reported trigger times %v", res.LastChangeTriggerTimes)
	}

	tr.ServiceUpdate(svc("2"), nil)
	res = tr.Apply(svcs, eps)
	if len(svcs) != 0 || len(res.DeletedUDP) != 1 || len(res.StaleEndpoints) != 1 {
		t.Errorf("deleting the Service: services %v, result %+v", svcs, res)
	}
}

func TestCategorize(t *testing.T) {
	sp := &ServicePort{NodePort: 30000, ExternalPolicyLocal: true}
	local := &Endpoint{IP: netip.MustParseAddr("10.0.0.1"), Port: 80, Ready: true, Serving: true, IsLocal: true}
	remote := &Endpoint{IP: netip.MustParseAddr("10.0.0.2"), Port: 80, Ready: true, Serving: true}
	terminatingLocal := &Endpoint{IP: netip.MustParseAddr("10.0.0.3"), Port: 80, Serving: true, Terminating: true, IsLocal: true}

	cluster, loc, all, any := Categorize([]*Endpoint{local, remote}, sp)
	if len(cluster) != 2 || len(loc) != 1 || loc[0] != local || len(all) != 2 || !any {
		t.Errorf("eTP Local: cluster %v local %v all %v any %v", cluster, loc, all, any)
	}
	// No ready local endpoint: Local falls back to the serving,
	// terminating local one, while Cluster keeps the ready remote one.
	cluster, loc, all, _ = Categorize([]*Endpoint{remote, terminatingLocal}, sp)
	if len(cluster) != 1 || cluster[0] != remote || len(loc) != 1 || loc[0] != terminatingLocal || len(all) != 2 {
		t.Errorf("terminating fallback: cluster %v local %v all %v", cluster, loc, all)
	}
	if _, _, _, any := Categorize([]*Endpoint{{IP: netip.MustParseAddr("10.0.0.9"), Port: 80}}, &ServicePort{}); any {
		t.Error("an endpoint neither ready nor serving counted as usable")
	}
}

// An endpoint listed by two slices counts once, as the first slice (by
// name) has it.
func TestEndpointInTwoSlicesCountsOnce(t *testing.T) {
	a := epSlice("web-a", "1", "", endpoint("10.244.1.5", "n1", ptr(true), nil, nil), endpoint("10.244.1.6", "n1", ptr(true), nil, nil))
	b := epSlice("web-b", "1", "", endpoint("10.244.1.5", "n2", ptr(false), nil, nil), endpoint("10.244.1.4", "n2", ptr(true), nil, nil))
	eps := Endpoints(NamespacedName{"ns", "web"}, []*discoveryv1.EndpointSlice{b, a}, "n1")
	got := eps[ServicePortName{NamespacedName{"ns", "web"}, "dns", "UDP"}]
	if len(got) != 3 || got[0].IP.String() != "10.244.1.4" || got[1].IP.String() != "10.244.1.5" || got[2].IP.String() != "10.244.1.6" {
		t.Fatalf("endpoints %v", got)
	}
	if !got[1].Ready || got[1].NodeName != "n1" || !got[1].IsLocal {
		t.Errorf("the duplicate is web-b's, not web-a's: %+v", got[1])
	}
}
