package endpointslice

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are upstream's endpoint_slice_controller_* series.
type metrics struct {
	added, removed *prometheus.HistogramVec
	changedPerSync *prometheus.HistogramVec
	desired        *prometheus.GaugeVec
	numSlices      *prometheus.GaugeVec
	desiredSlices  *prometheus.GaugeVec
	changes        *prometheus.CounterVec
	syncs          *prometheus.CounterVec

	// The gauges are totals over every Service; this is each Service's
	// share, by port set, so a sync replaces its Service's share.
	mu                               sync.Mutex
	byService                        map[string]map[string]efficiency
	endpoints, slices, slicesDesired int
	maxEndpointsPerSlice             int
}

// efficiency is one port set of one Service: its endpoints and the slices
// holding them.
type efficiency struct{ endpoints, slices int }

func newMetrics(reg prometheus.Registerer, maxEndpointsPerSlice int) *metrics {
	const sub = "endpoint_slice_controller"
	buckets := prometheus.ExponentialBuckets(2, 2, 15)
	m := &metrics{
		added: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: sub, Name: "endpoints_added_per_sync",
			Help: "Number of endpoints added on each Service sync", Buckets: buckets}, nil)),
		removed: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: sub, Name: "endpoints_removed_per_sync",
			Help: "Number of endpoints removed on each Service sync", Buckets: buckets}, nil)),
		changedPerSync: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: sub, Name: "endpointslices_changed_per_sync",
			Help: "Number of EndpointSlices changed on each Service sync"}, []string{"topology", "traffic_distribution"})),
		desired: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: sub, Name: "endpoints_desired",
			Help: "Number of endpoints desired"}, nil)),
		numSlices: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: sub, Name: "num_endpoint_slices",
			Help: "Number of EndpointSlices"}, nil)),
		desiredSlices: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: sub, Name: "desired_endpoint_slices",
			Help: "Number of EndpointSlices that would exist with perfect endpoint allocation"}, nil)),
		changes: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: sub, Name: "changes",
			Help: "Number of EndpointSlice changes"}, []string{"operation"})),
		syncs: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: sub, Name: "syncs",
			Help: "Number of EndpointSlice syncs"}, []string{"result"})),
		byService:            map[string]map[string]efficiency{},
		maxEndpointsPerSlice: maxEndpointsPerSlice,
	}
	return m
}

// register adopts the collector a previous controller of the process put
// on reg under the same name; nil reg registers nothing.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if reg == nil {
		return c
	}
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

// setService replaces a Service's share of the gauges.
func (m *metrics) setService(key string, byPorts map[string]efficiency) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pe, ps, pd := m.totals(m.byService[key])
	ce, cs, cd := m.totals(byPorts)
	m.endpoints += ce - pe
	m.slices += cs - ps
	m.slicesDesired += cd - pd
	m.byService[key] = byPorts
	m.publish()
}

// deleteService removes a deleted Service's share.
func (m *metrics) deleteService(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.byService[key]
	if !ok {
		return
	}
	e, s, d := m.totals(old)
	m.endpoints -= e
	m.slices -= s
	m.slicesDesired -= d
	delete(m.byService, key)
	m.publish()
}

// totals: endpoints, actual slices, and the slices a perfect packing
// would take (always at least the placeholder).
func (m *metrics) totals(byPorts map[string]efficiency) (endpoints, slices, desired int) {
	if byPorts == nil {
		return 0, 0, 0
	}
	for _, e := range byPorts {
		endpoints += e.endpoints
		slices += e.slices
		desired += (e.endpoints + m.maxEndpointsPerSlice - 1) / m.maxEndpointsPerSlice
	}
	return endpoints, slices, max(desired, 1)
}

func (m *metrics) publish() {
	m.desired.WithLabelValues().Set(float64(m.endpoints))
	m.numSlices.WithLabelValues().Set(float64(m.slices))
	m.desiredSlices.WithLabelValues().Set(float64(m.slicesDesired))
}
