package metricsapi

import (
	"errors"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	metav1 "skiff.dev/proto/api/meta/v1"
)

// Usage is what the API serves of a node or container: the CPU rate
// between two samples and the newest memory working set.
type Usage struct {
	// NanoCores is the average CPU use over Window.
	NanoCores uint64
	// Memory is the working set in bytes at Timestamp.
	Memory uint64
	// Timestamp is the newer sample's time, Window the time between the
	// two samples.
	Timestamp time.Time
	Window    time.Duration
}

// ResourceList is the usage as upstream's ResourceList: CPU in nanocores
// ("1234n", or "123m" when whole), memory in bytes in binary SI ("1234Ki").
func (u Usage) ResourceList() map[string]*metav1.Quantity {
	cpu := resource.NewScaledQuantity(int64(u.NanoCores), resource.Nano)
	mem := resource.NewQuantity(int64(u.Memory), resource.BinarySI)
	return map[string]*metav1.Quantity{
		"cpu":    {String_: cpu.String()},
		"memory": {String_: mem.String()},
	}
}

var errCPUDecrease = errors.New("unexpected decrease in cumulative CPU usage value")

// rate is metrics-server's resourceUsage: the CPU rate from prev to last.
func rate(last, prev Sample) (Usage, error) {
	window := last.Time.Sub(prev.Time)
	if window <= 0 {
		return Usage{}, errors.New("samples are not in time order")
	}
	if last.CPU < prev.CPU {
		return Usage{}, errCPUDecrease
	}
	nano := float64(last.CPU-prev.CPU) / window.Seconds()
	return Usage{NanoCores: uint64(nano), Memory: last.Memory, Timestamp: last.Time, Window: window}, nil
}

// store keeps, for each node and container, the two newest samples, as
// metrics-server's storage does: a new scrape's sample becomes last and the
// previous last becomes prev. What a scrape round did not report is
// forgotten, so a node whose kubelet stopped answering loses its metrics.
type store struct {
	mu       sync.RWMutex
	nodeLast map[string]Sample
	nodePrev map[string]Sample
	podLast  map[PodRef]map[string]Sample
	podPrev  map[PodRef]map[string]Sample
}

func newStore() *store {
	return &store{nodeLast: map[string]Sample{}, nodePrev: map[string]Sample{},
		podLast: map[PodRef]map[string]Sample{}, podPrev: map[PodRef]map[string]Sample{}}
}

// advance is one sample's step: the new last and the prev kept for it
// (ok false when there is none usable yet).
func advance(s Sample, last Sample, hadLast bool, prev Sample, hadPrev bool) (newPrev Sample, ok bool) {
	switch {
	case !hadLast:
		return Sample{}, false
	case s.Time.After(last.Time) && s.CPU >= last.CPU:
		// A container restarted in between has a new start time: its
		// counter began again, the old sample is no base for a rate.
		if !s.StartTime.IsZero() && !last.StartTime.IsZero() && !s.StartTime.Equal(last.StartTime) {
			return Sample{}, false
		}
		return last, true
	case s.Time.Equal(last.Time) && hadPrev:
		// The kubelet has not measured again since the last scrape.
		return prev, true
	}
	// Older than what we have, or the counter went back (a restart).
	return Sample{}, false
}

// Store takes one scrape round: a batch per node that answered.
func (st *store) Store(batches map[string]*Batch) {
	st.mu.Lock()
	defer st.mu.Unlock()
	nodeLast, nodePrev := map[string]Sample{}, map[string]Sample{}
	podLast, podPrev := map[PodRef]map[string]Sample{}, map[PodRef]map[string]Sample{}
	for node, b := range batches {
		if b == nil {
			continue
		}
		if b.Node != nil {
			last, hadLast := st.nodeLast[node]
			prev, hadPrev := st.nodePrev[node]
			nodeLast[node] = *b.Node
			if p, ok := advance(*b.Node, last, hadLast, prev, hadPrev); ok {
				nodePrev[node] = p
			}
		}
		for ref, ctrs := range b.Pods {
			if podLast[ref] != nil {
				continue // a pod reported by two kubelets at once: keep the first
			}
			podLast[ref], podPrev[ref] = map[string]Sample{}, map[string]Sample{}
			for name, s := range ctrs {
				last, hadLast := st.podLast[ref][name]
				prev, hadPrev := st.podPrev[ref][name]
				podLast[ref][name] = s
				if p, ok := advance(s, last, hadLast, prev, hadPrev); ok {
					podPrev[ref][name] = p
				}
			}
		}
	}
	st.nodeLast, st.nodePrev, st.podLast, st.podPrev = nodeLast, nodePrev, podLast, podPrev
}

// Node is the node's usage, false while there are not two samples.
func (st *store) Node(name string) (Usage, bool) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	last, ok := st.nodeLast[name]
	prev, ok2 := st.nodePrev[name]
	if !ok || !ok2 {
		return Usage{}, false
	}
	u, err := rate(last, prev)
	return u, err == nil
}

// ContainerUsage is one container's usage.
type ContainerUsage struct {
	Name string
	Usage
}

// Pod is the pod's containers' usage, false unless every container has two
// samples (metrics-server serves a pod whole or not at all). The pod's
// timestamp and window are its earliest container's.
func (st *store) Pod(ref PodRef) ([]ContainerUsage, Usage, bool) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	last := st.podLast[ref]
	if len(last) == 0 {
		return nil, Usage{}, false
	}
	var (
		out      []ContainerUsage
		earliest Usage
	)
	for name, l := range last {
		p, ok := st.podPrev[ref][name]
		if !ok {
			return nil, Usage{}, false
		}
		u, err := rate(l, p)
		if err != nil {
			return nil, Usage{}, false
		}
		if earliest.Timestamp.IsZero() || u.Timestamp.Before(earliest.Timestamp) {
			earliest = u
		}
		out = append(out, ContainerUsage{Name: name, Usage: u})
	}
	return out, earliest, true
}
