package resourcequota

import (
	"context"
	"fmt"
	"sync"
	"time"

	"skiff.dev/apiserver/internal/registry"
	"skiff.dev/apiserver/internal/watchcache"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Registry is what the plugin needs of the apiserver's registry.
type Registry interface {
	List(ctx context.Context, k *scheme.Kind, ns string, o registry.ListOptions) (*registry.ListResult, error)
	UpdateStatus(ctx context.Context, k *scheme.Kind, ns string, obj scheme.Object, dryRun bool) (*watchcache.Object, error)
}

// liveTTL is how long a consistent read that found no quota in a
// namespace is believed when the cache has none either (upstream's live
// lookup TTL): it keeps pod creates in namespaces without quotas from
// paying a consistent read each.
const liveTTL = 30 * time.Second

// RegistryStore reads quotas from the registry's watch cache (a
// consistent read when fresh, or when the cache has none) and writes their
// status through the registry's resourceVersion-guarded UpdateStatus.
func RegistryStore(r Registry) Store {
	return &registryStore{r: r, empty: map[string]time.Time{}, now: time.Now}
}

type registryStore struct {
	r   Registry
	now func() time.Time

	mu    sync.Mutex
	empty map[string]time.Time // namespace -> until when it has no quota
}

func (s *registryStore) list(ctx context.Context, ns, rv string) ([]*corev1.ResourceQuota, error) {
	l, err := s.r.List(ctx, quotaKind, ns, registry.ListOptions{ResourceVersion: rv})
	if err != nil {
		return nil, err
	}
	out := make([]*corev1.ResourceQuota, 0, len(l.Items))
	for _, o := range l.Items {
		out = append(out, o.Msg.(*corev1.ResourceQuota))
	}
	return out, nil
}

func (s *registryStore) Quotas(ctx context.Context, ns string, fresh bool) ([]*corev1.ResourceQuota, error) {
	if !fresh {
		out, err := s.list(ctx, ns, "0")
		if err != nil || len(out) > 0 {
			return out, err
		}
		s.mu.Lock()
		until, ok := s.empty[ns]
		s.mu.Unlock()
		if ok && s.now().Before(until) {
			return nil, nil
		}
	}
	out, err := s.list(ctx, ns, "")
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(out) == 0 {
		s.empty[ns] = s.now().Add(liveTTL)
	} else {
		delete(s.empty, ns)
	}
	for k, t := range s.empty {
		if !s.now().Before(t) {
			delete(s.empty, k)
		}
	}
	s.mu.Unlock()
	return out, nil
}

func (s *registryStore) UpdateStatus(ctx context.Context, q *corev1.ResourceQuota) error {
	if q.GetMetadata().GetResourceVersion() == "" {
		// An unguarded write would overwrite a concurrent charge.
		return apierrors.NewInternal(fmt.Errorf("quota %s/%s without a resourceVersion", q.GetMetadata().GetNamespace(), q.GetMetadata().GetName()))
	}
	_, err := s.r.UpdateStatus(ctx, quotaKind, q.GetMetadata().GetNamespace(), q, false)
	return err
}
