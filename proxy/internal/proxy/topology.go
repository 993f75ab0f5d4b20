package proxy

// Categorize splits a ServicePort's endpoints as upstream's
// CategorizeEndpoints (topology hints aside): those Cluster traffic policy
// may use (nil if the port never uses it), those Local policy may use (nil
// likewise), all of them that this node reaches, and whether the Service
// has a usable endpoint anywhere. Usable means ready, falling back, for
// each policy on its own, to serving-and-terminating when none is ready,
// so a rolling update never leaves a window of rejected connections.
func Categorize(eps []*Endpoint, sp *ServicePort) (cluster, local, reachable []*Endpoint, hasAny bool) {
	if len(eps) == 0 {
		return nil, nil, nil, false
	}
	if sp.UsesClusterEndpoints() {
		cluster = filter(eps, func(e *Endpoint) bool { return e.Ready })
		if len(cluster) == 0 {
			cluster = filter(eps, func(e *Endpoint) bool { return e.Serving && e.Terminating })
		}
		hasAny = len(cluster) > 0
	}
	if !sp.UsesLocalEndpoints() {
		return cluster, nil, cluster, hasAny
	}
	var localReady, localTerminating bool
	for _, e := range eps {
		switch {
		case e.Ready:
			hasAny = true
			localReady = localReady || e.IsLocal
		case e.Serving && e.Terminating:
			hasAny = true
			localTerminating = localTerminating || e.IsLocal
		}
	}
	usingTerminating := false
	switch {
	case localReady:
		local = filter(eps, func(e *Endpoint) bool { return e.IsLocal && e.Ready })
	case localTerminating:
		usingTerminating = true
		local = filter(eps, func(e *Endpoint) bool { return e.IsLocal && e.Serving && e.Terminating })
	}
	if !sp.UsesClusterEndpoints() {
		return nil, local, local, hasAny
	}
	if !usingTerminating {
		// cluster holds every ready endpoint, so the local ready ones too.
		return cluster, local, cluster, hasAny
	}
	seen := map[string]bool{}
	for _, e := range cluster {
		seen[e.String()] = true
		reachable = append(reachable, e)
	}
	for _, e := range local {
		if !seen[e.String()] {
			reachable = append(reachable, e)
		}
	}
	return cluster, local, reachable, hasAny
}

func filter(eps []*Endpoint, keep func(*Endpoint) bool) []*Endpoint {
	out := make([]*Endpoint, 0, len(eps))
	for _, e := range eps {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}
