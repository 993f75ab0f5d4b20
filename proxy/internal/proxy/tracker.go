package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
)

// Well-known keys, as upstream spells them.
const (
	LabelServiceName = "kubernetes.io/service-name"
	// LabelServiceProxyName marks a Service some other proxy implements;
	// upstream's kube-proxy leaves it alone, and so do we.
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	// AnnotationLastChangeTriggerTime is when the change behind an
	// EndpointSlice's last write happened; network programming latency is
	// measured from it.
	AnnotationLastChangeTriggerTime = "endpoints.kubernetes.io/last-change-trigger-time"

	defaultStickySeconds = 10800
)

// Tracker records Service and EndpointSlice changes of one family between
// syncs, upstream's ServiceChangeTracker and EndpointsChangeTracker in one:
// handlers only store the objects and mark their Service dirty, and Apply
// recomputes the dirty Services' ports and endpoints at sync time, so a
// burst of changes to one Service costs one recomputation.
type Tracker struct {
	family   Family
	hostname string

	mu       sync.Mutex
	services map[NamespacedName]*corev1.Service
	slices   map[NamespacedName]map[string]*discoveryv1.EndpointSlice
	dirty    map[NamespacedName]struct{}
	triggers map[NamespacedName][]time.Time

	// What Apply last wrote into the maps for each Service, so the next
	// Apply can take it out again. Only Apply touches them.
	ports   map[NamespacedName][]ServicePortName
	epPorts map[NamespacedName][]ServicePortName
}

// NewTracker tracks family's Services for the node hostname.
func NewTracker(family Family, hostname string) *Tracker {
	return &Tracker{family: family, hostname: hostname,
		services: map[NamespacedName]*corev1.Service{},
		slices:   map[NamespacedName]map[string]*discoveryv1.EndpointSlice{},
		dirty:    map[NamespacedName]struct{}{}, triggers: map[NamespacedName][]time.Time{},
		ports: map[NamespacedName][]ServicePortName{}, epPorts: map[NamespacedName][]ServicePortName{}}
}

// ServiceUpdate records a Service's new state (nil: deleted); it reports
// whether a sync is needed.
func (t *Tracker) ServiceUpdate(old, cur *corev1.Service) bool {
	svc := cur
	if svc == nil {
		svc = old
	}
	if svc == nil {
		return false
	}
	if old != nil && cur != nil && old.GetMetadata().GetResourceVersion() == cur.GetMetadata().GetResourceVersion() &&
		old.GetMetadata().GetResourceVersion() != "" {
		return false
	}
	nn := NamespacedName{svc.GetMetadata().GetNamespace(), svc.GetMetadata().GetName()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur == nil {
		delete(t.services, nn)
	} else {
		t.services[nn] = cur
	}
	t.dirty[nn] = struct{}{}
	return true
}

// EndpointSliceUpdate records a slice's new state; removed: it is gone.
// It reports whether a sync is needed.
func (t *Tracker) EndpointSliceUpdate(s *discoveryv1.EndpointSlice, removed bool) bool {
	if s == nil || !t.familyMatches(s.GetAddressType()) {
		return false
	}
	m := s.GetMetadata()
	svcName := m.GetLabels()[LabelServiceName]
	if svcName == "" {
		return false
	}
	nn := NamespacedName{m.GetNamespace(), svcName}
	t.mu.Lock()
	defer t.mu.Unlock()
	byName := t.slices[nn]
	if removed {
		if _, ok := byName[m.GetName()]; !ok {
			return false
		}
		delete(byName, m.GetName())
		if len(byName) == 0 {
			delete(t.slices, nn)
		}
	} else {
		if prev, ok := byName[m.GetName()]; ok && prev.GetMetadata().GetResourceVersion() == m.GetResourceVersion() && m.GetResourceVersion() != "" {
			return false
		}
		if byName == nil {
			byName = map[string]*discoveryv1.EndpointSlice{}
			t.slices[nn] = byName
		}
		byName[m.GetName()] = s
		if v := m.GetAnnotations()[AnnotationLastChangeTriggerTime]; v != "" {
			if tt, err := time.Parse(time.RFC3339Nano, v); err == nil {
				t.triggers[nn] = append(t.triggers[nn], tt)
			}
		}
	}
	t.dirty[nn] = struct{}{}
	return true
}

func (t *Tracker) familyMatches(addressType string) bool {
	return (addressType == "IPv4" && t.family == IPv4) || (addressType == "IPv6" && t.family == IPv6)
}

// StaleEndpoint is an endpoint a UDP ServicePort no longer uses: its
// conntrack entries would keep sending datagrams to it.
type StaleEndpoint struct {
	Port     *ServicePort
	Endpoint *Endpoint
}

// UpdateResult is what Apply changed.
type UpdateResult struct {
	// UpdatedServices had their Service or endpoints change.
	UpdatedServices map[NamespacedName]struct{}
	// StaleEndpoints are UDP endpoints dropped from their ServicePort.
	StaleEndpoints []StaleEndpoint
	// NewlyActiveUDP are UDP ServicePorts that went from no usable endpoint
	// to some: entries from when they rejected must go.
	NewlyActiveUDP []*ServicePort
	// DeletedUDP are UDP ServicePorts that disappeared.
	DeletedUDP []*ServicePort
	// LastChangeTriggerTimes are the trigger times of the EndpointSlice
	// changes applied, by Service.
	LastChangeTriggerTimes map[NamespacedName][]time.Time
}

// Apply moves every recorded change into svcMap and epMap.
func (t *Tracker) Apply(svcMap ServicePortMap, epMap EndpointsMap) UpdateResult {
	t.mu.Lock()
	dirty := t.dirty
	t.dirty = map[NamespacedName]struct{}{}
	triggers := t.triggers
	t.triggers = map[NamespacedName][]time.Time{}
	type work struct {
		nn     NamespacedName
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		ports  []*ServicePort
		eps    map[ServicePortName][]*Endpoint
	}
	todo := make([]work, 0, len(dirty))
	for nn := range dirty {
		w := work{nn: nn, svc: t.services[nn]}
		for _, s := range t.slices[nn] {
			w.slices = append(w.slices, s)
		}
		todo = append(todo, w)
	}
	t.mu.Unlock()

	// Reading the objects is most of the work when every Service is dirty
	// (at start), and needs nothing shared: two goroutines do it.
	convert := func(ws []work) {
		for i := range ws {
			ws[i].ports = ServicePorts(ws[i].svc, t.family)
			ws[i].eps = Endpoints(ws[i].nn, ws[i].slices, t.hostname)
		}
	}
	if half := len(todo) / 2; half >= 500 {
		var wg sync.WaitGroup
		wg.Go(func() { convert(todo[:half]) })
		convert(todo[half:])
		wg.Wait()
	} else {
		convert(todo)
	}

	res := UpdateResult{UpdatedServices: make(map[NamespacedName]struct{}, len(dirty)), LastChangeTriggerTimes: triggers}
	for _, w := range todo {
		nn := w.nn
		// nil for a Service seen for the first time, as every one is at
		// start: a nil map reads as empty, and the first Apply of a big
		// cluster need not allocate two per Service.
		var oldPorts map[ServicePortName]*ServicePort
		if len(t.ports[nn]) > 0 {
			oldPorts = make(map[ServicePortName]*ServicePort, len(t.ports[nn]))
		}
		for _, n := range t.ports[nn] {
			oldPorts[n] = svcMap[n]
			delete(svcMap, n)
		}
		var oldEps map[ServicePortName][]*Endpoint
		if len(t.epPorts[nn]) > 0 {
			oldEps = make(map[ServicePortName][]*Endpoint, len(t.epPorts[nn]))
		}
		for _, n := range t.epPorts[nn] {
			oldEps[n] = epMap[n]
			delete(epMap, n)
		}
		newPorts := w.ports
		t.ports[nn] = t.ports[nn][:0]
		for _, sp := range newPorts {
			svcMap[sp.Name] = sp
			t.ports[nn] = append(t.ports[nn], sp.Name)
		}
		if len(t.ports[nn]) == 0 {
			delete(t.ports, nn)
		}
		newEps := w.eps
		t.epPorts[nn] = t.epPorts[nn][:0]
		for n, eps := range newEps {
			epMap[n] = eps
			t.epPorts[nn] = append(t.epPorts[nn], n)
		}
		if len(t.epPorts[nn]) == 0 {
			delete(t.epPorts, nn)
		}
		changed := false
		for n, old := range oldPorts {
			if !old.Equal(svcMap[n]) {
				changed = true
			}
			if svcMap[n] == nil && n.Protocol == "UDP" {
				res.DeletedUDP = append(res.DeletedUDP, old)
			}
		}
		// The Service's ports now are newPorts: looking them up, not
		// scanning svcMap, keeps a full Apply linear in the Services.
		for _, sp := range newPorts {
			if oldPorts[sp.Name] == nil {
				changed = true
			}
		}
		if !endpointsEqual(oldEps, newEps) {
			changed = true
		}
		if changed {
			res.UpdatedServices[nn] = struct{}{}
		}
		// Conntrack: per UDP ServicePort, what stopped being usable and
		// whether the port came back to life.
		for _, sp := range newPorts {
			if sp.Name.Protocol != "UDP" {
				continue
			}
			before, after := usable(oldEps[sp.Name]), usable(newEps[sp.Name])
			if len(before) == 0 && len(after) > 0 {
				res.NewlyActiveUDP = append(res.NewlyActiveUDP, sp)
			}
			keep := map[string]bool{}
			for _, e := range after {
				keep[e.String()] = true
			}
			for _, e := range before {
				if !keep[e.String()] {
					res.StaleEndpoints = append(res.StaleEndpoints, StaleEndpoint{Port: sp, Endpoint: e})
				}
			}
		}
		for n, old := range oldPorts {
			if n.Protocol == "UDP" && svcMap[n] == nil {
				for _, e := range usable(oldEps[n]) {
					res.StaleEndpoints = append(res.StaleEndpoints, StaleEndpoint{Port: old, Endpoint: e})
				}
			}
		}
	}
	for nn := range res.LastChangeTriggerTimes {
		if _, ok := res.UpdatedServices[nn]; !ok {
			delete(res.LastChangeTriggerTimes, nn)
		}
	}
	return res
}

func usable(eps []*Endpoint) []*Endpoint {
	var out []*Endpoint
	for _, e := range eps {
		if e.Ready || (e.Serving && e.Terminating) {
			out = append(out, e)
		}
	}
	return out
}

func endpointsEqual(a, b map[ServicePortName][]*Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for n, ea := range a {
		eb, ok := b[n]
		if !ok || len(ea) != len(eb) {
			return false
		}
		for i := range ea {
			if !ea[i].Equal(eb[i]) {
				return false
			}
		}
	}
	return true
}

// ServicePorts is what svc asks of a node in family: none for a nil,
// headless, ExternalName or other-proxy Service.
func ServicePorts(svc *corev1.Service, family Family) []*ServicePort {
	if svc == nil {
		return nil
	}
	spec := svc.GetSpec()
	if spec.GetType() == "ExternalName" || svc.GetMetadata().GetLabels()[LabelServiceProxyName] != "" {
		return nil
	}
	ips := spec.GetClusterIPs()
	if len(ips) == 0 && spec.GetClusterIP() != "" {
		ips = []string{spec.GetClusterIP()}
	}
	var clusterIP netip.Addr
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil && FamilyOf(a) == family {
			clusterIP = a.Unmap()
			break
		}
	}
	if !clusterIP.IsValid() {
		return nil // headless ("None"), not yet allocated, or the other family only
	}
	var externalIPs, lbIPs []netip.Addr
	for _, s := range spec.GetExternalIPs() {
		if a, err := netip.ParseAddr(s); err == nil && FamilyOf(a) == family {
			externalIPs = append(externalIPs, a.Unmap())
		}
	}
	if spec.GetType() == "LoadBalancer" {
		for _, in := range svc.GetStatus().GetLoadBalancer().GetIngress() {
			if a, err := netip.ParseAddr(in.GetIp()); err == nil && FamilyOf(a) == family {
				lbIPs = append(lbIPs, a.Unmap())
			}
		}
	}
	affinity := spec.GetSessionAffinity() == "ClientIP"
	sticky := 0
	if affinity {
		sticky = defaultStickySeconds
		if cfg := spec.GetSessionAffinityConfig().GetClientIP(); cfg != nil && cfg.TimeoutSeconds != nil && *cfg.TimeoutSeconds > 0 {
			sticky = int(*cfg.TimeoutSeconds)
		}
	}
	externallyAccessible := spec.GetType() == "NodePort" || spec.GetType() == "LoadBalancer" || len(spec.GetExternalIPs()) > 0
	ePolicyLocal := externallyAccessible && spec.GetExternalTrafficPolicy() == "Local"
	hc := 0
	if ePolicyLocal && spec.GetType() == "LoadBalancer" {
		hc = int(spec.GetHealthCheckNodePort())
	}
	nn := NamespacedName{svc.GetMetadata().GetNamespace(), svc.GetMetadata().GetName()}
	var out []*ServicePort
	for _, p := range spec.GetPorts() {
		proto := p.GetProtocol()
		if proto == "" {
			proto = "TCP"
		}
		sp := &ServicePort{
			Name:      ServicePortName{NamespacedName: nn, Port: p.GetName(), Protocol: proto},
			ClusterIP: clusterIP, Port: int(p.GetPort()),
			ExternalIPs: externalIPs, LoadBalancerVIPs: lbIPs,
			SessionAffinityClientIP: affinity, StickyMaxAgeSeconds: sticky,
			ExternalPolicyLocal: ePolicyLocal, InternalPolicyLocal: spec.GetInternalTrafficPolicy() == "Local",
			HealthCheckNodePort: hc,
		}
		if spec.GetType() == "NodePort" || spec.GetType() == "LoadBalancer" {
			sp.NodePort = int(p.GetNodePort())
		}
		out = append(out, sp)
	}
	return out
}

// Endpoints merges a Service's EndpointSlices into endpoints per
// ServicePort, sorted, each address once (the first slice to name it wins,
// in slice-name order, so the result does not depend on map order).
func Endpoints(nn NamespacedName, slicesOf []*discoveryv1.EndpointSlice, hostname string) map[ServicePortName][]*Endpoint {
	slices.SortFunc(slicesOf, func(a, b *discoveryv1.EndpointSlice) int {
		return strings.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
	})
	out := map[ServicePortName][]*Endpoint{}
	for _, s := range slicesOf {
		for _, p := range s.GetPorts() {
			if p.Port == nil {
				continue
			}
			proto := p.GetProtocol()
			if proto == "" {
				proto = "TCP"
			}
			name := ServicePortName{NamespacedName: nn, Port: p.GetName(), Protocol: proto}
			for _, e := range s.GetEndpoints() {
				if len(e.GetAddresses()) == 0 {
					continue
				}
				ip, err := netip.ParseAddr(e.GetAddresses()[0])
				if err != nil {
					continue
				}
				c := e.GetConditions()
				ep := &Endpoint{IP: ip.Unmap(), Port: int(p.GetPort()),
					Ready:       c == nil || c.Ready == nil || *c.Ready,
					Serving:     c == nil || (c.Serving == nil && (c.Ready == nil || *c.Ready)) || (c.Serving != nil && *c.Serving),
					Terminating: c != nil && c.Terminating != nil && *c.Terminating,
					NodeName:    e.GetNodeName()}
				ep.IsLocal = ep.NodeName != "" && ep.NodeName == hostname
				out[name] = append(out[name], ep)
			}
		}
	}
	// An endpoint in two slices counts once, as it appears first: a stable
	// sort keeps that one ahead of its duplicates, and compacting drops
	// them (no set of seen endpoints, which was most of the cost of reading
	// a big cluster at start).
	for name, eps := range out {
		slices.SortStableFunc(eps, func(a, b *Endpoint) int {
			if c := a.IP.Compare(b.IP); c != 0 {
				return c
			}
			return a.Port - b.Port
		})
		out[name] = slices.CompactFunc(eps, func(a, b *Endpoint) bool { return a.IP == b.IP && a.Port == b.Port })
	}
	return out
}
