package controller

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"skiff.dev/client/workqueue"
)

// logBuffer collects what the workers log, safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// startRun runs Run in the background; stop cancels it and waits for it.
func startRun(t *testing.T, q workqueue.Queue, workers int, reconcile func(context.Context, string) error, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, q, workers, reconcile, log)
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestRunRetriesWithBackoffThenForgets(t *testing.T) {
	q := workqueue.New("test")
	log, logs := newLogger()
	var mu sync.Mutex
	var calls []time.Time
	requeuesSeen := []int{}
	startRun(t, q, 2, func(_ context.Context, key string) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, time.Now())
		requeuesSeen = append(requeuesSeen, q.NumRequeues(key))
		if len(calls) <= 3 {
			return errors.New("boom")
		}
		return nil
	}, log)
	q.Add("default/web")

	eventually(t, "the fourth, successful, reconcile and the Forget", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) == 4 && q.NumRequeues("default/web") == 0
	})
	mu.Lock()
	defer mu.Unlock()
	// Each failure is one more rate-limited requeue, and the limiter's
	// per-item backoff (5 ms, 10 ms, 20 ms) is waited out before the retry.
	if want := []int{0, 1, 2, 3}; !slices.Equal(requeuesSeen, want) {
		t.Errorf("NumRequeues seen by each reconcile = %v, want %v", requeuesSeen, want)
	}
	for i, min := range []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond} {
		if gap := calls[i+1].Sub(calls[i]); gap < min {
			t.Errorf("retry %d came %v after the failure, want at least %v", i+1, gap, min)
		}
	}
	if got := logs.String(); strings.Count(got, "level=INFO") != 3 || !strings.Contains(got, "key=default/web") || !strings.Contains(got, "err=boom") {
		t.Errorf("want three Info lines with the key and error, got:\n%s", got)
	}
}

func TestRunRecoversPanic(t *testing.T) {
	q := workqueue.New("test")
	log, logs := newLogger()
	var calls atomic.Int32
	startRun(t, q, 1, func(_ context.Context, key string) error {
		if calls.Add(1) == 1 {
			panic("nil map")
		}
		return nil
	}, log)
	q.Add("default/web")
	eventually(t, "the reconcile after the panic", func() bool { return calls.Load() == 2 && q.NumRequeues("default/web") == 0 })
	if got := logs.String(); !strings.Contains(got, "level=ERROR") || !strings.Contains(got, "nil map") || !strings.Contains(got, "key=default/web") {
		t.Errorf("the panic was not logged with its key and value:\n%s", got)
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	q := workqueue.New("test")
	started := make(chan struct{})
	var finished atomic.Bool
	stop := startRun(t, q, 3, func(ctx context.Context, key string) error {
		close(started)
		<-ctx.Done()
		// A Run that did not wait for its workers would return here.
		time.Sleep(20 * time.Millisecond)
		finished.Store(true)
		return ctx.Err()
	}, nil)
	q.Add("default/web")
	<-started
	stop()
	if !finished.Load() {
		t.Error("Run returned while a reconcile was still running")
	}
	if !q.ShuttingDown() {
		t.Error("the queue was not shut down")
	}
}

func TestRunDoesNotDrainAfterContextEnds(t *testing.T) {
	q := workqueue.New("test")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	q.Add("default/a")
	q.Add("default/b")
	var calls atomic.Int32
	Run(ctx, q, 1, func(context.Context, string) error { calls.Add(1); return nil }, nil)
	if n := calls.Load(); n != 0 {
		t.Errorf("reconcile ran %d times with its context already ended", n)
	}
}
