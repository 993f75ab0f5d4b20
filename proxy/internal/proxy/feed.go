package proxy

import (
	"context"
	"sync"
	"sync/atomic"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	"skiff.dev/proxy/internal/metrics"
	"skiff.dev/proxy/internal/runner"
)

// Feed turns the informers' events into Tracker changes and sync requests,
// the same way for every proxier: nothing is programmed before Services and
// EndpointSlices have both been listed once (a sync earlier would program
// a partial view and break connections that work), and after that every
// change the Tracker says matters asks for a sync.
type Feed struct {
	tracker *Tracker
	pace    Pace

	mu                           sync.Mutex
	servicesSynced, slicesSynced bool
	initialized                  atomic.Bool
}

// Pace is how every proxier asks for a sync: the health server hears an
// update is pending (nil: no health server), the metric records when, and
// the runner schedules the sync within its bounds.
type Pace struct {
	Runner  *runner.Runner
	Health  interface{ QueuedUpdate(family string) }
	Metrics *metrics.Metrics
	Family  Family
}

// NewFeed feeds t and asks for syncs as pace says.
func NewFeed(t *Tracker, pace Pace) *Feed { return &Feed{tracker: t, pace: pace} }

// Sync asks for a sync soon.
func (f *Feed) Sync() {
	if f.pace.Health != nil {
		f.pace.Health.QueuedUpdate(string(f.pace.Family))
	}
	f.pace.Metrics.LastQueued.SetToCurrentTime()
	f.pace.Runner.Run()
}

// SyncLoop syncs as the runner paces it until ctx ends.
func (f *Feed) SyncLoop(ctx context.Context) {
	f.pace.Metrics.LastQueued.SetToCurrentTime()
	f.pace.Runner.Loop(ctx)
}

// Initialized reports that both kinds have been listed once.
func (f *Feed) Initialized() bool { return f.initialized.Load() }

func (f *Feed) changed(ok bool) {
	if ok && f.initialized.Load() {
		f.Sync()
	}
}

func (f *Feed) OnServiceAdd(s *corev1.Service)         { f.changed(f.tracker.ServiceUpdate(nil, s)) }
func (f *Feed) OnServiceUpdate(old, s *corev1.Service) { f.changed(f.tracker.ServiceUpdate(old, s)) }
func (f *Feed) OnServiceDelete(s *corev1.Service)      { f.changed(f.tracker.ServiceUpdate(s, nil)) }
func (f *Feed) OnEndpointSliceAdd(s *discoveryv1.EndpointSlice) {
	f.changed(f.tracker.EndpointSliceUpdate(s, false))
}
func (f *Feed) OnEndpointSliceUpdate(_, s *discoveryv1.EndpointSlice) {
	f.changed(f.tracker.EndpointSliceUpdate(s, false))
}
func (f *Feed) OnEndpointSliceDelete(s *discoveryv1.EndpointSlice) {
	f.changed(f.tracker.EndpointSliceUpdate(s, true))
}

// OnServicesSynced and OnEndpointSlicesSynced: the informers have handed
// over everything of their kind.
func (f *Feed) OnServicesSynced() {
	f.mu.Lock()
	f.servicesSynced = true
	f.initialized.Store(f.slicesSynced)
	f.mu.Unlock()
	f.Sync()
}

func (f *Feed) OnEndpointSlicesSynced() {
	f.mu.Lock()
	f.slicesSynced = true
	f.initialized.Store(f.servicesSynced)
	f.mu.Unlock()
	f.Sync()
}
