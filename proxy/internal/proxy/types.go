// Package proxy is what every dataplane of skiff-proxy shares, upstream's
// pkg/proxy: the Service ports and endpoints a node must program, read from
// Services and EndpointSlices, the changes since the last sync, and which
// endpoints a traffic policy may use.
package proxy

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Family is an IP family as the API spells it.
type Family string

const (
	IPv4 Family = "IPv4"
	IPv6 Family = "IPv6"
)

// FamilyOf is the family of addr.
func FamilyOf(addr netip.Addr) Family {
	if addr.Is4() || addr.Is4In6() {
		return IPv4
	}
	return IPv6
}

// NamespacedName names a Service.
type NamespacedName struct{ Namespace, Name string }

func (n NamespacedName) String() string { return n.Namespace + "/" + n.Name }

// ServicePortName is one port of a Service: upstream's ServicePortName, the
// unit every rule is written for.
type ServicePortName struct {
	NamespacedName
	Port     string
	Protocol string // TCP, UDP or SCTP
}

func (n ServicePortName) String() string {
	return fmt.Sprintf("%s/%s:%s", n.Namespace, n.Name, n.Port)
}

// ServicePort is what a node programs for one Service port in one family.
type ServicePort struct {
	Name      ServicePortName
	ClusterIP netip.Addr
	Port      int
	NodePort  int
	// ExternalIPs and LoadBalancerVIPs of this port's family.
	ExternalIPs      []netip.Addr
	LoadBalancerVIPs []netip.Addr

	// SessionAffinityClientIP: connections from one client IP stick to one
	// endpoint for StickyMaxAgeSeconds after its last packet.
	SessionAffinityClientIP bool
	StickyMaxAgeSeconds     int

	ExternalPolicyLocal bool
	InternalPolicyLocal bool
	HealthCheckNodePort int
}

// ExternallyAccessible: traffic reaches the port from outside the cluster's
// VIPs (NodePort, external IPs, load balancers), so externalTrafficPolicy
// applies to it.
func (s *ServicePort) ExternallyAccessible() bool {
	return s.NodePort != 0 || len(s.ExternalIPs) > 0 || len(s.LoadBalancerVIPs) > 0
}

// UsesClusterEndpoints: some traffic to the port may go to any endpoint.
// An externally reachable port always does, even with
// externalTrafficPolicy Local: traffic from this node's pods and from the
// node itself short-circuits to the cluster-wide endpoints, as upstream.
func (s *ServicePort) UsesClusterEndpoints() bool {
	return !s.InternalPolicyLocal || s.ExternallyAccessible()
}

// UsesLocalEndpoints: some traffic to the port may go only to this node's
// endpoints.
func (s *ServicePort) UsesLocalEndpoints() bool {
	return s.InternalPolicyLocal || (s.ExternalPolicyLocal && s.ExternallyAccessible())
}

// Equal compares what the rules are made of.
func (s *ServicePort) Equal(o *ServicePort) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.Name == o.Name && s.ClusterIP == o.ClusterIP && s.Port == o.Port && s.NodePort == o.NodePort &&
		addrsEqual(s.ExternalIPs, o.ExternalIPs) && addrsEqual(s.LoadBalancerVIPs, o.LoadBalancerVIPs) &&
		s.SessionAffinityClientIP == o.SessionAffinityClientIP && s.StickyMaxAgeSeconds == o.StickyMaxAgeSeconds &&
		s.ExternalPolicyLocal == o.ExternalPolicyLocal && s.InternalPolicyLocal == o.InternalPolicyLocal &&
		s.HealthCheckNodePort == o.HealthCheckNodePort
}

func addrsEqual(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Endpoint is one address and port serving a ServicePort.
type Endpoint struct {
	IP   netip.Addr
	Port int
	// IsLocal: the endpoint runs on this node.
	IsLocal bool
	// Ready, Serving and Terminating are the EndpointSlice conditions, an
	// absent ready or serving meaning true as upstream reads them.
	Ready, Serving, Terminating bool
	NodeName                    string
}

// String is "ip:port", the endpoint's identity in chain names and
// comparisons.
func (e *Endpoint) String() string {
	return netip.AddrPortFrom(e.IP, uint16(e.Port)).String()
}

// Equal compares every field.
func (e *Endpoint) Equal(o *Endpoint) bool { return *e == *o }

// ServicePortMap is every ServicePort of one family.
type ServicePortMap map[ServicePortName]*ServicePort

// EndpointsMap is every ServicePort's endpoints, sorted by String.
type EndpointsMap map[ServicePortName][]*Endpoint

// Itoa spares callers strconv.
func Itoa(i int) string { return strconv.Itoa(i) }
