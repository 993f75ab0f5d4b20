package proxy

import (
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/knftables"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	proxyapp "skiff.dev/proxy/app"
)

// benchAddr is the i-th address of 10.99.0.0/16 from offset: rules only,
// no traffic, so the addresses need not exist anywhere.
func benchAddr(offset, i int) string {
	a := netip.MustParseAddr("10.99.0.0").As4()
	n := offset + i
	a[2], a[3] = byte(n>>8), byte(n)
	return netip.AddrFrom4(a).String()
}

// benchSlice is Service s's endpoints: 10 of them, gen shifting one.
func benchSlice(s, gen int) *discoveryv1.EndpointSlice {
	name := "svc" + strconv.Itoa(s)
	sl := &discoveryv1.EndpointSlice{Metadata: &metav1.ObjectMeta{Namespace: "bench", Name: name + "-1",
		ResourceVersion: strconv.Itoa(gen + 1), Labels: map[string]string{"kubernetes.io/service-name": name}},
		AddressType: "IPv4",
		Ports:       []*discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr("TCP"), Port: ptr(int32(8080 + s/3000))}}}
	for e := range 10 {
		// 30,000 endpoint addresses in 10.99.128.0/17 and up, the port
		// telling the Services apart beyond that.
		ip := benchAddr(32768, (s*10+e+gen*(e/9))%30000)
		sl.Endpoints = append(sl.Endpoints, &discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr("elsewhere"),
			Conditions: &discoveryv1.EndpointConditions{Ready: ptr(true)}})
	}
	return sl
}

// BenchmarkSync programs N Services of 10 endpoints each into a scratch
// namespace's kernel (the full sync), then changes one endpoint of one
// Service at a time (partial syncs), and reports both, with the network
// programming latency the proxier records for those changes (from the
// slice's trigger time to its rules: here the partial sync and the feed,
// since nothing waits between them).
func BenchmarkSync(b *testing.B) {
	needRoot(b)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for range b.N {
				benchSync(b, n)
			}
		})
	}
}

func benchSync(b *testing.B, n int) {
	ns := newNS(b)
	nft := newNSNFT(b, ns, knftables.IPv4Family, proxyapp.TableName)
	// As skiff-proxy does: two nft at once for a full sync's chunks.
	var nfts []knftables.Interface
	for range benchParallel {
		nfts = append(nfts, newNSNFT(b, ns, knftables.IPv4Family, proxyapp.TableName))
	}
	m := proxyapp.NewMetrics(nil)
	p, err := proxyapp.NewNFTablesProxier(proxyapp.NFTablesConfig{Family: proxyapp.IPv4, NFT: proxyapp.NewParallelNFT(nfts...),
		FullSyncParallel: benchParallel, Hostname: "bench-node",
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}, NodePorts: proxyapp.NodePortAddresses{Primary: true},
		SyncPeriod: time.Hour, Logger: slog.New(slog.DiscardHandler), FullSyncChunk: benchChunk, Metrics: m})
	if err != nil {
		b.Fatal(err)
	}
	p.OnNodeChange(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: "bench-node"},
		Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: "10.99.127.1"}}}})
	for s := range n {
		p.OnServiceAdd(&corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "bench", Name: "svc" + strconv.Itoa(s), ResourceVersion: "1"},
			Spec: &corev1.ServiceSpec{Type: "ClusterIP", ClusterIP: benchAddr(0, s+1), ClusterIPs: []string{benchAddr(0, s+1)},
				Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}}})
		p.OnEndpointSliceAdd(benchSlice(s, 0))
	}
	p.OnServicesSynced()
	p.OnEndpointSlicesSynced()

	b.ResetTimer()
	start := time.Now()
	if err := p.SyncNow(); err != nil {
		b.Fatal(err)
	}
	full := time.Since(start)
	fullOps := p.LastOps

	const partials = 5
	var times []time.Duration
	for i := range partials {
		s := (i * 7919) % n
		sl := benchSlice(s, i+1)
		// As the endpointslice controller stamps it: the proxier's
		// network programming latency runs from here to its rules.
		sl.Metadata.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": time.Now().Format(time.RFC3339Nano)}
		p.OnEndpointSliceUpdate(nil, sl)
		start := time.Now()
		if err := p.SyncNow(); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
	}
	// The periodic look for changes behind our back reads one set.
	start = time.Now()
	if els, err := nft.ListElements(b.Context(), "set", "sync-generation"); err != nil || len(els) != 1 {
		b.Fatalf("generation set: %v, %v", els, err)
	}
	check := time.Since(start)
	b.StopTimer()
	slices.Sort(times)
	b.ReportMetric(full.Seconds(), "full-sync-s")
	b.ReportMetric(float64(times[partials/2].Microseconds())/1000, "partial-sync-ms")
	var h dto.Metric
	if err := m.NetworkProgramming.Write(&h); err != nil || h.GetHistogram().GetSampleCount() != partials {
		b.Fatalf("kubeproxy_network_programming_duration_seconds: %v, %d samples, want %d", err, h.GetHistogram().GetSampleCount(), partials)
	}
	programming := time.Duration(h.GetHistogram().GetSampleSum() / partials * float64(time.Second))
	b.ReportMetric(float64(programming.Microseconds())/1000, "programming-ms")
	b.ReportMetric(float64(fullOps), "full-sync-ops")
	b.ReportMetric(float64(p.LastOps), "partial-sync-ops")
	b.ReportMetric(float64(check.Microseconds())/1000, "table-check-ms")
	b.Logf("%d Services × 10 endpoints: full sync %s (%d operations), partial syncs %v (last %d operations), network programming %s on average",
		n, full.Round(time.Millisecond), fullOps, times, p.LastOps, programming.Round(10*time.Microsecond))
}

// benchChunk is the full sync's chunk size (0: the proxier's default) and
// benchParallel how many nft may run at once; set with -chunk and
// -parallel to compare.
var benchChunk, benchParallel = 0, 2

func init() {
	flag.IntVar(&benchChunk, "chunk", 0, "ServicePorts per full-sync transaction (0: default)")
	flag.IntVar(&benchParallel, "parallel", 2, "nft processes a full sync may run at once")
}
