// Package runner runs a function often enough and not too often: upstream's
// BoundedFrequencyRunner, which paces kube-proxy's syncs. Requests arriving
// while a run is pending fold into that run; runs are at least minInterval
// apart once a burst of them is spent, and at most maxInterval apart even
// with no request.
package runner

import (
	"context"
	"time"
)

// Runner paces calls to fn.
type Runner struct {
	fn          func()
	minInterval time.Duration
	maxInterval time.Duration
	burst       int

	run   chan struct{}
	retry chan time.Duration
	now   func() time.Time
}

// New returns a runner of fn; burst runs may follow each other at once
// before minInterval applies (upstream's burstSyncs, 2 in kube-proxy).
func New(fn func(), minInterval, maxInterval time.Duration, burst int) *Runner {
	if burst < 1 {
		burst = 1
	}
	return &Runner{fn: fn, minInterval: minInterval, maxInterval: maxInterval, burst: burst,
		run: make(chan struct{}, 1), retry: make(chan time.Duration, 1), now: time.Now}
}

// Run asks for a run as soon as the pacing allows; it never blocks.
func (r *Runner) Run() {
	select {
	case r.run <- struct{}{}:
	default:
	}
}

// RetryAfter asks for a run no later than d from now (after a failure).
func (r *Runner) RetryAfter(d time.Duration) {
	for {
		select {
		case r.retry <- d:
			return
		default:
		}
		select {
		case old := <-r.retry:
			d = min(d, old)
		default:
		}
	}
}

// Loop runs fn until ctx ends; fn runs on Loop's goroutine only.
func (r *Runner) Loop(ctx context.Context) {
	// Tokens refill one per minInterval up to burst; a run spends one.
	tokens := float64(r.burst)
	last := r.now()
	refill := func(now time.Time) {
		if r.minInterval <= 0 {
			tokens = float64(r.burst)
		} else {
			tokens = min(float64(r.burst), tokens+float64(now.Sub(last))/float64(r.minInterval))
		}
		last = now
	}
	lastRun := r.now()
	var retryAt time.Time
	pending := false
	timer := time.NewTimer(r.maxInterval)
	defer timer.Stop()
	for {
		now := r.now()
		refill(now)
		due := lastRun.Add(r.maxInterval)
		if !retryAt.IsZero() && retryAt.Before(due) {
			due = retryAt
		}
		if pending {
			if tokens >= 1 {
				due = now
			} else if at := now.Add(time.Duration((1 - tokens) * float64(r.minInterval))); at.Before(due) {
				due = at
			}
		}
		if !due.After(now) {
			tokens = max(tokens-1, 0)
			pending = false
			retryAt = time.Time{}
			r.fn()
			lastRun = r.now()
			continue
		}
		timer.Reset(due.Sub(now))
		select {
		case <-ctx.Done():
			return
		case <-r.run:
			pending = true
		case d := <-r.retry:
			if at := r.now().Add(d); retryAt.IsZero() || at.Before(retryAt) {
				retryAt = at
			}
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}
