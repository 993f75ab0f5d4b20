package client

import (
	"context"
	"fmt"

	"skiff.dev/proto/scheme"
)

// Typed is a client for one kind with its Go type.
type Typed[T scheme.Object] struct {
	d *Dynamic
}

// For returns the typed client of T's kind in namespace (ignored for
// cluster-scoped kinds). T must be a kind of skiff.dev/proto/scheme; any
// other type is a programming error, caught by the first test that runs it.
func For[T scheme.Object](c *Client, namespace string) *Typed[T] {
	var zero T
	k, ok := scheme.ForName(zero.ProtoReflect().Descriptor().FullName())
	if !ok {
		panic(fmt.Sprintf("client.For: %T is not a kind of skiff.dev/proto/scheme", zero))
	}
	return &Typed[T]{d: c.Resource(k, namespace)}
}

// Dynamic is the untyped client underneath (for dry runs, History, GetAt).
func (t *Typed[T]) Dynamic() *Dynamic { return t.d }

// cast cannot fail for objects the Dynamic decoded: it decodes into the
// kind's own message, which is T.
func cast[T scheme.Object](o scheme.Object, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	return o.(T), nil
}

// Get reads the newest state of an object.
func (t *Typed[T]) Get(ctx context.Context, name string) (T, error) {
	return cast[T](t.d.Get(ctx, name))
}

// Create stores a new object.
func (t *Typed[T]) Create(ctx context.Context, obj T) (T, error) {
	return cast[T](t.d.Create(ctx, obj, false))
}

// Update replaces an object; a stale resourceVersion fails with Conflict.
func (t *Typed[T]) Update(ctx context.Context, obj T) (T, error) {
	return cast[T](t.d.Update(ctx, obj, false))
}

// UpdateStatus replaces only the status of an object.
func (t *Typed[T]) UpdateStatus(ctx context.Context, obj T) (T, error) {
	return cast[T](t.d.UpdateStatus(ctx, obj))
}

// Patch applies a JSON merge patch ("merge") or JSON patch ("json") to the
// object or its subresource ("" or "status").
func (t *Typed[T]) Patch(ctx context.Context, name, patchType string, patch []byte, subresource string) (T, error) {
	return cast[T](t.d.Patch(ctx, name, patchType, patch, subresource, false))
}

// Delete deletes or marks for deletion; it returns the object's last state.
func (t *Typed[T]) Delete(ctx context.Context, name string, o DeleteOptions) (T, error) {
	return cast[T](t.d.Delete(ctx, name, o))
}

// List is one page of typed objects.
type List[T scheme.Object] struct {
	Items              []T
	ResourceVersion    string
	Continue           string
	RemainingItemCount *int64
}

// List reads one page (all, without a Limit) of the kind's objects.
func (t *Typed[T]) List(ctx context.Context, o ListOptions) (*List[T], error) {
	l, err := t.d.List(ctx, o)
	if err != nil {
		return nil, err
	}
	out := &List[T]{Items: make([]T, len(l.Items)), ResourceVersion: l.ResourceVersion, Continue: l.Continue,
		RemainingItemCount: l.RemainingItemCount}
	for i, o := range l.Items {
		out.Items[i] = o.(T)
	}
	return out, nil
}

// TypedEvent is one watch event with its object as T.
type TypedEvent[T scheme.Object] struct {
	Type   EventType
	Object T
}

// TypedWatcher is a Watcher whose events carry T.
type TypedWatcher[T scheme.Object] struct {
	w  *Watcher
	ch chan TypedEvent[T]
}

// Events closes when the watch ends; Err then says why (nil after Stop).
func (t *TypedWatcher[T]) Events() <-chan TypedEvent[T] { return t.ch }

// Err is why the watch ended.
func (t *TypedWatcher[T]) Err() error { return t.w.Err() }

// Stop ends the watch.
func (t *TypedWatcher[T]) Stop() { t.w.Stop() }

// Watch streams the kind's events from o.ResourceVersion.
func (t *Typed[T]) Watch(ctx context.Context, o ListOptions) (*TypedWatcher[T], error) {
	w, err := t.d.Watch(ctx, o)
	if err != nil {
		return nil, err
	}
	tw := &TypedWatcher[T]{w: w, ch: make(chan TypedEvent[T])}
	go func() {
		defer close(tw.ch)
		for ev := range w.Events() {
			select {
			case tw.ch <- TypedEvent[T]{Type: ev.Type, Object: ev.Object.(T)}:
			case <-w.done:
				// Drain so the receiving goroutine can see its context end.
				for range w.Events() {
				}
				return
			}
		}
	}()
	return tw, nil
}
