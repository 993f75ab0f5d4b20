package ipvs

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"sigs.k8s.io/knftables"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proxy/internal/conntrack"
	"skiff.dev/proxy/internal/metrics"
	"skiff.dev/proxy/internal/nftables"
	"skiff.dev/proxy/internal/proxy"
	"skiff.dev/proxy/internal/runner"
)

// Config builds an IPVS proxier for one family.
type Config struct {
	Family        proxy.Family
	Handle        Handle
	Addresses     Addresses
	NFT           knftables.Interface
	Scheduler     string
	Hostname      string
	ClusterCIDRs  []netip.Prefix
	MasqueradeAll bool
	Conntrack     conntrack.Interface
	Metrics       *metrics.Metrics
	Health        nftables.HealthUpdater
	// ServiceHealth hears the health check node ports and local endpoint
	// counts after every successful sync (nil: nobody listens).
	ServiceHealth proxy.ServiceHealth
	Logger        *slog.Logger
	SyncPeriod    time.Duration
	MinSyncPeriod time.Duration
}

// Proxier programs IPVS for one family. Every sync reconciles the whole
// desired state: IPVS has no transactions to batch, and the kernel calls
// are per service anyway.
type Proxier struct {
	cfg     Config
	log     *slog.Logger
	tracker *proxy.Tracker
	runner  *runner.Runner
	rec     *Reconciler

	mu           sync.Mutex
	svcPortMap   proxy.ServicePortMap
	endpointsMap proxy.EndpointsMap
	nodeIPs      []netip.Addr

	// Feed is the informers' side: events into the tracker, syncs asked
	// for once both kinds are listed.
	*proxy.Feed
}

// New builds the proxier.
func New(cfg Config) (*Proxier, error) {
	if cfg.Handle == nil || cfg.NFT == nil {
		return nil, fmt.Errorf("ipvs proxier: needs an IPVS handle and an nftables interface")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New(nil)
	}
	if cfg.SyncPeriod <= 0 {
		cfg.SyncPeriod = 30 * time.Second
	}
	p := &Proxier{cfg: cfg, log: cfg.Logger.With("ipFamily", string(cfg.Family), "mode", "ipvs"),
		tracker:    proxy.NewTracker(cfg.Family, cfg.Hostname),
		svcPortMap: proxy.ServicePortMap{}, endpointsMap: proxy.EndpointsMap{},
		rec: &Reconciler{Handle: cfg.Handle, Addresses: cfg.Addresses, Scheduler: cfg.Scheduler}}
	p.runner = runner.New(func() { _ = p.SyncNow() }, cfg.MinSyncPeriod, cfg.SyncPeriod, 2)
	var health interface{ QueuedUpdate(string) }
	if p.cfg.Health != nil {
		health = p.cfg.Health
	}
	p.Feed = proxy.NewFeed(p.tracker, proxy.Pace{Runner: p.runner, Health: health, Metrics: p.cfg.Metrics, Family: p.cfg.Family})
	return p, nil
}

// OnNodeChange takes the node's addresses: NodePort virtual servers go on
// them.
func (p *Proxier) OnNodeChange(n *corev1.Node) {
	ips := nftables.NodeIPs(n, p.cfg.Family)
	p.mu.Lock()
	same := slices.Equal(ips, p.nodeIPs)
	p.nodeIPs = ips
	p.mu.Unlock()
	if !same && p.Initialized() {
		p.Sync()
	}
}

// SyncNow reconciles at once.
func (p *Proxier) SyncNow() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.Initialized() {
		return nil
	}
	start := time.Now()
	defer p.cfg.Metrics.ObserveSync(start, true)
	res := p.tracker.Apply(p.svcPortMap, p.endpointsMap)
	want := Desired(p.svcPortMap, p.endpointsMap, p.nodeIPs)
	err := p.rec.Reconcile(want)
	if nerr := p.cfg.NFT.Run(context.TODO(), p.helperRules()); nerr != nil {
		err = fmt.Errorf("%w; nftables: %w", err, nerr)
	}
	if err != nil {
		p.log.Error("IPVS sync failed", "err", err)
		p.cfg.Metrics.SyncFailures.Inc()
		p.runner.RetryAfter(p.cfg.SyncPeriod)
		return err
	}
	proxy.Synced{Family: p.cfg.Family, Metrics: p.cfg.Metrics, Health: p.cfg.Health, ServiceHealth: p.cfg.ServiceHealth,
		Logger: p.log}.Report(res, p.svcPortMap, p.endpointsMap)
	if p.cfg.Conntrack != nil {
		if fs := conntrack.Filters(res); len(fs) > 0 {
			if _, err := p.cfg.Conntrack.DeleteUDP(p.cfg.Family, fs); err != nil {
				p.log.Error("clearing stale UDP conntrack entries", "err", err)
			}
		}
	}
	return nil
}

// helperRules is the small table IPVS needs beside it, rewritten whole on
// each sync: which traffic to masquerade (from outside the cluster to a
// VIP, all NodePort traffic of Cluster-policy Services, hairpin), and the
// rejects for Services without endpoints, which IPVS would silently drop.
func (p *Proxier) helperRules() *knftables.Transaction {
	ipX, addrType := "ip", "ipv4_addr"
	if p.cfg.Family == proxy.IPv6 {
		ipX, addrType = "ip6", "ipv6_addr"
	}
	tx := p.cfg.NFT.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("rules for skiff-proxy (ipvs mode)")})
	// Recreating the table whole keeps this simple; the rules hold no state.
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("rules for skiff-proxy (ipvs mode)")})
	for _, c := range []struct {
		name string
		typ  knftables.BaseChainType
		hook knftables.BaseChainHook
		prio knftables.BaseChainPriority
	}{
		{"filter-input", knftables.FilterType, knftables.InputHook, knftables.DNATPriority + "-10"},
		{"filter-forward", knftables.FilterType, knftables.ForwardHook, knftables.DNATPriority + "-10"},
		{"filter-output", knftables.FilterType, knftables.OutputHook, knftables.DNATPriority + "-10"},
		{"nat-prerouting", knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority},
		{"nat-output", knftables.NATType, knftables.OutputHook, knftables.DNATPriority},
		{"nat-postrouting", knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority},
	} {
		tx.Add(&knftables.Chain{Name: c.name, Type: knftables.PtrTo(c.typ), Hook: knftables.PtrTo(c.hook), Priority: knftables.PtrTo(c.prio)})
	}
	tx.Add(&knftables.Map{Name: "no-endpoint-services", Type: addrType + " . inet_proto . inet_service : verdict"})
	tx.Add(&knftables.Set{Name: "masquerade-services", Type: addrType + " . inet_proto . inet_service"})
	tx.Add(&knftables.Set{Name: "masquerade-all-sources", Type: addrType + " . inet_proto . inet_service"})
	tx.Add(&knftables.Set{Name: "hairpin", Type: addrType + " . " + addrType})
	tx.Add(&knftables.Chain{Name: "reject-chain"})
	tx.Add(&knftables.Rule{Chain: "reject-chain", Rule: "meta l4proto tcp reject with tcp reset"})
	tx.Add(&knftables.Rule{Chain: "reject-chain", Rule: "reject"})
	for _, c := range []string{"filter-input", "filter-forward", "filter-output"} {
		tx.Add(&knftables.Rule{Chain: c, Rule: knftables.Concat("ct state new", ipX, "daddr . meta l4proto . th dport vmap @no-endpoint-services")})
	}
	mark := "meta mark set meta mark or 0x00004000"
	for _, c := range []string{"nat-prerouting", "nat-output"} {
		tx.Add(&knftables.Rule{Chain: c, Rule: knftables.Concat(ipX, "daddr . meta l4proto . th dport @masquerade-all-sources", mark)})
		src := ""
		if len(p.cfg.ClusterCIDRs) > 0 && !p.cfg.MasqueradeAll {
			parts := make([]string, len(p.cfg.ClusterCIDRs))
			for i, c := range p.cfg.ClusterCIDRs {
				parts[i] = c.String()
			}
			src = knftables.Concat(ipX, "saddr", "!=", "{", strings.Join(parts, ", "), "}")
		}
		if src != "" || p.cfg.MasqueradeAll {
			tx.Add(&knftables.Rule{Chain: c, Rule: knftables.Concat(ipX, "daddr . meta l4proto . th dport @masquerade-services", src, mark)})
		}
	}
	tx.Add(&knftables.Rule{Chain: "nat-postrouting", Rule: knftables.Concat(ipX, "saddr .", ipX, "daddr @hairpin masquerade")})
	tx.Add(&knftables.Rule{Chain: "nat-postrouting", Rule: "meta mark and 0x00004000 != 0 meta mark set meta mark xor 0x00004000 masquerade fully-random"})

	hairpin := map[netip.Addr]bool{}
	for name, sp := range p.svcPortMap {
		proto, port := strings.ToLower(sp.Name.Protocol), strconv.Itoa(sp.Port)
		cluster, local, reachable, hasAny := proxy.Categorize(p.endpointsMap[name], sp)
		for _, e := range reachable {
			if e.IsLocal && !hairpin[e.IP] {
				hairpin[e.IP] = true
				tx.Add(&knftables.Element{Set: "hairpin", Key: []string{e.IP.String(), e.IP.String()}})
			}
		}
		internal := cluster
		if sp.InternalPolicyLocal {
			internal = local
		}
		verdict := "goto reject-chain"
		if hasAny {
			verdict = "drop"
		}
		if len(internal) == 0 {
			tx.Add(&knftables.Element{Map: "no-endpoint-services", Key: []string{sp.ClusterIP.String(), proto, port}, Value: []string{verdict}})
		} else {
			tx.Add(&knftables.Element{Set: "masquerade-services", Key: []string{sp.ClusterIP.String(), proto, port}})
		}
		if sp.NodePort != 0 && !sp.ExternalPolicyLocal {
			for _, ip := range p.nodeIPs {
				tx.Add(&knftables.Element{Set: "masquerade-all-sources", Key: []string{ip.String(), proto, strconv.Itoa(sp.NodePort)}})
			}
		}
	}
	return tx
}

// Netlink is the real Addresses.
type Netlink struct{}

func (Netlink) link(name string) (netlink.Link, error) { return netlink.LinkByName(name) }

// EnsureInterface creates the dummy interface if missing and sets it up.
func (n Netlink) EnsureInterface(name string) error {
	l, err := n.link(name)
	if err != nil {
		if _, ok := err.(netlink.LinkNotFoundError); !ok {
			return err
		}
		if err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return err
		}
		if l, err = n.link(name); err != nil {
			return err
		}
	}
	return netlink.LinkSetUp(l)
}

func (n Netlink) List(name string) ([]netip.Addr, error) {
	l, err := n.link(name)
	if err != nil {
		return nil, err
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func (n Netlink) Add(name string, a netip.Addr) error {
	l, err := n.link(name)
	if err != nil {
		return err
	}
	return netlink.AddrAdd(l, &netlink.Addr{IPNet: hostNet(a)})
}

func (n Netlink) Del(name string, a netip.Addr) error {
	l, err := n.link(name)
	if err != nil {
		return err
	}
	return netlink.AddrDel(l, &netlink.Addr{IPNet: hostNet(a)})
}

// NewHandle opens moby/ipvs in the caller's network namespace, after
// checking the kernel has IPVS, and turns on IPVS connection tracking,
// without which NAT'ed IPVS traffic skips nftables' masquerade.
func NewHandle() (*mobyipvs.Handle, error) {
	if err := Available(""); err != nil {
		return nil, err
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/vs/conntrack", []byte("1\n"), 0o644); err != nil {
		return nil, fmt.Errorf("enabling net.ipv4.vs.conntrack: %w", err)
	}
	return mobyipvs.New("")
}

// Cleanup removes the dummy interface (and with it the VIPs) and every
// IPVS service that was on them, if the kernel has IPVS at all.
func Cleanup() error {
	if Available("") != nil {
		return nil
	}
	var errs []string
	n := Netlink{}
	vips, _ := n.List(DummyInterface)
	if len(vips) > 0 {
		if h, err := mobyipvs.New(""); err == nil {
			bound := map[netip.Addr]bool{}
			for _, a := range vips {
				bound[a] = true
			}
			svcs, _ := h.GetServices()
			for _, s := range svcs {
				if a, ok := netip.AddrFromSlice(s.Address); ok && bound[a.Unmap()] {
					if err := h.DelService(s); err != nil {
						errs = append(errs, err.Error())
					}
				}
			}
			h.Close()
		}
	}
	if l, err := netlink.LinkByName(DummyInterface); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("ipvs cleanup: %s", strings.Join(errs, "; "))
	}
	return nil
}
