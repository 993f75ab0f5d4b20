package runner

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func start(t *testing.T, r *Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Loop(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, n *atomic.Int32, want int32, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for n.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d runs after %s, want %d", n.Load(), within, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// A burst runs at once, then runs are held to one per min interval, and
// requests meanwhile fold into one.
func TestMinIntervalBatchesRequests(t *testing.T) {
	var n atomic.Int32
	r := New(func() { n.Add(1) }, 200*time.Millisecond, time.Hour, 2)
	start(t, r)
	r.Run()
	waitFor(t, &n, 1, time.Second)
	r.Run()
	waitFor(t, &n, 2, time.Second)
	began := time.Now()
	for range 10 {
		r.Run()
	}
	waitFor(t, &n, 3, 2*time.Second)
	if d := time.Since(began); d < 100*time.Millisecond {
		t.Errorf("third run after %s: the burst of two did not hold it back", d)
	}
	time.Sleep(400 * time.Millisecond)
	if got := n.Load(); got != 3 {
		t.Errorf("%d runs: ten requests while waiting should make one run", got)
	}
}

func TestMaxIntervalRunsUnasked(t *testing.T) {
	var n atomic.Int32
	r := New(func() { n.Add(1) }, 0, 50*time.Millisecond, 2)
	start(t, r)
	waitFor(t, &n, 3, 2*time.Second)
}

func TestRetryAfter(t *testing.T) {
	var n atomic.Int32
	r := New(func() { n.Add(1) }, 0, time.Hour, 2)
	start(t, r)
	r.RetryAfter(30 * time.Millisecond)
	waitFor(t, &n, 1, time.Second)
}
