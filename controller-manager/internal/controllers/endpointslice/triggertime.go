package endpointslice

import (
	"sync"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
)

// TriggerTimeTracker computes the last-change-trigger-time annotation:
// the earliest of the changes (a pod's Ready transition, the Service's
// creation) seen since the Service's previous sync. It is upstream's
// approximation: several changes of one object between two syncs count as
// its last.
//
// Calls for one Service must not overlap; the work queue sees to that.
type TriggerTimeTracker struct {
	mu     sync.Mutex
	states map[string]triggerState
}

type triggerState struct {
	service time.Time
	pods    map[string]time.Time
}

// NewTriggerTimeTracker returns an empty tracker.
func NewTriggerTimeTracker() *TriggerTimeTracker {
	return &TriggerTimeTracker{states: map[string]triggerState{}}
}

// Compute records the state of svc and its pods and returns the time to
// export: the Service's creation the first time it is seen, else the
// earliest change since the last call, else zero (export none).
func (t *TriggerTimeTracker) Compute(svc *corev1.Service, pods []*corev1.Pod) time.Time {
	key := svc.GetMetadata().GetNamespace() + "/" + svc.GetMetadata().GetName()
	t.mu.Lock()
	prev, known := t.states[key]
	t.mu.Unlock()

	var earliest time.Time
	next := triggerState{pods: make(map[string]time.Time, len(pods))}
	for _, p := range pods {
		c := podReadyCondition(p)
		if c == nil || c.GetLastTransitionTime().IsZero() {
			continue
		}
		tt := c.GetLastTransitionTime().AsTime()
		next.pods[p.GetMetadata().GetName()] = tt
		if tt.After(prev.pods[p.GetMetadata().GetName()]) {
			earliest = minTime(earliest, tt)
		}
	}
	next.service = svc.GetMetadata().GetCreationTimestamp().AsTime()
	if next.service.After(prev.service) {
		earliest = minTime(earliest, next.service)
	}

	t.mu.Lock()
	t.states[key] = next
	t.mu.Unlock()
	if !known {
		return next.service
	}
	return earliest
}

// Forget drops a deleted Service's state.
func (t *TriggerTimeTracker) Forget(namespace, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.states, namespace+"/"+name)
}

func minTime(cur, t time.Time) time.Time {
	if cur.IsZero() || t.Before(cur) {
		return t
	}
	return cur
}

// FormatTriggerTime is the annotation's value (RFC 3339, UTC).
func FormatTriggerTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
