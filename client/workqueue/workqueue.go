// Package workqueue is the controllers' queue of keys: client-go's
// rate-limited work queue (the one import we take from client-go, it is
// light), with upstream's default controller rate limiter and its metrics
// under upstream's names, registered on a registry we are given rather than a
// global one.
package workqueue

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// Queue is a rate-limited queue of string keys ("namespace/name").
type Queue = workqueue.TypedRateLimitingInterface[string]

// New returns a queue with upstream's controller rate limiter: per item
// exponential backoff from 5 ms to 1000 s, and 10 retries/s overall with a
// burst of 100. It keeps no metrics.
func New(name string) Queue { return NewWithMetrics(name, nil) }

// NewWithMetrics is New with the queue's metrics on reg (none when reg is
// nil). Queues sharing a registry share one vector per metric, told apart by
// the "name" label, so every controller of a binary can pass the same one.
func NewWithMetrics(name string, reg prometheus.Registerer) Queue {
	cfg := workqueue.TypedRateLimitingQueueConfig[string]{Name: name}
	if reg != nil {
		cfg.MetricsProvider = newMetrics(reg)
	}
	return workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), cfg)
}

// metrics implements client-go's MetricsProvider with upstream's names and a
// "name" label per queue, sharing one vector per metric on the registry.
type metrics struct {
	depth, longest, unfinished *prometheus.GaugeVec
	adds, retries              *prometheus.CounterVec
	latency, work              *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	buckets := prometheus.ExponentialBuckets(10e-9, 10, 12)
	m := &metrics{
		depth:      gauge(reg, "workqueue_depth", "Current depth of workqueue"),
		longest:    gauge(reg, "workqueue_longest_running_processor_seconds", "How many seconds has the longest running processor for workqueue been running."),
		unfinished: gauge(reg, "workqueue_unfinished_work_seconds", "How many seconds of work has been done that is in progress and hasn't been observed by work_duration."),
		adds:       counter(reg, "workqueue_adds_total", "Total number of adds handled by workqueue"),
		retries:    counter(reg, "workqueue_retries_total", "Total number of retries handled by workqueue"),
		latency:    histogram(reg, "workqueue_queue_duration_seconds", "How long in seconds an item stays in workqueue before being requested.", buckets),
		work:       histogram(reg, "workqueue_work_duration_seconds", "How long in seconds processing an item from workqueue takes.", buckets),
	}
	return m
}

// register adopts the collector another queue already put on reg. Any
// other registration error means an unrelated collector holds the name; the
// queue then still works, only without that metric being exported.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing
			}
		}
	}
	return c
}

func gauge(reg prometheus.Registerer, name, help string) *prometheus.GaugeVec {
	return register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"name"}))
}

func counter(reg prometheus.Registerer, name, help string) *prometheus.CounterVec {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"name"}))
}

func histogram(reg prometheus.Registerer, name, help string, b []float64) *prometheus.HistogramVec {
	return register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: b}, []string{"name"}))
}

func (m *metrics) NewDepthMetric(name string) workqueue.GaugeMetric {
	return m.depth.WithLabelValues(name)
}
func (m *metrics) NewAddsMetric(name string) workqueue.CounterMetric {
	return m.adds.WithLabelValues(name)
}
func (m *metrics) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return m.latency.WithLabelValues(name)
}
func (m *metrics) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return m.work.WithLabelValues(name)
}
func (m *metrics) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return m.unfinished.WithLabelValues(name)
}
func (m *metrics) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return m.longest.WithLabelValues(name)
}
func (m *metrics) NewRetriesMetric(name string) workqueue.CounterMetric {
	return m.retries.WithLabelValues(name)
}
