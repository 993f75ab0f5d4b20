package endpointslice

import (
	"strconv"
	"sync"

	discoveryv1 "skiff.dev/proto/api/discovery/v1"
)

// deletionExpected marks a slice the controller deleted.
const deletionExpected = -1

// sliceTracker remembers the EndpointSlices this controller wrote, per
// Service, so that it neither acts on an informer cache that has not yet
// seen its own writes nor re-syncs a Service on the echo of one.
//
// Upstream tracks metadata.generation. Our apiserver moves generation only
// for kinds with a spec, which an EndpointSlice lacks, so this tracks the
// resourceVersion of each write instead: an etcd revision, so a cached copy
// older than the write has a smaller one.
type sliceTracker struct {
	mu sync.Mutex
	// bySvc: "ns/name" → slice uid → resourceVersion written (or
	// deletionExpected).
	bySvc map[string]map[string]int64
	// uids: the Service uid the entries are for; a new uid (Service
	// recreated) makes them obsolete.
	uids map[string]string
}

func newSliceTracker() *sliceTracker {
	return &sliceTracker{bySvc: map[string]map[string]int64{}, uids: map[string]string{}}
}

func rvOf(s *discoveryv1.EndpointSlice) int64 {
	n, _ := strconv.ParseInt(s.GetMetadata().GetResourceVersion(), 10, 64)
	return n
}

func serviceKeyOf(s *discoveryv1.EndpointSlice) string {
	return s.GetMetadata().GetNamespace() + "/" + s.GetMetadata().GetLabels()[LabelServiceName]
}

// update records a slice as written by us.
func (t *sliceTracker) update(s *discoveryv1.EndpointSlice) {
	t.set(s, rvOf(s))
}

// expectDeletion records a slice we deleted.
func (t *sliceTracker) expectDeletion(s *discoveryv1.EndpointSlice) {
	t.set(s, deletionExpected)
}

func (t *sliceTracker) set(s *discoveryv1.EndpointSlice, v int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := serviceKeyOf(s)
	m := t.bySvc[k]
	if m == nil {
		m = map[string]int64{}
		t.bySvc[k] = m
	}
	m[s.GetMetadata().GetUid()] = v
}

// has reports a tracked slice.
func (t *sliceTracker) has(s *discoveryv1.EndpointSlice) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.bySvc[serviceKeyOf(s)][s.GetMetadata().GetUid()]
	return ok
}

// shouldSync reports a slice change that is not the echo of our own write:
// a slice we do not know, or a newer version than we wrote.
func (t *sliceTracker) shouldSync(s *discoveryv1.EndpointSlice) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.bySvc[serviceKeyOf(s)][s.GetMetadata().GetUid()]
	return !ok || (v != deletionExpected && rvOf(s) > v)
}

// handleDeletion forgets a deleted slice and reports whether we expected
// the deletion (false: someone else deleted it, so the Service needs a sync).
func (t *sliceTracker) handleDeletion(s *discoveryv1.EndpointSlice) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.bySvc[serviceKeyOf(s)]
	v, ok := m[s.GetMetadata().GetUid()]
	delete(m, s.GetMetadata().GetUid())
	return !ok || v == deletionExpected
}

// stale reports a cache behind our writes for the Service: a slice older
// than we wrote it, one we deleted still there, or one we created missing.
func (t *sliceTracker) stale(svcKey, svcUID string, cached []*discoveryv1.EndpointSlice) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.uids[svcKey]; ok && old != "" && svcUID != "" && old != svcUID {
		delete(t.bySvc, svcKey)
	}
	t.uids[svcKey] = svcUID
	m := t.bySvc[svcKey]
	if len(m) == 0 {
		return false
	}
	seen := make(map[string]bool, len(cached))
	for _, s := range cached {
		uid := s.GetMetadata().GetUid()
		seen[uid] = true
		if v, ok := m[uid]; ok && (v == deletionExpected || v > rvOf(s)) {
			return true
		}
	}
	for uid, v := range m {
		if v != deletionExpected && !seen[uid] {
			return true
		}
	}
	return false
}

// forget drops a deleted Service.
func (t *sliceTracker) forget(svcKey string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.bySvc, svcKey)
	delete(t.uids, svcKey)
}
