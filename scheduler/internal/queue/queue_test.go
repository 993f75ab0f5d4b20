package queue

import (
	"context"
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
	"skiff.dev/scheduler/internal/plugins/queuesort"
)

func pi(name string, prio int32) *framework.PodInfo {
	return framework.NewPodInfo(&corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "d", Name: name}, Spec: &corev1.PodSpec{Priority: &prio}})
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestOrderBackoffAndEvents(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	q := New(Options{Less: queuesort.Plugin{}.Less, Now: c.now})
	q.Add(pi("low", 0))
	c.t = c.t.Add(time.Millisecond)
	q.Add(pi("high", 10))
	c.t = c.t.Add(time.Millisecond)
	q.Add(pi("low2", 0))
	ctx := context.Background()
	for _, want := range []string{"high", "low", "low2"} {
		p, _ := q.Pop(ctx)
		if p.Pod.Metadata.Name != want {
			t.Fatalf("popped %s, want %s", p.Pod.Metadata.Name, want)
		}
		if want == "low" {
			q.Requeue(p, true) // unschedulable: parked until an event
		} else {
			q.Done(p.Key())
		}
	}
	if a, b, u := q.Len(); a != 0 || b != 0 || u != 1 {
		t.Fatalf("queues %d/%d/%d", a, b, u)
	}
	q.MoveAllOnEvent(NodeAdd) // backoff of 1s after the first attempt
	if a, b, _ := q.Len(); a != 0 || b != 1 {
		t.Fatalf("after event: active %d backoff %d", a, b)
	}
	c.t = c.t.Add(1100 * time.Millisecond)
	q.flush()
	p, _ := q.Pop(ctx)
	if p.Pod.Metadata.Name != "low" || p.Attempts != 2 {
		t.Fatalf("popped %s after %d attempts", p.Pod.Metadata.Name, p.Attempts)
	}
	// An event during an attempt sends the pod to backoff, not the pool.
	q.MoveAllOnEvent(PodDelete)
	q.Requeue(p, true)
	if _, b, u := q.Len(); b != 1 || u != 0 {
		t.Fatalf("event during attempt: backoff %d unschedulable %d", b, u)
	}
	// Backoff doubles per attempt, to 10 s at most.
	p.Attempts = 10
	if d := q.backoffExpiry(p).Sub(p.Timestamp); d != 10*time.Second {
		t.Fatalf("max backoff %v", d)
	}
	p.Attempts = 3
	if d := q.backoffExpiry(p).Sub(p.Timestamp); d != 4*time.Second {
		t.Fatalf("third backoff %v", d)
	}
}

func TestUnschedulableFlushedAfterTimeout(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	q := New(Options{Less: queuesort.Plugin{}.Less, Now: c.now, MaxUnschedulable: time.Minute})
	q.Add(pi("a", 0))
	p, _ := q.Pop(context.Background())
	q.Requeue(p, true)
	c.t = c.t.Add(61 * time.Second)
	q.flush()
	if a, _, u := q.Len(); a != 1 || u != 0 {
		t.Fatalf("not flushed: active %d unschedulable %d", a, u)
	}
}
