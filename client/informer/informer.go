// Package informer keeps a local, indexed copy of one kind's objects, fed by
// list and watch, and tells handlers about every change: client-go's shared
// informer. It resumes its watch from the last resourceVersion it saw
// (bookmarks keep that fresh), and relists only when the apiserver says
// Expired — diffing the new list against its store, so handlers see each
// change once and never a change that did not happen, across apiserver
// restarts too.
package informer

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"skiff.dev/client"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// ListerWatcher is where the objects come from; *client.Dynamic is one.
type ListerWatcher interface {
	List(ctx context.Context, o client.ListOptions) (*client.ObjectList, error)
	Watch(ctx context.Context, o client.ListOptions) (*client.Watcher, error)
}

// Handler receives changes; any of its functions may be nil. OnDelete gets
// the object's last known state.
type Handler struct {
	OnAdd    func(obj scheme.Object)
	OnUpdate func(old, new scheme.Object)
	OnDelete func(obj scheme.Object)
}

// IndexFunc returns the index values of an object.
type IndexFunc func(obj scheme.Object) []string

// Options configure an informer.
type Options struct {
	// Resync calls OnUpdate(obj, obj) for every object this often (0: never).
	Resync        time.Duration
	Indexers      map[string]IndexFunc
	LabelSelector string
	FieldSelector string
	Logger        *slog.Logger
}

// Informer is a cache of one kind (in one namespace, or all).
type Informer struct {
	lw   ListerWatcher
	opts Options
	log  *slog.Logger

	mu      sync.RWMutex
	items   map[string]scheme.Object
	indices map[string]map[string]map[string]struct{} // index → value → keys
	rv      string

	// pending holds handler calls in the order the store changed; one
	// goroutine delivers them outside the store lock, so handlers may read
	// the informer, and a slow handler never stalls readers.
	qmu     sync.Mutex
	pending []notification
	wake    chan struct{}
	// handlers belong to the dispatching goroutine alone.
	handlers []*Handler

	synced     atomic.Bool
	syncedCh   chan struct{}
	syncedOnce sync.Once
}

// notification is one handler call, or (handler set) a handler joining with
// a snapshot of the store for its synthetic adds.
type notification struct {
	op       op
	old, obj scheme.Object
	handler  *Handler
	snapshot []scheme.Object
}

type op int

const (
	opAdd op = iota
	opUpdate
	opDelete
	opJoin
)

// New builds an informer; Run starts it.
func New(lw ListerWatcher, opts Options) *Informer {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	i := &Informer{lw: lw, opts: opts, log: opts.Logger, items: map[string]scheme.Object{},
		indices: map[string]map[string]map[string]struct{}{}, syncedCh: make(chan struct{}),
		wake: make(chan struct{}, 1)}
	for name := range opts.Indexers {
		i.indices[name] = map[string]map[string]struct{}{}
	}
	return i
}

// Key is the store key of an object: "namespace/name", or "name".
func Key(obj scheme.Object) string {
	m := obj.GetMetadata()
	if m.GetNamespace() == "" {
		return m.GetName()
	}
	return m.GetNamespace() + "/" + m.GetName()
}

// AddHandler registers h. One added while the store holds objects first gets
// an OnAdd for each of them, as client-go does, then every later change.
// Calls start once Run runs.
func (i *Informer) AddHandler(h Handler) {
	i.mu.Lock()
	defer i.mu.Unlock()
	snapshot := make([]scheme.Object, 0, len(i.items))
	for _, o := range i.items {
		snapshot = append(snapshot, o)
	}
	i.enqueue(notification{op: opJoin, handler: &h, snapshot: snapshot})
}

// HasSynced reports whether the first list has been stored.
func (i *Informer) HasSynced() bool { return i.synced.Load() }

// WaitForSync blocks until synced or ctx ends.
func (i *Informer) WaitForSync(ctx context.Context) bool {
	select {
	case <-i.syncedCh:
		return true
	case <-ctx.Done():
		return false
	}
}

// Get returns the cached object under key.
func (i *Informer) Get(key string) (scheme.Object, bool) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	o, ok := i.items[key]
	return o, ok
}

// List returns every cached object. Callers must not modify them.
func (i *Informer) List() []scheme.Object {
	i.mu.RLock()
	defer i.mu.RUnlock()
	out := make([]scheme.Object, 0, len(i.items))
	for _, o := range i.items {
		out = append(out, o)
	}
	return out
}

// ByIndex returns the objects whose index function gave value.
func (i *Informer) ByIndex(index, value string) []scheme.Object {
	i.mu.RLock()
	defer i.mu.RUnlock()
	keys := i.indices[index][value]
	out := make([]scheme.Object, 0, len(keys))
	for k := range keys {
		out = append(out, i.items[k])
	}
	return out
}

// LastSyncResourceVersion is the resourceVersion the cache is current to.
func (i *Informer) LastSyncResourceVersion() string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.rv
}

// Run lists, then watches, until ctx ends; handlers are called from one
// goroutine of its own, and none after Run returns.
func (i *Informer) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { i.dispatch(ctx) })
	if i.opts.Resync > 0 {
		wg.Go(func() { i.resync(ctx) })
	}
	backoff := newBackoff()
	needList := true
	for ctx.Err() == nil {
		if needList {
			if err := i.list(ctx); err != nil {
				if ctx.Err() != nil {
					break
				}
				i.log.Warn("list failed; retrying", "err", err)
				backoff.wait(ctx)
				continue
			}
			needList = false
			backoff.reset()
		}
		progressed, err := i.watch(ctx)
		if progressed {
			// A watch that delivered anything was healthy: its end is
			// routine (server restart, timeout), not a failure to back off on.
			backoff.reset()
		}
		switch {
		case ctx.Err() != nil:
		case apierrors.IsExpired(err):
			i.log.Info("watch expired; relisting", "resourceVersion", i.LastSyncResourceVersion())
			needList = true
		case apierrors.IsUnavailable(err) || errors.Is(err, errWatchClosed):
			i.log.Debug("watch ended; resuming", "err", err, "resourceVersion", i.LastSyncResourceVersion())
			backoff.wait(ctx)
		default:
			i.log.Warn("watch failed; retrying", "err", err, "resourceVersion", i.LastSyncResourceVersion())
			backoff.wait(ctx)
		}
	}
	return nil
}

// list replaces the store with a fresh list, telling handlers only about
// what differs from what they already saw.
func (i *Informer) list(ctx context.Context) error {
	l, err := i.lw.List(ctx, client.ListOptions{LabelSelector: i.opts.LabelSelector, FieldSelector: i.opts.FieldSelector})
	if err != nil {
		return err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	seen := make(map[string]bool, len(l.Items))
	for _, o := range l.Items {
		k := Key(o)
		seen[k] = true
		old, ok := i.items[k]
		switch {
		case !ok:
			i.store(k, o)
			i.enqueue(notification{op: opAdd, obj: o})
		case old.GetMetadata().GetResourceVersion() != o.GetMetadata().GetResourceVersion():
			i.store(k, o)
			i.enqueue(notification{op: opUpdate, old: old, obj: o})
		}
	}
	for k, old := range i.items {
		if !seen[k] {
			i.remove(k)
			i.enqueue(notification{op: opDelete, obj: old})
		}
	}
	i.rv = l.ResourceVersion
	i.synced.Store(true)
	i.syncedOnce.Do(func() { close(i.syncedCh) })
	return nil
}

var errWatchClosed = errors.New("watch closed by the server")

// watch applies one watch stream; it reports whether any event came and why
// the stream ended.
func (i *Informer) watch(ctx context.Context) (bool, error) {
	w, err := i.lw.Watch(ctx, client.ListOptions{LabelSelector: i.opts.LabelSelector, FieldSelector: i.opts.FieldSelector,
		ResourceVersion: i.LastSyncResourceVersion(), AllowBookmarks: true})
	if err != nil {
		return false, err
	}
	defer w.Stop()
	progressed := false
	for ev := range w.Events() {
		progressed = true
		i.apply(ev)
	}
	if err := w.Err(); err != nil {
		return progressed, err
	}
	return progressed, errWatchClosed
}

// apply stores one event. An add or update no newer than what the store
// holds is a replay (a server resuming a little early) and is dropped, so
// handlers never see a change twice; a replayed delete finds nothing to do.
func (i *Informer) apply(ev client.Event) {
	i.mu.Lock()
	defer i.mu.Unlock()
	o := ev.Object
	rv := o.GetMetadata().GetResourceVersion()
	if newer(rv, i.rv) {
		i.rv = rv
	}
	if ev.Type == client.Bookmark {
		return
	}
	k := Key(o)
	old, had := i.items[k]
	switch ev.Type {
	case client.Added, client.Modified:
		if had && !newer(rv, old.GetMetadata().GetResourceVersion()) {
			return
		}
		i.store(k, o)
		if had {
			i.enqueue(notification{op: opUpdate, old: old, obj: o})
		} else {
			i.enqueue(notification{op: opAdd, obj: o})
		}
	case client.Deleted:
		if had {
			i.remove(k)
			i.enqueue(notification{op: opDelete, obj: o})
		}
	}
}

// newer compares resourceVersions as the etcd revisions they are; one that
// does not parse is taken as newer, so an odd server cannot freeze the cache.
func newer(rv, than string) bool {
	a, errA := strconv.ParseInt(rv, 10, 64)
	b, errB := strconv.ParseInt(than, 10, 64)
	if errA != nil || errB != nil {
		return rv != than
	}
	return a > b
}

// enqueue queues a handler call; callers hold i.mu, so the queue's order is
// the store's.
func (i *Informer) enqueue(n notification) {
	i.qmu.Lock()
	i.pending = append(i.pending, n)
	i.qmu.Unlock()
	select {
	case i.wake <- struct{}{}:
	default:
	}
}

// dispatch delivers queued calls until ctx ends. It owns the handler list,
// so a joining handler starts exactly after its snapshot.
func (i *Informer) dispatch(ctx context.Context) {
	for {
		i.qmu.Lock()
		batch := i.pending
		i.pending = nil
		i.qmu.Unlock()
		for _, n := range batch {
			if ctx.Err() != nil {
				return
			}
			if n.op == opJoin {
				i.handlers = append(i.handlers, n.handler)
				if n.handler.OnAdd != nil {
					for _, o := range n.snapshot {
						n.handler.OnAdd(o)
					}
				}
				continue
			}
			for _, h := range i.handlers {
				switch {
				case n.op == opAdd && h.OnAdd != nil:
					h.OnAdd(n.obj)
				case n.op == opUpdate && h.OnUpdate != nil:
					h.OnUpdate(n.old, n.obj)
				case n.op == opDelete && h.OnDelete != nil:
					h.OnDelete(n.obj)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-i.wake:
		}
	}
}

func (i *Informer) store(k string, o scheme.Object) {
	if old, ok := i.items[k]; ok {
		i.unindex(k, old)
	}
	i.items[k] = o
	for name, fn := range i.opts.Indexers {
		for _, v := range fn(o) {
			set := i.indices[name][v]
			if set == nil {
				set = map[string]struct{}{}
				i.indices[name][v] = set
			}
			set[k] = struct{}{}
		}
	}
}

func (i *Informer) remove(k string) {
	if old, ok := i.items[k]; ok {
		i.unindex(k, old)
		delete(i.items, k)
	}
}

func (i *Informer) unindex(k string, o scheme.Object) {
	for name, fn := range i.opts.Indexers {
		for _, v := range fn(o) {
			if set := i.indices[name][v]; set != nil {
				delete(set, k)
				if len(set) == 0 {
					delete(i.indices[name], v)
				}
			}
		}
	}
}

func (i *Informer) resync(ctx context.Context) {
	t := time.NewTicker(i.opts.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		i.mu.Lock()
		for _, o := range i.items {
			i.enqueue(notification{op: opUpdate, old: o, obj: o})
		}
		i.mu.Unlock()
	}
}

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	b.d = min(2*b.d, 10*time.Second)
}
