package daemonset

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"sort"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/controller-manager/internal/controllers/history"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// controlledHistories are the DaemonSet's revisions after adoption and
// release.
func (c *Controller) controlledHistories(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector) ([]*appsv1.ControllerRevision, error) {
	all := c.crLister.Namespace(ds.Metadata.GetNamespace()).List(labels.Everything())
	m := controller.NewRefManager(c.client, ds, dsKind, sel, nil)
	return controller.Claim(ctx, m, all)
}

// match is upstream's Match: the revision holds the DaemonSet's template.
func match(ds *appsv1.DaemonSet, cr *appsv1.ControllerRevision) (bool, error) {
	patch, err := history.TemplatePatch(ds.Spec.GetTemplate())
	if err != nil {
		return false, err
	}
	return bytes.Equal(patch, cr.GetData().GetRaw()), nil
}

func (c *Controller) revisions(ns string) *client.Typed[*appsv1.ControllerRevision] {
	return client.For[*appsv1.ControllerRevision](c.client, ns)
}

// constructHistory is upstream's: the revision of the current template
// (made, or renumbered to be the newest) and the others.
func (c *Controller) constructHistory(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector) (*appsv1.ControllerRevision, []*appsv1.ControllerRevision, error) {
	all, err := c.controlledHistories(ctx, ds, sel)
	if err != nil {
		return nil, nil, err
	}
	var current, old []*appsv1.ControllerRevision
	for _, h := range all {
		if _, ok := h.GetMetadata().GetLabels()[history.ControllerRevisionHashLabel]; !ok {
			// Named by its hash: the name is the label upstream adds.
			up := proto.Clone(h).(*appsv1.ControllerRevision)
			if up.Metadata.Labels == nil {
				up.Metadata.Labels = map[string]string{}
			}
			up.Metadata.Labels[history.ControllerRevisionHashLabel] = up.Metadata.GetName()
			if h, err = c.revisions(ds.Metadata.GetNamespace()).Update(ctx, up); err != nil {
				return nil, nil, err
			}
		}
		ok, err := match(ds, h)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			current = append(current, h)
		} else {
			old = append(old, h)
		}
	}
	next := history.MaxRevision(old) + 1
	var cur *appsv1.ControllerRevision
	switch len(current) {
	case 0:
		cur, err = c.snapshot(ctx, ds, next)
		if err != nil {
			return nil, nil, err
		}
	default:
		cur, err = c.dedupCurHistories(ctx, ds, sel, current)
		if err != nil {
			return nil, nil, err
		}
		if cur.GetRevision() < next {
			if cur, err = history.New(c.client, c.crLister).UpdateRevision(ctx, cur, next); err != nil {
				return nil, nil, err
			}
		}
	}
	return cur, old, nil
}

// snapshot is upstream's: a revision named "<ds>-<template hash>" holding
// the template, with the DaemonSet's annotations (its change-cause); a name
// already taken by other data bumps status.collisionCount and fails the
// sync, which the status update then retries with the new name.
func (c *Controller) snapshot(ctx context.Context, ds *appsv1.DaemonSet, revision int64) (*appsv1.ControllerRevision, error) {
	patch, err := history.TemplatePatch(ds.Spec.GetTemplate())
	if err != nil {
		return nil, err
	}
	hash := controller.ComputeHash(ds.Spec.GetTemplate(), collisionCount(ds))
	name := history.ControllerRevisionName(ds.Metadata.GetName(), hash)
	l := maps.Clone(ds.Spec.GetTemplate().GetMetadata().GetLabels())
	if l == nil {
		l = map[string]string{}
	}
	l[history.ControllerRevisionHashLabel] = hash
	cr := &appsv1.ControllerRevision{
		Metadata: &metav1.ObjectMeta{
			Name:            name,
			Namespace:       ds.Metadata.GetNamespace(),
			Labels:          l,
			Annotations:     maps.Clone(ds.Metadata.GetAnnotations()),
			OwnerReferences: []*metav1.OwnerReference{controller.NewControllerRef(ds, dsKind)},
		},
		Data:     &metav1.RawExtension{Raw: patch},
		Revision: revision,
	}
	api := c.revisions(ds.Metadata.GetNamespace())
	created, err := api.Create(ctx, cr)
	if !apierrors.IsAlreadyExists(err) {
		return created, err
	}
	existing, gerr := api.Get(ctx, name)
	if gerr != nil {
		return nil, gerr
	}
	if ok, _ := match(ds, existing); ok {
		return existing, nil
	}
	dsAPI := client.For[*appsv1.DaemonSet](c.client, ds.Metadata.GetNamespace())
	fresh, gerr := dsAPI.Get(ctx, ds.Metadata.GetName())
	if gerr != nil {
		return nil, gerr
	}
	if !proto.Equal(wrap(collisionCount(fresh)), wrap(collisionCount(ds))) {
		return nil, fmt.Errorf("found a stale collision count (%v, expected %v) of DaemonSet %q while processing; will retry until it is updated",
			ds.GetStatus().GetCollisionCount(), fresh.GetStatus().GetCollisionCount(), ds.Metadata.GetName())
	}
	if fresh.Status == nil {
		fresh.Status = &appsv1.DaemonSetStatus{}
	}
	n := fresh.Status.GetCollisionCount() + 1
	fresh.Status.CollisionCount = &n
	if _, uerr := dsAPI.UpdateStatus(ctx, fresh); uerr != nil {
		return nil, uerr
	}
	return nil, err
}

// wrap makes an optional count comparable with proto.Equal.
func wrap(p *int32) *metav1.IntOrString {
	if p == nil {
		return nil
	}
	return metav1.IntOrStringFromInt(*p)
}

// dedupCurHistories is upstream's: of several revisions holding the current
// template, keep the newest, move the others' pods onto its hash and delete
// them.
func (c *Controller) dedupCurHistories(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector, current []*appsv1.ControllerRevision) (*appsv1.ControllerRevision, error) {
	if len(current) == 1 {
		return current[0], nil
	}
	keep := current[0]
	for _, h := range current {
		if h.GetRevision() >= keep.GetRevision() {
			keep = h
		}
	}
	keepHash := keep.GetMetadata().GetLabels()[history.ControllerRevisionHashLabel]
	pods, err := c.daemonPods(ctx, ds, sel)
	if err != nil {
		return nil, err
	}
	for _, h := range current {
		if h.GetMetadata().GetName() == keep.GetMetadata().GetName() {
			continue
		}
		hash := h.GetMetadata().GetLabels()[history.ControllerRevisionHashLabel]
		for _, p := range pods {
			if p.GetMetadata().GetLabels()[history.ControllerRevisionHashLabel] != hash {
				continue
			}
			up := proto.Clone(p).(*corev1.Pod)
			up.Metadata.Labels[history.ControllerRevisionHashLabel] = keepHash
			if _, err := client.For[*corev1.Pod](c.client, p.GetMetadata().GetNamespace()).Update(ctx, up); err != nil {
				return nil, err
			}
		}
		if err := history.New(c.client, c.crLister).Delete(ctx, h); err != nil {
			return nil, err
		}
	}
	return keep, nil
}

// cleanupHistory is upstream's: delete the oldest old revisions beyond
// revisionHistoryLimit (default 10) that no pod still runs.
func (c *Controller) cleanupHistory(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector, old []*appsv1.ControllerRevision) error {
	limit := int32(10)
	if ds.Spec.RevisionHistoryLimit != nil {
		limit = ds.Spec.GetRevisionHistoryLimit()
	}
	toKill := len(old) - int(limit)
	if toKill <= 0 {
		return nil
	}
	byNode, err := c.nodesToDaemonPods(ctx, ds, sel, true)
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, pods := range byNode {
		for _, p := range pods {
			if h := p.GetMetadata().GetLabels()[history.ControllerRevisionHashLabel]; h != "" {
				live[h] = true
			}
		}
	}
	old = append([]*appsv1.ControllerRevision(nil), old...)
	sort.SliceStable(old, func(i, j int) bool { return old[i].GetRevision() < old[j].GetRevision() })
	h := history.New(c.client, c.crLister)
	for _, r := range old {
		if toKill <= 0 {
			break
		}
		if live[r.GetMetadata().GetLabels()[history.ControllerRevisionHashLabel]] {
			continue
		}
		if err := h.Delete(ctx, r); err != nil {
			return err
		}
		toKill--
	}
	return nil
}

// findUpdatedPodsOnNode is upstream's: the node's one new and one old live
// pod, or !ok when it has more of either (the manage step prunes those).
func findUpdatedPodsOnNode(ds *appsv1.DaemonSet, pods []*corev1.Pod, hash string) (newPod, oldPod *corev1.Pod, ok bool) {
	for _, p := range pods {
		if p.GetMetadata().GetDeletionTimestamp() != nil {
			continue
		}
		if isPodUpdated(ds, p, hash) {
			if newPod != nil {
				return nil, nil, false
			}
			newPod = p
		} else {
			if oldPod != nil {
				return nil, nil, false
			}
			oldPod = p
		}
	}
	return newPod, oldPod, true
}

// updatedDesiredNodeCounts is upstream's: maxSurge and maxUnavailable
// resolved against the number of eligible nodes (percentages rounded up; 0
// and 0 means maxUnavailable 1), and an entry in byNode for every eligible
// node.
func updatedDesiredNodeCounts(ds *appsv1.DaemonSet, nodes []*corev1.Node, byNode map[string][]*corev1.Pod) (maxSurge, maxUnavailable, desired int, err error) {
	spec := newPodSpec(ds.Spec.GetTemplate())
	for _, n := range nodes {
		if run, _ := nodeShouldRunDaemonPod(n, spec); !run {
			continue
		}
		desired++
		if _, ok := byNode[n.GetMetadata().GetName()]; !ok {
			byNode[n.GetMetadata().GetName()] = nil
		}
	}
	ru := ds.Spec.GetUpdateStrategy().GetRollingUpdate()
	if mu := ru.GetMaxUnavailable(); mu != nil {
		if maxUnavailable, err = mu.ScaledValue(desired, true); err != nil {
			return 0, 0, 0, fmt.Errorf("invalid value for MaxUnavailable: %w", err)
		}
	} else {
		maxUnavailable = 1
	}
	if ms := ru.GetMaxSurge(); ms != nil {
		if maxSurge, err = ms.ScaledValue(desired, true); err != nil {
			return 0, 0, 0, fmt.Errorf("invalid value for MaxSurge: %w", err)
		}
	}
	if desired > 0 && maxUnavailable == 0 && maxSurge == 0 {
		maxUnavailable = 1
	}
	return maxSurge, maxUnavailable, desired, nil
}

// rollingUpdate is upstream's. Without surge it deletes old pods (the
// unavailable ones first, then available ones while fewer than
// maxUnavailable pods are unavailable) and lets the manage step replace
// them. With surge it creates a new pod beside an old one (at once where the
// old one is unavailable, else on at most maxSurge nodes at a time) and
// deletes the old pod once the new one is available.
func (c *Controller) rollingUpdate(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector, nodes []*corev1.Node, hash string) error {
	byNode, err := c.nodesToDaemonPods(ctx, ds, sel, false)
	if err != nil {
		return fmt.Errorf("couldn't get node to daemon pod mapping for daemon set %q: %w", ds.Metadata.GetName(), err)
	}
	maxSurge, maxUnavailable, desired, err := updatedDesiredNodeCounts(ds, nodes, byNode)
	if err != nil {
		return err
	}
	now := c.now()
	mrs := ds.Spec.GetMinReadySeconds()
	names := make([]string, 0, len(byNode))
	for n := range byNode {
		names = append(names, n)
	}
	sort.Strings(names) // deterministic choices

	if maxSurge == 0 {
		var unavailable int
		var replace, candidates []string
		for _, node := range names {
			newPod, oldPod, ok := findUpdatedPodsOnNode(ds, byNode[node], hash)
			if !ok {
				unavailable++
				continue
			}
			switch {
			case oldPod == nil && newPod == nil, oldPod != nil && newPod != nil:
				unavailable++
			case newPod != nil:
				if !isPodAvailable(newPod, mrs, now) {
					unavailable++
				}
			default:
				switch {
				case !isPodAvailable(oldPod, mrs, now):
					replace = append(replace, oldPod.GetMetadata().GetName())
					unavailable++
				case unavailable >= maxUnavailable:
				default:
					candidates = append(candidates, oldPod.GetMetadata().GetName())
				}
			}
		}
		remaining := min(max(maxUnavailable-unavailable, 0), len(candidates))
		return c.syncNodes(ctx, ds, append(replace, candidates[:remaining]...), nil, hash)
	}

	spec := newPodSpec(ds.Spec.GetTemplate())
	var toDelete, shouldNotRun, candidateNodes, allowedNodes []string
	var surge, available int
	for _, node := range names {
		newPod, oldPod, ok := findUpdatedPodsOnNode(ds, byNode[node], hash)
		if !ok {
			surge++
			continue
		}
		if oldPod != nil {
			if isPodAvailable(oldPod, mrs, now) {
				available++
			}
		} else if newPod != nil && isPodAvailable(newPod, mrs, now) {
			available++
		}
		switch {
		case oldPod == nil:
		case newPod == nil:
			n, err := c.nodeLister.Get("", node)
			if err != nil {
				return fmt.Errorf("couldn't get node for nodeName %q: %w", node, err)
			}
			run, _ := nodeShouldRunDaemonPod(n, spec)
			switch {
			case !isPodAvailable(oldPod, mrs, now):
				if !run {
					toDelete = append(toDelete, oldPod.GetMetadata().GetName())
					continue
				}
				allowedNodes = append(allowedNodes, node)
			case !run:
				shouldNotRun = append(shouldNotRun, oldPod.GetMetadata().GetName())
			case surge >= maxSurge:
			default:
				candidateNodes = append(candidateNodes, node)
			}
		default:
			if !isPodAvailable(newPod, mrs, now) {
				surge++
				continue
			}
			toDelete = append(toDelete, oldPod.GetMetadata().GetName())
		}
	}
	// With surge the owner expects full availability: a pod on a node that
	// no longer qualifies goes only once enough pods elsewhere are available.
	if deletable := min(available-desired, len(shouldNotRun)); deletable > 0 {
		toDelete = append(toDelete, shouldNotRun[:deletable]...)
	}
	remaining := min(max(maxSurge-surge, 0), len(candidateNodes))
	return c.syncNodes(ctx, ds, toDelete, append(allowedNodes, candidateNodes[:remaining]...), hash)
}

func collisionCount(ds *appsv1.DaemonSet) *int32 {
	if ds.GetStatus() == nil {
		return nil
	}
	return ds.Status.CollisionCount
}
