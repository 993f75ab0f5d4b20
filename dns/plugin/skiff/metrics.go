package skiff

import (
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	discoveryv1 "skiff.dev/proto/api/discovery/v1"
)

// dnsProgrammingLatency is the kubernetes plugin's metric under its own
// name, so dashboards and the SLI of sig-scalability
// (dns_programming_latency.md) read it unchanged: from the change the
// endpointslice controller stamped on a slice to the moment this process
// can serve it. It relies on the controller-manager's and this node's
// clocks agreeing. CoreDNS's prometheus plugin serves the default registry.
var dnsProgrammingLatency = promauto.NewHistogramVec(prometheus.HistogramOpts{
	Namespace: plugin.Namespace,
	Subsystem: "kubernetes",
	Name:      "dns_programming_duration_seconds",
	// From 1 millisecond to ~17 minutes.
	Buckets:                     prometheus.ExponentialBuckets(0.001, 2, 20),
	NativeHistogramBucketFactor: plugin.NativeHistogramBucketFactor,
	Help:                        "Histogram of the time (in seconds) it took to program a dns instance.",
}, []string{"service_kind"})

// recordProgramming observes a slice's programming latency when the
// endpointslice controller stamped it and its Service is known, as
// upstream's EndpointLatencyRecorder: "cluster_ip" or
// "headless_with_selector" (a selector is what makes the controller write
// the slice at all).
func (c *cache) recordProgramming(s *discoveryv1.EndpointSlice) {
	m := s.GetMetadata()
	v, ok := m.GetAnnotations()[annTriggerTime]
	if !ok {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil || t.IsZero() {
		return
	}
	svc := c.service(m.GetNamespace(), m.GetLabels()[labelSvcName])
	if svc == nil {
		return
	}
	kind := "cluster_ip"
	if headless(svc) {
		kind = "headless_with_selector"
	}
	dnsProgrammingLatency.WithLabelValues(kind).Observe(c.now().Sub(t).Seconds())
}
