package skiff

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	"skiff.dev/proto/scheme"
)

// Index names on the shared informers: the lookups a query needs (by name
// is the informer's own key).
const (
	svcIPIndex     = "skiff-dns/service-ip"
	sliceSvcIndex  = "skiff-dns/slice-service"
	sliceIPIndex   = "skiff-dns/slice-ip"
	podIPIndex     = "skiff-dns/pod-ip"
	labelSvcName   = "kubernetes.io/service-name"
	annTriggerTime = "endpoints.kubernetes.io/last-change-trigger-time"
)

// cacheOptions choose what the cache watches.
type cacheOptions struct {
	// endpoints: watch EndpointSlices (off with `noendpoints`).
	endpoints bool
	// pods: watch Pods (only `pods verified` needs them).
	pods bool
}

// cache is the plugin's view of the cluster, the kubernetes plugin's
// dnsControl: one informer per kind through the shared factory, with the
// indexes a query needs, and the time of the last change for the SOA serial.
type cache struct {
	factory    *informers.Factory
	services   *informers.Typed[*corev1.Service]
	namespaces *informers.Typed[*corev1.Namespace]
	slices     *informers.Typed[*discoveryv1.EndpointSlice] // nil with noendpoints
	pods       *informers.Typed[*corev1.Pod]                // nil unless pods verified
	regs       []informer.Registration

	// modified is the Unix time of the last change a query could see.
	modified atomic.Int64
	now      func() time.Time
}

func newCache(c *client.Client, o cacheOptions, log *slog.Logger) *cache {
	ch := &cache{factory: informers.NewFactory(c, informers.Options{Logger: log}), now: time.Now}
	ch.modified.Store(ch.now().Unix())

	ch.services = informers.For[*corev1.Service](ch.factory)
	mustIndex(ch.services.Informer(), svcIPIndex, serviceIPs)
	ch.regs = append(ch.regs, ch.services.Informer().AddHandler(ch.changeHandler(nil)))

	ch.namespaces = informers.For[*corev1.Namespace](ch.factory)
	// Namespaces only answer "does it exist": no handler, the informer's
	// own sync is enough.
	ch.regs = append(ch.regs, ch.namespaces.Informer())

	if o.endpoints {
		ch.slices = informers.For[*discoveryv1.EndpointSlice](ch.factory)
		mustIndex(ch.slices.Informer(), sliceSvcIndex, sliceService)
		mustIndex(ch.slices.Informer(), sliceIPIndex, sliceIPs)
		var reg informer.Registration
		reg = ch.slices.Informer().AddHandler(ch.changeHandler(func(o scheme.Object) {
			// A slice of the initial list was programmed before this
			// process started: its trigger time measures our start-up.
			if reg.HasSynced() {
				ch.recordProgramming(o.(*discoveryv1.EndpointSlice))
			}
		}))
		ch.regs = append(ch.regs, reg)
	}
	if o.pods {
		ch.pods = informers.For[*corev1.Pod](ch.factory)
		mustIndex(ch.pods.Informer(), podIPIndex, podIPs)
		ch.regs = append(ch.regs, ch.pods.Informer().AddHandler(ch.changeHandler(nil)))
	}
	return ch
}

// mustIndex adds an index to an informer of our own factory, made just now:
// a clash of names is a programming error.
func mustIndex(inf *informer.Informer, name string, fn informer.IndexFunc) {
	if err := inf.AddIndexers(map[string]informer.IndexFunc{name: fn}); err != nil {
		panic(err)
	}
}

// changeHandler moves the SOA serial on every real change, and calls seen
// (may be nil) with each added or updated object.
func (c *cache) changeHandler(seen func(scheme.Object)) informer.Handler {
	return informer.Handler{
		OnAdd: func(o scheme.Object) {
			c.touch()
			if seen != nil {
				seen(o)
			}
		},
		OnUpdate: func(old, o scheme.Object) {
			if old.GetMetadata().GetResourceVersion() == o.GetMetadata().GetResourceVersion() {
				return
			}
			c.touch()
			if seen != nil {
				seen(o)
			}
		},
		OnDelete: func(scheme.Object) { c.touch() },
	}
}

func (c *cache) touch() { c.modified.Store(c.now().Unix()) }

// Start runs the informers until ctx ends.
func (c *cache) Start(ctx context.Context) { c.factory.Start(ctx) }

// Shutdown waits for the informers to stop once Start's context ended.
func (c *cache) Shutdown() { c.factory.Shutdown() }

// HasSynced: every informer listed and every handler saw its objects.
func (c *cache) HasSynced() bool {
	for _, r := range c.regs {
		if !r.HasSynced() {
			return false
		}
	}
	return true
}

// Modified is the Unix time of the last change.
func (c *cache) Modified() int64 { return c.modified.Load() }

func (c *cache) service(namespace, name string) *corev1.Service {
	s, err := c.services.Lister().Get(namespace, name)
	if err != nil {
		return nil
	}
	return s
}

func (c *cache) servicesByIP(ip string) []*corev1.Service {
	return typed[*corev1.Service](c.services.Informer().ByIndex(svcIPIndex, ip))
}

// slicesOf returns the EndpointSlices of a Service.
func (c *cache) slicesOf(namespace, name string) []*discoveryv1.EndpointSlice {
	if c.slices == nil {
		return nil
	}
	return typed[*discoveryv1.EndpointSlice](c.slices.Informer().ByIndex(sliceSvcIndex, namespace+"/"+name))
}

func (c *cache) slicesByIP(ip string) []*discoveryv1.EndpointSlice {
	if c.slices == nil {
		return nil
	}
	return typed[*discoveryv1.EndpointSlice](c.slices.Informer().ByIndex(sliceIPIndex, ip))
}

func (c *cache) podsByIP(ip string) []*corev1.Pod {
	if c.pods == nil {
		return nil
	}
	return typed[*corev1.Pod](c.pods.Informer().ByIndex(podIPIndex, ip))
}

func (c *cache) namespaceExists(name string) bool {
	_, err := c.namespaces.Lister().Get("", name)
	return err == nil
}

func typed[T scheme.Object](objs []scheme.Object) []T {
	out := make([]T, len(objs))
	for i, o := range objs {
		out[i] = o.(T)
	}
	return out
}

// clusterIPs are a Service's addresses as the kubernetes plugin reads
// them: spec.clusterIPs, else spec.clusterIP ("None" when headless, "" for
// an ExternalName Service or one not allocated yet).
func clusterIPs(s *corev1.Service) []string {
	if ips := s.GetSpec().GetClusterIPs(); len(ips) > 0 {
		return ips
	}
	return []string{s.GetSpec().GetClusterIP()}
}

func headless(s *corev1.Service) bool { return clusterIPs(s)[0] == "None" }

// canonicalIP is the form a reverse name decodes to ("fd00::a", not
// "fd00:0::000a"), so an address indexes as PTR queries look it up; "" for
// what is not an address.
func canonicalIP(s string) string {
	ip := net.ParseIP(s)
	if ip == nil {
		return ""
	}
	return ip.String()
}

func serviceIPs(o scheme.Object) []string {
	var out []string
	for _, ip := range clusterIPs(o.(*corev1.Service)) {
		if c := canonicalIP(ip); c != "" {
			out = append(out, c)
		}
	}
	return out
}

func sliceService(o scheme.Object) []string {
	m := o.GetMetadata()
	svc := m.GetLabels()[labelSvcName]
	if svc == "" {
		return nil
	}
	return []string{m.GetNamespace() + "/" + svc}
}

// readyEndpoint is upstream's endpointsliceReady: an unknown readiness
// counts as ready, as the API documents.
func readyEndpoint(e *discoveryv1.Endpoint) bool {
	c := e.GetConditions()
	return c == nil || c.Ready == nil || *c.Ready
}

func sliceIPs(o scheme.Object) []string {
	var out []string
	for _, e := range o.(*discoveryv1.EndpointSlice).GetEndpoints() {
		if !readyEndpoint(e) {
			continue
		}
		for _, a := range e.GetAddresses() {
			if c := canonicalIP(a); c != "" {
				out = append(out, c)
			}
		}
	}
	return out
}

// podIPs indexes running pods only: a terminating pod's address may already
// belong to its successor, so the kubernetes plugin forgets it at once.
func podIPs(o scheme.Object) []string {
	p := o.(*corev1.Pod)
	if p.GetMetadata().GetDeletionTimestamp() != nil {
		return nil
	}
	var out []string
	for _, ip := range p.GetStatus().GetPodIPs() {
		if c := canonicalIP(ip.GetIp()); c != "" {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		if c := canonicalIP(p.GetStatus().GetPodIP()); c != "" {
			out = append(out, c)
		}
	}
	return out
}
