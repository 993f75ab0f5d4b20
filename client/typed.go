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
// cluster-scoped kinds). T must be a kind of skiff.dev/proto/scheme.
func For[T scheme.Object](c *Client, namespace string) *Typed[T] {
	var zero T
	k, ok := scheme.ForName(zero.ProtoReflect().Descriptor().FullName())
	if !ok {
		panic(fmt.Sprintf("client.For: %T is not a kind of skiff.dev/proto/scheme", zero))
	}
	return &Typed[T]{d: c.Resource(k, namespace)}
}

// Dynamic is the untyped client underneath.
func (t *Typed[T]) Dynamic() *Dynamic { return t.d }

func cast[T scheme.Object](o scheme.Object, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	return o.(T), nil
}

func (t *Typed[T]) Get(ctx context.Context, name string) (T, error) {
	return cast[T](t.d.Get(ctx, name))
}

func (t *Typed[T]) Create(ctx context.Context, obj T) (T, error) {
	return cast[T](t.d.Create(ctx, obj, false))
}

func (t *Typed[T]) Update(ctx context.Context, obj T) (T, error) {
	return cast[T](t.d.Update(ctx, obj, false))
}

func (t *Typed[T]) UpdateStatus(ctx context.Context, obj T) (T, error) {
	return cast[T](t.d.UpdateStatus(ctx, obj))
}

func (t *Typed[T]) Patch(ctx context.Context, name, patchType string, patch []byte, subresource string) (T, error) {
	return cast[T](t.d.Patch(ctx, name, patchType, patch, subresource, false))
}

func (t *Typed[T]) Delete(ctx context.Context, name string, o DeleteOptions) (T, error) {
	return cast[T](t.d.Delete(ctx, name, o))
}

// List is one page of typed objects.
type List[T scheme.Object] struct {
	Items           []T
	ResourceVersion string
	Continue        string
}

func (t *Typed[T]) List(ctx context.Context, o ListOptions) (*List[T], error) {
	l, err := t.d.List(ctx, o)
	if err != nil {
		return nil, err
	}
	out := &List[T]{Items: make([]T, len(l.Items)), ResourceVersion: l.ResourceVersion, Continue: l.Continue}
	for i, o := range l.Items {
		out.Items[i] = o.(T)
	}
	return out, nil
}

// Watch streams the kind's events (objects are T).
func (t *Typed[T]) Watch(ctx context.Context, o ListOptions) (*Watcher, error) {
	return t.d.Watch(ctx, o)
}
