package integration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"os"
	"path/filepath"
	"strings"

	"skiff.dev/apiserver/apitest"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func listNames(t testing.TB, s *apitest.Server, req *apipb.ListRequest) ([]string, *apipb.ListResponse) {
	t.Helper()
	resp, err := s.API.List(ctxT(t), req)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range resp.Items {
		names = append(names, unpack(t, a, &corev1.ConfigMap{}).Metadata.Name)
	}
	return names, resp
}

func TestListSelectorsAndPaging(t *testing.T) {
	s := apitest.Start(t)
	for i := range 25 {
		cm := configMap("default", fmt.Sprintf("cm-%02d", i), nil)
		cm.Metadata.Labels = map[string]string{"parity": strconv.Itoa(i % 2)}
		mustCreate(t, s, cm)
	}
	ref := kindOf(t, &corev1.ConfigMap{}).Ref()
	odd, _ := listNames(t, s, &apipb.ListRequest{Resource: ref, Namespace: "default", LabelSelector: "parity=1"})
	if len(odd) != 12 {
		t.Fatalf("label selector: %d items", len(odd))
	}
	one, _ := listNames(t, s, &apipb.ListRequest{Resource: ref, FieldSelector: "metadata.name=cm-07"})
	if len(one) != 1 || one[0] != "cm-07" {
		t.Fatalf("field selector: %v", one)
	}
	if _, err := s.API.List(ctxT(t), &apipb.ListRequest{Resource: ref, FieldSelector: "data.x=1"}); !apierrors.IsBadRequest(err) {
		t.Fatalf("unsupported field selector: %v", err)
	}
	// Pages are a snapshot of the first page's revision: writes in between do
	// not show up, and nothing is skipped or repeated.
	var all []string
	req := &apipb.ListRequest{Resource: ref, Namespace: "default", Limit: 10}
	names, resp := listNames(t, s, req)
	all = append(all, names...)
	if resp.RemainingItemCount == nil || *resp.RemainingItemCount != 15 || resp.Continue == "" {
		t.Fatalf("first page: remaining %v continue %q", resp.RemainingItemCount, resp.Continue)
	}
	mustCreate(t, s, configMap("default", "cm-00a", nil))
	mustCreate(t, s, configMap("default", "cm-99", nil))
	for resp.Continue != "" {
		req.Continue = resp.Continue
		names, resp = listNames(t, s, req)
		all = append(all, names...)
	}
	if len(all) != 25 {
		t.Fatalf("paged list saw %d items: %v", len(all), all)
	}
	for i, n := range all {
		if n != fmt.Sprintf("cm-%02d", i) {
			t.Fatalf("item %d is %s", i, n)
		}
	}
}

// watcher collects one watch stream's events.
type watcher struct {
	mu     sync.Mutex
	events []*apipb.WatchEvent
	err    error
	done   chan struct{}
}

func startWatch(ctx context.Context, t testing.TB, api apipb.APIClient, req *apipb.WatchRequest) *watcher {
	stream, err := api.Watch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			ev, err := stream.Recv()
			w.mu.Lock()
			if err != nil {
				w.err = err
				w.mu.Unlock()
				return
			}
			w.events = append(w.events, ev)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *watcher) snapshot() ([]*apipb.WatchEvent, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*apipb.WatchEvent(nil), w.events...), w.err
}

func TestWatchExactlyOnceAcrossRestart(t *testing.T) {
	s := apitest.Start(t)
	ref := kindOf(t, &corev1.ConfigMap{}).Ref()
	_, list := listNames(t, s, &apipb.ListRequest{Resource: ref, Namespace: "default"})
	ctx, cancel := context.WithCancel(context.Background())
	w := startWatch(ctx, t, s.API, &apipb.WatchRequest{Resource: ref, Namespace: "default", ResourceVersion: list.ResourceVersion})

	const writers, each = 8, 15
	write := func(round int) {
		var wg sync.WaitGroup
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range each {
					if _, err := create(ctxT(t), s.API, configMap("default", fmt.Sprintf("r%d-w%d-%d", round, i, j), nil)); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
	}
	write(0)
	waitFor(t, func() bool { evs, _ := w.snapshot(); return len(evs) >= writers*each })
	first, _ := w.snapshot()
	last := first[len(first)-1].ResourceVersion

	// The apiserver restarts; the client resumes from the last revision it saw.
	s.Restart()
	cancel()
	<-w.done
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	w2 := startWatch(ctx, t, s.API, &apipb.WatchRequest{Resource: ref, Namespace: "default", ResourceVersion: last})
	write(1)
	waitFor(t, func() bool { evs, _ := w2.snapshot(); return len(evs) >= writers*each })
	second, _ := w2.snapshot()

	seen := map[string]bool{}
	var prev int64
	for _, ev := range append(first, second...) {
		if ev.Type != "ADDED" {
			t.Fatalf("unexpected %s event", ev.Type)
		}
		rv, _ := strconv.ParseInt(ev.ResourceVersion, 10, 64)
		if rv <= prev {
			t.Fatalf("event at %d after %d: out of order or repeated", rv, prev)
		}
		prev = rv
		name := unpack(t, ev.Object, &corev1.ConfigMap{}).Metadata.Name
		if seen[name] {
			t.Fatalf("%s delivered twice", name)
		}
		seen[name] = true
	}
	if len(seen) != 2*writers*each {
		t.Fatalf("saw %d distinct objects, want %d", len(seen), 2*writers*each)
	}
	// Nothing more may follow the writes. Rather than sleep and hope a stray
	// event would have arrived by then, write a marker: events come in
	// revision order, so any extra event (a duplicate, a replay) reaches the
	// stream before the marker does.
	marker := mustCreate(t, s, configMap("default", "marker", nil)).Metadata.ResourceVersion
	at := -1
	waitFor(t, func() bool {
		evs, _ := w2.snapshot()
		at = slices.IndexFunc(evs, func(ev *apipb.WatchEvent) bool { return ev.ResourceVersion == marker })
		return at >= 0
	})
	if at != writers*each {
		t.Fatalf("%d events before the marker, want the %d writes", at, writers*each)
	}
}

func TestWatchFiltersAndTransitions(t *testing.T) {
	s := apitest.Start(t)
	ref := kindOf(t, &corev1.ConfigMap{}).Ref()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, list := listNames(t, s, &apipb.ListRequest{Resource: ref})
	w := startWatch(ctx, t, s.API, &apipb.WatchRequest{Resource: ref, Namespace: "default", LabelSelector: "tier=web", ResourceVersion: list.ResourceVersion})
	cm := configMap("default", "t", nil)
	cm = mustCreate(t, s, cm) // not matching: no event
	cm.Metadata.Labels = map[string]string{"tier": "web"}
	a, err := update(ctxT(t), s.API, cm) // starts matching: ADDED
	if err != nil {
		t.Fatal(err)
	}
	cm = unpack(t, a, &corev1.ConfigMap{})
	cm.Metadata.Labels = map[string]string{"tier": "db"}
	if _, err := update(ctxT(t), s.API, cm); err != nil { // stops matching: DELETED
		t.Fatal(err)
	}
	waitFor(t, func() bool { evs, _ := w.snapshot(); return len(evs) >= 2 })
	evs, _ := w.snapshot()
	if evs[0].Type != "ADDED" || evs[1].Type != "DELETED" {
		t.Fatalf("transitions: %s, %s", evs[0].Type, evs[1].Type)
	}
}

func TestDeleteEventCarriesDeleteRevision(t *testing.T) {
	s := apitest.Start(t)
	ref := kindOf(t, &corev1.ConfigMap{}).Ref()
	cm := mustCreate(t, s, configMap("default", "gone", nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := startWatch(ctx, t, s.API, &apipb.WatchRequest{Resource: ref, Namespace: "default", ResourceVersion: cm.Metadata.ResourceVersion})
	if _, err := s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: ref, Namespace: "default", Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { evs, _ := w.snapshot(); return len(evs) >= 1 })
	evs, _ := w.snapshot()
	got := unpack(t, evs[0].Object, &corev1.ConfigMap{})
	if evs[0].Type != "DELETED" || got.Metadata.Name != "gone" || got.Metadata.ResourceVersion != evs[0].ResourceVersion || got.Metadata.ResourceVersion == cm.Metadata.ResourceVersion {
		t.Fatalf("delete event: %s %v rv %s", evs[0].Type, got.Metadata, evs[0].ResourceVersion)
	}
}

func TestExpiredAfterCompaction(t *testing.T) {
	s := apitest.Start(t)
	ref := kindOf(t, &corev1.ConfigMap{}).Ref()
	old := mustCreate(t, s, configMap("default", "v", map[string]string{"n": "0"}))
	for i := 1; i <= 5; i++ {
		old.Data["n"] = strconv.Itoa(i)
		a, err := update(ctxT(t), s.API, old)
		if err != nil {
			t.Fatal(err)
		}
		old = unpack(t, a, &corev1.ConfigMap{})
	}
	first := old.Metadata.ResourceVersion
	// History is served until compaction.
	a, err := s.API.Get(ctxT(t), &apipb.GetRequest{Resource: ref, Namespace: "default", Name: "v", ResourceVersion: first})
	if err != nil || unpack(t, a, &corev1.ConfigMap{}).Data["n"] != "5" {
		t.Fatalf("get at revision: %v", err)
	}
	mustCreate(t, s, configMap("default", "later", nil))
	// Compact past the first revision after `first`, so even etcd's history
	// cannot resume a watch from it.
	mustCreate(t, s, configMap("default", "later2", nil))
	endpoint, _ := os.ReadFile(filepath.Join(s.Opts.DataDir, "etcd", "endpoint"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{strings.TrimSpace(string(endpoint))}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cur, err := cli.Get(ctxT(t), "/registry/configmaps/default/later2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctxT(t), cur.Header.Revision); err != nil {
		t.Fatal(err)
	}
	s.Restart() // a fresh watch cache starts at the compacted revision
	_, err = s.API.Get(ctxT(t), &apipb.GetRequest{Resource: ref, Namespace: "default", Name: "v", ResourceVersion: first})
	if !apierrors.IsExpired(err) {
		t.Fatalf("get at a compacted revision: %v", err)
	}
	stream, err := s.API.Watch(ctxT(t), &apipb.WatchRequest{Resource: ref, Namespace: "default", ResourceVersion: first})
	if err == nil {
		_, err = stream.Recv()
	}
	if !apierrors.IsExpired(err) || status.Code(err) != codes.OutOfRange {
		t.Fatalf("watch from a compacted revision: %v, want Expired", err)
	}
}

// TestWatchResumesFromBeforeARestart: a client that saw revision A, missed
// writes made before the apiserver restarted, and resumes from A gets those
// writes from etcd's history instead of an Expired and a relist.
func TestWatchResumesFromBeforeARestart(t *testing.T) {
	s := apitest.Start(t)
	ref := kindOf(t, &corev1.ConfigMap{}).Ref()
	seen := mustCreate(t, s, configMap("default", "a", map[string]string{"v": "1"})).Metadata.ResourceVersion
	b := mustCreate(t, s, configMap("default", "b", nil))
	b.Data = map[string]string{"v": "2"}
	if _, err := update(ctxT(t), s.API, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: ref, Namespace: "default", Name: "a"}); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := startWatch(ctx, t, s.API, &apipb.WatchRequest{Resource: ref, Namespace: "default", ResourceVersion: seen})
	waitFor(t, func() bool { evs, err := w.snapshot(); return len(evs) >= 3 || err != nil })
	evs, err := w.snapshot()
	if err != nil {
		t.Fatalf("watch from before the restart: %v", err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.Type+" "+unpack(t, ev.Object, &corev1.ConfigMap{}).Metadata.Name)
	}
	if strings.Join(got, ", ") != "ADDED b, MODIFIED b, DELETED a" {
		t.Fatalf("replayed events: %v", got)
	}
}
