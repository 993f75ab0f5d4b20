package backoff

import (
	"sync"
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

// crashLoop simulates a container that exits as soon as it starts: each
// time it is allowed, it restarts, runs a second and exits. It returns the
// delays the kubelet held it back, in order.
func crashLoop(t *testing.T, b *Backoff, c *clock, restarts int) []time.Duration {
	t.Helper()
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "default", Uid: "u1"}}
	var delays []time.Duration
	finished := c.now()
	for len(delays) < restarts {
		waitedFrom := c.now()
		for {
			held, msg := b.Check(pod, "app", finished)
			if !held {
				break
			}
			if msg == "" {
				t.Fatal("held back without a message")
			}
			c.step(time.Second)
		}
		delays = append(delays, c.now().Sub(waitedFrom))
		c.step(time.Second) // runs a second, exits
		finished = c.now()
	}
	return delays
}

func TestDoublingToCap(t *testing.T) {
	c := newClock()
	b := NewDefault(c.now)
	got := crashLoop(t, b, c, 9)
	// The first restart is immediate; then 10 s, 20 s, ... from each exit,
	// capped at 5 min.
	want := []time.Duration{0, 10, 20, 40, 80, 160, 300, 300, 300}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays = %v, want %v s", got, want)
		}
	}
	if d := b.Get("u1", "app"); d != Max {
		t.Errorf("delay = %v, want the 5 min cap", d)
	}
}

func TestMessage(t *testing.T) {
	c := newClock()
	b := NewDefault(c.now)
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "default", Uid: "u1"}}
	fin := c.now()
	if held, _ := b.Check(pod, "app", fin); held {
		t.Fatal("first restart held back")
	}
	c.step(5 * time.Second)
	fin = c.now()
	held, msg := b.Check(pod, "app", fin)
	if !held || msg != "back-off 10s restarting failed container=app pod=web_default(u1)" {
		t.Errorf("Check = %v %q", held, msg)
	}
	if r := b.Remaining("u1", "app", fin); r != 10*time.Second {
		t.Errorf("Remaining = %v, want 10s", r)
	}
	c.step(4 * time.Second)
	if r := b.Remaining("u1", "app", fin); r != 6*time.Second {
		t.Errorf("Remaining = %v, want 6s", r)
	}
	if got := EventMessage(pod, "app"); got != "Back-off restarting failed container app in pod web_default(u1)" {
		t.Errorf("EventMessage = %q", got)
	}
}

func TestResetAfterLongRun(t *testing.T) {
	c := newClock()
	b := NewDefault(c.now)
	crashLoop(t, b, c, 5)
	if b.Get("u1", "app") != 160*time.Second {
		t.Fatalf("delay = %v after 5 restarts", b.Get("u1", "app"))
	}
	// Restarted now, runs just under 10 min: still remembered.
	b.Next("u1", "app", c.now())
	start := c.now()
	c.step(10*time.Minute - time.Second)
	if !b.InBackOff("u1", "app", c.now()) {
		t.Error("a container that ran under 10 min is not held back")
	}
	// Run past 10 min: the history is forgotten, the next restart is at 10 s.
	c.t = start.Add(10*time.Minute + time.Second)
	fin := c.now()
	if b.InBackOff("u1", "app", fin) {
		t.Error("held back after 10 min of running")
	}
	b.Next("u1", "app", fin)
	if d := b.Get("u1", "app"); d != Initial {
		t.Errorf("delay after a long run = %v, want %v", d, Initial)
	}
}

func TestKeysAndForgetting(t *testing.T) {
	c := newClock()
	b := NewDefault(c.now)
	b.Next("u1", "a", c.now())
	b.Next("u1", "a", c.now())
	b.Next("u1", "b", c.now())
	b.Next("u2", "a", c.now())
	if b.Get("u1", "a") != 20*time.Second || b.Get("u1", "b") != 10*time.Second || b.Get("u2", "a") != 10*time.Second {
		t.Errorf("delays not kept apart: %v %v %v", b.Get("u1", "a"), b.Get("u1", "b"), b.Get("u2", "a"))
	}
	b.Reset("u1", "b")
	if b.Get("u1", "b") != 0 {
		t.Error("Reset kept the container")
	}
	b.DeletePod("u1")
	if b.Len() != 1 {
		t.Errorf("after DeletePod %d entries, want 1", b.Len())
	}
	c.step(11 * time.Minute)
	b.GC()
	if b.Len() != 0 {
		t.Errorf("after GC %d entries, want 0", b.Len())
	}
}

func TestConcurrentUse(t *testing.T) {
	c := newClock()
	b := NewDefault(c.now)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				b.Next("u", string(rune('a'+i)), c.now())
				b.InBackOff("u", string(rune('a'+i)), c.now())
				b.GC()
			}
		}()
	}
	wg.Wait()
	if b.Len() != 8 {
		t.Errorf("%d entries, want 8", b.Len())
	}
}
