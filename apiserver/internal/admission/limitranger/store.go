package limitranger

import (
	"context"

	"skiff.dev/apiserver/internal/admission/lookup"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/scheme"
)

// Registry is what the plugin needs of the apiserver's registry.
type Registry = lookup.Registry

var limitRangeKind, _ = scheme.ForResource("", "limitranges")

// RegistryStore lists LimitRanges through the registry as package lookup
// reads them: the watch cache, then a consistent read when it has none.
func RegistryStore(r Registry) Store {
	return registryStore{lookup.New[*corev1.LimitRange](r, limitRangeKind)}
}

type registryStore struct {
	l *lookup.Namespaced[*corev1.LimitRange]
}

func (s registryStore) LimitRanges(ctx context.Context, ns string) ([]*corev1.LimitRange, error) {
	return s.l.List(ctx, ns, false)
}
