// Package watchcache keeps one resource's objects in memory, fed by a single
// etcd watch, and serves List and Watch from there: upstream's cacher. Every
// watcher shares the decoded objects; none costs an etcd watch.
//
// The cache keeps a window of recent events so a watch can resume from a
// resourceVersion a client saw earlier. A resourceVersion older than the
// window is replayed from etcd's history once for every watcher that needs
// it (replay.go), and Expired only once etcd compacted it away; the client
// then relists. Paged lists are served here for the first page; later pages
// are read from etcd at the first page's revision by the registry (as
// upstream does), so the cache never has to keep old snapshots.
package watchcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

// Object is one stored object as the cache holds it. Never mutated once built.
type Object struct {
	Key       string // "default/web-0", or "node-1" for cluster-scoped kinds
	Namespace string
	Rev       int64         // etcd ModRevision: the resourceVersion
	Msg       proto.Message // decoded, with metadata.resourceVersion set
	Raw       []byte        // wire encoding with the resourceVersion; read-only
	Labels    labels.Set
	Fields    fields.Set
	NodeName  string // pods' spec.nodeName, for the index
}

// RawEvent is one change as etcd reports it (Key relative to the resource).
type RawEvent struct {
	Delete bool
	Key    string
	Value  []byte
	Rev    int64
}

// WatchBatch is one etcd watch response, a progress notification
// (Progress > 0, no events) or the error that ended the watch.
type WatchBatch struct {
	Events   []RawEvent
	Progress int64
	Err      error
}

// Source is the resource in etcd.
type Source interface {
	List(ctx context.Context) ([]RawEvent, int64, error)
	Watch(ctx context.Context, rev int64) <-chan WatchBatch
	RequestProgress(ctx context.Context) error
	CurrentRevision(ctx context.Context) (int64, error)
	// Replay returns the changes in (from, to] still held in etcd's history,
	// each with the key's previous value, so a watch can resume from a
	// revision older than the cache's window (after an apiserver restart).
	Replay(ctx context.Context, from, to int64) ([]ReplayEvent, error)
	// Get reads one key's current value (found false when there is none),
	// to resynchronise a key whose watched value could not be decoded.
	Get(ctx context.Context, key string) (kv RawEvent, found bool, err error)
}

// ReplayEvent is a past change with the key's value before it.
type ReplayEvent struct {
	RawEvent
	Prev    []byte // nil when the key did not exist
	PrevRev int64
}

// Config wires a Cache.
type Config struct {
	Resource string
	Source   Source
	Decode   func(key string, value []byte, rev int64) (*Object, error)
	// Window is how many recent events are kept for resuming watches.
	Window int
	// Backfill is how many changes replayed from etcd (and the window's
	// changes that age out after them) are kept in front of the window for
	// later resumers; default Window. Exceeded only while a replay is being
	// merged, so that no resumer is left with a gap.
	Backfill int
	// BookmarkInterval is how often idle watchers that asked for bookmarks
	// learn the current revision.
	BookmarkInterval time.Duration
	Registerer       prometheus.Registerer
	Logger           *slog.Logger
}

// ErrExpired: the resourceVersion is older than the cache's window.
var ErrExpired = errors.New("too old resource version")

// EventType is a watch event's type.
type EventType int

const (
	Added EventType = iota
	Modified
	Deleted
	Bookmark
)

// Event is what a watcher receives. For Deleted, Object is the last state.
type Event struct {
	Type   EventType
	Object *Object
	Rev    int64
}

// change is an applied event with the object's previous state.
type change struct {
	obj  *Object // new state; for deletes the last state
	prev *Object // nil for creates
	del  bool
	rev  int64
}

// Cache is one resource's cache.
//
// Two locks, always taken in the order dmu, then mu. mu guards the state
// List, Get and WaitFresh read; it is only ever held for memory operations.
// dmu guards the watchers and is held while an event is handed to them,
// which never blocks either: a watcher whose buffer is full gets a backlog
// that the drainer (watch.go) works off within a shared time budget. So no
// watcher, however slow, can delay a List.
type Cache struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu      sync.RWMutex
	objs    map[string]*Object
	byNode  map[string]map[string]*Object
	rev     int64
	changed chan struct{} // closed and replaced whenever rev moves
	window  []change      // ring buffer
	wstart  int           // index of the oldest change
	wlen    int
	oldest  int64 // the window holds every change after it
	history       // backfill and replays in flight, guarded by mu

	dmu           sync.Mutex
	watchers      map[*Watcher]struct{} // not indexed by node
	byNodeW       map[string]map[*Watcher]struct{}
	dispatchedRev int64      // every change up to it has been handed to the watchers
	blocked       []*Watcher // full watchers waiting for the drainer
	wake          chan struct{}
	budget        timeBudget // the drainer's only

	ready     chan struct{}
	readyOnce sync.Once
}

// New builds a cache; Start fills it.
func New(cfg Config) *Cache {
	if cfg.Window <= 0 {
		cfg.Window = 10000
	}
	if cfg.Backfill <= 0 {
		cfg.Backfill = cfg.Window
	}
	if cfg.BookmarkInterval <= 0 {
		cfg.BookmarkInterval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Cache{
		cfg: cfg, log: cfg.Logger, metrics: metricsFor(cfg.Registerer, cfg.Resource),
		objs: map[string]*Object{}, byNode: map[string]map[string]*Object{},
		changed: make(chan struct{}), window: make([]change, cfg.Window),
		watchers: map[*Watcher]struct{}{}, byNodeW: map[string]map[*Watcher]struct{}{},
		wake: make(chan struct{}, 1), budget: newTimeBudget(),
		ready: make(chan struct{}),
	}
}

// Ready is closed after the first list.
func (c *Cache) Ready() <-chan struct{} { return c.ready }

// Rev is the revision the cache is current to.
func (c *Cache) Rev() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.rev
}

// Start lists, then follows the resource's etcd watch until ctx ends,
// relisting whenever the watch cannot be resumed.
func (c *Cache) Start(ctx context.Context) error {
	go c.bookmarks(ctx)
	go c.drain(ctx)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if err := c.relist(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			c.log.Warn("watch cache list failed", "err", err)
			sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		err := c.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		c.log.Warn("watch cache lost its etcd watch; relisting", "err", err)
	}
	c.terminateAll(errors.New("apiserver is shutting down"))
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// relist replaces the cache's state. Watchers cannot be told what happened
// in between, so they end with ErrExpired and their clients relist too.
func (c *Cache) relist(ctx context.Context) error {
	kvs, rev, err := c.cfg.Source.List(ctx)
	if err != nil {
		return err
	}
	objs := make(map[string]*Object, len(kvs))
	byNode := map[string]map[string]*Object{}
	for _, kv := range kvs {
		o, err := c.cfg.Decode(kv.Key, kv.Value, kv.Rev)
		if err != nil {
			// Left out rather than served stale; the next write repairs it.
			c.metrics.decodeErrors.Inc()
			c.log.Error("undecodable object left out of the watch cache", "key", kv.Key, "rev", kv.Rev, "err", err)
			continue
		}
		objs[o.Key] = o
		indexNode(byNode, o)
	}
	c.dmu.Lock()
	c.mu.Lock()
	first := c.rev == 0
	c.objs, c.byNode = objs, byNode
	clear(c.window)
	c.wstart, c.wlen, c.oldest = 0, 0, rev
	// The changes between the old state and this list are unknown, so the
	// history before the new window cannot join it.
	c.resetHistory()
	c.setRev(rev)
	c.mu.Unlock()
	c.dispatchedRev = rev
	if !first {
		c.terminateAllLocked(ErrExpired)
	}
	c.dmu.Unlock()
	c.readyOnce.Do(func() { close(c.ready) })
	return nil
}

func indexNode(idx map[string]map[string]*Object, o *Object) {
	if o.NodeName == "" {
		return
	}
	m := idx[o.NodeName]
	if m == nil {
		m = map[string]*Object{}
		idx[o.NodeName] = m
	}
	m[o.Key] = o
}

func unindexNode(idx map[string]map[string]*Object, o *Object) {
	if o == nil || o.NodeName == "" {
		return
	}
	if m := idx[o.NodeName]; m != nil {
		delete(m, o.Key)
		if len(m) == 0 {
			delete(idx, o.NodeName)
		}
	}
}

// setRev moves the revision and wakes waiters. Callers hold mu.
func (c *Cache) setRev(rev int64) {
	if rev <= c.rev && c.rev != 0 {
		return
	}
	c.rev = rev
	close(c.changed)
	c.changed = make(chan struct{})
}

// follow applies the etcd watch until it fails.
func (c *Cache) follow(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for b := range c.cfg.Source.Watch(wctx, c.Rev()) {
		if b.Err != nil {
			return b.Err
		}
		if len(b.Events) == 0 {
			if b.Progress > 0 {
				c.mu.Lock()
				c.setRev(b.Progress)
				c.mu.Unlock()
				c.dmu.Lock()
				c.dispatchedRev = max(c.dispatchedRev, b.Progress)
				c.dmu.Unlock()
			}
			continue
		}
		if err := c.apply(wctx, b.Events); err != nil {
			return err
		}
	}
	return errors.New("watch closed")
}

// fate is what becomes of a watched value the cache could not decode.
type fate int

const (
	keep      fate = iota // decoded (maybe on the second try): applied as usual
	skip                  // etcd has moved on; a later event of the watch repairs the key
	removeKey             // undecodable in etcd too: dropped, watchers see it DELETED
)

func (f fate) String() string {
	return [...]string{"resynchronised from etcd", "left to a later event", "removed from the cache"}[f]
}

// apply applies one etcd watch response. Values are decoded before mu is
// taken, so a slow decoder or a resynchronisation from etcd never holds up a
// List; the revision moves before the watchers hear of the changes, so a
// List never waits for them either.
func (c *Cache) apply(ctx context.Context, raw []RawEvent) error {
	decoded := make([]*Object, len(raw))
	fates := make([]fate, len(raw))
	for i, e := range raw {
		if e.Delete {
			continue
		}
		o, err := c.cfg.Decode(e.Key, e.Value, e.Rev)
		if err != nil {
			c.metrics.decodeErrors.Inc()
			var rerr error
			if o, fates[i], rerr = c.resync(ctx, e); rerr != nil {
				return fmt.Errorf("resynchronise undecodable %s at %d: %w", e.Key, e.Rev, rerr)
			}
			c.log.Error("undecodable object in the etcd watch", "key", e.Key, "rev", e.Rev, "err", err, "outcome", fates[i].String())
		}
		decoded[i] = o
	}
	changes := make([]change, 0, len(raw))
	c.mu.Lock()
	for i, e := range raw {
		prev := c.objs[e.Key]
		switch {
		case e.Delete || fates[i] == removeKey:
			if prev == nil {
				continue
			}
			delete(c.objs, e.Key)
			unindexNode(c.byNode, prev)
			changes = append(changes, change{obj: prev, prev: prev, del: true, rev: e.Rev})
		case fates[i] == skip:
		default:
			o := decoded[i]
			c.objs[e.Key] = o
			unindexNode(c.byNode, prev)
			indexNode(c.byNode, o)
			changes = append(changes, change{obj: o, prev: prev, rev: e.Rev})
		}
	}
	for _, ch := range changes {
		c.push(ch)
	}
	c.setRev(raw[len(raw)-1].Rev)
	c.mu.Unlock()
	// A watch registered in between (under dmu, then mu) found these changes
	// in the window already; dispatch skips them for it by its startRev.
	c.dmu.Lock()
	for _, ch := range changes {
		c.dispatch(ch)
	}
	c.dispatchedRev = max(c.dispatchedRev, raw[len(raw)-1].Rev)
	c.dmu.Unlock()
	return nil
}

// resync reads a key whose watched value e could not be decoded back from
// etcd. A value that decodes now (the failure was transient) is applied at
// e's revision; one that is undecodable in etcd too is removed, so no stale
// object stays served; one that etcd has replaced or deleted since is left
// to the watch, which brings that later change in order.
func (c *Cache) resync(ctx context.Context, e RawEvent) (*Object, fate, error) {
	kv, found, err := c.cfg.Source.Get(ctx, e.Key)
	if err != nil {
		return nil, 0, err
	}
	if !found {
		return nil, skip, nil
	}
	o, err := c.cfg.Decode(e.Key, kv.Value, kv.Rev)
	switch {
	case err != nil:
		return nil, removeKey, nil
	case kv.Rev == e.Rev:
		return o, keep, nil
	case kv.Rev > e.Rev:
		return nil, skip, nil
	}
	// Older than the watch: etcd answered from a stale member. Serve nothing
	// rather than something wrong; the key's next write brings it back.
	return nil, removeKey, nil
}

// push appends to the window, dropping the oldest change when full; the
// dropped change joins the backfill when one is kept. Callers hold mu.
func (c *Cache) push(ch change) {
	n := len(c.window)
	if c.wlen == n {
		dropped := c.window[c.wstart]
		c.window[c.wstart] = change{}
		c.oldest = dropped.rev
		c.wstart = (c.wstart + 1) % n
		c.wlen--
		c.ageOut(dropped)
	}
	c.window[(c.wstart+c.wlen)%n] = ch
	c.wlen++
}

// WaitRev blocks until the cache is current to at least rev.
func (c *Cache) WaitRev(ctx context.Context, rev int64) error {
	for {
		c.mu.RLock()
		cur, ch := c.rev, c.changed
		c.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitFresh blocks until the cache has seen etcd's current revision, asking
// etcd for a progress notification when the resource itself is quiet. This
// makes a List with resourceVersion "" as consistent as a read from etcd.
func (c *Cache) WaitFresh(ctx context.Context) (int64, error) {
	rev, err := c.cfg.Source.CurrentRevision(ctx)
	if err != nil {
		return 0, err
	}
	if c.Rev() >= rev {
		return c.Rev(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.WaitRev(ctx, rev) }()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return 0, fmt.Errorf("watch cache of %s did not reach revision %d: %w", c.cfg.Resource, rev, err)
			}
			return c.Rev(), nil
		case <-t.C:
			_ = c.cfg.Source.RequestProgress(ctx)
		}
	}
}

// Get returns the cached object under key.
func (c *Cache) Get(key string) (*Object, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	o, ok := c.objs[key]
	return o, ok
}

// Filter selects objects.
type Filter struct {
	Namespace string
	Label     labels.Selector
	Field     fields.Selector
	NodeName  string // served from the node index
}

// Matches reports whether o passes the filter.
func (f *Filter) Matches(o *Object) bool {
	if o == nil {
		return false
	}
	if f.Namespace != "" && o.Namespace != f.Namespace {
		return false
	}
	if f.NodeName != "" && o.NodeName != f.NodeName {
		return false
	}
	if f.Label != nil && !f.Label.Empty() && !f.Label.Matches(o.Labels) {
		return false
	}
	if f.Field != nil && !f.Field.Empty() && !f.Field.Matches(o.Fields) {
		return false
	}
	return true
}

// ListOptions select a list. Rev asks for a cache at least that fresh.
type ListOptions struct {
	Filter Filter
	Limit  int64
	Rev    int64
}

// ListResult is a sorted list at one revision. With a limit, More reports
// that items follow the last one, and Remaining how many.
type ListResult struct {
	Items     []*Object
	Rev       int64
	More      bool
	Remaining int64
}

// List returns the matching objects sorted by key.
func (c *Cache) List(ctx context.Context, o ListOptions) (ListResult, error) {
	if o.Rev > 0 {
		if err := c.WaitRev(ctx, o.Rev); err != nil {
			return ListResult{}, err
		}
	}
	c.mu.RLock()
	var items []*Object
	src := c.objs
	if o.Filter.NodeName != "" {
		src = c.byNode[o.Filter.NodeName]
	}
	items = make([]*Object, 0, len(src))
	for _, obj := range src {
		if o.Filter.Matches(obj) {
			items = append(items, obj)
		}
	}
	rev := c.rev
	c.mu.RUnlock()
	sort.Slice(items, func(i, j int) bool { return items[i].Key < items[j].Key })
	res := ListResult{Items: items, Rev: rev}
	if o.Limit > 0 && int64(len(items)) > o.Limit {
		res.Items, res.More, res.Remaining = items[:o.Limit], true, int64(len(items))-o.Limit
	}
	return res, nil
}

// KeyPrefix is the cache key prefix of a namespace ("" for all).
func KeyPrefix(ns string) string {
	if ns == "" {
		return ""
	}
	return ns + "/"
}
