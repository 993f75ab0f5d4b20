package informers

import (
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client/informer"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Lister reads one kind from an informer's cache, as client-go's generated
// listers. A nil selector means everything. Objects are shared with the
// cache and every other reader: never modify them.
type Lister[T scheme.Object] interface {
	// List returns the objects, in all namespaces, whose labels match sel.
	List(sel labels.Selector) []T
	// Get returns an object, or an apierrors NotFound; namespace is
	// ignored for cluster-scoped kinds.
	Get(namespace, name string) (T, error)
	// Namespace reads one namespace, through the namespace index.
	Namespace(namespace string) NamespaceLister[T]
}

// NamespaceLister reads one namespace of a kind.
type NamespaceLister[T scheme.Object] interface {
	List(sel labels.Selector) []T
	Get(name string) (T, error)
}

// NewLister returns a lister of T over inf, which must hold T's kind; it is
// what Typed.Lister returns, for an informer made outside a factory.
func NewLister[T scheme.Object](inf *informer.Informer) Lister[T] {
	return &lister[T]{inf: inf, kind: kindOf[T]()}
}

type lister[T scheme.Object] struct {
	inf  *informer.Informer
	kind *scheme.Kind
}

func (l *lister[T]) List(sel labels.Selector) []T { return filter[T](l.inf.List(), sel) }

func (l *lister[T]) Get(namespace, name string) (T, error) {
	key := name
	if l.kind.Namespaced {
		key = namespace + "/" + name
	}
	o, ok := l.inf.Get(key)
	if !ok {
		var zero T
		return zero, apierrors.NewNotFound(l.kind.GroupResource(), name)
	}
	return o.(T), nil
}

func (l *lister[T]) Namespace(namespace string) NamespaceLister[T] {
	return namespaceLister[T]{l: l, ns: namespace}
}

type namespaceLister[T scheme.Object] struct {
	l  *lister[T]
	ns string
}

func (n namespaceLister[T]) List(sel labels.Selector) []T {
	return filter[T](n.l.inf.ByIndex(informer.NamespaceIndex, n.ns), sel)
}

func (n namespaceLister[T]) Get(name string) (T, error) { return n.l.Get(n.ns, name) }

func filter[T scheme.Object](objs []scheme.Object, sel labels.Selector) []T {
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if sel == nil || sel.Matches(labels.Set(o.GetMetadata().GetLabels())) {
			out = append(out, o.(T))
		}
	}
	return out
}
