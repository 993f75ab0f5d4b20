// Package skiff is CoreDNS's kubernetes plugin for Skiff: it answers the
// Kubernetes DNS specification
// (https://github.com/kubernetes/dns/blob/master/docs/specification.md) for
// its zones from Services, EndpointSlices, Namespaces and (with `pods
// verified`) Pods that it watches through Skiff's gRPC API, with the
// Corefile syntax of the kubernetes plugin.
//
// The answers follow CoreDNS's plugin/kubernetes case by case (it is the
// reference implementation the specification's conformance tests run
// against); it is written again on skiff.dev/client because importing the
// upstream plugin would pull client-go's typed clientsets into the binary.
// Like upstream, it is a plugin.ServiceBackend, so CoreDNS's own
// plugin.A/SRV/PTR/… build the records.
package skiff

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/etcd/msg"
	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
)

const (
	pluginName = "skiff"

	podModeDisabled = "disabled" // pod queries are NXDOMAIN
	podModeVerified = "verified" // answered when a pod has the address in the namespace
	podModeInsecure = "insecure" // answered for any address, as kube-dns did

	// DNSSchemaVersion is the specification's version, served as the TXT
	// record dns-version.<zone>.
	DNSSchemaVersion = "1.1.0"

	svcLabel   = "svc"
	podLabel   = "pod"
	defaultTTL = 5
	// keyPrefix is msg.Service's fake etcd path root, as upstream's.
	keyPrefix = "c"
	// defaultNSName is the name of the zone's nameserver, as upstream's.
	defaultNSName = "ns.dns."
)

var (
	errNoItems        = errors.New("no items found")
	errNsNotExposed   = errors.New("namespace is not exposed")
	errInvalidRequest = errors.New("invalid query name")
)

// Upstreamer resolves names outside our zones (an ExternalName's target).
type Upstreamer interface {
	Lookup(ctx context.Context, state request.Request, name string, typ uint16) (*dns.Msg, error)
}

// Skiff is the plugin: a plugin.Handler and a plugin.ServiceBackend.
type Skiff struct {
	Next     plugin.Handler
	Zones    []string
	Upstream Upstreamer
	Fall     fall.F

	// Namespaces, when not empty, are the only ones answered.
	Namespaces map[string]struct{}
	podMode    string
	// endpointNameMode (endpoint_pod_names): a headless endpoint without a
	// hostname is named after its pod, not its dashed address.
	endpointNameMode bool
	// ignoreEmptyService (ignore empty_service): NXDOMAIN for a ClusterIP
	// Service with no ready endpoint.
	ignoreEmptyService bool
	ttl                uint32
	primaryZoneIndex   int
	// localIPs are the addresses this server listens on, to find its own
	// Service for NS records.
	localIPs []net.IP

	conn connection
	// startupTimeout bounds how long the server waits for the informers
	// before it starts answering anyway.
	startupTimeout time.Duration
	watchEndpoints bool

	cache *cache
}

// New returns a plugin for zones with upstream's defaults: pods disabled,
// ttl 5, EndpointSlices watched, the first zone primary (parseStanza picks
// the first non-reverse one).
func New(zones []string) *Skiff {
	return &Skiff{Zones: zones, Namespaces: map[string]struct{}{}, podMode: podModeDisabled,
		ttl: defaultTTL, startupTimeout: 5 * time.Second, watchEndpoints: true}
}

// Name implements plugin.Handler.
func (s *Skiff) Name() string { return pluginName }

// Ready implements the ready plugin's Readiness: ready once every informer
// has synced, as upstream's.
func (s *Skiff) Ready() bool { return s.cache != nil && s.cache.HasSynced() }

func (s *Skiff) primaryZone() string { return s.Zones[s.primaryZoneIndex] }

// Services implements plugin.ServiceBackend.
func (s *Skiff) Services(ctx context.Context, state request.Request, exact bool, opt plugin.Options) ([]msg.Service, error) {
	switch state.QType() {
	case dns.TypeTXT:
		// The only TXT record of the schema: dns-version.<zone>.
		t, _ := dnsutil.TrimZone(state.Name(), state.Zone)
		if segs := dns.SplitDomainName(t); len(segs) == 1 && segs[0] == "dns-version" {
			return []msg.Service{{Text: DNSSchemaVersion, TTL: 28800, Key: msg.Path(state.QName(), keyPrefix)}}, nil
		}
		// NODATA when the name has records of another type.
		if svcs, _ := s.Records(ctx, state, false); len(svcs) > 0 {
			return nil, nil
		}
		return nil, errNoItems

	case dns.TypeNS:
		// ServeDNS asks for NS only at the zone's apex.
		var svcs []msg.Service
		for _, rr := range s.nsAddrs(state.Zone) {
			svcs = append(svcs, msg.Service{Host: rrAddr(rr), Key: msg.Path(rr.Header().Name, keyPrefix), TTL: s.ttl})
		}
		return svcs, nil
	}

	if isDefaultNS(state.Name(), state.Zone) {
		var svcs []msg.Service
		for _, rr := range s.nsAddrs(state.Zone) {
			if rr.Header().Rrtype == state.QType() {
				svcs = append(svcs, msg.Service{Host: rrAddr(rr), Key: msg.Path(state.QName(), keyPrefix), TTL: s.ttl})
			}
		}
		return svcs, nil
	}

	svcs, err := s.Records(ctx, state, false)
	if state.QType() != dns.TypeSRV {
		return svcs, err
	}
	// An ExternalName has no SRV records: its target is a name, not ports.
	internal := svcs[:0:0]
	for _, svc := range svcs {
		if t, _ := svc.HostType(); t != dns.TypeCNAME {
			internal = append(internal, svc)
		}
	}
	return internal, err
}

// Records implements plugin.ServiceBackend: every record of the query's
// name.
func (s *Skiff) Records(_ context.Context, state request.Request, _ bool) ([]msg.Service, error) {
	r, err := parseRequest(state.Name(), state.Zone)
	if err != nil {
		return nil, err
	}
	if r.podOrSvc == "" {
		return nil, nil
	}
	if dnsutil.IsReverse(state.Name()) > 0 {
		return nil, errNoItems
	}
	if !s.namespaceExposed(r.namespace) {
		return nil, errNsNotExposed
	}
	if r.podOrSvc == podLabel {
		return s.findPods(r, state.Zone)
	}
	return s.findServices(r, state.Zone)
}

// configuredNamespace: the `namespaces` option lets ns through.
func (s *Skiff) configuredNamespace(ns string) bool {
	_, ok := s.Namespaces[ns]
	return len(s.Namespaces) == 0 || ok
}

// namespaceExposed: configured, and the namespace exists, so a name in a
// namespace that does not exist is NXDOMAIN and one in an empty namespace
// NODATA, as upstream answers.
func (s *Skiff) namespaceExposed(ns string) bool {
	return s.configuredNamespace(ns) && s.cache.namespaceExists(ns)
}

func (s *Skiff) findPods(r recordRequest, zone string) ([]msg.Service, error) {
	if s.podMode == podModeDisabled {
		return nil, errNoItems
	}
	if r.service == "" {
		return nil, nil // the namespace exists: NODATA
	}
	// The pod label is the address with dashes: a-b-c-d for IPv4, the
	// IPv6 form with every colon a dash.
	name := r.service
	var ip string
	if strings.Count(name, "-") == 3 && !strings.Contains(name, "--") {
		ip = strings.ReplaceAll(name, "-", ".")
	} else {
		ip = strings.ReplaceAll(name, "-", ":")
	}
	// Upstream ignores labels left of the address; the schema has none.
	if r.endpoint != "" || r.port != "" || net.ParseIP(ip) == nil {
		return nil, errNoItems
	}
	key := strings.Join([]string{msg.Path(zone, keyPrefix), podLabel, r.namespace, name}, "/")
	if s.podMode == podModeInsecure {
		return []msg.Service{{Key: key, Host: ip, TTL: s.ttl}}, nil
	}
	var out []msg.Service
	for _, p := range s.cache.podsByIP(canonicalIP(ip)) {
		if match(r.namespace, p.GetMetadata().GetNamespace()) {
			out = append(out, msg.Service{Key: key, Host: ip, TTL: s.ttl})
		}
	}
	if len(out) == 0 {
		return nil, errNoItems
	}
	return out, nil
}

func (s *Skiff) findServices(r recordRequest, zone string) ([]msg.Service, error) {
	if r.service == "" {
		return nil, nil // the namespace exists: NODATA
	}
	svc := s.cache.service(r.namespace, r.service)
	if svc == nil {
		return nil, errNoItems
	}
	zonePath := msg.Path(zone, keyPrefix)
	ns, name := svc.GetMetadata().GetNamespace(), svc.GetMetadata().GetName()
	key := strings.Join([]string{zonePath, svcLabel, ns, name}, "/")

	if svc.GetSpec().GetType() == "ExternalName" {
		// No endpoints and no ports below an ExternalName.
		if r.endpoint != "" || r.port != "" || r.protocol != "" {
			return nil, errNoItems
		}
		m := msg.Service{Key: key, Host: svc.GetSpec().GetExternalName(), TTL: s.ttl}
		if t, _ := m.HostType(); t != dns.TypeCNAME {
			// An address where a name belongs is no record at all.
			return nil, errNoItems
		}
		return []msg.Service{m}, nil
	}

	if s.ignoreEmptyService && !headless(svc) && s.readyAddresses(ns, name) == 0 {
		return nil, errNoItems
	}

	if headless(svc) || r.endpoint != "" {
		return s.endpointRecords(svc, r, zonePath)
	}

	err := errNoItems
	var out []msg.Service
	for _, p := range servicePorts(svc) {
		if !matchPortAndProtocol(r.port, p.GetName(), r.protocol, p.GetProtocol()) {
			continue
		}
		// The name exists even while its address is not allocated yet:
		// NODATA, not NXDOMAIN, which resolvers would cache.
		err = nil
		for _, ip := range clusterIPs(svc) {
			if net.ParseIP(ip) == nil {
				continue
			}
			out = append(out, msg.Service{Host: ip, Port: int(p.GetPort()), TTL: s.ttl, Key: key})
		}
	}
	return out, err
}

// endpointRecords are a headless Service's ready endpoints, or the one
// endpoint a name asks for below any Service.
func (s *Skiff) endpointRecords(svc *corev1.Service, r recordRequest, zonePath string) ([]msg.Service, error) {
	ns, name := svc.GetMetadata().GetNamespace(), svc.GetMetadata().GetName()
	err := errNoItems
	var out []msg.Service
	for _, sl := range s.cache.slicesOf(ns, name) {
		ports := slicePorts(sl)
		for _, e := range sl.GetEndpoints() {
			if !readyEndpoint(e) {
				continue
			}
			for _, addr := range e.GetAddresses() {
				host := s.endpointHostname(e, addr)
				if r.endpoint != "" && !match(r.endpoint, host) {
					continue
				}
				for _, p := range ports {
					if !matchPortAndProtocol(r.port, p.name, r.protocol, p.protocol) {
						continue
					}
					err = nil
					out = append(out, msg.Service{Host: addr, Port: int(p.port), TTL: s.ttl,
						Key: strings.Join([]string{zonePath, svcLabel, ns, name, host}, "/")})
				}
			}
		}
	}
	return out, err
}

func (s *Skiff) readyAddresses(ns, name string) int {
	n := 0
	for _, sl := range s.cache.slicesOf(ns, name) {
		for _, e := range sl.GetEndpoints() {
			if readyEndpoint(e) {
				n += len(e.GetAddresses())
			}
		}
	}
	return n
}

// endpointHostname is the label an endpoint's records live under: its
// hostname (a StatefulSet pod behind its governing Service), its pod's name
// with endpoint_pod_names, else its address with dashes.
func (s *Skiff) endpointHostname(e *discoveryv1.Endpoint, addr string) string {
	if h := e.GetHostname(); h != "" {
		return h
	}
	// Pod names too long for a DNS label are ignored, as upstream does.
	if s.endpointNameMode && e.GetTargetRef() != nil && len(e.GetTargetRef().GetName()) < 64 && e.GetTargetRef().GetName() != "" {
		return e.GetTargetRef().GetName()
	}
	if strings.Contains(addr, ".") {
		return strings.ReplaceAll(addr, ".", "-")
	}
	if strings.Contains(addr, ":") {
		h := strings.ReplaceAll(addr, ":", "-")
		if strings.HasSuffix(h, "-") {
			return h + "0"
		}
		return h
	}
	return ""
}

type port struct {
	name, protocol string
	port           int32
}

// noPort stands in for the ports of a Service or slice that has none, so
// its addresses still get A records; plugin.SRV skips port -1.
var noPort = port{port: -1}

func slicePorts(sl *discoveryv1.EndpointSlice) []port {
	if len(sl.GetPorts()) == 0 {
		return []port{noPort}
	}
	out := make([]port, 0, len(sl.GetPorts()))
	for _, p := range sl.GetPorts() {
		pp := port{name: p.GetName(), protocol: p.GetProtocol(), port: -1}
		if p.Port != nil {
			pp.port = *p.Port
		}
		out = append(out, pp)
	}
	return out
}

func servicePorts(svc *corev1.Service) []*corev1.ServicePort {
	if len(svc.GetSpec().GetPorts()) == 0 {
		return []*corev1.ServicePort{{Port: -1}}
	}
	return svc.GetSpec().GetPorts()
}

// Reverse implements plugin.ServiceBackend: PTR records for a Service's
// ClusterIP, else for the ready endpoints with that address.
func (s *Skiff) Reverse(ctx context.Context, state request.Request, exact bool, _ plugin.Options) ([]msg.Service, error) {
	ip := dnsutil.ExtractAddressFromReverse(state.Name())
	if ip == "" {
		_, err := s.Records(ctx, state, exact)
		return nil, err
	}
	if out := s.serviceRecordForIP(ip); len(out) > 0 {
		return out, nil
	}
	return nil, errNoItems
}

func (s *Skiff) serviceRecordForIP(ip string) []msg.Service {
	for _, svc := range s.cache.servicesByIP(ip) {
		m := svc.GetMetadata()
		if !s.configuredNamespace(m.GetNamespace()) {
			continue
		}
		return []msg.Service{{Host: strings.Join([]string{m.GetName(), m.GetNamespace(), svcLabel, s.primaryZone()}, "."), TTL: s.ttl}}
	}
	var out []msg.Service
	for _, sl := range s.cache.slicesByIP(ip) {
		m := sl.GetMetadata()
		if !s.configuredNamespace(m.GetNamespace()) {
			continue
		}
		svcName := m.GetLabels()[labelSvcName]
		for _, e := range sl.GetEndpoints() {
			if !readyEndpoint(e) {
				continue
			}
			for _, addr := range e.GetAddresses() {
				if canonicalIP(addr) != ip {
					continue
				}
				out = append(out, msg.Service{Host: strings.Join([]string{s.endpointHostname(e, addr), svcName, m.GetNamespace(), svcLabel, s.primaryZone()}, "."), TTL: s.ttl})
			}
		}
	}
	return out
}

// Lookup implements plugin.ServiceBackend.
func (s *Skiff) Lookup(ctx context.Context, state request.Request, name string, typ uint16) (*dns.Msg, error) {
	return s.Upstream.Lookup(ctx, state, name, typ)
}

// IsNameError implements plugin.ServiceBackend.
func (s *Skiff) IsNameError(err error) bool {
	return err == errNoItems || err == errNsNotExposed || err == errInvalidRequest
}

// Serial implements plugin.ServiceBackend: the SOA serial moves with every
// change the informers see.
func (s *Skiff) Serial(request.Request) uint32 { return uint32(s.cache.Modified()) } // #nosec G115 -- Unix time as SOA serial, as upstream

// MinTTL implements plugin.ServiceBackend.
func (s *Skiff) MinTTL(request.Request) uint32 { return s.ttl }

func match(a, b string) bool { return strings.EqualFold(a, b) }

// matchPortAndProtocol: an empty port or protocol in the query matches any.
func matchPortAndProtocol(aPort, bPort, aProtocol, bProtocol string) bool {
	return (aPort == "" || match(aPort, bPort)) && (aProtocol == "" || match(aProtocol, bProtocol))
}
