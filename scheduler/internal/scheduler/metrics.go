package scheduler

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are upstream's scheduler metrics.
type metrics struct {
	attempts  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	pending   *prometheus.GaugeVec
	sli       *prometheus.HistogramVec
	extension *prometheus.HistogramVec
	victims   prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scheduler_schedule_attempts_total",
			Help: "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem."}, []string{"result", "profile"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "scheduler_scheduling_attempt_duration_seconds",
			Help: "Scheduling attempt latency in seconds (scheduling algorithm + binding)", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}, []string{"result", "profile"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scheduler_pending_pods",
			Help: "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods."}, []string{"queue"}),
		sli: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "scheduler_pod_scheduling_sli_duration_seconds",
			Help: "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue and might involve multiple scheduling attempts.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 20)}, []string{"attempts"}),
		extension: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "scheduler_framework_extension_point_duration_seconds",
			Help: "Latency for running all plugins of a specific extension point.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 12)}, []string{"extension_point", "status", "profile"}),
		victims: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scheduler_preemption_victims",
			Help: "Number of selected preemption victims", Buckets: prometheus.LinearBuckets(5, 5, 10)}),
	}
	if r != nil {
		r.MustRegister(m.attempts, m.duration, m.pending, m.sli, m.extension, m.victims)
	}
	return m
}

func (m *metrics) attempt(result, profile string, start time.Time) {
	m.attempts.WithLabelValues(result, profile).Inc()
	m.duration.WithLabelValues(result, profile).Observe(time.Since(start).Seconds())
}
