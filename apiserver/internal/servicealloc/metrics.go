package servicealloc

import "github.com/prometheus/client_golang/prometheus"

// metrics are upstream's ipallocator and portallocator metrics; scope is
// "static" (the client named the value) or "dynamic" (the server drew it).
type metrics struct {
	allocated, available        *prometheus.GaugeVec
	ipAllocations, ipErrors     *prometheus.CounterVec
	portsAllocated              prometheus.Gauge
	portsAvailable              prometheus.Gauge
	portAllocations, portErrors *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ipSub, portSub = "clusterip_allocator", "nodeport_allocator"
	m := &metrics{
		allocated: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "kube_apiserver", Subsystem: ipSub, Name: "allocated_ips",
			Help: "Gauge measuring the number of allocated IPs for Services"}, []string{"cidr"}),
		available: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "kube_apiserver", Subsystem: ipSub, Name: "available_ips",
			Help: "Gauge measuring the number of available IPs for Services"}, []string{"cidr"}),
		ipAllocations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kube_apiserver", Subsystem: ipSub, Name: "allocation_total",
			Help: "Number of Cluster IPs allocations"}, []string{"cidr", "scope"}),
		ipErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kube_apiserver", Subsystem: ipSub, Name: "allocation_errors_total",
			Help: "Number of errors trying to allocate Cluster IPs"}, []string{"cidr", "scope"}),
		portsAllocated: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kube_apiserver", Subsystem: portSub, Name: "allocated_ports",
			Help: "Gauge measuring the number of allocated NodePorts for Services"}),
		portsAvailable: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kube_apiserver", Subsystem: portSub, Name: "available_ports",
			Help: "Gauge measuring the number of available NodePorts for Services"}),
		portAllocations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kube_apiserver", Subsystem: portSub, Name: "allocation_total",
			Help: "Number of NodePort allocations"}, []string{"scope"}),
		portErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kube_apiserver", Subsystem: portSub, Name: "allocation_errors_total",
			Help: "Number of errors trying to allocate NodePort"}, []string{"scope"}),
	}
	if reg != nil {
		reg.MustRegister(m.allocated, m.available, m.ipAllocations, m.ipErrors, m.portsAllocated, m.portsAvailable, m.portAllocations, m.portErrors)
	}
	return m
}
