// Package lookup reads, for admission plugins, the objects of one kind in a
// namespace that a request is checked against (ResourceQuotas,
// LimitRanges), as upstream's plugins do: from the watch cache, which may
// not have seen one created a moment ago, so an empty cache answer is read
// again consistently, and a consistent read that found none is believed
// for a while (upstream's live lookup cache), so that creates in
// namespaces without any do not each pay a consistent read.
package lookup

import (
	"context"
	"sync"
	"time"

	"skiff.dev/apiserver/internal/registry"
	"skiff.dev/proto/scheme"
)

// Registry is what a lookup needs of the apiserver's registry.
type Registry interface {
	List(ctx context.Context, k *scheme.Kind, ns string, o registry.ListOptions) (*registry.ListResult, error)
}

// LiveTTL is how long an empty consistent read is believed.
const LiveTTL = 30 * time.Second

// Namespaced lists objects of one kind by namespace.
type Namespaced[T scheme.Object] struct {
	r    Registry
	kind *scheme.Kind
	Now  func() time.Time

	mu    sync.Mutex
	empty map[string]time.Time // namespace → until when it has none
}

// New lists kind through r.
func New[T scheme.Object](r Registry, kind *scheme.Kind) *Namespaced[T] {
	return &Namespaced[T]{r: r, kind: kind, Now: time.Now, empty: map[string]time.Time{}}
}

func (n *Namespaced[T]) list(ctx context.Context, ns, rv string) ([]T, error) {
	l, err := n.r.List(ctx, n.kind, ns, registry.ListOptions{ResourceVersion: rv})
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(l.Items))
	for _, o := range l.Items {
		out = append(out, o.Msg.(T))
	}
	return out, nil
}

// List is ns's objects: from the cache unless fresh or the cache has none,
// then consistently, unless a consistent read found none less than LiveTTL
// ago.
func (n *Namespaced[T]) List(ctx context.Context, ns string, fresh bool) ([]T, error) {
	if !fresh {
		out, err := n.list(ctx, ns, "0")
		if err != nil || len(out) > 0 {
			return out, err
		}
		n.mu.Lock()
		until, ok := n.empty[ns]
		n.mu.Unlock()
		if ok && n.Now().Before(until) {
			return nil, nil
		}
	}
	out, err := n.list(ctx, ns, "")
	if err != nil {
		return nil, err
	}
	now := n.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, t := range n.empty {
		if !now.Before(t) {
			delete(n.empty, k)
		}
	}
	if len(out) == 0 {
		n.empty[ns] = now.Add(LiveTTL)
	} else {
		delete(n.empty, ns)
	}
	return out, nil
}
