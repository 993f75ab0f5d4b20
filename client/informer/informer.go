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
	"fmt"
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

// NamespaceIndex is the index every informer keeps: objects by namespace
// ("" for cluster-scoped kinds), as client-go's cache.NamespaceIndex.
const NamespaceIndex = "namespace"

// namespaceIndexFunc is client-go's MetaNamespaceIndexFunc.
func namespaceIndexFunc(obj scheme.Object) []string {
	return []string{obj.GetMetadata().GetNamespace()}
}

// Options configure an informer.
type Options struct {
	// Resync calls OnUpdate(obj, obj) for every object this often (0: never).
	Resync time.Duration
	// Indexers are added to NamespaceIndex, whose name they must not reuse.
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

	// mu guards the store, the indexes and the listener set. Every change
	// to the store is handed to every listener while mu is held, so each
	// listener's buffer is in the store's order, and one joining sees its
	// snapshot and then exactly the changes after it.
	mu        sync.RWMutex
	items     map[string]scheme.Object
	indexers  map[string]IndexFunc
	indices   map[string]map[string]map[string]struct{} // index → value → keys
	rv        string
	listeners []*listener
	// runCtx is set while Run runs, so a listener added then starts at
	// once; stopped is set when Run ends, after which none starts.
	runCtx  context.Context
	stopped bool
	lwg     sync.WaitGroup

	synced     atomic.Bool
	syncedCh   chan struct{}
	syncedOnce sync.Once
}

// notification is one handler call, or (opSynced) the mark after the last
// object of the initial list or of a joining handler's snapshot.
type notification struct {
	op       op
	old, obj scheme.Object
}

type op int

const (
	opAdd op = iota
	opUpdate
	opDelete
	opSynced
)

// New builds an informer; Run starts it.
func New(lw ListerWatcher, opts Options) *Informer {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	i := &Informer{lw: lw, opts: opts, log: opts.Logger, items: map[string]scheme.Object{},
		indexers: map[string]IndexFunc{NamespaceIndex: namespaceIndexFunc},
		indices:  map[string]map[string]map[string]struct{}{NamespaceIndex: {}},
		syncedCh: make(chan struct{})}
	if err := i.AddIndexers(opts.Indexers); err != nil {
		panic("informer.New: " + err.Error())
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

// Registration is one handler's place in an informer.
type Registration interface {
	// HasSynced reports whether the informer has synced and this handler
	// has been handed every object of the initial list (or, for a handler
	// added later, of the store as it was when it joined): client-go's
	// ResourceEventHandlerRegistration.HasSynced. A controller that waits
	// for it knows its queue holds every object, not just the cache.
	HasSynced() bool
}

// AddHandler registers h. One added while the store holds objects first gets
// an OnAdd for each of them, as client-go does, then every later change.
// Each handler is called from a goroutine and a buffer of its own, so a slow
// one delays only itself; calls start once Run runs and end when it returns.
func (i *Informer) AddHandler(h Handler) Registration {
	l := &listener{inf: i, h: h, wake: make(chan struct{}, 1)}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.synced.Load() {
		for _, o := range i.items {
			l.push(notification{op: opAdd, obj: o})
		}
		l.push(notification{op: opSynced})
	}
	// Before the first list the store is empty: the list's own opSynced
	// marks this listener's end of the initial objects.
	i.listeners = append(i.listeners, l)
	if i.runCtx != nil && !i.stopped {
		i.startListener(i.runCtx, l)
	}
	return l
}

// startListener runs l until ctx ends; callers hold i.mu.
func (i *Informer) startListener(ctx context.Context, l *listener) {
	i.lwg.Go(func() { l.run(ctx) })
}

// AddIndexers adds indexes, before or after Run; objects already stored
// are indexed at once. A name already in use is an error, and nothing is
// added.
func (i *Informer) AddIndexers(indexers map[string]IndexFunc) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	for name := range indexers {
		if _, ok := i.indexers[name]; ok {
			return fmt.Errorf("indexer %q already exists", name)
		}
	}
	for name, fn := range indexers {
		i.indexers[name] = fn
		idx := map[string]map[string]struct{}{}
		i.indices[name] = idx
		for k, o := range i.items {
			addToIndex(idx, fn, k, o)
		}
	}
	return nil
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

// ByIndex returns the objects whose index function gave value; none for an
// index that does not exist.
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

// Run lists, then watches, until ctx ends; it returns once no handler is
// running, and no handler is called after. An informer runs once.
func (i *Informer) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	i.mu.Lock()
	if i.runCtx != nil {
		i.mu.Unlock()
		cancel()
		return errors.New("informer: Run called twice")
	}
	i.runCtx = ctx
	for _, l := range i.listeners {
		i.startListener(ctx, l)
	}
	i.mu.Unlock()
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		i.mu.Lock()
		i.stopped = true
		i.mu.Unlock()
		i.lwg.Wait()
	}()
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
	if !i.synced.Load() {
		i.enqueue(notification{op: opSynced})
		i.synced.Store(true)
		i.syncedOnce.Do(func() { close(i.syncedCh) })
	}
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

// enqueue hands a change to every listener; callers hold i.mu, so each
// listener's buffer is in the store's order.
func (i *Informer) enqueue(n notification) {
	for _, l := range i.listeners {
		l.push(n)
	}
}

func (i *Informer) store(k string, o scheme.Object) {
	if old, ok := i.items[k]; ok {
		i.unindex(k, old)
	}
	i.items[k] = o
	for name, fn := range i.indexers {
		addToIndex(i.indices[name], fn, k, o)
	}
}

func addToIndex(idx map[string]map[string]struct{}, fn IndexFunc, k string, o scheme.Object) {
	for _, v := range fn(o) {
		set := idx[v]
		if set == nil {
			set = map[string]struct{}{}
			idx[v] = set
		}
		set[k] = struct{}{}
	}
}

func (i *Informer) remove(k string) {
	if old, ok := i.items[k]; ok {
		i.unindex(k, old)
		delete(i.items, k)
	}
}

func (i *Informer) unindex(k string, o scheme.Object) {
	for name, fn := range i.indexers {
		idx := i.indices[name]
		for _, v := range fn(o) {
			if set := idx[v]; set != nil {
				delete(set, k)
				if len(set) == 0 {
					delete(idx, v)
				}
			}
		}
	}
}

// listener delivers to one handler from its own unbounded buffer, as
// client-go's processorListener: the store never waits for a handler, and
// one handler never waits for another.
type listener struct {
	inf *Informer
	h   Handler

	mu      sync.Mutex
	pending []notification
	wake    chan struct{}

	// synced is set once the listener has passed its opSynced mark.
	synced atomic.Bool
}

func (l *listener) HasSynced() bool { return l.synced.Load() && l.inf.HasSynced() }

func (l *listener) push(n notification) {
	l.mu.Lock()
	l.pending = append(l.pending, n)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// run calls the handler until ctx ends.
func (l *listener) run(ctx context.Context) {
	for {
		l.mu.Lock()
		batch := l.pending
		l.pending = nil
		l.mu.Unlock()
		for n, e := range batch {
			if ctx.Err() != nil {
				return
			}
			l.call(e)
			batch[n] = notification{} // let delivered objects go
		}
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		}
	}
}

func (l *listener) call(n notification) {
	h := &l.h
	switch {
	case n.op == opSynced:
		l.synced.Store(true)
	case n.op == opAdd && h.OnAdd != nil:
		h.OnAdd(n.obj)
	case n.op == opUpdate && h.OnUpdate != nil:
		h.OnUpdate(n.old, n.obj)
	case n.op == opDelete && h.OnDelete != nil:
		h.OnDelete(n.obj)
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
