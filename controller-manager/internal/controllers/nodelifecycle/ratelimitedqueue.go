package nodelifecycle

import (
	"container/heap"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
)

// evictionRateLimiterBurst is upstream's EvictionRateLimiterBurst: one
// node at a time, however long the zone was quiet.
const evictionRateLimiterBurst = 1

// tokenBucket is client-go's token bucket rate limiter, read from the
// controller's clock rather than the wall clock so that "one node per
// 1/qps seconds" is testable. A qps of 0 or less never accepts (upstream's
// fake "never" limiter, which stops tainting in a disrupted zone).
type tokenBucket struct {
	qps    float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(qps float64, burst int, now time.Time) *tokenBucket {
	return &tokenBucket{qps: qps, burst: float64(burst), tokens: float64(burst), last: now}
}

func (b *tokenBucket) tryAccept(now time.Time) bool {
	if b.qps <= 0 {
		return false
	}
	tokens := b.tokens
	if now.After(b.last) {
		tokens = min(b.burst, tokens+now.Sub(b.last).Seconds()*b.qps)
	}
	if tokens < 1 {
		// The state moves only on success, as x/time/rate's: refilling
		// from the last success in one product, not a sum of small
		// increments, keeps 1/qps exact.
		return false
	}
	b.tokens, b.last = tokens-1, now
	return true
}

// timedValue is a node waiting in a zone's queue.
type timedValue struct {
	value     string
	uid       string
	addedAt   time.Time
	processAt time.Time
	// seq breaks ties of processAt in the order values were added, which
	// a clock of coarse (or fake) resolution makes common.
	seq uint64
}

// timedHeap orders values by processAt, earliest first.
type timedHeap []*timedValue

func (h timedHeap) Len() int { return len(h) }
func (h timedHeap) Less(i, j int) bool {
	if !h[i].processAt.Equal(h[j].processAt) {
		return h[i].processAt.Before(h[j].processAt)
	}
	return h[i].seq < h[j].seq
}
func (h timedHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timedHeap) Push(x any)   { *h = append(*h, x.(*timedValue)) }
func (h *timedHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// rateLimitedTimedQueue is upstream's RateLimitedTimedQueue: the nodes of
// one zone waiting for their NoExecute taint, tried in order at most as
// fast as the zone's limiter allows. A value stays known after it was
// processed, so it is processed once until remove is called for it (the
// node became reachable, or its Ready status changed).
type rateLimitedTimedQueue struct {
	now func() time.Time

	mu    sync.Mutex // the heap and the set
	queue timedHeap
	set   sets.Set[string]
	seq   uint64

	limiterMu sync.Mutex // the limiter, held across a whole try
	limiter   *tokenBucket
}

func newRateLimitedTimedQueue(qps float64, now func() time.Time) *rateLimitedTimedQueue {
	return &rateLimitedTimedQueue{now: now, set: sets.New[string](),
		limiter: newTokenBucket(qps, evictionRateLimiterBurst, now())}
}

// add queues value unless it is known already; true if it was queued.
func (q *rateLimitedTimedQueue) add(value, uid string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.set.Has(value) {
		return false
	}
	now := q.now()
	q.seq++
	heap.Push(&q.queue, &timedValue{value: value, uid: uid, addedAt: now, processAt: now, seq: q.seq})
	q.set.Insert(value)
	return true
}

// remove forgets value, queued or processed, so it may be added again;
// true if it was known.
func (q *rateLimitedTimedQueue) remove(value string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.set.Has(value) {
		return false
	}
	q.set.Delete(value)
	q.dropLocked(value)
	return true
}

func (q *rateLimitedTimedQueue) dropLocked(value string) {
	for i, v := range q.queue {
		if v.value == value {
			heap.Remove(&q.queue, i)
			return
		}
	}
}

func (q *rateLimitedTimedQueue) head() (timedValue, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) == 0 {
		return timedValue{}, false
	}
	return *q.queue[0], true
}

// replace requeues a value fn asked to retry later, if still queued.
func (q *rateLimitedTimedQueue) replace(v timedValue) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range q.queue {
		if q.queue[i].value == v.value {
			heap.Remove(&q.queue, i)
			heap.Push(&q.queue, &v)
			return
		}
	}
}

// done takes a processed value out of the queue but keeps it known.
func (q *rateLimitedTimedQueue) done(value string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropLocked(value)
}

// try processes due values in order while the limiter gives tokens. fn
// returns true when the value is done, or false and how long to wait
// before it is tried again. Unlike upstream, a head that is not due yet
// does not spend a token.
func (q *rateLimitedTimedQueue) try(fn func(timedValue) (bool, time.Duration)) {
	q.limiterMu.Lock()
	defer q.limiterMu.Unlock()
	for v, ok := q.head(); ok; v, ok = q.head() {
		now := q.now()
		if now.Before(v.processAt) || !q.limiter.tryAccept(now) {
			return
		}
		if done, wait := fn(v); done {
			q.done(v.value)
		} else {
			v.processAt = now.Add(wait + 1)
			q.replace(v)
		}
	}
}

// swapLimiter sets the zone's rate, keeping the current one when it is the
// same. A new limiter starts empty when the old one was empty, as
// upstream's, so a rate change is no way around the limit.
func (q *rateLimitedTimedQueue) swapLimiter(qps float64) {
	q.limiterMu.Lock()
	defer q.limiterMu.Unlock()
	if q.limiter.qps == qps {
		return
	}
	now := q.now()
	next := newTokenBucket(qps, evictionRateLimiterBurst, now)
	if qps > 0 && !q.limiter.tryAccept(now) {
		next.tryAccept(now)
	}
	q.limiter = next
}

// qps is the zone's current rate.
func (q *rateLimitedTimedQueue) qps() float64 {
	q.limiterMu.Lock()
	defer q.limiterMu.Unlock()
	return q.limiter.qps
}
