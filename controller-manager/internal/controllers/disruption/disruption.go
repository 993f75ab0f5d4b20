// Package disruption is the disruption controller of
// skiff-controller-manager (upstream's pkg/controller/disruption): it
// keeps each PodDisruptionBudget's status, which the eviction subresource
// reads and spends.
//
//   - expectedPods: for maxUnavailable and a percentage minAvailable, the
//     scale of the selected pods' controllers (ReplicaSet, Deployment
//     through its ReplicaSets, StatefulSet, ReplicationController), each
//     counted once; for an integer minAvailable, the selected pods.
//   - currentHealthy: selected pods that are Ready, not being deleted and
//     not recently evicted (in disruptedPods); desiredHealthy from the
//     budget; disruptionsAllowed = currentHealthy - desiredHealthy, never
//     below 0, and 0 while no pod is expected.
//   - disruptedPods: an eviction's entry is dropped once its pod is being
//     deleted, or after upstream's DeletionTimeout (2 minutes) if it never
//     was (a Warning NotDeleted on the pod); the budget is synced again
//     when the next entry expires.
//   - The DisruptionAllowed condition: True/SufficientPods,
//     False/InsufficientPods, or, when the expected count cannot be known
//     (a pod's controller is missing or has no scale), disruptionsAllowed 0
//     and False/SyncFailed with the reason (upstream's failSafe).
//   - Writes happen only on change, through UpdateStatus guarded by the
//     budget's resourceVersion; a conflict syncs again.
//
// Left out: upstream's generic scale-subresource finder (custom
// resources), and the cleanup of stale DisruptionTarget pod conditions.
package disruption

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Name is upstream's alias, and the workers option's key.
const Name = "disruption"

// Component is the Events' source.
const Component = "controllermanager"

// DeletionTimeout is how long an eviction waits for its pod to be
// deleted before the budget forgets it (upstream's DeletionTimeout).
const DeletionTimeout = 2 * time.Minute

// The condition and its reasons, as upstream's policy/v1.
const (
	ConditionDisruptionAllowed = "DisruptionAllowed"
	ReasonSufficientPods       = "SufficientPods"
	ReasonInsufficientPods     = "InsufficientPods"
	ReasonSyncFailed           = "SyncFailed"
)

const defaultWorkers = 1

// Controller keeps PodDisruptionBudget status.
type Controller struct {
	client   *client.Client
	pdbs     informers.Lister[*policyv1.PodDisruptionBudget]
	pods     informers.Lister[*corev1.Pod]
	rss      informers.Lister[*appsv1.ReplicaSet]
	deploys  informers.Lister[*appsv1.Deployment]
	sets     informers.Lister[*appsv1.StatefulSet]
	rcs      informers.Lister[*corev1.ReplicationController]
	recorder record.Recorder
	queue    workqueue.Queue
	workers  int
	now      func() time.Time
	log      *slog.Logger
	regs     []informer.Registration
}

// New is the "disruption" controller.
func New(cc controllers.Context) (controllers.Controller, error) {
	c := &Controller{client: cc.Client, queue: workqueue.NewWithMetrics(Name, cc.Registerer), now: cc.Clock(), log: cc.Log()}
	c.log = c.log.With("controller", Name)
	c.workers = cc.WorkersFor(Name, defaultWorkers)
	c.recorder = cc.EventRecorder(Component)
	pdbs := informers.For[*policyv1.PodDisruptionBudget](cc.Informers)
	pods := informers.For[*corev1.Pod](cc.Informers)
	rss := informers.For[*appsv1.ReplicaSet](cc.Informers)
	deploys := informers.For[*appsv1.Deployment](cc.Informers)
	sets := informers.For[*appsv1.StatefulSet](cc.Informers)
	rcs := informers.For[*corev1.ReplicationController](cc.Informers)
	c.pdbs, c.pods, c.rss, c.deploys, c.sets, c.rcs = pdbs.Lister(), pods.Lister(), rss.Lister(), deploys.Lister(), sets.Lister(), rcs.Lister()
	enqueue := func(o scheme.Object) { c.queue.Add(controller.KeyFunc(o)) }
	scaleChanged := func(old, cur scheme.Object) {
		if replicasOf(old) != replicasOf(cur) {
			c.enqueueNamespace(cur.GetMetadata().GetNamespace())
		}
	}
	workloads := informer.Handler{OnAdd: func(o scheme.Object) { c.enqueueNamespace(o.GetMetadata().GetNamespace()) },
		OnUpdate: scaleChanged, OnDelete: func(o scheme.Object) { c.enqueueNamespace(o.GetMetadata().GetNamespace()) }}
	c.regs = append(c.regs,
		pdbs.Informer().AddHandler(informer.Handler{OnAdd: enqueue, OnUpdate: func(_, cur scheme.Object) { enqueue(cur) }, OnDelete: enqueue}),
		pods.Informer().AddHandler(informer.Handler{OnAdd: c.podChanged, OnDelete: c.podChanged,
			OnUpdate: func(old, cur scheme.Object) {
				c.podChanged(cur)
				if !labels.Equals(old.GetMetadata().GetLabels(), cur.GetMetadata().GetLabels()) {
					c.podChanged(old)
				}
			}}),
		rss.Informer().AddHandler(workloads), deploys.Informer().AddHandler(workloads),
		sets.Informer().AddHandler(workloads), rcs.Informer().AddHandler(workloads))
	return c, nil
}

func replicasOf(o scheme.Object) int32 {
	switch w := o.(type) {
	case *appsv1.ReplicaSet:
		return w.GetSpec().GetReplicas()
	case *appsv1.Deployment:
		return w.GetSpec().GetReplicas()
	case *appsv1.StatefulSet:
		return w.GetSpec().GetReplicas()
	case *corev1.ReplicationController:
		return w.GetSpec().GetReplicas()
	}
	return 0
}

// Name is upstream's alias.
func (c *Controller) Name() string { return Name }

// Run syncs budgets once the caches are filled, until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return controllers.RunQueue(ctx, c.log, c.queue, c.workers, c.sync, c.regs...)
}

func (c *Controller) enqueueNamespace(ns string) {
	for _, p := range c.pdbs.Namespace(ns).List(nil) {
		c.queue.Add(controller.KeyFunc(p))
	}
}

// podChanged syncs the budgets whose selector matches the pod.
func (c *Controller) podChanged(obj scheme.Object) {
	set := labels.Set(obj.GetMetadata().GetLabels())
	for _, p := range c.pdbs.Namespace(obj.GetMetadata().GetNamespace()).List(nil) {
		sel, err := metav1.LabelSelectorAsSelector(p.GetSpec().GetSelector())
		if err == nil && sel.Matches(set) {
			c.queue.Add(controller.KeyFunc(p))
		}
	}
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	pdb, err := c.pdbs.Namespace(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	err = c.trySync(ctx, key, pdb)
	if err == nil || apierrors.IsConflict(err) {
		return err
	}
	c.log.Error("Failed to sync PodDisruptionBudget", "pdb", key, "err", err)
	return c.failSafe(ctx, pdb, err)
}

func (c *Controller) trySync(ctx context.Context, key string, pdb *policyv1.PodDisruptionBudget) error {
	sel, err := metav1.LabelSelectorAsSelector(pdb.GetSpec().GetSelector())
	if err != nil {
		return err
	}
	pods := c.pods.Namespace(pdb.GetMetadata().GetNamespace()).List(sel)
	if len(pods) == 0 {
		c.recorder.Event(pdb, "Normal", "NoPods", "No matching pods found")
	}
	expected, desired, unmanaged, err := c.expectedPodCount(pdb, pods)
	if err != nil {
		c.recorder.Eventf(pdb, "Warning", "CalculateExpectedPodCountFailed", "Failed to calculate the number of expected pods: %v", err)
		return err
	}
	if len(unmanaged) > 0 {
		c.recorder.Eventf(pdb, "Warning", "UnmanagedPods", "Pods selected by this PodDisruptionBudget (selector: %v) were found "+
			"to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. "+
			"To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.", sel)
	}
	now := c.now()
	disrupted, recheck := c.disruptedPods(pods, pdb, now)
	healthy := countHealthy(pods, disrupted, now)
	if err := c.updateStatus(ctx, pdb, healthy, desired, expected, disrupted); err != nil {
		return err
	}
	if recheck != nil {
		c.queue.AddAfter(key, recheck.Sub(now))
	}
	return nil
}

// expectedPodCount is upstream's getExpectedPodCount.
func (c *Controller) expectedPodCount(pdb *policyv1.PodDisruptionBudget, pods []*corev1.Pod) (expected, desired int32, unmanaged []string, err error) {
	spec := pdb.GetSpec()
	switch {
	case spec.GetMaxUnavailable() != nil:
		if expected, unmanaged, err = c.expectedScale(pdb, pods); err != nil {
			return 0, 0, nil, err
		}
		maxUnavailable, err := spec.GetMaxUnavailable().ScaledValue(int(expected), true)
		if err != nil {
			return 0, 0, nil, err
		}
		desired = max(expected-int32(maxUnavailable), 0)
	case spec.GetMinAvailable() != nil && !spec.GetMinAvailable().IsString():
		desired = spec.GetMinAvailable().GetIntVal()
		expected = int32(len(pods))
	case spec.GetMinAvailable() != nil:
		if expected, unmanaged, err = c.expectedScale(pdb, pods); err != nil {
			return 0, 0, nil, err
		}
		minAvailable, err := spec.GetMinAvailable().ScaledValue(int(expected), true)
		if err != nil {
			return 0, 0, nil, err
		}
		desired = int32(minAvailable)
	default:
		expected = int32(len(pods))
	}
	return expected, desired, unmanaged, nil
}

// expectedScale is upstream's getExpectedScale: the sum of the scales of
// the pods' controllers, each once; pods without a controller are
// unmanaged, a controller that cannot be found is an error.
func (c *Controller) expectedScale(pdb *policyv1.PodDisruptionBudget, pods []*corev1.Pod) (int32, []string, error) {
	scales := map[string]int32{}
	seenRefs := map[string]bool{}
	var unmanaged []string
	for _, p := range pods {
		ref := metav1.GetControllerOf(p.GetMetadata())
		if ref == nil {
			unmanaged = append(unmanaged, p.GetMetadata().GetName())
			continue
		}
		if seenRefs[ref.GetUid()] {
			continue
		}
		uid, scale, ok := c.findController(p.GetMetadata().GetNamespace(), ref)
		if !ok {
			return 0, nil, fmt.Errorf("found no controllers for pod %q", p.GetMetadata().GetName())
		}
		seenRefs[ref.GetUid()] = true
		scales[uid] = scale
	}
	var total int32
	for _, s := range scales {
		total += s
	}
	return total, unmanaged, nil
}

// findController is upstream's finders: the UID and scale of the object
// that decides how many of the pod's kind should exist.
func (c *Controller) findController(ns string, ref *metav1.OwnerReference) (string, int32, bool) {
	group := ref.GetApiVersion()
	if i := strings.Index(group, "/"); i >= 0 {
		group = group[:i]
	} else {
		group = ""
	}
	switch {
	case ref.GetKind() == "ReplicaSet" && group == "apps":
		rs, err := c.rss.Namespace(ns).Get(ref.GetName())
		if err != nil || rs.GetMetadata().GetUid() != ref.GetUid() {
			return "", 0, false
		}
		if dref := metav1.GetControllerOf(rs.GetMetadata()); dref != nil && dref.GetKind() == "Deployment" {
			d, err := c.deploys.Namespace(ns).Get(dref.GetName())
			if err != nil || d.GetMetadata().GetUid() != dref.GetUid() {
				return "", 0, false
			}
			return d.GetMetadata().GetUid(), d.GetSpec().GetReplicas(), true
		}
		return rs.GetMetadata().GetUid(), rs.GetSpec().GetReplicas(), true
	case ref.GetKind() == "StatefulSet" && group == "apps":
		s, err := c.sets.Namespace(ns).Get(ref.GetName())
		if err != nil || s.GetMetadata().GetUid() != ref.GetUid() {
			return "", 0, false
		}
		return s.GetMetadata().GetUid(), s.GetSpec().GetReplicas(), true
	case ref.GetKind() == "ReplicationController" && group == "":
		rc, err := c.rcs.Namespace(ns).Get(ref.GetName())
		if err != nil || rc.GetMetadata().GetUid() != ref.GetUid() {
			return "", 0, false
		}
		return rc.GetMetadata().GetUid(), rc.GetSpec().GetReplicas(), true
	}
	return "", 0, false
}

// disruptedPods is upstream's buildDisruptedPodMap: the evictions still
// waiting for their pod's deletion, and when the first of them expires.
func (c *Controller) disruptedPods(pods []*corev1.Pod, pdb *policyv1.PodDisruptionBudget, now time.Time) (map[string]*metav1.Time, *time.Time) {
	in := pdb.GetStatus().GetDisruptedPods()
	out := map[string]*metav1.Time{}
	var recheck *time.Time
	for _, p := range pods {
		if p.GetMetadata().GetDeletionTimestamp() != nil {
			continue
		}
		at, ok := in[p.GetMetadata().GetName()]
		if !ok {
			continue
		}
		expires := at.AsTime().Add(DeletionTimeout)
		if expires.Before(now) {
			c.log.Info("Pod was expected to be deleted but it wasn't, updating PDB", "pod", controller.KeyFunc(p), "pdb", controller.KeyFunc(pdb))
			c.recorder.Eventf(p, "Warning", "NotDeleted", "Pod was expected by PDB %s/%s to be deleted but it wasn't",
				pdb.GetMetadata().GetNamespace(), pdb.GetMetadata().GetName())
			continue
		}
		if recheck == nil || expires.Before(*recheck) {
			recheck = &expires
		}
		out[p.GetMetadata().GetName()] = at
	}
	return out, recheck
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

func countHealthy(pods []*corev1.Pod, disrupted map[string]*metav1.Time, now time.Time) int32 {
	var n int32
	for _, p := range pods {
		if p.GetMetadata().GetDeletionTimestamp() != nil {
			continue
		}
		if at, ok := disrupted[p.GetMetadata().GetName()]; ok && at.AsTime().Add(DeletionTimeout).After(now) {
			continue
		}
		if isReady(p) {
			n++
		}
	}
	return n
}

func (c *Controller) updateStatus(ctx context.Context, pdb *policyv1.PodDisruptionBudget, healthy, desired, expected int32, disrupted map[string]*metav1.Time) error {
	allowed := healthy - desired
	if expected <= 0 || allowed <= 0 {
		allowed = 0
	}
	st := &policyv1.PodDisruptionBudgetStatus{
		CurrentHealthy:     healthy,
		DesiredHealthy:     desired,
		ExpectedPods:       expected,
		DisruptionsAllowed: allowed,
		ObservedGeneration: pdb.GetMetadata().GetGeneration(),
		Conditions:         cloneConditions(pdb.GetStatus().GetConditions()),
	}
	if len(disrupted) > 0 {
		st.DisruptedPods = disrupted
	}
	if allowed > 0 {
		setCondition(st, "True", ReasonSufficientPods, "", c.now())
	} else {
		setCondition(st, "False", ReasonInsufficientPods, "", c.now())
	}
	return c.write(ctx, pdb, st)
}

// failSafe is upstream's: no disruption is allowed while the budget cannot
// be computed, and the condition says why.
func (c *Controller) failSafe(ctx context.Context, pdb *policyv1.PodDisruptionBudget, cause error) error {
	st := &policyv1.PodDisruptionBudgetStatus{}
	if pdb.GetStatus() != nil {
		st = proto.Clone(pdb.GetStatus()).(*policyv1.PodDisruptionBudgetStatus)
	}
	st.DisruptionsAllowed = 0
	setCondition(st, "False", ReasonSyncFailed, cause.Error(), c.now())
	return c.write(ctx, pdb, st)
}

func (c *Controller) write(ctx context.Context, pdb *policyv1.PodDisruptionBudget, st *policyv1.PodDisruptionBudgetStatus) error {
	if proto.Equal(pdb.GetStatus(), st) {
		return nil
	}
	next := proto.Clone(pdb).(*policyv1.PodDisruptionBudget)
	next.Status = st
	_, err := client.For[*policyv1.PodDisruptionBudget](c.client, pdb.GetMetadata().GetNamespace()).UpdateStatus(ctx, next)
	return err
}

func cloneConditions(cs []*metav1.Condition) []*metav1.Condition {
	out := make([]*metav1.Condition, len(cs))
	for i, c := range cs {
		out[i] = proto.Clone(c).(*metav1.Condition)
	}
	return out
}

// setCondition is apimachinery's SetStatusCondition for DisruptionAllowed:
// the transition time moves only when the status does.
func setCondition(st *policyv1.PodDisruptionBudgetStatus, status, reason, msg string, now time.Time) {
	for _, c := range st.Conditions {
		if c.GetType() == ConditionDisruptionAllowed {
			if c.Status != status {
				c.Status = status
				c.LastTransitionTime = metav1.NewTime(now)
			}
			c.Reason, c.Message, c.ObservedGeneration = reason, msg, st.GetObservedGeneration()
			return
		}
	}
	st.Conditions = append(st.Conditions, &metav1.Condition{Type: ConditionDisruptionAllowed, Status: status, Reason: reason,
		Message: msg, ObservedGeneration: st.GetObservedGeneration(), LastTransitionTime: metav1.NewTime(now)})
}
