// Package storage is the apiserver's only door to etcd: byte values under keys,
// written with optimistic concurrency on etcd's ModRevision, listed in pages at
// one revision, and watched in revision order. It knows nothing of kinds; the
// registry above it encodes objects and picks keys.
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	// ErrNotFound: no value under the key.
	ErrNotFound = errors.New("key not found")
	// ErrExists: Create found a value under the key.
	ErrExists = errors.New("key exists")
	// ErrConflict: the key's revision is not the one the write expected.
	ErrConflict = errors.New("revision conflict")
	// ErrCompacted: the revision asked for has been compacted away.
	ErrCompacted = errors.New("revision compacted")
	// ErrUnavailable: etcd did not answer.
	ErrUnavailable = errors.New("etcd unavailable")
	// ErrTooLarge: etcd refused the value's size.
	ErrTooLarge = errors.New("request is too large")
	// ErrFutureRevision: the revision asked for is newer than etcd's.
	ErrFutureRevision = errors.New("required revision is a future revision")
)

// KV is one key's value at a revision. Key is relative to the store's prefix.
type KV struct {
	Key   string
	Value []byte
	Rev   int64 // ModRevision: the object's resourceVersion
}

// Event is one change seen by a watch.
type Event struct {
	Delete bool
	Key    string
	Value  []byte // nil for deletes
	Rev    int64
}

// Batch is what a watch delivers: events of one etcd response, or a progress
// notification (no events, Progress set), or the error that ends the watch.
type Batch struct {
	Events   []Event
	Progress int64
	Err      error
}

// Store reads and writes keys under one prefix ("/registry/").
type Store struct {
	cli     *clientv3.Client
	prefix  string
	latency *prometheus.HistogramVec

	compactions, compactionFailures prometheus.Counter
}

// New returns a Store for keys under prefix; metrics go to reg (may be nil).
func New(cli *clientv3.Client, prefix string, reg prometheus.Registerer) *Store {
	prefix = "/" + strings.Trim(prefix, "/") + "/"
	if prefix == "//" {
		prefix = "/"
	}
	s := &Store{
		cli:    cli,
		prefix: prefix,
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "etcd_request_duration_seconds",
			Help:    "Etcd request latency in seconds for each operation and object type.",
			Buckets: []float64{.005, .01, .025, .05, .1, .2, .4, .6, .8, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60},
		}, []string{"operation", "type"}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_compactions_total",
			Help: "Number of etcd compactions this apiserver made.",
		}),
		compactionFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_compaction_failures_total",
			Help: "Number of etcd compaction rounds that failed.",
		}),
	}
	if reg != nil {
		reg.MustRegister(s.latency, s.compactions, s.compactionFailures)
	}
	return s
}

// Prefix is the absolute key prefix, "/registry/".
func (s *Store) Prefix() string { return s.prefix }

// Client is the etcd client, for health checks.
func (s *Store) Client() *clientv3.Client { return s.cli }

func (s *Store) observe(op, key string, start time.Time) {
	typ := key
	if i := strings.IndexByte(key, '/'); i >= 0 {
		typ = key[:i]
	}
	s.latency.WithLabelValues(op, typ).Observe(time.Since(start).Seconds())
}

// Create writes value under key when nothing is there.
func (s *Store) Create(ctx context.Context, key string, value []byte) (int64, error) {
	defer s.observe("create", key, time.Now())
	k := s.prefix + key
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(value))).
		Commit()
	if err != nil {
		return 0, wrap(err)
	}
	if !resp.Succeeded {
		return 0, ErrExists
	}
	return resp.Header.Revision, nil
}

// Get reads key, at rev when rev > 0.
func (s *Store) Get(ctx context.Context, key string, rev int64) (KV, error) {
	defer s.observe("get", key, time.Now())
	var opts []clientv3.OpOption
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.cli.Get(ctx, s.prefix+key, opts...)
	if err != nil {
		return KV{}, wrap(err)
	}
	if len(resp.Kvs) == 0 {
		return KV{}, ErrNotFound
	}
	return s.kv(resp.Kvs[0]), nil
}

// Update replaces key's value if its revision is still rev. On ErrConflict the
// current value is returned so the caller can explain or retry; on ErrNotFound
// the key is gone.
func (s *Store) Update(ctx context.Context, key string, value []byte, rev int64) (int64, KV, error) {
	defer s.observe("update", key, time.Now())
	k := s.prefix + key
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
		Then(clientv3.OpPut(k, string(value))).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return 0, KV{}, wrap(err)
	}
	if !resp.Succeeded {
		return 0, s.current(resp), conflictOrGone(resp)
	}
	return resp.Header.Revision, KV{}, nil
}

// Delete removes key if its revision is still rev (rev 0: whatever it is).
func (s *Store) Delete(ctx context.Context, key string, rev int64) (int64, KV, error) {
	defer s.observe("delete", key, time.Now())
	k := s.prefix + key
	var cmp clientv3.Cmp
	if rev > 0 {
		cmp = clientv3.Compare(clientv3.ModRevision(k), "=", rev)
	} else {
		cmp = clientv3.Compare(clientv3.ModRevision(k), ">", 0)
	}
	resp, err := s.cli.Txn(ctx).If(cmp).
		Then(clientv3.OpDelete(k)).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return 0, KV{}, wrap(err)
	}
	if !resp.Succeeded {
		return 0, s.current(resp), conflictOrGone(resp)
	}
	return resp.Header.Revision, KV{}, nil
}

func (s *Store) current(resp *clientv3.TxnResponse) KV {
	if len(resp.Responses) == 0 {
		return KV{}
	}
	r := resp.Responses[0].GetResponseRange()
	if r == nil || len(r.Kvs) == 0 {
		return KV{}
	}
	return s.kv(r.Kvs[0])
}

func conflictOrGone(resp *clientv3.TxnResponse) error {
	if len(resp.Responses) > 0 {
		if r := resp.Responses[0].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
			return ErrConflict
		}
	}
	return ErrNotFound
}

// List reads keys under prefix (relative), from startKey (relative, inclusive;
// "" = the prefix's start), at most limit (0 = all), at rev (0 = now). It
// returns the revision read at and whether more keys follow.
func (s *Store) List(ctx context.Context, prefix, startKey string, limit, rev int64) ([]KV, int64, bool, error) {
	defer s.observe("list", prefix, time.Now())
	p := s.prefix + prefix
	from := p
	if startKey != "" {
		from = s.prefix + startKey
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(p))}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(limit))
	}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.cli.Get(ctx, from, opts...)
	if err != nil {
		return nil, 0, false, wrap(err)
	}
	out := make([]KV, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = s.kv(kv)
	}
	return out, resp.Header.Revision, resp.More, nil
}

// Count is the number of keys under prefix.
func (s *Store) Count(ctx context.Context, prefix string) (int64, error) {
	defer s.observe("count", prefix, time.Now())
	p := s.prefix + prefix
	resp, err := s.cli.Get(ctx, p, clientv3.WithRange(clientv3.GetPrefixRangeEnd(p)), clientv3.WithCountOnly())
	if err != nil {
		return 0, wrap(err)
	}
	return resp.Count, nil
}

// CurrentRevision is etcd's revision now, read linearizably.
func (s *Store) CurrentRevision(ctx context.Context) (int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"\x00revision", clientv3.WithCountOnly())
	if err != nil {
		return 0, wrap(err)
	}
	return resp.Header.Revision, nil
}

// Watch streams changes under prefix strictly after rev. The channel closes
// after a batch with Err set, or when ctx ends.
func (s *Store) Watch(ctx context.Context, prefix string, rev int64) <-chan Batch {
	out := make(chan Batch, 64)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.cli.Watch(wctx, s.prefix+prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	go func() {
		defer close(out)
		defer cancel()
		send := func(b Batch) bool {
			select {
			case out <- b:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for resp := range wch {
			if resp.CompactRevision > 0 {
				send(Batch{Err: fmt.Errorf("%w: watch from %d, compacted at %d", ErrCompacted, rev, resp.CompactRevision)})
				return
			}
			if err := resp.Err(); err != nil {
				send(Batch{Err: wrap(err)})
				return
			}
			if resp.IsProgressNotify() {
				if !send(Batch{Progress: resp.Header.Revision}) {
					return
				}
				continue
			}
			evs := make([]Event, 0, len(resp.Events))
			for _, e := range resp.Events {
				ev := Event{Key: strings.TrimPrefix(string(e.Kv.Key), s.prefix), Rev: e.Kv.ModRevision}
				if e.Type == mvccpb.DELETE {
					ev.Delete = true
				} else {
					ev.Value = e.Kv.Value
				}
				evs = append(evs, ev)
			}
			if !send(Batch{Events: evs}) {
				return
			}
		}
		if ctx.Err() == nil {
			send(Batch{Err: fmt.Errorf("%w: watch channel closed", ErrUnavailable)})
		}
	}()
	return out
}

// RequestProgress asks etcd to send a progress notification to this client's
// watches, so a quiet resource's watch learns the current revision.
func (s *Store) RequestProgress(ctx context.Context) error {
	return wrap(s.cli.RequestProgress(clientv3.WithRequireLeader(ctx)))
}

// Compact drops history older than rev.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	_, err := s.cli.Compact(ctx, rev)
	if err != nil && errors.Is(err, rpctypes.ErrCompacted) {
		return nil
	}
	return wrap(err)
}

// compactRevKey is upstream's: its version is the compactors' shared clock,
// its value the revision the last round recorded. It lies outside the prefix
// because compaction is etcd-wide: apiservers of any prefix share it.
const compactRevKey = "compact_rev_key"

// RunCompactor compacts every interval to the revision seen one interval
// earlier, so a watcher always has at least one interval to resume from.
// Of several apiservers on one etcd only one compacts each interval, as
// upstream's compactor does: a round is a compare-and-swap on the version of
// compactRevKey, and only the apiserver whose Txn succeeds compacts; the
// others learn the new version and try again an interval later, so one of
// them takes over when the compacting apiserver goes away.
func (s *Store) RunCompactor(ctx context.Context, interval time.Duration, log *slog.Logger) error {
	if interval <= 0 {
		<-ctx.Done()
		return nil
	}
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var version, rev int64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// A round that outlasts its interval is stuck: count it, and let
		// the next one start afresh.
		rctx, cancel := context.WithTimeout(ctx, interval)
		v, r, compacted, err := s.compactRound(rctx, version, rev)
		cancel()
		version, rev = v, r
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.compactionFailures.Inc()
			log.Error("etcd compaction failed", "err", err)
			continue
		}
		if compacted > 0 {
			log.Debug("etcd compacted", "rev", compacted)
		}
	}
}

// compactRound is one round of the protocol: version is the compactors'
// clock as this one last saw it, rev the revision it saw then. It returns
// the clock and revision to use next round and the revision it compacted to
// (0 when another apiserver won the round or there was nothing to do yet).
func (s *Store) compactRound(ctx context.Context, version, rev int64) (int64, int64, int64, error) {
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(compactRevKey), "=", version)).
		Then(clientv3.OpPut(compactRevKey, strconv.FormatInt(rev, 10))).
		Else(clientv3.OpGet(compactRevKey)).
		Commit()
	if err != nil {
		return version, rev, 0, fmt.Errorf("compaction clock: %w", wrap(err))
	}
	cur := resp.Header.Revision
	if !resp.Succeeded {
		var v int64
		if r := resp.Responses[0].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
			v = r.Kvs[0].Version
		}
		return v, cur, 0, nil
	}
	if rev == 0 {
		// The first round only records where the next one compacts to.
		return version + 1, cur, 0, nil
	}
	if err := s.Compact(ctx, rev); err != nil {
		return version + 1, cur, 0, fmt.Errorf("compact to revision %d: %w", rev, err)
	}
	s.compactions.Inc()
	return version + 1, cur, rev, nil
}

func (s *Store) kv(kv *mvccpb.KeyValue) KV {
	return KV{Key: strings.TrimPrefix(string(kv.Key), s.prefix), Value: kv.Value, Rev: kv.ModRevision}
}

func wrap(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("%w: %v", ErrCompacted, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return fmt.Errorf("%w: %v", ErrFutureRevision, err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// Revision is one past write of a key: a put (Value set) or a delete (Value
// is the last state before it).
type Revision struct {
	Rev    int64
	Value  []byte
	Delete bool
}

// History replays a key's writes still held by etcd, oldest first, by
// watching it from the oldest uncompacted revision up to now. It returns the
// compacted revision too: what came before it is gone.
func (s *Store) History(ctx context.Context, key string) ([]Revision, int64, error) {
	cur, err := s.CurrentRevision(ctx)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 30*time.Second)
	defer cancel()
	from, compacted := int64(1), int64(0)
	for {
		wctx, wcancel := context.WithCancel(ctx)
		wch := s.cli.Watch(wctx, s.prefix+key, clientv3.WithRev(from), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
		var out []Revision
		retry := false
		// Progress notifications arrive once the replay is done, even when
		// nothing more is written; ask until one comes.
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-wctx.Done():
					return
				case <-t.C:
					_ = s.cli.RequestProgress(wctx)
				}
			}
		}()
		for resp := range wch {
			if resp.CompactRevision > 0 {
				compacted, from, retry = resp.CompactRevision, resp.CompactRevision, true
				break
			}
			if err := resp.Err(); err != nil {
				wcancel()
				return nil, 0, wrap(err)
			}
			for _, e := range resp.Events {
				r := Revision{Rev: e.Kv.ModRevision, Value: e.Kv.Value}
				if e.Type == mvccpb.DELETE {
					r.Delete = true
					if e.PrevKv != nil {
						r.Value = e.PrevKv.Value
					}
				}
				out = append(out, r)
			}
			if len(out) > 0 && out[len(out)-1].Rev >= cur || resp.IsProgressNotify() && resp.Header.Revision >= cur {
				wcancel()
				return out, compacted, nil
			}
		}
		wcancel()
		if !retry {
			if ctx.Err() != nil {
				return nil, 0, ctx.Err()
			}
			return nil, 0, fmt.Errorf("%w: history watch closed", ErrUnavailable)
		}
	}
}

// Replayed is one past change with the key's previous value.
type Replayed struct {
	Event
	Prev    []byte
	PrevRev int64
}

// Replay returns the changes under prefix in (from, to], in order, each
// with the previous value, from etcd's history (ErrCompacted once gone).
func (s *Store) Replay(ctx context.Context, prefix string, from, to int64) ([]Replayed, error) {
	if to <= from {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 30*time.Second)
	defer cancel()
	wch := s.cli.Watch(ctx, s.prefix+prefix, clientv3.WithPrefix(), clientv3.WithRev(from+1), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	go func() {
		// A quiet prefix sends nothing: a progress notification says the
		// replay has passed `to`.
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = s.cli.RequestProgress(ctx)
			}
		}
	}()
	var out []Replayed
	for resp := range wch {
		if resp.CompactRevision > 0 {
			return nil, fmt.Errorf("%w: replay from %d, compacted at %d", ErrCompacted, from, resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return nil, wrap(err)
		}
		for _, e := range resp.Events {
			if e.Kv.ModRevision > to {
				return out, nil
			}
			r := Replayed{Event: Event{Key: strings.TrimPrefix(string(e.Kv.Key), s.prefix), Rev: e.Kv.ModRevision}}
			if e.Type == mvccpb.DELETE {
				r.Delete = true
			} else {
				r.Value = e.Kv.Value
			}
			if e.PrevKv != nil {
				r.Prev, r.PrevRev = e.PrevKv.Value, e.PrevKv.ModRevision
			}
			out = append(out, r)
			if e.Kv.ModRevision == to {
				return out, nil
			}
		}
		if resp.IsProgressNotify() && resp.Header.Revision >= to {
			return out, nil
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("%w: replay watch closed", ErrUnavailable)
}
