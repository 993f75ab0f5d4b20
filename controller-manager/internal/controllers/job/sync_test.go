package job

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func TestNonIndexedJobRunsToCompletion(t *testing.T) {
	f := newFixture(t, newJob("pi", 3, 2))
	j := f.syncUntil("pi", "two pods", func(*batchv1.Job) bool { return len(f.pods()) == 2 })
	if j.Status.GetStartTime() == nil {
		t.Error("startTime not set")
	}
	for _, p := range f.pods() {
		ref := metav1.GetControllerOf(p.Metadata)
		if ref == nil || ref.Kind != "Job" || ref.Name != "pi" || ref.Uid != "uid-pi" || !ref.GetController() {
			t.Errorf("pod %s controller ref %v", p.Metadata.Name, ref)
		}
		if !hasTrackingFinalizer(p) || !strings.HasPrefix(p.Metadata.Name, "pi-") {
			t.Errorf("pod %s finalizers %v", p.Metadata.Name, p.Metadata.Finalizers)
		}
	}
	f.waitCache()
	f.syncUntil("pi", "active 2", func(j *batchv1.Job) bool { return j.Status.GetActive() == 2 })

	// Both succeed: a third pod is created for the last completion.
	for _, p := range f.pods() {
		f.finish(p, "Succeeded", 0)
	}
	f.syncUntil("pi", "succeeded 2, third pod", func(j *batchv1.Job) bool {
		return j.Status.GetSucceeded() == 2 && len(f.activePods()) == 1
	})
	for _, p := range f.pods() {
		if p.Status.GetPhase() == "Succeeded" && hasTrackingFinalizer(p) {
			t.Errorf("counted pod %s keeps its finalizer", p.Metadata.Name)
		}
	}
	f.finish(f.activePods()[0], "Succeeded", 0)
	j = f.syncUntil("pi", "Complete", func(j *batchv1.Job) bool { return hasCond(j, condComplete) })
	if j.Status.GetSucceeded() != 3 || j.Status.GetFailed() != 0 || j.Status.GetActive() != 0 {
		t.Errorf("status %v, want succeeded 3", j.Status)
	}
	if c := condition(j, condSuccessCriteriaMet); c == nil || c.Reason != reasonCompletionsReached || c.Message != "Reached expected number of succeeded pods" {
		t.Errorf("SuccessCriteriaMet condition %v", c)
	}
	if c := condition(j, condComplete); c.Reason != reasonCompletionsReached {
		t.Errorf("Complete condition %v", c)
	}
	if j.Status.CompletionTime == nil || len(j.Status.GetUncountedTerminatedPods().GetSucceeded()) != 0 {
		t.Errorf("completionTime %v uncounted %v", j.Status.CompletionTime, j.Status.UncountedTerminatedPods)
	}
	ev := f.events()
	if countPrefix(ev, "Normal SuccessfulCreate Created pod: pi-") != 3 || countPrefix(ev, "Normal Completed Job completed") != 1 {
		t.Errorf("events %v", ev)
	}
	if got := testutil.ToFloat64(f.c.m.finished.WithLabelValues("NonIndexed", "succeeded", "")); got != 1 {
		t.Errorf("job_controller_jobs_finished_total{succeeded} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(f.c.m.podsFinished.WithLabelValues("NonIndexed", "succeeded")); got != 3 {
		t.Errorf("job_controller_job_pods_finished_total{succeeded} = %v, want 3", got)
	}
	// Finished: nothing more happens.
	n := len(f.cs.Actions())
	f.waitCache()
	if err := f.c.sync(f.ctx, "default/pi"); err != nil {
		t.Fatal(err)
	}
	if m := len(f.cs.Actions()); m != n {
		t.Errorf("a finished Job's sync made %d requests", m-n)
	}
}

func TestIndexedJobPodsAndCompletedIndexes(t *testing.T) {
	j := indexed(newJob("idx", 4, 2))
	j.Spec.Template.Spec.Subdomain = "svc"
	f := newFixture(t, j)
	f.syncUntil("idx", "two pods", func(*batchv1.Job) bool { return len(f.pods()) == 2 })
	got := map[string]*corev1.Pod{}
	for _, p := range f.pods() {
		got[p.Metadata.Annotations[completionIndexKey]] = p
	}
	for _, ix := range []string{"0", "1"} {
		p := got[ix]
		if p == nil {
			t.Fatalf("no pod for index %s: %v", ix, got)
		}
		if p.Metadata.Labels[completionIndexKey] != ix || p.Spec.Hostname != "idx-"+ix || p.Spec.Subdomain != "svc" ||
			!strings.HasPrefix(p.Metadata.Name, "idx-"+ix+"-") {
			t.Errorf("pod %s: labels %v hostname %q subdomain %q", p.Metadata.Name, p.Metadata.Labels, p.Spec.Hostname, p.Spec.Subdomain)
		}
		env := p.Spec.Containers[0].Env
		if len(env) != 1 || env[0].Name != "JOB_COMPLETION_INDEX" ||
			env[0].GetValueFrom().GetFieldRef().GetFieldPath() != "metadata.annotations['batch.kubernetes.io/job-completion-index']" {
			t.Errorf("pod %s env %v", p.Metadata.Name, env)
		}
	}
	f.waitCache()
	f.finish(got["1"], "Succeeded", 0)
	f.syncUntil("idx", "index 1 done, index 2 started", func(j *batchv1.Job) bool {
		return j.Status.GetCompletedIndexes() == "1" && j.Status.GetSucceeded() == 1 && len(f.activePods()) == 2
	})
	idx := []string{}
	for _, p := range f.activePods() {
		idx = append(idx, p.Metadata.Annotations[completionIndexKey])
	}
	slices.Sort(idx)
	if !slices.Equal(idx, []string{"0", "2"}) {
		t.Errorf("active indexes %v, want 0 and 2", idx)
	}
	for _, p := range f.activePods() {
		f.finish(p, "Succeeded", 0)
	}
	f.syncUntil("idx", "0-2 done", func(j *batchv1.Job) bool { return j.Status.GetCompletedIndexes() == "0-2" })
	for _, p := range f.activePods() {
		f.finish(p, "Succeeded", 0)
	}
	j = f.syncUntil("idx", "Complete", func(j *batchv1.Job) bool { return hasCond(j, condComplete) })
	if j.Status.GetCompletedIndexes() != "0-3" || j.Status.GetSucceeded() != 4 {
		t.Errorf("status %v", j.Status)
	}
}

func TestBackoffLimitExceededFailsJob(t *testing.T) {
	j := newJob("bad", 1, 1)
	j.Spec.BackoffLimit = proto.Int32(1)
	f := newFixture(t, j)
	f.syncUntil("bad", "pod", func(*batchv1.Job) bool { return len(f.pods()) == 1 })
	f.waitCache()
	f.finish(f.pods()[0], "Failed", 1)
	// The first failure is counted; the replacement waits 10 s.
	f.syncUntil("bad", "one failure", func(j *batchv1.Job) bool { return j.Status.GetFailed() == 1 })
	f.waitCache()
	if err := f.c.sync(f.ctx, "default/bad"); err != nil {
		t.Fatal(err)
	}
	if n := len(f.activePods()); n != 0 {
		t.Fatalf("%d pods created within the 10 s backoff", n)
	}
	f.clock.Step(11 * time.Second)
	f.syncUntil("bad", "replacement", func(*batchv1.Job) bool { return len(f.activePods()) == 1 })
	f.waitCache()
	f.finish(f.activePods()[0], "Failed", 1)
	j = f.syncUntil("bad", "Failed", func(j *batchv1.Job) bool { return hasCond(j, condFailed) })
	if c := condition(j, condFailed); c.Reason != reasonBackoffLimitExceeded || c.Message != "Job has reached the specified backoff limit" {
		t.Errorf("Failed condition %v", c)
	}
	if !hasCond(j, condFailureTarget) || j.Status.GetFailed() != 2 || j.Status.CompletionTime != nil {
		t.Errorf("status %v", j.Status)
	}
	if ev := f.events(); countPrefix(ev, "Warning BackoffLimitExceeded Job has reached the specified backoff limit") != 1 {
		t.Errorf("events %v", ev)
	}
	for _, p := range f.pods() {
		if hasTrackingFinalizer(p) {
			t.Errorf("pod %s keeps its finalizer", p.Metadata.Name)
		}
	}
}

func TestActiveDeadlineExceeded(t *testing.T) {
	j := newJob("slow", 1, 2)
	j.Spec.ActiveDeadlineSeconds = proto.Int64(30)
	f := newFixture(t, j)
	f.syncUntil("slow", "pods", func(*batchv1.Job) bool { return len(f.pods()) == 1 })
	f.waitCache()
	f.clock.Step(31 * time.Second)
	j = f.syncUntil("slow", "Failed", func(j *batchv1.Job) bool {
		// Play the apiserver finishing the deletion: the pod's finalizer is
		// gone once counted.
		return hasCond(j, condFailed)
	})
	if c := condition(j, condFailed); c.Reason != reasonDeadlineExceeded || c.Message != "Job was active longer than specified deadline" {
		t.Errorf("condition %v", c)
	}
	if len(f.pods()) != 0 {
		t.Errorf("pods left: %v", f.pods())
	}
	if j.Status.GetFailed() != 1 || j.Status.GetActive() != 0 {
		t.Errorf("status %v: the running pod counts as failed", j.Status)
	}
	if ev := f.events(); countPrefix(ev, "Warning DeadlineExceeded") != 1 || countPrefix(ev, "Normal SuccessfulDelete") != 1 {
		t.Errorf("events %v", ev)
	}
}

func TestSuspendAndResume(t *testing.T) {
	f := newFixture(t, newJob("s", 4, 2))
	f.syncUntil("s", "pods", func(*batchv1.Job) bool { return len(f.pods()) == 2 })
	f.waitCache()
	start := f.job("s").Status.GetStartTime().AsTime()

	cur := f.job("s")
	cur.Spec.Suspend = proto.Bool(true)
	if _, err := f.cs.Tracker().Get(jobKind, "default", "s"); err != nil {
		t.Fatal(err)
	}
	updateJob(t, f, cur)
	f.waitCache()
	j := f.syncUntil("s", "suspended", func(j *batchv1.Job) bool { return hasCond(j, condSuspended) && len(f.pods()) == 0 })
	if c := condition(j, condSuspended); c.Reason != "JobSuspended" || c.Message != "Job suspended" {
		t.Errorf("condition %v", c)
	}
	if j.Status.GetActive() != 0 || j.Status.GetFailed() != 0 {
		t.Errorf("status %v: suspended pods are not failures", j.Status)
	}
	if ev := f.events(); countPrefix(ev, "Normal Suspended Job suspended") != 1 || countPrefix(ev, "Normal SuccessfulDelete") != 2 {
		t.Errorf("events %v", ev)
	}

	f.clock.Step(time.Minute)
	f.waitCache()
	cur = f.job("s")
	cur.Spec.Suspend = proto.Bool(false)
	updateJob(t, f, cur)
	f.waitCache()
	j = f.syncUntil("s", "resumed", func(j *batchv1.Job) bool {
		c := condition(j, condSuspended)
		return c != nil && c.Status == "False" && len(f.pods()) == 2
	})
	if c := condition(j, condSuspended); c.Reason != "JobResumed" || c.Message != "Job resumed" {
		t.Errorf("condition %v", c)
	}
	if got := j.Status.GetStartTime().AsTime(); !got.After(start) {
		t.Errorf("startTime %v not reset on resume (was %v)", got, start)
	}
	if ev := f.events(); countPrefix(ev, "Normal Resumed Job resumed") != 1 {
		t.Errorf("events %v", ev)
	}
}

func TestCreatedSuspendedJobHasNoStartTime(t *testing.T) {
	j := newJob("later", 1, 1)
	j.Spec.Suspend = proto.Bool(true)
	f := newFixture(t, j)
	j = f.syncUntil("later", "suspended", func(j *batchv1.Job) bool { return hasCond(j, condSuspended) })
	if j.Status.StartTime != nil || len(f.pods()) != 0 {
		t.Errorf("startTime %v, %d pods", j.Status.StartTime, len(f.pods()))
	}
}

// TestRestartCountsNothingTwice: a controller that died between writing
// uncountedTerminatedPods and removing finalizers (or between removing them
// and moving the UIDs into the counters) is replaced by a new one that
// finishes the job without counting any pod twice.
func TestRestartCountsNothingTwice(t *testing.T) {
	job := newJob("r", 3, 3)
	job.Metadata.ResourceVersion = ""
	mkPod := func(name, phase string, finalizer bool) *corev1.Pod {
		p := &corev1.Pod{
			Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name,
				Labels:          job.Spec.Template.Metadata.Labels,
				OwnerReferences: []*metav1.OwnerReference{metav1.NewControllerRef(job, "batch/v1", "Job")}},
			Spec:   &corev1.PodSpec{},
			Status: &corev1.PodStatus{Phase: phase},
		}
		if finalizer {
			p.Metadata.Finalizers = []string{trackingFinalizer}
		}
		return p
	}
	// a: recorded as uncounted, finalizer not yet removed.
	// b: recorded as uncounted, finalizer already removed.
	// c: counted long ago (status.succeeded 1), no finalizer.
	job.Status = &batchv1.JobStatus{Succeeded: 1, StartTime: metav1.Now(),
		UncountedTerminatedPods: &batchv1.UncountedTerminatedPods{Succeeded: []string{"uid-a", "uid-b"}}}
	f := newFixture(t, job, mkPod("a", "Succeeded", true), mkPod("b", "Succeeded", false), mkPod("c", "Succeeded", false))

	j := f.syncUntil("r", "Complete", func(j *batchv1.Job) bool { return hasCond(j, condComplete) })
	if j.Status.GetSucceeded() != 3 || len(j.Status.GetUncountedTerminatedPods().GetSucceeded()) != 0 {
		t.Errorf("status %v, want exactly 3 succeeded", j.Status)
	}
	if n := len(f.cs.Actions()); n == 0 {
		t.Fatal("no requests")
	}
	for _, a := range f.cs.Actions() {
		if a.Verb == "create" && a.Resource == "pods" {
			t.Errorf("created a pod although all completions are done")
		}
	}
	for _, p := range f.pods() {
		if hasTrackingFinalizer(p) {
			t.Errorf("pod %s keeps the finalizer", p.Metadata.Name)
		}
	}

	// A second instance over the same objects changes nothing.
	g := startController(t, f.cs, f.clock)
	g.waitCache()
	if err := g.c.sync(g.ctx, "default/r"); err != nil {
		t.Fatal(err)
	}
	if got := g.job("r").Status.GetSucceeded(); got != 3 {
		t.Errorf("second instance: succeeded %d", got)
	}
}

// TestRestartBetweenPhases runs one controller until it has written the
// uncounted UIDs, fails the finalizer removal, and lets a fresh controller
// take over.
func TestRestartBetweenPhases(t *testing.T) {
	f := newFixture(t, newJob("two", 2, 2))
	f.syncUntil("two", "pods", func(*batchv1.Job) bool { return len(f.pods()) == 2 })
	f.waitCache()
	for _, p := range f.pods() {
		f.finish(p, "Succeeded", 0)
	}
	f.waitCache()
	// The first instance records the pods, then loses every finalizer patch.
	f.cs.PrependReactor("patch", "pods", func(a fakeAction) (bool, schemeObject, error) {
		return true, nil, errUnavailable
	})
	if err := f.c.sync(f.ctx, "default/two"); err == nil {
		t.Fatal("sync succeeded although finalizers could not be removed")
	}
	j := f.job("two")
	if len(j.Status.GetUncountedTerminatedPods().GetSucceeded()) != 2 || j.Status.GetSucceeded() != 0 {
		t.Fatalf("after phase one: %v", j.Status)
	}
	// A new instance (no reactor: new clientset view over the same store is
	// not possible, so drop the reactor by starting afresh on a copy).
	cs2 := cloneStore(t, f)
	g := startController(t, cs2, f.clock)
	j = g.syncUntil("two", "Complete", func(j *batchv1.Job) bool { return hasCond(j, condComplete) })
	if j.Status.GetSucceeded() != 2 {
		t.Errorf("succeeded %d after restart, want 2", j.Status.GetSucceeded())
	}
}

func TestPodFailurePolicyFailJobAndIgnore(t *testing.T) {
	j := newJob("pfp", 2, 1)
	j.Spec.BackoffLimit = proto.Int32(0)
	j.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []*batchv1.PodFailurePolicyRule{
		{Action: "Ignore", OnPodConditions: []*batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: "DisruptionTarget", Status: "True"}}},
		{Action: "FailJob", OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: "In", Values: []int32{42}}},
	}}
	f := newFixture(t, j)
	f.syncUntil("pfp", "pod", func(*batchv1.Job) bool { return len(f.pods()) == 1 })
	f.waitCache()
	// A disrupted pod is ignored: not counted towards the backoff limit of
	// 0, and replaced after the pod failure backoff.
	first := f.pods()[0]
	f.setStatus(first, func(st *corev1.PodStatus) {
		st.Phase = "Failed"
		st.Conditions = []*corev1.PodCondition{{Type: "DisruptionTarget", Status: "True"}}
	})
	f.syncUntil("pfp", "seen", func(j *batchv1.Job) bool { return !hasTrackingFinalizer(f.pods()[0]) })
	f.clock.Step(11 * time.Second)
	j = f.syncUntil("pfp", "replacement", func(*batchv1.Job) bool { return len(f.activePods()) == 1 })
	if j.Status.GetFailed() != 0 || hasCond(j, condFailed) {
		t.Fatalf("ignored failure counted: %v", j.Status)
	}
	f.waitCache()
	second := f.activePods()[0]
	f.finish(second, "Failed", 42)
	j = f.syncUntil("pfp", "Failed", func(j *batchv1.Job) bool { return hasCond(j, condFailed) })
	c := condition(j, condFailed)
	want := "Container main for pod default/" + second.Metadata.Name + " failed with exit code 42 matching FailJob rule at index 1"
	if c.Reason != reasonPodFailurePolicy || c.Message != want {
		t.Errorf("condition %v, want reason PodFailurePolicy message %q", c, want)
	}
	if ft := condition(j, condFailureTarget); ft == nil || ft.Message != want {
		t.Errorf("FailureTarget %v", ft)
	}
}

func TestBackoffLimitPerIndex(t *testing.T) {
	j := indexed(newJob("pi", 3, 3))
	j.Spec.BackoffLimitPerIndex = proto.Int32(0)
	j.Spec.BackoffLimit = nil
	f := newFixture(t, j)
	f.syncUntil("pi", "pods", func(*batchv1.Job) bool { return len(f.pods()) == 3 })
	f.waitCache()
	for _, p := range f.pods() {
		if p.Metadata.Annotations[indexFailureCountKey] != "0" {
			t.Errorf("pod %s failure count %q", p.Metadata.Name, p.Metadata.Annotations[indexFailureCountKey])
		}
		switch p.Metadata.Annotations[completionIndexKey] {
		case "1":
			f.finish(p, "Failed", 1)
		default:
			f.finish(p, "Succeeded", 0)
		}
	}
	j = f.syncUntil("pi", "Failed", func(j *batchv1.Job) bool { return hasCond(j, condFailed) })
	if j.Status.GetFailedIndexes() != "1" || j.Status.GetCompletedIndexes() != "0,2" {
		t.Errorf("failedIndexes %q completedIndexes %q", j.Status.GetFailedIndexes(), j.Status.GetCompletedIndexes())
	}
	if c := condition(j, condFailed); c.Reason != reasonFailedIndexes || c.Message != "Job has failed indexes" {
		t.Errorf("condition %v", c)
	}
}

func TestSuccessPolicyCompletesEarly(t *testing.T) {
	j := indexed(newJob("leader", 3, 3))
	j.Spec.SuccessPolicy = &batchv1.SuccessPolicy{Rules: []*batchv1.SuccessPolicyRule{{SucceededIndexes: proto.String("0")}}}
	f := newFixture(t, j)
	f.syncUntil("leader", "pods", func(*batchv1.Job) bool { return len(f.pods()) == 3 })
	f.waitCache()
	for _, p := range f.pods() {
		if p.Metadata.Annotations[completionIndexKey] == "0" {
			f.finish(p, "Succeeded", 0)
		}
	}
	j = f.syncUntil("leader", "Complete", func(j *batchv1.Job) bool { return hasCond(j, condComplete) })
	for _, typ := range []string{condSuccessCriteriaMet, condComplete} {
		if c := condition(j, typ); c.Reason != reasonSuccessPolicy || c.Message != "Matched rules at index 0" {
			t.Errorf("%s: %v", typ, c)
		}
	}
	// The running indexes were deleted; the succeeded pod stays, counted.
	if len(f.pods()) != 1 || len(f.activePods()) != 0 || j.Status.GetCompletedIndexes() != "0" {
		t.Errorf("pods left %d (active %d), completedIndexes %q", len(f.pods()), len(f.activePods()), j.Status.GetCompletedIndexes())
	}
}

func TestPodReplacementPolicyFailedWaitsForTermination(t *testing.T) {
	j := newJob("prp", 1, 1)
	j.Spec.PodReplacementPolicy = proto.String("Failed")
	f := newFixture(t, j)
	f.syncUntil("prp", "pod", func(*batchv1.Job) bool { return len(f.pods()) == 1 })
	f.waitCache()
	p := f.pods()[0]
	// Someone deletes the pod on a node; it terminates gracefully.
	bindAndDelete(t, f, p)
	f.waitCache()
	f.syncUntil("prp", "terminating 1", func(j *batchv1.Job) bool { return j.Status.GetTerminating() == 1 })
	if n := len(f.activePods()); n != 0 {
		t.Fatalf("replaced a terminating pod under podReplacementPolicy Failed (%d active)", n)
	}
	f.finish(p, "Failed", 137)
	f.syncUntil("prp", "counted", func(j *batchv1.Job) bool { return j.Status.GetFailed() == 1 })
	f.clock.Step(11 * time.Second)
	f.syncUntil("prp", "replacement", func(j *batchv1.Job) bool { return len(f.activePods()) == 1 && j.Status.GetFailed() == 1 })
}

func TestAdoptsOrphanAndAddsFinalizer(t *testing.T) {
	j := newJob("adopt", 1, 1)
	orphan := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "stray", Namespace: "default", Uid: "uid-stray",
		Labels: j.Spec.Template.Metadata.Labels}, Spec: &corev1.PodSpec{}, Status: &corev1.PodStatus{Phase: "Running"}}
	f := newFixture(t, j, orphan)
	f.syncUntil("adopt", "adopted", func(j *batchv1.Job) bool { return j.Status.GetActive() == 1 })
	pods := f.pods()
	if len(pods) != 1 {
		t.Fatalf("%d pods, want the adopted one only", len(pods))
	}
	ref := metav1.GetControllerOf(pods[0].Metadata)
	if ref == nil || ref.Uid != "uid-adopt" || !hasTrackingFinalizer(pods[0]) {
		t.Errorf("orphan ref %v finalizers %v", ref, pods[0].Metadata.Finalizers)
	}
}

func TestScaleDownDeletesExcessWithoutCountingFailures(t *testing.T) {
	f := newFixture(t, newJob("wide", 10, 3))
	f.syncUntil("wide", "3 pods", func(*batchv1.Job) bool { return len(f.pods()) == 3 })
	f.waitCache()
	cur := f.job("wide")
	cur.Spec.Parallelism = proto.Int32(1)
	updateJob(t, f, cur)
	f.waitCache()
	j := f.syncUntil("wide", "1 active", func(j *batchv1.Job) bool { return len(f.pods()) == 1 && j.Status.GetActive() == 1 })
	if j.Status.GetFailed() != 0 {
		t.Errorf("pods deleted for scale-down counted as failed: %v", j.Status)
	}
	if ev := f.events(); countPrefix(ev, "Normal SuccessfulDelete Deleted pod: wide-") != 2 {
		t.Errorf("events %v", ev)
	}
}

func TestMaxFailedIndexesAndFailIndex(t *testing.T) {
	j := indexed(newJob("mfi", 4, 4))
	j.Spec.BackoffLimitPerIndex = proto.Int32(3)
	j.Spec.MaxFailedIndexes = proto.Int32(1)
	j.Spec.BackoffLimit = nil
	j.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []*batchv1.PodFailurePolicyRule{
		{Action: "FailIndex", OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: "In", Values: []int32{7}}},
	}}
	f := newFixture(t, j)
	f.syncUntil("mfi", "pods", func(*batchv1.Job) bool { return len(f.pods()) == 4 })
	f.waitCache()
	// Exit code 7 fails the index at once, whatever backoffLimitPerIndex
	// allows; two failed indexes exceed maxFailedIndexes 1.
	for _, p := range f.pods() {
		switch p.Metadata.Annotations[completionIndexKey] {
		case "0", "2":
			f.finish(p, "Failed", 7)
		}
	}
	j = f.syncUntil("mfi", "Failed", func(j *batchv1.Job) bool { return hasCond(j, condFailed) })
	if c := condition(j, condFailed); c.Reason != reasonMaxFailedIndexesExceeded ||
		c.Message != "Job has exceeded the specified maximal number of failed indexes" {
		t.Errorf("condition %v", c)
	}
	if j.Status.GetFailedIndexes() != "0,2" || j.Status.GetFailed() != 4 {
		t.Errorf("failedIndexes %q failed %d (two failed pods and two stopped ones)", j.Status.GetFailedIndexes(), j.Status.GetFailed())
	}
	if len(f.activePods()) != 0 {
		t.Errorf("%d pods still active", len(f.activePods()))
	}
}
