package servicealloc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"skiff.dev/apiserver/internal/registry"
	"skiff.dev/apiserver/internal/storage"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Upstream's allocator errors, in upstream's words.
var (
	ErrFull      = errors.New("range is full")
	ErrAllocated = errors.New("provided IP is already allocated")
	ErrPortTaken = errors.New("provided port is already allocated")
)

// Config wires an Allocator.
type Config struct {
	Store *storage.Store
	// IPRanges are --service-cluster-ip-range, the primary family first.
	IPRanges  []IPRange
	NodePorts PortRange
	// Registerer receives upstream's allocator metrics (may be nil).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Rand returns a number below n; tests fix it. Defaults to math/rand/v2.
	Rand func(n uint64) uint64
}

// Allocator chooses Services' cluster IPs and node ports, as the Service
// kind's registry.SideKeys.
type Allocator struct {
	cfg     Config
	view    *view
	metrics *metrics
}

var _ registry.SideKeys = (*Allocator)(nil)

// New builds an Allocator; Start keeps its view of the taken values.
func New(cfg Config) *Allocator {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Uint64N
	}
	a := &Allocator{cfg: cfg, metrics: newMetrics(cfg.Registerer)}
	a.view = newView(cfg.Store, cfg.IPRanges, cfg.NodePorts, cfg.Logger, a.updateGauges)
	a.updateGauges()
	return a
}

// Start watches the allocation keys until ctx ends.
func (a *Allocator) Start(ctx context.Context) error { return a.view.run(ctx) }

// Listed is closed once the view has read the keys a first time.
func (a *Allocator) Listed() <-chan struct{} { return a.view.listedCh }

// KubernetesServiceIP is the primary range's first usable address.
func (a *Allocator) KubernetesServiceIP() netip.Addr { return a.cfg.IPRanges[0].KubernetesServiceIP() }

func (a *Allocator) updateGauges() {
	ips, ports := a.view.counts()
	for i, r := range a.cfg.IPRanges {
		a.metrics.allocated.WithLabelValues(r.String()).Set(float64(ips[i]))
		a.metrics.available.WithLabelValues(r.String()).Set(float64(r.usable() - ips[i]))
	}
	a.metrics.portsAllocated.Set(float64(ports))
	a.metrics.portsAvailable.Set(float64(uint64(a.cfg.NodePorts.Size) - ports))
}

func (a *Allocator) rangeOf(family string) (int, bool) {
	for i, r := range a.cfg.IPRanges {
		if r.Family() == family {
			return i, true
		}
	}
	return 0, false
}

// Owner is the value of a Service's allocation keys.
func (a *Allocator) Owner(obj scheme.Object) []byte { return owner(obj) }

// Release is what deleting a Service frees: every key it holds.
func (a *Allocator) Release(obj scheme.Object) []string { return heldKeys(obj.(*corev1.Service)) }

// Reserve chooses what svc needs beyond what old (nil on create) holds:
// cluster IPs for the families it lacks, node ports for ports without one,
// a health-check node port; and releases what old held and svc no longer
// does. Requested values are taken if free; the others are drawn at random
// from what the view says is free.
func (a *Allocator) Reserve(ctx context.Context, obj, oldObj scheme.Object, dryRun bool) (*registry.SideWrite, error) {
	svc := obj.(*corev1.Service)
	var old *corev1.Service
	if oldObj != nil {
		old = oldObj.(*corev1.Service)
	}
	if err := a.checkFamilies(svc, old); err != nil {
		return nil, err
	}
	p := &plan{a: a, svc: svc, oldHeld: map[string]bool{}}
	if old != nil {
		for _, k := range heldKeys(old) {
			p.oldHeld[k] = true
		}
	}
	if err := p.clusterIPs(ctx); err != nil {
		return nil, err
	}
	if err := p.nodePorts(ctx, old); err != nil {
		return nil, err
	}
	if dryRun {
		if err := p.checkStatic(ctx); err != nil {
			return nil, err
		}
	}
	sw := &registry.SideWrite{Retry: p.retry, Committed: p.committed}
	newHeld := map[string]bool{}
	for _, k := range heldKeys(svc) {
		newHeld[k] = true
	}
	for k := range p.oldHeld {
		if !newHeld[k] {
			sw.Release = append(sw.Release, k)
		}
	}
	slices.Sort(sw.Release)
	p.sw = sw
	p.fillPut()
	return sw, nil
}

// choice is one value this write takes that the stored Service did not
// hold: requested by the client (static) or drawn (dynamic).
type choice struct {
	key    string
	static bool
	// A cluster IP: its slot in clusterIPs and its range.
	ip      bool
	slot    int
	ipRange int
	// A node port: the ports it serves, or the health check.
	ports []int
	hc    bool
}

// plan is one Reserve: what it chose, so that a taken key can be chosen again.
type plan struct {
	a       *Allocator
	svc     *corev1.Service
	oldHeld map[string]bool
	choices []*choice
	sw      *registry.SideWrite
}

func (p *plan) fillPut() {
	p.sw.Put = p.sw.Put[:0]
	for _, c := range p.choices {
		p.sw.Put = append(p.sw.Put, c.key)
	}
	slices.Sort(p.sw.Put)
}

func (p *plan) invalid(errs ...*field.Error) error {
	return apierrors.NewInvalid("Service", p.svc.GetMetadata().GetName(), errs)
}

func (p *plan) clusterIPs(ctx context.Context) error {
	s := p.svc.Spec
	if typeOf(s) == "ExternalName" || len(s.ClusterIPs) > 0 && s.ClusterIPs[0] == "None" {
		return nil
	}
	for len(s.ClusterIPs) < len(s.IpFamilies) {
		s.ClusterIPs = append(s.ClusterIPs, "")
	}
	for i, fam := range s.IpFamilies {
		ri, _ := p.a.rangeOf(fam) // checkFamilies saw to it
		r := p.a.cfg.IPRanges[ri]
		c := &choice{ip: true, slot: i, ipRange: ri}
		if ip := s.ClusterIPs[i]; ip != "" {
			addr, err := netip.ParseAddr(ip)
			if err != nil {
				return apierrors.NewInternal(fmt.Errorf("failed to parse service IP %q", ip))
			}
			if p.oldHeld[ipKey(addr)] {
				continue
			}
			if !addrIn(r, addr) {
				p.a.metrics.ipErrors.WithLabelValues(r.String(), "static").Inc()
				return p.invalid(field.Invalid(field.NewPath("spec", "clusterIPs").Index(i), ip,
					fmt.Sprintf("failed to allocate IP %s: provided IP is not in the valid range. The range of valid IPs is %s", ip, r)))
			}
			c.key, c.static = ipKey(addr), true
		} else if err := p.drawIP(ctx, c); err != nil {
			return err
		}
		p.choices = append(p.choices, c)
	}
	if len(s.ClusterIPs) > 0 {
		s.ClusterIP = s.ClusterIPs[0]
	}
	return nil
}

// drawIP picks a free address of c's range for c's slot.
func (p *plan) drawIP(ctx context.Context, c *choice) error {
	r := p.a.cfg.IPRanges[c.ipRange]
	mine := map[uint64]bool{}
	for _, o := range p.choices {
		if o != c && o.ip && o.ipRange == c.ipRange {
			a, _ := parseIPKey(o.key)
			off, _ := r.offset(a)
			mine[off] = true
		}
	}
	skip := func(off uint64) bool { return mine[off] }
	// Upstream's band counts from the first address after the network's.
	ws := windows(dynamicFirst, 1+bandSize(r.size, 16, 16, 256), r.last())
	off, err := p.a.draw(ctx, ws,
		func(off uint64) bool { return !p.a.view.hasIP(c.ipRange, off) && !skip(off) },
		func(w window, start uint64) (uint64, bool) {
			return p.a.view.freeIP(c.ipRange, w.lo, w.hi, start, skip)
		},
		func(kvs []storage.KV, w window, start uint64) (uint64, bool) {
			return ipOffsetsIn(r, kvs).free(w.lo, w.hi, start, skip)
		},
		ipPrefix)
	if err != nil {
		if errors.Is(err, ErrFull) {
			p.a.metrics.ipErrors.WithLabelValues(r.String(), "dynamic").Inc()
			return apierrors.NewInternal(fmt.Errorf("failed to allocate a serviceIP: %w", err))
		}
		return apierrors.NewUnavailable(err.Error())
	}
	addr := r.addr(off)
	c.key = ipKey(addr)
	s := p.svc.Spec
	s.ClusterIPs[c.slot] = addr.String()
	if c.slot == 0 {
		s.ClusterIP = addr.String()
	}
	return nil
}

// window is a span of offsets to draw from, both ends included.
type window struct{ lo, hi uint64 }

// windows are upstream's bands (KEP-3070 for IPs, KEP-3668 for ports):
// drawn values come from above the band's first offsets of [lo, hi] while
// any is free there, so the low values stay for Services that name theirs
// (the DNS Service's 10.96.0.10). No band is one window.
func windows(lo, band, hi uint64) []window {
	if band <= lo || band > hi {
		return []window{{lo, hi}}
	}
	return []window{{band, hi}, {lo, band - 1}}
}

// bandSize is upstream's calculateRangeOffset: min(max(min, size/step), max),
// and none for a range of at most min values.
func bandSize(size, minimum, step, maximum uint64) uint64 {
	if size <= minimum {
		return 0
	}
	return min(max(minimum, size/step), maximum)
}

// draw finds a free offset in the windows, each in turn: a few random tries
// against the view, then a scan of the view from a random point, and, when
// the view says they are full, a scan of what etcd holds now, since the
// view may not have seen the latest releases. Only etcd's answer makes it
// ErrFull.
func (a *Allocator) draw(ctx context.Context, ws []window, free func(uint64) bool,
	scanView func(w window, start uint64) (uint64, bool), scanStored func(kvs []storage.KV, w window, start uint64) (uint64, bool), prefix string) (uint64, error) {
	start := func(w window) uint64 { return w.lo + a.cfg.Rand(w.hi-w.lo+1) }
	for _, w := range ws {
		for range 8 {
			if off := start(w); free(off) {
				return off, nil
			}
		}
		if off, ok := scanView(w, start(w)); ok {
			return off, nil
		}
	}
	kvs, _, err := listAll(ctx, a.cfg.Store, prefix, 0)
	if err != nil {
		return 0, err
	}
	for _, w := range ws {
		if off, ok := scanStored(kvs, w, start(w)); ok {
			return off, nil
		}
	}
	return 0, ErrFull
}

func (p *plan) nodePorts(ctx context.Context, old *corev1.Service) error {
	s := p.svc.Spec
	pr := p.a.cfg.NodePorts
	t := typeOf(s)
	if t == "NodePort" || t == "LoadBalancer" {
		allocate := t == "NodePort" || s.AllocateLoadBalancerNodePorts == nil || *s.AllocateLoadBalancerNodePorts
		// Requested node ports first, so a port without one can share the
		// one its port number is served on over another protocol.
		byValue := map[int32]*choice{}
		for i, sp := range s.Ports {
			np := sp.NodePort
			if np == 0 || p.oldHeld[portKey(np)] {
				continue
			}
			if c := byValue[np]; c != nil {
				c.ports = append(c.ports, i)
				continue
			}
			c := &choice{key: portKey(np), static: true, ports: []int{i}}
			byValue[np] = c
			p.choices = append(p.choices, c)
		}
		for i, sp := range s.Ports {
			if sp.NodePort != 0 || !allocate {
				continue
			}
			if np := sharedNodePort(s.Ports, sp.Port); np != 0 {
				sp.NodePort = np
				if c := byValue[np]; c != nil {
					c.ports = append(c.ports, i)
				}
				continue
			}
			c := &choice{ports: []int{i}}
			if err := p.drawPort(ctx, c); err != nil {
				return err
			}
			np := s.Ports[i].NodePort
			byValue[np] = c
			p.choices = append(p.choices, c)
		}
	}
	if needsHealthCheck(s) {
		hc := s.HealthCheckNodePort
		switch {
		case hc == 0:
			c := &choice{hc: true}
			if err := p.drawPort(ctx, c); err != nil {
				return err
			}
			p.choices = append(p.choices, c)
		case old != nil && hc == old.GetSpec().GetHealthCheckNodePort() && p.oldHeld[portKey(hc)]:
		case !pr.Contains(int(hc)):
			p.a.metrics.portErrors.WithLabelValues("static").Inc()
			return apierrors.NewInternal(fmt.Errorf("failed to allocate requested HealthCheck NodePort %d: provided port is not in the valid range. The range of valid ports is %s", hc, pr))
		case slices.ContainsFunc(s.Ports, func(sp *corev1.ServicePort) bool { return sp.NodePort == hc }):
			p.a.metrics.portErrors.WithLabelValues("static").Inc()
			return apierrors.NewInternal(fmt.Errorf("failed to allocate requested HealthCheck NodePort %d: %w", hc, ErrPortTaken))
		default:
			p.choices = append(p.choices, &choice{key: portKey(hc), static: true, hc: true})
		}
	}
	return nil
}

// sharedNodePort is the node port another port of the same number already
// has: one node port serves TCP and UDP of one port number, as upstream.
func sharedNodePort(ports []*corev1.ServicePort, port int32) int32 {
	for _, sp := range ports {
		if sp.Port == port && sp.NodePort != 0 {
			return sp.NodePort
		}
	}
	return 0
}

func (p *plan) drawPort(ctx context.Context, c *choice) error {
	pr := p.a.cfg.NodePorts
	mine := map[uint64]bool{}
	for _, sp := range p.svc.Spec.Ports {
		if pr.Contains(int(sp.NodePort)) {
			mine[uint64(int(sp.NodePort)-pr.Base)] = true
		}
	}
	if hc := p.svc.Spec.HealthCheckNodePort; pr.Contains(int(hc)) {
		mine[uint64(int(hc)-pr.Base)] = true
	}
	for _, o := range p.choices {
		if o != c && !o.ip {
			n, _ := parsePortKey(o.key)
			mine[uint64(int(n)-pr.Base)] = true
		}
	}
	skip := func(off uint64) bool { return mine[off] }
	size := uint64(pr.Size)
	off, err := p.a.draw(ctx, windows(0, bandSize(size, 16, 32, 128), size-1),
		func(off uint64) bool { return !p.a.view.hasPort(off) && !skip(off) },
		func(w window, start uint64) (uint64, bool) { return p.a.view.freePort(w.lo, w.hi, start, skip) },
		func(kvs []storage.KV, w window, start uint64) (uint64, bool) {
			return portOffsetsIn(pr, kvs).free(w.lo, w.hi, start, skip)
		},
		portPrefix)
	if err != nil {
		if errors.Is(err, ErrFull) {
			p.a.metrics.portErrors.WithLabelValues("dynamic").Inc()
			what := "nodePort"
			if c.hc {
				what = "HealthCheck NodePort"
			}
			return apierrors.NewInternal(fmt.Errorf("failed to allocate a %s: %w", what, err))
		}
		return apierrors.NewUnavailable(err.Error())
	}
	np := int32(pr.Base + int(off))
	c.key = portKey(np)
	if c.hc {
		p.svc.Spec.HealthCheckNodePort = np
	}
	for _, i := range c.ports {
		p.svc.Spec.Ports[i].NodePort = np
	}
	return nil
}

func portOffsetsIn(pr PortRange, kvs []storage.KV) *bitmap {
	b := newBitmap(uint64(pr.Size))
	for _, kv := range kvs {
		if n, ok := parsePortKey(kv.Key); ok && pr.Contains(int(n)) {
			b.set(uint64(int(n) - pr.Base))
		}
	}
	return b
}

// retry is registry.SideWrite.Retry: key was taken when the write was
// tried. A requested value fails the request as upstream; a drawn one is
// drawn again.
func (p *plan) retry(ctx context.Context, key string) error {
	var c *choice
	for _, o := range p.choices {
		if o.key == key {
			c = o
		}
	}
	if c == nil {
		return apierrors.NewInternal(fmt.Errorf("allocation %s is taken but was not chosen", key))
	}
	p.a.view.taken(key)
	if c.static {
		return p.staticTaken(c)
	}
	var err error
	if c.ip {
		err = p.drawIP(ctx, c)
	} else {
		err = p.drawPort(ctx, c)
	}
	if err != nil {
		return err
	}
	p.fillPut()
	return nil
}

// staticTaken is the request's error for a requested value someone holds.
func (p *plan) staticTaken(c *choice) error {
	s := p.svc.Spec
	switch {
	case c.ip:
		r := p.a.cfg.IPRanges[c.ipRange]
		p.a.metrics.ipErrors.WithLabelValues(r.String(), "static").Inc()
		ip := s.ClusterIPs[c.slot]
		return p.invalid(field.Invalid(field.NewPath("spec", "clusterIPs").Index(c.slot), ip,
			fmt.Sprintf("failed to allocate IP %s: %v", ip, ErrAllocated)))
	case c.hc:
		p.a.metrics.portErrors.WithLabelValues("static").Inc()
		return apierrors.NewInternal(fmt.Errorf("failed to allocate requested HealthCheck NodePort %d: %w", s.HealthCheckNodePort, ErrPortTaken))
	default:
		p.a.metrics.portErrors.WithLabelValues("static").Inc()
		i := c.ports[0]
		return p.invalid(field.Invalid(field.NewPath("spec", "ports").Index(i).Child("nodePort"), s.Ports[i].NodePort, ErrPortTaken.Error()))
	}
}

// checkStatic is a dry run's check of requested values: nothing is
// written, so the keys are read.
func (p *plan) checkStatic(ctx context.Context) error {
	for _, c := range p.choices {
		if !c.static {
			continue
		}
		_, err := p.a.cfg.Store.Get(ctx, c.key, 0)
		switch {
		case err == nil:
			return p.staticTaken(c)
		case !errors.Is(err, storage.ErrNotFound):
			return apierrors.NewUnavailable(err.Error())
		}
	}
	return nil
}

// committed counts what a successful write allocated.
func (p *plan) committed() {
	for _, c := range p.choices {
		scope := "dynamic"
		if c.static {
			scope = "static"
		}
		if c.ip {
			p.a.metrics.ipAllocations.WithLabelValues(p.a.cfg.IPRanges[c.ipRange].String(), scope).Inc()
		} else {
			p.a.metrics.portAllocations.WithLabelValues(scope).Inc()
		}
	}
}
