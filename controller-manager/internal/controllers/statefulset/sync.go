package statefulset

import (
	"context"
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers/history"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// reconcile is upstream's sync → UpdateStatefulSet.
func (c *Controller) reconcile(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	cached, err := c.setLister.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	set := proto.Clone(cached).(*appsv1.StatefulSet)
	if set.Spec == nil {
		set.Spec = &appsv1.StatefulSetSpec{}
	}
	sel, err := metav1.LabelSelectorAsSelector(set.Spec.GetSelector())
	if err != nil || sel.Empty() {
		c.log.Error("Invalid or empty selector", "statefulset", key)
		return nil
	}
	pods, err := controller.Claim(ctx, controller.NewRefManager(c.client, set, setKind, sel, nil),
		c.podLister.Namespace(ns).List(labels.Everything()), func(p *corev1.Pod) bool { return isMemberOf(set, p) })
	if err != nil {
		return err
	}
	revs, err := controller.Claim(ctx, controller.NewRefManager(c.client, set, setKind, sel, nil),
		c.crLister.Namespace(ns).List(labels.Everything()))
	if err != nil {
		return err
	}
	history.SortControllerRevisions(revs)
	current, update, collisions, err := c.revisions(ctx, set, revs)
	if err != nil {
		return err
	}
	st, err := c.updateSet(ctx, set, current, update, collisions, pods)
	if st != nil {
		if serr := c.writeStatus(ctx, set, st); serr != nil && err == nil {
			err = serr
		}
	}
	if err != nil {
		return err
	}
	return c.truncateHistory(ctx, set, pods, revs, current, update)
}

// newRevision is the revision of the set's template.
func newRevision(set *appsv1.StatefulSet, revision int64, collisions *int32) (*appsv1.ControllerRevision, error) {
	patch, err := history.TemplatePatch(set.Spec.GetTemplate())
	if err != nil {
		return nil, err
	}
	cr := history.NewControllerRevision(set, setKind, set.Spec.GetTemplate().GetMetadata().GetLabels(), patch, revision, collisions)
	cr.Metadata.Annotations = set.Metadata.GetAnnotations()
	return cr, nil
}

// applyRevision is upstream's ApplyRevision: the set with the revision's
// template.
func applyRevision(set *appsv1.StatefulSet, rev *appsv1.ControllerRevision) (*appsv1.StatefulSet, error) {
	t, err := history.TemplateFromPatch(rev.GetData().GetRaw())
	if err != nil {
		return nil, err
	}
	out := proto.Clone(set).(*appsv1.StatefulSet)
	out.Spec.Template = t
	return out, nil
}

// revisions is upstream's getStatefulSetRevisions: the current revision
// (status.currentRevision, or the update one) and the update revision (an
// equal existing one reused and renumbered, or a new one).
func (c *Controller) revisions(ctx context.Context, set *appsv1.StatefulSet, revs []*appsv1.ControllerRevision) (current, update *appsv1.ControllerRevision, collisions int32, err error) {
	if set.GetStatus() != nil && set.Status.CollisionCount != nil {
		collisions = *set.Status.CollisionCount
	}
	update, err = newRevision(set, history.NextRevision(revs), &collisions)
	if err != nil {
		return nil, nil, 0, err
	}
	equal := history.FindEqualRevisions(revs, update)
	switch {
	case len(equal) > 0 && equal[len(equal)-1] == revs[len(revs)-1]:
		update = revs[len(revs)-1]
	case len(equal) > 0:
		if update, err = c.history.UpdateRevision(ctx, equal[len(equal)-1], update.GetRevision()); err != nil {
			return nil, nil, 0, err
		}
	default:
		if update, err = c.history.Create(ctx, set, update, &collisions); err != nil {
			return nil, nil, 0, err
		}
	}
	current = update
	for _, r := range revs {
		if r.GetMetadata().GetName() == set.GetStatus().GetCurrentRevision() {
			current = r
		}
	}
	return current, update, collisions, nil
}

// updateSet is upstream's updateStatefulSet: it makes at most the moves its
// pod management policy allows and returns the status they leave.
func (c *Controller) updateSet(ctx context.Context, set *appsv1.StatefulSet, currentRev, updateRev *appsv1.ControllerRevision, collisions int32, pods []*corev1.Pod) (*appsv1.StatefulSetStatus, error) {
	currentSet, err := applyRevision(set, currentRev)
	if err != nil {
		return nil, err
	}
	updateSet, err := applyRevision(set, updateRev)
	if err != nil {
		return nil, err
	}
	now := c.now()
	mrs := set.Spec.GetMinReadySeconds()
	st := &appsv1.StatefulSetStatus{
		ObservedGeneration: set.Metadata.GetGeneration(),
		CurrentRevision:    currentRev.GetMetadata().GetName(),
		UpdateRevision:     updateRev.GetMetadata().GetName(),
		CollisionCount:     &collisions,
	}
	n, start := replicaCount(set), startOrdinal(set)
	replicas := make([]*corev1.Pod, n)
	var condemned []*corev1.Pod
	for _, p := range pods {
		st.Replicas++
		if isRunningAndReady(p) {
			st.ReadyReplicas++
			if isRunningAndAvailable(p, mrs, now) {
				st.AvailableReplicas++
			}
		}
		if !isTerminating(p) {
			if podRevision(p) == currentRev.GetMetadata().GetName() {
				st.CurrentReplicas++
			}
			if podRevision(p) == updateRev.GetMetadata().GetName() {
				st.UpdatedReplicas++
			}
		}
		switch o := ordinal(p); {
		case o >= start && o < start+n:
			replicas[o-start] = p
		case o >= 0:
			condemned = append(condemned, p)
		}
	}
	currentReplicas := int(set.GetStatus().GetCurrentReplicas())
	for i := range replicas {
		if replicas[i] == nil {
			replicas[i] = newVersionedPod(currentSet, updateSet, currentRev.GetMetadata().GetName(), updateRev.GetMetadata().GetName(), start+i, currentReplicas)
		}
	}
	// Highest ordinal first.
	sort.SliceStable(condemned, func(i, j int) bool { return ordinal(condemned[i]) > ordinal(condemned[j]) })
	var firstUnhealthy *corev1.Pod
	for _, p := range append(append([]*corev1.Pod(nil), replicas...), condemned...) {
		if p.GetMetadata().GetUid() != "" && !isHealthy(p) {
			firstUnhealthy = p
			break
		}
	}
	if set.Metadata.GetDeletionTimestamp() != nil {
		return st, nil
	}
	monotonic := set.Spec.GetPodManagementPolicy() != "Parallel"

	for _, p := range replicas {
		exists := p.GetMetadata().GetUid() != ""
		switch {
		case exists && (isFailed(p) || isSucceeded(p)):
			// Replaced once it is gone from the store.
			if !isTerminating(p) {
				c.log.Info("Pod of StatefulSet has terminated, recreating", "pod", p.Metadata.GetName(), "phase", p.GetStatus().GetPhase())
				if err := c.deletePod(ctx, set, p); err != nil {
					return st, err
				}
				st.Replicas--
				switch podRevision(p) {
				case currentRev.GetMetadata().GetName():
					st.CurrentReplicas--
				case updateRev.GetMetadata().GetName():
					st.UpdatedReplicas--
				}
			}
			if monotonic {
				return st, nil
			}
			continue
		case !exists:
			if err := c.createPod(ctx, set, p); err != nil {
				return st, err
			}
			st.Replicas++
			switch podRevision(p) {
			case currentRev.GetMetadata().GetName():
				st.CurrentReplicas++
			case updateRev.GetMetadata().GetName():
				st.UpdatedReplicas++
			}
			if monotonic {
				return st, nil
			}
			continue
		}
		if isTerminating(p) || !isRunningAndAvailable(p, mrs, now) {
			if monotonic {
				c.log.Debug("StatefulSet is waiting for Pod", "pod", p.Metadata.GetName())
				return st, nil
			}
			if isTerminating(p) {
				continue
			}
		}
		if err := c.fixPod(ctx, set, p); err != nil {
			return st, err
		}
	}
	// Condemned claims carry the whenScaled policy before their pod goes.
	for _, p := range condemned {
		if err := c.ensureClaims(ctx, set, p, false); err != nil {
			return st, err
		}
	}
	for _, p := range condemned {
		if isTerminating(p) {
			if monotonic {
				return st, nil
			}
			continue
		}
		if monotonic && p != firstUnhealthy && !isRunningAndAvailable(p, mrs, now) {
			return st, nil
		}
		if err := c.deletePod(ctx, set, p); err != nil {
			return st, err
		}
		if podRevision(p) == currentRev.GetMetadata().GetName() {
			st.CurrentReplicas--
		}
		if podRevision(p) == updateRev.GetMetadata().GetName() {
			st.UpdatedReplicas--
		}
		if monotonic {
			return st, nil
		}
	}

	strategy := set.Spec.GetUpdateStrategy()
	if strategy.GetType() == "OnDelete" {
		return st, nil
	}
	updateMin := int(strategy.GetRollingUpdate().GetPartition())
	if mu := strategy.GetRollingUpdate().GetMaxUnavailable(); mu != nil {
		maxUnavailable, err := mu.ScaledValue(n, false)
		if err != nil {
			return st, err
		}
		maxUnavailable = max(maxUnavailable, 1)
		unavailable := 0
		for _, p := range replicas {
			if !isHealthy(p) {
				unavailable++
			}
		}
		budget := maxUnavailable - unavailable
		for i := len(replicas) - 1; i >= updateMin && budget > 0; i-- {
			p := replicas[i]
			if podRevision(p) != updateRev.GetMetadata().GetName() && !isTerminating(p) {
				if err := c.deletePod(ctx, set, p); err != nil {
					return st, err
				}
				st.CurrentReplicas--
				budget--
			}
		}
		return st, nil
	}
	for i := len(replicas) - 1; i >= updateMin; i-- {
		p := replicas[i]
		if podRevision(p) != updateRev.GetMetadata().GetName() && !isTerminating(p) {
			c.log.Info("Pod of StatefulSet is terminating for update", "pod", p.Metadata.GetName())
			if err := c.deletePod(ctx, set, p); err != nil {
				return st, err
			}
			st.CurrentReplicas--
			return st, nil
		}
		if !isHealthy(p) {
			return st, nil
		}
	}
	return st, nil
}

// createPod is upstream's CreateStatefulPod: the claims first, then the pod.
func (c *Controller) createPod(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	if err := c.ensureClaims(ctx, set, pod, true); err != nil {
		return err
	}
	_, err := client.For[*corev1.Pod](c.client, pod.Metadata.GetNamespace()).Create(ctx, pod)
	if apierrors.IsAlreadyExists(err) {
		return err
	}
	if err != nil {
		c.recorder.Eventf(set, record.Warning, "FailedCreate", "create Pod %s in StatefulSet %s failed error: %v", pod.Metadata.GetName(), set.Metadata.GetName(), apierrors.Message(err))
		return err
	}
	c.recorder.Eventf(set, record.Normal, "SuccessfulCreate", "create Pod %s in StatefulSet %s successful", pod.Metadata.GetName(), set.Metadata.GetName())
	return nil
}

// ensureClaims creates the pod's missing claims (when create) and brings
// the owner references of its existing ones in line with the retention
// policy. A claim being deleted is an error: the pod must not start on it.
func (c *Controller) ensureClaims(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod, create bool) error {
	api := client.For[*corev1.PersistentVolumeClaim](c.client, set.Metadata.GetNamespace())
	for _, want := range claimsFor(set, ordinal(pod)) {
		cur, err := c.pvcLister.Get(set.Metadata.GetNamespace(), want.Metadata.GetName())
		switch {
		case apierrors.IsNotFound(err):
			if !create {
				continue
			}
			applyRetentionPolicy(want, set, pod)
			if _, err := api.Create(ctx, want); err != nil && !apierrors.IsAlreadyExists(err) {
				c.recorder.Eventf(set, record.Warning, "FailedCreate", "create Claim %s for Pod %s in StatefulSet %s failed error: %v",
					want.Metadata.GetName(), pod.Metadata.GetName(), set.Metadata.GetName(), apierrors.Message(err))
				return err
			}
			c.recorder.Eventf(set, record.Normal, "SuccessfulCreate", "create Claim %s Pod %s in StatefulSet %s success",
				want.Metadata.GetName(), pod.Metadata.GetName(), set.Metadata.GetName())
		case err != nil:
			return err
		case cur.GetMetadata().GetDeletionTimestamp() != nil && create:
			return fmt.Errorf("pvc %s is being deleted", cur.Metadata.GetName())
		default:
			up := proto.Clone(cur).(*corev1.PersistentVolumeClaim)
			if applyRetentionPolicy(up, set, pod) {
				if _, err := api.Update(ctx, up); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// fixPod is upstream's: a pod whose identity or storage drifted is updated;
// its claims exist and follow the retention policy.
func (c *Controller) fixPod(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	if err := c.ensureClaims(ctx, set, pod, true); err != nil {
		return err
	}
	if identityMatches(set, pod) && storageMatches(set, pod) {
		return nil
	}
	up := proto.Clone(pod).(*corev1.Pod)
	updateIdentity(set, up)
	updateStorage(set, up)
	_, err := client.For[*corev1.Pod](c.client, up.Metadata.GetNamespace()).Update(ctx, up)
	return err
}

func (c *Controller) deletePod(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	uid := pod.Metadata.GetUid()
	_, err := client.For[*corev1.Pod](c.client, pod.Metadata.GetNamespace()).Delete(ctx, pod.Metadata.GetName(),
		client.DeleteOptions{Preconditions: &apipb.Preconditions{Uid: &uid}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		c.recorder.Eventf(set, record.Warning, "FailedDelete", "delete Pod %s in StatefulSet %s failed error: %v", pod.Metadata.GetName(), set.Metadata.GetName(), apierrors.Message(err))
		return err
	}
	c.recorder.Eventf(set, record.Normal, "SuccessfulDelete", "delete Pod %s in StatefulSet %s successful", pod.Metadata.GetName(), set.Metadata.GetName())
	return nil
}

// writeStatus is upstream's updateStatefulSetStatus: a finished rolling
// update makes the update revision current; unchanged status is not written.
func (c *Controller) writeStatus(ctx context.Context, set *appsv1.StatefulSet, st *appsv1.StatefulSetStatus) error {
	t := set.Spec.GetUpdateStrategy().GetType()
	if (t == "" || t == "RollingUpdate") && st.UpdatedReplicas == st.Replicas && st.ReadyReplicas == st.Replicas {
		st.CurrentReplicas = st.UpdatedReplicas
		st.CurrentRevision = st.UpdateRevision
	}
	st.Conditions = set.GetStatus().GetConditions()
	if proto.Equal(st, set.GetStatus()) {
		return nil
	}
	out := proto.Clone(set).(*appsv1.StatefulSet)
	out.Status = st
	api := client.For[*appsv1.StatefulSet](c.client, set.Metadata.GetNamespace())
	return controller.RetryOnConflict(func() error {
		_, err := api.UpdateStatus(ctx, out)
		if apierrors.IsConflict(err) {
			fresh, gerr := api.Get(ctx, set.Metadata.GetName())
			if gerr != nil {
				return gerr
			}
			fresh.Status = st
			out = fresh
		}
		return err
	})
}

// truncateHistory is upstream's: keep the revisions live pods, the current
// and the update revision use, and at most revisionHistoryLimit others.
func (c *Controller) truncateHistory(ctx context.Context, set *appsv1.StatefulSet, pods []*corev1.Pod, revs []*appsv1.ControllerRevision, current, update *appsv1.ControllerRevision) error {
	live := map[string]bool{current.GetMetadata().GetName(): true, update.GetMetadata().GetName(): true}
	for _, p := range pods {
		live[podRevision(p)] = true
	}
	var old []*appsv1.ControllerRevision
	for _, r := range revs {
		if !live[r.GetMetadata().GetName()] {
			old = append(old, r)
		}
	}
	limit := 10
	if set.Spec.RevisionHistoryLimit != nil {
		limit = int(set.Spec.GetRevisionHistoryLimit())
	}
	for i := 0; i < len(old)-limit; i++ {
		if err := c.history.Delete(ctx, old[i]); err != nil {
			return err
		}
	}
	return nil
}
