package nodelifecycle

import (
	"context"

	corev1 "skiff.dev/proto/api/core/v1"
)

// zoneState is upstream's ZoneState.
type zoneState string

const (
	stateInitial           zoneState = "Initial"
	stateNormal            zoneState = "Normal"
	stateFullDisruption    zoneState = "FullDisruption"
	statePartialDisruption zoneState = "PartialDisruption"
)

// The well-known topology labels, stable and the deprecated beta ones
// upstream still reads.
const (
	labelTopologyZone   = "topology.kubernetes.io/zone"
	labelTopologyRegion = "topology.kubernetes.io/region"
	labelFailureZone    = "failure-domain.beta.kubernetes.io/zone"
	labelFailureRegion  = "failure-domain.beta.kubernetes.io/region"
)

// labelNodeDisruptionExclusion keeps a node out of its zone's health, as
// upstream.
const labelNodeDisruptionExclusion = "node.kubernetes.io/exclude-disruption"

// zoneKey is upstream's topology.GetZoneKey: region and zone, since a zone
// name is unique only within its region; "" for a node with neither, so an
// unlabelled cluster is one zone.
func zoneKey(n *corev1.Node) string {
	l := n.GetMetadata().GetLabels()
	zone, region := l[labelTopologyZone], l[labelTopologyRegion]
	if zone == "" {
		zone = l[labelFailureZone]
	}
	if region == "" {
		region = l[labelFailureRegion]
	}
	if zone == "" && region == "" {
		return ""
	}
	// The separator cannot appear in a label value.
	return region + ":\x00:" + zone
}

// computeZoneState is upstream's ComputeZoneState over the Ready
// conditions of a zone's nodes (nil for a node that never reported): fully
// disrupted when no node is Ready, partially when more than two are not and
// they are at least unhealthyThreshold of the zone, normal otherwise. It
// also returns how many nodes are not Ready.
func computeZoneState(ready []*corev1.NodeCondition, unhealthyThreshold float64) (int, zoneState) {
	readyNodes, notReady := 0, 0
	for _, c := range ready {
		if c.GetStatus() == "True" {
			readyNodes++
		} else {
			notReady++
		}
	}
	switch {
	case readyNodes == 0 && notReady > 0:
		return notReady, stateFullDisruption
	case notReady > 2 && float64(notReady)/float64(notReady+readyNodes) >= unhealthyThreshold:
		return notReady, statePartialDisruption
	default:
		return notReady, stateNormal
	}
}

// reducedQPS is upstream's ReducedQPSFunc, the rate of a partially
// disrupted zone: slower in a large zone, none in a small one, where a
// partition is the likelier cause than failing nodes.
func (c *Controller) reducedQPS(zoneSize int) float64 {
	if int32(zoneSize) > c.largeClusterThreshold {
		return c.secondaryEvictionQPS
	}
	return 0
}

func (c *Controller) setLimiterInZone(zone string, size int, state zoneState) {
	q := c.tainter(zone)
	switch state {
	case stateNormal, stateFullDisruption:
		// A fully disrupted zone among healthy ones is a zone gone, whose
		// pods should move: upstream's HealthyQPSFunc.
		q.swapLimiter(c.evictionQPS)
	case statePartialDisruption:
		q.swapLimiter(c.reducedQPS(size))
	}
}

// handleDisruption is upstream's: it records each zone's health, sets each
// zone's tainting rate for its state, and when every zone is fully
// disrupted, stops tainting altogether and takes the NoExecute taints off
// every node, since then the control plane's own connectivity is the
// likelier fault than every node at once.
func (c *Controller) handleDisruption(ctx context.Context, zoneReady map[string][]*corev1.NodeCondition, nodes []*corev1.Node) {
	newStates := map[string]zoneState{}
	allAreFullyDisrupted := true
	for zone, conds := range zoneReady {
		unhealthy, state := computeZoneState(conds, c.unhealthyZoneThreshold)
		c.metrics.zoneSize.WithLabelValues(zone).Set(float64(len(conds)))
		c.metrics.zoneHealth.WithLabelValues(zone).Set(float64(100*(len(conds)-unhealthy)) / float64(len(conds)))
		c.metrics.unhealthyNodes.WithLabelValues(zone).Set(float64(unhealthy))
		if state != stateFullDisruption {
			allAreFullyDisrupted = false
		}
		newStates[zone] = state
		if _, ok := c.zoneStates[zone]; !ok {
			c.log.Info("setting initial state for unseen zone", "zone", zone)
			c.zoneStates[zone] = stateInitial
		}
	}

	allWasFullyDisrupted := true
	for zone, state := range c.zoneStates {
		if _, ok := zoneReady[zone]; !ok {
			// A zone whose nodes are all gone, or all excluded.
			c.metrics.zoneSize.WithLabelValues(zone).Set(0)
			c.metrics.zoneHealth.WithLabelValues(zone).Set(100)
			c.metrics.unhealthyNodes.WithLabelValues(zone).Set(0)
			delete(c.zoneStates, zone)
			continue
		}
		if state != stateFullDisruption {
			allWasFullyDisrupted = false
		}
	}

	if allAreFullyDisrupted && allWasFullyDisrupted {
		return
	}
	if allAreFullyDisrupted {
		c.log.Info("controller detected that all Nodes are not-Ready. Entering master disruption mode")
		for _, n := range nodes {
			if _, err := c.markNodeAsReachable(ctx, n); err != nil {
				c.log.Error("failed to remove taints from node", "node", n.GetMetadata().GetName(), "err", err)
			}
		}
		for zone := range c.zoneStates {
			c.tainter(zone).swapLimiter(0)
			c.zoneStates[zone] = stateFullDisruption
		}
		return
	}
	if allWasFullyDisrupted {
		c.log.Info("controller detected that some Nodes are Ready. Exiting master disruption mode")
		// Every node gets a fresh grace period: what looked like their
		// silence was the control plane's.
		now := c.now()
		for _, n := range nodes {
			c.health.refresh(n.GetMetadata().GetName(), now)
		}
		for zone := range c.zoneStates {
			c.setLimiterInZone(zone, len(zoneReady[zone]), newStates[zone])
			c.zoneStates[zone] = newStates[zone]
		}
		return
	}
	for zone, state := range c.zoneStates {
		next := newStates[zone]
		if state == next {
			continue
		}
		c.log.Info("controller detected that zone is now in new state", "zone", zone, "newState", next)
		c.setLimiterInZone(zone, len(zoneReady[zone]), next)
		c.zoneStates[zone] = next
	}
}
