package nftables

import (
	"fmt"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proxy/internal/proxy"
)

// fakeServiceHealth keeps what the last sync reported.
type fakeServiceHealth struct {
	calls  int
	ports  map[proxy.NamespacedName]uint16
	counts map[proxy.NamespacedName]int
}

func (f *fakeServiceHealth) SyncServices(ports map[proxy.NamespacedName]uint16) error {
	f.calls++
	f.ports = ports
	return nil
}

func (f *fakeServiceHealth) SyncEndpoints(counts map[proxy.NamespacedName]int) error {
	f.counts = counts
	return nil
}

func loadBalancer(policy string, hc int32) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Type, s.Spec.ExternalTrafficPolicy, s.Spec.HealthCheckNodePort = "LoadBalancer", policy, hc
		s.Spec.Ports[0].NodePort = 30000 + hc%1000
	}
}

// Every sync reports the eTP=Local Services' health check ports and their
// ready endpoints on this node, whatever the other nodes have.
func TestSyncReportsLocalEndpointsForHealthChecks(t *testing.T) {
	p, _ := newTestProxier(t, proxy.IPv4)
	h := &fakeServiceHealth{}
	p.cfg.ServiceHealth = h
	web := proxy.NamespacedName{Namespace: "default", Name: "web"}
	remote := proxy.NamespacedName{Namespace: "default", Name: "remote"}

	p.OnServiceAdd(service("default", "web", "10.96.0.10", loadBalancer("Local", 31100)))
	p.OnServiceAdd(service("default", "remote", "10.96.0.11", loadBalancer("Local", 31101)))
	p.OnServiceAdd(service("default", "cluster", "10.96.0.12", loadBalancer("Cluster", 0)))
	terminating := ep{ip: "10.244.0.7", node: testNode, serving: true, terminating: true}
	notReady := ep{ip: "10.244.0.8", node: testNode}
	webSlice := tcpSlice("web", ready("10.244.0.5", testNode), ready("10.244.0.6", testNode), ready("10.244.1.5", "node-b"),
		terminating, notReady)
	p.OnEndpointSliceAdd(webSlice)
	p.OnEndpointSliceAdd(tcpSlice("remote", ready("10.244.1.6", "node-b")))
	p.OnEndpointSliceAdd(tcpSlice("cluster", ready("10.244.0.9", testNode)))
	mustSync(t, p)
	if want := map[proxy.NamespacedName]uint16{web: 31100, remote: 31101}; fmt.Sprint(h.ports) != fmt.Sprint(want) {
		t.Errorf("health check ports %v, want %v", h.ports, want)
	}
	if h.counts[web] != 2 || h.counts[remote] != 0 {
		t.Errorf("local endpoints %v, want web 2 (ready, on this node), remote 0", h.counts)
	}

	// A sync with nothing to write still reports: a port that failed to
	// bind is tried again.
	calls := h.calls
	mustSync(t, p)
	if h.calls != calls+1 || h.counts[web] != 2 {
		t.Errorf("quiet sync: %d calls (want %d), counts %v", h.calls, calls+1, h.counts)
	}

	// The local endpoints go elsewhere: none left here.
	moved := tcpSlice("web", ready("10.244.1.5", "node-b"), ready("10.244.1.7", "node-c"))
	moved.Metadata.ResourceVersion = "2"
	p.OnEndpointSliceUpdate(webSlice, moved)
	mustSync(t, p)
	if h.counts[web] != 0 || h.ports[web] != 31100 {
		t.Errorf("after the local endpoints left: ports %v, counts %v", h.ports, h.counts)
	}

	// Policy Cluster: no health check. Deleted: none either.
	cluster := service("default", "web", "10.96.0.10", loadBalancer("Cluster", 0))
	cluster.Metadata.ResourceVersion = "2"
	p.OnServiceUpdate(service("default", "web", "10.96.0.10", loadBalancer("Local", 31100)), cluster)
	p.OnServiceDelete(service("default", "remote", "10.96.0.11", loadBalancer("Local", 31101)))
	mustSync(t, p)
	if len(h.ports) != 0 {
		t.Errorf("health check ports %v after the policy change and the deletion, want none", h.ports)
	}
}
