package skiff

import (
	"context"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Each record type of the specification, with upstream's answers.
func TestSpecification(t *testing.T) {
	s, _ := fromCorefile(t, defaultBlock, cluster()...)
	check(t, s, []test.Case{
		// 2.3.1 dns-version
		{Qname: "dns-version.cluster.local.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.TXT("dns-version.cluster.local. 28800 IN TXT 1.1.0")}},

		// 2.4.1 A/AAAA for a ClusterIP Service
		{Qname: "svc1.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")}},
		{Qname: "svc6.testns.svc.cluster.local.", Qtype: dns.TypeAAAA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.AAAA("svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1")}},
		{Qname: "svc-dual-stack.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3")}},
		{Qname: "svc-dual-stack.testns.svc.cluster.local.", Qtype: dns.TypeAAAA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.AAAA("svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 10::3")}},

		// 2.4.2 SRV for a ClusterIP Service's named ports
		{Qname: "_http._tcp.svc1.testns.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.SRV("_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.")},
			Extra:  []dns.RR{test.A("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")}},
		{Qname: "svc1.testns.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.SRV("svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.")},
			Extra:  []dns.RR{test.A("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")}},
		{Qname: "_dns._udp.dns.testns.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.SRV("_dns._udp.dns.testns.svc.cluster.local. 5 IN SRV 0 100 53 dns.testns.svc.cluster.local.")},
			Extra:  []dns.RR{test.A("dns.testns.svc.cluster.local. 5 IN A 10.0.0.53")}},
		{Qname: "_http._tcp.svc6.testns.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.SRV("_http._tcp.svc6.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc6.testns.svc.cluster.local.")},
			Extra:  []dns.RR{test.AAAA("svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1")}},

		// 2.4.3 PTR for a ClusterIP
		{Qname: "1.0.0.10.in-addr.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.PTR("1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local.")}},
		{Qname: "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.PTR("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa. 5 IN PTR svc6.testns.svc.cluster.local.")}},

		// 2.5.1 A/AAAA for a headless Service: its ready endpoints
		{Qname: "hdls1.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{
				test.A("hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2"),
				test.A("hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3"),
				test.A("hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4"),
				test.A("hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5"),
			}},
		{Qname: "hdls1.testns.svc.cluster.local.", Qtype: dns.TypeAAAA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{
				test.AAAA("hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1"),
				test.AAAA("hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2"),
			}},
		{Qname: "hdlsprtls.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20")}},
		// Each endpoint by its dashed address, or its hostname.
		{Qname: "172-0-0-2.hdls1.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2")}},
		{Qname: "5678-abcd--1.hdls1.testns.svc.cluster.local.", Qtype: dns.TypeAAAA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.AAAA("5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1")}},
		{Qname: "dup-name.hdls1.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{
				test.A("dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4"),
				test.A("dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5"),
			}},
		{Qname: "172-0-0-20.hdlsprtls.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("172-0-0-20.hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20")}},
		// An endpoint's name below a ClusterIP Service too.
		{Qname: "172-0-1-1.svc1.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("172-0-1-1.svc1.testns.svc.cluster.local. 5 IN A 172.0.1.1")}},

		// 2.5.1 hostname records: a StatefulSet's pods behind their
		// governing Service
		{Qname: "web-0.web.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("web-0.web.testns.svc.cluster.local. 5 IN A 10.1.0.10")}},
		{Qname: "web-1.web.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("web-1.web.testns.svc.cluster.local. 5 IN A 10.1.0.11")}},

		// 2.5.2 SRV for a headless Service: one per endpoint and port,
		// targets named by hostname, addresses in the additional section
		{Qname: "_http._tcp.hdls1.testns.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{
				test.SRV("_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-2.hdls1.testns.svc.cluster.local."),
				test.SRV("_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-3.hdls1.testns.svc.cluster.local."),
				test.SRV("_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--1.hdls1.testns.svc.cluster.local."),
				test.SRV("_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--2.hdls1.testns.svc.cluster.local."),
				test.SRV("_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local."),
			},
			Extra: []dns.RR{
				test.A("172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2"),
				test.A("172-0-0-3.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3"),
				test.AAAA("5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1"),
				test.AAAA("5678-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2"),
				test.A("dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4"),
				test.A("dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5"),
			}},
		{Qname: "_web._tcp.web.testns.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{
				test.SRV("_web._tcp.web.testns.svc.cluster.local. 5 IN SRV 0 50 80 web-0.web.testns.svc.cluster.local."),
				test.SRV("_web._tcp.web.testns.svc.cluster.local. 5 IN SRV 0 50 80 web-1.web.testns.svc.cluster.local."),
			},
			Extra: []dns.RR{
				test.A("web-0.web.testns.svc.cluster.local. 5 IN A 10.1.0.10"),
				test.A("web-1.web.testns.svc.cluster.local. 5 IN A 10.1.0.11"),
			}},

		// 2.5.3 PTR for a headless endpoint: by hostname, else dashed
		{Qname: "10.0.1.10.in-addr.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.PTR("10.0.1.10.in-addr.arpa. 5 IN PTR web-0.web.testns.svc.cluster.local.")}},
		{Qname: "2.0.0.172.in-addr.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.PTR("2.0.0.172.in-addr.arpa. 5 IN PTR 172-0-0-2.hdls1.testns.svc.cluster.local.")}},
		{Qname: "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.8.7.6.5.ip6.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.PTR("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.8.7.6.5.ip6.arpa. 5 IN PTR 5678-abcd--1.hdls1.testns.svc.cluster.local.")}},

		// 2.6 ExternalName: a CNAME, followed for A through the upstream
		// resolver, or inside the zone when it points there
		{Qname: "external.testns.svc.cluster.local.", Qtype: dns.TypeCNAME, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.CNAME("external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test.")}},
		{Qname: "external.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{
				test.A("ext.interwebs.test. 5 IN A 1.2.3.4"),
				test.CNAME("external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."),
			}},
		{Qname: "external-internal.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{
				test.CNAME("external-internal.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local."),
				test.A("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
			}},
		// An ExternalName has no SRV records and nothing below it.
		{Qname: "external.testns.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeSuccess,
			Ns: []dns.RR{soa("5")}},
		{Qname: "_http._tcp.external.testns.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeNameError,
			Ns: []dns.RR{soa("5")}},
		{Qname: "endpoint.external.testns.svc.cluster.local.", Qtype: dns.TypeCNAME, Rcode: dns.RcodeNameError,
			Ns: []dns.RR{soa("5")}},
		// An address is no name to point at.
		{Qname: "external-ip.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError,
			Ns: []dns.RR{soa("5")}},

		// Pod records (pods insecure): any address in an existing namespace
		{Qname: "10-240-0-1.podns.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("10-240-0-1.podns.pod.cluster.local. 5 IN A 10.240.0.1")}},
		{Qname: "172-0-0-99.podns.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("172-0-0-99.podns.pod.cluster.local. 5 IN A 172.0.0.99")}},
		{Qname: "fd00--1.podns.pod.cluster.local.", Qtype: dns.TypeAAAA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.AAAA("fd00--1.podns.pod.cluster.local. 5 IN AAAA fd00::1")}},
		{Qname: "blah.podns.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError,
			Ns: []dns.RR{soa("5")}},
		{Qname: "10-240-0-1.pod-nons.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError,
			Ns: []dns.RR{soa("5")}},

		// The zone's own records.
		{Qname: "cluster.local.", Qtype: dns.TypeSOA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{soa("5")}},
		{Qname: "cluster.local.", Qtype: dns.TypeNS, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.NS("cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local.")},
			Extra:  []dns.RR{test.A("kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10")}},
		{Qname: "ns.dns.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("ns.dns.cluster.local. 5 IN A 10.96.0.10")}},
	})
}

// Names that do not exist are NXDOMAIN; names that exist without records of
// the type asked are NODATA (NOERROR, no answer): both carry the SOA, whose
// minimum TTL resolvers cache the denial for.
func TestNegativeAnswers(t *testing.T) {
	s, _ := fromCorefile(t, defaultBlock, cluster()...)
	nx := func(name string, qtype uint16) test.Case {
		return test.Case{Qname: name, Qtype: qtype, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("5")}}
	}
	nodata := func(name string, qtype uint16) test.Case {
		return test.Case{Qname: name, Qtype: qtype, Rcode: dns.RcodeSuccess, Ns: []dns.RR{soa("5")}}
	}
	check(t, s, []test.Case{
		nx("svc0.testns.svc.cluster.local.", dns.TypeA),
		nx("svc0.testns.svc.cluster.local.", dns.TypeAAAA),
		nx("svc0.svc-nons.svc.cluster.local.", dns.TypeA),
		nx("svc0.svc-nons.svc.cluster.local.", dns.TypeTXT),
		nx("svc-nons.svc.cluster.local.", dns.TypeA),
		nx("bogusendpoint.hdls1.testns.svc.cluster.local.", dns.TypeA),
		nx("bogusendpoint.svc0.testns.svc.cluster.local.", dns.TypeA),
		nx("172-0-0-9.hdls1.testns.svc.cluster.local.", dns.TypeA), // not ready
		nx("_https._tcp.svc1.testns.svc.cluster.local.", dns.TypeSRV),
		nx("_http._udp.svc1.testns.svc.cluster.local.", dns.TypeSRV),
		nx("a.b.c.svc1.testns.svc.cluster.local.", dns.TypeA), // too long
		nx("svc1.testns.nosuch.cluster.local.", dns.TypeA),
		nx("x.10-240-0-1.podns.pod.cluster.local.", dns.TypeA), // no such name in the schema
		nx("foo.cluster.local.", dns.TypeNS),
		nx("foo.svc.cluster.local.", dns.TypeNS),
		{Qname: "9.9.9.10.in-addr.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeNameError, Ns: []dns.RR{soaFor("in-addr.arpa.", "5")}},
		{Qname: "9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeNameError,
			Ns: []dns.RR{soaFor("ip6.arpa.", "5")}},
		// A name in a reverse zone that is no address.
		{Qname: "foo.in-addr.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeNameError, Ns: []dns.RR{soaFor("in-addr.arpa.", "5")}},
		nx("hdlsempty.testns.svc.cluster.local.", dns.TypeA), // headless, no endpoints: as upstream

		nodata("svc1.testns.svc.cluster.local.", dns.TypeAAAA),
		nodata("svc6.testns.svc.cluster.local.", dns.TypeA),
		nodata("svc1.testns.svc.cluster.local.", dns.TypeTXT),
		nodata("svc1.testns.svc.cluster.local.", dns.TypeMX),
		nodata("svc1.testns.svc.cluster.local.", dns.TypeHINFO),
		nodata("svc1.testns.svc.cluster.local.", dns.TypeSOA),
		nodata("hdlsprtls.testns.svc.cluster.local.", dns.TypeSRV), // no ports
		nodata("svc-noip.testns.svc.cluster.local.", dns.TypeA),    // ClusterIP not allocated yet
		nodata("cluster.local.", dns.TypeA),
		nodata("svc.cluster.local.", dns.TypeA),
		nodata("pod.cluster.local.", dns.TypeA),
		nodata("testns.svc.cluster.local.", dns.TypeA),
		nodata("emptyns.svc.cluster.local.", dns.TypeA),
		nodata("testns.svc.cluster.local.", dns.TypeNS),
		nodata("podns.pod.cluster.local.", dns.TypeA),
	})
}

func TestQueryCaseIsKept(t *testing.T) {
	s, _ := fromCorefile(t, defaultBlock, cluster()...)
	check(t, s, []test.Case{
		{Qname: "SVC1.TestNS.svc.Cluster.Local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("SVC1.TestNS.svc.Cluster.Local. 5 IN A 10.0.0.1")}},
		{Qname: "Web-0.web.TESTNS.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
			Answer: []dns.RR{test.A("Web-0.web.TESTNS.svc.cluster.local. 5 IN A 10.1.0.10")}},
	})
}

func TestPodModes(t *testing.T) {
	objs := append(cluster(), pod("testns", "other", "10.240.0.2"))
	terminating := pod("podns", "leaving", "10.240.0.3")
	terminating.Metadata.DeletionTimestamp = &metav1.Time{}
	objs = append(objs, terminating)

	t.Run("verified", func(t *testing.T) {
		s, cs := fromCorefile(t, "skiff cluster.local {\n pods verified\n}", objs...)
		check(t, s, []test.Case{
			{Qname: "10-240-0-1.podns.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
				Answer: []dns.RR{test.A("10-240-0-1.podns.pod.cluster.local. 5 IN A 10.240.0.1")}},
			{Qname: "fd00--1.podns.pod.cluster.local.", Qtype: dns.TypeAAAA, Rcode: dns.RcodeSuccess,
				Answer: []dns.RR{test.AAAA("fd00--1.podns.pod.cluster.local. 5 IN AAAA fd00::1")}},
			// No pod has the address; one has it in another namespace; one
			// is terminating.
			{Qname: "10-240-0-9.podns.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("5")}},
			{Qname: "10-240-0-2.podns.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("5")}},
			{Qname: "10-240-0-3.podns.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("5")}},
			{Qname: "podns.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, Ns: []dns.RR{soa("5")}},
		})
		if !watched(cs, "pods") {
			t.Error("pods verified does not watch pods")
		}
	})
	t.Run("insecure watches no pods", func(t *testing.T) {
		s, cs := fromCorefile(t, defaultBlock, objs...)
		check(t, s, []test.Case{
			{Qname: "10-240-0-9.podns.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
				Answer: []dns.RR{test.A("10-240-0-9.podns.pod.cluster.local. 5 IN A 10.240.0.9")}},
		})
		if watched(cs, "pods") {
			t.Error("pods insecure watches pods")
		}
	})
	t.Run("disabled", func(t *testing.T) {
		s, _ := fromCorefile(t, "skiff cluster.local", objs...)
		check(t, s, []test.Case{
			{Qname: "10-240-0-1.podns.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("5")}},
		})
	})
}

// watched: the plugin listed or watched resource.
func watched(cs *fake.Clientset, resource string) bool {
	for _, a := range cs.Actions() {
		if a.Resource == resource && (a.Verb == "list" || a.Verb == "watch") {
			return true
		}
	}
	return false
}

func TestFallthrough(t *testing.T) {
	t.Run("reverse zones only", func(t *testing.T) {
		s, _ := fromCorefile(t, "skiff cluster.local in-addr.arpa ip6.arpa {\n fallthrough in-addr.arpa ip6.arpa\n}", cluster()...)
		// An address no Service or endpoint has goes on to the next
		// plugin; a missing cluster name is still ours to deny.
		if resp := serve(t, s, "9.9.9.10.in-addr.arpa.", dns.TypePTR); !fellThrough(resp) {
			t.Errorf("PTR of an unknown address did not fall through:\n%s", resp)
		}
		if resp := serve(t, s, "1.0.0.10.in-addr.arpa.", dns.TypePTR); fellThrough(resp) || len(resp.Answer) != 1 {
			t.Errorf("PTR of a ClusterIP fell through:\n%s", resp)
		}
		if resp := serve(t, s, "svc0.testns.svc.cluster.local.", dns.TypeA); fellThrough(resp) || resp.Rcode != dns.RcodeNameError {
			t.Errorf("a missing Service fell through:\n%s", resp)
		}
	})
	t.Run("every zone", func(t *testing.T) {
		s, _ := fromCorefile(t, "skiff cluster.local {\n fallthrough\n}", cluster()...)
		if resp := serve(t, s, "svc0.testns.svc.cluster.local.", dns.TypeA); !fellThrough(resp) {
			t.Errorf("a missing Service did not fall through:\n%s", resp)
		}
		// NODATA is an answer: it does not fall through.
		if resp := serve(t, s, "svc1.testns.svc.cluster.local.", dns.TypeAAAA); fellThrough(resp) || resp.Rcode != dns.RcodeSuccess {
			t.Errorf("NODATA fell through:\n%s", resp)
		}
	})
	t.Run("other zones", func(t *testing.T) {
		s, _ := fromCorefile(t, "skiff cluster.local", cluster()...)
		if resp := serve(t, s, "example.org.", dns.TypeA); !fellThrough(resp) {
			t.Errorf("a name outside the zones was not passed on:\n%s", resp)
		}
	})
}

func TestOptions(t *testing.T) {
	t.Run("ttl", func(t *testing.T) {
		s, _ := fromCorefile(t, "skiff cluster.local {\n ttl 30\n}", cluster()...)
		check(t, s, []test.Case{
			{Qname: "svc1.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
				Answer: []dns.RR{test.A("svc1.testns.svc.cluster.local. 30 IN A 10.0.0.1")}},
			{Qname: "svc0.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("30")}},
		})
	})
	t.Run("namespaces", func(t *testing.T) {
		objs := append(cluster(), namespace("other"),
			service("other", "svc1", &corev1.ServiceSpec{ClusterIP: "10.0.9.1", Ports: http80()}))
		s, _ := fromCorefile(t, "skiff cluster.local in-addr.arpa {\n namespaces testns\n}", objs...)
		check(t, s, []test.Case{
			{Qname: "svc1.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
				Answer: []dns.RR{test.A("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")}},
			{Qname: "svc1.other.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("5")}},
			{Qname: "1.9.0.10.in-addr.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeNameError, Ns: []dns.RR{soaFor("in-addr.arpa.", "5")}},
		})
	})
	t.Run("endpoint_pod_names", func(t *testing.T) {
		s, _ := fromCorefile(t, "skiff cluster.local {\n endpoint_pod_names\n}", cluster()...)
		check(t, s, []test.Case{
			{Qname: "named-pod-0.named.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
				Answer: []dns.RR{test.A("named-pod-0.named.testns.svc.cluster.local. 5 IN A 172.0.0.30")}},
			// A hostname still wins over the pod's name.
			{Qname: "web-0.web.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
				Answer: []dns.RR{test.A("web-0.web.testns.svc.cluster.local. 5 IN A 10.1.0.10")}},
		})
	})
	t.Run("ignore empty_service", func(t *testing.T) {
		s, _ := fromCorefile(t, "skiff cluster.local {\n ignore empty_service\n}", cluster()...)
		check(t, s, []test.Case{
			{Qname: "svcempty.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("5")}},
			{Qname: "svc1.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
				Answer: []dns.RR{test.A("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")}},
		})
	})
	t.Run("noendpoints", func(t *testing.T) {
		s, cs := fromCorefile(t, "skiff cluster.local {\n noendpoints\n}", cluster()...)
		check(t, s, []test.Case{
			{Qname: "hdls1.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("5")}},
			{Qname: "svc1.testns.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
				Answer: []dns.RR{test.A("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1")}},
		})
		if watched(cs, "endpointslices") {
			t.Error("noendpoints watches endpointslices")
		}
	})
}

// Until the informers have synced a missing name may just not be listed
// yet: SERVFAIL, which resolvers do not cache, instead of NXDOMAIN.
func TestUnsyncedCacheFailsInsteadOfDenying(t *testing.T) {
	s, err := parse(caddy.NewTestController("dns", "skiff cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(cluster()...)
	defer cs.Close()
	s.cache = newCache(cs.Client, cacheOptions{endpoints: true}, newSlogger(log)) // never started
	if s.Ready() {
		t.Fatal("Ready before the informers ran")
	}
	if resp := serve(t, s, "svc1.testns.svc.cluster.local.", dns.TypeA); resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL:\n%s", dns.RcodeToString[resp.Rcode], resp)
	}

	synced, _ := fromCorefile(t, "skiff cluster.local", cluster()...)
	if !synced.Ready() {
		t.Error("not Ready after the informers synced")
	}
}

// The answers follow the cluster: what the watch brings is served, and the
// SOA serial moves with it.
func TestAnswersFollowTheWatch(t *testing.T) {
	s, cs := fromCorefile(t, "skiff cluster.local", cluster()...)
	old := time.Now().Add(-time.Hour)
	s.cache.modified.Store(old.Unix())

	ctx := context.Background()
	svcs := client.For[*corev1.Service](cs.Client, "testns")
	if _, err := svcs.Create(ctx, service("testns", "late", &corev1.ServiceSpec{ClusterIP: "10.0.0.77", Ports: http80()})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new Service to be served", func() bool {
		return serve(t, s, "late.testns.svc.cluster.local.", dns.TypeA).Rcode == dns.RcodeSuccess
	})
	if resp := serve(t, s, "cluster.local.", dns.TypeSOA); resp.Answer[0].(*dns.SOA).Serial <= uint32(old.Unix()) {
		t.Errorf("SOA serial %d did not move past %d", resp.Answer[0].(*dns.SOA).Serial, old.Unix())
	}
	if _, err := svcs.Delete(ctx, "late", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted Service to be denied", func() bool {
		return serve(t, s, "late.testns.svc.cluster.local.", dns.TypeA).Rcode == dns.RcodeNameError
	})
}

func TestDNSProgrammingLatency(t *testing.T) {
	s, cs := fromCorefile(t, "skiff cluster.local", cluster()...)
	now := time.Now()
	s.cache.now = func() time.Time { return now }
	count := func(kind string) uint64 {
		var m dto.Metric
		if err := dnsProgrammingLatency.WithLabelValues(kind).(interface{ Write(*dto.Metric) error }).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount()
	}
	before, beforeHeadless := count("cluster_ip"), count("headless_with_selector")

	sl := endpointSlice("testns", "svc1-new", "svc1", "IPv4", []*discoveryv1.EndpointPort{slicePort("http", "TCP", 8080)},
		endpoint("172.0.1.2", true, ""))
	sl.Metadata.Annotations = map[string]string{annTriggerTime: now.Add(-2 * time.Second).Format(time.RFC3339Nano)}
	unstamped := endpointSlice("testns", "web-new", "web", "IPv4", nil, endpoint("10.1.0.12", true, "web-2"))
	ctx := context.Background()
	for _, o := range []*discoveryv1.EndpointSlice{sl, unstamped} {
		if _, err := client.For[*discoveryv1.EndpointSlice](cs.Client, "testns").Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the new slices to be served", func() bool {
		return serve(t, s, "web-2.web.testns.svc.cluster.local.", dns.TypeA).Rcode == dns.RcodeSuccess &&
			count("cluster_ip") > before
	})
	if got := count("cluster_ip") - before; got != 1 {
		t.Errorf("%d cluster_ip samples, want 1 (the stamped slice)", got)
	}
	if got := count("headless_with_selector") - beforeHeadless; got != 0 {
		t.Errorf("%d headless samples, want 0 (the slice has no trigger time)", got)
	}
	// Slices of the initial list measure nothing.
	stamped := proto.Clone(sl).(*discoveryv1.EndpointSlice)
	stamped.Metadata.Name = "svc1-listed"
	s2, _ := fromCorefile(t, "skiff cluster.local", append(cluster(), stamped)...)
	_ = s2
	if got := count("cluster_ip") - before; got != 1 {
		t.Errorf("%d cluster_ip samples after a start-up list, want still 1", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
