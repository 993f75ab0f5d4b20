package registry

import (
	"context"
	"errors"

	"skiff.dev/apiserver/internal/storage"
	"skiff.dev/apiserver/internal/watchcache"
)

// source adapts storage to one resource's watch cache.
type source struct {
	store  *storage.Store
	prefix string
	// listed is told the revision of every full list, before the cache
	// decodes it.
	listed func(rev int64)
}

func (s *source) List(ctx context.Context) ([]watchcache.RawEvent, int64, error) {
	var out []watchcache.RawEvent
	var rev int64
	start := ""
	for {
		kvs, r, more, err := s.store.List(ctx, s.prefix, start, 5000, rev)
		if err != nil {
			return nil, 0, err
		}
		rev = r
		for _, kv := range kvs {
			out = append(out, watchcache.RawEvent{Key: kv.Key[len(s.prefix):], Value: kv.Value, Rev: kv.Rev})
		}
		if !more || len(kvs) == 0 {
			if s.listed != nil {
				s.listed(rev)
			}
			return out, rev, nil
		}
		start = kvs[len(kvs)-1].Key + "\x00"
	}
}

func (s *source) Watch(ctx context.Context, rev int64) <-chan watchcache.WatchBatch {
	in := s.store.Watch(ctx, s.prefix, rev)
	out := make(chan watchcache.WatchBatch, 16)
	go func() {
		defer close(out)
		for b := range in {
			wb := watchcache.WatchBatch{Progress: b.Progress, Err: b.Err}
			if len(b.Events) > 0 {
				wb.Events = make([]watchcache.RawEvent, len(b.Events))
				for i, e := range b.Events {
					wb.Events[i] = watchcache.RawEvent{Delete: e.Delete, Key: e.Key[len(s.prefix):], Value: e.Value, Rev: e.Rev}
				}
			}
			select {
			case out <- wb:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (s *source) RequestProgress(ctx context.Context) error { return s.store.RequestProgress(ctx) }

func (s *source) Replay(ctx context.Context, from, to int64) ([]watchcache.ReplayEvent, error) {
	evs, err := s.store.Replay(ctx, s.prefix, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]watchcache.ReplayEvent, len(evs))
	for i, e := range evs {
		out[i] = watchcache.ReplayEvent{
			RawEvent: watchcache.RawEvent{Delete: e.Delete, Key: e.Key[len(s.prefix):], Value: e.Value, Rev: e.Rev},
			Prev:     e.Prev, PrevRev: e.PrevRev,
		}
	}
	return out, nil
}

func (s *source) Get(ctx context.Context, key string) (watchcache.RawEvent, bool, error) {
	kv, err := s.store.Get(ctx, s.prefix+key, 0)
	if errors.Is(err, storage.ErrNotFound) {
		return watchcache.RawEvent{}, false, nil
	}
	if err != nil {
		return watchcache.RawEvent{}, false, err
	}
	return watchcache.RawEvent{Key: key, Value: kv.Value, Rev: kv.Rev}, true, nil
}

func (s *source) CurrentRevision(ctx context.Context) (int64, error) {
	return s.store.CurrentRevision(ctx)
}
