package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/apiserver/internal/etcd"
	"skiff.dev/apiserver/internal/storage"
)

func newStore(t testing.TB) *storage.Store {
	t.Helper()
	return storage.New(dial(t, startEtcd(t)), "/registry", nil)
}

func startEtcd(t testing.TB) string {
	t.Helper()
	srv, err := etcd.Start(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv.Endpoint
}

func dial(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := etcd.Dial(context.Background(), []string{endpoint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestCreateGetUpdateDelete(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rev, err := s.Create(ctx, "pods/default/a", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "pods/default/a", []byte("again")); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	kv, err := s.Get(ctx, "pods/default/a", 0)
	if err != nil || string(kv.Value) != "one" || kv.Rev != rev {
		t.Fatalf("get = %+v, %v", kv, err)
	}
	rev2, _, err := s.Update(ctx, "pods/default/a", []byte("two"), rev)
	if err != nil {
		t.Fatal(err)
	}
	_, cur, err := s.Update(ctx, "pods/default/a", []byte("stale"), rev)
	if !errors.Is(err, storage.ErrConflict) || string(cur.Value) != "two" || cur.Rev != rev2 {
		t.Fatalf("stale update: %v %+v", err, cur)
	}
	if _, _, err := s.Delete(ctx, "pods/default/a", rev); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("stale delete: %v", err)
	}
	if _, _, err := s.Delete(ctx, "pods/default/a", rev2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "pods/default/a", 0); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, _, err := s.Update(ctx, "pods/default/a", []byte("x"), rev2); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("update after delete: %v", err)
	}
	// History is readable until compaction.
	old, err := s.Get(ctx, "pods/default/a", rev)
	if err != nil || string(old.Value) != "one" {
		t.Fatalf("get at %d: %+v %v", rev, old, err)
	}
	if err := s.Compact(ctx, rev2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "pods/default/a", rev); !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("get compacted: %v", err)
	}
}

func TestListPagesAtOneRevision(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	for i := range 10 {
		if _, err := s.Create(ctx, fmt.Sprintf("pods/ns/p%02d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Create(ctx, "pods2/ns/x", []byte("v")); err != nil { // must not leak into "pods/"
		t.Fatal(err)
	}
	page, rev, more, err := s.List(ctx, "pods/", "", 4, 0)
	if err != nil || len(page) != 4 || !more {
		t.Fatalf("page 1: %d items more=%v err=%v", len(page), more, err)
	}
	if _, err := s.Create(ctx, "pods/ns/p99", []byte("late")); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, kv := range page {
		all = append(all, kv.Key)
	}
	next := page[len(page)-1].Key + "\x00"
	for more {
		page, _, more, err = s.List(ctx, "pods/", next, 4, rev)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range page {
			all = append(all, kv.Key)
		}
		if len(page) > 0 {
			next = page[len(page)-1].Key + "\x00"
		}
	}
	if len(all) != 10 {
		t.Fatalf("paged list at rev %d saw %d keys: %v", rev, len(all), all)
	}
	n, err := s.Count(ctx, "pods/")
	if err != nil || n != 11 {
		t.Fatalf("count = %d, %v", n, err)
	}
}

func TestWatchInOrderAndCompacted(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start, err := s.CurrentRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := s.Watch(ctx, "leases/", start)
	var wg sync.WaitGroup
	const writers, each = 8, 25
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				if _, err := s.Create(ctx, fmt.Sprintf("leases/ns/w%d-%d", i, j), []byte("v")); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	var last int64
	seen := 0
	for seen < writers*each {
		b := <-w
		if b.Err != nil {
			t.Fatal(b.Err)
		}
		for _, e := range b.Events {
			if e.Rev <= last {
				t.Fatalf("event at %d after %d", e.Rev, last)
			}
			last = e.Rev
			seen++
		}
	}
	if err := s.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	old := s.Watch(ctx, "leases/", start)
	b := <-old
	if !errors.Is(b.Err, storage.ErrCompacted) {
		t.Fatalf("watch from compacted rev: %+v", b)
	}
}

func TestRequestProgressReportsRevision(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rev, _ := s.CurrentRevision(ctx)
	w := s.Watch(ctx, "quiet/", rev)
	other, err := s.Create(ctx, "busy/x", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if err := s.RequestProgress(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-w:
			if b.Err != nil {
				t.Fatal(b.Err)
			}
			if b.Progress >= other {
				return
			}
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no progress notification")
		}
	}
}

func TestHistoryReplaysPutsAndDeletes(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rev, _ := s.Create(ctx, "cm/ns/a", []byte("v1"))
	rev2, _, _ := s.Update(ctx, "cm/ns/a", []byte("v2"), rev)
	s.Create(ctx, "cm/ns/other", []byte("x"))
	drev, _, _ := s.Delete(ctx, "cm/ns/a", rev2)
	h, compacted, err := s.History(ctx, "cm/ns/a")
	if err != nil {
		t.Fatal(err)
	}
	if compacted != 0 || len(h) != 3 || string(h[0].Value) != "v1" || string(h[1].Value) != "v2" || !h[2].Delete || h[2].Rev != drev || string(h[2].Value) != "v2" {
		t.Fatalf("history: %+v (compacted %d)", h, compacted)
	}
	if err := s.Compact(ctx, rev2); err != nil {
		t.Fatal(err)
	}
	h, compacted, err = s.History(ctx, "cm/ns/a")
	if err != nil || compacted != rev2 || len(h) != 2 || h[0].Rev != rev2 {
		t.Fatalf("after compaction: %+v %d %v", h, compacted, err)
	}
	quiet, _, err := s.History(ctx, "cm/ns/never")
	if err != nil || len(quiet) != 0 {
		t.Fatalf("no history: %+v %v", quiet, err)
	}
}

func TestReplayReturnsHistoryWithPreviousValues(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	start, _ := s.CurrentRevision(ctx)
	r1, _ := s.Create(ctx, "cm/ns/a", []byte("v1"))
	r2, _, _ := s.Update(ctx, "cm/ns/a", []byte("v2"), r1)
	s.Create(ctx, "other/x", []byte("x"))
	r3, _, _ := s.Delete(ctx, "cm/ns/a", r2)
	s.Create(ctx, "cm/ns/b", []byte("later")) // after `to`: not replayed
	evs, err := s.Replay(ctx, "cm/", start, r3)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || string(evs[0].Value) != "v1" || evs[0].Prev != nil ||
		string(evs[1].Prev) != "v1" || evs[1].PrevRev != r1 || !evs[2].Delete || string(evs[2].Prev) != "v2" {
		t.Fatalf("replay: %+v", evs)
	}
	if evs, err := s.Replay(ctx, "quiet/", start, r3); err != nil || len(evs) != 0 {
		t.Fatalf("quiet prefix: %v %v", evs, err)
	}
	s.Compact(ctx, r2)
	if _, err := s.Replay(ctx, "cm/", start, r3); !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("replay of compacted history: %v", err)
	}
}

func TestFutureRevisionIsItsOwnError(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rev, err := s.Create(ctx, "cm/ns/a", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "cm/ns/a", rev+100); !errors.Is(err, storage.ErrFutureRevision) || errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("get at a future revision: %v", err)
	}
	if _, _, _, err := s.List(ctx, "cm/", "", 0, rev+100); !errors.Is(err, storage.ErrFutureRevision) {
		t.Fatalf("list at a future revision: %v", err)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// Of two apiservers on one etcd only one compacts each interval: both run
// the compare-and-swap on compact_rev_key's version, and only the winner
// compacts.
func TestOnlyOneOfTwoStoresCompactsEachInterval(t *testing.T) {
	endpoint := startEtcd(t)
	var regs []*prometheus.Registry
	var stores []*storage.Store
	for range 2 {
		reg := prometheus.NewRegistry()
		regs = append(regs, reg)
		stores = append(stores, storage.New(dial(t, endpoint), "/registry", reg))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	const interval = 100 * time.Millisecond
	start := time.Now()
	for _, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.RunCompactor(ctx, interval, slog.New(slog.DiscardHandler))
		}()
	}
	// Writes keep the revision moving, so every round has something to do.
	for i := 0; time.Since(start) < 15*interval; i++ {
		if _, err := stores[0].Create(ctx, fmt.Sprintf("cm/ns/k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	rounds := int(time.Since(start) / interval)
	a, b := counter(t, regs[0], "etcd_compactions_total"), counter(t, regs[1], "etcd_compactions_total")
	t.Logf("%d intervals: compactions %v and %v", rounds, a, b)
	// Each store ticks once an interval; both compacting would make 2×rounds.
	// A late tick may bring one round early, hence the slack.
	if a+b < 3 || a+b > float64(rounds+rounds/4+2) {
		t.Fatalf("%v compactions in %d intervals by two stores; want about one per interval", a+b, rounds)
	}
	for i, reg := range regs {
		if f := counter(t, reg, "etcd_compaction_failures_total"); f != 0 {
			t.Errorf("store %d: %v compaction failures", i, f)
		}
	}
}

func TestCompactionFailuresAreCountedAndLogged(t *testing.T) {
	cli := dial(t, startEtcd(t))
	reg := prometheus.NewRegistry()
	s := storage.New(cli, "/registry", reg)
	cli.Close()
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	s.RunCompactor(ctx, 20*time.Millisecond, log)
	if f := counter(t, reg, "etcd_compaction_failures_total"); f < 1 {
		t.Fatalf("etcd_compaction_failures_total = %v", f)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), "etcd compaction failed") {
		t.Fatalf("no failure logged: %q", buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
