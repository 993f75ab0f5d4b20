package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/knftables"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	"skiff.dev/proto/scheme"
	"skiff.dev/proxy/internal/conntrack"
	"skiff.dev/proxy/internal/healthcheck"
	"skiff.dev/proxy/internal/ipvs"
	"skiff.dev/proxy/internal/metrics"
	"skiff.dev/proxy/internal/nftables"
	"skiff.dev/proxy/internal/proxy"
)

// Family is an IP family: IPv4 or IPv6.
type Family = proxy.Family

const (
	IPv4 = proxy.IPv4
	IPv6 = proxy.IPv6
)

// TableName is the nftables table skiff-proxy owns, in families ip and ip6.
const TableName = nftables.TableName

// Config wires an embedded proxy: what the flags say, plus the handles a
// test or benchmark injects (an nft running in a network namespace, a fake
// IPVS handle).
type Config struct {
	Client   *client.Client
	Hostname string
	// Mode is "nftables" (default) or "ipvs".
	Mode string
	// ClusterCIDRs: one per family at most.
	ClusterCIDRs       []netip.Prefix
	MasqueradeAll      bool
	NodePortsPrimary   bool
	NodePortCIDRs      []netip.Prefix
	SyncPeriod         time.Duration
	MinSyncPeriod      time.Duration
	IPVSScheduler      string
	Registerer         prometheus.Registerer
	HealthzBindAddress string
	Logger             *slog.Logger

	// NFT per family; a family missing is made with knftables.New. A
	// family whose interface cannot be made is skipped with a warning,
	// except IPv4.
	NFT map[Family]knftables.Interface
	// Families to run (default both).
	Families []Family
	// Conntrack deletes stale UDP entries (default: netlink in the
	// caller's network namespace).
	Conntrack conntrack.Interface
	// IPVSHandle and IPVSAddresses replace the kernel's in ipvs mode.
	IPVSHandle    ipvs.Handle
	IPVSAddresses ipvs.Addresses
	// HealthCheckListen opens the listeners of the Services' health check
	// node ports (default net.Listen): tests open them in the node's
	// network namespace.
	HealthCheckListen func(network, address string) (net.Listener, error)
}

// provider is one family's dataplane.
type provider interface {
	OnServiceAdd(*corev1.Service)
	OnServiceUpdate(old, cur *corev1.Service)
	OnServiceDelete(*corev1.Service)
	OnServicesSynced()
	OnEndpointSliceAdd(*discoveryv1.EndpointSlice)
	OnEndpointSliceUpdate(old, cur *discoveryv1.EndpointSlice)
	OnEndpointSliceDelete(*discoveryv1.EndpointSlice)
	OnEndpointSlicesSynced()
	OnNodeChange(*corev1.Node)
	SyncLoop(ctx context.Context)
}

// Proxy is a running skiff-proxy.
type Proxy struct {
	cfg       Config
	log       *slog.Logger
	health    *healthcheck.Server
	metrics   *metrics.Metrics
	providers []provider
	node      atomic.Pointer[corev1.Node]
	synced    *syncWatch
	ready     chan struct{}

	// serviceHealth: a health check server per family, as upstream.
	serviceHealth []*healthcheck.ServiceServer
}

// New builds a proxy from cfg; Start runs it.
func New(cfg Config) (*Proxy, error) {
	if cfg.Client == nil || cfg.Hostname == "" {
		return nil, errors.New("proxy: Client and Hostname are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Mode == "" {
		cfg.Mode = "nftables"
	}
	if cfg.SyncPeriod <= 0 {
		cfg.SyncPeriod = 30 * time.Second
	}
	if len(cfg.Families) == 0 {
		cfg.Families = []Family{IPv4, IPv6}
	}
	if cfg.Conntrack == nil {
		cfg.Conntrack = conntrack.Netlink{}
	}
	if !cfg.NodePortsPrimary && len(cfg.NodePortCIDRs) == 0 {
		cfg.NodePortsPrimary = true
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger, metrics: metrics.New(cfg.Registerer), ready: make(chan struct{})}
	p.health = &healthcheck.Server{Addr: cfg.HealthzBindAddress, Timeout: 2 * cfg.SyncPeriod, Node: p.node.Load,
		Metrics: p.metrics, Logger: cfg.Logger}
	p.synced = &syncWatch{next: p.health, pending: map[string]bool{}}
	var err error
	switch cfg.Mode {
	case "nftables":
		err = p.buildNFTables()
	case "ipvs":
		err = p.buildIPVS()
	default:
		err = fmt.Errorf("--proxy-mode: %q is not nftables or ipvs", cfg.Mode)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Proxy) nft(f Family) (knftables.Interface, error) {
	if nft := p.cfg.NFT[f]; nft != nil {
		return nft, nil
	}
	fam := knftables.IPv4Family
	if f == IPv6 {
		fam = knftables.IPv6Family
	}
	// Two, so that a full sync's transactions run on both cores (see
	// nftables.ParallelNFT), each writing elements as few commands
	// (nftables.Coalescing).
	var nfts []knftables.Interface
	for range 2 {
		nft, err := knftables.New(fam, TableName)
		if err != nil {
			return nil, err
		}
		nfts = append(nfts, &nftables.Coalescing{Interface: nft})
	}
	return nftables.NewParallelNFT(nfts...), nil
}

func (p *Proxy) cidrs(f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range p.cfg.ClusterCIDRs {
		if proxy.FamilyOf(c.Addr()) == f {
			out = append(out, c)
		}
	}
	return out
}

func (p *Proxy) families(build func(Family, knftables.Interface) (provider, error)) error {
	for _, f := range p.cfg.Families {
		nft, err := p.nft(f)
		if err != nil {
			if f == IPv4 {
				return fmt.Errorf("nftables (%s): %w", f, err)
			}
			p.log.Warn("not proxying this family: nftables unavailable", "ipFamily", f, "err", err)
			continue
		}
		pr, err := build(f, nft)
		if err != nil {
			return err
		}
		p.providers = append(p.providers, pr)
		p.synced.pending[string(f)] = true
	}
	return nil
}

func (p *Proxy) buildNFTables() error {
	return p.families(func(f Family, nft knftables.Interface) (provider, error) {
		var np []netip.Prefix
		for _, c := range p.cfg.NodePortCIDRs {
			if proxy.FamilyOf(c.Addr()) == f {
				np = append(np, c)
			}
		}
		return nftables.New(nftables.Config{Family: f, NFT: nft, Hostname: p.cfg.Hostname, ClusterCIDRs: p.cidrs(f),
			MasqueradeAll: p.cfg.MasqueradeAll,
			NodePorts:     nftables.NodePortAddresses{Primary: p.cfg.NodePortsPrimary, CIDRs: np, LocalAddrs: localAddrs},
			Conntrack:     p.cfg.Conntrack, Metrics: p.metrics, Health: p.synced, ServiceHealth: p.newServiceHealth(f),
			Logger: p.log, SyncPeriod: p.cfg.SyncPeriod, MinSyncPeriod: p.cfg.MinSyncPeriod})
	})
}

func (p *Proxy) buildIPVS() error {
	h := p.cfg.IPVSHandle
	if h == nil {
		real, err := ipvs.NewHandle()
		if err != nil {
			return err
		}
		h = real
	}
	addrs := p.cfg.IPVSAddresses
	if addrs == nil {
		addrs = ipvs.Netlink{}
	}
	return p.families(func(f Family, nft knftables.Interface) (provider, error) {
		return ipvs.New(ipvs.Config{Family: f, Handle: h, Addresses: addrs, NFT: nft, Scheduler: p.cfg.IPVSScheduler,
			Hostname: p.cfg.Hostname, ClusterCIDRs: p.cidrs(f), MasqueradeAll: p.cfg.MasqueradeAll,
			Conntrack: p.cfg.Conntrack, Metrics: p.metrics, Health: p.synced, ServiceHealth: p.newServiceHealth(f),
			Logger: p.log, SyncPeriod: p.cfg.SyncPeriod, MinSyncPeriod: p.cfg.MinSyncPeriod})
	})
}

// newServiceHealth is family f's health check server, answering
// serviceProxyHealthy from the proxy's own health.
func (p *Proxy) newServiceHealth(f Family) *healthcheck.ServiceServer {
	s := healthcheck.NewServiceServer(healthcheck.ServiceConfig{Family: f, Addresses: p.nodePortAddresses(f),
		Listen: p.cfg.HealthCheckListen, Proxy: p.health, Logger: p.log})
	p.serviceHealth = append(p.serviceHealth, s)
	return s
}

// nodePortAddresses are where family f accepts NodePort traffic, by the
// nftables proxier's reading of --nodeport-addresses, so that a load
// balancer's probe reaches the node where its traffic would: nil (every
// address) for a CIDR matching all; the node's own IPs for "primary", or
// when no CIDR is of this family; else the local addresses inside the
// CIDRs.
func (p *Proxy) nodePortAddresses(f Family) func() ([]netip.Addr, error) {
	var cidrs []netip.Prefix
	for _, c := range p.cfg.NodePortCIDRs {
		if proxy.FamilyOf(c.Addr()) == f {
			if c.Bits() == 0 {
				return nil
			}
			cidrs = append(cidrs, c)
		}
	}
	if p.cfg.NodePortsPrimary || len(cidrs) == 0 {
		return func() ([]netip.Addr, error) { return nftables.NodeIPs(p.node.Load(), f), nil }
	}
	return func() ([]netip.Addr, error) {
		addrs, err := localAddrs()
		if err != nil {
			return nil, err
		}
		var out []netip.Addr
		for _, a := range addrs {
			if a.IsLoopback() || proxy.FamilyOf(a) != f {
				continue
			}
			for _, c := range cidrs {
				if c.Contains(a) {
					out = append(out, a)
					break
				}
			}
		}
		return out, nil
	}
}

func localAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// Ready closes once every family has programmed the cluster's state as the
// informers first listed it.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Health is the healthz server's view (tests).
func (p *Proxy) Health() healthcheck.ProxyHealth { return p.health.Health() }

// Start watches Services, EndpointSlices and the node's own Node, and
// syncs until ctx ends.
func (p *Proxy) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := p.cfg.Client
	f := informers.NewFactory(c, informers.Options{Logger: p.log})
	svcReg := informers.For[*corev1.Service](f).Informer().AddHandler(informer.Handler{
		OnAdd: func(o scheme.Object) { p.each(func(pr provider) { pr.OnServiceAdd(o.(*corev1.Service)) }) },
		OnUpdate: func(old, cur scheme.Object) {
			p.each(func(pr provider) { pr.OnServiceUpdate(old.(*corev1.Service), cur.(*corev1.Service)) })
		},
		OnDelete: func(o scheme.Object) { p.each(func(pr provider) { pr.OnServiceDelete(o.(*corev1.Service)) }) },
	})
	sliceReg := informers.For[*discoveryv1.EndpointSlice](f).Informer().AddHandler(informer.Handler{
		OnAdd: func(o scheme.Object) {
			p.each(func(pr provider) { pr.OnEndpointSliceAdd(o.(*discoveryv1.EndpointSlice)) })
		},
		OnUpdate: func(old, cur scheme.Object) {
			p.each(func(pr provider) {
				pr.OnEndpointSliceUpdate(old.(*discoveryv1.EndpointSlice), cur.(*discoveryv1.EndpointSlice))
			})
		},
		OnDelete: func(o scheme.Object) {
			p.each(func(pr provider) { pr.OnEndpointSliceDelete(o.(*discoveryv1.EndpointSlice)) })
		},
	})
	// Only our own Node: its addresses are the NodePort addresses, and its
	// deletion makes /healthz fail. The shared factory has no field
	// selectors, so this informer is our own.
	nodeKind, _ := scheme.ForName((&corev1.Node{}).ProtoReflect().Descriptor().FullName())
	nodes := informer.New(c.Resource(nodeKind, ""), informer.Options{FieldSelector: "metadata.name=" + p.cfg.Hostname,
		Logger: p.log.With("informer", "nodes")})
	onNode := func(o scheme.Object) {
		n := o.(*corev1.Node)
		p.node.Store(n)
		p.each(func(pr provider) { pr.OnNodeChange(n) })
	}
	nodeReg := nodes.AddHandler(informer.Handler{OnAdd: onNode, OnUpdate: func(_, cur scheme.Object) { onNode(cur) },
		OnDelete: func(scheme.Object) { p.node.Store(nil) }})

	// After the sync loops have stopped (deferred calls run last first), so
	// that no sync opens a listener again.
	defer func() {
		for _, s := range p.serviceHealth {
			s.Close()
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	f.Start(ctx)
	defer f.Shutdown()
	wg.Go(func() {
		if err := nodes.Run(ctx); err != nil {
			p.log.Error("node informer failed", "err", err)
		}
	})
	for _, pr := range p.providers {
		wg.Go(func() { pr.SyncLoop(ctx) })
	}
	errc := make(chan error, 1)
	if p.cfg.HealthzBindAddress != "" {
		wg.Go(func() {
			if err := p.health.Start(ctx); err != nil {
				errc <- err
				cancel()
			}
		})
	}
	// The node first, so the first sync already has its addresses; then
	// the Services and their endpoints, all of them, before any sync.
	if !informers.WaitForCacheSync(ctx, nodeReg, svcReg, sliceReg) {
		return ctx.Err()
	}
	p.each(func(pr provider) { pr.OnServicesSynced() })
	p.each(func(pr provider) { pr.OnEndpointSlicesSynced() })
	p.log.Info("skiff-proxy started", "node", p.cfg.Hostname, "mode", p.cfg.Mode, "families", len(p.providers))
	select {
	case <-ctx.Done():
	case <-p.synced.done():
		close(p.ready)
		<-ctx.Done()
	case err := <-errc:
		return err
	}
	select {
	case err := <-errc:
		return err
	default:
	}
	return nil
}

func (p *Proxy) each(fn func(provider)) {
	for _, pr := range p.providers {
		fn(pr)
	}
}

// syncWatch passes health updates on and notices the first sync of every
// family after the informers synced (the SyncLoop's start-up "updated" is
// not one: it comes before any rule is written).
type syncWatch struct {
	next *healthcheck.Server

	mu      sync.Mutex
	pending map[string]bool
	queued  map[string]bool
	ch      chan struct{}
}

func (s *syncWatch) done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
		if len(s.pending) == 0 {
			close(s.ch)
		}
	}
	return s.ch
}

func (s *syncWatch) QueuedUpdate(f string) {
	s.mu.Lock()
	if s.queued == nil {
		s.queued = map[string]bool{}
	}
	s.queued[f] = true
	s.mu.Unlock()
	s.next.QueuedUpdate(f)
}

func (s *syncWatch) Updated(f string) {
	s.mu.Lock()
	if s.queued[f] && s.pending[f] {
		delete(s.pending, f)
		if len(s.pending) == 0 && s.ch != nil {
			select {
			case <-s.ch:
			default:
				close(s.ch)
			}
		}
	}
	s.mu.Unlock()
	s.next.Updated(f)
}
