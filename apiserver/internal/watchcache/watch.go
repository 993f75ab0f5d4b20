package watchcache

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WatchOptions select a watch. FromRev streams changes strictly after it;
// InitialState first sends an ADDED for every matching object (upstream's
// resourceVersion "" and "0").
type WatchOptions struct {
	Filter       Filter
	FromRev      int64
	InitialState bool
	Bookmarks    bool
}

const (
	// bufferSize is how many events a watcher may fall behind before it is
	// blocked: then it waits in a backlog for the drainer.
	bufferSize = 256
	// backlogLimit bounds a blocked watcher's memory: past it the watcher is
	// closed whatever the budget says.
	backlogLimit = 4 * bufferSize
	// maxBudget and budgetRefill are upstream's dispatchTimeoutBudget: all
	// blocked watchers share at most 100 ms of waiting, refilled at 50 ms a
	// second, so ten stuck watchers cost what one does.
	maxBudget    = 100 * time.Millisecond
	budgetRefill = 50 * time.Millisecond
)

// Watcher is one client's watch.
type Watcher struct {
	c        *Cache
	filter   Filter
	bookmark bool
	in       chan Event // dispatcher and drainer → forwarder; never closed
	out      chan Event // forwarder → client
	initial  []Event    // the forwarder's only
	done     chan struct{}
	doneOnce sync.Once
	mu       sync.Mutex
	err      error

	// Guarded by c.dmu.
	startRev int64   // changes at or below it were in the initial events
	sentRev  int64   // the last revision queued for the client
	backlog  []Event // events queued behind a full buffer; only the drainer empties it
	live     bool    // initial events sent: the drainer may work off the backlog
	closed   bool    // unregistered
}

// Watch registers a watcher.
func (c *Cache) Watch(ctx context.Context, o WatchOptions) (*Watcher, error) {
	w := &Watcher{
		c: c, filter: o.Filter, bookmark: o.Bookmarks,
		in: make(chan Event, bufferSize), out: make(chan Event), done: make(chan struct{}),
	}
	resume := !o.InitialState && o.FromRev > 0
	for attempt := 0; ; attempt++ {
		// A resumer from before the window is pinned by cover: the history it
		// needs stays in memory until it has copied it below.
		pinned := false
		if resume && (attempt > 0 || c.beforeHistory(o.FromRev)) {
			if attempt == 3 {
				return nil, ErrExpired
			}
			if err := c.cover(ctx, o.FromRev); err != nil {
				return nil, err
			}
			pinned = true
		}
		c.dmu.Lock()
		c.mu.RLock()
		ok := c.begin(w, o)
		if ok {
			c.register(w)
		}
		c.mu.RUnlock()
		c.dmu.Unlock()
		if pinned {
			c.unpin()
		}
		if ok {
			break
		}
		// The window moved past FromRev or the cache relisted meanwhile.
	}
	c.metrics.watchers.Inc()
	go w.forward(ctx)
	return w, nil
}

// begin fills w's initial events and start revision, or reports that the
// history no longer reaches back to o.FromRev. Callers hold dmu and mu, so
// every change up to c.rev is in the window and none after it has been
// dispatched yet.
func (c *Cache) begin(w *Watcher, o WatchOptions) bool {
	last := c.rev
	from := o.FromRev
	if o.InitialState {
		for _, obj := range c.objs {
			if w.filter.Matches(obj) {
				w.initial = append(w.initial, Event{Type: Added, Object: obj, Rev: obj.Rev})
			}
		}
		sort.Slice(w.initial, func(i, j int) bool { return w.initial[i].Object.Key < w.initial[j].Object.Key })
		from = last
	} else {
		if from == 0 {
			from = last
		}
		if from < c.coverFrom() {
			return false
		}
		c.since(from, func(ch change) {
			if ev, ok := w.transition(ch); ok {
				w.initial = append(w.initial, ev)
			}
		})
	}
	// A client ahead of the cache has seen the changes up to its revision.
	w.startRev = max(last, from)
	w.sentRev = w.startRev
	return true
}

// transition is what a change means to this watcher's filter: an object
// entering it is Added, leaving it Deleted, staying in it Modified.
func (w *Watcher) transition(ch change) (Event, bool) {
	now := !ch.del && w.filter.Matches(ch.obj)
	before := ch.prev != nil && w.filter.Matches(ch.prev)
	switch {
	case now && before:
		return Event{Type: Modified, Object: ch.obj, Rev: ch.rev}, true
	case now:
		return Event{Type: Added, Object: ch.obj, Rev: ch.rev}, true
	case before && ch.del:
		return Event{Type: Deleted, Object: ch.prev, Rev: ch.rev}, true
	case before:
		return Event{Type: Deleted, Object: ch.obj, Rev: ch.rev}, true
	}
	return Event{}, false
}

// register adds w to the dispatch sets. Callers hold dmu.
func (c *Cache) register(w *Watcher) {
	if n := w.filter.NodeName; n != "" {
		m := c.byNodeW[n]
		if m == nil {
			m = map[*Watcher]struct{}{}
			c.byNodeW[n] = m
		}
		m[w] = struct{}{}
		return
	}
	c.watchers[w] = struct{}{}
}

// unregister removes w and ends it with err (nil when the client stopped
// it). Callers hold dmu.
func (c *Cache) unregister(w *Watcher, err error) {
	if w.closed {
		return
	}
	w.closed = true
	w.backlog = nil
	if n := w.filter.NodeName; n != "" {
		if m := c.byNodeW[n]; m != nil {
			delete(m, w)
			if len(m) == 0 {
				delete(c.byNodeW, n)
			}
		}
	} else {
		delete(c.watchers, w)
	}
	w.finish(err)
	c.metrics.watchers.Dec()
	if err != nil {
		c.metrics.terminated.Inc()
	}
}

// finish records why the watch ended and wakes everyone waiting on it.
func (w *Watcher) finish(err error) {
	w.doneOnce.Do(func() {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
		close(w.done)
	})
}

// dispatch hands one change to every interested watcher. Callers hold dmu.
func (c *Cache) dispatch(ch change) {
	send := func(w *Watcher) {
		if ch.rev <= w.startRev {
			return
		}
		if ev, ok := w.transition(ch); ok {
			c.enqueue(w, ev)
		}
	}
	for w := range c.watchers {
		send(w)
	}
	if ch.obj.NodeName != "" {
		for w := range c.byNodeW[ch.obj.NodeName] {
			send(w)
		}
	}
	if ch.prev != nil && ch.prev.NodeName != "" && ch.prev.NodeName != ch.obj.NodeName {
		for w := range c.byNodeW[ch.prev.NodeName] {
			send(w)
		}
	}
}

// enqueue queues ev for w without ever waiting: into its buffer when there is
// room and nothing queued before it, else behind its backlog, which the
// drainer works off. Callers hold dmu.
func (c *Cache) enqueue(w *Watcher, ev Event) {
	if len(w.backlog) == 0 {
		select {
		case w.in <- ev:
			w.sentRev = ev.Rev
			c.metrics.events.Inc()
			return
		default:
		}
		if w.live {
			c.block(w)
		}
	} else if len(w.backlog) >= backlogLimit {
		c.unregister(w, errTooSlow())
		return
	}
	w.backlog = append(w.backlog, ev)
	w.sentRev = ev.Rev
}

func errTooSlow() error {
	return errors.New("watcher fell behind and was closed; re-watch from the last resourceVersion")
}

// block hands w to the drainer. Callers hold dmu.
func (c *Cache) block(w *Watcher) {
	c.blocked = append(c.blocked, w)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// drain works off blocked watchers' backlogs, one round per batch of them,
// so that the dispatcher itself never waits for a watcher.
func (c *Cache) drain(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		for {
			c.dmu.Lock()
			ws := c.blocked
			c.blocked = nil
			c.dmu.Unlock()
			if len(ws) == 0 {
				break
			}
			c.unblock(ws)
		}
	}
}

// unblock gives the watchers of one round a single shared time budget, as
// upstream's dispatchEvent does: each may take one event while the timer
// runs; once it has fired, every watcher still full is closed at once, so a
// round costs at most the budget however many watchers are stuck. Its
// client resumes from the last resourceVersion it received.
func (c *Cache) unblock(ws []*Watcher) {
	budget := c.budget.take()
	start := time.Now()
	timer := time.NewTimer(budget)
	defer timer.Stop()
	fired := false
	var again []*Watcher
	for _, w := range ws {
		c.dmu.Lock()
		if w.closed || len(w.backlog) == 0 {
			c.dmu.Unlock()
			continue
		}
		ev := w.backlog[0]
		c.dmu.Unlock()
		// Only this goroutine sends to a watcher with a backlog, so ev is
		// still its next event when the send succeeds.
		sent, stopped := false, false
		select {
		case w.in <- ev:
			sent = true
		default:
			if !fired {
				select {
				case w.in <- ev:
					sent = true
				case <-w.done:
					stopped = true
				case <-timer.C:
					fired = true
				}
			}
		}
		c.dmu.Lock()
		switch {
		case w.closed:
		case stopped:
			c.unregister(w, nil)
		case !sent:
			c.unregister(w, errTooSlow())
		default:
			c.metrics.events.Inc()
			w.backlog[0] = Event{}
			w.backlog = w.backlog[1:]
			c.flush(w)
			if len(w.backlog) > 0 {
				// Full again: the next round, on what budget is left.
				again = append(again, w)
			} else {
				w.backlog = nil
			}
		}
		c.dmu.Unlock()
	}
	if !fired {
		c.budget.giveBack(budget - time.Since(start))
	}
	if len(again) > 0 {
		c.dmu.Lock()
		c.blocked = append(c.blocked, again...)
		c.dmu.Unlock()
	}
}

// flush moves w's backlog into its buffer as far as it goes without waiting.
// Callers hold dmu.
func (c *Cache) flush(w *Watcher) {
	for len(w.backlog) > 0 {
		select {
		case w.in <- w.backlog[0]:
			c.metrics.events.Inc()
			w.backlog[0] = Event{}
			w.backlog = w.backlog[1:]
		default:
			return
		}
	}
}

// timeBudget is upstream's timeBudget: time to wait for blocked watchers,
// accumulating while nothing blocks, up to maxBudget.
type timeBudget struct {
	budget time.Duration
	last   time.Time
}

func newTimeBudget() timeBudget {
	return timeBudget{budget: maxBudget, last: time.Now()}
}

// take returns all of the budget there is.
func (t *timeBudget) take() time.Duration {
	now := time.Now()
	acc := time.Duration(now.Sub(t.last).Seconds() * float64(budgetRefill))
	t.budget = min(t.budget+max(acc, 0), maxBudget)
	t.last = now
	b := t.budget
	t.budget = 0
	return b
}

// giveBack returns what a round did not use.
func (t *timeBudget) giveBack(unused time.Duration) {
	if unused > 0 {
		t.budget = min(t.budget+unused, maxBudget)
	}
}

// forward feeds the client: initial events first, then live ones.
func (w *Watcher) forward(ctx context.Context) {
	defer close(w.out)
	defer w.Stop()
	for _, ev := range w.initial {
		if !w.send(ctx, ev) {
			return
		}
	}
	w.initial = nil
	w.c.goLive(w)
	for {
		select {
		case ev := <-w.in:
			if !w.send(ctx, ev) {
				return
			}
		case <-ctx.Done():
			return
		case <-w.done:
			return
		}
	}
}

func (w *Watcher) send(ctx context.Context, ev Event) bool {
	select {
	case w.out <- ev:
		return true
	case <-ctx.Done():
	case <-w.done:
	}
	return false
}

// goLive lets the drainer serve w now that its initial events are out:
// a large initial list does not count against the budget, only the backlog
// limit.
func (c *Cache) goLive(w *Watcher) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	w.live = true
	if !w.closed && len(w.backlog) > 0 {
		c.block(w)
	}
}

// Events delivers the watch's events; it closes when the watch ends.
func (w *Watcher) Events() <-chan Event { return w.out }

// Err says why Events closed (nil when the client stopped it).
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Stop ends the watch.
func (w *Watcher) Stop() {
	w.finish(nil)
	w.c.dmu.Lock()
	w.c.unregister(w, nil)
	w.c.dmu.Unlock()
}

func (c *Cache) terminateAll(err error) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.terminateAllLocked(err)
}

// terminateAllLocked ends every watcher with err. Callers hold dmu.
func (c *Cache) terminateAllLocked(err error) {
	for w := range c.watchers {
		c.unregister(w, err)
	}
	for _, m := range c.byNodeW {
		for w := range m {
			c.unregister(w, err)
		}
	}
}

// bookmarks tells idle watchers that asked for them the revision every
// change has been dispatched up to, so a re-watch after a disconnect does
// not start from an expired one. It also lets go of an unused backfill.
func (c *Cache) bookmarks(ctx context.Context) {
	t := time.NewTicker(c.cfg.BookmarkInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.dmu.Lock()
		rev := c.dispatchedRev
		each := func(w *Watcher) {
			if !w.bookmark || w.sentRev >= rev || len(w.backlog) > 0 {
				return
			}
			select {
			case w.in <- Event{Type: Bookmark, Rev: rev}:
				w.sentRev = rev
			default:
			}
		}
		for w := range c.watchers {
			each(w)
		}
		for _, m := range c.byNodeW {
			for w := range m {
				each(w)
			}
		}
		c.dmu.Unlock()
		c.mu.Lock()
		c.expireBackfill()
		c.mu.Unlock()
	}
}

type metrics struct {
	events, terminated, replays, decodeErrors prometheus.Counter
	watchers                                  prometheus.Gauge
}

// registerVec returns the collector already registered under the same name,
// so every resource's cache shares one vector.
func registerVec[T prometheus.Collector](r prometheus.Registerer, c T) T {
	if r == nil {
		return c
	}
	if err := r.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector.(T)
		}
	}
	return c
}

func metricsFor(r prometheus.Registerer, resource string) *metrics {
	events := registerVec(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apiserver_watch_events_total", Help: "Number of events sent in watch clients.",
	}, []string{"resource"}))
	watchers := registerVec(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "apiserver_registered_watchers", Help: "Number of currently registered watchers for a given resource.",
	}, []string{"resource"}))
	terminated := registerVec(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apiserver_terminated_watchers_total", Help: "Number of watchers closed because they were not keeping up or the cache relisted.",
	}, []string{"resource"}))
	replays := registerVec(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apiserver_watch_cache_replays_total", Help: "Number of etcd history replays made to resume watches older than the watch cache's window.",
	}, []string{"resource"}))
	decodeErrors := registerVec(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apiserver_watch_cache_decode_errors_total", Help: "Number of values from etcd the watch cache could not decode.",
	}, []string{"resource"}))
	return &metrics{
		events:       events.WithLabelValues(resource),
		watchers:     watchers.WithLabelValues(resource),
		terminated:   terminated.WithLabelValues(resource),
		replays:      replays.WithLabelValues(resource),
		decodeErrors: decodeErrors.WithLabelValues(resource),
	}
}
