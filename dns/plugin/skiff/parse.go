package skiff

import (
	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	"github.com/miekg/dns"
)

// recordRequest is a query name taken apart along the specification's
// schema, as the kubernetes plugin's parseRequest does (less its
// multicluster and zone-scoped names).
type recordRequest struct {
	// port and protocol are an SRV query's _port._protocol, underscores
	// stripped.
	port, protocol string
	// endpoint is the label left of the service: a headless endpoint's
	// hostname, or a pod's dashed address under pod.
	endpoint  string
	service   string
	namespace string
	// podOrSvc is "pod", "svc", or "" for the zone's apex.
	podOrSvc string
}

// parseRequest splits name, inside zone, into its parts:
//
//	_port._protocol.service.namespace.svc.zone
//	endpoint.service.namespace.svc.zone
//	service.namespace.svc.zone
//	address.namespace.pod.zone
//
// A name with more labels than these, or whose type label is neither svc
// nor pod, is errInvalidRequest (NXDOMAIN).
func parseRequest(name, zone string) (r recordRequest, err error) {
	base, _ := dnsutil.TrimZone(name, zone)
	// The apex and the bare svc and pod names exist and hold nothing.
	if base == "" || base == svcLabel || base == podLabel {
		return r, nil
	}
	segs := dns.SplitDomainName(base)
	last := len(segs) - 1
	r.podOrSvc = segs[last]
	if r.podOrSvc != podLabel && r.podOrSvc != svcLabel {
		return r, errInvalidRequest
	}
	if last--; last < 0 {
		return r, nil
	}
	r.namespace = segs[last]
	if last--; last < 0 {
		return r, nil
	}
	r.service = segs[last]
	if last--; last < 0 {
		return r, nil
	}
	switch last {
	case 0:
		r.endpoint = segs[last]
	case 1:
		r.protocol = stripUnderscore(segs[last])
		r.port = stripUnderscore(segs[last-1])
	default:
		return r, errInvalidRequest
	}
	return r, nil
}

func stripUnderscore(s string) string {
	if len(s) > 0 && s[0] == '_' {
		return s[1:]
	}
	return s
}
