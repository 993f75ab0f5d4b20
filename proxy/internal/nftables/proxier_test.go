package nftables

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proxy/internal/conntrack"
	"skiff.dev/proxy/internal/proxy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const testNode = "node-a"

func newTestProxier(t *testing.T, family proxy.Family) (*Proxier, *knftables.Fake) {
	t.Helper()
	fam := knftables.IPv4Family
	if family == proxy.IPv6 {
		fam = knftables.IPv6Family
	}
	fake := knftables.NewFake(fam, TableName)
	return newTestProxierOn(t, family, fake), fake
}

// newTestProxierOn is a proxier over an existing table, as after a restart.
func newTestProxierOn(t *testing.T, family proxy.Family, fake *knftables.Fake) *Proxier {
	t.Helper()
	cidr := netip.MustParsePrefix("10.244.0.0/16")
	nodeIP := "192.168.0.10"
	if family == proxy.IPv6 {
		cidr, nodeIP = netip.MustParsePrefix("fd00:10:244::/56"), "fd00::10"
	}
	p, err := New(Config{Family: family, NFT: fake, Hostname: testNode, ClusterCIDRs: []netip.Prefix{cidr},
		NodePorts: NodePortAddresses{Primary: true}, SyncPeriod: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p.OnNodeChange(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: testNode},
		Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: nodeIP}}}})
	p.OnServicesSynced()
	p.OnEndpointSlicesSynced()
	return p
}

type svcOpt func(*corev1.Service)

func service(ns, name, clusterIP string, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
		Spec: &corev1.ServiceSpec{Type: "ClusterIP", ClusterIP: clusterIP, ClusterIPs: []string{clusterIP},
			Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: metav1.IntOrStringFromInt(8080)}}}}
	for _, o := range opts {
		o(s)
	}
	return s
}

func nodePort(np int32) svcOpt {
	return func(s *corev1.Service) { s.Spec.Type = "NodePort"; s.Spec.Ports[0].NodePort = np }
}

func udp(s *corev1.Service) {
	s.Spec.Ports[0].Protocol, s.Spec.Ports[0].Name, s.Spec.Ports[0].Port = "UDP", "dns", 53
}

// perServiceObject matches any chain or set of one Service (those of
// Services with affinity); sharedObject any shared chain, endpoints map or
// element of them, or hairpin element.
const (
	perServiceObject = `(service|endpoint|local|external|affinity)-[A-Z0-9]{8}-`
	sharedObject     = `(tcp|udp|sctp)-(internal|external|cluster|local|endpoints)-|hairpin-endpoints \{ [0-9a-f]`
)

func ptr[T any](v T) *T { return &v }

type ep struct {
	ip, node                    string
	ready, serving, terminating bool
}

func ready(ip, node string) ep { return ep{ip: ip, node: node, ready: true, serving: true} }

func slice(ns, svc, addressType string, port int32, proto, portName string, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: svc + "-abc", ResourceVersion: "1",
		Labels: map[string]string{proxy.LabelServiceName: svc}}, AddressType: addressType,
		Ports: []*discoveryv1.EndpointPort{{Name: ptr(portName), Protocol: ptr(proto), Port: ptr(port)}}}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, &discoveryv1.Endpoint{Addresses: []string{e.ip}, NodeName: ptr(e.node),
			Conditions: &discoveryv1.EndpointConditions{Ready: ptr(e.ready), Serving: ptr(e.serving), Terminating: ptr(e.terminating)}})
	}
	return s
}

func tcpSlice(svc string, eps ...ep) *discoveryv1.EndpointSlice {
	return slice("default", svc, "IPv4", 8080, "TCP", "http", eps...)
}

// golden compares got with testdata/name.golden (or rewrites it with
// -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("rules differ from %s (run go test -update to accept):\n%s", path, diff(string(want), got))
	}
}

func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	inW := map[string]bool{}
	for _, l := range w {
		inW[l] = true
	}
	inG := map[string]bool{}
	for _, l := range g {
		inG[l] = true
	}
	var b strings.Builder
	for _, l := range w {
		if !inG[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range g {
		if !inW[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

func mustSync(t *testing.T, p *Proxier) {
	t.Helper()
	if err := p.SyncNow(); err != nil {
		t.Fatal(err)
	}
}

// serviceLines are the dump's lines about one Service, without the fixed
// part every table has.
func has(dump, pattern string) bool { return regexp.MustCompile(pattern).MatchString(dump) }

func TestRuleSets(t *testing.T) {
	remote, local := "node-b", testNode
	cases := []struct {
		name   string
		family proxy.Family
		svc    *corev1.Service
		slice  *discoveryv1.EndpointSlice
		// checks are regexps the dump must match, beside the golden file:
		// the behaviour each shape is about, stated where a reader sees it.
		checks []string
		// absent must not match.
		absent []string
	}{
		{name: "clusterip-0-endpoints", svc: service("default", "web", "10.96.0.10"),
			checks: []string{`no-endpoint-services \{ 10\.96\.0\.10 \. tcp \. 80 comment "default/web:http" : goto reject-chain \}`,
				`reject-chain meta l4proto tcp reject with tcp reset`},
			absent: []string{`service-ips \{ 10\.96\.0\.10`, sharedObject}},
		{name: "clusterip-1-endpoint", svc: service("default", "web", "10.96.0.10"), slice: tcpSlice("web", ready("10.244.1.5", remote)),
			checks: []string{`service-ips \{ 10\.96\.0\.10 \. tcp \. 80 : goto tcp-internal-1 \}`,
				`tcp-endpoints-1 \{ 10\.96\.0\.10 \. 80 \. 0 : 10\.244\.1\.5 \. 8080 \}`,
				`tcp-internal-1 meta l4proto tcp dnat to ip daddr \. tcp dport \. numgen random mod 1 map @tcp-endpoints-1`,
				`tcp-internal-1 ip saddr != 10\.244\.0\.0/16 jump mark-for-masquerade`,
				`masquerading ct status dnat ip saddr \. ip daddr @hairpin-endpoints jump mark-for-masquerade`},
			// Another node's pod reaches the ClusterIP through its own
			// node's rules: no hairpin element for it.
			absent: []string{`no-endpoint-services \{ 10\.96`, `add element ip skiff-proxy hairpin-endpoints`, perServiceObject}},
		{name: "clusterip-3-endpoints", svc: service("default", "web", "10.96.0.10"),
			slice: tcpSlice("web", ready("10.244.1.5", remote), ready("10.244.2.5", remote), ready("10.244.3.5", local)),
			checks: []string{`numgen random mod 3 map @tcp-endpoints-3`, `tcp-endpoints-3 \{ 10\.96\.0\.10 \. 80 \. 0 : 10\.244\.1\.5 \. 8080 \}`,
				`tcp-endpoints-3 \{ 10\.96\.0\.10 \. 80 \. 1 : 10\.244\.2\.5 \. 8080 \}`,
				`tcp-endpoints-3 \{ 10\.96\.0\.10 \. 80 \. 2 : 10\.244\.3\.5 \. 8080 \}`,
				`hairpin-endpoints \{ 10\.244\.3\.5 \. 10\.244\.3\.5 \}`},
			absent: []string{`hairpin-endpoints \{ 10\.244\.[12]\.5`}},
		{name: "nodeport", svc: service("default", "web", "10.96.0.10", nodePort(30080)), slice: tcpSlice("web", ready("10.244.1.5", remote)),
			checks: []string{`service-nodeports \{ tcp \. 30080 : goto nodeport-tcp-external-1 \}`,
				`nodeport-tcp-endpoints-1 \{ 30080 \. 0 : 10\.244\.1\.5 \. 8080 \}`,
				`nodeport-ips \{ 192\.168\.0\.10 \}`, `nodeport-tcp-external-1 jump mark-for-masquerade`,
				`nodeport-tcp-external-1 meta l4proto tcp dnat to tcp dport \. numgen random mod 1 map @nodeport-tcp-endpoints-1`,
				`services ip daddr @nodeport-ips meta l4proto \. th dport vmap @service-nodeports`}},
		{name: "external-ips", svc: service("default", "web", "10.96.0.10", func(s *corev1.Service) {
			s.Spec.ExternalIPs = []string{"203.0.113.7"}
		}), slice: tcpSlice("web", ready("10.244.1.5", remote), ready("10.244.2.5", remote)),
			checks: []string{`service-ips \{ 203\.0\.113\.7 \. tcp \. 80 : goto tcp-external-2 \}`, `tcp-external-2 jump mark-for-masquerade`,
				`tcp-endpoints-2 \{ 203\.0\.113\.7 \. 80 \. 1 : 10\.244\.2\.5 \. 8080 \}`,
				`service-ips \{ 10\.96\.0\.10 \. tcp \. 80 : goto tcp-internal-2 \}`}},
		{name: "session-affinity", svc: service("default", "web", "10.96.0.10", func(s *corev1.Service) {
			s.Spec.SessionAffinity = "ClientIP"
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(600))}}
		}), slice: tcpSlice("web", ready("10.244.1.5", remote), ready("10.244.2.5", remote)),
			checks: []string{`add set ip skiff-proxy affinity-\S+ \{ type ipv4_addr ; flags dynamic,timeout ; timeout 600s ; \}`,
				`service-ips \{ 10\.96\.0\.10 \. tcp \. 80 : goto service-[A-Z0-9]{8}-default/web/tcp/http \}`,
				`service-\S+ ip daddr 10\.96\.0\.10 tcp dport 80 ip saddr != 10\.244\.0\.0/16 jump mark-for-masquerade`,
				`ip saddr @affinity-\S+ goto endpoint-`, `update @affinity-\S+ \{ ip saddr \}`,
				`numgen random mod 2 vmap \{ 0 : goto endpoint-\S+ , 1 : goto endpoint-\S+ \}`, `meta l4proto tcp dnat to 10\.244\.1\.5:8080`},
			absent: []string{sharedObject, `endpoint-\S+ ip saddr 10\.244`}},
		{name: "external-traffic-policy-local", svc: service("default", "web", "10.96.0.10", nodePort(30080), func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = "Local"
		}), slice: tcpSlice("web", ready("10.244.1.5", remote), ready("10.244.3.5", local)),
			checks: []string{`service-nodeports \{ tcp \. 30080 : goto nodeport-tcp-external-local-2-1 \}`,
				`nodeport-tcp-external-local-2-1 ip saddr 10\.244\.0\.0/16 goto nodeport-tcp-cluster-2`,
				`nodeport-tcp-external-local-2-1 fib saddr type local jump mark-for-masquerade`,
				`nodeport-tcp-external-local-2-1 fib saddr type local goto nodeport-tcp-cluster-2`, `nodeport-tcp-external-local-2-1 goto nodeport-tcp-local-1`,
				`nodeport-tcp-local-1 meta l4proto tcp dnat to tcp dport \. numgen random mod 1 offset 16777216 map @nodeport-tcp-endpoints-1`,
				`nodeport-tcp-endpoints-1 \{ 30080 \. 16777216 : 10\.244\.3\.5 \. 8080 \}`,
				`nodeport-tcp-endpoints-2 \{ 30080 \. 0 : 10\.244\.1\.5 \. 8080 \}`,
				// Another node's pod reaches the NodePort undnated and may
				// short-circuit to itself.
				`hairpin-endpoints \{ 10\.244\.1\.5 \. 10\.244\.1\.5 \}`},
			absent: []string{`nodeport-tcp-external-local-2-1 jump mark-for-masquerade`}},
		{name: "external-traffic-policy-local-no-local-endpoints", svc: service("default", "web", "10.96.0.10", nodePort(30080), func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = "Local"
		}), slice: tcpSlice("web", ready("10.244.1.5", remote)),
			checks: []string{`no-endpoint-nodeports \{ tcp \. 30080 comment "default/web:http" : drop \}`,
				`service-nodeports \{ tcp \. 30080 : goto nodeport-tcp-external-local-1-0 \}`,
				`service-ips \{ 10\.96\.0\.10 \. tcp \. 80 : goto tcp-internal-1 \}`},
			absent: []string{`nodeport-tcp-local-`, `16777216 :`}},
		{name: "internal-traffic-policy-local", svc: service("default", "web", "10.96.0.10", func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr("Local")
		}), slice: tcpSlice("web", ready("10.244.1.5", remote), ready("10.244.3.5", local)),
			checks: []string{`service-ips \{ 10\.96\.0\.10 \. tcp \. 80 : goto tcp-internal-1 \}`,
				`tcp-endpoints-1 \{ 10\.96\.0\.10 \. 80 \. 0 : 10\.244\.3\.5 \. 8080 \}`},
			absent: []string{`10\.244\.1\.5 \. 8080`}},
		{name: "internal-traffic-policy-local-no-local-endpoints", svc: service("default", "web", "10.96.0.10", func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr("Local")
		}), slice: tcpSlice("web", ready("10.244.1.5", remote)),
			checks: []string{`no-endpoint-services \{ 10\.96\.0\.10 \. tcp \. 80 comment "default/web:http" : drop \}`},
			absent: []string{`dnat to`, sharedObject}},
		{name: "terminating-fallback", svc: service("default", "web", "10.96.0.10"),
			slice:  tcpSlice("web", ep{ip: "10.244.1.5", node: remote, serving: true, terminating: true}, ep{ip: "10.244.2.5", node: remote, terminating: true}),
			checks: []string{`tcp-endpoints-1 \{ 10\.96\.0\.10 \. 80 \. 0 : 10\.244\.1\.5 \. 8080 \}`, `numgen random mod 1 map`},
			absent: []string{`10\.244\.2\.5 \. 8080`}},
		{name: "terminating-ignored-while-ready", svc: service("default", "web", "10.96.0.10"),
			slice:  tcpSlice("web", ready("10.244.1.5", remote), ep{ip: "10.244.2.5", node: remote, serving: true, terminating: true}),
			checks: []string{`tcp-endpoints-1 \{ 10\.96\.0\.10 \. 80 \. 0 : 10\.244\.1\.5 \. 8080 \}`},
			absent: []string{`10\.244\.2\.5 \. 8080`}},
		{name: "headless", svc: service("default", "db", "None"), slice: tcpSlice("db", ready("10.244.1.5", remote)),
			absent: []string{perServiceObject, sharedObject}},
		{name: "externalname", svc: service("default", "ext", "", func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIPs = "ExternalName", "example.com", nil
		}), absent: []string{perServiceObject, sharedObject}},
		{name: "ipv6", family: proxy.IPv6, svc: service("default", "web6", "fd00:10:96::10", nodePort(30081)),
			slice: slice("default", "web6", "IPv6", 8080, "TCP", "http", ready("fd00:10:244:1::5", remote)),
			checks: []string{`add table ip6 skiff-proxy`, `service-ips \{ fd00:10:96::10 \. tcp \. 80 : goto tcp-internal-1 \}`,
				`tcp-endpoints-1 \{ fd00:10:96::10 \. 80 \. 0 : fd00:10:244:1::5 \. 8080 \}`,
				`nodeport-tcp-endpoints-1 \{ 30081 \. 0 : fd00:10:244:1::5 \. 8080 \}`,
				`dnat to ip6 daddr \. tcp dport \. numgen random mod 1 map @tcp-endpoints-1`,
				`masquerading ct status dnat ip6 saddr \. ip6 daddr @hairpin-endpoints`, `nodeport-ips \{ fd00::10 \}`}},
		{name: "ipv4-proxier-skips-ipv6", svc: service("default", "web6", "fd00:10:96::10"),
			slice: slice("default", "web6", "IPv6", 8080, "TCP", "http", ready("fd00:10:244:1::5", remote)), absent: []string{perServiceObject, sharedObject}},
		{name: "udp", svc: service("kube-system", "kube-dns", "10.96.0.53", udp),
			slice:  slice("kube-system", "kube-dns", "IPv4", 53, "UDP", "dns", ready("10.244.1.7", remote)),
			checks: []string{`service-ips \{ 10\.96\.0\.53 \. udp \. 53 : goto udp-internal-1 \}`, `udp-endpoints-1 \{ 10\.96\.0\.53 \. 53 \. 0 : 10\.244\.1\.7 \. 53 \}`, `udp-internal-1 meta l4proto udp dnat to ip daddr \. udp dport`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fam := tc.family
			if fam == "" {
				fam = proxy.IPv4
			}
			p, fake := newTestProxier(t, fam)
			p.OnServiceAdd(tc.svc)
			if tc.slice != nil {
				p.OnEndpointSliceAdd(tc.slice)
			}
			mustSync(t, p)
			dump := fake.Dump()
			golden(t, tc.name, dump)
			for _, c := range tc.checks {
				if !has(dump, c) {
					t.Errorf("no match for %q in:\n%s", c, dump)
				}
			}
			for _, a := range tc.absent {
				if has(dump, a) {
					t.Errorf("unexpected match for %q in:\n%s", a, dump)
				}
			}
		})
	}
}

// A one-endpoint change rewrites that Service's map elements and nothing
// of the others, and leaves the table as a full sync would.
func TestPartialSyncTouchesOnlyTheChangedService(t *testing.T) {
	p, fake := newTestProxier(t, proxy.IPv4)
	const n = 20
	svcs := make([]*corev1.Service, n)
	slices := make([]*discoveryv1.EndpointSlice, n)
	for i := range n {
		name := "svc" + proxy.Itoa(i)
		svcs[i] = service("default", name, "10.96.1."+proxy.Itoa(i+1))
		slices[i] = tcpSlice(name, ready("10.244.1."+proxy.Itoa(i+1), "node-b"), ready("10.244.2."+proxy.Itoa(i+1), "node-b"),
			ready("10.244.3."+proxy.Itoa(i+1), "node-b"))
		p.OnServiceAdd(svcs[i])
		p.OnEndpointSliceAdd(slices[i])
	}
	mustSync(t, p)

	// Same number of endpoints: only the changed slot's element, and the
	// generation.
	changed := tcpSlice("svc7", ready("10.244.1.8", "node-b"), ready("10.244.2.8", "node-b"), ready("10.244.9.8", "node-b"))
	changed.Metadata.ResourceVersion = "2"
	p.OnEndpointSliceUpdate(nil, changed)
	mustSync(t, p)
	tx := fake.LastTransaction.String()
	want := `delete element ip skiff-proxy tcp-endpoints-3 { 10.96.1.8 . 80 . 2 }
add element ip skiff-proxy tcp-endpoints-3 { 10.96.1.8 . 80 . 2 : 10.244.9.8 . 8080 }
flush set ip skiff-proxy sync-generation
add element ip skiff-proxy sync-generation { 2 }
`
	if tx != want || p.LastOps != 4 {
		t.Errorf("partial sync ran %d operations:\n%s\nwant:\n%s", p.LastOps, tx, want)
	}

	// One more endpoint: the Service moves to the shared chain and map of
	// four, which this sync creates; the others keep theirs.
	changed = tcpSlice("svc7", ready("10.244.1.8", "node-b"), ready("10.244.2.8", "node-b"), ready("10.244.9.8", "node-b"),
		ready("10.244.10.8", "node-b"))
	changed.Metadata.ResourceVersion = "3"
	p.OnEndpointSliceUpdate(nil, changed)
	mustSync(t, p)
	tx = fake.LastTransaction.String()
	for _, w := range []string{`add map ip skiff-proxy tcp-endpoints-4`, `add chain ip skiff-proxy tcp-internal-4`,
		`add element ip skiff-proxy service-ips { 10.96.1.8 . tcp . 80 : goto tcp-internal-4 }`,
		`add element ip skiff-proxy tcp-endpoints-4 { 10.96.1.8 . 80 . 3 : 10.244.10.8 . 8080 }`,
		`delete element ip skiff-proxy tcp-endpoints-3 { 10.96.1.8 . 80 . 0 }`} {
		if !strings.Contains(tx, w) {
			t.Errorf("partial sync lacks %q:\n%s", w, tx)
		}
	}
	for i := range n {
		if ip := "10.96.1." + proxy.Itoa(i+1) + " "; i != 7 && strings.Contains(tx, ip) {
			t.Errorf("partial sync touched svc%d:\n%s", i, tx)
		}
	}
	if strings.Contains(tx, "tcp-internal-3") || strings.Contains(tx, "chain ip skiff-proxy endpoint") {
		t.Errorf("partial sync rewrote a chain still in use, or wrote a per-endpoint chain:\n%s", tx)
	}

	// Back to three endpoints for every Service but one, which now has
	// two: the chain of four goes (flushed now, deleted a second later)
	// with its map, and the table is what a fresh proxier writes.
	changed = tcpSlice("svc7", ready("10.244.1.8", "node-b"), ready("10.244.2.8", "node-b"))
	changed.Metadata.ResourceVersion = "4"
	p.OnEndpointSliceUpdate(nil, changed)
	mustSync(t, p)
	tx = fake.LastTransaction.String()
	for _, w := range []string{`flush chain ip skiff-proxy tcp-internal-4`, `delete map ip skiff-proxy tcp-endpoints-4`, `add chain ip skiff-proxy tcp-internal-2`} {
		if !strings.Contains(tx, w) {
			t.Errorf("partial sync lacks %q:\n%s", w, tx)
		}
	}
	for c := range p.staleChains {
		p.staleChains[c] = time.Now().Add(-2 * time.Second)
	}
	mustSync(t, p)
	if len(p.staleChains) != 0 || !strings.Contains(fake.LastTransaction.String(), "delete chain ip skiff-proxy tcp-internal-4") {
		t.Errorf("stale chains left: %v:\n%s", p.staleChains, fake.LastTransaction)
	}
	fresh, freshFake := newTestProxier(t, proxy.IPv4)
	for i := range n {
		fresh.OnServiceAdd(svcs[i])
		if i == 7 {
			fresh.OnEndpointSliceAdd(changed)
			continue
		}
		fresh.OnEndpointSliceAdd(slices[i])
	}
	mustSync(t, fresh)
	if got, want := withoutGeneration(fake.Dump()), withoutGeneration(freshFake.Dump()); got != want {
		t.Errorf("after partial syncs the table differs from a full sync's:\n%s", diff(want, got))
	}
}

// A restarted proxier's first (full) sync over the table its predecessor
// left finds every element in place and writes none of them again.
func TestRestartRewritesNoElement(t *testing.T) {
	p, fake := newTestProxier(t, proxy.IPv4)
	objs := func(q *Proxier) {
		q.OnServiceAdd(service("default", "web", "10.96.0.10", nodePort(30080), func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = "Local" }))
		q.OnEndpointSliceAdd(tcpSlice("web", ready("10.244.1.5", "node-b"), ready("10.244.3.5", testNode)))
		q.OnServiceAdd(service("default", "sticky", "10.96.0.11", func(s *corev1.Service) { s.Spec.SessionAffinity = "ClientIP" }))
		q.OnEndpointSliceAdd(tcpSlice("sticky", ready("10.244.1.6", "node-b")))
		q.OnServiceAdd(service("default", "empty", "10.96.0.12"))
		q.OnServiceAdd(service("kube-system", "kube-dns", "10.96.0.53", udp))
		q.OnEndpointSliceAdd(slice("kube-system", "kube-dns", "IPv4", 53, "UDP", "dns", ready("10.244.1.7", "node-b"), ready("10.244.2.7", "node-b")))
	}
	objs(p)
	mustSync(t, p)
	before := fake.Dump()

	q := newTestProxierOn(t, proxy.IPv4, fake)
	objs(q)
	mustSync(t, q)
	if tx := fake.LastTransaction.String(); has(tx, `(add|delete) element ip skiff-proxy (\S*endpoints|service-|no-endpoint|hairpin)`) {
		t.Errorf("restart rewrote elements:\n%s", tx)
	}
	if got := fake.Dump(); withoutGeneration(got) != withoutGeneration(before) {
		t.Errorf("restart changed the table:\n%s", diff(before, got))
	}
}

// Hairpin pairs are shared by every Service an endpoint serves: the
// element goes only with the last of them.
func TestHairpinPairsAreCounted(t *testing.T) {
	p, fake := newTestProxier(t, proxy.IPv4)
	a, b := service("default", "a", "10.96.0.1"), service("default", "b", "10.96.0.2")
	sa, sb := tcpSlice("a", ready("10.244.3.5", testNode)), tcpSlice("b", ready("10.244.3.5", testNode))
	p.OnServiceAdd(a)
	p.OnServiceAdd(b)
	p.OnEndpointSliceAdd(sa)
	p.OnEndpointSliceAdd(sb)
	mustSync(t, p)
	pair := `hairpin-endpoints { 10.244.3.5 . 10.244.3.5 }`
	if !strings.Contains(fake.Dump(), pair) {
		t.Fatalf("no hairpin pair for a local endpoint:\n%s", fake.Dump())
	}
	p.OnServiceDelete(a)
	p.OnEndpointSliceDelete(sa)
	mustSync(t, p)
	if !strings.Contains(fake.Dump(), pair) {
		t.Errorf("hairpin pair gone while Service b still uses the endpoint:\n%s", fake.Dump())
	}
	p.OnServiceDelete(b)
	p.OnEndpointSliceDelete(sb)
	mustSync(t, p)
	if strings.Contains(fake.Dump(), pair) {
		t.Errorf("hairpin pair left after its last Service went:\n%s", fake.Dump())
	}
}

// withoutGeneration is a dump without the generation element, its lines
// sorted: a map's elements have no order in the kernel, only in the fake.
func withoutGeneration(dump string) string {
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		if !strings.Contains(l, "sync-generation {") {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// Deleting a Service takes out all it had; the empty table matches a fresh
// one.
func TestServiceDeletionRemovesEverything(t *testing.T) {
	p, fake := newTestProxier(t, proxy.IPv4)
	svc := service("default", "web", "10.96.0.10", nodePort(30080), func(s *corev1.Service) { s.Spec.SessionAffinity = "ClientIP" })
	sl := tcpSlice("web", ready("10.244.1.5", "node-b"))
	p.OnServiceAdd(svc)
	p.OnEndpointSliceAdd(sl)
	mustSync(t, p)
	p.OnServiceDelete(svc)
	p.OnEndpointSliceDelete(sl)
	mustSync(t, p)
	for c := range p.staleChains {
		p.staleChains[c] = time.Now().Add(-2 * time.Second)
	}
	mustSync(t, p)
	if d := fake.Dump(); has(d, perServiceObject) || has(d, sharedObject) {
		t.Errorf("objects of the deleted Service remain:\n%s", d)
	}
}

// Endpoints going and coming back flip a Service between REJECT and DNAT.
func TestNoEndpointsRejectsThenServes(t *testing.T) {
	p, fake := newTestProxier(t, proxy.IPv4)
	p.OnServiceAdd(service("default", "web", "10.96.0.10"))
	mustSync(t, p)
	if !has(fake.Dump(), `no-endpoint-services \{ 10\.96\.0\.10 \. tcp \. 80 .*goto reject-chain`) {
		t.Fatalf("no reject for a Service without endpoints:\n%s", fake.Dump())
	}
	p.OnEndpointSliceAdd(tcpSlice("web", ready("10.244.1.5", "node-b")))
	mustSync(t, p)
	d := fake.Dump()
	if has(d, `no-endpoint-services \{ 10\.96\.0\.10`) || !has(d, `service-ips \{ 10\.96\.0\.10 \. tcp \. 80 : goto tcp-internal-1`) {
		t.Fatalf("Service with an endpoint still rejects, or does not dispatch:\n%s", d)
	}
}

// The table changed behind our back: the periodic check notices and
// rewrites it all.
func TestTableChangedBehindOurBackTriggersFullSync(t *testing.T) {
	p, fake := newTestProxier(t, proxy.IPv4)
	p.OnServiceAdd(service("default", "web", "10.96.0.10"))
	p.OnEndpointSliceAdd(tcpSlice("web", ready("10.244.1.5", "node-b")))
	mustSync(t, p)
	want := fake.Dump()

	tx := fake.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := fake.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	p.lastCheck = time.Time{}
	mustSync(t, p)
	if got := fake.Dump(); withoutGeneration(got) != withoutGeneration(want) {
		t.Errorf("table not rewritten after it was deleted:\n%s", diff(want, got))
	}
	// An intact table with nothing changed costs no nft run at all.
	p.lastCheck = time.Time{}
	runs := fake.LastTransaction
	mustSync(t, p)
	if p.LastOps != 0 || fake.LastTransaction != runs {
		t.Errorf("sync of an intact, unchanged table ran a transaction of %d operations", p.LastOps)
	}
}

type fakeConntrack struct{ filters []conntrack.Filter }

func (f *fakeConntrack) DeleteUDP(_ proxy.Family, fs []conntrack.Filter) (int, error) {
	f.filters = append(f.filters, fs...)
	return len(fs), nil
}

// A UDP endpoint that goes away has its conntrack entries deleted; a TCP
// one does not (TCP connections end by themselves).
func TestUDPEndpointRemovalClearsConntrack(t *testing.T) {
	p, _ := newTestProxier(t, proxy.IPv4)
	ct := &fakeConntrack{}
	p.cfg.Conntrack = ct
	p.OnServiceAdd(service("kube-system", "kube-dns", "10.96.0.53", udp))
	p.OnServiceAdd(service("default", "web", "10.96.0.10"))
	dns := slice("kube-system", "kube-dns", "IPv4", 53, "UDP", "dns", ready("10.244.1.7", "node-b"), ready("10.244.2.7", "node-b"))
	web := tcpSlice("web", ready("10.244.1.5", "node-b"), ready("10.244.2.5", "node-b"))
	p.OnEndpointSliceAdd(dns)
	p.OnEndpointSliceAdd(web)
	mustSync(t, p)
	ct.filters = nil

	dns2 := slice("kube-system", "kube-dns", "IPv4", 53, "UDP", "dns", ready("10.244.1.7", "node-b"))
	dns2.Metadata.ResourceVersion = "2"
	web2 := tcpSlice("web", ready("10.244.1.5", "node-b"))
	web2.Metadata.ResourceVersion = "2"
	p.OnEndpointSliceUpdate(dns, dns2)
	p.OnEndpointSliceUpdate(web, web2)
	mustSync(t, p)
	want := conntrack.Filter{OrigDst: netip.MustParseAddr("10.96.0.53"), OrigDstPort: 53, ReplySrc: netip.MustParseAddr("10.244.2.7")}
	if len(ct.filters) != 1 || ct.filters[0] != want {
		t.Errorf("conntrack filters %+v, want only %+v", ct.filters, want)
	}
}

// A full sync in chunks ends where one transaction would, and a full sync
// over a table a previous run left takes out what no Service claims.
func TestChunkedFullSyncOverLeftovers(t *testing.T) {
	p, fake := newTestProxier(t, proxy.IPv4)
	one, oneFake := newTestProxier(t, proxy.IPv4)
	p.cfg.FullSyncChunk = 3
	one.cfg.FullSyncChunk = 1000
	for i := range 10 {
		name := "svc" + proxy.Itoa(i)
		s := service("default", name, "10.96.1."+proxy.Itoa(i+1), nodePort(int32(30000+i)))
		sl := tcpSlice(name, ready("10.244.1."+proxy.Itoa(i+1), "node-b"))
		for _, q := range []*Proxier{p, one} {
			q.OnServiceAdd(s)
			q.OnEndpointSliceAdd(sl)
		}
	}
	// What a previous run left: a chain and map elements of a Service
	// that is gone.
	tx := fake.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("rules for skiff-proxy")})
	tx.Add(&knftables.Chain{Name: "service-OLDOLDOL-default/gone/tcp/http"})
	tx.Add(&knftables.Map{Name: serviceIPsMap, Type: "ipv4_addr . inet_proto . inet_service : verdict",
		Comment: knftables.PtrTo("ClusterIP, ExternalIP and LoadBalancer IP traffic")})
	tx.Add(&knftables.Element{Map: serviceIPsMap, Key: []string{"10.96.9.9", "tcp", "80"}, Value: []string{"goto service-OLDOLDOL-default/gone/tcp/http"}})
	if err := fake.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	mustSync(t, p)
	if got := strings.Count(p.cfg.NFT.(*knftables.Fake).LastTransaction.String(), "\n"); got > 60 {
		t.Errorf("the last chunk has %d lines; chunks of 3 Services should be smaller", got)
	}
	mustSync(t, one)
	for c := range p.staleChains {
		p.staleChains[c] = time.Now().Add(-2 * time.Second)
	}
	mustSync(t, p)
	if got, want := withoutGeneration(fake.Dump()), withoutGeneration(oneFake.Dump()); got != want {
		t.Errorf("chunked full sync over leftovers differs from one transaction on an empty table:\n%s", diff(want, got))
	}
	// And a second full sync changes nothing.
	before := fake.Dump()
	p.needFullSync = true
	mustSync(t, p)
	if got := fake.Dump(); withoutGeneration(got) != withoutGeneration(before) {
		t.Errorf("a repeated full sync changed the table:\n%s", diff(before, got))
	}
}

// A full sync big enough to plan (and read the objects) on two goroutines
// and to run its chunks two at a time ends where Service-by-Service
// syncs do.
func TestLargeFullSyncInParallel(t *testing.T) {
	p, fake := newTestProxier(t, proxy.IPv4)
	p.cfg.FullSyncChunk = 200
	inc, incFake := newTestProxier(t, proxy.IPv4)
	for i := range 1000 {
		name := "svc" + proxy.Itoa(i)
		s := service("default", name, "10.96."+proxy.Itoa(i/250)+"."+proxy.Itoa(i%250+1))
		sl := tcpSlice(name, ready("10.244."+proxy.Itoa(i/250)+"."+proxy.Itoa(i%250+1), "node-b"),
			ready("10.245."+proxy.Itoa(i/250)+"."+proxy.Itoa(i%250+1), testNode))
		p.OnServiceAdd(s)
		p.OnEndpointSliceAdd(sl)
		inc.OnServiceAdd(s)
		inc.OnEndpointSliceAdd(sl)
		if i%250 == 249 {
			mustSync(t, inc)
		}
	}
	p.needFullSync = true
	mustSync(t, p)
	if got, want := withoutGeneration(fake.Dump()), withoutGeneration(incFake.Dump()); got != want {
		t.Errorf("the parallel full sync differs from syncs of 250 Services at a time:\n%s", diff(want, got))
	}
	if n := strings.Count(fake.Dump(), "add element ip skiff-proxy service-ips"); n != 1000 {
		t.Errorf("%d dispatch elements, want 1000", n)
	}
}
