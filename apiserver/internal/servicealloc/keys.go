package servicealloc

import (
	"net/netip"
	"strconv"
	"strings"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/scheme"
)

// The allocation keys, relative to the store's prefix. Node ports are one
// pool whatever the protocol, as upstream's: one Service may serve TCP and
// UDP of one port number on one node port, two Services never share one.
const (
	ipPrefix   = "ranges/serviceips/"
	portPrefix = "ranges/servicenodeports/"
)

// RangesPrefix holds every allocation key.
const RangesPrefix = "ranges/"

func ipKey(a netip.Addr) string { return ipPrefix + a.Unmap().String() }
func portKey(p int32) string    { return portPrefix + strconv.Itoa(int(p)) }

func parseIPKey(k string) (netip.Addr, bool) {
	s, ok := strings.CutPrefix(k, ipPrefix)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	return a.Unmap(), err == nil
}

func parsePortKey(k string) (int32, bool) {
	s, ok := strings.CutPrefix(k, portPrefix)
	if !ok {
		return 0, false
	}
	p, err := strconv.Atoi(s)
	return int32(p), err == nil && p > 0 && p <= 65535
}

// owner is the value of a Service's keys: namespace/name/uid, readable
// with etcdctl, and exact (a Service recreated under the same name is
// another owner).
func owner(obj scheme.Object) []byte {
	m := obj.GetMetadata()
	return []byte(m.GetNamespace() + "/" + m.GetName() + "/" + m.GetUid())
}

// heldKeys are the allocation keys svc holds as stored: its cluster IPs
// (none for ExternalName), its node ports and its health-check node port.
func heldKeys(svc *corev1.Service) []string {
	s := svc.GetSpec()
	var out []string
	seen := map[string]bool{}
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	if s.GetType() != "ExternalName" {
		for _, ip := range s.GetClusterIPs() {
			if a, err := netip.ParseAddr(ip); err == nil {
				add(ipKey(a))
			}
		}
	}
	for _, p := range s.GetPorts() {
		if p.NodePort > 0 {
			add(portKey(p.NodePort))
		}
	}
	if hc := s.GetHealthCheckNodePort(); hc > 0 {
		add(portKey(hc))
	}
	return out
}
