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

// bufferSize is how many events a watcher may fall behind before it is
// given dispatchTimeout to catch up and then terminated.
const (
	bufferSize      = 256
	dispatchTimeout = 2 * time.Second
)

// Watcher is one client's watch.
type Watcher struct {
	c        *Cache
	filter   Filter
	bookmark bool
	in       chan Event // dispatcher → forwarder
	out      chan Event // forwarder → client
	initial  []Event
	startRev int64 // events at or below it were sent as initial state
	sentRev  int64 // guarded by c.wmu
	stopOnce sync.Once
	stopped  chan struct{}
	mu       sync.Mutex
	err      error
	closed   bool // in closed; guarded by c.wmu
}

// Watch registers a watcher.
func (c *Cache) Watch(ctx context.Context, o WatchOptions) (*Watcher, error) {
	w := &Watcher{
		c: c, filter: o.Filter, bookmark: o.Bookmarks,
		in: make(chan Event, bufferSize), out: make(chan Event), stopped: make(chan struct{}),
	}
	var replayed []change
	if !o.InitialState && o.FromRev > 0 {
		c.mu.RLock()
		oldest := c.oldest
		c.mu.RUnlock()
		if o.FromRev < oldest {
			// Older than the window, but maybe still in etcd's history.
			chs, err := c.replay(ctx, o.FromRev, oldest)
			if err != nil {
				return nil, ErrExpired
			}
			replayed = chs
			o.FromRev = oldest
		}
	}
	c.mu.RLock()
	c.wmu.Lock()
	last := c.rev
	if c.wlen > 0 {
		last = max(last, c.window[(c.wstart+c.wlen-1)%len(c.window)].rev)
	}
	if o.InitialState {
		for _, obj := range c.objs {
			if w.filter.Matches(obj) {
				w.initial = append(w.initial, Event{Type: Added, Object: obj, Rev: obj.Rev})
			}
		}
		sort.Slice(w.initial, func(i, j int) bool { return w.initial[i].Object.Key < w.initial[j].Object.Key })
	} else {
		from := o.FromRev
		if from == 0 {
			from = last
		}
		if from < c.oldest {
			c.wmu.Unlock()
			c.mu.RUnlock()
			return nil, ErrExpired
		}
		for _, ch := range replayed {
			if ev, ok := w.transition(ch); ok {
				w.initial = append(w.initial, ev)
			}
		}
		for i := 0; i < c.wlen; i++ {
			ch := c.window[(c.wstart+i)%len(c.window)]
			if ch.rev <= from {
				continue
			}
			if ev, ok := w.transition(ch); ok {
				w.initial = append(w.initial, ev)
			}
		}
	}
	w.startRev, w.sentRev = last, last
	c.register(w)
	c.wmu.Unlock()
	c.mu.RUnlock()
	c.metrics.watchers.Inc()
	go w.forward(ctx)
	return w, nil
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

// unregister removes w and closes its input. Callers hold wmu.
func (c *Cache) unregister(w *Watcher, err error) {
	if w.closed {
		return
	}
	w.closed = true
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
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	close(w.in)
	c.metrics.watchers.Dec()
	if err != nil {
		c.metrics.terminated.Inc()
	}
}

// dispatch hands one change to every interested watcher. Callers hold wmu.
func (c *Cache) dispatch(ch change) {
	send := func(w *Watcher) {
		if ch.rev <= w.sentRev {
			return
		}
		ev, ok := w.transition(ch)
		if !ok {
			return
		}
		c.deliver(w, ev)
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

// deliver sends without blocking the others for long: a watcher that stays
// full for dispatchTimeout is terminated and its client re-watches.
func (c *Cache) deliver(w *Watcher, ev Event) {
	select {
	case w.in <- ev:
	default:
		t := time.NewTimer(dispatchTimeout)
		defer t.Stop()
		select {
		case w.in <- ev:
		case <-w.stopped:
			c.unregister(w, nil)
			return
		case <-t.C:
			c.unregister(w, errors.New("watcher fell behind and was closed; re-watch from the last resourceVersion"))
			return
		}
	}
	w.sentRev = ev.Rev
	c.metrics.events.Inc()
}

// forward feeds the client: initial events first, then live ones.
func (w *Watcher) forward(ctx context.Context) {
	defer close(w.out)
	defer w.Stop()
	for _, ev := range w.initial {
		select {
		case w.out <- ev:
		case <-ctx.Done():
			return
		case <-w.stopped:
			return
		}
	}
	w.initial = nil
	for {
		select {
		case ev, ok := <-w.in:
			if !ok {
				return
			}
			select {
			case w.out <- ev:
			case <-ctx.Done():
				return
			case <-w.stopped:
				return
			}
		case <-ctx.Done():
			return
		case <-w.stopped:
			return
		}
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
	w.stopOnce.Do(func() {
		close(w.stopped)
		go func() {
			w.c.wmu.Lock()
			w.c.unregister(w, nil)
			w.c.wmu.Unlock()
		}()
	})
}

func (c *Cache) terminateAll(err error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for w := range c.watchers {
		c.unregister(w, err)
	}
	for _, m := range c.byNodeW {
		for w := range m {
			c.unregister(w, err)
		}
	}
}

// bookmarks tells idle watchers that asked for them the current revision,
// so a re-watch after a disconnect does not start from an expired one.
func (c *Cache) bookmarks(ctx context.Context) {
	t := time.NewTicker(c.cfg.BookmarkInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.RLock()
		rev := c.rev
		c.wmu.Lock()
		c.mu.RUnlock()
		each := func(w *Watcher) {
			if !w.bookmark || w.sentRev >= rev {
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
		c.wmu.Unlock()
	}
}

type metrics struct {
	events, terminated prometheus.Counter
	watchers           prometheus.Gauge
}

// register returns the collector already registered under the same name, so
// every resource's cache shares one vector.
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
	return &metrics{
		events:     events.WithLabelValues(resource),
		watchers:   watchers.WithLabelValues(resource),
		terminated: terminated.WithLabelValues(resource),
	}
}

// replay turns etcd's history in (from, to] into changes a watcher can
// filter, as if they had been in the window.
func (c *Cache) replay(ctx context.Context, from, to int64) ([]change, error) {
	evs, err := c.cfg.Source.Replay(ctx, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]change, 0, len(evs))
	for _, e := range evs {
		var prev *Object
		if e.Prev != nil {
			if prev, err = c.cfg.Decode(e.Key, e.Prev, e.PrevRev); err != nil {
				return nil, err
			}
		}
		if e.Delete {
			if prev == nil {
				continue
			}
			out = append(out, change{obj: prev, prev: prev, del: true, rev: e.Rev})
			continue
		}
		obj, err := c.cfg.Decode(e.Key, e.Value, e.Rev)
		if err != nil {
			return nil, err
		}
		out = append(out, change{obj: obj, prev: prev, rev: e.Rev})
	}
	return out, nil
}
