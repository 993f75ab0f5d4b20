package endpoints

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	corev1 "skiff.dev/proto/api/core/v1"
)

// repackSubsets is upstream's endpoints.RepackSubsets: it expands subsets
// to (address, port) pairs and regroups them canonically, one subset per
// set of addresses sharing the same ports, everything sorted. Two inputs
// with the same pairs give the same output, so comparing the result with
// what is stored tells whether anything changed. An address that is not
// ready on a port stays not ready there, whatever another subset says.
func repackSubsets(subsets []*corev1.EndpointSubset) []*corev1.EndpointSubset {
	type addrKey struct{ ip, uid string }
	addrs := map[addrKey]*corev1.EndpointAddress{}
	ports := map[string]*corev1.EndpointPort{}
	// port → address → ready
	byPort := map[string]map[addrKey]bool{}
	add := func(a *corev1.EndpointAddress, pk string, ready bool) {
		k := addrKey{a.GetIp(), a.GetTargetRef().GetUid()}
		if _, ok := addrs[k]; !ok {
			addrs[k] = proto.Clone(a).(*corev1.EndpointAddress)
		}
		m := byPort[pk]
		if m == nil {
			m = map[addrKey]bool{}
			byPort[pk] = m
		}
		if was, ok := m[k]; !ok || was {
			m[k] = ready
		}
	}
	for _, s := range subsets {
		ps := s.GetPorts()
		// A headless Service without ports still has addresses: they
		// group under "no ports" rather than vanish.
		if len(ps) == 0 {
			ps = []*corev1.EndpointPort{nil}
		}
		for _, p := range ps {
			pk := portKey(p)
			if p != nil {
				ports[pk] = p
			}
			for _, a := range s.GetAddresses() {
				add(a, pk, true)
			}
			for _, a := range s.GetNotReadyAddresses() {
				add(a, pk, false)
			}
		}
	}

	// Ports offered by exactly the same addresses (same readiness) share a
	// subset.
	groups := map[string][]string{} // address-set key → port keys
	for pk, m := range byPort {
		var parts []string
		for k, ready := range m {
			parts = append(parts, fmt.Sprintf("%s/%s/%t", k.ip, k.uid, ready))
		}
		slices.Sort(parts)
		gk := strings.Join(parts, ",")
		groups[gk] = append(groups[gk], pk)
	}
	out := make([]*corev1.EndpointSubset, 0, len(groups))
	for _, pks := range groups {
		s := &corev1.EndpointSubset{}
		for k, ready := range byPort[pks[0]] {
			if ready {
				s.Addresses = append(s.Addresses, proto.Clone(addrs[k]).(*corev1.EndpointAddress))
			} else {
				s.NotReadyAddresses = append(s.NotReadyAddresses, proto.Clone(addrs[k]).(*corev1.EndpointAddress))
			}
		}
		for _, pk := range pks {
			if p := ports[pk]; p != nil {
				s.Ports = append(s.Ports, proto.Clone(p).(*corev1.EndpointPort))
			}
		}
		sortSubset(s)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *corev1.EndpointSubset) int { return strings.Compare(subsetKey(a), subsetKey(b)) })
	return out
}

// sortSubset orders addresses by IP then pod uid, and ports by their key.
func sortSubset(s *corev1.EndpointSubset) {
	byAddr := func(a, b *corev1.EndpointAddress) int {
		return cmp.Or(strings.Compare(a.GetIp(), b.GetIp()), strings.Compare(a.GetTargetRef().GetUid(), b.GetTargetRef().GetUid()))
	}
	slices.SortFunc(s.Addresses, byAddr)
	slices.SortFunc(s.NotReadyAddresses, byAddr)
	slices.SortFunc(s.Ports, func(a, b *corev1.EndpointPort) int { return strings.Compare(portKey(a), portKey(b)) })
}

func portKey(p *corev1.EndpointPort) string {
	if p == nil {
		return ""
	}
	return fmt.Sprintf("%q/%s/%d/%q", p.GetName(), p.GetProtocol(), p.GetPort(), p.GetAppProtocol())
}

// subsetKey orders subsets; upstream orders them by hash, any fixed order
// serves.
func subsetKey(s *corev1.EndpointSubset) string {
	var b strings.Builder
	for _, p := range s.GetPorts() {
		b.WriteString(portKey(p) + ";")
	}
	b.WriteString("|")
	for _, a := range s.GetAddresses() {
		b.WriteString(a.GetIp() + "/" + a.GetTargetRef().GetUid() + ";")
	}
	b.WriteString("|")
	for _, a := range s.GetNotReadyAddresses() {
		b.WriteString(a.GetIp() + "/" + a.GetTargetRef().GetUid() + ";")
	}
	return b.String()
}

// countAddresses is the total of ready and not-ready addresses.
func countAddresses(subsets []*corev1.EndpointSubset) (ready, notReady int) {
	for _, s := range subsets {
		ready += len(s.GetAddresses())
		notReady += len(s.GetNotReadyAddresses())
	}
	return ready, notReady
}

// truncate is upstream's truncateEndpoints: it cuts subsets down to max
// addresses, ready ones first, each subset keeping its proportional share
// (rounded up, the last taking what is left). It reports whether it cut.
func truncate(subsets []*corev1.EndpointSubset, max int) bool {
	ready, notReady := countAddresses(subsets)
	if ready+notReady <= max {
		return false
	}
	truncateReady := ready > max
	budget, total := max-ready, notReady
	if truncateReady {
		budget, total = max, ready
	}
	left := budget
	for _, s := range subsets {
		n := len(s.NotReadyAddresses)
		if truncateReady {
			n = len(s.Addresses)
		}
		take := int(math.Ceil(float64(n) / float64(total) * float64(budget)))
		take = min(take, left)
		if truncateReady {
			s.Addresses = s.Addresses[:min(len(s.Addresses), take)]
			s.NotReadyAddresses = nil
			left -= len(s.Addresses)
		} else {
			s.NotReadyAddresses = s.NotReadyAddresses[:min(len(s.NotReadyAddresses), take)]
			left -= len(s.NotReadyAddresses)
		}
	}
	return true
}

// subsetsEqual compares subsets ignoring the pods' resourceVersions in
// targetRef, so a pod update that changes nothing here writes nothing.
func subsetsEqual(a, b []*corev1.EndpointSubset) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(withoutRV(a[i]), withoutRV(b[i])) {
			return false
		}
	}
	return true
}

func withoutRV(s *corev1.EndpointSubset) *corev1.EndpointSubset {
	c := proto.Clone(s).(*corev1.EndpointSubset)
	for _, a := range slices.Concat(c.Addresses, c.NotReadyAddresses) {
		if a.TargetRef != nil {
			a.TargetRef.ResourceVersion = ""
		}
	}
	return c
}
