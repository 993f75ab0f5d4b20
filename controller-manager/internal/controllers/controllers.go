// Package controllers holds what every controller of skiff-controller-manager
// is built from: the shared clients, informers, event recorders and flag
// values, and the interface the manager runs them through. Each controller
// lives in a package of its own below this one, named as upstream names it.
package controllers

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/proto/scheme"
)

// Options are the flag values controllers read.
type Options struct {
	// ConcurrentSyncs is the worker count per controller name
	// ("deployment" from --concurrent-deployment-syncs, ...).
	ConcurrentSyncs map[string]int

	NodeMonitorGracePeriod time.Duration
	NodeMonitorPeriod      time.Duration
	NodeStartupGracePeriod time.Duration
	// Upstream's zone-aware eviction knobs (nodelifecycle).
	NodeEvictionRate          float64
	SecondaryNodeEvictionRate float64
	LargeClusterSizeThreshold int32
	UnhealthyZoneThreshold    float64

	ClusterCIDR       string
	AllocateNodeCIDRs bool
	NodeCIDRMaskSize  int

	TerminatedPodGCThreshold int

	// MaxEndpointsPerSlice caps each EndpointSlice (0: upstream's 100).
	MaxEndpointsPerSlice int

	// RootCA is the cluster CA (PEM) that root-ca-cert-publisher publishes.
	RootCA []byte

	// ResourceQuotaSyncPeriod is how often every quota is recounted
	// (0: upstream's 5 minutes).
	ResourceQuotaSyncPeriod time.Duration
	// HPA are the horizontal pod autoscaler's knobs (zero durations:
	// upstream's defaults).
	HPA HPAOptions
}

// HPAOptions are upstream's --horizontal-pod-autoscaler-* flags.
type HPAOptions struct {
	SyncPeriod              time.Duration
	Tolerance               float64
	DownscaleStabilization  time.Duration
	CPUInitializationPeriod time.Duration
	InitialReadinessDelay   time.Duration
}

// Workers is the worker count configured for a controller, or def.
func (o *Options) Workers(name string, def int) int {
	if n, ok := o.ConcurrentSyncs[name]; ok && n > 0 {
		return n
	}
	return def
}

// Context is what a controller is built from. Informers are shared by every
// controller of the process: one list+watch per kind.
type Context struct {
	Client     *client.Client
	Informers  *informers.Factory
	Recorder   func(component string) record.Recorder
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Options    *Options
	Now        func() time.Time
}

// Log is the context's logger, or the process's default.
func (cc Context) Log() *slog.Logger {
	if cc.Logger == nil {
		return slog.Default()
	}
	return cc.Logger
}

// Clock is the context's clock, or the wall clock.
func (cc Context) Clock() func() time.Time {
	if cc.Now == nil {
		return time.Now
	}
	return cc.Now
}

// WorkersFor is the worker count configured for the controller called
// name, or def.
func (cc Context) WorkersFor(name string, def int) int {
	if cc.Options == nil {
		return def
	}
	return cc.Options.Workers(name, def)
}

// EventRecorder records Events as component, or discards them where the
// context has no recorder (unit tests).
func (cc Context) EventRecorder(component string) record.Recorder {
	if cc.Recorder == nil {
		return &record.FakeRecorder{}
	}
	return cc.Recorder(component)
}

// RunQueue is the Run of a controller with one queue: once the caches
// behind synced are filled, workers reconcile q's keys until ctx ends; a
// queue whose caches never fill is shut down.
func RunQueue(ctx context.Context, log *slog.Logger, q workqueue.Queue, workers int,
	reconcile func(ctx context.Context, key string) error, synced ...informer.Registration) error {
	log.Info("Starting controller")
	defer log.Info("Shutting down controller")
	if !informers.WaitForCacheSync(ctx, synced...) {
		q.ShutDown()
		return nil
	}
	controller.Run(ctx, q, workers, reconcile, log)
	return nil
}

// ResyncEvery queues every object of l each period until ctx ends: the
// periodic pass over a controller's own kind that upstream gets from its
// informers' resync.
func ResyncEvery[T scheme.Object](ctx context.Context, period time.Duration, q workqueue.Queue, l informers.Lister[T]) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, o := range l.List(nil) {
				q.Add(controller.KeyFunc(o))
			}
		}
	}
}

// Controller is one reconcile loop. Run waits for its informers to sync,
// then works until ctx ends.
type Controller interface {
	Name() string
	Run(ctx context.Context) error
}

// HealthChecker is a controller that can say it is unwell; /healthz has a
// check per controller.
type HealthChecker interface {
	HealthCheck() error
}
