// Package nftables is skiff-proxy's default dataplane, after upstream's
// nftables proxier (pkg/proxy/nftables): one table per family that
// skiff-proxy owns, a verdict map from address . protocol . port to a chain,
// and rejects for Services without endpoints. Unlike upstream, a Service's
// endpoints are map elements, not chains: its entries go to a chain shared
// by every Service port with as many endpoints, which DNATs through
// "numgen random mod N" and a map keyed by the packet's destination, so the
// table holds a few chains and sets however many Services there are (see
// the README for why that matters to nft 1.0.6 and the kernel).
//
// A sync writes only what changed since the last one (upstream's partial
// sync): the map elements (and, for ClientIP affinity, the chains and sets)
// of the Services whose Service or EndpointSlices changed. A full sync
// rewrites the table at start, after a failure, when the node's addresses
// change, when a periodic look finds the table changed behind our back, and
// once an hour.
package nftables

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/knftables"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proxy/internal/conntrack"
	"skiff.dev/proxy/internal/metrics"
	"skiff.dev/proxy/internal/proxy"
	"skiff.dev/proxy/internal/runner"
)

// HealthUpdater is told when changes queue and when they are in place.
type HealthUpdater interface {
	QueuedUpdate(family string)
	Updated(family string)
}

// NodePortAddresses says which of the node's addresses accept NodePort
// traffic (--nodeport-addresses).
type NodePortAddresses struct {
	// Primary: the node's own IPs from its Node object, upstream's
	// "primary" and our default.
	Primary bool
	// CIDRs: every local address inside them (0.0.0.0/0 or ::/0: all
	// local addresses, matched in the kernel by fib).
	CIDRs []netip.Prefix
	// LocalAddrs lists the node's interface addresses (CIDRs mode).
	LocalAddrs func() ([]netip.Addr, error)
}

func (n NodePortAddresses) matchAll() bool {
	for _, c := range n.CIDRs {
		if c.Bits() == 0 {
			return true
		}
	}
	return false
}

// Config builds a Proxier for one family.
type Config struct {
	Family proxy.Family
	// NFT is the table's interface (knftables.New, or its Fake in tests).
	NFT      knftables.Interface
	Hostname string
	// ClusterCIDRs of this family: traffic from outside them to a ClusterIP
	// is masqueraded. Empty: only --masquerade-all masquerades it.
	ClusterCIDRs  []netip.Prefix
	MasqueradeAll bool
	MasqueradeBit int
	NodePorts     NodePortAddresses
	Conntrack     conntrack.Interface
	Metrics       *metrics.Metrics
	Health        HealthUpdater
	// ServiceHealth hears the health check node ports and local endpoint
	// counts after every successful sync (nil: nobody listens).
	ServiceHealth proxy.ServiceHealth
	Logger        *slog.Logger
	// SyncPeriod is the most time between syncs, each of which checks the
	// table is still ours; MinSyncPeriod the least between bursts of them.
	SyncPeriod    time.Duration
	MinSyncPeriod time.Duration
	// FullSyncPeriod is how often a sync rewrites everything (an hour).
	FullSyncPeriod time.Duration
	// FullSyncChunk is how many ServicePorts one transaction of a full
	// sync writes at most (default 1000).
	FullSyncChunk int
	// FullSyncParallel is how many of a full sync's transactions may run at
	// once (default 2). Only an NFT whose Run allows it (ParallelNFT) runs
	// them at the same time; knftables' own runs one nft at a time.
	FullSyncParallel int
}

// Proxier programs one family's table.
type Proxier struct {
	cfg     Config
	log     *slog.Logger
	tracker *proxy.Tracker
	runner  *runner.Runner

	ipX, addrType, noLocalhost, masqMark string

	mu           sync.Mutex
	svcPortMap   proxy.ServicePortMap
	endpointsMap proxy.EndpointsMap
	nodeIPs      []netip.Addr
	needFullSync bool
	lastFull     time.Time
	lastCheck    time.Time
	generation   uint32

	// Feed is the informers' side: events into the tracker, syncs asked
	// for once both kinds are listed.
	*proxy.Feed

	// What is in the table, per ServicePort and in the maps, so a partial
	// sync can take out exactly what a Service no longer needs.
	states   map[proxy.ServicePortName]*portState
	elements map[elemKey]elemVal
	// listed: the endpoints-map elements a full sync found in the table
	// and no ServicePort has claimed yet.
	listed map[elemKey]string
	// staleChains were flushed at the given time and are deleted once
	// nothing can still point at them (upstream waits a second for kernels
	// before 6.2 to notice a dropped map element).
	staleChains map[string]time.Time
	names       map[proxy.ServicePortName]*portNames
	// shared counts the ServicePorts using each shared chain, maps the
	// live shared chains picking from each endpoints map, pairs the
	// ServicePorts listing each hairpin endpoint.
	shared map[sharedChain]int
	maps   map[mapID]int
	pairs  map[netip.Addr]int

	// LastOps is the operation count of the last transaction run, for tests
	// that check a change touched only its own objects.
	LastOps int
}

type portState struct {
	name proxy.ServicePortName
	// chains, epAffinity and sets are those of a ServicePort with
	// affinity: its own chains, the endpoint chains with the affinity
	// timeout each one's rules were written for, and its affinity sets
	// with their timeouts.
	chains     []string
	epAffinity map[string]int
	sets       map[string]int
	elems      []elemKey
	pools      []poolRecord
	shared     []sharedChain
	pairs      []netip.Addr
}

// mapID names an endpoints map.
type mapID struct {
	kind  entryKind
	proto string
	n     int
}

type elemKey struct{ container, key string }

// leftover owns the map elements a full sync found in the table and no
// Service has claimed yet.
var leftover = proxy.ServicePortName{Port: "\x00leftover"}

type elemVal struct {
	value string
	owner proxy.ServicePortName
}

// portNames caches a ServicePort's chain names: hashing them is most of
// the CPU a sync spends on an unchanged Service.
type portNames struct {
	cluster, local, external string
	endpoints                map[string]string // endpoint String → base
}

// New builds a proxier; call the On* handlers, then SyncLoop.
func New(cfg Config) (*Proxier, error) {
	if cfg.NFT == nil {
		return nil, fmt.Errorf("nftables proxier: no nftables interface")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New(nil)
	}
	if cfg.MasqueradeBit == 0 {
		cfg.MasqueradeBit = 14
	}
	if cfg.MasqueradeBit < 0 || cfg.MasqueradeBit > 31 {
		return nil, fmt.Errorf("masquerade bit %d: want 0-31", cfg.MasqueradeBit)
	}
	if cfg.SyncPeriod <= 0 {
		cfg.SyncPeriod = 30 * time.Second
	}
	if cfg.FullSyncPeriod <= 0 {
		cfg.FullSyncPeriod = time.Hour
	}
	if cfg.FullSyncChunk <= 0 {
		cfg.FullSyncChunk = 1000
	}
	if cfg.FullSyncParallel <= 0 {
		cfg.FullSyncParallel = 2
	}
	p := &Proxier{cfg: cfg, log: cfg.Logger.With("ipFamily", string(cfg.Family)),
		tracker:    proxy.NewTracker(cfg.Family, cfg.Hostname),
		svcPortMap: proxy.ServicePortMap{}, endpointsMap: proxy.EndpointsMap{},
		needFullSync: true, states: map[proxy.ServicePortName]*portState{}, elements: map[elemKey]elemVal{},
		staleChains: map[string]time.Time{}, names: map[proxy.ServicePortName]*portNames{},
		shared: map[sharedChain]int{}, maps: map[mapID]int{}, pairs: map[netip.Addr]int{},
		ipX: "ip", addrType: "ipv4_addr", noLocalhost: "ip daddr != 127.0.0.0/8",
		masqMark: fmt.Sprintf("%#08x", uint32(1)<<cfg.MasqueradeBit)}
	if cfg.Family == proxy.IPv6 {
		p.ipX, p.addrType, p.noLocalhost = "ip6", "ipv6_addr", "ip6 daddr != ::1"
	}
	p.runner = runner.New(p.syncProxyRules, cfg.MinSyncPeriod, cfg.SyncPeriod, 2)
	var health interface{ QueuedUpdate(string) }
	if p.cfg.Health != nil {
		health = p.cfg.Health
	}
	p.Feed = proxy.NewFeed(p.tracker, proxy.Pace{Runner: p.runner, Health: health, Metrics: p.cfg.Metrics, Family: p.cfg.Family})
	return p, nil
}

// Family is the proxier's family.
func (p *Proxier) Family() proxy.Family { return p.cfg.Family }

// SyncNow syncs at once on the caller's goroutine and reports whether it
// succeeded (tests and benchmarks).
func (p *Proxier) SyncNow() error {
	return p.sync()
}

// OnNodeChange takes the node's addresses for the "primary" NodePort
// addresses; a change rewrites everything.
func (p *Proxier) OnNodeChange(n *corev1.Node) {
	ips := NodeIPs(n, p.cfg.Family)
	p.mu.Lock()
	same := slices.Equal(ips, p.nodeIPs)
	if !same {
		p.nodeIPs = ips
		p.needFullSync = true
	}
	p.mu.Unlock()
	if !same {
		p.log.Info("node addresses changed", "addresses", ips)
		if p.Initialized() {
			p.Sync()
		}
	}
}

// NodeIPs are a node's InternalIPs of family, else its ExternalIPs.
func NodeIPs(n *corev1.Node, family proxy.Family) []netip.Addr {
	var internal, external []netip.Addr
	for _, a := range n.GetStatus().GetAddresses() {
		ip, err := netip.ParseAddr(a.GetAddress())
		if err != nil || proxy.FamilyOf(ip) != family {
			continue
		}
		switch a.GetType() {
		case "InternalIP":
			internal = append(internal, ip.Unmap())
		case "ExternalIP":
			external = append(external, ip.Unmap())
		}
	}
	if len(internal) > 0 {
		return internal
	}
	return external
}

func (p *Proxier) syncProxyRules() { _ = p.sync() }

// sync writes the changes since the last sync, or everything.
func (p *Proxier) sync() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.Initialized() {
		p.log.Debug("not syncing nftables until Services and EndpointSlices have been received")
		return nil
	}
	start := time.Now()
	full := p.needFullSync || start.Sub(p.lastFull) >= p.cfg.FullSyncPeriod
	if !full && start.Sub(p.lastCheck) >= p.cfg.SyncPeriod {
		p.lastCheck = start
		if why := p.tableChanged(); why != "" {
			p.log.Info("table changed behind our back; rewriting it", "why", why)
			full = true
		}
	}
	defer p.cfg.Metrics.ObserveSync(start, full)

	res := p.tracker.Apply(p.svcPortMap, p.endpointsMap)
	err := p.write(full, res, start)
	if err != nil {
		p.log.Error("nftables sync failed", "err", err, "full", full)
		p.cfg.Metrics.SyncFailures.Inc()
		// The tracker's changes are spent: only a full sync knows what to
		// write now.
		p.needFullSync = true
		p.runner.RetryAfter(p.cfg.SyncPeriod)
		return err
	}
	p.needFullSync = false
	if full {
		p.lastFull = start
		p.lastCheck = start
	}
	p.log.Debug("SyncProxyRules complete", "elapsed", time.Since(start), "full", full,
		"services", len(p.svcPortMap), "ops", p.LastOps)
	proxy.Synced{Family: p.cfg.Family, Metrics: p.cfg.Metrics, Health: p.cfg.Health, ServiceHealth: p.cfg.ServiceHealth,
		Logger: p.log}.Report(res, p.svcPortMap, p.endpointsMap)
	if p.cfg.Conntrack != nil {
		if fs := conntrack.Filters(res); len(fs) > 0 {
			n, err := p.cfg.Conntrack.DeleteUDP(p.cfg.Family, fs)
			if err != nil {
				p.log.Error("clearing stale UDP conntrack entries", "err", err)
			} else {
				p.log.Debug("cleared stale UDP conntrack entries", "entries", n)
			}
		}
	}
	return nil
}

// tableChanged looks whether the generation element is still what the last
// sync wrote; a reason if not.
func (p *Proxier) tableChanged() string {
	els, err := p.cfg.NFT.ListElements(context.TODO(), "set", generationSet)
	if err != nil {
		return err.Error()
	}
	want := strconv.FormatUint(uint64(p.generation), 10)
	if len(els) != 1 || len(els[0].Key) != 1 || els[0].Key[0] != want {
		return fmt.Sprintf("generation is not %s", want)
	}
	return ""
}

// write builds and runs the sync's transactions: one for a partial sync, a
// few for a full one.
func (p *Proxier) write(full bool, res proxy.UpdateResult, now time.Time) error {
	ctx := context.TODO()
	var existingChains, existingSets, existingMaps []string
	existingPairs := map[netip.Addr]bool{}
	if full {
		// What a previous run (or a previous us) left, listed once here
		// and not on every sync, since listing a big table costs.
		all, err := p.cfg.NFT.ListAll(ctx)
		if err != nil && !knftables.IsNotFound(err) {
			return fmt.Errorf("listing table: %w", err)
		}
		existingChains = all["chain"]
		existingSets, existingMaps = all["set"], all["map"]
		// The maps are not flushed: a full sync of many Services runs in
		// several transactions, and every Service must keep working until
		// its own is in. What the maps hold is listed instead; whatever no
		// Service claims goes in the last transaction.
		p.elements, p.listed = map[elemKey]elemVal{}, map[elemKey]string{}
		for _, m := range all["map"] {
			if !holdsServiceElements(m) {
				continue
			}
			els, err := p.cfg.NFT.ListElements(ctx, "map", m)
			if err != nil && !knftables.IsNotFound(err) {
				return fmt.Errorf("listing map %s: %w", m, err)
			}
			for _, e := range els {
				k, v := elemKey{m, strings.Join(e.Key, " . ")}, strings.Join(e.Value, " . ")
				if fixedSets[m] {
					p.elements[k] = elemVal{value: v, owner: leftover}
				} else {
					p.listed[k] = v
				}
			}
		}
		if slices.Contains(all["set"], hairpinSet) {
			els, err := p.cfg.NFT.ListElements(ctx, "set", hairpinSet)
			if err != nil && !knftables.IsNotFound(err) {
				return fmt.Errorf("listing set %s: %w", hairpinSet, err)
			}
			for _, e := range els {
				if a, err := netip.ParseAddr(e.Key[0]); err == nil {
					existingPairs[a] = true
				}
			}
		}
		p.states = map[proxy.ServicePortName]*portState{}
		p.staleChains = map[string]time.Time{}
		p.shared, p.maps, p.pairs = map[sharedChain]int{}, map[mapID]int{}, map[netip.Addr]int{}
	}

	// The ServicePorts to (re)write: all, or those of changed Services.
	var todo []proxy.ServicePortName
	if full {
		for n := range p.svcPortMap {
			todo = append(todo, n)
		}
	} else {
		seen := map[proxy.ServicePortName]bool{}
		for n := range p.states {
			if _, ok := res.UpdatedServices[n.NamespacedName]; ok {
				seen[n] = true
				todo = append(todo, n)
			}
		}
		for n := range p.svcPortMap {
			if _, ok := res.UpdatedServices[n.NamespacedName]; ok && !seen[n] {
				todo = append(todo, n)
			}
		}
	}
	if !full && len(todo) == 0 && !p.staleDue(now) {
		// Nothing to write (the periodic sync of a quiet cluster): no nft
		// run at all, since even an empty one costs a dump of the table.
		p.LastOps = 0
		return nil
	}
	// A fixed order keeps transactions (and golden tests) reproducible.
	sortKeys := make(map[proxy.ServicePortName]string, len(todo))
	for _, n := range todo {
		sortKeys[n] = n.String() + n.Protocol
	}
	sort.Slice(todo, func(i, j int) bool { return sortKeys[todo[i]] < sortKeys[todo[j]] })

	plans := make([]*portPlan, len(todo))
	planRange := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if sp := p.svcPortMap[todo[i]]; sp != nil {
				plans[i] = p.plan(sp, p.endpointsMap[todo[i]])
			}
		}
	}
	// Planning reads only what this sync holds the lock for; at start,
	// with every Service to plan, two goroutines halve the wait before
	// the first nft runs.
	if half := len(todo) / 2; half >= 500 {
		var wg sync.WaitGroup
		wg.Go(func() { planRange(0, half) })
		planRange(half, len(todo))
		wg.Wait()
	} else {
		planRange(0, len(todo))
	}
	// Shared chains, their maps and hairpin pairs are counted by the
	// ServicePorts using them; what this sync starts or stops using is
	// created or taken out once, whichever Services it moves.
	chainsBefore, pairsBefore := map[sharedChain]int{}, map[netip.Addr]int{}
	for i, n := range todo {
		var old, cur []sharedChain
		var oldPairs, curPairs []netip.Addr
		if st := p.states[n]; st != nil {
			old, oldPairs = st.shared, st.pairs
		}
		if plans[i] != nil {
			cur, curPairs = plans[i].shared, plans[i].pairs
		}
		for _, c := range old {
			noteCount(chainsBefore, p.shared, c)
			p.shared[c]--
		}
		for _, c := range cur {
			noteCount(chainsBefore, p.shared, c)
			p.shared[c]++
		}
		for _, a := range oldPairs {
			noteCount(pairsBefore, p.pairs, a)
			p.pairs[a]--
		}
		for _, a := range curPairs {
			noteCount(pairsBefore, p.pairs, a)
			p.pairs[a]++
		}
	}
	var newChains, goneChains []sharedChain
	mapsBefore := map[mapID]int{}
	for c, before := range chainsBefore {
		after := p.shared[c]
		if after == 0 {
			delete(p.shared, c)
		}
		id, picks := c.picksFrom()
		switch {
		case before == 0 && after > 0:
			newChains = append(newChains, c)
			if picks {
				noteCount(mapsBefore, p.maps, id)
				p.maps[id]++
			}
		case before > 0 && after == 0:
			goneChains = append(goneChains, c)
			if picks {
				noteCount(mapsBefore, p.maps, id)
				p.maps[id]--
			}
		}
	}
	var newMaps, goneMaps []mapID
	for id, before := range mapsBefore {
		after := p.maps[id]
		switch {
		case before == 0 && after > 0:
			newMaps = append(newMaps, id)
		case before > 0 && after == 0:
			goneMaps = append(goneMaps, id)
			delete(p.maps, id)
		}
	}
	// A chain before those that go to it.
	sort.Slice(newChains, func(i, j int) bool {
		ci, cj := newChains[i].role == roleExternalLocal, newChains[j].role == roleExternalLocal
		if ci != cj {
			return cj
		}
		return newChains[i].String() < newChains[j].String()
	})
	sort.Slice(goneChains, func(i, j int) bool { return goneChains[i].String() < goneChains[j].String() })
	sortMaps(newMaps)
	sortMaps(goneMaps)

	tx := p.cfg.NFT.NewTransaction()
	if full {
		p.setup(tx)
	}
	for _, id := range newMaps {
		tx.Add(p.endpointsMapObject(id))
	}
	for _, c := range newChains {
		p.writeShared(tx, c)
		delete(p.staleChains, c.String())
	}
	var pairsAdd, pairsDelete []netip.Addr
	if full {
		for a, n := range p.pairs {
			if n > 0 && !existingPairs[a] {
				pairsAdd = append(pairsAdd, a)
			}
		}
		for a := range existingPairs {
			if p.pairs[a] == 0 {
				pairsDelete = append(pairsDelete, a)
			}
		}
	} else {
		for a, before := range pairsBefore {
			switch after := p.pairs[a]; {
			case before == 0 && after > 0:
				pairsAdd = append(pairsAdd, a)
			case before > 0 && after == 0:
				pairsDelete = append(pairsDelete, a)
			}
		}
	}
	for a := range pairsBefore {
		if p.pairs[a] == 0 {
			delete(p.pairs, a)
		}
	}
	sortAddrs(pairsAdd)
	sortAddrs(pairsDelete)
	for _, a := range pairsAdd {
		tx.Add(&knftables.Element{Set: hairpinSet, Key: []string{a.String(), a.String()}})
	}

	ops := 0
	run := func() error {
		ops += tx.NumOperations()
		return p.cfg.NFT.Run(ctx, tx)
	}
	if full {
		// The fixed objects and every shared chain first: the Services'
		// transactions only add elements pointing at them.
		if err := run(); err != nil {
			return err
		}
		tx = p.cfg.NFT.NewTransaction()
	}

	w := &writer{p: p, tx: tx, full: full, created: map[string]bool{}, kept: map[string]bool{}}
	newStates := make(map[proxy.ServicePortName]*portState, len(todo))
	// A full sync's chunks run while the next is being built, up to
	// FullSyncParallel at once: nft's parser, not the kernel, is most of
	// their cost, and the kernel takes them one after the other anyway.
	chunks := newChunkRunner(ctx, p.cfg.NFT, p.cfg.FullSyncParallel)
	for i, n := range todo {
		// Each Service whole in one transaction, so it switches at once.
		if full && i > 0 && i%p.cfg.FullSyncChunk == 0 {
			ops += tx.NumOperations()
			if err := chunks.run(tx); err != nil {
				return err
			}
			tx = p.cfg.NFT.NewTransaction()
			w.tx = tx
		}
		if plans[i] != nil {
			newStates[n] = w.servicePort(plans[i])
		}
	}
	if full {
		// The last chunk too, beside the one before it; what is left to
		// take out goes in a small transaction of its own once all are in.
		ops += tx.NumOperations()
		if err := chunks.run(tx); err != nil {
			return err
		}
		tx = p.cfg.NFT.NewTransaction()
		w.tx = tx
	}
	if err := chunks.wait(); err != nil {
		return err
	}

	// Take out what the rewritten ServicePorts no longer use: chains are
	// flushed now and deleted later, sets, maps and elements go now.
	reused := w.created
	for c := range w.kept {
		reused[c] = true
	}
	for c := range p.shared {
		reused[c.String()] = true
	}
	var deleteSets, deleteMaps []string
	for _, n := range todo {
		old, cur := p.states[n], newStates[n]
		if old == nil {
			continue
		}
		for _, c := range old.chains {
			if !reused[c] {
				tx.Flush(&knftables.Chain{Name: c})
				p.staleChains[c] = now
			}
		}
		for s := range old.sets {
			if cur == nil || cur.sets[s] == 0 {
				deleteSets = append(deleteSets, s)
			}
		}
		keep := map[elemKey]bool{}
		if cur != nil {
			for _, k := range cur.elems {
				keep[k] = true
			}
		}
		for _, k := range old.elems {
			if !keep[k] && p.elements[k].owner == n {
				tx.Delete(elementFor(k))
				delete(p.elements, k)
			}
		}
		dropPools(tx, old, cur)
	}
	if full {
		active := map[string]bool{}
		for _, st := range newStates {
			for s := range st.sets {
				active[s] = true
			}
		}
		for id := range p.maps {
			active[endpointsMap(id)] = true
		}
		for _, s := range existingSets {
			if !fixedSets[s] && !active[s] {
				deleteSets = append(deleteSets, s)
			}
		}
		doomed := map[string]bool{}
		for _, m := range existingMaps {
			if !fixedSets[m] && !active[m] {
				deleteMaps = append(deleteMaps, m)
				doomed[m] = true
			}
		}
		for k, v := range p.elements {
			if v.owner == leftover {
				tx.Delete(elementFor(k))
				delete(p.elements, k)
			}
		}
		for k := range p.listed {
			// A map about to go takes its elements along.
			if !doomed[k.container] {
				tx.Delete(elementFor(k))
			}
		}
		p.listed = nil
		for _, c := range existingChains {
			if !fixedChains[c] && !reused[c] {
				tx.Flush(&knftables.Chain{Name: c})
				p.staleChains[c] = now
			}
		}
	}
	for _, c := range goneChains {
		tx.Flush(&knftables.Chain{Name: c.String()})
		p.staleChains[c.String()] = now
	}
	// A flushed chain no longer refers to its map, so the map can go in
	// the same transaction.
	for _, id := range goneMaps {
		deleteMaps = append(deleteMaps, endpointsMap(id))
	}
	for _, s := range deleteSets {
		tx.Delete(&knftables.Set{Name: s})
	}
	for _, m := range deleteMaps {
		tx.Delete(&knftables.Map{Name: m})
	}
	for _, a := range pairsDelete {
		tx.Delete(&knftables.Element{Set: hairpinSet, Key: []string{a.String(), a.String()}})
	}
	var deletedChains []string
	for c, t := range p.staleChains {
		if reused[c] {
			delete(p.staleChains, c)
			continue
		}
		if now.Sub(t) >= time.Second {
			tx.Delete(&knftables.Chain{Name: c})
			deletedChains = append(deletedChains, c)
		}
	}
	sort.Strings(deletedChains)
	gen := p.generation + 1
	tx.Flush(&knftables.Set{Name: generationSet})
	tx.Add(&knftables.Element{Set: generationSet, Key: []string{strconv.FormatUint(uint64(gen), 10)}})

	if err := run(); err != nil {
		p.LastOps = ops
		return err
	}
	p.LastOps = ops
	p.generation = gen
	for _, c := range deletedChains {
		delete(p.staleChains, c)
	}
	for _, n := range todo {
		if st := newStates[n]; st != nil {
			p.states[n] = st
		} else {
			delete(p.states, n)
			delete(p.names, n)
		}
	}
	if full {
		p.cfg.Metrics.NoLocalEndpoints.WithLabelValues("internal").Set(float64(w.noLocalInternal))
		p.cfg.Metrics.NoLocalEndpoints.WithLabelValues("external").Set(float64(w.noLocalExternal))
	}
	return nil
}

// chunkRunner runs transactions in the background, at most n at once.
type chunkRunner struct {
	ctx  context.Context
	nft  knftables.Interface
	slot chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
}

func newChunkRunner(ctx context.Context, nft knftables.Interface, n int) *chunkRunner {
	return &chunkRunner{ctx: ctx, nft: nft, slot: make(chan struct{}, max(n, 1))}
}

// run starts tx once a slot is free, and reports the first failure of any
// transaction started so far.
func (c *chunkRunner) run(tx *knftables.Transaction) error {
	c.slot <- struct{}{}
	if err := c.failed(); err != nil {
		<-c.slot
		return c.wait()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() { <-c.slot }()
		if err := c.nft.Run(c.ctx, tx); err != nil {
			c.mu.Lock()
			if c.err == nil {
				c.err = err
			}
			c.mu.Unlock()
		}
	}()
	return nil
}

func (c *chunkRunner) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// wait waits for every transaction started and reports the first failure.
func (c *chunkRunner) wait() error {
	c.wg.Wait()
	return c.failed()
}

// noteCount records a counter's value before this sync first changes it.
func noteCount[K comparable](before, counts map[K]int, k K) {
	if _, ok := before[k]; !ok {
		before[k] = counts[k]
	}
}

// picksFrom is the endpoints map a shared chain looks endpoints up in
// (roleExternalLocal only passes traffic on to other shared chains).
func (c sharedChain) picksFrom() (mapID, bool) {
	if c.role == roleExternalLocal {
		return mapID{}, false
	}
	return mapID{c.kind, c.proto, c.n}, true
}

func sortMaps(ids []mapID) {
	sort.Slice(ids, func(i, j int) bool { return endpointsMap(ids[i]) < endpointsMap(ids[j]) })
}

func sortAddrs(a []netip.Addr) { slices.SortFunc(a, netip.Addr.Compare) }

// holdsServiceElements: the map's elements belong to ServicePorts.
func holdsServiceElements(m string) bool {
	switch m {
	case serviceIPsMap, serviceNodePortsMap, noEndpointServicesMap, noEndpointNodePortsMap:
		return true
	}
	// Besides those, the only maps we make are endpoints maps.
	return !fixedSets[m]
}

// staleDue: some flushed chain may be deleted now.
func (p *Proxier) staleDue(now time.Time) bool {
	for _, t := range p.staleChains {
		if now.Sub(t) >= time.Second {
			return true
		}
	}
	return false
}

func elementFor(k elemKey) *knftables.Element {
	e := &knftables.Element{Key: strings.Split(k.key, " . ")}
	if k.container == nodePortIPsSet || k.container == generationSet || k.container == hairpinSet {
		e.Set = k.container
	} else {
		e.Map = k.container
	}
	return e
}

// setup creates the table and its fixed objects, flushing everything a
// previous run left in them.
func (p *Proxier) setup(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("rules for skiff-proxy")})
	type base struct {
		name     string
		typ      knftables.BaseChainType
		hook     knftables.BaseChainHook
		priority knftables.BaseChainPriority
	}
	// Filter chains see destinations before DNAT, so they run just ahead
	// of it.
	for _, b := range []base{
		{filterPreroutingChain, knftables.FilterType, knftables.PreroutingHook, knftables.DNATPriority + "-10"},
		{filterInputChain, knftables.FilterType, knftables.InputHook, knftables.DNATPriority + "-10"},
		{filterForwardChain, knftables.FilterType, knftables.ForwardHook, knftables.DNATPriority + "-10"},
		{filterOutputChain, knftables.FilterType, knftables.OutputHook, knftables.DNATPriority + "-10"},
		{natPreroutingChain, knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority},
		{natOutputChain, knftables.NATType, knftables.OutputHook, knftables.DNATPriority},
		{natPostroutingChain, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority},
	} {
		c := &knftables.Chain{Name: b.name, Type: knftables.PtrTo(b.typ), Hook: knftables.PtrTo(b.hook), Priority: knftables.PtrTo(b.priority)}
		tx.Add(c)
		tx.Flush(c)
	}
	ensured := map[string]bool{}
	ensure := func(name string) {
		if !ensured[name] {
			ensured[name] = true
			tx.Add(&knftables.Chain{Name: name})
			tx.Flush(&knftables.Chain{Name: name})
		}
	}
	// Reject only works from input, forward and output hooks on older
	// kernels, hence no endpoints check from prerouting.
	for _, j := range []struct{ dst, src, extra string }{
		{nodePortEndpointsCheckChain, filterInputChain, "ct state new"},
		{serviceEndpointsCheckChain, filterInputChain, "ct state new"},
		{serviceEndpointsCheckChain, filterForwardChain, "ct state new"},
		{serviceEndpointsCheckChain, filterOutputChain, "ct state new"},
		{servicesChain, natOutputChain, ""},
		{servicesChain, natPreroutingChain, ""},
		{masqueradingChain, natPostroutingChain, ""},
	} {
		ensure(j.dst)
		tx.Add(&knftables.Rule{Chain: j.src, Rule: knftables.Concat(j.extra, "jump", j.dst)})
	}
	ensure(markMasqChain)
	tx.Add(&knftables.Rule{Chain: markMasqChain, Rule: knftables.Concat("mark", "set", "mark", "or", p.masqMark)})
	// Hairpin: a connection DNATed back to its own source must not reach
	// the endpoint with the endpoint's own address as its source.
	tx.Add(&knftables.Set{Name: hairpinSet, Type: p.addrType + " . " + p.addrType,
		Comment: knftables.PtrTo("endpoints that may be their own client: masqueraded when DNATed to themselves")})
	tx.Add(&knftables.Rule{Chain: masqueradingChain,
		Rule: knftables.Concat("ct status dnat", p.ipX, "saddr", ".", p.ipX, "daddr", "@", hairpinSet, "jump", markMasqChain)})
	tx.Add(&knftables.Rule{Chain: masqueradingChain, Rule: knftables.Concat("mark", "and", p.masqMark, "==", "0", "return")})
	tx.Add(&knftables.Rule{Chain: masqueradingChain, Rule: knftables.Concat("mark", "set", "mark", "xor", p.masqMark)})
	tx.Add(&knftables.Rule{Chain: masqueradingChain, Rule: "masquerade fully-random"})

	matchAll := p.cfg.NodePorts.matchAll()
	tx.Add(&knftables.Set{Name: nodePortIPsSet, Type: p.addrType, Comment: knftables.PtrTo("IPs that accept NodePort traffic")})
	tx.Flush(&knftables.Set{Name: nodePortIPsSet})
	if !matchAll {
		for _, ip := range p.nodePortIPs() {
			tx.Add(&knftables.Element{Set: nodePortIPsSet, Key: []string{ip.String()}})
		}
	}

	tx.Add(&knftables.Map{Name: noEndpointServicesMap, Type: p.addrType + " . inet_proto . inet_service : verdict",
		Comment: knftables.PtrTo("vmap to drop or reject packets to services with no endpoints")})
	tx.Add(&knftables.Map{Name: noEndpointNodePortsMap, Type: "inet_proto . inet_service : verdict",
		Comment: knftables.PtrTo("vmap to drop or reject packets to service nodeports with no endpoints")})
	tx.Add(&knftables.Chain{Name: rejectChain, Comment: knftables.PtrTo("helper for @no-endpoint-services / @no-endpoint-nodeports")})
	tx.Flush(&knftables.Chain{Name: rejectChain})
	// A TCP client gets a reset, anything else port-unreachable: either
	// way the caller hears "refused" at once instead of timing out.
	tx.Add(&knftables.Rule{Chain: rejectChain, Rule: "meta l4proto tcp reject with tcp reset"})
	tx.Add(&knftables.Rule{Chain: rejectChain, Rule: "reject"})
	tx.Add(&knftables.Rule{Chain: serviceEndpointsCheckChain,
		Rule: knftables.Concat(p.ipX, "daddr", ".", "meta l4proto", ".", "th dport", "vmap", "@", noEndpointServicesMap)})
	nodePortMatch := knftables.Concat(p.ipX, "daddr", "@", nodePortIPsSet)
	if matchAll {
		nodePortMatch = knftables.Concat("fib daddr type local", p.noLocalhost)
	}
	tx.Add(&knftables.Rule{Chain: nodePortEndpointsCheckChain,
		Rule: knftables.Concat(nodePortMatch, "meta l4proto . th dport", "vmap", "@", noEndpointNodePortsMap)})

	tx.Add(&knftables.Map{Name: serviceIPsMap, Type: p.addrType + " . inet_proto . inet_service : verdict",
		Comment: knftables.PtrTo("ClusterIP, ExternalIP and LoadBalancer IP traffic")})
	tx.Add(&knftables.Map{Name: serviceNodePortsMap, Type: "inet_proto . inet_service : verdict",
		Comment: knftables.PtrTo("NodePort traffic")})
	tx.Add(&knftables.Rule{Chain: servicesChain,
		Rule: knftables.Concat(p.ipX, "daddr", ".", "meta l4proto", ".", "th dport", "vmap", "@", serviceIPsMap)})
	tx.Add(&knftables.Rule{Chain: servicesChain,
		Rule: knftables.Concat(nodePortMatch, "meta l4proto . th dport", "vmap", "@", serviceNodePortsMap)})

	tx.Add(&knftables.Set{Name: generationSet, Type: "mark", Comment: knftables.PtrTo("number of the last sync")})
}

// nodePortIPs are the addresses in nodeport-ips.
func (p *Proxier) nodePortIPs() []netip.Addr {
	np := p.cfg.NodePorts
	if np.Primary || len(np.CIDRs) == 0 {
		return p.nodeIPs
	}
	if np.LocalAddrs == nil {
		return nil
	}
	addrs, err := np.LocalAddrs()
	if err != nil {
		p.log.Error("listing local addresses for NodePorts; NodePorts may not work", "err", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if proxy.FamilyOf(a) != p.cfg.Family || a.IsLoopback() {
			continue
		}
		for _, c := range np.CIDRs {
			if c.Contains(a) {
				out = append(out, a)
				break
			}
		}
	}
	return out
}
