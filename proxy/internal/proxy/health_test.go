package proxy

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestHealthCheckCountsAsUpstream(t *testing.T) {
	web := NamespacedName{"ns", "web"}
	other := NamespacedName{"ns", "other"}
	http := ServicePortName{NamespacedName: web, Port: "http", Protocol: "TCP"}
	https := ServicePortName{NamespacedName: web, Port: "https", Protocol: "TCP"}
	otherPort := ServicePortName{NamespacedName: other, Port: "http", Protocol: "TCP"}
	svcs := ServicePortMap{
		http:      {Name: http, HealthCheckNodePort: 30100},
		https:     {Name: https, HealthCheckNodePort: 30100},
		otherPort: {Name: otherPort}, // Cluster policy: no health check
		{NamespacedName: NamespacedName{"ns", "bad"}, Port: "x"}: {HealthCheckNodePort: 70000},
	}
	ep := func(ip string, local, ready, terminating bool) *Endpoint {
		return &Endpoint{IP: netip.MustParseAddr(ip), Port: 8080, IsLocal: local, Ready: ready, Serving: ready || terminating,
			Terminating: terminating}
	}
	eps := EndpointsMap{
		// 10.0.0.1 serves both ports: one endpoint to a load balancer.
		http: {ep("10.0.0.1", true, true, false), ep("10.0.0.2", true, true, false), ep("10.0.0.3", false, true, false),
			ep("10.0.0.4", true, false, true), ep("10.0.0.5", true, false, false)},
		https:     {ep("10.0.0.1", true, true, false)},
		otherPort: {ep("10.0.0.9", true, true, false)},
	}
	ports, local := HealthChecks(svcs, eps)
	if fmt.Sprint(ports) != fmt.Sprint(map[NamespacedName]uint16{web: 30100}) {
		t.Errorf("health check ports %v, want only web's 30100", ports)
	}
	if fmt.Sprint(local) != fmt.Sprint(map[NamespacedName]int{web: 2}) {
		t.Errorf("local ready endpoints %v, want web: 2 (distinct local ready addresses)", local)
	}
}
