package skiff

import (
	"net"
	"strings"

	"github.com/miekg/dns"
)

// isDefaultNS: name is ns.dns.<zone>, the nameserver the SOA and NS records
// name.
func isDefaultNS(name, zone string) bool {
	return strings.HasPrefix(name, defaultNSName) && name[len(defaultNSName):] == zone
}

// nsAddrs are the A/AAAA records of the zone's nameserver, as upstream
// finds them: the Services whose endpoints are this server's own
// addresses (kube-dns, found through the coredns pod's IP), by ClusterIP,
// or by endpoint for a headless one; failing that, the addresses this
// server listens on, as ns.dns.<zone>.
func (s *Skiff) nsAddrs(zone string) []dns.RR {
	var names []string
	var ips []net.IP
	found := false
	for _, local := range s.localIPs {
		for _, sl := range s.cache.slicesByIP(local.String()) {
			found = true
			m := sl.GetMetadata()
			svc := s.cache.service(m.GetNamespace(), m.GetLabels()[labelSvcName])
			if svc == nil {
				continue
			}
			svcName := strings.Join([]string{svc.GetMetadata().GetName(), svc.GetMetadata().GetNamespace(), svcLabel, zone}, ".")
			if !headless(svc) {
				for _, ip := range clusterIPs(svc) {
					if p := net.ParseIP(ip); p != nil {
						names, ips = append(names, svcName), append(ips, p)
					}
				}
				continue
			}
			for _, e := range sl.GetEndpoints() {
				if !readyEndpoint(e) {
					continue
				}
				for _, a := range e.GetAddresses() {
					if p := net.ParseIP(a); p != nil {
						names, ips = append(names, s.endpointHostname(e, a)+"."+svcName), append(ips, p)
					}
				}
			}
		}
	}
	if !found {
		for _, ip := range s.localIPs {
			names, ips = append(names, defaultNSName+zone), append(ips, ip)
		}
	}
	rrs := make([]dns.RR, len(ips))
	for i, ip := range ips {
		hdr := dns.RR_Header{Name: names[i], Class: dns.ClassINET}
		if ip4 := ip.To4(); ip4 != nil {
			hdr.Rrtype = dns.TypeA
			rrs[i] = &dns.A{Hdr: hdr, A: ip4}
			continue
		}
		hdr.Rrtype = dns.TypeAAAA
		rrs[i] = &dns.AAAA{Hdr: hdr, AAAA: ip}
	}
	return rrs
}

func rrAddr(rr dns.RR) string {
	switch r := rr.(type) {
	case *dns.A:
		return r.A.String()
	case *dns.AAAA:
		return r.AAAA.String()
	}
	return ""
}
