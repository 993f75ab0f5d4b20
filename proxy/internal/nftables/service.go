package nftables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"skiff.dev/proxy/internal/proxy"
)

// writer adds one transaction's per-ServicePort objects.
type writer struct {
	p    *Proxier
	tx   *knftables.Transaction
	full bool
	// created are the chains this transaction added and flushed; kept,
	// those it left as they were and still uses.
	created, kept map[string]bool

	noLocalInternal, noLocalExternal int
}

// ensureChain adds and flushes a chain once per transaction: whatever was
// in it goes, what this transaction writes stays.
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

// servicePort writes one ServicePort, as upstream's syncProxyRules loop
// body, and returns what it now has in the table.
func (w *writer) servicePort(sp *proxy.ServicePort, eps []*proxy.Endpoint) *portState {
	p, tx := w.p, w.tx
	st := &portState{sets: map[string]int{}}
	names := w.names(sp)
	protocol := strings.ToLower(sp.Name.Protocol)
	port := strconv.Itoa(sp.Port)
	comment := sp.Name.String()

	cluster, local, reachable, hasEndpoints := proxy.Categorize(eps, sp)

	epChain := func(ep *proxy.Endpoint) string { return endpointChainPrefix + w.endpointBase(names, sp, ep) }
	affinitySet := func(ep *proxy.Endpoint) string { return affinitySetPrefix + w.endpointBase(names, sp, ep) }
	// An endpoint chain's rules follow from its name (endpoint, protocol)
	// and whether the port has affinity: one the table already has with
	// the same affinity stays as it is, so changing one endpoint of many
	// rewrites one endpoint chain, not all.
	old := p.states[sp.Name]
	sticky := 0
	if sp.SessionAffinityClientIP {
		sticky = sp.StickyMaxAgeSeconds
	}
	st.epAffinity = map[string]int{}
	keep := map[string]bool{}
	for _, ep := range reachable {
		c := epChain(ep)
		st.epAffinity[c] = sticky
		if old != nil && !w.full {
			// Same affinity timeout too: a changed one replaces the set,
			// which must not be in use by a rule we keep.
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

	internalVerdict, externalVerdict := "goto "+rejectChain, "goto "+rejectChain
	if hasEndpoints {
		// Local policy and no local endpoint: drop, as upstream, because a
		// reject would tell the client the Service does not exist.
		internalVerdict, externalVerdict = "drop", "drop"
		if !hasInternal {
			w.noLocalInternal++
		}
		if !hasExternal {
			w.noLocalExternal++
		}
	}

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

	// Internal traffic: masquerade what comes from outside the cluster, so
	// the reply comes back through this node (a static route to the
	// service range through any node works).
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
			// Any endpoint may be on another node: masquerade so the reply
			// comes back through us.
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

	if sp.SessionAffinityClientIP {
		timeout := time.Duration(sp.StickyMaxAgeSeconds) * time.Second
		for _, ep := range reachable {
			name := affinitySet(ep)
			if old != nil && old.sets[name] != 0 && old.sets[name] != sp.StickyMaxAgeSeconds {
				// nft cannot change a set's timeout in place; the rules
				// using it were flushed above.
				tx.Delete(&knftables.Set{Name: name})
			}
			// "dynamic" because the kernel adds it anyway once the packet
			// path updates the set, and a later add without it would fail.
			tx.Add(&knftables.Set{Name: name, Type: p.addrType,
				Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: &timeout})
			st.sets[name] = sp.StickyMaxAgeSeconds
		}
	}

	if usesCluster {
		w.endpointRules(sp, names.cluster, cluster, epChain, affinitySet)
	}
	if usesLocal {
		w.endpointRules(sp, names.local, local, epChain, affinitySet)
	}
	for _, ep := range reachable {
		c := epChain(ep)
		if keep[c] {
			continue
		}
		// Hairpin: a pod reaching itself through its Service must not see
		// its own address as the source.
		tx.Add(&knftables.Rule{Chain: c, Rule: knftables.Concat(p.ipX, "saddr", ep.IP.String(), "jump", markMasqChain)})
		if sp.SessionAffinityClientIP {
			tx.Add(&knftables.Rule{Chain: c, Rule: knftables.Concat("update", "@", affinitySet(ep), "{", p.ipX, "saddr", "}")})
		}
		tx.Add(&knftables.Rule{Chain: c, Rule: knftables.Concat("meta l4proto", protocol, "dnat to", ep.String())})
	}
	// Keep the name cache to the endpoints the port has now, or pod churn
	// would grow it for as long as the Service lives.
	fresh := make(map[string]string, len(eps))
	for _, ep := range eps {
		if b, ok := names.endpoints[ep.String()]; ok {
			fresh[ep.String()] = b
		}
	}
	names.endpoints = fresh
	return st
}

// endpointRules: affinity first (a client with a live entry goes back to
// its endpoint), then a random choice among all.
func (w *writer) endpointRules(sp *proxy.ServicePort, chain string, eps []*proxy.Endpoint, epChain, affinitySet func(*proxy.Endpoint) string) {
	if sp.SessionAffinityClientIP {
		for _, ep := range eps {
			w.tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(w.p.ipX, "saddr", "@", affinitySet(ep), "goto", epChain(ep))})
		}
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
