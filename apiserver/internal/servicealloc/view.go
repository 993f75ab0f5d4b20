package servicealloc

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"skiff.dev/apiserver/internal/storage"
)

// view is this apiserver's picture of the allocation keys, kept by a watch
// on <prefix>/ranges/. It only steers choices away from taken values: the
// transaction that writes a key is what decides, so a view that lags (or
// has not listed yet) costs a retry, never a double allocation.
type view struct {
	store   *storage.Store
	ranges  []IPRange
	ports   PortRange
	log     *slog.Logger
	changed func() // metrics

	mu       sync.Mutex
	ipSets   []*bitmap
	portSet  *bitmap
	listed   bool
	listedCh chan struct{}
}

func newView(store *storage.Store, ranges []IPRange, ports PortRange, log *slog.Logger, changed func()) *view {
	v := &view{store: store, ranges: ranges, ports: ports, log: log, changed: changed, listedCh: make(chan struct{})}
	v.reset()
	return v
}

func (v *view) reset() {
	v.ipSets = make([]*bitmap, len(v.ranges))
	for i, r := range v.ranges {
		v.ipSets[i] = newBitmap(r.size)
	}
	v.portSet = newBitmap(uint64(v.ports.Size))
}

// run lists and watches the keys until ctx ends, listing again after a
// watch fails (etcd compacted past it, or went away for a while).
func (v *view) run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := v.list(ctx)
		if err == nil {
			backoff = 100 * time.Millisecond
			err = v.watch(ctx, rev)
		}
		if ctx.Err() != nil {
			return nil
		}
		v.log.Warn("allocation view: relisting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	return nil
}

func (v *view) list(ctx context.Context) (int64, error) {
	kvs, rev, err := listAll(ctx, v.store, RangesPrefix, 0)
	if err != nil {
		return 0, err
	}
	v.mu.Lock()
	v.reset()
	for _, kv := range kvs {
		v.applyLocked(kv.Key, true)
	}
	first := !v.listed
	v.listed = true
	v.mu.Unlock()
	if first {
		close(v.listedCh)
	}
	v.changed()
	return rev, nil
}

func (v *view) watch(ctx context.Context, rev int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for b := range v.store.Watch(ctx, RangesPrefix, rev) {
		if b.Err != nil {
			return b.Err
		}
		if len(b.Events) == 0 {
			continue
		}
		v.mu.Lock()
		for _, e := range b.Events {
			v.applyLocked(e.Key, !e.Delete)
		}
		v.mu.Unlock()
		v.changed()
	}
	return ctx.Err()
}

// applyLocked records key as present or gone; keys outside the current
// ranges (left from an earlier configuration) are not tracked.
func (v *view) applyLocked(key string, present bool) {
	if a, ok := parseIPKey(key); ok {
		for i, r := range v.ranges {
			if off, ok := r.offset(a); ok {
				if present {
					v.ipSets[i].set(off)
				} else {
					v.ipSets[i].clear(off)
				}
			}
		}
		return
	}
	if p, ok := parsePortKey(key); ok && v.ports.Contains(int(p)) {
		if present {
			v.portSet.set(uint64(int(p) - v.ports.Base))
		} else {
			v.portSet.clear(uint64(int(p) - v.ports.Base))
		}
	}
}

// taken records a key a transaction found present before the watch said so.
func (v *view) taken(key string) {
	v.mu.Lock()
	v.applyLocked(key, true)
	v.mu.Unlock()
}

// freeIP is an unset offset of range ri in [lo, hi] from start.
func (v *view) freeIP(ri int, lo, hi, start uint64, skip func(uint64) bool) (uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ipSets[ri].free(lo, hi, start, skip)
}

func (v *view) hasIP(ri int, off uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ipSets[ri].has(off)
}

func (v *view) freePort(lo, hi, start uint64, skip func(uint64) bool) (uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.portSet.free(lo, hi, start, skip)
}

func (v *view) hasPort(off uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.portSet.has(off)
}

// counts are the allocated values per IP range and of the port range.
func (v *view) counts() ([]uint64, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	ips := make([]uint64, len(v.ipSets))
	for i, b := range v.ipSets {
		ips[i] = b.count
	}
	return ips, v.portSet.count
}

// listAll reads every key under prefix at one revision (rev 0: now).
func listAll(ctx context.Context, store *storage.Store, prefix string, rev int64) ([]storage.KV, int64, error) {
	var out []storage.KV
	start := ""
	for {
		kvs, r, more, err := store.List(ctx, prefix, start, 5000, rev)
		if err != nil {
			return nil, 0, err
		}
		rev = r
		out = append(out, kvs...)
		if !more || len(kvs) == 0 {
			return out, rev, nil
		}
		start = kvs[len(kvs)-1].Key + "\x00"
	}
}

// ipOffsetsIn is the set of taken offsets of r among kvs.
func ipOffsetsIn(r IPRange, kvs []storage.KV) *bitmap {
	b := newBitmap(r.size)
	for _, kv := range kvs {
		if a, ok := parseIPKey(kv.Key); ok {
			if off, ok := r.offset(a); ok {
				b.set(off)
			}
		}
	}
	return b
}

func addrIn(r IPRange, a netip.Addr) bool { _, ok := r.offset(a); return ok }
