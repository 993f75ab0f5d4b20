package watchcache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

// fakeSource is etcd for one resource, in memory. Values are
// "label=value;node=name".
type fakeSource struct {
	mu      sync.Mutex
	rev     int64
	kvs     map[string]RawEvent
	history []ReplayEvent // every change, so a watch from rev replays what it missed
	watches []chan WatchBatch
	// keepHistory lets Replay answer from history, as etcd before a
	// compaction; replayGate, when set, holds every Replay until closed.
	keepHistory bool
	replayGate  chan struct{}
	replays     []int64 // the from of every Replay
	replayed    chan int64
}

func newFakeSource() *fakeSource { return &fakeSource{kvs: map[string]RawEvent{}} }

func (f *fakeSource) List(context.Context) ([]RawEvent, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []RawEvent
	for _, kv := range f.kvs {
		out = append(out, kv)
	}
	return out, f.rev, nil
}

func (f *fakeSource) Watch(ctx context.Context, rev int64) <-chan WatchBatch {
	ch := make(chan WatchBatch, 1000)
	f.mu.Lock()
	var missed []RawEvent
	for _, e := range f.history {
		if e.Rev > rev {
			missed = append(missed, e.RawEvent)
		}
	}
	if len(missed) > 0 {
		ch <- WatchBatch{Events: missed}
	}
	f.watches = append(f.watches, ch)
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, w := range f.watches {
			if w == ch {
				f.watches = append(f.watches[:i], f.watches[i+1:]...)
			}
		}
		close(ch)
	}()
	return ch
}

func (f *fakeSource) RequestProgress(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.watches {
		w <- WatchBatch{Progress: f.rev}
	}
	return nil
}

// Replay answers from history when keepHistory is set, and otherwise as
// etcd after a compaction.
func (f *fakeSource) Replay(ctx context.Context, from, to int64) ([]ReplayEvent, error) {
	f.mu.Lock()
	f.replays = append(f.replays, from)
	gate, keep, replayed := f.replayGate, f.keepHistory, f.replayed
	f.mu.Unlock()
	if replayed != nil {
		replayed <- from
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if !keep {
		return nil, errors.New("compacted")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ReplayEvent
	for _, e := range f.history {
		if e.Rev > from && e.Rev <= to {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *fakeSource) replayCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.replays)
}

func (f *fakeSource) Get(_ context.Context, key string) (RawEvent, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	kv, ok := f.kvs[key]
	return kv, ok, nil
}

func (f *fakeSource) CurrentRevision(context.Context) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rev, nil
}

// put writes keys in one revision each and sends them as one batch.
func (f *fakeSource) put(kv ...string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var evs []RawEvent
	for i := 0; i < len(kv); i += 2 {
		f.rev++
		e := RawEvent{Key: kv[i], Value: []byte(kv[i+1]), Rev: f.rev}
		prev := f.kvs[kv[i]]
		f.kvs[kv[i]] = e
		f.history = append(f.history, ReplayEvent{RawEvent: e, Prev: prev.Value, PrevRev: prev.Rev})
		evs = append(evs, e)
	}
	for _, w := range f.watches {
		w <- WatchBatch{Events: evs}
	}
	return f.rev
}

func (f *fakeSource) del(key string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	prev := f.kvs[key]
	delete(f.kvs, key)
	e := RawEvent{Delete: true, Key: key, Rev: f.rev}
	f.history = append(f.history, ReplayEvent{RawEvent: e, Prev: prev.Value, PrevRev: prev.Rev})
	for _, w := range f.watches {
		w <- WatchBatch{Events: []RawEvent{e}}
	}
	return f.rev
}

// breakWatches ends every watch with an error, as a lost etcd connection.
func (f *fakeSource) breakWatches() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.watches {
		w <- WatchBatch{Err: errors.New("connection lost")}
	}
}

// bump moves the revision without touching this resource (another kind wrote).
func (f *fakeSource) bump() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	return f.rev
}

func decode(key string, value []byte, rev int64) (*Object, error) {
	o := &Object{Key: key, Rev: rev, Msg: wrapperspb.String(string(value)), Raw: value, Labels: labels.Set{}}
	if ns, _, ok := strings.Cut(key, "/"); ok {
		o.Namespace = ns
	}
	for _, part := range strings.Split(string(value), ";") {
		k, v, _ := strings.Cut(part, "=")
		if k == "node" {
			o.NodeName = v
		} else if k != "" {
			o.Labels[k] = v
		}
	}
	o.Fields = fields.Set{"metadata.name": key, "spec.nodeName": o.NodeName}
	return o, nil
}

func start(t testing.TB, window int) (*Cache, *fakeSource) {
	src := newFakeSource()
	return startOn(t, src, Config{Window: window}), src
}

// startOn runs a cache over src; cfg's zero fields get the tests' defaults.
func startOn(t testing.TB, src *fakeSource, cfg Config) *Cache {
	cfg.Resource, cfg.Source, cfg.BookmarkInterval = "pods", src, 50*time.Millisecond
	if cfg.Decode == nil {
		cfg.Decode = decode
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	c := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-c.Ready()
	return c
}

func next(t testing.TB, w *Watcher) Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("watch closed: %v", w.Err())
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	return Event{}
}

func describe(ev Event) string {
	names := map[EventType]string{Added: "ADDED", Modified: "MODIFIED", Deleted: "DELETED", Bookmark: "BOOKMARK"}
	if ev.Object == nil {
		return fmt.Sprintf("%s@%d", names[ev.Type], ev.Rev)
	}
	return fmt.Sprintf("%s %s@%d", names[ev.Type], ev.Object.Key, ev.Rev)
}

func TestWatchTransitionsThroughAFilter(t *testing.T) {
	c, src := start(t, 100)
	sel, _ := labels.Parse("tier=web")
	w, err := c.Watch(context.Background(), WatchOptions{Filter: Filter{Label: sel}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	src.put("ns/a", "tier=db")  // never matches: nothing
	src.put("ns/a", "tier=web") // starts matching: ADDED
	src.put("ns/a", "tier=web;x=1")
	src.put("ns/a", "tier=db") // stops matching: DELETED
	src.put("ns/b", "tier=web")
	src.del("ns/b")
	want := []string{"ADDED ns/a@2", "MODIFIED ns/a@3", "DELETED ns/a@4", "ADDED ns/b@5", "DELETED ns/b@6"}
	for _, w2 := range want {
		if got := describe(next(t, w)); got != w2 {
			t.Fatalf("got %s, want %s", got, w2)
		}
	}
}

func TestWatchResumesFromWindowAndExpiresBeyondIt(t *testing.T) {
	c, src := start(t, 3)
	for i := range 5 {
		src.put(fmt.Sprintf("ns/p%d", i), "")
	}
	if err := c.WaitRev(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(context.Background(), WatchOptions{FromRev: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := describe(next(t, w)); got != "ADDED ns/p3@4" {
		t.Fatalf("resume: %s", got)
	}
	if got := describe(next(t, w)); got != "ADDED ns/p4@5" {
		t.Fatalf("resume: %s", got)
	}
	w.Stop()
	if _, err := c.Watch(context.Background(), WatchOptions{FromRev: 1}); !errors.Is(err, ErrExpired) {
		t.Fatalf("watch from before the window: %v", err)
	}
}

func TestInitialStateThenChangesWithoutGap(t *testing.T) {
	c, src := start(t, 100)
	src.put("ns/a", "", "ns/b", "")
	c.WaitRev(context.Background(), 2)
	w, err := c.Watch(context.Background(), WatchOptions{InitialState: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	src.put("ns/c", "")
	for _, want := range []string{"ADDED ns/a@1", "ADDED ns/b@2", "ADDED ns/c@3"} {
		if got := describe(next(t, w)); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
}

func TestNodeIndexedWatchSeesOnlyItsNode(t *testing.T) {
	c, src := start(t, 100)
	w, _ := c.Watch(context.Background(), WatchOptions{Filter: Filter{NodeName: "n1"}})
	defer w.Stop()
	src.put("ns/a", "node=n2")
	src.put("ns/b", "node=n1")
	src.put("ns/a", "node=n1") // moved to n1: ADDED
	src.put("ns/b", "node=n2") // moved away: DELETED
	for _, want := range []string{"ADDED ns/b@2", "ADDED ns/a@3", "DELETED ns/b@4"} {
		if got := describe(next(t, w)); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	l, _ := c.List(context.Background(), ListOptions{Filter: Filter{NodeName: "n1"}})
	if len(l.Items) != 1 || l.Items[0].Key != "ns/a" {
		t.Fatalf("list by node: %v", l.Items)
	}
}

func TestListSortedPagedAndFresh(t *testing.T) {
	c, src := start(t, 100)
	src.put("b/x", "", "a/y", "", "a/x", "")
	src.bump() // a write to another resource
	rev, err := c.WaitFresh(context.Background())
	if err != nil || rev != 4 {
		t.Fatalf("WaitFresh = %d, %v; want 4 through a progress notification", rev, err)
	}
	l, _ := c.List(context.Background(), ListOptions{Limit: 2})
	if len(l.Items) != 2 || l.Items[0].Key != "a/x" || l.Items[1].Key != "a/y" || !l.More || l.Remaining != 1 {
		t.Fatalf("page: %+v", l)
	}
	l, _ = c.List(context.Background(), ListOptions{Filter: Filter{Namespace: "b"}})
	if len(l.Items) != 1 {
		t.Fatalf("namespace filter: %+v", l)
	}
}

func TestSlowWatcherIsTerminatedNotBlocking(t *testing.T) {
	c, src := start(t, 10000)
	slow, _ := c.Watch(context.Background(), WatchOptions{})
	fast, _ := c.Watch(context.Background(), WatchOptions{})
	defer fast.Stop()
	got := make(chan int)
	go func() {
		n := 0
		for range fast.Events() {
			n++
			if n == bufferSize+50 {
				got <- n
			}
		}
	}()
	for i := range bufferSize + 50 {
		src.put(fmt.Sprintf("ns/p%d", i), "")
	}
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("a slow watcher blocked the others")
	}
	// The slow one was closed with a reason once its buffer stayed full
	// past the budget. Reading it earlier would let it catch up.
	for deadline := time.Now().Add(5 * time.Second); slow.Err() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("slow watcher never terminated")
		}
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-slow.Events():
			if !ok {
				if slow.Err() == nil {
					t.Fatal("slow watcher closed without a reason")
				}
				return
			}
		case <-deadline:
			t.Fatal("slow watcher never terminated")
		}
	}
}

func TestBookmarksCarryTheRevision(t *testing.T) {
	c, src := start(t, 100)
	w, _ := c.Watch(context.Background(), WatchOptions{Bookmarks: true})
	defer w.Stop()
	src.put("ns/a", "")
	if ev := next(t, w); ev.Type != Added {
		t.Fatal(describe(ev))
	}
	src.bump()
	src.RequestProgress(context.Background())
	ev := next(t, w)
	if ev.Type != Bookmark || ev.Rev != 2 {
		t.Fatalf("bookmark: %s", describe(ev))
	}
}

func BenchmarkList10k(b *testing.B) {
	c, src := start(b, 20000)
	for i := range 10000 {
		src.put(fmt.Sprintf("default/p%05d", i), "app=x")
	}
	c.WaitRev(context.Background(), 10000)
	b.ResetTimer()
	for range b.N {
		l, _ := c.List(context.Background(), ListOptions{})
		if len(l.Items) != 10000 {
			b.Fatal(len(l.Items))
		}
	}
}

func BenchmarkFanout1000Watchers(b *testing.B) {
	c, src := start(b, 20000)
	const watchers = 1000
	var wg sync.WaitGroup
	var ws []*Watcher
	for range watchers {
		w, _ := c.Watch(context.Background(), WatchOptions{})
		ws = append(ws, w)
	}
	b.ResetTimer()
	start := time.Now()
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range b.N {
				<-w.Events()
			}
		}()
	}
	for i := range b.N {
		src.put(fmt.Sprintf("default/p%d", i), "")
	}
	wg.Wait()
	b.ReportMetric(float64(watchers*b.N)/time.Since(start).Seconds(), "events/s")
	for _, w := range ws {
		w.Stop()
	}
}
