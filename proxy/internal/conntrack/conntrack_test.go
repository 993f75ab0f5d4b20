package conntrack

import (
	"net/netip"
	"slices"
	"testing"

	"skiff.dev/proxy/internal/proxy"
)

func TestFiltersCoverEveryAddressOfThePort(t *testing.T) {
	a := netip.MustParseAddr
	sp := &proxy.ServicePort{ClusterIP: a("10.96.0.53"), Port: 53, NodePort: 30053, ExternalIPs: []netip.Addr{a("192.0.2.1")}}
	ep := &proxy.Endpoint{IP: a("10.244.1.7"), Port: 5353}
	got := Filters(proxy.UpdateResult{StaleEndpoints: []proxy.StaleEndpoint{{Port: sp, Endpoint: ep}},
		NewlyActiveUDP: []*proxy.ServicePort{{ClusterIP: a("10.96.0.54"), Port: 53}}})
	want := []Filter{
		{OrigDst: a("10.96.0.53"), OrigDstPort: 53, ReplySrc: a("10.244.1.7")},
		{OrigDst: a("192.0.2.1"), OrigDstPort: 53, ReplySrc: a("10.244.1.7")},
		{OrigDstPort: 30053, ReplySrc: a("10.244.1.7")},
		{OrigDst: a("10.96.0.54"), OrigDstPort: 53},
	}
	if !slices.Equal(got, want) {
		t.Errorf("filters\n %+v\nwant\n %+v", got, want)
	}
	if n, err := (Netlink{}).DeleteUDP(proxy.IPv4, nil); n != 0 || err != nil {
		t.Errorf("no filters: %d, %v (must not touch the kernel)", n, err)
	}
}
