package proxy

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	proxyapp "skiff.dev/proxy/app"
)

// A restarted proxy's first sync reads back what its predecessor wrote
// (in the real nft's own spelling of every element) and writes none of it
// again: only the fixed objects and the generation.
func TestRestartOverOwnTable(t *testing.T) {
	needRoot(t)
	ns := newNS(t)
	nft := newNSNFT(t, ns, knftables.IPv4Family, proxyapp.TableName)
	const n = 50
	start := func() *proxyapp.NFTablesProxier {
		p, err := proxyapp.NewNFTablesProxier(proxyapp.NFTablesConfig{Family: proxyapp.IPv4, NFT: nft, Hostname: "restart-node",
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}, NodePorts: proxyapp.NodePortAddresses{Primary: true},
			SyncPeriod: time.Hour, Logger: slog.New(slog.DiscardHandler), FullSyncChunk: 20})
		if err != nil {
			t.Fatal(err)
		}
		p.OnNodeChange(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: "restart-node"},
			Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: "10.99.127.1"}}}})
		for s := range n {
			svc := &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "r", Name: fmt.Sprint("svc", s), ResourceVersion: "1"},
				Spec: &corev1.ServiceSpec{Type: "ClusterIP", ClusterIP: benchAddr(0, s+1), ClusterIPs: []string{benchAddr(0, s+1)},
					Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}}}
			proto := "TCP"
			switch s % 5 {
			case 1:
				proto = "UDP"
				svc.Spec.Ports[0].Protocol = proto
			case 2:
				svc.Spec.Type, svc.Spec.ExternalTrafficPolicy = "NodePort", "Local"
				svc.Spec.Ports[0].NodePort = int32(30000 + s)
			}
			p.OnServiceAdd(svc)
			sl := &discoveryv1.EndpointSlice{Metadata: &metav1.ObjectMeta{Namespace: "r", Name: fmt.Sprint("svc", s, "-1"), ResourceVersion: "1",
				Labels: map[string]string{"kubernetes.io/service-name": fmt.Sprint("svc", s)}}, AddressType: "IPv4",
				Ports: []*discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(proto), Port: ptr(int32(8080))}}}
			for e := range 1 + s%4 {
				node := "elsewhere"
				if e == 0 && s%2 == 0 {
					node = "restart-node"
				}
				sl.Endpoints = append(sl.Endpoints, &discoveryv1.Endpoint{Addresses: []string{benchAddr(32768, s*4+e)}, NodeName: ptr(node),
					Conditions: &discoveryv1.EndpointConditions{Ready: ptr(true)}})
			}
			if s%7 != 3 {
				p.OnEndpointSliceAdd(sl)
			}
		}
		p.OnServicesSynced()
		p.OnEndpointSlicesSynced()
		if err := p.SyncNow(); err != nil {
			t.Fatal(err)
		}
		return p
	}
	first := start()
	before := elements(t, nft)
	second := start()
	if after := elements(t, nft); !slices.Equal(before, after) {
		t.Errorf("the restart changed the maps:\nbefore %v\nafter  %v", before, after)
	}
	// Every full sync rewrites the one nodeport-ips element.
	if written := first.LastOps - second.LastOps; written != len(before)-1 {
		t.Errorf("the first sync ran %d operations, the restart %d: it rewrote %d of the %d elements",
			first.LastOps, second.LastOps, len(before)-1-written, len(before)-1)
	}
}

// elements lists every element of the table's sets and maps.
func elements(t *testing.T, nft knftables.Interface) []string {
	t.Helper()
	all, err := nft.ListAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, typ := range []string{"set", "map"} {
		for _, name := range all[typ] {
			els, err := nft.ListElements(t.Context(), typ, name)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range els {
				if name != "sync-generation" {
					out = append(out, name+" "+strings.Join(e.Key, " . ")+" : "+strings.Join(e.Value, " . "))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}
