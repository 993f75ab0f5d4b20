package nodelifecycle

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is the controller's clock in tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func tryAll(q *rateLimitedTimedQueue) []string {
	var got []string
	q.try(func(v timedValue) (bool, time.Duration) {
		got = append(got, v.value)
		return true, 0
	})
	return got
}

func TestRateLimitedTimedQueue(t *testing.T) {
	clock := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	q := newRateLimitedTimedQueue(0.1, clock.Now)
	for _, n := range []string{"a", "b", "c"} {
		q.add(n, "")
	}
	if q.add("a", "") {
		t.Error("a value already queued was queued again")
	}
	// One value per ten seconds: the burst is one.
	var log []string
	for i := 0; i <= 25; i++ {
		for _, v := range tryAll(q) {
			log = append(log, fmt.Sprintf("%s@%ds", v, i))
		}
		clock.Step(time.Second)
	}
	if got := fmt.Sprint(log); got != "[a@0s b@10s c@20s]" {
		t.Errorf("processed %s, want one every 10 s in the order added", got)
	}
	// Processed values stay known until removed.
	if q.add("a", "") {
		t.Error("a processed value was queued again before remove")
	}
	if !q.remove("a") || !q.add("a", "") {
		t.Error("a removed value could not be queued again")
	}

	// A failed value is retried after its wait, and spends a token.
	q = newRateLimitedTimedQueue(1, clock.Now)
	q.add("x", "")
	tries := 0
	fail := func(v timedValue) (bool, time.Duration) { tries++; return false, 3 * time.Second }
	q.try(fail)
	clock.Step(2 * time.Second)
	q.try(fail)
	if tries != 1 {
		t.Errorf("tried %d times within the wait, want 1", tries)
	}
	clock.Step(2 * time.Second)
	q.try(fail)
	if tries != 2 {
		t.Errorf("tried %d times after the wait, want 2", tries)
	}
}

func TestSwapLimiter(t *testing.T) {
	clock := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	q := newRateLimitedTimedQueue(1, clock.Now)
	q.add("a", "")
	q.add("b", "")
	if got := tryAll(q); fmt.Sprint(got) != "[a]" {
		t.Fatalf("first try processed %v, want [a]", got)
	}
	// An empty limiter's replacement starts empty: no way around the rate.
	q.swapLimiter(0.5)
	if got := tryAll(q); len(got) != 0 {
		t.Errorf("processed %v right after a rate change, want nothing", got)
	}
	clock.Step(2 * time.Second)
	if got := tryAll(q); fmt.Sprint(got) != "[b]" {
		t.Errorf("processed %v two seconds later at 0.5/s, want [b]", got)
	}
	// A zero rate stops everything.
	q.swapLimiter(0)
	q.add("c", "")
	clock.Step(time.Hour)
	if got := tryAll(q); len(got) != 0 {
		t.Errorf("processed %v at rate 0", got)
	}
	if q.qps() != 0 {
		t.Errorf("qps = %v, want 0", q.qps())
	}
}
