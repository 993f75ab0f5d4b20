package deployment

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/record"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// withNew is oldRSs followed by newRS (which may be nil), in a slice of its own.
func withNew(oldRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	out := make([]*appsv1.ReplicaSet, 0, len(oldRSs)+1)
	return append(append(out, oldRSs...), newRS)
}

// syncStatusOnly updates the status of a Deployment being deleted, and
// nothing else.
func (c *Controller) syncStatusOnly(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, oldRSs, err := c.getAllReplicaSetsAndSyncRevision(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	return c.syncDeploymentStatus(ctx, withNew(oldRSs, newRS), newRS, d)
}

// sync reconciles a scaling event or a paused Deployment: it scales, never
// rolls out.
func (c *Controller) sync(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, oldRSs, err := c.getAllReplicaSetsAndSyncRevision(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	if err := c.scale(ctx, d, newRS, oldRSs); err != nil {
		return err
	}
	if d.Spec.Paused {
		if err := c.cleanupDeployment(ctx, oldRSs, d); err != nil {
			return err
		}
	}
	return c.syncDeploymentStatus(ctx, withNew(oldRSs, newRS), newRS, d)
}

// checkPausedConditions records pausing and resuming in the Progressing
// condition, so that the time spent paused does not count against the
// progress deadline.
func (c *Controller) checkPausedConditions(ctx context.Context, d *appsv1.Deployment) error {
	if !HasProgressDeadline(d) {
		return nil
	}
	cond := GetDeploymentCondition(d.Status, condProgressing)
	if cond != nil && cond.Reason == TimedOutReason {
		// A reported lack of progress stays.
		return nil
	}
	pausedCondExists := cond != nil && cond.Reason == PausedDeployReason
	switch {
	case d.Spec.Paused && !pausedCondExists:
		SetDeploymentCondition(d.Status, NewDeploymentCondition(condProgressing, conditionUnknown, PausedDeployReason, "Deployment is paused", c.now()))
	case !d.Spec.Paused && pausedCondExists:
		SetDeploymentCondition(d.Status, NewDeploymentCondition(condProgressing, conditionUnknown, ResumedDeployReason, "Deployment is resumed", c.now()))
	default:
		return nil
	}
	return c.updateStatus(ctx, d)
}

// getAllReplicaSetsAndSyncRevision is the new ReplicaSet (nil if there is
// none and create is false) and the old ones, the new one's revision raised
// above every old one and copied to the Deployment.
func (c *Controller) getAllReplicaSetsAndSyncRevision(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet, create bool) (*appsv1.ReplicaSet, []*appsv1.ReplicaSet, error) {
	_, allOldRSs := FindOldReplicaSets(d, rsList)
	newRS, err := c.getNewReplicaSet(ctx, d, rsList, allOldRSs, create)
	if err != nil {
		return nil, nil, err
	}
	return newRS, allOldRSs, nil
}

// getNewReplicaSet returns the ReplicaSet with the Deployment's template,
// its annotations synced (revision max+1, the Deployment's annotations, a
// revision history when it is re-used by a rollback), creating it when
// create is set. A ReplicaSet written here replaces its entry in rsList, so
// that the rest of the sync does not write over it from the stale cache.
func (c *Controller) getNewReplicaSet(ctx context.Context, d *appsv1.Deployment, rsList, oldRSs []*appsv1.ReplicaSet, create bool) (*appsv1.ReplicaSet, error) {
	existing := FindNewReplicaSet(d, rsList)
	newRevision := strconv.FormatInt(MaxRevision(oldRSs)+1, 10)

	if existing != nil {
		rsCopy := proto.Clone(existing).(*appsv1.ReplicaSet)
		annotationsUpdated := SetNewReplicaSetAnnotations(d, rsCopy, newRevision, true, maxRevHistoryLengthInChars)
		if annotationsUpdated || rsCopy.Spec.MinReadySeconds != d.Spec.MinReadySeconds {
			rsCopy.Spec.MinReadySeconds = d.Spec.MinReadySeconds
			out, err := c.writeReplicaSet(ctx, rsCopy)
			if err != nil {
				return nil, err
			}
			for i := range rsList {
				if rsList[i] == existing {
					rsList[i] = out
				}
			}
			return out, nil
		}
		// The revision the ReplicaSet has, set by an earlier sync, not
		// newRevision: old ReplicaSets may have been deleted since.
		if err := c.setDeploymentRevision(ctx, d, rsCopy.Metadata.Annotations[RevisionAnnotation]); err != nil {
			return nil, err
		}
		// A Deployment that never had a Progressing condition (its user
		// just started caring about progress) starts counting from now.
		if HasProgressDeadline(d) && GetDeploymentCondition(d.Status, condProgressing) == nil {
			msg := fmt.Sprintf("Found new replica set %q", rsCopy.Metadata.Name)
			SetDeploymentCondition(d.Status, NewDeploymentCondition(condProgressing, conditionTrue, FoundNewRSReason, msg, c.now()))
			if err := c.updateStatus(ctx, d); err != nil {
				return nil, err
			}
		}
		return rsCopy, nil
	}
	if !create {
		return nil, nil
	}

	tmpl := proto.Clone(d.Spec.Template).(*corev1.PodTemplateSpec)
	if tmpl == nil {
		tmpl = &corev1.PodTemplateSpec{}
	}
	hash := controller.ComputeHash(tmpl, d.Status.CollisionCount)
	if tmpl.Metadata == nil {
		tmpl.Metadata = &metav1.ObjectMeta{}
	}
	tmpl.Metadata.Labels = withLabel(tmpl.Metadata.Labels, DefaultDeploymentUniqueLabelKey, hash)
	selector := proto.Clone(d.Spec.Selector).(*metav1.LabelSelector)
	if selector == nil {
		selector = &metav1.LabelSelector{}
	}
	selector.MatchLabels = withLabel(selector.MatchLabels, DefaultDeploymentUniqueLabelKey, hash)
	zero := int32(0)
	newRS := &appsv1.ReplicaSet{
		Metadata: &metav1.ObjectMeta{
			// Deterministic, so that a create repeated from a stale cache
			// fails instead of making a second ReplicaSet.
			Name:            d.Metadata.Name + "-" + hash,
			Namespace:       d.Metadata.Namespace,
			OwnerReferences: []*metav1.OwnerReference{controller.NewControllerRef(d, deploymentKind)},
			Labels:          maps.Clone(tmpl.Metadata.Labels),
		},
		Spec: &appsv1.ReplicaSetSpec{
			Replicas:        &zero,
			MinReadySeconds: d.Spec.MinReadySeconds,
			Selector:        selector,
			Template:        tmpl,
		},
	}
	n, err := NewRSNewReplicas(d, withNew(oldRSs, newRS), newRS)
	if err != nil {
		return nil, err
	}
	newRS.Spec.Replicas = &n
	SetNewReplicaSetAnnotations(d, newRS, newRevision, false, maxRevHistoryLengthInChars)

	alreadyExists := false
	created, err := client.For[*appsv1.ReplicaSet](c.client, d.Metadata.Namespace).Create(ctx, newRS)
	switch {
	case apierrors.IsAlreadyExists(err):
		// A slow cache or a quick resync; or a hash collision.
		alreadyExists = true
		rs, rsErr := c.rsLister.Get(newRS.Metadata.Namespace, newRS.Metadata.Name)
		if rsErr != nil {
			return nil, rsErr
		}
		if ref := controller.GetControllerOf(rs); ref != nil && ref.GetUid() == d.Metadata.GetUid() &&
			EqualIgnoreHash(d.Spec.Template, rs.GetSpec().GetTemplate()) {
			created, err = rs, nil
			break
		}
		// Another template has this name: bump collisionCount, so that
		// the next sync hashes to another name.
		if d.Status.CollisionCount == nil {
			d.Status.CollisionCount = new(int32)
		}
		pre := *d.Status.CollisionCount
		*d.Status.CollisionCount++
		if dErr := c.updateStatus(ctx, d); dErr == nil {
			c.log.Info("Found a hash collision for deployment - bumping collisionCount to resolve it",
				"deployment", controller.KeyFunc(d), "oldCollisionCount", pre, "newCollisionCount", *d.Status.CollisionCount)
		}
		return nil, err
	case namespaceTerminating(err):
		// Every create fails from now on; nothing to report.
		return nil, err
	case err != nil:
		msg := fmt.Sprintf("Failed to create new replica set %q: %v", newRS.Metadata.Name, err)
		if HasProgressDeadline(d) {
			SetDeploymentCondition(d.Status, NewDeploymentCondition(condProgressing, conditionFalse, FailedRSCreateReason, msg, c.now()))
			// The create error is the one to report.
			_ = c.updateStatus(ctx, d)
		}
		c.recorder.Event(d, record.Warning, FailedRSCreateReason, msg)
		return nil, err
	}
	if !alreadyExists && n > 0 {
		c.recorder.Eventf(d, record.Normal, "ScalingReplicaSet", "Scaled up replica set %s from 0 to %d", created.Metadata.Name, n)
	}
	if err := c.setDeploymentRevision(ctx, d, newRevision); err != nil {
		return created, err
	}
	if !alreadyExists && HasProgressDeadline(d) {
		msg := fmt.Sprintf("Created new replica set %q", created.Metadata.Name)
		SetDeploymentCondition(d.Status, NewDeploymentCondition(condProgressing, conditionTrue, NewReplicaSetReason, msg, c.now()))
		return created, c.updateStatus(ctx, d)
	}
	return created, nil
}

func namespaceTerminating(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(apierrors.Message(err), "because it is being terminated")
}

// withLabel is a copy of m with key=value added.
func withLabel(m map[string]string, key, value string) map[string]string {
	out := maps.Clone(m)
	if out == nil {
		out = map[string]string{}
	}
	out[key] = value
	return out
}

// scale sizes the ReplicaSets for a scaling event or a paused Deployment.
// With several active ReplicaSets during a rolling update, the replicas to
// add or remove are spread in proportion to their sizes, the largest first:
// growing only the new one, or shrinking only the old ones, would hasten
// the rollout of a template that may be bad.
func (c *Controller) scale(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, oldRSs []*appsv1.ReplicaSet) error {
	desired := desiredReplicas(d)
	// One active (or none: the newest) ReplicaSet takes the whole count.
	if rs := FindActiveOrLatest(newRS, oldRSs); rs != nil {
		if rsReplicas(rs) == desired {
			return nil
		}
		_, _, err := c.scaleReplicaSetAndRecordEvent(ctx, rs, desired, d)
		return err
	}
	// A saturated new ReplicaSet (say, after an adoption) leaves the old
	// ones nothing.
	if IsSaturated(d, newRS) {
		for _, old := range FilterActiveReplicaSets(oldRSs) {
			if _, _, err := c.scaleReplicaSetAndRecordEvent(ctx, old, 0, d); err != nil {
				return err
			}
		}
		return nil
	}
	if !IsRollingUpdate(d) {
		return nil
	}
	allRSs := FilterActiveReplicaSets(withNew(oldRSs, newRS))
	allRSsReplicas := GetReplicaCountForReplicaSets(allRSs)
	allowedSize := int32(0)
	if desired > 0 {
		allowedSize = desired + MaxSurge(d)
	}
	toAdd := allowedSize - allRSsReplicas
	var op string
	switch {
	case toAdd > 0:
		sort.SliceStable(allRSs, bySizeNewer(allRSs))
		op = "up"
	case toAdd < 0:
		sort.SliceStable(allRSs, bySizeOlder(allRSs))
		op = "down"
	}
	added := int32(0)
	sizes := make([]int32, len(allRSs))
	for i, rs := range allRSs {
		sizes[i] = rsReplicas(rs)
		if toAdd != 0 {
			p := GetProportion(rs, d, toAdd, added)
			sizes[i] += p
			added += p
		}
	}
	for i, rs := range allRSs {
		// Rounding leftovers go to the largest.
		if i == 0 && toAdd != 0 {
			sizes[0] = max(sizes[0]+toAdd-added, 0)
		}
		if _, _, err := c.scaleReplicaSet(ctx, rs, sizes[i], d, op); err != nil {
			return err
		}
	}
	return nil
}

func (c *Controller) scaleReplicaSetAndRecordEvent(ctx context.Context, rs *appsv1.ReplicaSet, newScale int32, d *appsv1.Deployment) (bool, *appsv1.ReplicaSet, error) {
	if rsReplicas(rs) == newScale {
		return false, rs, nil
	}
	op := "down"
	if rsReplicas(rs) < newScale {
		op = "up"
	}
	return c.scaleReplicaSet(ctx, rs, newScale, d, op)
}

// scaleReplicaSet sets the ReplicaSet's replicas and its replicas
// annotations; an event tells of a change of size.
func (c *Controller) scaleReplicaSet(ctx context.Context, rs *appsv1.ReplicaSet, newScale int32, d *appsv1.Deployment, op string) (bool, *appsv1.ReplicaSet, error) {
	desired, maxReplicas := desiredReplicas(d), desiredReplicas(d)+MaxSurge(d)
	sizeNeedsUpdate := rsReplicas(rs) != newScale
	if !sizeNeedsUpdate && !ReplicasAnnotationsNeedUpdate(rs, desired, maxReplicas) {
		return false, rs, nil
	}
	oldScale := rsReplicas(rs)
	rsCopy := proto.Clone(rs).(*appsv1.ReplicaSet)
	rsCopy.Spec.Replicas = &newScale
	SetReplicasAnnotations(rsCopy, desired, maxReplicas)
	out, err := c.writeReplicaSet(ctx, rsCopy)
	if err != nil {
		return false, rs, err
	}
	if sizeNeedsUpdate {
		c.recorder.Eventf(d, record.Normal, "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d", op, out.Metadata.Name, oldScale, newScale)
	}
	return sizeNeedsUpdate, out, nil
}

// cleanupDeployment deletes the oldest old ReplicaSets beyond
// revisionHistoryLimit, those scaled to zero and settled only.
func (c *Controller) cleanupDeployment(ctx context.Context, oldRSs []*appsv1.ReplicaSet, d *appsv1.Deployment) error {
	limit, ok := revisionHistoryLimit(d)
	if !ok {
		return nil
	}
	var cleanable []*appsv1.ReplicaSet
	for _, rs := range oldRSs {
		if rs != nil && rs.GetMetadata().GetDeletionTimestamp() == nil {
			cleanable = append(cleanable, rs)
		}
	}
	diff := len(cleanable) - int(limit)
	if diff <= 0 {
		return nil
	}
	sort.SliceStable(cleanable, byRevision(cleanable))
	for _, rs := range cleanable[:diff] {
		st := rs.GetStatus()
		if st.GetReplicas() != 0 || rsReplicas(rs) != 0 || rs.Metadata.GetGeneration() > st.GetObservedGeneration() {
			continue
		}
		c.log.Debug("Trying to cleanup replica set for deployment", "replicaSet", controller.KeyFunc(rs), "deployment", controller.KeyFunc(d))
		// Upstream deletes unconditionally; the preconditions make sure it
		// is the ReplicaSet the cache showed at zero, not one scaled up since.
		uid, rv := rs.Metadata.GetUid(), rs.Metadata.GetResourceVersion()
		_, err := client.For[*appsv1.ReplicaSet](c.client, rs.Metadata.GetNamespace()).Delete(ctx, rs.Metadata.GetName(),
			client.DeleteOptions{Preconditions: &apipb.Preconditions{Uid: &uid, ResourceVersion: &rv}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			// Stop at the first failure rather than hammer an apiserver
			// that may be overloaded.
			return err
		}
	}
	return nil
}

// syncDeploymentStatus writes the status computed from the ReplicaSets,
// when it changed.
func (c *Controller) syncDeploymentStatus(ctx context.Context, allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) error {
	newStatus := c.calculateStatus(allRSs, newRS, d)
	if proto.Equal(d.Status, newStatus) {
		return nil
	}
	d.Status = newStatus
	return c.updateStatus(ctx, d)
}

// calculateStatus is the Deployment's status from its ReplicaSets: counts,
// the Available condition, the other conditions as they were.
func (c *Controller) calculateStatus(allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) *appsv1.DeploymentStatus {
	available := GetAvailableReplicaCountForReplicaSets(allRSs)
	// More available than desired (scaling down) is no unavailability.
	unavailable := max(GetReplicaCountForReplicaSets(allRSs)-available, 0)
	st := &appsv1.DeploymentStatus{
		ObservedGeneration:  d.Metadata.GetGeneration(),
		Replicas:            GetActualReplicaCountForReplicaSets(allRSs),
		UpdatedReplicas:     GetActualReplicaCountForReplicaSets([]*appsv1.ReplicaSet{newRS}),
		ReadyReplicas:       GetReadyReplicaCountForReplicaSets(allRSs),
		AvailableReplicas:   available,
		UnavailableReplicas: unavailable,
		TerminatingReplicas: GetTerminatingReplicaCountForReplicaSets(allRSs),
		CollisionCount:      d.Status.CollisionCount,
		// The slice is ours; SetDeploymentCondition replaces entries and
		// never modifies one, so d's conditions stay as they are.
		Conditions: append([]*appsv1.DeploymentCondition(nil), d.Status.GetConditions()...),
	}
	if available >= desiredReplicas(d)-MaxUnavailable(d) {
		SetDeploymentCondition(st, NewDeploymentCondition(condAvailable, conditionTrue, MinimumReplicasAvailable, "Deployment has minimum availability.", c.now()))
	} else {
		SetDeploymentCondition(st, NewDeploymentCondition(condAvailable, conditionFalse, MinimumReplicasUnavailable, "Deployment does not have minimum availability.", c.now()))
	}
	return st
}

// isScalingEvent reports an active ReplicaSet sized for another
// spec.replicas than the Deployment's: the Deployment was scaled.
func (c *Controller) isScalingEvent(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) (bool, error) {
	newRS, oldRSs, err := c.getAllReplicaSetsAndSyncRevision(ctx, d, rsList, false)
	if err != nil {
		return false, err
	}
	for _, rs := range FilterActiveReplicaSets(withNew(oldRSs, newRS)) {
		desired, ok := GetDesiredReplicasAnnotation(rs)
		if ok && desired != desiredReplicas(d) {
			return true, nil
		}
	}
	return false, nil
}
