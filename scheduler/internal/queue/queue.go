// Package queue is the scheduling queue, as upstream's: an active queue
// ordered by the queue-sort plugin, a backoff queue (1 s doubling to 10 s per
// attempt) and an unschedulable pool whose pods move back when a cluster
// event could make them schedulable (a node added or changed, a pod deleted),
// or after five minutes at the latest.
package queue

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/scheduler/internal/framework"
)

// Event is a cluster change that may make pods schedulable.
type Event string

const (
	NodeAdd     Event = "NodeAdd"
	NodeUpdate  Event = "NodeUpdate"
	PodDelete   Event = "AssignedPodDelete"
	PodUpdate   Event = "AssignedPodUpdate"
	ForceFlush  Event = "UnschedulableTimeout"
	BindFailure Event = "BindFailure"
)

// Options tune the queue.
type Options struct {
	Less                       func(a, b *framework.QueuedPodInfo) bool
	InitialBackoff, MaxBackoff time.Duration
	MaxUnschedulable           time.Duration
	Now                        func() time.Time
	Pending                    *prometheus.GaugeVec // scheduler_pending_pods{queue}
}

// Queue holds pods waiting to be scheduled.
type Queue struct {
	o    Options
	mu   sync.Mutex
	cond *sync.Cond

	active        *podHeap
	backoff       *podHeap
	unschedulable map[string]*framework.QueuedPodInfo
	// inFlight are popped pods whose attempt has not ended; an event during
	// the attempt sends them to backoff rather than the unschedulable pool.
	inFlight  map[string]bool
	eventSeen map[string]bool
	closed    bool
}

// New builds a queue.
func New(o Options) *Queue {
	if o.InitialBackoff == 0 {
		o.InitialBackoff = time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.MaxUnschedulable == 0 {
		o.MaxUnschedulable = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	q := &Queue{o: o, unschedulable: map[string]*framework.QueuedPodInfo{}, inFlight: map[string]bool{}, eventSeen: map[string]bool{}}
	q.active = &podHeap{less: o.Less, index: map[string]int{}}
	q.backoff = &podHeap{less: func(a, b *framework.QueuedPodInfo) bool { return q.backoffExpiry(a).Before(q.backoffExpiry(b)) }, index: map[string]int{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *Queue) backoffExpiry(p *framework.QueuedPodInfo) time.Time {
	d := q.o.InitialBackoff
	for i := 1; i < p.Attempts && d < q.o.MaxBackoff; i++ {
		d *= 2
	}
	return p.Timestamp.Add(min(d, q.o.MaxBackoff))
}

func (q *Queue) metrics() {
	if q.o.Pending == nil {
		return
	}
	q.o.Pending.WithLabelValues("active").Set(float64(q.active.Len()))
	q.o.Pending.WithLabelValues("backoff").Set(float64(q.backoff.Len()))
	q.o.Pending.WithLabelValues("unschedulable").Set(float64(len(q.unschedulable)))
}

// Add queues a new pending pod (or refreshes one already queued).
func (q *Queue) Add(pi *framework.PodInfo) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := pi.Key()
	now := q.o.Now()
	if old, ok := q.unschedulable[k]; ok {
		// An update to the pod itself may make it schedulable.
		delete(q.unschedulable, k)
		old.PodInfo = pi
		old.Timestamp = now
		q.active.push(old)
	} else if i, ok := q.active.index[k]; ok {
		q.active.items[i].PodInfo = pi
		heap.Fix(q.active, i)
	} else if i, ok := q.backoff.index[k]; ok {
		q.backoff.items[i].PodInfo = pi
	} else if !q.inFlight[k] {
		q.active.push(&framework.QueuedPodInfo{PodInfo: pi, Timestamp: now, InitialAttemptTimestamp: now})
	}
	q.metrics()
	q.cond.Broadcast()
}

// Delete forgets a pod (scheduled elsewhere, or gone).
func (q *Queue) Delete(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.active.remove(key)
	q.backoff.remove(key)
	delete(q.unschedulable, key)
	q.metrics()
}

// Pop blocks until a pod is active or ctx ends.
func (q *Queue) Pop(ctx context.Context) (*framework.QueuedPodInfo, bool) {
	stop := context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.active.Len() == 0 {
		if ctx.Err() != nil || q.closed {
			return nil, false
		}
		q.cond.Wait()
	}
	p := heap.Pop(q.active).(*framework.QueuedPodInfo)
	p.Attempts++
	k := p.Key()
	q.inFlight[k] = true
	delete(q.eventSeen, k)
	q.metrics()
	return p, true
}

// Done ends an attempt that bound the pod.
func (q *Queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.inFlight, key)
	delete(q.eventSeen, key)
}

// Requeue ends a failed attempt: to backoff when a cluster event happened
// meanwhile (or the failure was not the pod's fault), else to the
// unschedulable pool until one does.
func (q *Queue) Requeue(p *framework.QueuedPodInfo, unschedulable bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := p.Key()
	seen := q.eventSeen[k]
	delete(q.inFlight, k)
	delete(q.eventSeen, k)
	p.Timestamp = q.o.Now()
	if unschedulable && !seen {
		q.unschedulable[k] = p
	} else {
		q.backoff.push(p)
	}
	q.metrics()
}

// MoveAllOnEvent moves unschedulable pods to backoff (or active when their
// backoff is over) because ev may have made them schedulable.
func (q *Queue) MoveAllOnEvent(ev Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.o.Now()
	for k, p := range q.unschedulable {
		delete(q.unschedulable, k)
		if q.backoffExpiry(p).After(now) {
			q.backoff.push(p)
		} else {
			q.active.push(p)
		}
	}
	for k := range q.inFlight {
		q.eventSeen[k] = true
	}
	q.metrics()
	q.cond.Broadcast()
}

// Run moves pods whose backoff ended to active, and flushes pods left
// unschedulable too long, until ctx ends.
func (q *Queue) Run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			q.mu.Lock()
			q.closed = true
			q.cond.Broadcast()
			q.mu.Unlock()
			return
		case <-t.C:
		}
		q.flush()
	}
}

func (q *Queue) flush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.o.Now()
	moved := false
	for q.backoff.Len() > 0 && !q.backoffExpiry(q.backoff.items[0]).After(now) {
		q.active.push(heap.Pop(q.backoff).(*framework.QueuedPodInfo))
		moved = true
	}
	for k, p := range q.unschedulable {
		if now.Sub(p.Timestamp) > q.o.MaxUnschedulable {
			delete(q.unschedulable, k)
			q.active.push(p)
			moved = true
		}
	}
	if moved {
		q.metrics()
		q.cond.Broadcast()
	}
}

// Len is the number of queued pods in each part (tests, metrics).
func (q *Queue) Len() (active, backoff, unschedulable int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.active.Len(), q.backoff.Len(), len(q.unschedulable)
}

// podHeap is a heap of queued pods with an index by key.
type podHeap struct {
	items []*framework.QueuedPodInfo
	index map[string]int
	less  func(a, b *framework.QueuedPodInfo) bool
}

func (h *podHeap) Len() int           { return len(h.items) }
func (h *podHeap) Less(i, j int) bool { return h.less(h.items[i], h.items[j]) }
func (h *podHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.index[h.items[i].Key()] = i
	h.index[h.items[j].Key()] = j
}
func (h *podHeap) Push(x any) {
	p := x.(*framework.QueuedPodInfo)
	h.index[p.Key()] = len(h.items)
	h.items = append(h.items, p)
}
func (h *podHeap) Pop() any {
	p := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	delete(h.index, p.Key())
	return p
}

func (h *podHeap) push(p *framework.QueuedPodInfo) {
	if i, ok := h.index[p.Key()]; ok {
		h.items[i] = p
		heap.Fix(h, i)
		return
	}
	heap.Push(h, p)
}

func (h *podHeap) remove(key string) {
	if i, ok := h.index[key]; ok {
		heap.Remove(h, i)
	}
}
