package job

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/record"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// Condition types and reasons, as upstream's batch/v1 spells them.
const (
	condComplete           = "Complete"
	condFailed             = "Failed"
	condSuspended          = "Suspended"
	condFailureTarget      = "FailureTarget"
	condSuccessCriteriaMet = "SuccessCriteriaMet"

	reasonPodFailurePolicy         = "PodFailurePolicy"
	reasonBackoffLimitExceeded     = "BackoffLimitExceeded"
	reasonDeadlineExceeded         = "DeadlineExceeded"
	reasonMaxFailedIndexesExceeded = "MaxFailedIndexesExceeded"
	reasonFailedIndexes            = "FailedIndexes"
	reasonSuccessPolicy            = "SuccessPolicy"
	reasonCompletionsReached       = "CompletionsReached"
)

// syncCtx is one sync's view of a Job and its pods (upstream's syncJobCtx).
type syncCtx struct {
	key                  string
	job                  *batchv1.Job
	pods                 []*corev1.Pod
	activePods           []*corev1.Pod
	finishedCondition    *batchv1.JobCondition
	succeeded, failed    int32
	prevSucceededIndexes intervals
	succeededIndexes     intervals
	failedIndexes        *intervals
	newBackoff           backoffRecord
	expectedRmFinalizers sets.Set[string]
	uncountedSucceeded   sets.Set[string]
	uncountedFailed      sets.Set[string]
	delayedDeletion      map[int]*corev1.Pod
	terminating          int32
	ready                int32
}

// trackedPods are the pods still to be counted: with the finalizer, not in
// skip, not awaiting their finalizer's removal and, for Indexed Jobs, with
// a valid index (upstream's getValidPodsWithFilter).
func (jc *syncCtx) trackedPods(skip sets.Set[string]) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range jc.pods {
		uid := p.GetMetadata().GetUid()
		if !hasTrackingFinalizer(p) || skip.Has(uid) || jc.expectedRmFinalizers.Has(uid) {
			continue
		}
		if isIndexed(jc.job) {
			if _, ok := validIndex(p, *jc.job.Spec.Completions); !ok {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

// newFinishedPods are the succeeded and failed pods not yet counted in any
// way.
func (jc *syncCtx) newFinishedPods() (succeeded, failed []*corev1.Pod) {
	for _, p := range jc.trackedPods(jc.uncountedSucceeded) {
		if p.GetStatus().GetPhase() == "Succeeded" {
			succeeded = append(succeeded, p)
		}
	}
	for _, p := range jc.trackedPods(jc.uncountedFailed) {
		if isPodFailed(p, jc.job) {
			failed = append(failed, p)
		}
	}
	return succeeded, failed
}

func completionModeLabel(j *batchv1.Job) string {
	if isIndexed(j) {
		return "Indexed"
	}
	return "NonIndexed"
}

// sync is upstream's syncJob.
func (c *Controller) sync(ctx context.Context, key string) (rerr error) {
	start := time.Now()
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	shared, err := c.jobs.Get(ns, name)
	if apierrors.IsNotFound(err) {
		c.log.Debug("Job has been deleted", "key", key)
		c.exp.DeleteExpectations(key)
		c.finExp.delete(key)
		c.backoff.remove(key)
		return nil
	}
	if err != nil {
		return err
	}
	if managedByOther(shared) {
		c.log.Debug("Skip syncing the job as it is managed by an external controller", "key", key, "controllerName", shared.GetSpec().GetManagedBy())
		return nil
	}
	if isFinished(shared) {
		c.backoff.remove(key)
		return nil
	}
	if m := specOf(shared).CompletionMode; m != nil && *m != "NonIndexed" && *m != "Indexed" {
		c.recorder.Event(shared, record.Warning, "UnknownCompletionMode", "Skipped Job sync because completion mode is unknown")
		return nil
	}
	job := proto.Clone(shared).(*batchv1.Job)
	withDefaults(job)
	mode := completionModeLabel(job)
	action := "reconciling"
	defer func() {
		result := "success"
		if rerr != nil {
			result = "error"
		}
		c.m.syncDuration.WithLabelValues(mode, result, action).Observe(time.Since(start).Seconds())
		c.m.syncs.WithLabelValues(mode, result, action).Inc()
	}()

	// Expectations before pods: a pod that satisfies them is in the cache.
	satisfied := c.exp.SatisfiedExpectations(key)
	pods, err := c.podsForJob(ctx, job)
	if err != nil {
		return err
	}
	var active []*corev1.Pod
	for _, p := range pods {
		if isPodActive(p) {
			active = append(active, p)
		}
	}
	st := job.Status
	jc := &syncCtx{
		key:                  key,
		job:                  job,
		pods:                 pods,
		activePods:           active,
		expectedRmFinalizers: c.finExp.get(key),
		uncountedSucceeded:   sets.New(st.UncountedTerminatedPods.GetSucceeded()...),
		uncountedFailed:      sets.New(st.UncountedTerminatedPods.GetFailed()...),
		terminating:          int32(len(terminatingPods(pods))),
	}
	for _, p := range active {
		if isPodReady(p) {
			jc.ready++
		}
	}
	activeCount := int32(len(active))
	newSucceeded, newFailed := jc.newFinishedPods()
	jc.succeeded = st.GetSucceeded() + int32(len(newSucceeded)) + int32(jc.uncountedSucceeded.Len())
	jc.failed = st.GetFailed() + int32(countedFailures(job, newFailed)) + int32(jc.uncountedFailed.Len())

	now := c.now()
	if st.StartTime == nil && !isSuspended(job) {
		st.StartTime = metav1.NewTime(now)
	}
	jc.newBackoff = c.backoff.next(key, newSucceeded, newFailed)

	if cond := findCondition(st, condSuccessCriteriaMet); cond != nil && cond.GetStatus() == "True" {
		jc.finishedCondition = cond
	}
	// With SuccessCriteriaMet the outcome is decided; the failure policy is
	// not looked at again.
	if jc.finishedCondition == nil {
		if ft := findCondition(st, condFailureTarget); ft != nil && ft.GetStatus() == "True" {
			jc.finishedCondition = newCondition(condFailed, "True", ft.GetReason(), ft.GetMessage(), now)
		} else if msg, ok := failJobMessage(job, pods); ok {
			jc.finishedCondition = newCondition(condFailureTarget, "True", reasonPodFailurePolicy, msg, now)
		}
	}
	if jc.finishedCondition == nil {
		switch {
		case jc.failed > job.Spec.GetBackoffLimit() || pastBackoffLimitOnFailure(job, pods):
			jc.finishedCondition = newCondition(condFailureTarget, "True", reasonBackoffLimitExceeded, "Job has reached the specified backoff limit", now)
		case c.pastActiveDeadline(job):
			jc.finishedCondition = newCondition(condFailureTarget, "True", reasonDeadlineExceeded, "Job was active longer than specified deadline", now)
		case job.Spec.ActiveDeadlineSeconds != nil && !isSuspended(job):
			d := time.Duration(job.Spec.GetActiveDeadlineSeconds())*time.Second - now.Sub(st.StartTime.AsTime())
			c.log.Debug("Job has activeDeadlineSeconds configuration. Will sync this job again", "key", key, "nextSyncIn", d)
			c.queue.AddAfter(key, d)
		}
	}
	if isIndexed(job) {
		jc.prevSucceededIndexes, jc.succeededIndexes = calculateSucceededIndexes(c.log, job, pods)
		jc.succeeded = int32(jc.succeededIndexes.total())
		if hasBackoffLimitPerIndex(job) {
			jc.failedIndexes = calculateFailedIndexes(c.log, job, pods)
			if jc.finishedCondition == nil {
				failedN := jc.failedIndexes.total()
				if m := job.Spec.MaxFailedIndexes; m != nil && failedN > int(*m) {
					jc.finishedCondition = newCondition(condFailureTarget, "True", reasonMaxFailedIndexesExceeded, "Job has exceeded the specified maximal number of failed indexes", now)
				} else if failedN > 0 && failedN+jc.succeededIndexes.total() >= int(*job.Spec.Completions) {
					jc.finishedCondition = newCondition(condFailureTarget, "True", reasonFailedIndexes, "Job has failed indexes", now)
				}
			}
			jc.delayedDeletion = podsWithDelayedDeletionPerIndex(jc)
		}
		if jc.finishedCondition == nil {
			if msg, ok := matchSuccessPolicy(c.log, job.Spec.GetSuccessPolicy(), *job.Spec.Completions, jc.succeededIndexes); ok {
				jc.finishedCondition = newCondition(condSuccessCriteriaMet, "True", reasonSuccessPolicy, msg, now)
			}
		}
	}

	var manageErr error
	suspendChanged := false
	if jc.finishedCondition != nil {
		// Finished: every active pod goes, and the Job is declared finished
		// only once none remains and the cache has all its pods.
		deletedReady, deleted, err := c.deleteActivePods(ctx, job, active)
		if deleted != activeCount || !satisfied {
			jc.finishedCondition = nil
		}
		activeCount -= deleted
		jc.terminating += deleted
		jc.ready -= deletedReady
		manageErr = err
	} else {
		managed := false
		if satisfied && job.GetMetadata().GetDeletionTimestamp() == nil {
			activeCount, action, manageErr = c.manageJob(ctx, jc)
			managed = true
		}
		var complete bool
		if job.Spec.Completions == nil {
			// A work queue: done when any pod succeeded and none runs.
			complete = jc.succeeded > 0 && activeCount == 0
		} else {
			complete = jc.succeeded >= *job.Spec.Completions && activeCount == 0
		}
		switch {
		case complete:
			jc.finishedCondition = newCondition(condSuccessCriteriaMet, "True", reasonCompletionsReached, "Reached expected number of succeeded pods", now)
		case managed && isSuspended(job):
			if ensureCondition(st, condSuspended, "True", "JobSuspended", "Job suspended", now) {
				suspendChanged = true
				c.recorder.Event(job, record.Normal, "Suspended", "Job suspended")
			}
		case managed:
			if ensureCondition(st, condSuspended, "False", "JobResumed", "Job resumed", now) {
				suspendChanged = true
				c.recorder.Event(job, record.Normal, "Resumed", "Job resumed")
				// activeDeadlineSeconds counts continuous activity: a
				// resumed Job starts its clock again.
				st.StartTime = metav1.NewTime(now)
			}
		}
	}

	needsUpdate := suspendChanged || activeCount != st.GetActive() || st.Ready == nil || *st.Ready != jc.ready ||
		st.Terminating == nil || *st.Terminating != jc.terminating
	st.Active = activeCount
	st.Ready = proto.Int32(jc.ready)
	st.Terminating = proto.Int32(jc.terminating)
	if err := c.trackStatusAndRemoveFinalizers(ctx, jc, needsUpdate); err != nil {
		return fmt.Errorf("tracking status: %w", err)
	}
	return manageErr
}

// countedFailures is how many of the failed pods count towards the backoff
// limit: all but those an Ignore rule matches.
func countedFailures(job *batchv1.Job, failed []*corev1.Pod) int {
	n := len(failed)
	if pfp := job.Spec.GetPodFailurePolicy(); pfp != nil {
		for _, p := range failed {
			if !matchPodFailurePolicy(pfp, p).countFailed {
				n--
			}
		}
	}
	return n
}

// failJobMessage is the message of the first failed pod a FailJob rule
// matches.
func failJobMessage(job *batchv1.Job, pods []*corev1.Pod) (string, bool) {
	pfp := job.Spec.GetPodFailurePolicy()
	if pfp == nil {
		return "", false
	}
	for _, p := range pods {
		if isPodFailed(p, job) {
			if m := matchPodFailurePolicy(pfp, p); m.action == actionFailJob {
				return m.failJobMessage, true
			}
		}
	}
	return "", false
}

// pastBackoffLimitOnFailure: with restartPolicy OnFailure, the restarts of
// running and pending pods' containers reach the backoff limit.
func pastBackoffLimitOnFailure(job *batchv1.Job, pods []*corev1.Pod) bool {
	if job.Spec.GetTemplate().GetSpec().GetRestartPolicy() != "OnFailure" {
		return false
	}
	var n int32
	for _, p := range pods {
		if ph := p.GetStatus().GetPhase(); ph == "Running" || ph == "Pending" {
			for _, cs := range p.GetStatus().GetInitContainerStatuses() {
				n += cs.GetRestartCount()
			}
			for _, cs := range p.GetStatus().GetContainerStatuses() {
				n += cs.GetRestartCount()
			}
		}
	}
	if job.Spec.GetBackoffLimit() == 0 {
		return n > 0
	}
	return n >= job.Spec.GetBackoffLimit()
}

func (c *Controller) pastActiveDeadline(job *batchv1.Job) bool {
	st := job.GetStatus().GetStartTime()
	if job.Spec.ActiveDeadlineSeconds == nil || st == nil || isSuspended(job) {
		return false
	}
	return c.now().Sub(st.AsTime()) >= time.Duration(job.Spec.GetActiveDeadlineSeconds())*time.Second
}

// podsForJob claims the Job's pods; adopted pods get the tracking
// finalizer. The result shares the cache's objects.
func (c *Controller) podsForJob(ctx context.Context, job *batchv1.Job) ([]*corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(job.Spec.GetSelector())
	if err != nil {
		return nil, fmt.Errorf("couldn't convert Job selector: %w", err)
	}
	all := c.pods.Namespace(job.GetMetadata().GetNamespace()).List(labels.Everything())
	owned := sets.New[string]()
	for _, p := range all {
		if controller.IsControlledBy(p, job) {
			owned.Insert(p.GetMetadata().GetUid())
		}
	}
	claimed, err := controller.Claim(ctx, controller.NewRefManager(c.client, job, jobKind, sel, nil), all)
	if err != nil {
		return claimed, err
	}
	for i, p := range claimed {
		if owned.Has(p.GetMetadata().GetUid()) || hasTrackingFinalizer(p) {
			continue
		}
		patch := fmt.Appendf(nil, `{"metadata":{"finalizers":[%q]}}`, trackingFinalizer)
		if _, err := client.For[*corev1.Pod](c.client, p.GetMetadata().GetNamespace()).Patch(ctx, p.GetMetadata().GetName(), "strategic", patch, ""); err != nil && !apierrors.IsNotFound(err) {
			return claimed, fmt.Errorf("adding tracking finalizer to adopted pod %s: %w", controller.KeyFunc(p), err)
		}
		cp := proto.Clone(p).(*corev1.Pod)
		cp.Metadata.Finalizers = append(cp.Metadata.Finalizers, trackingFinalizer)
		claimed[i] = cp
	}
	return claimed, nil
}

// manageJob is upstream's: towards the wanted number of active pods,
// deleting first, creating after the failure backoff. It returns the
// active count after its actions and the metrics' action label.
func (c *Controller) manageJob(ctx context.Context, jc *syncCtx) (int32, string, error) {
	job, key := jc.job, jc.key
	active := int32(len(jc.activePods))
	parallelism := *job.Spec.Parallelism

	if isSuspended(job) {
		c.log.Debug("Deleting all active pods in suspended job", "job", key, "active", active)
		victims := activePodsForRemoval(job, jc.activePods, int(active))
		c.exp.ExpectDeletions(key, len(victims))
		removedReady, removed, err := c.deleteJobPods(ctx, job, key, victims)
		jc.terminating += removed
		jc.ready -= removedReady
		return active - removed, "pods_deleted", err
	}

	var want int32
	if job.Spec.Completions == nil {
		want = parallelism
		if jc.succeeded > 0 {
			want = active
		}
	} else {
		want = max(min(*job.Spec.Completions-jc.succeeded, parallelism), 0)
	}
	victims := activePodsForRemoval(job, jc.activePods, int(max(active-want, 0)))
	if len(victims) > maxPodCreateDeletePerSync {
		victims = victims[:maxPodCreateDeletePerSync]
	}
	if len(victims) > 0 {
		c.exp.ExpectDeletions(key, len(victims))
		c.log.Debug("Too many pods running for job", "job", key, "deleted", len(victims), "target", want)
		removedReady, removed, err := c.deleteJobPods(ctx, job, key, victims)
		jc.terminating += removed
		jc.ready -= removedReady
		// Deleting and creating in one sync is never needed; deletion first.
		return active - removed, "pods_deleted", err
	}

	var terminating int32
	if onlyReplaceFailedPods(job) {
		terminating = jc.terminating
	}
	diff := want - terminating - active
	if diff <= 0 {
		return active, "tracking", nil
	}
	now := c.now()
	if !hasBackoffLimitPerIndex(job) {
		if d := jc.newBackoff.remaining(now); d > 0 {
			c.enqueueWithDelay(key, d)
			return active, "pods_created", nil
		}
	}
	diff = min(diff, maxPodCreateDeletePerSync)
	var indexes []int
	if isIndexed(job) {
		indexes = firstPendingIndexes(jc, int(diff), int(*job.Spec.Completions))
		if hasBackoffLimitPerIndex(job) {
			var wait time.Duration
			indexes, wait = creatableIndexes(now, indexes, jc.delayedDeletion)
			if len(indexes) == 0 && wait > 0 {
				c.enqueueWithDelay(key, wait)
				return active, "pods_created", nil
			}
		}
		diff = int32(len(indexes))
	}
	if diff == 0 {
		return active, "tracking", nil
	}

	c.exp.ExpectCreations(key, int(diff))
	c.log.Debug("Too few pods running", "key", key, "need", want, "creating", diff)
	template := proto.Clone(job.Spec.GetTemplate()).(*corev1.PodTemplateSpec)
	if template == nil {
		template = &corev1.PodTemplateSpec{}
	}
	if template.Spec == nil {
		template.Spec = &corev1.PodSpec{}
	}
	if isIndexed(job) {
		addCompletionIndexEnv(template.Spec)
	}
	ref := controller.NewControllerRef(job, jobKind)
	reason := "new"
	if jc.failed > 0 {
		reason = "recreate_terminating_or_failed"
		if onlyReplaceFailedPods(job) {
			reason = "recreate_failed"
		}
	}

	var (
		created   atomic.Int32
		mu        sync.Mutex
		firstErr  error
		remaining = diff
	)
	for batch := min(remaining, 1); remaining > 0; batch = min(2*batch, remaining) {
		var wg sync.WaitGroup
		failed := false
		for range batch {
			ix := noIndex
			if len(indexes) > 0 {
				ix, indexes = indexes[0], indexes[1:]
			}
			wg.Go(func() {
				err := c.createPod(ctx, job, template, ref, ix, jc.delayedDeletion[ix])
				if err == nil {
					created.Add(1)
					c.m.podsCreation.WithLabelValues(reason, "succeeded").Inc()
					return
				}
				if isNamespaceTerminating(err) {
					return
				}
				c.exp.CreationObserved(key)
				c.m.podsCreation.WithLabelValues(reason, "failed").Inc()
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				failed = true
				mu.Unlock()
			})
		}
		wg.Wait()
		remaining -= batch
		if failed {
			// Slow start: the pods never tried are not expected.
			if remaining > 0 {
				c.log.Info("Slow-start failure. Skipping creating pods, decrementing expectations", "skippedCount", remaining, "job", key)
				c.exp.LowerExpectations(key, int(remaining), 0)
			}
			break
		}
	}
	return active + created.Load(), "pods_created", firstErr
}

// creatableIndexes are the indexes whose per-index backoff is over, and
// otherwise the shortest wait.
func creatableIndexes(now time.Time, indexes []int, delayed map[int]*corev1.Pod) ([]int, time.Duration) {
	var ready []int
	var wait time.Duration
	for _, ix := range indexes {
		if d := remainingPerIndex(now, delayed[ix]); d == 0 {
			ready = append(ready, ix)
		} else if wait == 0 || d < wait {
			wait = d
		}
	}
	if len(ready) > 0 {
		return ready, 0
	}
	return nil, wait
}

func (c *Controller) enqueueWithDelay(key string, d time.Duration) {
	c.queue.AddAfter(key, max(d, c.batchPeriod))
}

// activePodsForRemoval: for Indexed Jobs the pods without a valid index and
// the duplicates of an index, then, by upstream's ranking, enough more to
// remove at least rmAtLeast.
func activePodsForRemoval(job *batchv1.Job, pods []*corev1.Pod, rmAtLeast int) []*corev1.Pod {
	var rm, left []*corev1.Pod
	if isIndexed(job) {
		rm, left = duplicateIndexPodsForRemoval(slices.Clone(pods), *job.Spec.Completions)
	} else {
		left = slices.Clone(pods)
	}
	if len(rm) < rmAtLeast {
		sortActivePods(left)
		rm = append(rm, left[:rmAtLeast-len(rm)]...)
	}
	return rm
}

func isNamespaceTerminating(err error) bool {
	return apierrors.IsForbidden(err) && containsTerminating(apierrors.Message(err))
}

func containsTerminating(msg string) bool {
	return strings.Contains(msg, "because it is being terminated")
}

// createPod creates one pod from the template; ix is its completion index
// (noIndex for NonIndexed Jobs) and replaced the failed pod it replaces,
// whose failure counts it inherits.
func (c *Controller) createPod(ctx context.Context, job *batchv1.Job, template *corev1.PodTemplateSpec, ref *metav1.OwnerReference, ix int, replaced *corev1.Pod) error {
	m := job.GetMetadata()
	tm := template.GetMetadata()
	pod := &corev1.Pod{
		Metadata: &metav1.ObjectMeta{
			GenerateName:    m.GetName() + "-",
			Namespace:       m.GetNamespace(),
			Labels:          maps.Clone(tm.GetLabels()),
			Annotations:     maps.Clone(tm.GetAnnotations()),
			Finalizers:      slices.Clone(tm.GetFinalizers()),
			OwnerReferences: []*metav1.OwnerReference{ref},
		},
		Spec: proto.Clone(template.GetSpec()).(*corev1.PodSpec),
	}
	if !slices.Contains(pod.Metadata.Finalizers, trackingFinalizer) {
		pod.Metadata.Finalizers = append(pod.Metadata.Finalizers, trackingFinalizer)
	}
	if ix != noIndex {
		if pod.Metadata.Annotations == nil {
			pod.Metadata.Annotations = map[string]string{}
		}
		if pod.Metadata.Labels == nil {
			pod.Metadata.Labels = map[string]string{}
		}
		pod.Metadata.Annotations[completionIndexKey] = strconv.Itoa(ix)
		pod.Metadata.Labels[completionIndexKey] = strconv.Itoa(ix)
		pod.Spec.Hostname = fmt.Sprintf("%s-%d", m.GetName(), ix)
		pod.Metadata.GenerateName = podGenerateNameWithIndex(m.GetName(), ix)
		if hasBackoffLimitPerIndex(job) {
			failed, ignored := newIndexFailureCounts(job, replaced)
			pod.Metadata.Annotations[indexFailureCountKey] = strconv.Itoa(int(failed))
			if ignored > 0 {
				pod.Metadata.Annotations[indexIgnoredFailureCountKey] = strconv.Itoa(int(ignored))
			}
		}
	}
	created, err := client.For[*corev1.Pod](c.client, m.GetNamespace()).Create(ctx, pod)
	if err != nil {
		if !isNamespaceTerminating(err) {
			c.recorder.Eventf(job, record.Warning, "FailedCreate", "Error creating: %v", apierrors.Message(err))
		}
		return err
	}
	c.recorder.Eventf(job, record.Normal, "SuccessfulCreate", "Created pod: %v", created.GetMetadata().GetName())
	return nil
}

// deletePod deletes a pod, guarded by its UID, with upstream's events. A
// pod already gone is no error.
func (c *Controller) deletePod(ctx context.Context, job *batchv1.Job, p *corev1.Pod) error {
	m := p.GetMetadata()
	uid := m.GetUid()
	_, err := client.For[*corev1.Pod](c.client, m.GetNamespace()).Delete(ctx, m.GetName(),
		client.DeleteOptions{Preconditions: &apipb.Preconditions{Uid: &uid}})
	if err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		c.recorder.Eventf(job, record.Warning, "FailedDelete", "Error deleting: %v", apierrors.Message(err))
		return err
	}
	c.recorder.Eventf(job, record.Normal, "SuccessfulDelete", "Deleted pod: %v", m.GetName())
	return nil
}

// deleteActivePods deletes the pods of a finishing Job, keeping their
// finalizers: trackStatusAndRemoveFinalizers counts them first.
func (c *Controller) deleteActivePods(ctx context.Context, job *batchv1.Job, pods []*corev1.Pod) (ready, deleted int32, err error) {
	return c.parallelDelete(pods, func(p *corev1.Pod) error { return c.deletePod(ctx, job, p) })
}

// deleteJobPods deletes pods the Job no longer wants (excess, duplicate,
// suspended): they will not be counted, so their finalizer goes first.
func (c *Controller) deleteJobPods(ctx context.Context, job *batchv1.Job, key string, pods []*corev1.Pod) (ready, deleted int32, err error) {
	return c.parallelDelete(pods, func(p *corev1.Pod) error {
		if err := c.removeFinalizer(ctx, p); err != nil {
			c.exp.DeletionObserved(key)
			return fmt.Errorf("removing completion finalizer: %w", err)
		}
		if err := c.deletePod(ctx, job, p); err != nil {
			c.exp.DeletionObserved(key)
			return err
		}
		return nil
	})
}

func (c *Controller) parallelDelete(pods []*corev1.Pod, del func(*corev1.Pod) error) (ready, deleted int32, err error) {
	var (
		wg       sync.WaitGroup
		nReady   atomic.Int32
		nDeleted atomic.Int32
		mu       sync.Mutex
	)
	for _, p := range pods {
		wg.Go(func() {
			if e := del(p); e != nil {
				mu.Lock()
				if err == nil {
					err = e
				}
				mu.Unlock()
				return
			}
			nDeleted.Add(1)
			if isPodReady(p) {
				nReady.Add(1)
			}
		})
	}
	wg.Wait()
	return nReady.Load(), nDeleted.Load(), err
}

// removeFinalizer drops the tracking finalizer (a strategic merge patch, as
// upstream's); a pod already gone is no error.
func (c *Controller) removeFinalizer(ctx context.Context, p *corev1.Pod) error {
	if !hasTrackingFinalizer(p) {
		return nil
	}
	patch := fmt.Appendf(nil, `{"metadata":{"$deleteFromPrimitiveList/finalizers":[%q]}}`, trackingFinalizer)
	_, err := client.For[*corev1.Pod](c.client, p.GetMetadata().GetNamespace()).Patch(ctx, p.GetMetadata().GetName(), "strategic", patch, "")
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// ---- status tracking ----

// trackStatusAndRemoveFinalizers is upstream's
// trackJobStatusAndRemoveFinalizers: finished pods go into
// uncountedTerminatedPods (or completedIndexes), the status is written,
// their finalizers are removed, and the pods whose finalizer is gone move
// into the counters; then the terminal condition, if due.
func (c *Controller) trackStatusAndRemoveFinalizers(ctx context.Context, jc *syncCtx, needsFlush bool) error {
	job := jc.job
	indexed := isIndexed(job)
	if indexed {
		sort.SliceStable(jc.pods, func(i, j int) bool { return completionIndex(jc.pods[i]) < completionIndex(jc.pods[j]) })
	}
	withFinalizer := sets.New[string]()
	for _, p := range jc.pods {
		if uid := p.GetMetadata().GetUid(); hasTrackingFinalizer(p) && !jc.expectedRmFinalizers.Has(uid) {
			withFinalizer.Insert(uid)
		}
	}
	old := counters{job.Status.GetSucceeded(), job.Status.GetFailed()}
	if moveCounted(job.Status, withFinalizer) {
		needsFlush = true
	}
	uncounted := job.Status.UncountedTerminatedPods
	var toRemove []*corev1.Pod
	var newSucceededIndexes []int
	policyActions := map[string]int{}
	reachedMax := false
	failing := jc.finishedCondition != nil && !isSuccessCriteriaMet(jc.finishedCondition)
	for _, p := range jc.pods {
		uid := p.GetMetadata().GetUid()
		if !hasTrackingFinalizer(p) || jc.expectedRmFinalizers.Has(uid) {
			continue // counted, or being counted
		}
		failed := isPodFailed(p, job)
		if !canRemoveFinalizer(jc, p, failed) {
			continue
		}
		toRemove = append(toRemove, p)
		switch {
		case p.GetStatus().GetPhase() == "Succeeded" && !jc.uncountedFailed.Has(uid):
			if indexed {
				// The index is the record: no UID needed.
				if ix, ok := validIndex(p, *job.Spec.Completions); ok && !jc.prevSucceededIndexes.has(ix) {
					newSucceededIndexes = append(newSucceededIndexes, ix)
					needsFlush = true
				}
			} else if !jc.uncountedSucceeded.Has(uid) {
				uncounted.Succeeded = append(uncounted.Succeeded, uid)
				needsFlush = true
			}
		case failed || failing:
			// A finishing Job counts every pod still running as failed.
			_, validIx := validIndex(p, job.Spec.GetCompletions())
			if jc.uncountedFailed.Has(uid) || (indexed && !validIx) {
				break
			}
			counted := true
			if pfp := job.Spec.GetPodFailurePolicy(); pfp != nil {
				m := matchPodFailurePolicy(pfp, p)
				if m.action != "" {
					policyActions[m.action]++
				}
				counted = m.countFailed
			}
			if counted {
				uncounted.Failed = append(uncounted.Failed, uid)
				needsFlush = true
			}
		}
		if len(newSucceededIndexes)+len(uncounted.Succeeded)+len(uncounted.Failed) >= maxUncountedPods {
			// Bounded status, and a big Job does not starve the others; the
			// status write brings it back.
			reachedMax = true
			break
		}
	}
	if indexed {
		jc.succeededIndexes = jc.succeededIndexes.withIndexes(newSucceededIndexes)
		s := jc.succeededIndexes.String()
		if s != job.Status.GetCompletedIndexes() {
			needsFlush = true
		}
		job.Status.Succeeded = int32(jc.succeededIndexes.total())
		job.Status.CompletedIndexes = s
		var failedStr *string
		if jc.failedIndexes != nil {
			failedStr = proto.String(jc.failedIndexes.String())
		}
		if (failedStr == nil) != (job.Status.FailedIndexes == nil) || (failedStr != nil && *failedStr != *job.Status.FailedIndexes) {
			job.Status.FailedIndexes = failedStr
			needsFlush = true
		}
	}
	now := c.now()
	if fc := jc.finishedCondition; fc != nil && fc.GetType() == condFailureTarget {
		// Recorded before any finalizer goes, so that a restart fails the
		// Job the same way.
		job.Status.Conditions = append(job.Status.Conditions, fc)
		needsFlush = true
		jc.finishedCondition = newCondition(condFailed, "True", fc.GetReason(), fc.GetMessage(), now)
	}
	if fc := jc.finishedCondition; isSuccessCriteriaMet(fc) {
		if !hasTrueCondition(job.Status, condSuccessCriteriaMet) {
			job.Status.Conditions = append(job.Status.Conditions, fc)
			needsFlush = true
		}
		jc.finishedCondition = newCondition(condComplete, "True", fc.GetReason(), fc.GetMessage(), now)
	}
	var err error
	if needsFlush, err = c.flushUncountedAndRemoveFinalizers(ctx, jc, toRemove, withFinalizer, &old, policyActions, needsFlush); err != nil {
		return err
	}
	finished := !reachedMax && c.enactJobFinished(jc)
	if finished {
		needsFlush = true
	}
	if needsFlush {
		updated, err := c.updateStatus(ctx, jc.job)
		if err != nil {
			return fmt.Errorf("removing uncounted pods from status: %w", err)
		}
		if finished {
			c.recordJobFinished(jc.job, jc.finishedCondition)
		}
		c.recordPodsFinished(updated, old)
	}
	return nil
}

type counters struct{ succeeded, failed int32 }

func isSuccessCriteriaMet(c *batchv1.JobCondition) bool {
	return c != nil && c.GetType() == condSuccessCriteriaMet && c.GetStatus() == "True"
}

// canRemoveFinalizer: the Job is finishing or being deleted, the pod
// succeeded, or it failed and is not the pod an index keeps until its
// replacement exists.
func canRemoveFinalizer(jc *syncCtx, p *corev1.Pod, failed bool) bool {
	if jc.job.GetMetadata().GetDeletionTimestamp() != nil || jc.finishedCondition != nil || p.GetStatus().GetPhase() == "Succeeded" {
		return true
	}
	if !failed {
		return false
	}
	if hasBackoffLimitPerIndex(jc.job) {
		if ix := completionIndex(p); ix != noIndex {
			if d, ok := jc.delayedDeletion[ix]; ok && d.GetMetadata().GetUid() == p.GetMetadata().GetUid() {
				return false
			}
		}
	}
	return true
}

// flushUncountedAndRemoveFinalizers writes the status holding the new
// uncounted UIDs (and interim conditions), removes the finalizers, and
// moves the UIDs whose pods lost theirs into the counters. It reports
// whether status changes remain to be written.
func (c *Controller) flushUncountedAndRemoveFinalizers(ctx context.Context, jc *syncCtx, toRemove []*corev1.Pod,
	withFinalizer sets.Set[string], old *counters, policyActions map[string]int, needsFlush bool) (bool, error) {
	if needsFlush {
		updated, err := c.updateStatus(ctx, jc.job)
		if err != nil {
			return needsFlush, fmt.Errorf("adding uncounted pods to status: %w", err)
		}
		c.backoff.update(jc.key, jc.newBackoff)
		c.recordPodsFinished(updated, *old)
		*old = counters{updated.GetStatus().GetSucceeded(), updated.GetStatus().GetFailed()}
		needsFlush = false
	}
	for a, n := range policyActions {
		c.m.policyActions.WithLabelValues(a).Add(float64(n))
	}
	var rmErr error
	if len(toRemove) > 0 {
		uids := make([]string, len(toRemove))
		for i, p := range toRemove {
			uids[i] = p.GetMetadata().GetUid()
		}
		c.finExp.expect(jc.key, uids)
		ok := make([]bool, len(toRemove))
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i, p := range toRemove {
			wg.Go(func() {
				if err := c.removeFinalizer(ctx, p); err != nil {
					// No update will show this removal.
					c.finExp.observed(jc.key, p.GetMetadata().GetUid())
					mu.Lock()
					if rmErr == nil {
						rmErr = fmt.Errorf("removing tracking finalizer: %w", err)
					}
					mu.Unlock()
					return
				}
				ok[i] = true
			})
		}
		wg.Wait()
		for i, p := range toRemove {
			if ok[i] {
				withFinalizer.Delete(p.GetMetadata().GetUid())
			}
		}
	}
	if moveCounted(jc.job.Status, withFinalizer) {
		needsFlush = true
	}
	if rmErr != nil && needsFlush {
		// Keep the progress made.
		if _, err := c.updateStatus(ctx, jc.job); err != nil {
			return needsFlush, fmt.Errorf("removing uncounted pods from status: %w", err)
		}
	}
	return needsFlush, rmErr
}

// moveCounted moves the uncounted UIDs whose pod no longer has the
// finalizer into succeeded and failed (upstream's
// cleanUncountedPodsWithoutFinalizers).
func moveCounted(st *batchv1.JobStatus, withFinalizer sets.Set[string]) bool {
	u := st.UncountedTerminatedPods
	changed := false
	keep := func(uids []string) []string {
		var out []string
		for _, uid := range uids {
			if withFinalizer.Has(uid) {
				out = append(out, uid)
			}
		}
		return out
	}
	if k := keep(u.GetSucceeded()); len(k) != len(u.GetSucceeded()) {
		st.Succeeded += int32(len(u.Succeeded) - len(k))
		u.Succeeded = k
		changed = true
	}
	if k := keep(u.GetFailed()); len(k) != len(u.GetFailed()) {
		st.Failed += int32(len(u.Failed) - len(k))
		u.Failed = k
		changed = true
	}
	return changed
}

// enactJobFinished sets the terminal condition once nothing is left to
// count and no pod terminates.
func (c *Controller) enactJobFinished(jc *syncCtx) bool {
	fc := jc.finishedCondition
	if fc == nil {
		return false
	}
	st := jc.job.Status
	if n := len(st.UncountedTerminatedPods.GetSucceeded()) + len(st.UncountedTerminatedPods.GetFailed()); n > 0 {
		c.log.Debug("Delaying marking the Job as finished, because there are still uncounted pod(s)", "job", jc.key, "condition", fc.GetType(), "count", n)
		return false
	}
	if jc.terminating > 0 {
		c.log.Debug("Delaying marking the Job as finished, because there are still terminating pod(s)", "job", jc.key, "condition", fc.GetType(), "count", jc.terminating)
		return false
	}
	ensureCondition(st, fc.GetType(), fc.GetStatus(), fc.GetReason(), fc.GetMessage(), c.now())
	if fc.GetType() == condComplete {
		st.CompletionTime = findCondition(st, condComplete).GetLastTransitionTime()
	}
	return true
}

func (c *Controller) recordJobFinished(job *batchv1.Job, fc *batchv1.JobCondition) {
	mode := completionModeLabel(job)
	if fc.GetType() == condComplete {
		if job.Spec.Completions != nil && job.Status.GetSucceeded() > *job.Spec.Completions {
			c.recorder.Event(job, record.Warning, "TooManySucceededPods", "Too many succeeded pods running after completion count reached")
		}
		c.recorder.Event(job, record.Normal, "Completed", "Job completed")
		c.m.finished.WithLabelValues(mode, "succeeded", "").Inc()
		return
	}
	c.recorder.Event(job, record.Warning, fc.GetReason(), fc.GetMessage())
	c.m.finished.WithLabelValues(mode, "failed", fc.GetReason()).Inc()
}

func (c *Controller) recordPodsFinished(job *batchv1.Job, old counters) {
	mode := completionModeLabel(job)
	if d := job.GetStatus().GetSucceeded() - old.succeeded; d > 0 {
		c.m.podsFinished.WithLabelValues(mode, "succeeded").Add(float64(d))
	}
	if d := job.GetStatus().GetFailed() - old.failed; d > 0 {
		c.m.podsFinished.WithLabelValues(mode, "failed").Add(float64(d))
	}
}

// updateStatus writes job's status, guarded by its resourceVersion; a
// conflict fails the sync, which is retried from the cache. The result
// carries the defaults the controller computes with.
func (c *Controller) updateStatus(ctx context.Context, job *batchv1.Job) (*batchv1.Job, error) {
	updated, err := client.For[*batchv1.Job](c.client, job.GetMetadata().GetNamespace()).UpdateStatus(ctx, job)
	if err != nil {
		return nil, err
	}
	// Keep the computed view (defaults, status being built) but move to
	// the new resourceVersion for the next write.
	job.Metadata.ResourceVersion = updated.GetMetadata().GetResourceVersion()
	return updated, nil
}
