package resourcequota

import (
	"context"
	"fmt"

	"skiff.dev/apiserver/internal/admission/lookup"
	"skiff.dev/apiserver/internal/watchcache"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Registry is what the plugin needs of the apiserver's registry.
type Registry interface {
	lookup.Registry
	UpdateStatus(ctx context.Context, k *scheme.Kind, ns string, obj scheme.Object, dryRun bool) (*watchcache.Object, error)
}

// RegistryStore reads quotas through the registry as package lookup reads
// them (the watch cache, then a consistent read when it has none or when
// asked fresh) and writes their status through the registry's
// resourceVersion-guarded UpdateStatus.
func RegistryStore(r Registry) Store {
	return &registryStore{r: r, quotas: lookup.New[*corev1.ResourceQuota](r, quotaKind)}
}

type registryStore struct {
	r      Registry
	quotas *lookup.Namespaced[*corev1.ResourceQuota]
}

func (s *registryStore) Quotas(ctx context.Context, ns string, fresh bool) ([]*corev1.ResourceQuota, error) {
	return s.quotas.List(ctx, ns, fresh)
}

func (s *registryStore) UpdateStatus(ctx context.Context, q *corev1.ResourceQuota) error {
	if q.GetMetadata().GetResourceVersion() == "" {
		// An unguarded write would overwrite a concurrent charge.
		return apierrors.NewInternal(fmt.Errorf("quota %s/%s without a resourceVersion", q.GetMetadata().GetNamespace(), q.GetMetadata().GetName()))
	}
	_, err := s.r.UpdateStatus(ctx, quotaKind, q.GetMetadata().GetNamespace(), q, false)
	return err
}
