package lookup

import (
	"context"
	"testing"
	"time"

	"skiff.dev/apiserver/internal/registry"
	"skiff.dev/apiserver/internal/watchcache"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// reads is a registry whose watch cache lags: cached is what a read at
// "0" sees, stored what a consistent read sees; it counts both.
type reads struct {
	cached, stored        []*corev1.LimitRange
	cacheReads, consReads int
}

func (r *reads) List(_ context.Context, _ *scheme.Kind, _ string, o registry.ListOptions) (*registry.ListResult, error) {
	items := r.stored
	if o.ResourceVersion == "0" {
		r.cacheReads++
		items = r.cached
	} else {
		r.consReads++
	}
	out := &registry.ListResult{}
	for _, lr := range items {
		out.Items = append(out.Items, &watchcache.Object{Msg: lr})
	}
	return out, nil
}

func TestListReadsAgainAndBelievesEmptyForAWhile(t *testing.T) {
	k, _ := scheme.ForResource("", "limitranges")
	r := &reads{}
	now := time.Unix(1_800_000_000, 0)
	l := New[*corev1.LimitRange](r, k)
	l.Now = func() time.Time { return now }
	ctx := context.Background()

	// Nothing anywhere: one consistent read, then believed.
	for range 3 {
		if got, err := l.List(ctx, "ns", false); err != nil || len(got) != 0 {
			t.Fatalf("%v %v", got, err)
		}
	}
	if r.consReads != 1 {
		t.Errorf("%d consistent reads for an empty namespace, want 1 within the TTL", r.consReads)
	}
	// One created since, not in the cache yet: found once the TTL is over.
	r.stored = []*corev1.LimitRange{{Metadata: &metav1.ObjectMeta{Name: "lr"}}}
	now = now.Add(LiveTTL)
	if got, _ := l.List(ctx, "ns", false); len(got) != 1 {
		t.Errorf("after the TTL: %d, want the new LimitRange", len(got))
	}
	// Fresh reads skip the cache and the belief.
	r.stored, r.cached = nil, []*corev1.LimitRange{{Metadata: &metav1.ObjectMeta{Name: "stale"}}}
	before := r.cacheReads
	if got, _ := l.List(ctx, "ns", true); len(got) != 0 || r.cacheReads != before {
		t.Errorf("fresh: %d objects, %d cache reads; want the store's none and no cache read", len(got), r.cacheReads-before)
	}
	// The cache's answer is used when it has one.
	if got, _ := l.List(ctx, "ns", false); len(got) != 1 || got[0].Metadata.Name != "stale" {
		t.Errorf("cached: %v", got)
	}
}
