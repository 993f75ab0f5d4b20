// Package job is the job controller of skiff-controller-manager, as
// upstream's pkg/controller/job: it runs a batch/v1 Job's pods to
// completion and keeps the Job's status.
//
// Each sync of a Job (upstream's syncJob):
//   - Claims the pods its selector matches (adoption after a fresh read of
//     the Job, release of owned pods that no longer match), as the
//     replicaset controller does; adopted pods get the tracking finalizer.
//   - Counts finished pods with the batch.kubernetes.io/job-tracking
//     finalizer in two phases (upstream's trackJobStatusAndRemoveFinalizers):
//     a finished pod's UID first goes into status.uncountedTerminatedPods (or
//     its index into completedIndexes), the status is written, then the
//     finalizer is removed, and only a UID whose pod no longer has the
//     finalizer moves from uncountedTerminatedPods into succeeded/failed. A
//     controller that restarts between any two steps counts nothing twice
//     and loses nothing.
//   - Decides whether the Job is done: FailureTarget then Failed (pod failure
//     policy FailJob, BackoffLimitExceeded, DeadlineExceeded,
//     MaxFailedIndexesExceeded, FailedIndexes), SuccessCriteriaMet then
//     Complete (completions reached, or the success policy). The terminal
//     condition waits until every pod is counted and none terminates.
//   - Otherwise creates pods (Indexed: the lowest pending indexes, with
//     the index annotation, label, JOB_COMPLETION_INDEX and hostname),
//     after the pod failure backoff, or deletes excess, duplicate and
//     (suspended Job) all active pods.
//
// Deviations: pod failure backoff is capped at 6 minutes (upstream now caps
// it at 10); JOB_COMPLETION_INDEX comes from the index annotation (upstream
// reads the label, which holds the same value); while the backoff holds a
// replacement back, status.active keeps counting the running pods
// (upstream writes 0 for that sync); an adopted pod gets the tracking
// finalizer in a patch after the owner-reference patch of
// client/controller's RefManager (upstream sends both in one); the
// manageJob/podControl test seams are replaced by the fake clientset.
package job

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sort"
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
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

const (
	// Name is the controller's canonical name.
	Name = "job-controller"
	// trackingFinalizer keeps a finished pod until the Job's status counts it.
	trackingFinalizer = "batch.kubernetes.io/job-tracking"
	// managedByDefault is the spec.managedBy value (or none) this
	// controller syncs.
	managedByDefault = "kubernetes.io/job-controller"

	defaultWorkers = 5
	// syncJobBatchPeriod batches the syncs pod events cause. Upstream
	// waits 1 s; BenchmarkHollowJob1000 took 3.5 s to Complete with it and
	// 2.8-3.0 s with 100 ms, still at most ten syncs a second per Job.
	syncJobBatchPeriod = 100 * time.Millisecond
	// maxUncountedPods caps status.uncountedTerminatedPods (about 20 KB).
	maxUncountedPods = 500
	// maxPodCreateDeletePerSync caps one sync's creates or deletes.
	maxPodCreateDeletePerSync = 500
)

var jobKind, _ = scheme.ForMessage(&batchv1.Job{})

// Controller syncs Jobs with their pods.
type Controller struct {
	client      *client.Client
	jobs        informers.Lister[*batchv1.Job]
	pods        informers.Lister[*corev1.Pod]
	regs        []informer.Registration
	queue       workqueue.Queue
	orphanQueue workqueue.Queue
	recorder    record.Recorder
	exp         *controller.Expectations
	finExp      *finalizerExpectations
	backoff     *backoffStore
	workers     int
	now         func() time.Time
	log         *slog.Logger
	m           *metrics
	// batchPeriod delays syncs caused by pod events and status writes.
	batchPeriod time.Duration
}

// New is the "job" controller.
func New(cc controllers.Context) (controllers.Controller, error) { return newController(cc) }

func newController(cc controllers.Context) (*Controller, error) {
	m, err := newMetrics(cc.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Controller{
		client:      cc.Client,
		queue:       workqueue.NewWithMetrics("job", cc.Registerer),
		orphanQueue: workqueue.NewWithMetrics("job_orphan_pod", cc.Registerer),
		exp:         controller.NewExpectations(),
		finExp:      newFinalizerExpectations(),
		backoff:     newBackoffStore(),
		workers:     defaultWorkers,
		now:         cc.Clock(),
		log:         cc.Log(),
		m:           m,
		batchPeriod: syncJobBatchPeriod,
	}
	c.workers = cc.WorkersFor("job", defaultWorkers)
	c.recorder = cc.EventRecorder(Name)
	jobs := informers.For[*batchv1.Job](cc.Informers)
	pods := informers.For[*corev1.Pod](cc.Informers)
	c.jobs, c.pods = jobs.Lister(), pods.Lister()
	c.regs = append(c.regs,
		jobs.Informer().AddHandler(informer.Handler{OnAdd: c.addJob, OnUpdate: c.updateJob, OnDelete: c.deleteJob}),
		pods.Informer().AddHandler(informer.Handler{OnAdd: c.addPod, OnUpdate: c.updatePod, OnDelete: c.onPodDeleteFinal}))
	return c, nil
}

// Name is the canonical name.
func (c *Controller) Name() string { return Name }

// Run waits for the caches, then syncs Jobs and cleans orphan pods' finalizers
// until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.log.Info("Starting job controller")
	defer c.log.Info("Shutting down job controller")
	if !informers.WaitForCacheSync(ctx, c.regs...) {
		c.queue.ShutDown()
		c.orphanQueue.ShutDown()
		return nil
	}
	var wg sync.WaitGroup
	wg.Go(func() { controller.Run(ctx, c.orphanQueue, 1, c.syncOrphanPod, c.log) })
	controller.Run(ctx, c.queue, c.workers, c.sync, c.log)
	wg.Wait()
	return nil
}

// ---- event handlers ----

func (c *Controller) enqueue(obj scheme.Object, delay time.Duration) {
	key := controller.KeyFunc(obj)
	if delay <= 0 {
		c.queue.Add(key)
		return
	}
	c.queue.AddAfter(key, delay)
}

func (c *Controller) addJob(obj scheme.Object) { c.enqueue(obj, 0) }

func (c *Controller) updateJob(oldObj, curObj scheme.Object) {
	old, cur := oldObj.(*batchv1.Job), curObj.(*batchv1.Job)
	if old.GetMetadata().GetGeneration() == cur.GetMetadata().GetGeneration() {
		c.enqueue(cur, c.batchPeriod)
	} else {
		c.enqueue(cur, 0)
	}
	if isFinished(cur) {
		c.cleanupPodFinalizers(cur)
	}
	// A new activeDeadlineSeconds needs its own timer.
	if st, curADS := cur.GetStatus().GetStartTime(), specOf(cur).ActiveDeadlineSeconds; st != nil && curADS != nil {
		oldADS := specOf(old).ActiveDeadlineSeconds
		if oldADS == nil || *oldADS != *curADS {
			total := time.Duration(*curADS) * time.Second
			c.queue.AddAfter(controller.KeyFunc(cur), total-c.now().Sub(st.AsTime()))
		}
	}
}

func (c *Controller) deleteJob(obj scheme.Object) {
	c.enqueue(obj, 0)
	c.cleanupPodFinalizers(obj.(*batchv1.Job))
}

// cleanupPodFinalizers hands every pod of a finished or deleted Job that
// still has the tracking finalizer to the orphan worker.
func (c *Controller) cleanupPodFinalizers(job *batchv1.Job) {
	for _, p := range c.pods.Namespace(job.GetMetadata().GetNamespace()).List(labels.Everything()) {
		if hasTrackingFinalizer(p) && controller.IsControlledBy(p, job) {
			c.orphanQueue.Add(controller.KeyFunc(p))
		}
	}
}

func (c *Controller) resolveControllerRef(namespace string, ref *metav1.OwnerReference) *batchv1.Job {
	if ref.GetKind() != "Job" {
		return nil
	}
	j, err := c.jobs.Get(namespace, ref.GetName())
	if err != nil || j.GetMetadata().GetUid() != ref.GetUid() {
		return nil
	}
	return j
}

func (c *Controller) podJobs(pod *corev1.Pod) []*batchv1.Job {
	var out []*batchv1.Job
	set := labels.Set(pod.GetMetadata().GetLabels())
	for _, j := range c.jobs.Namespace(pod.GetMetadata().GetNamespace()).List(labels.Everything()) {
		sel, err := metav1.LabelSelectorAsSelector(j.GetSpec().GetSelector())
		if err != nil || sel.Empty() || !sel.Matches(set) {
			continue
		}
		out = append(out, j)
	}
	if len(out) > 1 {
		c.log.Error("user error! more than one job is selecting pods with labels", "pod", controller.KeyFunc(pod), "labels", set.String())
	}
	return out
}

func (c *Controller) addPod(obj scheme.Object) {
	pod := obj.(*corev1.Pod)
	if pod.GetMetadata().GetDeletionTimestamp() != nil {
		c.onPodDelete(pod, false)
		return
	}
	if ref := metav1.GetControllerOf(pod.GetMetadata()); ref != nil {
		j := c.resolveControllerRef(pod.GetMetadata().GetNamespace(), ref)
		if j == nil {
			return
		}
		c.exp.CreationObserved(controller.KeyFunc(j))
		c.enqueue(j, c.batchPeriod)
		return
	}
	if hasTrackingFinalizer(pod) {
		c.orphanQueue.Add(controller.KeyFunc(pod))
	}
	for _, j := range c.podJobs(pod) {
		c.enqueue(j, c.batchPeriod)
	}
}

func (c *Controller) updatePod(oldObj, curObj scheme.Object) {
	old, cur := oldObj.(*corev1.Pod), curObj.(*corev1.Pod)
	if old.GetMetadata().GetResourceVersion() == cur.GetMetadata().GetResourceVersion() {
		return
	}
	if cur.GetMetadata().GetDeletionTimestamp() != nil {
		c.onPodDelete(cur, false)
		return
	}
	finalizerRemoved := !hasTrackingFinalizer(cur)
	curRef := metav1.GetControllerOf(cur.GetMetadata())
	oldRef := metav1.GetControllerOf(old.GetMetadata())
	refChanged := !proto.Equal(curRef, oldRef)
	if refChanged && oldRef != nil {
		if j := c.resolveControllerRef(old.GetMetadata().GetNamespace(), oldRef); j != nil {
			if finalizerRemoved {
				c.finExp.observed(controller.KeyFunc(j), cur.GetMetadata().GetUid())
			}
			c.enqueue(j, c.batchPeriod)
		}
	}
	if curRef != nil {
		j := c.resolveControllerRef(cur.GetMetadata().GetNamespace(), curRef)
		if j == nil {
			return
		}
		if finalizerRemoved {
			c.finExp.observed(controller.KeyFunc(j), cur.GetMetadata().GetUid())
		}
		c.enqueue(j, c.batchPeriod)
		return
	}
	if hasTrackingFinalizer(cur) {
		c.orphanQueue.Add(controller.KeyFunc(cur))
	}
	if refChanged || !maps.Equal(old.GetMetadata().GetLabels(), cur.GetMetadata().GetLabels()) {
		for _, j := range c.podJobs(cur) {
			c.enqueue(j, c.batchPeriod)
		}
	}
}

func (c *Controller) onPodDeleteFinal(obj scheme.Object) { c.onPodDelete(obj.(*corev1.Pod), true) }

// onPodDelete observes a deletion (final: the pod is gone; else it got a
// deletionTimestamp).
func (c *Controller) onPodDelete(pod *corev1.Pod, final bool) {
	ref := metav1.GetControllerOf(pod.GetMetadata())
	fin := hasTrackingFinalizer(pod)
	if ref == nil {
		if fin {
			c.orphanQueue.Add(controller.KeyFunc(pod))
		}
		return
	}
	j := c.resolveControllerRef(pod.GetMetadata().GetNamespace(), ref)
	if j == nil || isFinished(j) {
		if fin {
			c.orphanQueue.Add(controller.KeyFunc(pod))
		}
		return
	}
	key := controller.KeyFunc(j)
	c.exp.DeletionObserved(key)
	if final || !fin {
		c.finExp.observed(key, pod.GetMetadata().GetUid())
	}
	c.enqueue(j, c.batchPeriod)
}

// syncOrphanPod removes the tracking finalizer of a pod no unfinished Job
// controls.
func (c *Controller) syncOrphanPod(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	pod, err := c.pods.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ref := metav1.GetControllerOf(pod.GetMetadata()); ref != nil {
		if ref.GetKind() != "Job" || ref.GetApiVersion() != "batch/v1" {
			return nil
		}
		if j := c.resolveControllerRef(ns, ref); j != nil {
			if managedByOther(j) || !isFinished(j) {
				return nil
			}
		}
	}
	return c.removeFinalizer(ctx, pod)
}

// ---- pod helpers ----

func hasTrackingFinalizer(p *corev1.Pod) bool {
	return slices.Contains(p.GetMetadata().GetFinalizers(), trackingFinalizer)
}

func isTerminal(p *corev1.Pod) bool {
	ph := p.GetStatus().GetPhase()
	return ph == "Succeeded" || ph == "Failed"
}

func isPodActive(p *corev1.Pod) bool {
	return !isTerminal(p) && p.GetMetadata().GetDeletionTimestamp() == nil
}

func isPodTerminating(p *corev1.Pod) bool {
	return !isTerminal(p) && p.GetMetadata().GetDeletionTimestamp() != nil
}

func terminatingPods(pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if isPodTerminating(p) {
			out = append(out, p)
		}
	}
	return out
}

func isPodReady(p *corev1.Pod) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

// isPodFailed is upstream's: Failed, or (unless only failed pods are
// replaced) deleted before it succeeded.
func isPodFailed(p *corev1.Pod, job *batchv1.Job) bool {
	if p.GetStatus().GetPhase() == "Failed" {
		return true
	}
	if onlyReplaceFailedPods(job) {
		return false
	}
	return p.GetMetadata().GetDeletionTimestamp() != nil && p.GetStatus().GetPhase() != "Succeeded"
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, cs := range p.GetStatus().GetContainerStatuses() {
		n += cs.GetRestartCount()
	}
	return n
}

// sortActivePods orders pods the way upstream's controller.ActivePods
// does, the first to delete first: unscheduled, then pending, unknown,
// running; not ready before ready; more restarts first; newer first.
func sortActivePods(pods []*corev1.Pod) {
	phaseRank := map[string]int{"Pending": 0, "Unknown": 1, "Running": 2}
	sort.SliceStable(pods, func(i, j int) bool {
		a, b := pods[i], pods[j]
		if (a.GetSpec().GetNodeName() == "") != (b.GetSpec().GetNodeName() == "") {
			return a.GetSpec().GetNodeName() == ""
		}
		if pa, pb := phaseRank[a.GetStatus().GetPhase()], phaseRank[b.GetStatus().GetPhase()]; pa != pb {
			return pa < pb
		}
		if isPodReady(a) != isPodReady(b) {
			return !isPodReady(a)
		}
		if ra, rb := restarts(a), restarts(b); ra != rb {
			return ra > rb
		}
		return a.GetMetadata().GetCreationTimestamp().AsTime().After(b.GetMetadata().GetCreationTimestamp().AsTime())
	})
}

// ---- Job helpers ----

// withDefaults fills what the apiserver defaults, for Jobs that reached the
// cache without them (and the one default ours does not: backoffLimit of a
// Job with backoffLimitPerIndex is unlimited).
func withDefaults(j *batchv1.Job) {
	if j.Spec == nil {
		j.Spec = &batchv1.JobSpec{}
	}
	s := j.Spec
	if s.Completions == nil && s.Parallelism == nil {
		s.Completions, s.Parallelism = proto.Int32(1), proto.Int32(1)
	}
	if s.Parallelism == nil {
		s.Parallelism = proto.Int32(1)
	}
	if s.BackoffLimit == nil {
		if s.BackoffLimitPerIndex != nil {
			s.BackoffLimit = proto.Int32(math.MaxInt32)
		} else {
			s.BackoffLimit = proto.Int32(6)
		}
	}
	if s.CompletionMode == nil {
		s.CompletionMode = proto.String("NonIndexed")
	}
	if s.PodReplacementPolicy == nil {
		if s.PodFailurePolicy != nil {
			s.PodReplacementPolicy = proto.String("Failed")
		} else {
			s.PodReplacementPolicy = proto.String("TerminatingOrFailed")
		}
	}
	if j.Status == nil {
		j.Status = &batchv1.JobStatus{}
	}
	if j.Status.UncountedTerminatedPods == nil {
		j.Status.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{}
	}
}

// specOf is j's spec, never nil.
func specOf(j *batchv1.Job) *batchv1.JobSpec {
	if s := j.GetSpec(); s != nil {
		return s
	}
	return &batchv1.JobSpec{}
}

func isIndexed(j *batchv1.Job) bool { return j.GetSpec().GetCompletionMode() == "Indexed" }

func hasBackoffLimitPerIndex(j *batchv1.Job) bool { return specOf(j).BackoffLimitPerIndex != nil }

func onlyReplaceFailedPods(j *batchv1.Job) bool {
	if p := specOf(j).PodReplacementPolicy; p != nil {
		return *p == "Failed"
	}
	return j.GetSpec().GetPodFailurePolicy() != nil
}

func isSuspended(j *batchv1.Job) bool { return j.GetSpec().GetSuspend() }

func managedByOther(j *batchv1.Job) bool {
	m := specOf(j).ManagedBy
	return m != nil && *m != managedByDefault
}

func findCondition(st *batchv1.JobStatus, t string) *batchv1.JobCondition {
	for _, c := range st.GetConditions() {
		if c.GetType() == t {
			return c
		}
	}
	return nil
}

func hasTrueCondition(st *batchv1.JobStatus, t string) bool {
	c := findCondition(st, t)
	return c != nil && c.GetStatus() == "True"
}

// isFinished is upstream's IsJobFinished: Complete or Failed is True.
func isFinished(j *batchv1.Job) bool {
	return hasTrueCondition(j.GetStatus(), "Complete") || hasTrueCondition(j.GetStatus(), "Failed")
}

func newCondition(t, status, reason, message string, now time.Time) *batchv1.JobCondition {
	return &batchv1.JobCondition{Type: t, Status: status, Reason: reason, Message: message,
		LastProbeTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(now)}
}

// ensureCondition sets a condition of type t, replacing one of other
// status, reason or message; a False condition is never added where none
// was. It reports whether anything changed.
func ensureCondition(st *batchv1.JobStatus, t, status, reason, message string, now time.Time) bool {
	if c := findCondition(st, t); c != nil {
		if c.GetStatus() != status || c.GetReason() != reason || c.GetMessage() != message {
			*c = *newCondition(t, status, reason, message, now)
			return true
		}
		return false
	}
	if status == "False" {
		return false
	}
	st.Conditions = append(st.Conditions, newCondition(t, status, reason, message, now))
	return true
}

// ---- finalizer expectations ----

// finalizerExpectations are the pod UIDs, per Job, whose finalizer removal
// the controller requested but the informer has not shown yet: those pods
// are already on their way to being counted.
type finalizerExpectations struct {
	mu   sync.Mutex
	uids map[string]sets.Set[string]
}

func newFinalizerExpectations() *finalizerExpectations {
	return &finalizerExpectations{uids: map[string]sets.Set[string]{}}
}

func (f *finalizerExpectations) expect(key string, uids []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.uids[key]
	if s == nil {
		s = sets.New[string]()
		f.uids[key] = s
	}
	s.Insert(uids...)
}

func (f *finalizerExpectations) observed(key, uid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.uids[key]; s != nil {
		s.Delete(uid)
		if s.Len() == 0 {
			delete(f.uids, key)
		}
	}
}

func (f *finalizerExpectations) get(key string) sets.Set[string] {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.uids[key].Clone()
}

func (f *finalizerExpectations) delete(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.uids, key)
}

// ---- metrics ----

// metrics are upstream's job_controller_* metrics.
type metrics struct {
	syncDuration  *prometheus.HistogramVec
	syncs         *prometheus.CounterVec
	finished      *prometheus.CounterVec
	podsFinished  *prometheus.CounterVec
	policyActions *prometheus.CounterVec
	podsCreation  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const sub = "job_controller"
	m := &metrics{
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: sub, Name: "job_sync_duration_seconds",
			Help: "The time it took to sync a job", Buckets: prometheus.ExponentialBuckets(0.004, 2, 15)},
			[]string{"completion_mode", "result", "action"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: sub, Name: "job_syncs_total",
			Help: "The number of job syncs"}, []string{"completion_mode", "result", "action"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: sub, Name: "jobs_finished_total",
			Help: "The number of finished jobs"}, []string{"completion_mode", "result", "reason"}),
		podsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: sub, Name: "job_pods_finished_total",
			Help: "The number of finished Pods that are fully tracked"}, []string{"completion_mode", "result"}),
		policyActions: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: sub, Name: "pod_failures_handled_by_failure_policy_total",
			Help: "The number of failed Pods handled by failure policy with respect to the failure policy action applied based on the matched rule."},
			[]string{"action"}),
		podsCreation: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: sub, Name: "job_pods_creation_total",
			Help: "The number of Pods created by the Job controller labelled with a reason for the Pod creation."},
			[]string{"reason", "status"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.syncDuration, err = register(reg, m.syncDuration)
	if err != nil {
		return nil, err
	}
	for _, p := range []**prometheus.CounterVec{&m.syncs, &m.finished, &m.podsFinished, &m.policyActions, &m.podsCreation} {
		if *p, err = register(reg, *p); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name (a second controller instance in one process).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if o, ok := are.ExistingCollector.(T); ok {
				return o, nil
			}
		}
		var zero T
		return zero, fmt.Errorf("registering job controller metrics: %w", err)
	}
	return c, nil
}
