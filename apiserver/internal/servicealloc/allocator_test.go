package servicealloc

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
)

func ptr[T any](v T) *T { return &v }

func TestClusterIPs(t *testing.T) {
	e := newEnv(t)
	e.mustCreate(svc("taken", func(s *corev1.ServiceSpec) { s.ClusterIP = "10.96.0.50" }))
	for _, tc := range []struct {
		name    string
		spec    func(*corev1.ServiceSpec)
		err     string
		check   func(t *testing.T, s *corev1.ServiceSpec)
		wantKey bool
	}{
		{name: "drawn", spec: func(*corev1.ServiceSpec) {}, wantKey: true, check: func(t *testing.T, s *corev1.ServiceSpec) {
			a := netip.MustParseAddr(s.ClusterIP)
			if !netip.MustParsePrefix("10.96.0.0/12").Contains(a) || a == netip.MustParseAddr("10.96.0.0") || a == netip.MustParseAddr("10.96.0.1") || a == netip.MustParseAddr("10.111.255.255") {
				t.Fatalf("clusterIP %s", a)
			}
			if !slices.Equal(s.ClusterIPs, []string{s.ClusterIP}) || !slices.Equal(s.IpFamilies, []string{"IPv4"}) || s.GetIpFamilyPolicy() != "SingleStack" {
				t.Fatalf("clusterIPs %v, ipFamilies %v, policy %v", s.ClusterIPs, s.IpFamilies, s.GetIpFamilyPolicy())
			}
		}},
		{name: "requested", spec: func(s *corev1.ServiceSpec) { s.ClusterIP = "10.100.0.7" }, wantKey: true, check: func(t *testing.T, s *corev1.ServiceSpec) {
			if s.ClusterIP != "10.100.0.7" || !slices.Equal(s.ClusterIPs, []string{"10.100.0.7"}) {
				t.Fatalf("clusterIP %s %v", s.ClusterIP, s.ClusterIPs)
			}
		}},
		{name: "requested as clusterIPs too", spec: func(s *corev1.ServiceSpec) { s.ClusterIP, s.ClusterIPs = "10.100.0.8", []string{"10.100.0.8"} }, wantKey: true},
		{name: "the kubernetes Service's address, asked for", spec: func(s *corev1.ServiceSpec) { s.ClusterIP = "10.96.0.1" }, wantKey: true},
		{name: "taken", spec: func(s *corev1.ServiceSpec) { s.ClusterIP = "10.96.0.50" },
			err: `Service "taken-2" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.0.50": failed to allocate IP 10.96.0.50: provided IP is already allocated`},
		{name: "out of range", spec: func(s *corev1.ServiceSpec) { s.ClusterIP = "10.200.0.1" },
			err: `Service "out-of-range" is invalid: spec.clusterIPs[0]: Invalid value: "10.200.0.1": failed to allocate IP 10.200.0.1: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12`},
		{name: "network address", spec: func(s *corev1.ServiceSpec) { s.ClusterIP = "10.96.0.0" },
			err: `Service "network-address" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.0.0": failed to allocate IP 10.96.0.0: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12`},
		{name: "broadcast address", spec: func(s *corev1.ServiceSpec) { s.ClusterIP = "10.111.255.255" },
			err: `Service "broadcast-address" is invalid: spec.clusterIPs[0]: Invalid value: "10.111.255.255": failed to allocate IP 10.111.255.255: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12`},
		{name: "not an IP", spec: func(s *corev1.ServiceSpec) { s.ClusterIP = "ten" },
			err: `Service "not-an-ip" is invalid: [spec.clusterIP: Invalid value: "ten": must be empty, 'None', or a valid IP address, spec.clusterIPs[0]: Invalid value: "ten": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)]`},
		{name: "clusterIPs disagree", spec: func(s *corev1.ServiceSpec) { s.ClusterIP, s.ClusterIPs = "10.96.0.9", []string{"10.96.0.10"} },
			err: `Service "clusterips-disagree" is invalid: spec.clusterIPs: Invalid value: ["10.96.0.10"]: first value must match ` + "`clusterIP`"},
		{name: "IPv6 on an IPv4 cluster", spec: func(s *corev1.ServiceSpec) { s.ClusterIP = "fd00::10" },
			err: `Service "ipv6-on-an-ipv4-cluster" is invalid: spec.clusterIPs[0]: Invalid value: "fd00::10": IPv6 is not configured on this cluster`},
		{name: "IPv6 family on an IPv4 cluster", spec: func(s *corev1.ServiceSpec) { s.IpFamilies = []string{"IPv6"} },
			err: `Service "ipv6-family-on-an-ipv4-cluster" is invalid: spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster`},
		{name: "dual-stack required", spec: func(s *corev1.ServiceSpec) { s.IpFamilyPolicy = ptr("RequireDualStack") },
			err: `Service "dual-stack-required" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services`},
		{name: "dual-stack preferred", spec: func(s *corev1.ServiceSpec) { s.IpFamilyPolicy = ptr("PreferDualStack") }, wantKey: true, check: func(t *testing.T, s *corev1.ServiceSpec) {
			if len(s.ClusterIPs) != 1 || !slices.Equal(s.IpFamilies, []string{"IPv4"}) {
				t.Fatalf("single-stack cluster gave %v %v", s.ClusterIPs, s.IpFamilies)
			}
		}},
		{name: "single stack with two IPs", spec: func(s *corev1.ServiceSpec) {
			s.ClusterIP, s.ClusterIPs, s.IpFamilyPolicy = "10.96.0.11", []string{"10.96.0.11", "fd00::11"}, ptr("SingleStack")
		}, err: `Service "single-stack-with-two-ips" is invalid: [spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified, spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified]`},
		{name: "headless", spec: func(s *corev1.ServiceSpec) { s.ClusterIP = "None" }, check: func(t *testing.T, s *corev1.ServiceSpec) {
			if !slices.Equal(s.ClusterIPs, []string{"None"}) {
				t.Fatalf("clusterIPs %v", s.ClusterIPs)
			}
		}},
		{name: "headless without selector", spec: func(s *corev1.ServiceSpec) { s.ClusterIP, s.Selector = "None", nil }, check: func(t *testing.T, s *corev1.ServiceSpec) {
			// Upstream: RequireDualStack, both families, even single-stack.
			if s.GetIpFamilyPolicy() != "RequireDualStack" || !slices.Equal(s.IpFamilies, []string{"IPv4", "IPv6"}) {
				t.Fatalf("policy %v families %v", s.GetIpFamilyPolicy(), s.IpFamilies)
			}
		}},
		{name: "external name", spec: func(s *corev1.ServiceSpec) { s.Type, s.ExternalName, s.Ports = "ExternalName", "example.com", nil }, check: func(t *testing.T, s *corev1.ServiceSpec) {
			if s.ClusterIP != "" || len(s.ClusterIPs)+len(s.IpFamilies) != 0 || s.IpFamilyPolicy != nil {
				t.Fatalf("ExternalName got %q %v %v %v", s.ClusterIP, s.ClusterIPs, s.IpFamilies, s.IpFamilyPolicy)
			}
		}},
		{name: "external name with an IP", spec: func(s *corev1.ServiceSpec) {
			s.Type, s.ExternalName, s.ClusterIP = "ExternalName", "example.com", "10.96.0.12"
		},
			err: `Service "external-name-with-an-ip" is invalid: spec.clusterIPs: Forbidden: may not be set for ExternalName services`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := dnsName(tc.name)
			if tc.name == "taken" {
				name = "taken-2"
			}
			before := e.keys()
			got, err := e.create(svc(name, tc.spec))
			if tc.err != "" {
				wantErr(t, err, tc.err)
				if !apierrors.IsInvalid(err) {
					t.Fatalf("reason %v, want Invalid", apierrors.ReasonOf(err))
				}
				if after := e.keys(); !mapsEqual(before, after) {
					t.Fatalf("a refused create changed the keys: %v -> %v", sorted(before), sorted(after))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, got.Spec)
			}
			keys := e.keys()
			if tc.wantKey {
				if keys[ipPrefix+got.Spec.ClusterIP] != name || len(keys) != len(before)+1 {
					t.Fatalf("key for %s: %v", got.Spec.ClusterIP, keys)
				}
			} else if len(keys) != len(before) {
				t.Fatalf("keys written for %s: %v", name, keys)
			}
		})
	}
}

func dnsName(s string) string {
	out := []rune{}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			out = append(out, r)
		case r >= 'A' && r <= 'Z':
			out = append(out, r+'a'-'A')
		default:
			out = append(out, '-')
		}
	}
	return string(out)
}

func TestFullRangeAndReuse(t *testing.T) {
	// A /29 has 8 addresses: the network, the broadcast and the kubernetes
	// Service's leave 5 to draw.
	e := newEnv(t, withRanges("10.0.0.0/29"))
	seen := map[string]bool{}
	for i := range 5 {
		s := e.mustCreate(svc(fmt.Sprintf("s%d", i)))
		if seen[s.Spec.ClusterIP] || s.Spec.ClusterIP == "10.0.0.1" {
			t.Fatalf("drew %s twice or the reserved address", s.Spec.ClusterIP)
		}
		seen[s.Spec.ClusterIP] = true
	}
	_, err := e.create(svc("full"))
	wantErr(t, err, "Internal error occurred: failed to allocate a serviceIP: range is full")
	// The reserved address is still there for whoever names it.
	e.mustCreate(svc("kubernetes", func(s *corev1.ServiceSpec) { s.ClusterIP = "10.0.0.1" }))
	s3, _ := e.reg.Get(e.ctx, svcKind, "default", "s3", "")
	ip := s3.Msg.(*corev1.Service).Spec.ClusterIP
	e.delete("s3")
	if _, ok := e.keys()[ipPrefix+ip]; ok {
		t.Fatalf("deleting s3 left %s allocated", ip)
	}
	again := e.mustCreate(svc("again"))
	if again.Spec.ClusterIP != ip {
		t.Fatalf("the one free address is %s, got %s", ip, again.Spec.ClusterIP)
	}
	// The view follows the keys: 5 drawn, the kubernetes Service's, one
	// released and drawn again.
	eventually(t, func() bool { return testutil.ToFloat64(e.alloc.metrics.allocated.WithLabelValues("10.0.0.0/29")) == 6 })
	if v := testutil.ToFloat64(e.alloc.metrics.available.WithLabelValues("10.0.0.0/29")); v != 0 {
		t.Fatalf("available_ips = %v, want 0", v)
	}
	if v := testutil.ToFloat64(e.alloc.metrics.ipAllocations.WithLabelValues("10.0.0.0/29", "dynamic")); v != 6 {
		t.Fatalf("allocation_total{dynamic} = %v, want 6", v)
	}
	if v := testutil.ToFloat64(e.alloc.metrics.ipErrors.WithLabelValues("10.0.0.0/29", "dynamic")); v != 1 {
		t.Fatalf("allocation_errors_total{dynamic} = %v, want 1", v)
	}
}

func TestDualStack(t *testing.T) {
	e := newEnv(t, withRanges("10.96.0.0/12", "fd00:10:96::/108"))
	single := e.mustCreate(svc("single"))
	if len(single.Spec.ClusterIPs) != 1 || !slices.Equal(single.Spec.IpFamilies, []string{"IPv4"}) {
		t.Fatalf("default is single-stack of the primary family: %v %v", single.Spec.ClusterIPs, single.Spec.IpFamilies)
	}
	dual := e.mustCreate(svc("dual", func(s *corev1.ServiceSpec) { s.IpFamilyPolicy = ptr("PreferDualStack") }))
	if len(dual.Spec.ClusterIPs) != 2 || !slices.Equal(dual.Spec.IpFamilies, []string{"IPv4", "IPv6"}) ||
		!netip.MustParsePrefix("fd00:10:96::/108").Contains(netip.MustParseAddr(dual.Spec.ClusterIPs[1])) {
		t.Fatalf("dual: %v %v", dual.Spec.ClusterIPs, dual.Spec.IpFamilies)
	}
	v6first := e.mustCreate(svc("v6first", func(s *corev1.ServiceSpec) {
		s.IpFamilyPolicy, s.IpFamilies = ptr("RequireDualStack"), []string{"IPv6", "IPv4"}
	}))
	if f, _ := familyOf(v6first.Spec.ClusterIP); f != "IPv6" || len(v6first.Spec.ClusterIPs) != 2 {
		t.Fatalf("v6 first: %s %v", v6first.Spec.ClusterIP, v6first.Spec.ClusterIPs)
	}
	_, err := e.create(svc("v6-out", func(s *corev1.ServiceSpec) { s.ClusterIP = "fd00:99::1" }))
	wantErr(t, err, `Service "v6-out" is invalid: spec.clusterIPs[0]: Invalid value: "fd00:99::1": failed to allocate IP fd00:99::1: provided IP is not in the valid range. The range of valid IPs is fd00:10:96::/108`)

	// Upgrade: the secondary is drawn and its key written with the update.
	single.Spec.IpFamilyPolicy = ptr("PreferDualStack")
	up := e.mustUpdate(single)
	if len(up.Spec.ClusterIPs) != 2 || up.Spec.ClusterIPs[0] != single.Spec.ClusterIP {
		t.Fatalf("upgrade: %v", up.Spec.ClusterIPs)
	}
	if e.keys()[ipPrefix+up.Spec.ClusterIPs[1]] != "single" {
		t.Fatalf("no key for the secondary %s", up.Spec.ClusterIPs[1])
	}
	// Downgrade by policy alone: the secondary goes, and its key with it.
	up.Spec.IpFamilyPolicy = ptr("SingleStack")
	down := e.mustUpdate(up)
	if len(down.Spec.ClusterIPs) != 1 || len(down.Spec.IpFamilies) != 1 {
		t.Fatalf("downgrade: %v %v", down.Spec.ClusterIPs, down.Spec.IpFamilies)
	}
	if _, ok := e.keys()[ipPrefix+up.Spec.ClusterIPs[1]]; ok {
		t.Fatal("the released secondary is still allocated")
	}
	// Dropping the secondary without saying SingleStack is refused.
	dual.Spec.ClusterIPs = dual.Spec.ClusterIPs[:1]
	dual.Spec.IpFamilies = dual.Spec.IpFamilies[:1]
	_, err = e.update(dual)
	if !apierrors.IsInvalid(err) {
		t.Fatalf("downgrade without SingleStack: %v", err)
	}
}

func TestNodePorts(t *testing.T) {
	e := newEnv(t, withPorts("30000-30009"))
	np := func(ports ...*corev1.ServicePort) func(*corev1.ServiceSpec) {
		return func(s *corev1.ServiceSpec) { s.Type, s.Ports = "NodePort", ports }
	}
	a := e.mustCreate(svc("a", np(&corev1.ServicePort{Name: "http", Port: 80}, &corev1.ServicePort{Name: "https", Port: 443, NodePort: 30003})))
	if p := a.Spec.Ports; p[0].NodePort < 30000 || p[0].NodePort > 30009 || p[0].NodePort == 30003 || p[1].NodePort != 30003 {
		t.Fatalf("node ports %d %d", p[0].NodePort, p[1].NodePort)
	}
	if k := e.keys(); k[portPrefix+"30003"] != "a" || k[fmt.Sprintf("%s%d", portPrefix, a.Spec.Ports[0].NodePort)] != "a" {
		t.Fatalf("keys %v", k)
	}

	_, err := e.create(svc("b", np(&corev1.ServicePort{Name: "http", Port: 80, NodePort: 30003})))
	wantErr(t, err, `Service "b" is invalid: spec.ports[0].nodePort: Invalid value: 30003: provided port is already allocated`)
	_, err = e.create(svc("c", np(&corev1.ServicePort{Name: "http", Port: 80, NodePort: 32000})))
	wantErr(t, err, `Service "c" is invalid: spec.ports[0].nodePort: Invalid value: 32000: provided port is not in the valid range. The range of valid ports is 30000-30009`)

	// One node port for TCP and UDP of one port number: one key.
	dns := e.mustCreate(svc("dns", np(&corev1.ServicePort{Name: "dns", Port: 53, Protocol: "UDP"}, &corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: "TCP"})))
	if dns.Spec.Ports[0].NodePort != dns.Spec.Ports[1].NodePort {
		t.Fatalf("53/UDP and 53/TCP got %d and %d", dns.Spec.Ports[0].NodePort, dns.Spec.Ports[1].NodePort)
	}
	// The same node port twice for one protocol is refused.
	_, err = e.create(svc("twice", np(&corev1.ServicePort{Name: "a", Port: 81, NodePort: 30008}, &corev1.ServicePort{Name: "b", Port: 82, NodePort: 30008})))
	wantErr(t, err, `Service "twice" is invalid: spec.ports[1].nodePort: Duplicate value: 30008`)

	// A LoadBalancer keeping traffic local gets a health-check node port.
	lb := e.mustCreate(svc("lb", func(s *corev1.ServiceSpec) { s.Type, s.ExternalTrafficPolicy = "LoadBalancer", "Local" }))
	hc := lb.Spec.HealthCheckNodePort
	if hc < 30000 || hc > 30009 || hc == lb.Spec.Ports[0].NodePort || e.keys()[fmt.Sprintf("%s%d", portPrefix, hc)] != "lb" {
		t.Fatalf("healthCheckNodePort %d (node port %d), keys %v", hc, lb.Spec.Ports[0].NodePort, e.keys())
	}
	local := func(hc int32) func(*corev1.ServiceSpec) {
		return func(s *corev1.ServiceSpec) {
			s.Type, s.ExternalTrafficPolicy, s.HealthCheckNodePort = "LoadBalancer", "Local", hc
		}
	}
	_, err = e.create(svc("hc-taken", local(30003)))
	wantErr(t, err, "Internal error occurred: failed to allocate requested HealthCheck NodePort 30003: provided port is already allocated")
	_, err = e.create(svc("hc-out", local(40000)))
	wantErr(t, err, "Internal error occurred: failed to allocate requested HealthCheck NodePort 40000: provided port is not in the valid range. The range of valid ports is 30000-30009")
	_, err = e.create(svc("hc-own", local(30007), func(s *corev1.ServiceSpec) { s.Ports[0].NodePort = 30007 }))
	wantErr(t, err, "Internal error occurred: failed to allocate requested HealthCheck NodePort 30007: provided port is already allocated")
	_, err = e.create(svc("hc-not-local", func(s *corev1.ServiceSpec) { s.Type, s.HealthCheckNodePort = "LoadBalancer", 30007 }))
	wantErr(t, err, "Service \"hc-not-local\" is invalid: spec.healthCheckNodePort: Invalid value: 30007: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
	noPorts := e.mustCreate(svc("lb-no-ports", func(s *corev1.ServiceSpec) {
		s.Type, s.AllocateLoadBalancerNodePorts = "LoadBalancer", ptr(false)
	}))
	if noPorts.Spec.Ports[0].NodePort != 0 {
		t.Fatalf("allocateLoadBalancerNodePorts=false got %d", noPorts.Spec.Ports[0].NodePort)
	}
	used := len(e.keys()) - 0
	// 10 ports: a (2), dns (1), lb (2) taken; fill the rest, then full.
	for i := 0; used-countIPs(e.keys()) < 10; i++ {
		e.mustCreate(svc(fmt.Sprintf("fill%d", i), np(&corev1.ServicePort{Name: "http", Port: 80})))
		used = len(e.keys())
	}
	_, err = e.create(svc("full", np(&corev1.ServicePort{Name: "http", Port: 80})))
	wantErr(t, err, "Internal error occurred: failed to allocate a nodePort: range is full")

	// Back to ClusterIP: the node ports go, and their keys with them.
	a.Spec.Type = "ClusterIP"
	back := e.mustUpdate(a)
	for _, p := range back.Spec.Ports {
		if p.NodePort != 0 {
			t.Fatalf("ClusterIP kept node port %d", p.NodePort)
		}
	}
	if k := e.keys(); k[portPrefix+"30003"] != "" {
		t.Fatalf("30003 still allocated after the type change: %v", k)
	}
	// A port removed releases its node port.
	dns.Spec.Ports = dns.Spec.Ports[:0]
	dns.Spec.Ports = append(dns.Spec.Ports, &corev1.ServicePort{Name: "other", Port: 99})
	moved := e.mustUpdate(dns)
	if moved.Spec.Ports[0].NodePort == 0 {
		t.Fatal("the new port got no node port")
	}
	// The health check goes with externalTrafficPolicy Local.
	lb.Spec.ExternalTrafficPolicy = "Cluster"
	cl := e.mustUpdate(lb)
	if cl.Spec.HealthCheckNodePort != 0 || e.keys()[fmt.Sprintf("%s%d", portPrefix, hc)] != "" {
		t.Fatalf("health check port %d kept: %v", cl.Spec.HealthCheckNodePort, e.keys())
	}
}

func countIPs(keys map[string]string) int {
	n := 0
	for k := range keys {
		if _, ok := parseIPKey(k); ok {
			n++
		}
	}
	return n
}

func TestUpdatesKeepAllocationsAndImmutability(t *testing.T) {
	e := newEnv(t)
	s := e.mustCreate(svc("web", func(s *corev1.ServiceSpec) { s.Type = "NodePort" }))
	ip, port := s.Spec.ClusterIP, s.Spec.Ports[0].NodePort

	// A client resubmitting its manifest (no clusterIP, no nodePort) keeps both.
	again := svc("web", func(s *corev1.ServiceSpec) { s.Type = "NodePort" })
	kept := e.mustUpdate(again)
	if kept.Spec.ClusterIP != ip || !slices.Equal(kept.Spec.ClusterIPs, []string{ip}) || kept.Spec.Ports[0].NodePort != port {
		t.Fatalf("resubmit: %s %v %d, had %s %d", kept.Spec.ClusterIP, kept.Spec.ClusterIPs, kept.Spec.Ports[0].NodePort, ip, port)
	}
	if kept.Metadata.Generation != s.Metadata.Generation {
		t.Fatalf("resubmitting the same manifest moved generation %d -> %d", s.Metadata.Generation, kept.Metadata.Generation)
	}

	changed := proto.Clone(kept).(*corev1.Service)
	changed.Spec.ClusterIP, changed.Spec.ClusterIPs = "10.96.0.99", []string{"10.96.0.99"}
	_, err := e.update(changed)
	wantErr(t, err, `Service "web" is invalid: [spec.clusterIP: Invalid value: "10.96.0.99": field is immutable, spec.clusterIPs[0]: Invalid value: ["10.96.0.99"]: may not change once set]`)
	plural := proto.Clone(kept).(*corev1.Service)
	plural.Spec.ClusterIPs = []string{"10.96.0.98"}
	if _, err := e.update(plural); !apierrors.IsInvalid(err) {
		t.Fatalf("changing clusterIPs alone: %v", err)
	}

	// To ExternalName: the IP and the node port are released.
	ext := proto.Clone(kept).(*corev1.Service)
	ext.Spec.Type, ext.Spec.ExternalName = "ExternalName", "example.com"
	gone := e.mustUpdate(ext)
	if gone.Spec.ClusterIP != "" || len(gone.Spec.ClusterIPs) != 0 || gone.Spec.Ports[0].NodePort != 0 {
		t.Fatalf("ExternalName kept %q %v %d", gone.Spec.ClusterIP, gone.Spec.ClusterIPs, gone.Spec.Ports[0].NodePort)
	}
	e.wantKeys(map[string]string{})
	// And back: a fresh IP.
	gone.Spec.Type, gone.Spec.ExternalName = "ClusterIP", ""
	back := e.mustUpdate(gone)
	if back.Spec.ClusterIP == "" || e.keys()[ipPrefix+back.Spec.ClusterIP] != "web" {
		t.Fatalf("back to ClusterIP: %q %v", back.Spec.ClusterIP, e.keys())
	}
	// Deleting releases everything.
	e.delete("web")
	e.wantKeys(map[string]string{})
}

func TestFinalizersHoldAllocationsUntilTheServiceGoes(t *testing.T) {
	e := newEnv(t)
	s := svc("held")
	s.Metadata.Finalizers = []string{"example.com/hold"}
	got := e.mustCreate(s)
	e.delete("held")
	if e.keys()[ipPrefix+got.Spec.ClusterIP] != "held" {
		t.Fatal("a Service still being deleted lost its IP")
	}
	cur, _ := e.reg.Get(e.ctx, svcKind, "default", "held", "")
	last := proto.Clone(cur.Msg).(*corev1.Service)
	last.Metadata.Finalizers = nil
	if _, err := e.update(last); err != nil {
		t.Fatal(err)
	}
	e.wantKeys(map[string]string{})
}

func TestDryRunAllocatesNothing(t *testing.T) {
	e := newEnv(t)
	e.mustCreate(svc("taken", func(s *corev1.ServiceSpec) { s.ClusterIP = "10.96.0.50" }))
	o, err := e.reg.Create(e.ctx, svcKind, "default", svc("dry", func(s *corev1.ServiceSpec) { s.Type = "NodePort" }), true)
	if err != nil {
		t.Fatal(err)
	}
	d := o.Msg.(*corev1.Service)
	if d.Spec.ClusterIP == "" || d.Spec.Ports[0].NodePort == 0 {
		t.Fatalf("a dry run shows what it would get: %q %d", d.Spec.ClusterIP, d.Spec.Ports[0].NodePort)
	}
	e.wantKeys(map[string]string{ipPrefix + "10.96.0.50": "taken"})
	_, err = e.reg.Create(e.ctx, svcKind, "default", svc("dry2", func(s *corev1.ServiceSpec) { s.ClusterIP = "10.96.0.50" }), true)
	wantErr(t, err, `Service "dry2" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.0.50": failed to allocate IP 10.96.0.50: provided IP is already allocated`)
	// A dry-run update to NodePort allocates nothing either.
	cur, _ := e.reg.Get(e.ctx, svcKind, "default", "taken", "")
	up := proto.Clone(cur.Msg).(*corev1.Service)
	up.Spec.Type = "NodePort"
	if _, err := e.reg.Update(e.ctx, svcKind, "default", up, true); err != nil {
		t.Fatal(err)
	}
	e.wantKeys(map[string]string{ipPrefix + "10.96.0.50": "taken"})
}

func TestAFailedCreateLeavesNoKey(t *testing.T) {
	e := newEnv(t)
	first := e.mustCreate(svc("web", func(s *corev1.ServiceSpec) { s.Type = "NodePort" }))
	// The name is taken: whatever the second create drew must not stay.
	_, err := e.create(svc("web", func(s *corev1.ServiceSpec) { s.Type = "NodePort" }))
	if !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: %v", err)
	}
	e.wantKeys(map[string]string{
		ipPrefix + first.Spec.ClusterIP:                               "web",
		fmt.Sprintf("%s%d", portPrefix, first.Spec.Ports[0].NodePort): "web",
	})
	// A requested IP taken: the node port drawn for the same create goes too.
	_, err = e.create(svc("other", func(s *corev1.ServiceSpec) { s.Type, s.ClusterIP = "NodePort", first.Spec.ClusterIP }))
	if !apierrors.IsInvalid(err) {
		t.Fatalf("taken IP: %v", err)
	}
	if len(e.keys()) != 2 {
		t.Fatalf("keys after a refused create: %v", e.keys())
	}
}

func TestATakenKeyIsDrawnAgain(t *testing.T) {
	// No view, and a draw that always starts where drawing starts (above
	// the /24's static band of 16): the first two choices are keys written
	// behind the allocator's back.
	e := newEnv(t, withRanges("10.0.0.0/24"), withoutView(), withRand(func(uint64) uint64 { return 0 }))
	for _, ip := range []string{"10.0.0.17", "10.0.0.18"} {
		if _, err := e.store.Create(e.ctx, ipPrefix+ip, []byte("default/ghost/uid")); err != nil {
			t.Fatal(err)
		}
	}
	s := e.mustCreate(svc("web"))
	if s.Spec.ClusterIP != "10.0.0.19" {
		t.Fatalf("drew %s, want the first free address 10.0.0.19", s.Spec.ClusterIP)
	}
	// A requested one is not drawn again: it is the client's error.
	_, err := e.create(svc("named", func(s *corev1.ServiceSpec) { s.ClusterIP = "10.0.0.18" }))
	wantErr(t, err, `Service "named" is invalid: spec.clusterIPs[0]: Invalid value: "10.0.0.18": failed to allocate IP 10.0.0.18: provided IP is already allocated`)
}

func TestDrawnValuesLeaveTheStaticBand(t *testing.T) {
	// Upstream's bands: a /24 keeps its first 16 addresses, the default
	// node port range its first 86 ports, for Services that name theirs,
	// while anything above is free.
	e := newEnv(t, withRanges("10.0.0.0/24"))
	for i := range 30 {
		s := e.mustCreate(svc(fmt.Sprintf("s%d", i), func(s *corev1.ServiceSpec) { s.Type = "NodePort" }))
		if a := netip.MustParseAddr(s.Spec.ClusterIP); a.Less(netip.MustParseAddr("10.0.0.17")) {
			t.Fatalf("drew %s from the static band", a)
		}
		if np := s.Spec.Ports[0].NodePort; np < 30086 {
			t.Fatalf("drew node port %d from the static band", np)
		}
	}
	// Once the rest is gone, the band is drawn from too.
	small := newEnv(t, withRanges("10.0.0.0/27"), withPorts("30000-30019"))
	for i := range 14 + 15 {
		small.mustCreate(svc(fmt.Sprintf("s%d", i)))
	}
	if _, err := small.create(svc("more")); err == nil {
		t.Fatal("a /27 gave a 30th address")
	}
	for _, want := range []window{{2, 16}} {
		if got := windows(2, 1+bandSize(32, 16, 16, 256), 30); len(got) != 2 || got[1] != want || got[0] != (window{17, 30}) {
			t.Fatalf("windows of a /27: %v", got)
		}
	}
	if got := windows(0, bandSize(20, 16, 32, 128), 19); len(got) != 2 || got[0] != (window{16, 19}) {
		t.Fatalf("windows of 20 ports: %v", got)
	}
	if got := windows(0, bandSize(10, 16, 32, 128), 9); len(got) != 1 {
		t.Fatalf("10 ports have no band: %v", got)
	}
}

func TestConcurrentCreatesAskingOneIPOneWins(t *testing.T) {
	e := newEnv(t)
	other := newEnvOn(t, e.store) // a second apiserver on the same etcd
	for round := range 10 {
		ip := fmt.Sprintf("10.96.1.%d", round+10)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, env := range []*env{e, other} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = env.create(svc(fmt.Sprintf("r%d-%d", round, i), func(s *corev1.ServiceSpec) { s.ClusterIP = ip }))
			}()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !apierrors.IsInvalid(err):
				t.Fatalf("loser's error: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d creates got %s (%v)", round, won, ip, errs)
		}
	}
}

func TestTwoApiserversFillARangeWithoutDoubles(t *testing.T) {
	// 29 addresses to draw in a /27; two apiservers draw them all at once,
	// each mostly seeing the other's keys only when its write is refused.
	e := newEnv(t, withRanges("10.0.0.0/27"))
	other := newEnvOn(t, e.store, withRanges("10.0.0.0/27"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]string{}
	var failures []error
	for i := range 29 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := []*env{e, other}[i%2]
			s, err := env.create(svc(fmt.Sprintf("s%d", i)))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, err)
				return
			}
			if prev, dup := got[s.Spec.ClusterIP]; dup {
				failures = append(failures, fmt.Errorf("%s given to %s and %s", s.Spec.ClusterIP, prev, s.Metadata.Name))
			}
			got[s.Spec.ClusterIP] = s.Metadata.Name
		}()
	}
	wg.Wait()
	if len(failures) > 0 || len(got) != 29 {
		t.Fatalf("%d distinct addresses, failures: %v", len(got), failures)
	}
	_, err := other.create(svc("one-too-many"))
	wantErr(t, err, "Internal error occurred: failed to allocate a serviceIP: range is full")
}
