package podgc

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func pod(name, node, phase string, created time.Duration) *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name, Uid: "uid-" + name, CreationTimestamp: metav1.NewTime(t0.Add(created))},
		Spec:     &corev1.PodSpec{NodeName: node},
		Status:   &corev1.PodStatus{Phase: phase},
	}
}

func node(name string, ready bool, taints ...*corev1.Taint) *corev1.Node {
	s := "False"
	if ready {
		s = "True"
	}
	return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: name}, Spec: &corev1.NodeSpec{Taints: taints},
		Status: &corev1.NodeStatus{Conditions: []*corev1.NodeCondition{{Type: "Ready", Status: s}}}}
}

// start builds the collector over objs with the clock, waits for its
// caches, and returns it for the test to sweep by hand.
func start(t *testing.T, threshold int, clk *clock, objs ...scheme.Object) (*Controller, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	cc, _ := controllertest.Context(cs, controllers.Options{TerminatedPodGCThreshold: threshold})
	cc.Now = clk.now
	ctrl, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Informers.Shutdown() })
	cc.Informers.Start(ctx)
	c := ctrl.(*Controller)
	if !informers.WaitForCacheSync(ctx, c.synced...) {
		t.Fatal("caches did not sync")
	}
	return c, cs
}

func remaining(cs *fake.Clientset) []string {
	k, _ := scheme.ForResource("", "pods")
	var out []string
	for _, o := range cs.Tracker().List(k, "default") {
		out = append(out, o.GetMetadata().GetName())
	}
	slices.Sort(out)
	return out
}

func forceDeletes(cs *fake.Clientset) []string {
	var out []string
	for _, a := range cs.Actions() {
		if a.Verb == "delete" && a.Resource == "pods" {
			out = append(out, a.Name)
		}
	}
	return out
}

func TestTerminatedAboveThresholdOldestAndEvictedFirst(t *testing.T) {
	evicted := pod("evicted-new", "n1", "Failed", 5*time.Minute)
	evicted.Status.Reason = "Evicted"
	c, cs := start(t, 2, &clock{t: t0}, node("n1", true),
		pod("done-old", "n1", "Succeeded", 0), pod("failed-mid", "n1", "Failed", time.Minute),
		pod("done-new", "n1", "Succeeded", 2*time.Minute), evicted,
		pod("running-old", "n1", "Running", -time.Hour))
	c.gc(context.Background())
	if got := fmt.Sprint(remaining(cs)); got != "[done-new failed-mid running-old]" {
		t.Errorf("after the sweep: %s; want the evicted and the oldest terminated pod gone, running pods kept", got)
	}
}

func TestThresholdZeroKeepsTerminated(t *testing.T) {
	c, cs := start(t, 0, &clock{t: t0}, node("n1", true), pod("done", "n1", "Succeeded", 0))
	c.gc(context.Background())
	if len(forceDeletes(cs)) != 0 {
		t.Errorf("threshold 0 deleted %v", forceDeletes(cs))
	}
}

func TestOrphanedAfterQuarantine(t *testing.T) {
	clk := &clock{t: t0}
	c, cs := start(t, 0, clk, node("n1", true), pod("on-live-node", "n1", "Running", 0), pod("on-gone-node", "gone", "Running", 0))
	ctx := context.Background()
	c.gc(ctx)
	clk.step(30 * time.Second)
	c.gc(ctx)
	if len(forceDeletes(cs)) != 0 {
		t.Fatalf("deleted %v before the 40s quarantine", forceDeletes(cs))
	}
	clk.step(11 * time.Second)
	c.gc(ctx)
	if got := fmt.Sprint(forceDeletes(cs)); got != "[on-gone-node]" {
		t.Fatalf("deletes = %s, want only the pod of the missing node", got)
	}
	// It was marked Failed with the reason before it went.
	var marked bool
	for _, a := range cs.Actions() {
		if a.Verb == "patch" && a.Subresource == "status" && a.Name == "on-gone-node" {
			marked = true
		}
	}
	if !marked {
		t.Error("the orphaned pod was not marked Failed with DisruptionTarget before deletion")
	}
}

func TestUnscheduledTerminatingAndOutOfService(t *testing.T) {
	stuck := pod("unscheduled-deleting", "", "Pending", 0)
	stuck.Metadata.DeletionTimestamp = metav1.NewTime(t0)
	stuck.Metadata.Finalizers = nil
	oos := pod("on-out-of-service", "down", "Running", 0)
	oos.Metadata.DeletionTimestamp = metav1.NewTime(t0)
	alive := pod("terminating-on-ready", "n1", "Running", 0)
	alive.Metadata.DeletionTimestamp = metav1.NewTime(t0)
	c, cs := start(t, 0, &clock{t: t0}, node("n1", true),
		node("down", false, &corev1.Taint{Key: "node.kubernetes.io/out-of-service", Effect: "NoExecute"}),
		stuck, oos, alive, pod("pending", "", "Pending", 0))
	c.gc(context.Background())
	got := forceDeletes(cs)
	slices.Sort(got)
	if fmt.Sprint(got) != "[on-out-of-service unscheduled-deleting]" {
		t.Errorf("force deletes = %v", got)
	}
}
