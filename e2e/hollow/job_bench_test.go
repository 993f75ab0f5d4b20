package hollow

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// The figure: a Job of 1,000 completions on 50 hollow nodes.
const (
	jobNodes       = 50
	jobCompletions = 1000
)

// runToCompletion is a pod template whose container exits 0 as it starts
// on a hollow node (kubelet/hollow: the command true).
func runToCompletion() *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{Spec: &corev1.PodSpec{RestartPolicy: "Never",
		Containers: []*corev1.Container{{Name: "c", Image: "skiff.local/busybox:1.35", Command: []string{"true"},
			Resources: &corev1.ResourceRequirements{Requests: map[string]*metav1.Quantity{"cpu": q("1m"), "memory": q("1Mi")}}}}}}
}

// tally follows, from a watch of one namespace, the pods created and the
// pods Succeeded, and when the last of each was seen.
type tally struct {
	mu                    sync.Mutex
	firstCreated          time.Time
	created, done         map[string]bool
	lastCreated, lastDone time.Time
}

func (t *tally) see(o scheme.Object) {
	p := o.(*corev1.Pod)
	now, uid := time.Now(), p.Metadata.GetUid()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.created[uid] {
		if len(t.created) == 0 {
			t.firstCreated = now
		}
		t.created[uid], t.lastCreated = true, now
	}
	if p.GetStatus().GetPhase() == "Succeeded" && !t.done[uid] {
		t.done[uid], t.lastDone = true, now
	}
}

// counts are the pods created and Succeeded so far, and when the last
// of each came.
func (t *tally) counts() (created, done int, lastCreated, lastDone time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.created), len(t.done), t.lastCreated, t.lastDone
}

func watchPods(b *testing.B, ctx context.Context, c *client.Client, ns string) *tally {
	t := &tally{created: map[string]bool{}, done: map[string]bool{}}
	podKind, _ := scheme.ForMessage(&corev1.Pod{})
	w := informer.New(c.Resource(podKind, ns), informer.Options{Logger: logger()})
	w.AddHandler(informer.Handler{OnAdd: t.see, OnUpdate: func(_, o scheme.Object) { t.see(o) }})
	start(b, "pod watch "+ns, w.Run)
	if !w.WaitForSync(ctx) {
		b.Fatal("the pod watch did not sync")
	}
	return t
}

// BenchmarkHollowJob1000 prints the time a Job of 1,000 completions (all
// at once: parallelism 1,000) takes to be Complete on 50 hollow nodes,
// next to 1,000 bare pods of the same template created at once and all
// Succeeded, in the same run, through the same control plane: the ratio
// (bare pods' time over the Job's; target ≥ 0.8) is what the job
// controller costs over creating the pods oneself.
func BenchmarkHollowJob1000(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, _ := startCluster(b, ctx, jobNodes)
	for _, ns := range []string{"bare", "job"} {
		if _, err := client.For[*corev1.Namespace](c, "").Create(ctx, &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: ns}}); err != nil {
			b.Fatal(err)
		}
	}
	barePods, jobPods := watchPods(b, ctx, c, "bare"), watchPods(b, ctx, c, "job")
	wait := func(what string, cond func() bool) {
		for !cond() {
			if ctx.Err() != nil {
				b.Fatalf("%s: %v", what, ctx.Err())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	b.ResetTimer()
	// Bare pods, created by 32 writers, as a client that wants them fast
	// would (the job controller's own creates are at most 500 at once).
	t0 := time.Now()
	pods := client.For[*corev1.Pod](c, "bare")
	var next atomic.Int64
	errs := make(chan error, 32)
	for range 32 {
		go func() {
			for i := next.Add(1); i <= jobCompletions; i = next.Add(1) {
				tmpl := runToCompletion()
				if _, err := pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: fmt.Sprintf("bare-%04d", i)}, Spec: tmpl.Spec}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 32 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	wait("bare pods Succeeded", func() bool { _, d, _, _ := barePods.counts(); return d == jobCompletions })
	bare := time.Since(t0)

	t1 := time.Now()
	jobs := client.For[*batchv1.Job](c, "job")
	n := int32(jobCompletions)
	if _, err := jobs.Create(ctx, &batchv1.Job{Metadata: &metav1.ObjectMeta{Name: "thousand"},
		Spec: &batchv1.JobSpec{Completions: &n, Parallelism: &n, Template: runToCompletion()}}); err != nil {
		b.Fatal(err)
	}
	var last *batchv1.Job
	wait("the Job Complete", func() bool {
		j, err := jobs.Get(ctx, "thousand")
		if err != nil {
			return false
		}
		last = j
		for _, cond := range j.GetStatus().GetConditions() {
			if cond.Type == "Complete" && cond.Status == "True" {
				return true
			}
		}
		return false
	})
	job := time.Since(t1)
	b.StopTimer()

	created, done, lastCreated, lastDone := jobPods.counts()
	jobPods.mu.Lock()
	first := jobPods.firstCreated.Sub(t1)
	jobPods.mu.Unlock()
	b.Logf("the Job's first pod seen after %s", first.Round(time.Millisecond))
	if s := last.GetStatus(); s.GetSucceeded() != jobCompletions || s.GetFailed() != 0 || done != jobCompletions || created != jobCompletions {
		b.Errorf("the Job: %d succeeded, %d failed, %d pods created and %d seen Succeeded; want %d, 0, %d, %d",
			s.GetSucceeded(), s.GetFailed(), created, done, jobCompletions, jobCompletions, jobCompletions)
	}
	ratio := bare.Seconds() / job.Seconds()
	b.ReportMetric(job.Seconds(), "job-complete-s")
	b.ReportMetric(bare.Seconds(), "bare-pods-s")
	b.ReportMetric(ratio, "ratio")
	b.Logf("%d completions on %d hollow nodes: Job Complete after %s (its last pod created after %s, the last Succeeded after %s); %d bare pods Succeeded after %s: ratio %.2f (target ≥ 0.8)",
		jobCompletions, jobNodes, job.Round(time.Millisecond), lastCreated.Sub(t1).Round(time.Millisecond), lastDone.Sub(t1).Round(time.Millisecond),
		jobCompletions, bare.Round(time.Millisecond), ratio)
}
