// Package servicealloc gives Services their cluster IPs and node ports, as
// upstream's ipallocator and portallocator do, with one difference in how
// they are kept: not a bitmap object per range but one etcd key per
// allocation, written in the same transaction as the Service that holds it
// (registry.SideKeys). Two apiservers can therefore never hand out one IP or
// port, and nothing a client was told it got is lost or left behind:
//
//	<prefix>/ranges/serviceips/<ip>          = <namespace>/<name>/<uid>
//	<prefix>/ranges/servicenodeports/<port>  = <namespace>/<name>/<uid>
//
// Each apiserver watches those keys to choose well (Allocator's view), but
// the transaction decides: a key found taken is chosen again. The repair
// loop (Repair) deals with what transactions cannot prevent: a restore, a
// range changed under existing Services, keys written by hand.
package servicealloc

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"

	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// maxRangeBits is upstream's bound on a service CIDR: at most 2^20
// addresses, so a range can be scanned and its view kept as a bitmap.
const maxRangeBits = 20

// IPRange is one --service-cluster-ip-range CIDR. Offsets count addresses
// from the network address; the network address (and IPv4's broadcast) is
// never handed out, and the first usable address, offset 1, is the
// kubernetes Service's, so only a request naming it can take it.
type IPRange struct {
	prefix netip.Prefix
	size   uint64
}

// ParseIPRange parses one CIDR; host bits are dropped, as upstream does.
func ParseIPRange(s string) (IPRange, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return IPRange{}, fmt.Errorf("%q is not a CIDR", s)
	}
	p = p.Masked()
	bits := p.Addr().BitLen() - p.Bits()
	if bits > maxRangeBits {
		return IPRange{}, fmt.Errorf("%s is too large; for %d-bit addresses, the mask must be >= %d", p, p.Addr().BitLen(), p.Addr().BitLen()-maxRangeBits)
	}
	r := IPRange{prefix: p, size: 1 << bits}
	if r.last() < dynamicFirst {
		return IPRange{}, fmt.Errorf("%s is too small: it must hold the kubernetes Service's address and at least one more", p)
	}
	return r, nil
}

// ParseIPRanges parses --service-cluster-ip-range: one CIDR, or two of
// different families for dual-stack (the first is the primary family).
func ParseIPRanges(values []string) ([]IPRange, error) {
	if len(values) == 0 || len(values) > 2 {
		return nil, fmt.Errorf("want one CIDR, or two of different IP families, got %d", len(values))
	}
	var out []IPRange
	for i, v := range values {
		r, err := ParseIPRange(v)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out = append(out, r)
	}
	if len(out) == 2 && out[0].Family() == out[1].Family() {
		return nil, fmt.Errorf("%s and %s must be of different IP families", out[0], out[1])
	}
	return out, nil
}

func (r IPRange) String() string { return r.prefix.String() }

// Family is upstream's IPFamily, "IPv4" or "IPv6".
func (r IPRange) Family() string {
	if r.prefix.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// dynamicFirst is the first offset chosen for a Service that names no IP;
// offset 1 is the kubernetes Service's.
const dynamicFirst = 2

// last is the highest offset handed out: IPv4 keeps its broadcast address.
func (r IPRange) last() uint64 {
	if r.prefix.Addr().Is4() {
		return r.size - 2
	}
	return r.size - 1
}

// usable is how many addresses Services may hold (metrics).
func (r IPRange) usable() uint64 { return r.last() }

// KubernetesServiceIP is the range's first usable address, upstream's
// GetIndexedIP(range, 1).
func (r IPRange) KubernetesServiceIP() netip.Addr { return r.addr(1) }

func (r IPRange) addr(off uint64) netip.Addr {
	b := r.prefix.Addr().AsSlice()
	n := new(big.Int).SetBytes(b)
	n.Add(n, new(big.Int).SetUint64(off))
	out := n.FillBytes(make([]byte, len(b)))
	a, _ := netip.AddrFromSlice(out)
	return a
}

// offset is a's place in the range, and whether it may be handed out.
func (r IPRange) offset(a netip.Addr) (uint64, bool) {
	a = a.Unmap()
	if !r.prefix.Contains(a) {
		return 0, false
	}
	base := new(big.Int).SetBytes(r.prefix.Addr().AsSlice())
	off := new(big.Int).SetBytes(a.AsSlice())
	off.Sub(off, base)
	o := off.Uint64()
	return o, o >= 1 && o <= r.last()
}

// PortRange is --service-node-port-range.
type PortRange struct {
	Base, Size int
}

// ParsePortRange parses upstream's forms, "30000-32767" or "30000+2767".
func ParsePortRange(s string) (PortRange, error) {
	pr, err := utilnet.ParsePortRange(strings.TrimSpace(s))
	if err != nil {
		return PortRange{}, fmt.Errorf("%q is not a port range such as 30000-32767: %w", s, err)
	}
	if pr.Base < 1 || pr.Base+pr.Size-1 > 65535 {
		return PortRange{}, fmt.Errorf("%q is not within 1-65535", s)
	}
	return PortRange{Base: pr.Base, Size: pr.Size}, nil
}

// String is upstream's form, "30000-32767".
func (p PortRange) String() string { return fmt.Sprintf("%d-%d", p.Base, p.Last()) }

// Last is the range's highest port.
func (p PortRange) Last() int { return p.Base + p.Size - 1 }

// Contains reports whether port may be handed out.
func (p PortRange) Contains(port int) bool { return port >= p.Base && port <= p.Last() }
