package limitranger

import (
	"context"
	"sync"
	"time"

	"skiff.dev/apiserver/internal/registry"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/scheme"
)

// Registry is what the plugin needs of the apiserver's registry.
type Registry interface {
	List(ctx context.Context, k *scheme.Kind, ns string, o registry.ListOptions) (*registry.ListResult, error)
}

var limitRangeKind, _ = scheme.ForResource("", "limitranges")

// liveTTL is how long a consistent read that found no LimitRange in a
// namespace is believed while the cache has none either (upstream's live
// lookup cache).
const liveTTL = 30 * time.Second

// RegistryStore lists LimitRanges from the registry's watch cache; when
// the cache has none it reads again consistently (one created a moment ago
// may not have reached it), and remembers an empty answer for liveTTL.
func RegistryStore(r Registry) Store {
	return &registryStore{r: r, empty: map[string]time.Time{}, now: time.Now}
}

type registryStore struct {
	r   Registry
	now func() time.Time

	mu    sync.Mutex
	empty map[string]time.Time
}

func (s *registryStore) list(ctx context.Context, ns, rv string) ([]*corev1.LimitRange, error) {
	l, err := s.r.List(ctx, limitRangeKind, ns, registry.ListOptions{ResourceVersion: rv})
	if err != nil {
		return nil, err
	}
	out := make([]*corev1.LimitRange, 0, len(l.Items))
	for _, o := range l.Items {
		out = append(out, o.Msg.(*corev1.LimitRange))
	}
	return out, nil
}

func (s *registryStore) LimitRanges(ctx context.Context, ns string) ([]*corev1.LimitRange, error) {
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
	if out, err = s.list(ctx, ns, ""); err != nil {
		return nil, err
	}
	s.mu.Lock()
	for k, t := range s.empty {
		if !s.now().Before(t) {
			delete(s.empty, k)
		}
	}
	if len(out) == 0 {
		s.empty[ns] = s.now().Add(liveTTL)
	}
	s.mu.Unlock()
	return out, nil
}
