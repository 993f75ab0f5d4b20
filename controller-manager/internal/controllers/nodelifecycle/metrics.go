package nodelifecycle

import "github.com/prometheus/client_golang/prometheus"

// metrics are upstream's node_collector_* and taint_eviction_controller_*
// series.
type metrics struct {
	zoneHealth, zoneSize, unhealthyNodes *prometheus.GaugeVec
	evictionsTotal                       *prometheus.CounterVec
	updateNodeHealth, updateAllNodes     prometheus.Histogram

	podDeletions       prometheus.Counter
	podDeletionLatency prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const sub = "node_collector"
	m := &metrics{
		zoneHealth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: sub, Name: "zone_health",
			Help: "Gauge measuring percentage of healthy nodes per zone."}, []string{"zone"}),
		zoneSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: sub, Name: "zone_size",
			Help: "Gauge measuring number of registered Nodes per zones."}, []string{"zone"}),
		unhealthyNodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: sub, Name: "unhealthy_nodes_in_zone",
			Help: "Gauge measuring number of not Ready Nodes per zones."}, []string{"zone"}),
		evictionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: sub, Name: "evictions_total",
			Help: "Number of Node evictions that happened since current instance of NodeController started."}, []string{"zone"}),
		updateNodeHealth: prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: sub, Name: "update_node_health_duration_seconds",
			Help:    "Duration in seconds for NodeController to update the health of a single node.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
		updateAllNodes: prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: sub, Name: "update_all_nodes_health_duration_seconds",
			Help:    "Duration in seconds for NodeController to update the health of all nodes.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 8)}),
		podDeletions: prometheus.NewCounter(prometheus.CounterOpts{Subsystem: "taint_eviction_controller", Name: "pod_deletions_total",
			Help: "Total number of Pods deleted by TaintEvictionController since its start."}),
		podDeletionLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: "taint_eviction_controller",
			Name:    "pod_deletion_duration_seconds",
			Help:    "Latency, in seconds, between the time when a taint effect has been activated for the Pod and its deletion via TaintEvictionController.",
			Buckets: []float64{0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 30, 60, 120, 180, 240}}),
	}
	if reg != nil {
		reg.MustRegister(m.zoneHealth, m.zoneSize, m.unhealthyNodes, m.evictionsTotal, m.updateNodeHealth, m.updateAllNodes,
			m.podDeletions, m.podDeletionLatency)
	}
	return m
}
