package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"skiff.dev/proxy/internal/proxy"
)

// portPlan is what one ServicePort needs from the table, worked out before
// anything is written: a full sync creates every shared chain first, so
// that transactions of Services can then run in any order.
type portPlan struct {
	sp                        *proxy.ServicePort
	cluster, local, reachable []*proxy.Endpoint
	hasEndpoints              bool

	// internal is the ClusterIP's chain (valid when hasInternal);
	// external, per entry kind, the chain of its external entries.
	internal    sharedChain
	hasInternal bool
	external    [2]sharedChain
	hasExternal [2]bool
	// shared: every shared chain it points at, directly or through
	// another shared chain.
	shared []sharedChain
	// pairs: endpoint addresses that may be their own client (hairpin).
	pairs []netip.Addr
}

// plan categorises a ServicePort's endpoints and names the shared chains
// its entries go to.
func (p *Proxier) plan(sp *proxy.ServicePort, eps []*proxy.Endpoint) *portPlan {
	pl := &portPlan{sp: sp}
	pl.cluster, pl.local, pl.reachable, pl.hasEndpoints = proxy.Categorize(eps, sp)
	pl.pairs = p.hairpinCandidates(pl)
	if sp.SessionAffinityClientIP {
		// Affinity keeps upstream's chains per Service and endpoint (see
		// affinityServicePort), so it uses no shared chain.
		return pl
	}
	proto := strings.ToLower(sp.Name.Protocol)
	internalPool := pl.cluster
	if sp.InternalPolicyLocal {
		internalPool = pl.local
	}
	if pl.hasEndpoints && len(internalPool) > 0 {
		pl.internal, pl.hasInternal = sharedChain{kind: addrEntry, proto: proto, role: roleInternal, n: len(internalPool)}, true
		pl.shared = append(pl.shared, pl.internal)
	}
	if !pl.hasEndpoints || len(pl.cluster) == 0 {
		return pl
	}
	for kind, used := range [2]bool{len(sp.ExternalIPs)+len(sp.LoadBalancerVIPs) > 0, sp.NodePort != 0} {
		if !used {
			continue
		}
		k := entryKind(kind)
		if !sp.ExternalPolicyLocal {
			pl.external[k] = sharedChain{kind: k, proto: proto, role: roleExternal, n: len(pl.cluster)}
			pl.shared = append(pl.shared, pl.external[k])
		} else {
			pl.external[k] = sharedChain{kind: k, proto: proto, role: roleExternalLocal, n: len(pl.cluster), nLocal: len(pl.local)}
			pl.shared = append(pl.shared, pl.external[k], sharedChain{kind: k, proto: proto, role: roleCluster, n: len(pl.cluster)})
			if len(pl.local) > 0 {
				pl.shared = append(pl.shared, sharedChain{kind: k, proto: proto, role: roleLocal, n: len(pl.local)})
			}
		}
		pl.hasExternal[k] = true
	}
	return pl
}

// hairpinCandidates are the endpoints whose own traffic this node may DNAT
// back to them without masquerading it for another reason: those on this
// node, those on no node at all (addresses put in an EndpointSlice by
// hand), and, when pod traffic to an eTP=Local NodePort short-circuits to
// every endpoint, all of them, since another node's pod reaches our NodePort
// undnated. Another node's pods reach a ClusterIP or external IP through
// their own node's rules, so listing every endpoint, as upstream's rule per
// endpoint chain amounts to, would only cost a set element per pod.
func (p *Proxier) hairpinCandidates(pl *portPlan) []netip.Addr {
	sp := pl.sp
	all := sp.ExternalPolicyLocal && sp.NodePort != 0 && len(p.cfg.ClusterCIDRs) > 0
	var out []netip.Addr
	for _, ep := range pl.reachable {
		if all || ep.IsLocal || ep.NodeName == "" {
			if !slices.Contains(out, ep.IP) {
				out = append(out, ep.IP)
			}
		}
	}
	return out
}

// writer adds one sync's per-ServicePort objects.
type writer struct {
	p    *Proxier
	tx   *knftables.Transaction
	full bool
	// created are the per-Service chains this sync added and flushed;
	// kept, those it left as they were and still uses.
	created, kept map[string]bool

	noLocalInternal, noLocalExternal int
}

// ensureChain adds and flushes a chain once per sync: whatever was in it
// goes, what this sync writes stays.
func (w *writer) ensureChain(st *portState, name string) {
	if !w.created[name] {
		w.created[name] = true
		w.tx.Add(&knftables.Chain{Name: name})
		w.tx.Flush(&knftables.Chain{Name: name})
	}
	st.chains = append(st.chains, name)
}

func (w *writer) names(sp *proxy.ServicePort) *portNames {
	n := w.p.names[sp.Name]
	if n == nil {
		base := portChainBase(sp.Name)
		n = &portNames{cluster: clusterChainPrefix + base, local: localChainPrefix + base,
			external: externalChainPrefix + base, endpoints: map[string]string{}}
		w.p.names[sp.Name] = n
	}
	return n
}

func (w *writer) endpointBase(n *portNames, sp *proxy.ServicePort, ep *proxy.Endpoint) string {
	k := ep.String()
	b, ok := n.endpoints[k]
	if !ok {
		b = endpointChainBase(sp.Name, ep)
		n.endpoints[k] = b
	}
	return b
}

// element adds or replaces a map element the ServicePort owns.
func (w *writer) element(st *portState, owner proxy.ServicePortName, container string, key []string, value string, comment *string) {
	k := elemKey{container, strings.Join(key, " . ")}
	st.elems = append(st.elems, k)
	cur, exists := w.p.elements[k]
	e := &knftables.Element{Map: container, Key: key, Value: []string{value}, Comment: comment}
	switch {
	case !exists:
		w.tx.Add(e)
	case cur.value != value:
		w.tx.Delete(&knftables.Element{Map: container, Key: key})
		w.tx.Add(e)
	}
	w.p.elements[k] = elemVal{value: value, owner: owner}
}

// poolRecord is a run of endpoints a ServicePort has in an endpoints map:
// values (address . port) at slots offset, offset+1, … under entry. Kept per
// ServicePort rather than element by element in Proxier.elements: a full
// sync writes one per endpoint, and a map entry each was a fifth of its Go
// side.
type poolRecord struct {
	m      string
	entry  []string
	offset int
	values []string
}

func (r *poolRecord) id() string {
	return r.m + " " + strings.Join(r.entry, " . ") + " " + strconv.Itoa(r.offset)
}

func (r *poolRecord) key(i int) []string {
	key := make([]string, len(r.entry)+1)
	copy(key, r.entry)
	key[len(r.entry)] = strconv.Itoa(r.offset + i)
	return key
}

// pool puts endpoints at slots offset, offset+1, … under an entry's key
// in the endpoints map of their number, writing only what differs from
// what the ServicePort had there (or, in a full sync, what the table held).
func (w *writer) pool(st, old *portState, kind entryKind, entry []string, eps []*proxy.Endpoint, offset int) {
	rec := poolRecord{m: endpointsMap(mapID{kind, strings.ToLower(st.name.Protocol), len(eps)}), entry: entry, offset: offset,
		values: make([]string, len(eps))}
	for i, ep := range eps {
		rec.values[i] = ep.IP.String() + " . " + strconv.Itoa(ep.Port)
	}
	var prev []string
	if old != nil {
		id := rec.id()
		for i := range old.pools {
			if old.pools[i].id() == id {
				prev = old.pools[i].values
				break
			}
		}
	}
	listed := w.p.listed
	for i, v := range rec.values {
		var have string
		var ok bool
		switch {
		case i < len(prev):
			have, ok = prev[i], true
		case len(listed) > 0:
			k := elemKey{rec.m, strings.Join(rec.key(i), " . ")}
			if have, ok = listed[k]; ok {
				delete(listed, k)
			}
		}
		if ok && have == v {
			continue
		}
		key := rec.key(i)
		if ok {
			w.tx.Delete(&knftables.Element{Map: rec.m, Key: key})
		}
		w.tx.Add(&knftables.Element{Map: rec.m, Key: key, Value: []string{v}})
	}
	st.pools = append(st.pools, rec)
}

// dropPools deletes the pool elements old has and cur no longer does.
func dropPools(tx *knftables.Transaction, old, cur *portState) {
	keep := map[string]int{}
	if cur != nil {
		for i := range cur.pools {
			keep[cur.pools[i].id()] = len(cur.pools[i].values)
		}
	}
	for i := range old.pools {
		r := &old.pools[i]
		for slot := keep[r.id()]; slot < len(r.values); slot++ {
			tx.Delete(&knftables.Element{Map: r.m, Key: r.key(slot)})
		}
	}
}

// servicePort writes one ServicePort's map elements (upstream's
// syncProxyRules loop body, in maps instead of chains) and returns what it
// now has in the table.
func (w *writer) servicePort(pl *portPlan) *portState {
	if pl.sp.SessionAffinityClientIP {
		return w.affinityServicePort(pl)
	}
	sp := pl.sp
	st := &portState{name: sp.Name, shared: pl.shared, pairs: pl.pairs}
	old := w.p.states[sp.Name]
	protocol := strings.ToLower(sp.Name.Protocol)
	port := strconv.Itoa(sp.Port)
	comment := sp.Name.String()
	internalVerdict, externalVerdict := w.verdicts(pl)

	clusterIP := []string{sp.ClusterIP.String(), protocol, port}
	if pl.hasInternal {
		w.element(st, sp.Name, serviceIPsMap, clusterIP, "goto "+pl.internal.String(), nil)
		pool := pl.cluster
		if sp.InternalPolicyLocal {
			pool = pl.local
		}
		w.pool(st, old, addrEntry, []string{sp.ClusterIP.String(), port}, pool, 0)
	} else {
		w.element(st, sp.Name, noEndpointServicesMap, clusterIP, internalVerdict, &comment)
	}

	// The endpoints maps are per protocol, so their keys leave it out.
	external := func(kind entryKind, entry, poolEntry []string, dispatch, noEndpoints string) {
		if pl.hasExternal[kind] {
			w.element(st, sp.Name, dispatch, entry, "goto "+pl.external[kind].String(), nil)
			w.pool(st, old, kind, poolEntry, pl.cluster, 0)
			if sp.ExternalPolicyLocal && len(pl.local) > 0 {
				w.pool(st, old, kind, poolEntry, pl.local, localSlot)
			}
		}
		if sp.ExternalPolicyLocal && len(pl.local) == 0 || !pl.hasEndpoints {
			w.element(st, sp.Name, noEndpoints, entry, externalVerdict, &comment)
		}
	}
	for _, ip := range append(append([]netip.Addr{}, sp.ExternalIPs...), sp.LoadBalancerVIPs...) {
		external(addrEntry, []string{ip.String(), protocol, port}, []string{ip.String(), port}, serviceIPsMap, noEndpointServicesMap)
	}
	if sp.NodePort != 0 {
		np := strconv.Itoa(sp.NodePort)
		external(nodePortEntry, []string{protocol, np}, []string{np}, serviceNodePortsMap, noEndpointNodePortsMap)
	}
	return st
}

// verdicts for traffic without endpoints: a Service with none at all is
// rejected; one whose policy is Local and that has none on this node is
// dropped, as upstream, since a reject would tell the client the Service
// does not exist. They also count the latter for the metric.
func (w *writer) verdicts(pl *portPlan) (internal, external string) {
	if !pl.hasEndpoints {
		return "goto " + rejectChain, "goto " + rejectChain
	}
	sp := pl.sp
	if sp.InternalPolicyLocal && len(pl.local) == 0 {
		w.noLocalInternal++
	}
	if sp.ExternalPolicyLocal && len(pl.local) == 0 {
		w.noLocalExternal++
	}
	return "drop", "drop"
}

// writeShared adds (or rewrites) a shared chain. Its rules follow from its
// name and the proxier's configuration alone, so it is written once and
// left alone while any ServicePort uses it.
func (p *Proxier) writeShared(tx *knftables.Transaction, c sharedChain) {
	name := c.String()
	tx.Add(&knftables.Chain{Name: name})
	tx.Flush(&knftables.Chain{Name: name})
	rule := func(r string, comment ...string) {
		rl := &knftables.Rule{Chain: name, Rule: r}
		if len(comment) > 0 {
			rl.Comment = &comment[0]
		}
		tx.Add(rl)
	}
	switch c.role {
	case roleInternal:
		// Masquerade what comes from outside the cluster, so the reply
		// comes back through this node (a static route to the service
		// range through any node works).
		switch {
		case p.cfg.MasqueradeAll:
			rule(knftables.Concat("jump", markMasqChain))
		case len(p.cfg.ClusterCIDRs) > 0:
			rule(knftables.Concat(p.ipX, "saddr", "!=", p.cidrs(), "jump", markMasqChain))
		}
	case roleExternal:
		// Any endpoint may be on another node: masquerade so the reply
		// comes back through us.
		rule(knftables.Concat("jump", markMasqChain))
	case roleExternalLocal:
		cluster := sharedChain{kind: c.kind, proto: c.proto, role: roleCluster, n: c.n}.String()
		if len(p.cfg.ClusterCIDRs) > 0 {
			rule(knftables.Concat(p.ipX, "saddr", p.cidrs(), "goto", cluster), "short-circuit pod traffic")
		}
		rule(knftables.Concat("fib", "saddr", "type", "local", "jump", markMasqChain), "masquerade local traffic")
		rule(knftables.Concat("fib", "saddr", "type", "local", "goto", cluster), "short-circuit local traffic")
		if c.nLocal > 0 {
			rule(knftables.Concat("goto", sharedChain{kind: c.kind, proto: c.proto, role: roleLocal, n: c.nLocal}.String()))
		}
		return
	}
	pick := knftables.Concat("numgen random mod", c.n)
	if c.role == roleLocal {
		pick = knftables.Concat(pick, "offset", localSlot)
	}
	// The dispatch maps send only this protocol here; nft wants it
	// matched before a DNAT to a port.
	rule(knftables.Concat("meta l4proto", c.proto, "dnat to", p.entryKey(c.kind, c.proto), ".", pick, "map", "@",
		endpointsMap(mapID{c.kind, c.proto, c.n})))
}

// entryKey is the packet's side of an endpoints map's entry key.
func (p *Proxier) entryKey(kind entryKind, proto string) string {
	if kind == nodePortEntry {
		return proto + " dport"
	}
	return p.ipX + " daddr . " + proto + " dport"
}

// endpointsMapObject is an endpoints map.
func (p *Proxier) endpointsMapObject(id mapID) *knftables.Map {
	return &knftables.Map{Name: endpointsMap(id),
		TypeOf: knftables.Concat(p.entryKey(id.kind, id.proto), ".", "numgen random mod", id.n, ":", p.ipX, "daddr .", id.proto, "dport")}
}

// affinityServicePort writes a ServicePort with ClientIP affinity the way
// upstream does: a chain per Service and policy, a chain and a dynamic set
// of clients per endpoint. Per-client state has to name the endpoint it
// sticks to, and nft 1.0.6 can neither key one lookup by another's result
// nor store the slot a random choice made, so affinity cannot live in the
// shared chains; these objects cost only what affinity Services have.
func (w *writer) affinityServicePort(pl *portPlan) *portState {
	p, tx, sp := w.p, w.tx, pl.sp
	st := &portState{name: sp.Name, sets: map[string]int{}, pairs: pl.pairs}
	names := w.names(sp)
	protocol := strings.ToLower(sp.Name.Protocol)
	port := strconv.Itoa(sp.Port)
	comment := sp.Name.String()
	cluster, local, reachable, hasEndpoints := pl.cluster, pl.local, pl.reachable, pl.hasEndpoints

	epChain := func(ep *proxy.Endpoint) string { return endpointChainPrefix + w.endpointBase(names, sp, ep) }
	affinitySet := func(ep *proxy.Endpoint) string { return affinitySetPrefix + w.endpointBase(names, sp, ep) }
	// An endpoint chain's rules follow from its name (endpoint, protocol)
	// and the affinity timeout: one the table already has with the same
	// timeout stays as it is, so changing one endpoint of many rewrites
	// one endpoint chain, not all.
	old := p.states[sp.Name]
	sticky := sp.StickyMaxAgeSeconds
	st.epAffinity = map[string]int{}
	keep := map[string]bool{}
	for _, ep := range reachable {
		c := epChain(ep)
		st.epAffinity[c] = sticky
		if old != nil && !w.full {
			// Same timeout too: a changed one replaces the set, which must
			// not be in use by a rule we keep.
			if aff, ok := old.epAffinity[c]; ok && aff == sticky {
				keep[c] = true
				w.kept[c] = true
				st.chains = append(st.chains, c)
				continue
			}
		}
		w.ensureChain(st, c)
	}
	usesCluster := len(cluster) > 0 && sp.UsesClusterEndpoints()
	if usesCluster {
		w.ensureChain(st, names.cluster)
	}
	usesLocal := len(local) > 0 && sp.UsesLocalEndpoints()
	if usesLocal {
		w.ensureChain(st, names.local)
	}

	internalChain, hasInternal := names.cluster, hasEndpoints
	if sp.InternalPolicyLocal {
		internalChain = names.local
		hasInternal = hasInternal && len(local) > 0
	}
	externalPolicyChain, hasExternal := names.cluster, hasEndpoints
	if sp.ExternalPolicyLocal {
		externalPolicyChain = names.local
		hasExternal = hasExternal && len(local) > 0
	}
	// The external chain exists whenever there are endpoints anywhere: it
	// short-circuits this node's own traffic even with no local endpoint.
	usesExternal := hasEndpoints && sp.ExternallyAccessible()
	if usesExternal {
		w.ensureChain(st, names.external)
	}
	internalVerdict, externalVerdict := w.verdicts(pl)

	if hasInternal {
		w.element(st, sp.Name, serviceIPsMap, []string{sp.ClusterIP.String(), protocol, port}, "goto "+internalChain, nil)
	} else {
		w.element(st, sp.Name, noEndpointServicesMap, []string{sp.ClusterIP.String(), protocol, port}, internalVerdict, &comment)
	}
	for _, ip := range append(append([]netip.Addr{}, sp.ExternalIPs...), sp.LoadBalancerVIPs...) {
		if hasEndpoints {
			w.element(st, sp.Name, serviceIPsMap, []string{ip.String(), protocol, port}, "goto "+names.external, nil)
		}
		if !hasExternal {
			w.element(st, sp.Name, noEndpointServicesMap, []string{ip.String(), protocol, port}, externalVerdict, &comment)
		}
	}
	if sp.NodePort != 0 {
		np := strconv.Itoa(sp.NodePort)
		if hasEndpoints {
			w.element(st, sp.Name, serviceNodePortsMap, []string{protocol, np}, "goto "+names.external, nil)
		}
		if !hasExternal {
			w.element(st, sp.Name, noEndpointNodePortsMap, []string{protocol, np}, externalVerdict, &comment)
		}
	}

	if hasInternal {
		match := knftables.Concat(p.ipX, "daddr", sp.ClusterIP.String(), protocol, "dport", port)
		switch {
		case p.cfg.MasqueradeAll:
			tx.Add(&knftables.Rule{Chain: internalChain, Rule: knftables.Concat(match, "jump", markMasqChain)})
		case len(p.cfg.ClusterCIDRs) > 0:
			tx.Add(&knftables.Rule{Chain: internalChain, Rule: knftables.Concat(match, p.ipX, "saddr", "!=", p.cidrs(), "jump", markMasqChain)})
		}
	}

	if usesExternal {
		if !sp.ExternalPolicyLocal {
			tx.Add(&knftables.Rule{Chain: names.external, Rule: knftables.Concat("jump", markMasqChain)})
		} else {
			if len(p.cfg.ClusterCIDRs) > 0 {
				tx.Add(&knftables.Rule{Chain: names.external, Rule: knftables.Concat(p.ipX, "saddr", p.cidrs(), "goto", names.cluster),
					Comment: knftables.PtrTo("short-circuit pod traffic")})
			}
			tx.Add(&knftables.Rule{Chain: names.external, Rule: knftables.Concat("fib", "saddr", "type", "local", "jump", markMasqChain),
				Comment: knftables.PtrTo("masquerade local traffic")})
			tx.Add(&knftables.Rule{Chain: names.external, Rule: knftables.Concat("fib", "saddr", "type", "local", "goto", names.cluster),
				Comment: knftables.PtrTo("short-circuit local traffic")})
		}
		if hasExternal {
			tx.Add(&knftables.Rule{Chain: names.external, Rule: knftables.Concat("goto", externalPolicyChain)})
		}
	}

	timeout := time.Duration(sp.StickyMaxAgeSeconds) * time.Second
	for _, ep := range reachable {
		name := affinitySet(ep)
		if old != nil && old.sets[name] != 0 && old.sets[name] != sp.StickyMaxAgeSeconds {
			// nft cannot change a set's timeout in place; the rules using
			// it were flushed above.
			tx.Delete(&knftables.Set{Name: name})
		}
		// "dynamic" because the kernel adds it anyway once the packet path
		// updates the set, and a later add without it would fail.
		tx.Add(&knftables.Set{Name: name, Type: p.addrType,
			Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: &timeout})
		st.sets[name] = sp.StickyMaxAgeSeconds
	}

	if usesCluster {
		w.endpointRules(names.cluster, cluster, epChain, affinitySet)
	}
	if usesLocal {
		w.endpointRules(names.local, local, epChain, affinitySet)
	}
	for _, ep := range reachable {
		c := epChain(ep)
		if keep[c] {
			continue
		}
		// No hairpin rule here: the hairpin-endpoints set does it for
		// every Service, after DNAT.
		tx.Add(&knftables.Rule{Chain: c, Rule: knftables.Concat("update", "@", affinitySet(ep), "{", p.ipX, "saddr", "}")})
		tx.Add(&knftables.Rule{Chain: c, Rule: knftables.Concat("meta l4proto", protocol, "dnat to", ep.String())})
	}
	// Keep the name cache to the endpoints the port has now, or pod churn
	// would grow it for as long as the Service lives.
	fresh := make(map[string]string, len(reachable))
	for _, ep := range reachable {
		if b, ok := names.endpoints[ep.String()]; ok {
			fresh[ep.String()] = b
		}
	}
	names.endpoints = fresh
	return st
}

// endpointRules: affinity first (a client with a live entry goes back to
// its endpoint), then a random choice among all.
func (w *writer) endpointRules(chain string, eps []*proxy.Endpoint, epChain, affinitySet func(*proxy.Endpoint) string) {
	for _, ep := range eps {
		w.tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(w.p.ipX, "saddr", "@", affinitySet(ep), "goto", epChain(ep))})
	}
	var b strings.Builder
	for i, ep := range eps {
		if i > 0 {
			b.WriteString(" , ")
		}
		fmt.Fprintf(&b, "%d : goto %s", i, epChain(ep))
	}
	w.tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat("numgen random mod", len(eps), "vmap", "{", b.String(), "}")})
}

// cidrs is the cluster CIDRs as one nft value: a prefix, or an anonymous
// set of them.
func (p *Proxier) cidrs() string {
	if len(p.cfg.ClusterCIDRs) == 1 {
		return p.cfg.ClusterCIDRs[0].String()
	}
	parts := make([]string, len(p.cfg.ClusterCIDRs))
	for i, c := range p.cfg.ClusterCIDRs {
		parts[i] = c.String()
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}
