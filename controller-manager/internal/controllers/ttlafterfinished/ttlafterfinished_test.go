package ttlafterfinished

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	batchv1 "skiff.dev/proto/api/batch/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

var jobKind, _ = scheme.ForMessage(&batchv1.Job{})

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func finishedJob(name string, ttl *int32, finishedAt time.Time, cond string) *batchv1.Job {
	return &batchv1.Job{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name},
		Spec:     &batchv1.JobSpec{TtlSecondsAfterFinished: ttl},
		Status: &batchv1.JobStatus{Conditions: []*batchv1.JobCondition{
			{Type: cond, Status: "True", LastTransitionTime: metav1.NewTime(finishedAt)}}},
	}
}

func setup(t *testing.T, clk *clock, objs ...scheme.Object) (*fake.Clientset, *Controller, controllers.Context) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	cc, _ := controllertest.Context(cs, controllers.Options{})
	cc.Now = clk.now
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	return cs, c.(*Controller), cc
}

// startInformers fills the controller's cache without running its workers.
func startInformers(t *testing.T, cc controllers.Context, c *Controller) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Informers.Shutdown() })
	cc.Informers.Start(ctx)
	if !informers.WaitForCacheSync(ctx, c.regs...) {
		t.Fatal("caches did not sync")
	}
}

func exists(cs *fake.Clientset, name string) bool {
	_, err := cs.Tracker().Get(jobKind, "default", name)
	return err == nil
}

func TestDeletesExpiredJobsOnly(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clk := &clock{t: now}
	cs, c, cc := setup(t, clk,
		finishedJob("expired", proto.Int32(60), now.Add(-2*time.Minute), "Complete"),
		finishedJob("failed-expired", proto.Int32(0), now.Add(-time.Second), "Failed"),
		finishedJob("young", proto.Int32(3600), now.Add(-time.Minute), "Complete"),
		finishedJob("no-ttl", nil, now.Add(-time.Hour), "Complete"),
		&batchv1.Job{Metadata: &metav1.ObjectMeta{Name: "running", Namespace: "default", Uid: "uid-running"},
			Spec: &batchv1.JobSpec{TtlSecondsAfterFinished: proto.Int32(0)}},
	)
	controllertest.Run(t, cc, c)
	controllertest.Eventually(t, func() (bool, string) {
		return !exists(cs, "expired") && !exists(cs, "failed-expired"), "expired jobs still there"
	})
	for _, name := range []string{"young", "no-ttl", "running"} {
		if !exists(cs, name) {
			t.Errorf("job %s deleted", name)
		}
	}
	n := 0
	for _, a := range cs.Actions() {
		if a.Verb == "delete" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d deletes, want 2", n)
	}
}

func TestRechecksFreshJobBeforeDeleting(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clk := &clock{t: now}
	cs, c, cc := setup(t, clk, finishedJob("raced", proto.Int32(10), now.Add(-time.Minute), "Complete"))
	startInformers(t, cc, c)
	// The cache says expired; meanwhile the user raised the TTL, which only
	// a fresh read shows.
	cs.PrependReactor("get", "jobs", func(a fake.Action) (bool, scheme.Object, error) {
		stored, err := cs.Tracker().Get(jobKind, "default", a.Name)
		if err != nil {
			return true, nil, err
		}
		fresh := proto.Clone(stored).(*batchv1.Job)
		fresh.Spec.TtlSecondsAfterFinished = proto.Int32(3600)
		return true, fresh, nil
	})
	if err := c.sync(context.Background(), "default/raced"); err != nil {
		t.Fatal(err)
	}
	if !exists(cs, "raced") {
		t.Fatal("deleted a Job whose fresh copy has not expired")
	}
}

func TestDeletesWhenTTLElapses(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clk := &clock{t: now}
	cs, c, cc := setup(t, clk, finishedJob("soon", proto.Int32(30), now, "Complete"))
	startInformers(t, cc, c)
	if err := c.sync(context.Background(), "default/soon"); err != nil {
		t.Fatal(err)
	}
	if !exists(cs, "soon") {
		t.Fatal("deleted before its TTL")
	}
	clk.mu.Lock()
	clk.t = now.Add(31 * time.Second)
	clk.mu.Unlock()
	if err := c.sync(context.Background(), "default/soon"); err != nil {
		t.Fatal(err)
	}
	if exists(cs, "soon") {
		t.Fatal("not deleted after its TTL")
	}
}
