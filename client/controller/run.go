package controller

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"skiff.dev/client/workqueue"
)

// Run processes q's keys with workers goroutines until ctx ends, then shuts
// the queue down and returns once every worker has stopped. A key whose
// reconcile succeeds is forgotten (its backoff reset); one that fails or
// panics is requeued rate-limited, so a bad object slows down rather than
// spins, and a panicking one does not take the whole controller-manager down.
func Run(ctx context.Context, q workqueue.Queue, workers int, reconcile func(ctx context.Context, key string) error, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for processNext(ctx, q, reconcile, log) {
			}
		})
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
}

// processNext handles one key; false means the worker should stop.
func processNext(ctx context.Context, q workqueue.Queue, reconcile func(context.Context, string) error, log *slog.Logger) bool {
	key, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(key)
	// A shut-down queue still hands out what it holds; with ctx gone every
	// reconcile would only fail, so stop instead of draining.
	if ctx.Err() != nil {
		return false
	}
	err, panicked := safeReconcile(ctx, key, reconcile, log)
	if err == nil {
		q.Forget(key)
		return true
	}
	if !panicked && ctx.Err() == nil {
		log.Info("Error syncing; requeuing", "key", key, "err", err)
	}
	q.AddRateLimited(key)
	return true
}

func safeReconcile(ctx context.Context, key string, reconcile func(context.Context, string) error, log *slog.Logger) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("Observed a panic in reconcile; requeuing", "key", key, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err, panicked = fmt.Errorf("panic: %v", r), true
		}
	}()
	return reconcile(ctx, key), false
}
