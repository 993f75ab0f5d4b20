// Package backoff is the kubelet's CrashLoopBackOff: client-go's
// flowcontrol.Backoff as the kubelet uses it (10 s doubling to a 5 min cap,
// forgotten once a container has run for twice the cap, 10 min), keyed by
// pod UID and container name, with an injectable clock.
package backoff

import (
	"fmt"
	"sync"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
)

// The kubelet's defaults (backOffPeriod, MaxContainerBackOff).
const (
	Initial = 10 * time.Second
	Max     = 300 * time.Second
)

// Reason is the waiting reason of a container held back.
const Reason = "CrashLoopBackOff"

type entry struct {
	backoff    time.Duration
	lastUpdate time.Time
}

// Backoff holds one delay per container. It is safe for concurrent use.
type Backoff struct {
	initial, max time.Duration
	now          func() time.Time

	mu      sync.Mutex
	entries map[key]*entry
}

type key struct{ podUID, container string }

// New returns a Backoff starting at initial and doubling up to max; now is
// the clock (time.Now when nil).
func New(initial, max time.Duration, now func() time.Time) *Backoff {
	if now == nil {
		now = time.Now
	}
	return &Backoff{initial: initial, max: max, now: now, entries: map[key]*entry{}}
}

// NewDefault is New with the kubelet's 10 s and 5 min.
func NewDefault(now func() time.Time) *Backoff { return New(Initial, Max, now) }

// expired says the container has stayed up long enough since the last
// restart (twice the cap) that its history is forgotten.
func (b *Backoff) expired(eventTime, lastUpdate time.Time) bool {
	return eventTime.Sub(lastUpdate) > b.max*2
}

// Next records a restart of the container whose last run ended at
// finishedAt: the first restart (or the first after a long healthy run) sets
// the delay to the initial one, each further one doubles it up to the cap.
func (b *Backoff) Next(podUID, container string, finishedAt time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := key{podUID, container}
	e, ok := b.entries[k]
	if !ok || b.expired(finishedAt, e.lastUpdate) {
		e = &entry{backoff: b.initial}
		b.entries[k] = e
	} else {
		e.backoff = min(e.backoff*2, b.max)
	}
	e.lastUpdate = b.now()
}

// InBackOff says the container, whose last run ended at finishedAt, must
// not be restarted yet: less than the current delay has passed since.
func (b *Backoff) InBackOff(podUID, container string, finishedAt time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key{podUID, container}]
	if !ok || b.expired(finishedAt, e.lastUpdate) {
		return false
	}
	return b.now().Sub(finishedAt) < e.backoff
}

// Get is the container's current delay (zero when it has none).
func (b *Backoff) Get(podUID, container string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.entries[key{podUID, container}]; ok {
		return e.backoff
	}
	return 0
}

// Remaining is how long until the container, whose last run ended at
// finishedAt, may be restarted (zero when it may be now): for the sync loop
// to wake up in time.
func (b *Backoff) Remaining(podUID, container string, finishedAt time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key{podUID, container}]
	if !ok || b.expired(finishedAt, e.lastUpdate) {
		return 0
	}
	return max(0, e.backoff-b.now().Sub(finishedAt))
}

// Check is upstream's doBackOff for one exited container: when it is held
// back it returns true and the message of its CrashLoopBackOff waiting state
// ("back-off 20s restarting failed container=app pod=web_default(uid)");
// otherwise it records the restart about to happen and returns false.
func (b *Backoff) Check(pod *corev1.Pod, container string, finishedAt time.Time) (bool, string) {
	uid := pod.GetMetadata().GetUid()
	if b.InBackOff(uid, container, finishedAt) {
		return true, fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", b.Get(uid, container), container, podString(pod))
	}
	b.Next(uid, container, finishedAt)
	return false, ""
}

// EventMessage is the text of the BackOff event upstream records while a
// container is held back.
func EventMessage(pod *corev1.Pod, container string) string {
	return fmt.Sprintf("Back-off restarting failed container %s in pod %s", container, podString(pod))
}

// podString is upstream's format.Pod: name_namespace(uid).
func podString(pod *corev1.Pod) string {
	m := pod.GetMetadata()
	return fmt.Sprintf("%s_%s(%s)", m.GetName(), m.GetNamespace(), m.GetUid())
}

// Reset forgets the container (its spec changed, say).
func (b *Backoff) Reset(podUID, container string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.entries, key{podUID, container})
}

// DeletePod forgets every container of the pod.
func (b *Backoff) DeletePod(podUID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.entries {
		if k.podUID == podUID {
			delete(b.entries, k)
		}
	}
}

// GC forgets containers not restarted for twice the cap, as upstream's
// periodic Backoff.GC.
func (b *Backoff) GC() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	for k, e := range b.entries {
		if now.Sub(e.lastUpdate) > b.max*2 {
			delete(b.entries, k)
		}
	}
}

// Len is the number of containers remembered.
func (b *Backoff) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.entries)
}
