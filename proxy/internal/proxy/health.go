package proxy

import (
	"errors"
	"log/slog"
	"net/netip"

	"skiff.dev/proxy/internal/metrics"
)

// ServiceHealth is told after every successful sync which Services have a
// health check node port and how many ready endpoints each has on this
// node: upstream's ServiceHealthServer, through which a load balancer in
// front of an externalTrafficPolicy=Local Service learns which nodes to
// send traffic to. Errors are for logging; nothing a proxier can do about
// a port it cannot bind.
type ServiceHealth interface {
	// SyncServices makes ports the set served: Services missing from it
	// stop being served, new ones start.
	SyncServices(ports map[NamespacedName]uint16) error
	// SyncEndpoints sets the local endpoint counts by Service; a Service
	// missing from counts has none.
	SyncEndpoints(counts map[NamespacedName]int) error
}

// HealthChecks are the Services of svcs with a health check node port,
// with that port, and for each the number of distinct addresses among its
// ready endpoints on this node, counted across its ports, as upstream
// counts them: a pod serving two ports is one endpoint to a load balancer,
// and terminating endpoints are not counted even where the Local policy
// falls back to them, so that a node whose pods are all going away fails
// its health check and is drained. A Service with none is absent from
// local. Out-of-range ports are left out: no listener could be opened on
// them anyway. One pass over svcs, since it runs at every sync.
func HealthChecks(svcs ServicePortMap, eps EndpointsMap) (ports map[NamespacedName]uint16, local map[NamespacedName]int) {
	ports, local = map[NamespacedName]uint16{}, map[NamespacedName]int{}
	var seen map[NamespacedName]map[netip.Addr]bool
	for name, sp := range svcs {
		if sp.HealthCheckNodePort <= 0 || sp.HealthCheckNodePort > 65535 {
			continue
		}
		nn := name.NamespacedName
		ports[nn] = uint16(sp.HealthCheckNodePort)
		for _, e := range eps[name] {
			if !e.IsLocal || !e.Ready {
				continue
			}
			if seen == nil {
				seen = map[NamespacedName]map[netip.Addr]bool{}
			}
			ips := seen[nn]
			if ips == nil {
				ips = map[netip.Addr]bool{}
				seen[nn] = ips
			}
			ips[e.IP] = true
		}
	}
	for nn, ips := range seen {
		local[nn] = len(ips)
	}
	return ports, local
}

// SyncServiceHealth reports svcs and eps to h, as every proxier does at the
// end of a successful sync.
func SyncServiceHealth(h ServiceHealth, svcs ServicePortMap, eps EndpointsMap) error {
	ports, local := HealthChecks(svcs, eps)
	// The counts first: a listener opened by SyncServices then answers
	// with this sync's count at once, not with none.
	return errors.Join(h.SyncEndpoints(local), h.SyncServices(ports))
}

// Synced is what every proxier reports once a sync's rules are in: the
// network programming latency of the changes it carried, the health
// server's and the metric's last sync, and the Services' health checks
// (every sync, changes or not: a port that could not be bound is tried
// again on the next one).
type Synced struct {
	Family        Family
	Metrics       *metrics.Metrics
	Health        interface{ Updated(family string) }
	ServiceHealth ServiceHealth
	Logger        *slog.Logger
}

// Report records a successful sync that applied res, leaving svcs and eps.
func (s Synced) Report(res UpdateResult, svcs ServicePortMap, eps EndpointsMap) {
	for _, times := range res.LastChangeTriggerTimes {
		s.Metrics.ObserveProgramming(times)
	}
	if s.Health != nil {
		s.Health.Updated(string(s.Family))
	}
	s.Metrics.LastSync.SetToCurrentTime()
	if s.ServiceHealth != nil {
		if err := SyncServiceHealth(s.ServiceHealth, svcs, eps); err != nil {
			s.Logger.Error("syncing service health checks", "err", err)
		}
	}
}
