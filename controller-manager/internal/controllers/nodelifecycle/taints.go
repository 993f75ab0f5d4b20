package nodelifecycle

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// The well-known node taints, upstream's keys.
const (
	taintNodeNotReady           = "node.kubernetes.io/not-ready"
	taintNodeUnreachable        = "node.kubernetes.io/unreachable"
	taintNodeUnschedulable      = "node.kubernetes.io/unschedulable"
	taintNodeMemoryPressure     = "node.kubernetes.io/memory-pressure"
	taintNodeDiskPressure       = "node.kubernetes.io/disk-pressure"
	taintNodeNetworkUnavailable = "node.kubernetes.io/network-unavailable"
	taintNodePIDPressure        = "node.kubernetes.io/pid-pressure"

	effectNoSchedule = "NoSchedule"
	effectNoExecute  = "NoExecute"
)

var (
	// unreachableTaint is upstream's UnreachableTaintTemplate.
	unreachableTaint = &corev1.Taint{Key: taintNodeUnreachable, Effect: effectNoExecute}
	// notReadyTaint is upstream's NotReadyTaintTemplate.
	notReadyTaint = &corev1.Taint{Key: taintNodeNotReady, Effect: effectNoExecute}

	// conditionTaints maps a condition type and status to the NoSchedule
	// taint it calls for (upstream's nodeConditionToTaintKeyStatusMap).
	conditionTaints = map[string]map[string]string{
		"Ready":              {condFalse: taintNodeNotReady, condUnknown: taintNodeUnreachable},
		"MemoryPressure":     {condTrue: taintNodeMemoryPressure},
		"DiskPressure":       {condTrue: taintNodeDiskPressure},
		"NetworkUnavailable": {condTrue: taintNodeNetworkUnavailable},
		"PIDPressure":        {condTrue: taintNodePIDPressure},
	}
	// noScheduleKeys are the NoSchedule taints this controller owns.
	noScheduleKeys = map[string]bool{
		taintNodeNotReady: true, taintNodeUnreachable: true, taintNodeMemoryPressure: true, taintNodeDiskPressure: true,
		taintNodeNetworkUnavailable: true, taintNodePIDPressure: true, taintNodeUnschedulable: true,
	}
)

// matchTaint is upstream's Taint.MatchTaint: a node has at most one taint
// of a key and effect.
func matchTaint(a, b *corev1.Taint) bool {
	return a.GetKey() == b.GetKey() && a.GetEffect() == b.GetEffect()
}

func hasTaint(n *corev1.Node, t *corev1.Taint) bool {
	for _, have := range n.GetSpec().GetTaints() {
		if matchTaint(have, t) {
			return true
		}
	}
	return false
}

// swappedTaints is taints without those matching remove and with add
// (stamped with timeAdded, as upstream's SwapNodeControllerTaint); a taint
// already there with the same value keeps its timeAdded, which the
// eviction loop counts tolerationSeconds from. changed is false when there
// is nothing to write.
func swappedTaints(taints, add, remove []*corev1.Taint, now time.Time) (out []*corev1.Taint, changed bool) {
	for _, t := range taints {
		drop := false
		for _, r := range remove {
			if matchTaint(t, r) {
				drop = true
			}
		}
		for _, a := range add {
			if matchTaint(t, a) && t.GetValue() != a.GetValue() {
				drop = true // replaced below
			}
		}
		if drop {
			changed = true
			continue
		}
		out = append(out, t)
	}
	for _, a := range add {
		present := false
		for _, t := range out {
			if matchTaint(t, a) {
				present = true
			}
		}
		if !present {
			t := proto.Clone(a).(*corev1.Taint)
			t.TimeAdded = metav1.NewTime(now)
			out = append(out, t)
			changed = true
		}
	}
	return out, changed
}

// swapTaints adds and removes node taints in one Update guarded by the
// node's resourceVersion: first against the cached node, then, on
// conflict, against a fresh read.
func (c *Controller) swapTaints(ctx context.Context, node *corev1.Node, add, remove []*corev1.Taint) error {
	nodes := client.For[*corev1.Node](c.client, "")
	n, first := node, true
	return controller.RetryOnConflict(func() error {
		if !first {
			var err error
			if n, err = nodes.Get(ctx, node.GetMetadata().GetName()); err != nil {
				return err
			}
		}
		first = false
		taints, changed := swappedTaints(n.GetSpec().GetTaints(), add, remove, c.now())
		if !changed {
			return nil
		}
		u := proto.Clone(n).(*corev1.Node)
		if u.Spec == nil {
			u.Spec = &corev1.NodeSpec{}
		}
		u.Spec.Taints = taints
		_, err := nodes.Update(ctx, u)
		if err == nil {
			c.log.Debug("swapped node taints", "node", u.GetMetadata().GetName(), "added", add, "removed", remove)
		}
		return err
	})
}

// tainter is a zone's NoExecute tainting queue, made at the zone's first
// sight with the normal rate.
func (c *Controller) tainter(zone string) *rateLimitedTimedQueue {
	c.tainterMu.Lock()
	defer c.tainterMu.Unlock()
	q := c.tainters[zone]
	if q == nil {
		q = newRateLimitedTimedQueue(c.evictionQPS, c.now)
		c.tainters[zone] = q
	}
	return q
}

// markNodeForTainting is upstream's: a node not yet carrying the taint of
// its status is queued afresh, since a value is processed only once until
// removed.
func (c *Controller) markNodeForTainting(node *corev1.Node, status string) bool {
	q := c.tainter(zoneKey(node))
	name := node.GetMetadata().GetName()
	if status == condFalse && !hasTaint(node, notReadyTaint) || status == condUnknown && !hasTaint(node, unreachableTaint) {
		q.remove(name)
	}
	return q.add(name, node.GetMetadata().GetUid())
}

// markNodeAsReachable takes the NoExecute taints off a node and out of its
// zone's queue; true if it was queued or tainted.
func (c *Controller) markNodeAsReachable(ctx context.Context, node *corev1.Node) (bool, error) {
	if err := c.swapTaints(ctx, node, nil, []*corev1.Taint{unreachableTaint, notReadyTaint}); err != nil {
		return false, err
	}
	return c.tainter(zoneKey(node)).remove(node.GetMetadata().GetName()), nil
}

// doNoExecuteTaintingPass is upstream's: each zone's queue is tried at the
// zone's rate, and each node tried gets the NoExecute taint of its Ready
// status as the cache has it then, the other one removed (they are
// exclusive, as Ready's statuses are).
func (c *Controller) doNoExecuteTaintingPass(ctx context.Context) {
	c.tainterMu.Lock()
	queues := make([]*rateLimitedTimedQueue, 0, len(c.tainters))
	for _, q := range c.tainters {
		queues = append(queues, q)
	}
	c.tainterMu.Unlock()
	for _, q := range queues {
		q.try(func(v timedValue) (bool, time.Duration) {
			node, err := c.nodes.Get("", v.value)
			if apierrors.IsNotFound(err) {
				c.log.Info("node no longer present in the cache", "node", v.value)
				return true, 0
			}
			if err != nil {
				return false, 50 * time.Millisecond
			}
			cond := readyCondition(node.GetStatus())
			if cond == nil {
				return false, 50 * time.Millisecond
			}
			var add, opposite *corev1.Taint
			switch c.effectiveReady(node, cond) {
			case condFalse:
				add, opposite = notReadyTaint, unreachableTaint
			case condUnknown:
				add, opposite = unreachableTaint, notReadyTaint
			default:
				c.log.Debug("node was in a taint queue, but it's ready now; ignoring taint request", "node", v.value)
				return true, 0
			}
			if err := c.swapTaints(ctx, node, []*corev1.Taint{add}, []*corev1.Taint{opposite}); err != nil {
				c.log.Error("failed to taint node", "node", v.value, "taint", add.GetKey(), "err", err)
				return false, 0
			}
			c.metrics.evictionsTotal.WithLabelValues(zoneKey(node)).Inc()
			return true, 0
		})
	}
}

// doNoScheduleTaintingPass is upstream's: the node's NoSchedule taints
// this controller owns follow its conditions and spec.unschedulable, set
// without rate limit since they only keep new pods away.
func (c *Controller) doNoScheduleTaintingPass(ctx context.Context, name string) error {
	node, err := c.nodes.Get("", name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var want []*corev1.Taint
	for _, cond := range node.GetStatus().GetConditions() {
		status := cond.GetStatus()
		if cond.GetType() == "Ready" {
			status = c.effectiveReady(node, cond)
		}
		if key, ok := conditionTaints[cond.GetType()][status]; ok {
			want = append(want, &corev1.Taint{Key: key, Effect: effectNoSchedule})
		}
	}
	if node.GetSpec().GetUnschedulable() {
		want = append(want, &corev1.Taint{Key: taintNodeUnschedulable, Effect: effectNoSchedule})
	}
	var stale []*corev1.Taint
	for _, t := range node.GetSpec().GetTaints() {
		if t.GetEffect() != effectNoSchedule || !noScheduleKeys[t.GetKey()] {
			continue
		}
		wanted := false
		for _, w := range want {
			if matchTaint(t, w) {
				wanted = true
			}
		}
		if !wanted {
			stale = append(stale, t)
		}
	}
	if _, changed := swappedTaints(node.GetSpec().GetTaints(), want, stale, c.now()); !changed {
		return nil
	}
	return c.swapTaints(ctx, node, want, stale)
}
