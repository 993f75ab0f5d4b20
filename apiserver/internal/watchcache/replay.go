package watchcache

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"
)

// Resuming from before the window.
//
// After an apiserver restart the new cache's window starts at its first
// list, and every client resumes from a revision before it at once. Each
// needs the changes it missed from etcd's history, and they all need nearly
// the same ones: so one replay serves every resumer whose revision falls in
// a range already fetched or being fetched, and what it fetched stays in
// memory as a backfill in front of the window for later resumers.
//
// The history a watch can resume from is, oldest first:
//
//	fetches (in flight) | backfill (bfFrom, oldest] | window (oldest, rev]
//
// Fetches are chained: each covers (from, to] with its to the from of the one
// above it, the topmost ending at bfFrom. A finished fetch joins the backfill
// once every fetch above it has; changes that age out of the window join it
// at the other end, so backfill and window never leave a gap between them. A
// resumer waits until the backfill reaches back to its revision, then copies
// its events out under the locks like any other watch. While a fetch is in
// flight or a resumer is pinned, the backfill is never trimmed, so a
// successful replay is never followed by Expired.

const (
	// replayGather is how long a new fetch waits for resumers from further
	// back to join it before it asks etcd: a restart's stampede arrives in
	// any order, and this makes it one replay instead of one per new minimum.
	replayGather = 20 * time.Millisecond
	// replayTimeout bounds a replay that no single watcher owns.
	replayTimeout = 30 * time.Second
	// backfillIdle is how long an unused backfill is kept.
	backfillIdle = 5 * time.Minute
)

// errRetry ends a fetch whose history the cache dropped when it relisted.
var errRetry = errors.New("watch cache relisted; replay again")

type history struct {
	bfOn    bool     // a backfill is kept: the window's dropped changes join it
	bfFrom  int64    // the backfill holds every change in (bfFrom, oldest]
	bf      []change // oldest first
	fetches []*fetch // in flight, newest range first: fetches[0].to == bfFrom
	pins    int      // resumers between cover and copying their events
	epoch   uint64   // moves on relist; fetches of an older epoch are void
	bfUsed  atomic.Int64
}

// fetch is one replay from etcd of the changes in (from, to].
type fetch struct {
	from, to int64
	epoch    uint64
	started  bool          // asked etcd: from is fixed
	finished bool          // res or err is in
	done     chan struct{} // closed once joined to the backfill, or failed
	res      []change
	err      error
}

// coverFrom is the oldest revision a watch can resume from without etcd.
// Callers hold mu.
func (c *Cache) coverFrom() int64 {
	if c.bfOn {
		return c.bfFrom
	}
	return c.oldest
}

func (c *Cache) beforeHistory(from int64) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return from < c.coverFrom()
}

// since calls fn for every change after from, in order. Callers hold mu
// and have checked from >= coverFrom.
func (c *Cache) since(from int64, fn func(change)) {
	if from < c.oldest && c.bfOn {
		c.bfUsed.Store(time.Now().UnixNano())
		i := sort.Search(len(c.bf), func(i int) bool { return c.bf[i].rev > from })
		for _, ch := range c.bf[i:] {
			fn(ch)
		}
	}
	n := len(c.window)
	i := sort.Search(c.wlen, func(i int) bool { return c.window[(c.wstart+i)%n].rev > from })
	for ; i < c.wlen; i++ {
		fn(c.window[(c.wstart+i)%n])
	}
}

// cover makes the in-memory history reach back to from, replaying etcd when
// it does not, and pins it there: the caller must unpin once it has copied
// its events. An error is ErrExpired (etcd compacted the revisions, or
// could not replay them) or the caller's ctx ending.
func (c *Cache) cover(ctx context.Context, from int64) error {
	c.mu.Lock()
	for retries := 0; ; {
		if from >= c.coverFrom() {
			// Keep what the window drops from now on, so from stays covered.
			c.keepBackfill()
			c.pins++
			c.mu.Unlock()
			return nil
		}
		f := c.fetchFor(ctx, from)
		c.pins++
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			c.unpin()
			return ctx.Err()
		}
		c.mu.Lock()
		c.pins--
		if f.err != nil {
			if !errors.Is(f.err, errRetry) || retries == 2 {
				c.trimBackfill()
				c.mu.Unlock()
				return fmt.Errorf("%w: replay from %d: %w", ErrExpired, from, f.err)
			}
			retries++
		}
	}
}

// unpin releases a pin taken by cover.
func (c *Cache) unpin() {
	c.mu.Lock()
	c.pins--
	c.trimBackfill()
	c.mu.Unlock()
}

func (c *Cache) keepBackfill() {
	if !c.bfOn {
		c.bfOn, c.bfFrom, c.bf = true, c.oldest, nil
		c.bfUsed.Store(time.Now().UnixNano())
	}
}

// fetchFor returns the fetch that will bring the history back to from:
// one in flight whose range holds it, the lowest one if it is still
// gathering (stretched down to from), or a new one below all of them.
// Callers hold mu.
func (c *Cache) fetchFor(ctx context.Context, from int64) *fetch {
	if n := len(c.fetches); n > 0 {
		if low := c.fetches[n-1]; !low.started && from < low.from {
			low.from = from
		}
		for _, f := range c.fetches {
			if f.from <= from {
				return f
			}
		}
	}
	c.keepBackfill()
	to := c.bfFrom
	if n := len(c.fetches); n > 0 {
		to = c.fetches[n-1].from
	}
	f := &fetch{from: from, to: to, epoch: c.epoch, done: make(chan struct{})}
	c.fetches = append(c.fetches, f)
	// The replay serves every resumer that joins it, so it outlives the
	// first one's request.
	go c.runFetch(context.WithoutCancel(ctx), f)
	return f
}

func (c *Cache) runFetch(ctx context.Context, f *fetch) {
	time.Sleep(replayGather)
	c.mu.Lock()
	if closed(f.done) {
		c.mu.Unlock()
		return
	}
	f.started = true
	from, to := f.from, f.to
	c.mu.Unlock()
	c.metrics.replays.Inc()
	ctx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	chs, err := c.replay(ctx, from, to)
	c.mu.Lock()
	defer c.mu.Unlock()
	if closed(f.done) || f.epoch != c.epoch {
		return
	}
	f.res, f.err, f.finished = chs, err, true
	c.mergeFetches()
}

// mergeFetches joins finished fetches to the backfill from the top down.
// Callers hold mu.
func (c *Cache) mergeFetches() {
	for len(c.fetches) > 0 {
		top := c.fetches[0]
		if !top.finished {
			return
		}
		if top.err == nil && top.to != c.bfFrom {
			top.err = errRetry // cannot happen while fetches pin the backfill
		}
		if top.err != nil {
			// Nothing below it can join the window either.
			for _, f := range c.fetches {
				if f.err == nil {
					f.err = top.err
				}
				f.res = nil
				closeOnce(f.done)
			}
			c.fetches = nil
			return
		}
		c.fetches = c.fetches[1:]
		c.bf = append(top.res, c.bf...)
		c.bfFrom = top.from
		top.res = nil
		closeOnce(top.done)
	}
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func closeOnce(ch chan struct{}) {
	if !closed(ch) {
		close(ch)
	}
}

// ageOut keeps a change that leaves the window, when a backfill is kept.
// Callers hold mu.
func (c *Cache) ageOut(ch change) {
	if !c.bfOn {
		return
	}
	c.bf = append(c.bf, ch)
	c.trimBackfill()
}

// trimBackfill drops the oldest changes beyond Config.Backfill, unless a
// replay or a resumer still depends on them. Callers hold mu.
func (c *Cache) trimBackfill() {
	if !c.bfOn || c.pins > 0 || len(c.fetches) > 0 || len(c.bf) <= c.cfg.Backfill {
		return
	}
	k := len(c.bf) - c.cfg.Backfill
	c.bfFrom = c.bf[k-1].rev
	clear(c.bf[:k])
	c.bf = c.bf[k:]
}

// expireBackfill lets go of a backfill nobody resumed from for a while.
// Callers hold mu.
func (c *Cache) expireBackfill() {
	if !c.bfOn || c.pins > 0 || len(c.fetches) > 0 {
		return
	}
	if time.Since(time.Unix(0, c.bfUsed.Load())) > backfillIdle {
		c.bfOn, c.bf = false, nil
	}
}

// resetHistory drops the backfill and voids the fetches in flight: their
// waiters start over against the new window. Callers hold mu.
func (c *Cache) resetHistory() {
	c.epoch++
	for _, f := range c.fetches {
		f.err, f.res = errRetry, nil
		closeOnce(f.done)
	}
	c.fetches = nil
	c.bfOn, c.bf = false, nil
}

// replay turns etcd's history in (from, to] into changes a watcher can
// filter, as if they had been in the window.
func (c *Cache) replay(ctx context.Context, from, to int64) ([]change, error) {
	evs, err := c.cfg.Source.Replay(ctx, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]change, 0, len(evs))
	for _, e := range evs {
		var prev *Object
		if e.Prev != nil {
			if prev, err = c.cfg.Decode(e.Key, e.Prev, e.PrevRev); err != nil {
				c.metrics.decodeErrors.Inc()
				return nil, err
			}
		}
		if e.Delete {
			if prev == nil {
				continue
			}
			out = append(out, change{obj: prev, prev: prev, del: true, rev: e.Rev})
			continue
		}
		obj, err := c.cfg.Decode(e.Key, e.Value, e.Rev)
		if err != nil {
			c.metrics.decodeErrors.Inc()
			return nil, err
		}
		out = append(out, change{obj: obj, prev: prev, rev: e.Rev})
	}
	return out, nil
}
