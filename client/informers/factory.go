// Package informers shares informers between the controllers of one
// process and reads their caches through typed listers: client-go's
// SharedInformerFactory and listers.
//
// Every caller asking the factory for a kind gets the same informer, so a
// process lists and watches each kind once however many controllers use it:
//
//	f := informers.NewFactory(c, informers.Options{})
//	pods := informers.For[*corev1.Pod](f)
//	reg := pods.Informer().AddHandler(informer.Handler{OnAdd: enqueue})
//	f.Start(ctx)
//	if !informers.WaitForCacheSync(ctx, reg) { return ctx.Err() }
//	pod, err := pods.Lister().Get("default", "web-0")
//
// Objects a lister returns are the cache's own, shared by every caller:
// never modify one; proto.Clone it first.
package informers

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/proto/scheme"
)

// Options configure every informer of a factory.
type Options struct {
	// Resync is each informer's resync period (0: never).
	Resync time.Duration
	Logger *slog.Logger
}

// Factory makes one informer per kind, across all namespaces.
type Factory struct {
	c    *client.Client
	opts Options

	mu        sync.Mutex
	informers map[*scheme.Kind]*informer.Informer
	started   map[*scheme.Kind]bool
	wg        sync.WaitGroup
}

// NewFactory returns a factory whose informers read through c.
func NewFactory(c *client.Client, opts Options) *Factory {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Factory{c: c, opts: opts, informers: map[*scheme.Kind]*informer.Informer{},
		started: map[*scheme.Kind]bool{}}
}

// ForKind returns the kind's informer, made on first request; Start runs it.
func (f *Factory) ForKind(k *scheme.Kind) *informer.Informer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if inf, ok := f.informers[k]; ok {
		return inf
	}
	inf := informer.New(f.c.Resource(k, ""), informer.Options{Resync: f.opts.Resync,
		Logger: f.opts.Logger.With("informer", k.GroupResource())})
	f.informers[k] = inf
	return inf
}

// Start runs every informer requested so far and not yet running, until
// ctx ends. Call it again after requesting more.
func (f *Factory) Start(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, inf := range f.informers {
		if f.started[k] {
			continue
		}
		f.started[k] = true
		f.wg.Go(func() {
			if err := inf.Run(ctx); err != nil {
				f.opts.Logger.Error("informer failed", "informer", k.GroupResource(), "err", err)
			}
		})
	}
}

// WaitForCacheSync waits until every started informer has synced; false if
// ctx ended first. Controllers should rather wait for their handlers'
// registrations (the package's WaitForCacheSync), which also means their
// handlers have seen every object.
func (f *Factory) WaitForCacheSync(ctx context.Context) bool {
	f.mu.Lock()
	var started []*informer.Informer
	for k, inf := range f.informers {
		if f.started[k] {
			started = append(started, inf)
		}
	}
	f.mu.Unlock()
	for _, inf := range started {
		if !inf.WaitForSync(ctx) {
			return false
		}
	}
	return true
}

// Shutdown waits for every started informer to stop: call it after ending
// Start's context. No handler is called after it returns.
func (f *Factory) Shutdown() {
	f.wg.Wait()
}

// WaitForCacheSync waits until each of regs (handler registrations,
// informers) has synced; false if ctx ended first.
func WaitForCacheSync(ctx context.Context, regs ...informer.Registration) bool {
	t := time.NewTicker(syncPoll)
	defer t.Stop()
	for {
		all := true
		for _, r := range regs {
			if !r.HasSynced() {
				all = false
				break
			}
		}
		if all {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// syncPoll is how often WaitForCacheSync looks; client-go's is 100ms, but
// a registration syncs as soon as its handler drains its first objects, and
// a process's start-up waits on it.
const syncPoll = 10 * time.Millisecond

// Typed is the informer of T's kind with a lister of T.
type Typed[T scheme.Object] struct {
	inf  *informer.Informer
	kind *scheme.Kind
}

// For returns the factory's informer of T's kind. T must be a kind of
// skiff.dev/proto/scheme; any other type is a programming error.
func For[T scheme.Object](f *Factory) *Typed[T] {
	k := kindOf[T]()
	return &Typed[T]{inf: f.ForKind(k), kind: k}
}

func kindOf[T scheme.Object]() *scheme.Kind {
	var zero T
	k, ok := scheme.ForName(zero.ProtoReflect().Descriptor().FullName())
	if !ok {
		panic(fmt.Sprintf("informers: %T is not a kind of skiff.dev/proto/scheme", zero))
	}
	return k
}

// Informer is the shared informer; add handlers and indexes to it.
func (t *Typed[T]) Informer() *informer.Informer { return t.inf }

// Lister reads the informer's cache.
func (t *Typed[T]) Lister() Lister[T] { return &lister[T]{inf: t.inf, kind: t.kind} }
