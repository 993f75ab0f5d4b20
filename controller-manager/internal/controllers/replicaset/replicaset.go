// Package replicaset is the replicaset and replicationcontroller controllers
// of skiff-controller-manager: one implementation, as upstream's
// pkg/controller/replicaset serves both, the ReplicationController seen as
// an older version of the ReplicaSet.
//
// Each sync of an owner keeps upstream's semantics:
//   - Its pods are the active ones (not Succeeded, Failed or being deleted)
//     it controls, after claiming: orphans matching its selector are
//     adopted (after a fresh read of the owner proves it is still there and
//     not being deleted), owned pods that no longer match are released.
//   - Too few: pods are created from the template ("<name>-" and a suffix,
//     the template's labels, annotations and spec, the owner as controller)
//     in slow-start batches of 1, 2, 4, ... (at most 500 a sync), stopping
//     at the first batch with an error. Too many: the pods upstream's
//     ActivePodsWithRanks puts first are deleted, in parallel.
//   - Expectations hold the owner back from creating or deleting again
//     until its informer has seen the pods it created (pod add events) and
//     deleted (delete events, or a deletionTimestamp); a lost event delays
//     it by at most their 5 minute TTL.
//   - Status (replicas, fullyLabeledReplicas, readyReplicas,
//     availableReplicas, terminatingReplicas for ReplicaSets,
//     observedGeneration, the ReplicaFailure condition) is written only when
//     it changes, and the owner is synced again when a ready pod is due to
//     become available after minReadySeconds.
//   - Events as upstream's: SuccessfulCreate, FailedCreate,
//     SuccessfulDelete, FailedDelete, from "replicaset-controller" or
//     "replication-controller".
//
// Deviations: a ReplicaSet without a controller ranks its pods against its
// own pods on the same node (upstream ranks them all equal); deletes carry
// the pod's UID as a precondition; the availability resync is due when the
// first ready pod becomes available, not minReadySeconds after a sync that
// found every pod ready. Left out: upstream's PodControl test seam (tests
// use the fake clientset).
package replicaset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"

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
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

const (
	// burstReplicas caps the pods one sync creates or deletes (upstream's
	// BurstReplicas); the next sync does the rest.
	burstReplicas = 500
	// slowStartInitialBatchSize is upstream's SlowStartInitialBatchSize.
	slowStartInitialBatchSize = 1
	// deleteParallelism bounds the concurrent deletes of one sync.
	deleteParallelism = 50
	defaultWorkers    = 5
	// availabilitySkew is added to availability requeues, as upstream
	// does, so that the sync lands after the pod is available rather than
	// a moment before.
	availabilitySkew = time.Second
)

// Controller syncs ReplicaSets or ReplicationControllers with their pods.
type Controller struct {
	name     string
	w        workloads
	client   *client.Client
	podInf   *informer.Informer
	pods     informers.Lister[*corev1.Pod]
	recorder record.Recorder
	queue    workqueue.Queue
	exp      *controller.UIDTrackingExpectations
	workers  int
	now      func() time.Time
	log      *slog.Logger
	regs     []informer.Registration

	deletionAgeRatio prometheus.Observer
}

// NewReplicaSet is the "replicaset" controller.
func NewReplicaSet(cc controllers.Context) (controllers.Controller, error) {
	w, err := newReplicaSets(cc.Informers, cc.Client)
	if err != nil {
		return nil, err
	}
	return newController(cc, "replicaset", "replicaset-controller", w)
}

// NewReplicationController is the "replicationcontroller" controller.
func NewReplicationController(cc controllers.Context) (controllers.Controller, error) {
	w, err := newReplicationControllers(cc.Informers, cc.Client)
	if err != nil {
		return nil, err
	}
	return newController(cc, "replicationcontroller", "replication-controller", w)
}

func newController(cc controllers.Context, name, component string, w workloads) (*Controller, error) {
	c := &Controller{
		name:   name,
		w:      w,
		client: cc.Client,
		queue:  workqueue.NewWithMetrics(name, cc.Registerer),
		exp:    controller.NewUIDTrackingExpectations(nil),
		now:    cc.Clock(),
		log:    cc.Log(),
	}
	c.workers = cc.WorkersFor(name, defaultWorkers)
	c.recorder = cc.EventRecorder(component)
	ratio, err := sortingDeletionAgeRatio(cc.Registerer)
	if err != nil {
		return nil, err
	}
	c.deletionAgeRatio = ratio

	pods := informers.For[*corev1.Pod](cc.Informers)
	c.podInf, c.pods = pods.Informer(), pods.Lister()
	c.regs = append(c.regs,
		w.informer().AddHandler(informer.Handler{OnAdd: c.addOwner, OnUpdate: c.updateOwner, OnDelete: c.deleteOwner}),
		c.podInf.AddHandler(informer.Handler{OnAdd: c.addPod, OnUpdate: c.updatePod, OnDelete: c.onPodDelete}))
	return c, nil
}

// sortingDeletionAgeRatio is upstream's
// replicaset_controller_sorting_deletion_age_ratio, shared by both
// controllers of a process.
func sortingDeletionAgeRatio(reg prometheus.Registerer) (prometheus.Observer, error) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Subsystem: "replicaset_controller",
		Name:      "sorting_deletion_age_ratio",
		Help: "The ratio of chosen deleted pod's ages to the current youngest pod's age (at the time). Should be <2. " +
			"The intent of this metric is to measure the rough efficacy of the LogarithmicScaleDown feature gate's " +
			"effect on the sorting (and deletion) of pods when a replicaset scales down. This only considers Ready " +
			"pods when calculating and reporting.",
		Buckets: prometheus.ExponentialBuckets(0.25, 2, 6),
	})
	if reg == nil {
		return h, nil
	}
	if err := reg.Register(h); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if o, ok := are.ExistingCollector.(prometheus.Histogram); ok {
				return o, nil
			}
		}
		return nil, err
	}
	return h, nil
}

// Name is upstream's controller name.
func (c *Controller) Name() string { return c.name }

// Run waits for the informers to deliver their initial lists, then syncs
// until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return controllers.RunQueue(ctx, c.log, c.queue, c.workers, c.sync, c.regs...)
}

func (c *Controller) kind() string { return c.w.kind().Kind }

func (c *Controller) enqueue(o owner) { c.queue.Add(controller.KeyFunc(o.obj)) }

func (c *Controller) addOwner(obj scheme.Object) { c.queue.Add(controller.KeyFunc(obj)) }

func (c *Controller) updateOwner(old, cur scheme.Object) {
	if old.GetMetadata().GetUid() != cur.GetMetadata().GetUid() {
		// Deleted and recreated between two events: forget the old one's
		// expectations, as its delete event would have.
		c.deleteOwner(old)
	}
	// Every update syncs, not only spec changes: a sync whose creates
	// failed is retried by the next update or resync instead of stalling.
	c.queue.Add(controller.KeyFunc(cur))
}

func (c *Controller) deleteOwner(obj scheme.Object) {
	key := controller.KeyFunc(obj)
	// A new object of the same name starts with clean expectations.
	c.exp.DeleteExpectations(key)
	c.queue.Add(key)
}

// resolveControllerRef is the owner ref points to, if it is of our kind
// and still the object of that UID.
func (c *Controller) resolveControllerRef(namespace string, ref *metav1.OwnerReference) (owner, bool) {
	if ref.GetKind() != c.kind() {
		return owner{}, false
	}
	o, err := c.w.get(namespace, ref.GetName())
	if err != nil || o.rs.GetMetadata().GetUid() != ref.GetUid() {
		return owner{}, false
	}
	return o, true
}

// podOwners are the owners whose selector matches an orphan pod, for it to
// be adopted. More than one is a user error; controller references keep it
// harmless.
func (c *Controller) podOwners(pod *corev1.Pod) []owner {
	var out []owner
	set := labels.Set(pod.GetMetadata().GetLabels())
	for _, o := range c.w.list(pod.GetMetadata().GetNamespace()) {
		sel, err := metav1.LabelSelectorAsSelector(o.rs.GetSpec().GetSelector())
		// A nil or empty selector creeping in matches nothing, not everything.
		if err != nil || sel.Empty() || !sel.Matches(set) {
			continue
		}
		out = append(out, o)
	}
	if len(out) > 1 {
		c.log.Error(fmt.Sprintf("user error! more than one %s is selecting pods with labels", c.kind()),
			"pod", controller.KeyFunc(pod), "labels", set.String())
	}
	return out
}

// addPod observes a creation for the pod's owner, or lets every owner that
// would select an orphan try to adopt it.
func (c *Controller) addPod(obj scheme.Object) {
	pod := obj.(*corev1.Pod)
	if pod.GetMetadata().GetDeletionTimestamp() != nil {
		// After a restart a pod may first appear already being deleted: it
		// is no creation to observe.
		c.onPodDelete(pod)
		return
	}
	if ref := metav1.GetControllerOf(pod.GetMetadata()); ref != nil {
		o, ok := c.resolveControllerRef(pod.GetMetadata().GetNamespace(), ref)
		if !ok {
			return
		}
		key := controller.KeyFunc(o.obj)
		c.exp.CreationObserved(key)
		c.queue.Add(key)
		return
	}
	// No controller waits for an orphan: observe no creation.
	for _, o := range c.podOwners(pod) {
		c.enqueue(o)
	}
}

// updatePod wakes the owners a pod change concerns: the old and new
// controller when the reference changed, and, for an orphan whose labels or
// references changed, every owner that may now adopt it.
func (c *Controller) updatePod(oldObj, curObj scheme.Object) {
	old, cur := oldObj.(*corev1.Pod), curObj.(*corev1.Pod)
	if old.GetMetadata().GetResourceVersion() == cur.GetMetadata().GetResourceVersion() {
		// A resync; two versions of one pod always differ in resourceVersion.
		return
	}
	labelChanged := !maps.Equal(old.GetMetadata().GetLabels(), cur.GetMetadata().GetLabels())
	if cur.GetMetadata().GetDeletionTimestamp() != nil {
		// A graceful deletion starts: the owner should replace the pod now,
		// not when the kubelet has finished with it.
		c.onPodDelete(cur)
		if labelChanged {
			c.onPodDelete(old)
		}
		return
	}
	curRef := metav1.GetControllerOf(cur.GetMetadata())
	oldRef := metav1.GetControllerOf(old.GetMetadata())
	refChanged := !proto.Equal(curRef, oldRef)
	if refChanged && oldRef != nil {
		if o, ok := c.resolveControllerRef(old.GetMetadata().GetNamespace(), oldRef); ok {
			c.enqueue(o)
		}
	}
	if curRef != nil {
		o, ok := c.resolveControllerRef(cur.GetMetadata().GetNamespace(), curRef)
		if !ok {
			return
		}
		c.enqueue(o)
		// Availability is not an event: look again once the pod that just
		// became ready has been ready for minReadySeconds.
		if mrs := o.rs.GetSpec().GetMinReadySeconds(); mrs > 0 && !isPodReady(old) && isPodReady(cur) {
			c.queue.AddAfter(controller.KeyFunc(o.obj), time.Duration(mrs)*time.Second+availabilitySkew)
		}
		return
	}
	if labelChanged || refChanged {
		for _, o := range c.podOwners(cur) {
			c.enqueue(o)
		}
	}
}

// onPodDelete observes a deletion for the pod's owner; called for delete
// events and for pods that got a deletionTimestamp.
func (c *Controller) onPodDelete(obj scheme.Object) {
	pod := obj.(*corev1.Pod)
	ref := metav1.GetControllerOf(pod.GetMetadata())
	if ref == nil {
		// No controller cares about an orphan's deletion.
		return
	}
	o, ok := c.resolveControllerRef(pod.GetMetadata().GetNamespace(), ref)
	if !ok {
		return
	}
	key := controller.KeyFunc(o.obj)
	c.exp.DeletionObserved(key, controller.KeyFunc(pod))
	c.queue.Add(key)
}

// sync is upstream's syncReplicaSet: claim the owner's pods, create or
// delete (when expectations allow), and write status.
func (c *Controller) sync(ctx context.Context, key string) error {
	start := time.Now()
	defer func() { c.log.Debug("Finished syncing", "kind", c.kind(), "key", key, "duration", time.Since(start)) }()

	namespace, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	o, err := c.w.get(namespace, name)
	if apierrors.IsNotFound(err) {
		c.log.Debug("Deleted", "kind", c.kind(), "key", key)
		c.exp.DeleteExpectations(key)
		return nil
	}
	if err != nil {
		return err
	}
	// Read before listing pods: an expectation satisfied by a pod event
	// implies that pod is in the cache the list below reads.
	needsSync := c.exp.SatisfiedExpectations(key)
	selector, err := metav1.LabelSelectorAsSelector(o.rs.GetSpec().GetSelector())
	if err != nil {
		// Retrying cannot fix the object; its next update will sync it.
		c.log.Error("Invalid selector", "kind", c.kind(), "key", key, "err", err)
		return nil
	}

	// Every pod of the namespace, not only those matching: an owned pod that
	// no longer matches is to be released.
	all := c.pods.Namespace(namespace).List(labels.Everything())
	var active, terminating []*corev1.Pod
	for _, p := range all {
		if isPodActive(p) {
			active = append(active, p)
		} else if isPodTerminating(p) {
			terminating = append(terminating, p)
		}
	}
	active, err = controller.Claim(ctx, controller.NewRefManager(c.client, o.obj, c.w.kind(), selector, nil), active)
	if err != nil {
		return err
	}
	terminating = filterClaimed(o, selector, terminating)

	var manageErr error
	if needsSync && o.rs.GetMetadata().GetDeletionTimestamp() == nil {
		manageErr = c.manageReplicas(ctx, key, o, active)
	}
	now := c.now()
	st := calculateStatus(o.rs, active, terminating, c.w.terminatingReplicas(), manageErr, now)
	if err := c.updateStatus(ctx, o, st); err != nil {
		return err
	}
	if manageErr == nil {
		if d, ok := nextAvailabilityCheck(active, o.rs.GetSpec().GetMinReadySeconds(), now); ok {
			c.queue.AddAfter(key, d+availabilitySkew)
		}
	}
	return manageErr
}

// filterClaimed is upstream's FilterClaimedPods: the pods o controls that
// its selector still matches.
func filterClaimed(o owner, selector labels.Selector, pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if controller.IsControlledBy(p, o.obj) && selector.Matches(labels.Set(p.GetMetadata().GetLabels())) {
			out = append(out, p)
		}
	}
	return out
}

// nextAvailabilityCheck is how long until the first ready pod that is not
// yet available becomes so.
func nextAvailabilityCheck(pods []*corev1.Pod, minReadySeconds int32, now time.Time) (time.Duration, bool) {
	var next time.Duration
	found := false
	for _, p := range pods {
		if d, ok := untilAvailable(p, minReadySeconds, now); ok && (!found || d < next) {
			next, found = d, true
		}
	}
	return next, found
}

// manageReplicas is upstream's: create or delete pods towards spec.replicas.
// pods is not modified.
func (c *Controller) manageReplicas(ctx context.Context, key string, o owner, pods []*corev1.Pod) error {
	diff := len(pods) - int(replicas(o.rs))
	switch {
	case diff < 0:
		diff = min(-diff, burstReplicas)
		// Expect them all before creating any: the informer may see a pod
		// before Create returns.
		c.exp.ExpectCreations(key, diff)
		c.log.Info("Too few replicas", "kind", c.kind(), "key", key, "need", replicas(o.rs), "creating", diff)
		ref := controller.NewControllerRef(o.obj, c.w.kind())
		created, err := slowStartBatch(diff, slowStartInitialBatchSize, func() error {
			err := c.createPod(ctx, o, ref)
			if isNamespaceTerminating(err) {
				// Every create would fail, and the namespace's deletion
				// takes the owner with it.
				return nil
			}
			return err
		})
		// The pods never attempted will never be observed; the next sync
		// tries them again.
		if skipped := diff - created; skipped > 0 {
			c.log.Info("Slow-start failure. Skipping creation of pods, decrementing expectations",
				"kind", c.kind(), "key", key, "podsSkipped", skipped)
			c.exp.LowerExpectations(key, skipped, 0)
		}
		return err
	case diff > 0:
		diff = min(diff, burstReplicas)
		c.log.Info("Too many replicas", "kind", c.kind(), "key", key, "need", replicas(o.rs), "deleting", diff)
		victims := podsToDelete(pods, c.relatedPods(o, pods), diff, c.now())
		c.reportSortingDeletionAgeRatio(pods, victims)
		keys := make([]string, len(victims))
		for i, p := range victims {
			keys[i] = controller.KeyFunc(p)
		}
		// Deletions are tracked by pod so that a pod seen first with a
		// deletionTimestamp and then deleted counts once.
		c.exp.ExpectDeletions(key, keys)

		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			firstErr error
			sem      = make(chan struct{}, deleteParallelism)
		)
		for _, p := range victims {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := c.deletePod(ctx, o, p); err != nil {
					// This deletion will never be observed.
					c.exp.DeletionObserved(key, controller.KeyFunc(p))
					if !podGone(err) {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		return firstErr
	}
	return nil
}

// relatedPods are the pods of every owner with the same controller as o
// (the ReplicaSets of one Deployment), against which scale-down ranks pods
// by how crowded their node is.
func (c *Controller) relatedPods(o owner, own []*corev1.Pod) []*corev1.Pod {
	ref := metav1.GetControllerOf(o.rs.GetMetadata())
	if ref == nil {
		return own
	}
	var out []*corev1.Pod
	seen := sets.New[string]()
	for _, r := range c.w.byController(ref.GetUid()) {
		sel, err := metav1.LabelSelectorAsSelector(r.rs.GetSpec().GetSelector())
		if err != nil {
			continue
		}
		for _, p := range c.pods.Namespace(r.rs.GetMetadata().GetNamespace()).List(sel) {
			if uid := p.GetMetadata().GetUid(); !seen.Has(uid) {
				seen.Insert(uid)
				out = append(out, p)
			}
		}
	}
	return out
}

// reportSortingDeletionAgeRatio observes, for each ready pod chosen for
// deletion, its age over the youngest ready pod's: near 1 means scale-down
// took (about) the newest pods, as logarithmic ranking intends.
func (c *Controller) reportSortingDeletionAgeRatio(pods, victims []*corev1.Pod) {
	now := c.now()
	var youngest time.Time
	for _, p := range pods {
		if t := p.GetMetadata().GetCreationTimestamp().AsTime(); isPodReady(p) && t.After(youngest) {
			youngest = t
		}
	}
	youngestAge := now.Sub(youngest)
	if youngest.IsZero() || youngestAge <= 0 {
		return
	}
	for _, p := range victims {
		if isPodReady(p) {
			age := now.Sub(p.GetMetadata().GetCreationTimestamp().AsTime())
			c.deletionAgeRatio.Observe(float64(age) / float64(youngestAge))
		}
	}
}

// updateStatus is upstream's updateReplicaSetStatus: nothing when the
// status is unchanged, else UpdateStatus, reading the object again on a
// conflict. observedGeneration is the generation this sync acted on, even
// when the retry reads a newer one.
func (c *Controller) updateStatus(ctx context.Context, o owner, st *appsv1.ReplicaSetStatus) error {
	if statusUnchanged(o.rs, st) {
		return nil
	}
	st = proto.Clone(st).(*appsv1.ReplicaSetStatus)
	st.ObservedGeneration = o.rs.GetMetadata().GetGeneration()
	m := o.rs.GetMetadata()
	cur := o
	first := true
	return controller.RetryOnConflict(func() error {
		if !first {
			fresh, err := c.w.fetch(ctx, m.GetNamespace(), m.GetName())
			if err != nil {
				return err
			}
			if fresh.rs.GetMetadata().GetUid() != m.GetUid() {
				return fmt.Errorf("%s %s was recreated", c.kind(), controller.KeyFunc(o.obj))
			}
			cur = fresh
		}
		first = false
		c.log.Debug("Updating status", "kind", c.kind(), "key", controller.KeyFunc(o.obj),
			"replicas", st.GetReplicas(), "need", replicas(o.rs), "fullyLabeledReplicas", st.GetFullyLabeledReplicas(),
			"readyReplicas", st.GetReadyReplicas(), "availableReplicas", st.GetAvailableReplicas(),
			"observedGeneration", st.GetObservedGeneration())
		_, err := c.w.updateStatus(ctx, cur, st)
		return err
	})
}
