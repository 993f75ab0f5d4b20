package job

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

var podKind, _ = scheme.ForMessage(&corev1.Pod{})

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	cs    *fake.Clientset
	c     *Controller
	rec   *record.FakeRecorder
	clock *clock
}

func newJob(name string, completions, parallelism int32) *batchv1.Job {
	uid := "uid-" + name
	l := map[string]string{"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name}
	return &batchv1.Job{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: uid, Generation: 1},
		Spec: &batchv1.JobSpec{
			Completions: proto.Int32(completions),
			Parallelism: proto.Int32(parallelism),
			Selector:    &metav1.LabelSelector{MatchLabels: map[string]string{"batch.kubernetes.io/controller-uid": uid}},
			Template: &corev1.PodTemplateSpec{
				Metadata: &metav1.ObjectMeta{Labels: l},
				Spec: &corev1.PodSpec{RestartPolicy: "Never",
					Containers: []*corev1.Container{{Name: "main", Image: "skiff.local/busybox:1"}}},
			},
		},
	}
}

func indexed(j *batchv1.Job) *batchv1.Job {
	j.Spec.CompletionMode = proto.String("Indexed")
	return j
}

func newFixture(t *testing.T, objs ...scheme.Object) *fixture {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	return startController(t, cs, &clock{t: time.Now()})
}

// startController runs a new controller instance over cs: a second call is
// a restarted controller-manager.
func startController(t *testing.T, cs *fake.Clientset, clk *clock) *fixture {
	t.Helper()
	f := informers.NewFactory(cs.Client, informers.Options{})
	rec := record.NewFakeRecorder(1000)
	cc := controllers.Context{
		Client:     cs.Client,
		Informers:  f,
		Recorder:   func(string) record.Recorder { return rec },
		Registerer: prometheus.NewRegistry(),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Options:    &controllers.Options{},
		Now:        clk.Now,
	}
	c, err := newController(cc)
	if err != nil {
		t.Fatal(err)
	}
	c.batchPeriod = 0
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); f.Shutdown() })
	f.Start(ctx)
	if !informers.WaitForCacheSync(ctx, c.regs...) {
		t.Fatal("caches did not sync")
	}
	return &fixture{t: t, ctx: ctx, cs: cs, c: c, rec: rec, clock: clk}
}

func (f *fixture) job(name string) *batchv1.Job {
	f.t.Helper()
	o, err := f.cs.Tracker().Get(jobKindForTest(), "default", name)
	if err != nil {
		f.t.Fatal(err)
	}
	return o.(*batchv1.Job)
}

func jobKindForTest() *scheme.Kind { return jobKind }

func (f *fixture) pods() []*corev1.Pod {
	var out []*corev1.Pod
	for _, o := range f.cs.Tracker().List(podKind, "default") {
		out = append(out, o.(*corev1.Pod))
	}
	return out
}

func (f *fixture) activePods() []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range f.pods() {
		if isPodActive(p) {
			out = append(out, p)
		}
	}
	return out
}

// syncUntil syncs the Job until cond holds for the stored Job (the cache
// catching up between syncs).
func (f *fixture) syncUntil(name, what string, cond func(j *batchv1.Job) bool) *batchv1.Job {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var lastErr error
	for {
		lastErr = f.c.sync(f.ctx, "default/"+name)
		j := f.job(name)
		if cond(j) {
			return j
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: not reached (last sync error %v); status %v", what, lastErr, j.GetStatus())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitCache waits until the controller's pod cache matches the store.
func (f *fixture) waitCache() {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		want := map[string]string{}
		for _, p := range f.pods() {
			want[p.Metadata.Name] = p.Metadata.ResourceVersion
		}
		got := map[string]string{}
		for _, p := range f.c.pods.List(nil) {
			got[p.Metadata.Name] = p.Metadata.ResourceVersion
		}
		jobsOK := true
		for _, o := range f.cs.Tracker().List(jobKind, "default") {
			j, err := f.c.jobs.Get("default", o.GetMetadata().GetName())
			if err != nil || j.GetMetadata().GetResourceVersion() != o.GetMetadata().GetResourceVersion() {
				jobsOK = false
			}
		}
		if jobsOK && len(want) == len(got) && func() bool {
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
			return true
		}() {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatal("cache did not catch up")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// finish plays the kubelet: the pod ends in phase with the container's exit
// code.
func (f *fixture) finish(p *corev1.Pod, phase string, exitCode int32) {
	f.t.Helper()
	f.setStatus(p, func(st *corev1.PodStatus) {
		st.Phase = phase
		st.ContainerStatuses = []*corev1.ContainerStatus{{Name: "main", State: &corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: exitCode, FinishedAt: metav1.NewTime(f.clock.Now())}}}}
	})
}

func (f *fixture) setStatus(p *corev1.Pod, mutate func(*corev1.PodStatus)) {
	f.t.Helper()
	pods := client.For[*corev1.Pod](f.cs.Client, "default")
	cur, err := pods.Get(f.ctx, p.Metadata.Name)
	if err != nil {
		f.t.Fatal(err)
	}
	if cur.Status == nil {
		cur.Status = &corev1.PodStatus{}
	}
	mutate(cur.Status)
	if _, err := pods.UpdateStatus(f.ctx, cur); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func countPrefix(events []string, prefix string) int {
	n := 0
	for _, e := range events {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

func condition(j *batchv1.Job, t string) *batchv1.JobCondition {
	return findCondition(j.GetStatus(), t)
}

func hasCond(j *batchv1.Job, t string) bool { return hasTrueCondition(j.GetStatus(), t) }

type (
	fakeAction   = fake.Action
	schemeObject = scheme.Object
)

var errUnavailable = apierrors.NewInternal(errors.New("etcd is down"))

func updateJob(t *testing.T, f *fixture, j *batchv1.Job) {
	t.Helper()
	if _, err := client.For[*batchv1.Job](f.cs.Client, "default").Update(f.ctx, j); err != nil {
		t.Fatal(err)
	}
}

// cloneStore is a new clientset holding f's current objects: a restarted
// control plane view without f's reactors.
func cloneStore(t *testing.T, f *fixture) *fake.Clientset {
	t.Helper()
	var objs []scheme.Object
	for _, k := range []*scheme.Kind{jobKind, podKind} {
		objs = append(objs, f.cs.Tracker().List(k, "default")...)
	}
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	return cs
}

func bindAndDelete(t *testing.T, f *fixture, p *corev1.Pod) {
	t.Helper()
	if _, err := client.For[*corev1.Pod](f.cs.Client, "default").Delete(f.ctx, p.Metadata.Name, client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}
