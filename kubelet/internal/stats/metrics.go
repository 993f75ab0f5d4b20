package stats

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The resource metrics, named and described as upstream's
// pkg/kubelet/metrics/collectors/resource_metrics.go: each sample carries
// the time it was measured, so a scraper's rate is over the right window.
var (
	nodeCPUDesc = prometheus.NewDesc("node_cpu_usage_seconds_total",
		"Cumulative cpu time consumed by the node in core-seconds", nil, nil)
	nodeMemDesc = prometheus.NewDesc("node_memory_working_set_bytes",
		"Current working set of the node in bytes", nil, nil)
	containerCPUDesc = prometheus.NewDesc("container_cpu_usage_seconds_total",
		"Cumulative cpu time consumed by the container in core-seconds", []string{"container", "pod", "namespace"}, nil)
	containerMemDesc = prometheus.NewDesc("container_memory_working_set_bytes",
		"Current working set of the container in bytes", []string{"container", "pod", "namespace"}, nil)
	containerStartDesc = prometheus.NewDesc("container_start_time_seconds",
		"Start time of the container since unix epoch in seconds", []string{"container", "pod", "namespace"}, nil)
	podCPUDesc = prometheus.NewDesc("pod_cpu_usage_seconds_total",
		"Cumulative cpu time consumed by the pod in core-seconds", []string{"pod", "namespace"}, nil)
	podMemDesc = prometheus.NewDesc("pod_memory_working_set_bytes",
		"Current working set of the pod in bytes", []string{"pod", "namespace"}, nil)
	// scrape_error is upstream's deprecated name, still served beside its
	// replacement.
	scrapeErrorDesc = prometheus.NewDesc("scrape_error",
		"1 if there was an error while getting container metrics, 0 otherwise", nil, nil)
	resourceScrapeErrorDesc = prometheus.NewDesc("resource_scrape_error",
		"1 if there was an error while getting container metrics, 0 otherwise", nil, nil)
)

// scrapeTimeout bounds one scrape's runtime calls.
const scrapeTimeout = 30 * time.Second

// ResourceMetricsHandler serves /metrics/resource in the Prometheus text
// format.
func (p *Provider) ResourceMetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&resourceCollector{p: p})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

type resourceCollector struct{ p *Provider }

func (c *resourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{nodeCPUDesc, nodeMemDesc, containerCPUDesc, containerMemDesc,
		containerStartDesc, podCPUDesc, podMemDesc, scrapeErrorDesc, resourceScrapeErrorDesc} {
		ch <- d
	}
}

func (c *resourceCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	// No wait for a second sample: these are counters, the scraper takes
	// the rate.
	s, err := c.p.summary(ctx, false)
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrorDesc, prometheus.GaugeValue, failed)
	ch <- prometheus.MustNewConstMetric(resourceScrapeErrorDesc, prometheus.GaugeValue, failed)
	if err != nil {
		return
	}
	emit := func(d *prometheus.Desc, t prometheus.ValueType, at Time, v float64, labels ...string) {
		ch <- prometheus.NewMetricWithTimestamp(at.Time, prometheus.MustNewConstMetric(d, t, v, labels...))
	}
	cpu := func(d *prometheus.Desc, st *CPUStats, labels ...string) {
		if st != nil && st.UsageCoreNanoSeconds != nil {
			emit(d, prometheus.CounterValue, st.Time, float64(*st.UsageCoreNanoSeconds)/float64(time.Second), labels...)
		}
	}
	mem := func(d *prometheus.Desc, st *MemoryStats, labels ...string) {
		if st != nil && st.WorkingSetBytes != nil {
			emit(d, prometheus.GaugeValue, st.Time, float64(*st.WorkingSetBytes), labels...)
		}
	}
	cpu(nodeCPUDesc, s.Node.CPU)
	mem(nodeMemDesc, s.Node.Memory)
	// A pod deleted and created again under its name runs twice for a
	// moment; a registry refuses two series with the same labels.
	seen := map[PodReference]bool{}
	for _, pod := range s.Pods {
		ns, name := pod.PodRef.Namespace, pod.PodRef.Name
		key := PodReference{Namespace: ns, Name: name}
		if seen[key] {
			continue
		}
		seen[key] = true
		for _, ctr := range pod.Containers {
			cpu(containerCPUDesc, ctr.CPU, ctr.Name, name, ns)
			mem(containerMemDesc, ctr.Memory, ctr.Name, name, ns)
			if !ctr.StartTime.IsZero() {
				emit(containerStartDesc, prometheus.GaugeValue, ctr.StartTime,
					float64(ctr.StartTime.UnixNano())/float64(time.Second), ctr.Name, name, ns)
			}
		}
		cpu(podCPUDesc, pod.CPU, name, ns)
		mem(podMemDesc, pod.Memory, name, ns)
	}
}
