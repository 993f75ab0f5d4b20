package nodelifecycle

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/record"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

const (
	condTrue    = "True"
	condFalse   = "False"
	condUnknown = "Unknown"
)

// The reasons this controller writes, as upstream.
const (
	reasonStatusUnknown      = "NodeStatusUnknown"
	reasonStatusNeverUpdated = "NodeStatusNeverUpdated"
)

// unknownConditions are the conditions a silent node's are set Unknown:
// NetworkUnavailable is the network plugin's, not the kubelet's.
var unknownConditions = []string{"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}

// nodeHealth is upstream's nodeHealthData: what a node last reported, and
// when this controller saw it. Times are this controller's clock.
type nodeHealth struct {
	// probe is when the node's heartbeat (Ready's lastHeartbeatTime, or
	// its Lease's renewTime) was last seen to move.
	probe           time.Time
	readyTransition time.Time
	status          *corev1.NodeStatus
	lease           *coordinationv1.Lease
	// leaseRenewed is when the Lease was last seen renewed, not counting
	// the first sight of it: proof the kubelet is alive now, not at some
	// point before this controller started.
	leaseRenewed time.Time
	// revived is the last pass's verdict of effectiveReady's exception.
	revived bool
}

// healthMap is shared by the monitor loop and the node and pod workers.
// Its entries are replaced, never changed in place.
type healthMap struct {
	mu sync.RWMutex
	m  map[string]*nodeHealth
}

// get returns a copy of a node's entry (nil if none) for the caller to
// change and set.
func (h *healthMap) get(name string) *nodeHealth {
	h.mu.RLock()
	defer h.mu.RUnlock()
	e := h.m[name]
	if e == nil {
		return nil
	}
	cp := *e
	return &cp
}

func (h *healthMap) set(name string, e *nodeHealth) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m[name] = e
}

func (h *healthMap) delete(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, name)
}

// refresh gives a node a fresh grace period.
func (h *healthMap) refresh(name string, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.m[name]; e != nil {
		cp := *e
		cp.probe, cp.readyTransition = now, now
		h.m[name] = &cp
	}
}

func nodeCondition(s *corev1.NodeStatus, typ string) *corev1.NodeCondition {
	for _, c := range s.GetConditions() {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}

func readyCondition(s *corev1.NodeStatus) *corev1.NodeCondition { return nodeCondition(s, "Ready") }

// effectiveReady is the Ready status the controller acts on: the
// condition's, except that an Unknown this controller wrote counts as True
// while the node's Lease is seen renewed within the grace period. The
// kubelet is then alive, only its status is stale; upstream waits for the
// kubelet to post it before the taints go.
func (c *Controller) effectiveReady(node *corev1.Node, cond *corev1.NodeCondition) string {
	if c.revived(node.GetMetadata().GetName(), cond, c.health.get(node.GetMetadata().GetName())) {
		return condTrue
	}
	return cond.GetStatus()
}

func (c *Controller) revived(name string, cond *corev1.NodeCondition, h *nodeHealth) bool {
	if cond.GetStatus() != condUnknown || (cond.GetReason() != reasonStatusUnknown && cond.GetReason() != reasonStatusNeverUpdated) {
		return false
	}
	return h != nil && !h.leaseRenewed.IsZero() && !c.now().After(h.leaseRenewed.Add(c.monitorGrace))
}

func microTime(t *metav1.MicroTime) time.Time {
	if t == nil {
		return time.Time{}
	}
	return time.Unix(t.GetSeconds(), int64(t.GetNanos()))
}

// tryUpdateNodeHealth is upstream's: it updates the node's health entry
// from what the caches hold now, and when nothing moved for the grace
// period writes the kubelet's conditions Unknown. It returns the Ready
// condition as observed (a made-up Unknown one for a node that never
// reported) and as it is now. node is not changed.
func (c *Controller) tryUpdateNodeHealth(ctx context.Context, node *corev1.Node) (observed, current *corev1.NodeCondition, err error) {
	name := node.GetMetadata().GetName()
	created := node.GetMetadata().GetCreationTimestamp()
	now := c.now()
	h := c.health.get(name)
	var savedReady *corev1.NodeCondition
	var savedLease *coordinationv1.Lease
	if h != nil {
		savedReady, savedLease = readyCondition(h.status), h.lease
	}
	fresh := func(probe, transition time.Time) *nodeHealth {
		e := &nodeHealth{status: node.GetStatus(), probe: probe, readyTransition: transition}
		if h != nil {
			e.lease, e.leaseRenewed, e.revived = h.lease, h.leaseRenewed, h.revived
		}
		return e
	}

	current = readyCondition(node.GetStatus())
	grace := c.monitorGrace
	if current == nil {
		// Never reported: timed from the node's creation.
		observed = &corev1.NodeCondition{Type: "Ready", Status: condUnknown, LastHeartbeatTime: created, LastTransitionTime: created}
		grace = c.startupGrace
		if h != nil {
			h.status = node.GetStatus()
		} else {
			h = fresh(created.AsTime(), created.AsTime())
		}
	} else {
		observed = proto.Clone(current).(*corev1.NodeCondition)
	}
	switch {
	case h == nil:
		c.log.Info("missing timestamp for node, assuming now", "node", name)
		h = fresh(now, now)
	case savedReady == nil && current != nil:
		c.log.Debug("creating timestamp entry for newly observed node", "node", name)
		h = fresh(now, now)
	case savedReady != nil && current == nil:
		c.log.Error("Ready condition was removed from the status of node", "node", name)
		h = fresh(now, now)
	case savedReady != nil && current != nil && !proto.Equal(savedReady.GetLastHeartbeatTime(), current.GetLastHeartbeatTime()):
		transition := h.readyTransition
		if !proto.Equal(savedReady.GetLastTransitionTime(), current.GetLastTransitionTime()) {
			transition = now
		}
		h = fresh(now, transition)
	}
	// A renewed Lease is a heartbeat, whatever the status says: a kubelet
	// that renews its lease but never posts status is left alone.
	lease, _ := c.leases.Get(nodeLeaseNamespace, name)
	if lease != nil && (savedLease == nil || microTime(savedLease.GetSpec().GetRenewTime()).Before(microTime(lease.GetSpec().GetRenewTime()))) {
		if savedLease != nil {
			h.leaseRenewed = now
		}
		h.lease, h.probe = lease, now
	}
	defer func() { c.health.set(name, h) }()

	if !now.After(h.probe.Add(grace)) {
		return observed, current, nil
	}
	updated := proto.Clone(node).(*corev1.Node)
	if updated.Status == nil {
		updated.Status = &corev1.NodeStatus{}
	}
	for _, typ := range unknownConditions {
		cond := nodeCondition(updated.Status, typ)
		switch {
		case cond == nil:
			c.log.Debug("condition of node was never updated by kubelet", "node", name, "condition", typ)
			updated.Status.Conditions = append(updated.Status.Conditions, &corev1.NodeCondition{Type: typ, Status: condUnknown,
				Reason: reasonStatusNeverUpdated, Message: "Kubelet never posted node status.",
				LastHeartbeatTime: created, LastTransitionTime: metav1.NewTime(now)})
		case cond.GetStatus() != condUnknown:
			c.log.Debug("node hasn't been updated", "node", name, "for", now.Sub(h.probe), "condition", typ)
			cond.Status, cond.Reason, cond.Message = condUnknown, reasonStatusUnknown, "Kubelet stopped posting node status."
			cond.LastTransitionTime = metav1.NewTime(now)
		}
	}
	current = readyCondition(updated.Status)
	if proto.Equal(current, observed) {
		return observed, current, nil
	}
	res, err := client.For[*corev1.Node](c.client, "").UpdateStatus(ctx, updated)
	if err != nil {
		return observed, current, fmt.Errorf("updating status of node %s: %w", name, err)
	}
	h = &nodeHealth{status: res.GetStatus(), probe: h.probe, readyTransition: now, lease: lease, leaseRenewed: h.leaseRenewed}
	return observed, current, nil
}

// monitorNodeHealth is upstream's: every node's health is brought up to
// date; nodes not Ready are queued for their zone's NoExecute tainting and
// Ready ones lose those taints; a node that just stopped being Ready has
// its pods marked not Ready; then each zone's state sets its tainting rate.
func (c *Controller) monitorNodeHealth(ctx context.Context) error {
	start := time.Now()
	defer func() { c.metrics.updateAllNodes.Observe(time.Since(start).Seconds()) }()

	nodes := c.nodes.List(nil)
	added, deleted, newZones := c.classifyNodes(nodes)
	for _, n := range newZones {
		c.addZone(n)
	}
	for _, n := range added {
		name := n.GetMetadata().GetName()
		c.log.Info("controller observed a new node", "node", name)
		c.recorder.Eventf(n, record.Normal, "RegisteredNode", "Node %s event: Registered Node %s in Controller", name, name)
		c.knownNodes[name] = n
		c.addZone(n)
	}
	for _, n := range deleted {
		name := n.GetMetadata().GetName()
		c.log.Info("controller observed a node deletion", "node", name)
		c.recorder.Eventf(n, record.Normal, "RemovingNode", "Node %s event: Removing Node %s from Controller", name, name)
		delete(c.knownNodes, name)
		c.health.delete(name)
	}

	var mu sync.Mutex
	zoneReady := map[string][]*corev1.NodeCondition{}
	parallelize(ctx, nodeUpdateWorkers, len(nodes), func(i int) {
		start := time.Now()
		defer func() { c.metrics.updateNodeHealth.Observe(time.Since(start).Seconds()) }()
		node := nodes[i]
		name := node.GetMetadata().GetName()
		var observed, current *corev1.NodeCondition
		for attempt := 1; ; attempt++ {
			var err error
			if observed, current, err = c.tryUpdateNodeHealth(ctx, node); err == nil {
				break
			}
			if attempt == nodeHealthUpdateRetry {
				c.log.Error("update health of node from controller error, skipping: no pods will be evicted", "node", name, "err", err)
				return
			}
			if node, err = client.For[*corev1.Node](c.client, "").Get(ctx, name); err != nil {
				c.log.Error("failed while getting a node to retry updating node health, probably node was deleted", "node", name, "err", err)
				return
			}
		}

		// Decisions go by the effective Ready status; the events and the
		// pods' readiness by what the status says.
		observedStatus, currentStatus := c.effectiveStatuses(node, observed, current)
		if _, excluded := node.GetMetadata().GetLabels()[labelNodeDisruptionExclusion]; !excluded {
			var cond *corev1.NodeCondition
			if current != nil {
				cond = &corev1.NodeCondition{Type: "Ready", Status: currentStatus}
			}
			mu.Lock()
			zoneReady[zoneKey(node)] = append(zoneReady[zoneKey(node)], cond)
			mu.Unlock()
		}
		if current != nil {
			c.processTaintBaseEviction(ctx, node, observedStatus)
			_, retry := c.nodesToRetry.Load(name)
			switch {
			case current.GetStatus() != condTrue && observed.GetStatus() == condTrue:
				c.log.Info("node status is now NodeNotReady", "node", name)
				c.recorder.Eventf(node, record.Normal, "NodeNotReady", "Node %s status is now: %s", name, "NodeNotReady")
				fallthrough
			case retry && observed.GetStatus() != condTrue:
				if err := c.markPodsNotReady(ctx, c.podsOnNode(name), name); err != nil {
					c.log.Error("unable to mark all pods NotReady on node; queuing for retry", "node", name, "err", err)
					c.nodesToRetry.Store(name, struct{}{})
					return
				}
			}
		}
		c.nodesToRetry.Delete(name)
	})

	c.handleDisruption(ctx, zoneReady, nodes)
	return nil
}

// effectiveStatuses applies effectiveReady to a pass's observed and current
// Ready conditions, and queues the node's NoSchedule pass when the
// exception starts or ends, since no node event says so.
func (c *Controller) effectiveStatuses(node *corev1.Node, observed, current *corev1.NodeCondition) (string, string) {
	name := node.GetMetadata().GetName()
	h := c.health.get(name)
	if h == nil {
		return observed.GetStatus(), current.GetStatus()
	}
	revived := c.revived(name, current, h)
	if revived != h.revived {
		h.revived = revived
		c.health.set(name, h)
		c.nodeQueue.Add(name)
	}
	o, cur := observed.GetStatus(), current.GetStatus()
	if c.revived(name, observed, h) {
		o = condTrue
	}
	if revived {
		cur = condTrue
	}
	return o, cur
}

// processTaintBaseEviction is upstream's: not-ready and unreachable swap
// at once when the node has the other; otherwise the node waits in its
// zone's queue; a Ready node loses both.
func (c *Controller) processTaintBaseEviction(ctx context.Context, node *corev1.Node, observed string) {
	name := node.GetMetadata().GetName()
	switch observed {
	case condFalse:
		if hasTaint(node, unreachableTaint) {
			if err := c.swapTaints(ctx, node, []*corev1.Taint{notReadyTaint}, []*corev1.Taint{unreachableTaint}); err != nil {
				c.log.Error("failed to instantly swap UnreachableTaint to NotReadyTaint, will try again in the next cycle", "node", name, "err", err)
			}
		} else if c.markNodeForTainting(node, condFalse) {
			c.log.Info("node is NotReady, adding it to the taint queue", "node", name)
		}
	case condUnknown:
		if hasTaint(node, notReadyTaint) {
			if err := c.swapTaints(ctx, node, []*corev1.Taint{unreachableTaint}, []*corev1.Taint{notReadyTaint}); err != nil {
				c.log.Error("failed to instantly swap NotReadyTaint to UnreachableTaint, will try again in the next cycle", "node", name, "err", err)
			}
		} else if c.markNodeForTainting(node, condUnknown) {
			c.log.Info("node is unresponsive, adding it to the taint queue", "node", name)
		}
	case condTrue:
		removed, err := c.markNodeAsReachable(ctx, node)
		if err != nil {
			c.log.Error("failed to remove taints from node, will retry in next iteration", "node", name, "err", err)
		}
		if removed {
			c.log.Info("node is healthy again, removed all taints", "node", name)
		}
	}
}

// classifyNodes is upstream's: nodes new to the controller, nodes gone,
// and known nodes whose zone has no state (it was emptied, and is back).
func (c *Controller) classifyNodes(all []*corev1.Node) (added, deleted, newZones []*corev1.Node) {
	seen := make(map[string]bool, len(all))
	for _, n := range all {
		name := n.GetMetadata().GetName()
		seen[name] = true
		if _, ok := c.knownNodes[name]; !ok {
			added = append(added, n)
		} else if _, ok := c.zoneStates[zoneKey(n)]; !ok {
			newZones = append(newZones, n)
		}
	}
	for name, n := range c.knownNodes {
		if !seen[name] {
			deleted = append(deleted, n)
		}
	}
	return added, deleted, newZones
}

// addZone gives a node's zone its state and tainting queue the first time
// the zone is seen.
func (c *Controller) addZone(n *corev1.Node) {
	zone := zoneKey(n)
	if _, ok := c.zoneStates[zone]; ok {
		return
	}
	c.zoneStates[zone] = stateInitial
	c.tainter(zone)
	c.log.Info("initializing eviction metric for zone", "zone", zone)
	c.metrics.evictionsTotal.WithLabelValues(zone).Add(0)
}
