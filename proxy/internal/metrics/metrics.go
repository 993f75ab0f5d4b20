// Package metrics holds skiff-proxy's metrics, upstream's names
// (pkg/proxy/metrics), on a registry the caller passes.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are shared by the proxiers of both families.
type Metrics struct {
	SyncDuration        prometheus.Histogram
	SyncFullDuration    prometheus.Histogram
	SyncPartialDuration prometheus.Histogram
	NetworkProgramming  prometheus.Histogram
	LastSync            prometheus.Gauge
	LastQueued          prometheus.Gauge
	SyncFailures        prometheus.Counter
	NoLocalEndpoints    *prometheus.GaugeVec
	HealthzTotal        *prometheus.CounterVec
	LivezTotal          *prometheus.CounterVec
}

// New makes the metrics and registers them on reg (nil: unregistered, for
// tests that do not look).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Subsystem: "kubeproxy", Name: "sync_proxy_rules_duration_seconds",
			Help:    "SyncProxyRules latency in seconds",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		SyncFullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Subsystem: "kubeproxy", Name: "sync_full_proxy_rules_duration_seconds",
			Help:    "SyncProxyRules latency in seconds for full resyncs",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		SyncPartialDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Subsystem: "kubeproxy", Name: "sync_partial_proxy_rules_duration_seconds",
			Help:    "SyncProxyRules latency in seconds for partial resyncs",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		NetworkProgramming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Subsystem: "kubeproxy", Name: "network_programming_duration_seconds",
			Help: "In Cluster Network Programming Latency in seconds",
			Buckets: merge(
				prometheus.LinearBuckets(0.25, 0.25, 2), // 0.25s, 0.50s
				prometheus.LinearBuckets(1, 1, 59),      // 1s .. 59s
				prometheus.LinearBuckets(60, 5, 12),     // 60s .. 115s
				prometheus.LinearBuckets(120, 30, 7),    // 2min .. 5min
			)}),
		LastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Subsystem: "kubeproxy", Name: "sync_proxy_rules_last_timestamp_seconds",
			Help: "The last time proxy rules were successfully synced"}),
		LastQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Subsystem: "kubeproxy", Name: "sync_proxy_rules_last_queued_timestamp_seconds",
			Help: "The last time a sync of proxy rules was queued"}),
		SyncFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Subsystem: "kubeproxy", Name: "sync_proxy_rules_nftables_sync_failures_total",
			Help: "Number of failed nftables syncs"}),
		NoLocalEndpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Subsystem: "kubeproxy", Name: "sync_proxy_rules_no_local_endpoints_total",
			Help: "Number of services with a Local traffic policy and no endpoints"}, []string{"traffic_policy"}),
		HealthzTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Subsystem: "kubeproxy", Name: "proxy_healthz_total",
			Help: "Cumulative proxy healthz HTTP status"}, []string{"code"}),
		LivezTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Subsystem: "kubeproxy", Name: "proxy_livez_total",
			Help: "Cumulative proxy livez HTTP status"}, []string{"code"}),
	}
	if reg != nil {
		reg.MustRegister(m.SyncDuration, m.SyncFullDuration, m.SyncPartialDuration, m.NetworkProgramming,
			m.LastSync, m.LastQueued, m.SyncFailures, m.NoLocalEndpoints, m.HealthzTotal, m.LivezTotal)
	}
	return m
}

// ObserveSync records one sync's duration.
func (m *Metrics) ObserveSync(start time.Time, full bool) {
	d := time.Since(start).Seconds()
	m.SyncDuration.Observe(d)
	if full {
		m.SyncFullDuration.Observe(d)
	} else {
		m.SyncPartialDuration.Observe(d)
	}
}

// ObserveProgramming records the latency of changes that triggered at
// times, now that their rules are in place.
func (m *Metrics) ObserveProgramming(times []time.Time) {
	for _, t := range times {
		m.NetworkProgramming.Observe(time.Since(t).Seconds())
	}
}

func merge(slices ...[]float64) []float64 {
	var out []float64
	for _, s := range slices {
		out = append(out, s...)
	}
	return out
}
