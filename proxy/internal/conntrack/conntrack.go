// Package conntrack removes the connection-tracking entries that would keep
// UDP datagrams flowing to endpoints a Service no longer has, upstream's
// conntrack cleanup. UDP has no connection to end, so an entry made for a
// gone endpoint would otherwise live as long as the client keeps sending.
// It talks netlink (vishvananda/netlink); no conntrack binary is needed.
package conntrack

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"skiff.dev/proxy/internal/proxy"
)

// Filter selects UDP entries: by original destination (address, and port
// when non-zero) and, when valid, by the endpoint that answered.
type Filter struct {
	OrigDst     netip.Addr
	OrigDstPort int
	ReplySrc    netip.Addr
}

// Interface deletes entries.
type Interface interface {
	DeleteUDP(family proxy.Family, filters []Filter) (int, error)
}

// Netlink is the real Interface; a zero Handle means the caller's network
// namespace.
type Netlink struct {
	Handle *netlink.Handle
}

// DeleteUDP deletes every UDP entry of family matching any filter.
func (n Netlink) DeleteUDP(family proxy.Family, filters []Filter) (int, error) {
	if len(filters) == 0 {
		return 0, nil
	}
	fam := netlink.InetFamily(unix.AF_INET)
	if family == proxy.IPv6 {
		fam = netlink.InetFamily(unix.AF_INET6)
	}
	nf := make([]netlink.CustomConntrackFilter, 0, len(filters))
	for _, f := range filters {
		cf := &netlink.ConntrackFilter{}
		if err := cf.AddProtocol(unix.IPPROTO_UDP); err != nil {
			return 0, err
		}
		if f.OrigDst.IsValid() {
			if err := cf.AddIP(netlink.ConntrackOrigDstIP, net.IP(f.OrigDst.AsSlice())); err != nil {
				return 0, err
			}
		}
		if f.OrigDstPort != 0 {
			if err := cf.AddPort(netlink.ConntrackOrigDstPort, uint16(f.OrigDstPort)); err != nil {
				return 0, err
			}
		}
		if f.ReplySrc.IsValid() {
			if err := cf.AddIP(netlink.ConntrackReplySrcIP, net.IP(f.ReplySrc.AsSlice())); err != nil {
				return 0, err
			}
		}
		nf = append(nf, cf)
	}
	var (
		deleted uint
		err     error
	)
	if n.Handle != nil {
		deleted, err = n.Handle.ConntrackDeleteFilters(netlink.ConntrackTable, fam, nf...)
	} else {
		deleted, err = netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, nf...)
	}
	if err != nil {
		return int(deleted), fmt.Errorf("deleting conntrack entries: %w", err)
	}
	return int(deleted), nil
}

// Filters are the entries to delete after a sync, as upstream's
// CleanStaleEntries: for an endpoint a UDP port dropped, the flows to each
// of the port's addresses (and its node port) that it answered; for a UDP
// port that regained endpoints or went away, every flow to it.
func Filters(res proxy.UpdateResult) []Filter {
	var out []Filter
	vips := func(sp *proxy.ServicePort) []netip.Addr {
		v := []netip.Addr{sp.ClusterIP}
		v = append(v, sp.ExternalIPs...)
		return append(v, sp.LoadBalancerVIPs...)
	}
	for _, st := range res.StaleEndpoints {
		for _, vip := range vips(st.Port) {
			out = append(out, Filter{OrigDst: vip, OrigDstPort: st.Port.Port, ReplySrc: st.Endpoint.IP})
		}
		if st.Port.NodePort != 0 {
			out = append(out, Filter{OrigDstPort: st.Port.NodePort, ReplySrc: st.Endpoint.IP})
		}
	}
	for _, group := range [][]*proxy.ServicePort{res.NewlyActiveUDP, res.DeletedUDP} {
		for _, sp := range group {
			for _, vip := range vips(sp) {
				out = append(out, Filter{OrigDst: vip, OrigDstPort: sp.Port})
			}
			if sp.NodePort != 0 {
				out = append(out, Filter{OrigDstPort: sp.NodePort})
			}
		}
	}
	return out
}
