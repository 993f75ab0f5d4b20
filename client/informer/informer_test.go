package informer

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// recorder writes each handler call as "add a@1", "update a@1>3",
// "delete b@5" (the object's resourceVersion after @).
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func at(o scheme.Object) string {
	return o.GetMetadata().GetName() + "@" + o.GetMetadata().GetResourceVersion()
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}

func (r *recorder) handler() Handler {
	return Handler{
		OnAdd: func(o scheme.Object) { r.add("add " + at(o)) },
		OnUpdate: func(old, o scheme.Object) {
			r.add("update " + at(old) + ">" + o.GetMetadata().GetResourceVersion())
		},
		OnDelete: func(o scheme.Object) { r.add("delete " + at(o)) },
	}
}

// until waits for a call that satisfies done and returns every call before
// it. Writing a marker object after the changes under test and waiting for
// its add proves that no stray or duplicated call came in between.
func (r *recorder) until(t *testing.T, done func(string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		for n, c := range r.calls {
			if done(c) {
				out := slices.Clone(r.calls[:n])
				r.calls = slices.Clone(r.calls[n+1:])
				r.mu.Unlock()
				return out
			}
		}
		calls := slices.Clone(r.calls)
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("timed out; calls so far: %q", calls)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *recorder) untilMarker(t *testing.T, f *fakeAPI, name string) []string {
	t.Helper()
	want := "add " + name + "@" + f.put(name, nil)
	return r.until(t, func(c string) bool { return c == want })
}

func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// run starts an informer on f with rec's handler and waits for its sync.
func run(t *testing.T, f *fakeAPI, opts Options, rec *recorder) *Informer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	inf := New(f.start(t), opts)
	inf.AddHandler(rec.handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- inf.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if !inf.WaitForSync(wctx) {
		t.Fatal("informer never synced")
	}
	return inf
}

// drain returns the resourceVersions of the Watch calls made so far.
func drain(ch chan string) []string {
	var out []string
	for {
		select {
		case rv := <-ch:
			out = append(out, rv)
		default:
			return out
		}
	}
}

func TestWatchResumesFromLastResourceVersion(t *testing.T) {
	f := newFakeAPI()
	f.put("a", nil) // 1
	f.put("b", nil) // 2
	rec := &recorder{}
	inf := run(t, f, Options{}, rec)
	if got, want := rec.untilMarker(t, f, "m1"), []string{"add a@1", "add b@2"}; !slices.Equal(got, want) {
		t.Fatalf("initial calls %q, want %q", got, want)
	}
	f.put("a", nil) // 4
	bm := f.bookmark()
	pollUntil(t, "the bookmark's resourceVersion", func() bool { return inf.LastSyncResourceVersion() == bm })
	drain(f.watches)

	// The apiserver restarts; meanwhile things change.
	f.setDown(true)
	f.put("c", nil) // 6
	f.del("b")      // 7
	f.setDown(false)

	got := rec.untilMarker(t, f, "m2")
	want := []string{"update a@1>4", "add c@6", "delete b@7"}
	if !slices.Equal(got, want) {
		t.Errorf("calls across the restart %q, want %q", got, want)
	}
	for _, rv := range drain(f.watches) {
		if rv != bm {
			t.Errorf("re-watched from %s, want the bookmark's %s", rv, bm)
		}
	}
	if n := f.listCount(); n != 1 {
		t.Errorf("listed %d times, want 1 (a resumable watch needs no relist)", n)
	}
	if _, ok := inf.Get("default/b"); ok {
		t.Error("deleted b is still cached")
	}
}

func TestReplayedEventsAreNotDeliveredTwice(t *testing.T) {
	f := newFakeAPI()
	f.put("a", nil)
	rec := &recorder{}
	run(t, f, Options{}, rec)
	f.put("a", nil) // 2
	f.put("b", nil) // 3
	rec.until(t, func(c string) bool { return c == "add b@3" })

	f.mu.Lock()
	f.replay = 3 // the next watch resends everything from the start
	f.mu.Unlock()
	f.endWatches(apierrors.NewUnavailable("watch ended"))
	if got := rec.untilMarker(t, f, "m"); len(got) != 0 {
		t.Errorf("a replayed stream reached handlers: %q", got)
	}
}

func TestExpiredRelistsAndDiffs(t *testing.T) {
	tests := []struct {
		name   string
		expire func(f *fakeAPI)
	}{
		{"re-watch after a restart is expired", func(f *fakeAPI) {
			f.setDown(true)
			f.put("a", map[string]string{"v": "2"}) // 5
			f.del("b")                              // 6
			f.put("d", nil)                         // 7
			f.compact()
			f.setDown(false)
		}},
		{"live watch ends with Expired", func(f *fakeAPI) {
			f.setHold(true) // the changes below never reach the stream
			f.put("a", map[string]string{"v": "2"})
			f.del("b")
			f.put("d", nil)
			f.compact()
			f.endWatches(apierrors.NewExpired("too old resource version"))
			f.setHold(false)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI()
			f.put("a", nil) // 1
			f.put("b", nil) // 2
			f.put("c", nil) // 3
			rec := &recorder{}
			inf := run(t, f, Options{}, rec)
			rec.untilMarker(t, f, "m1") // 4
			drain(f.watches)

			tc.expire(f)
			pollUntil(t, "the relist", func() bool { return f.listCount() == 2 })

			got := rec.untilMarker(t, f, "m2")
			slices.Sort(got)
			want := []string{"add d@7", "delete b@2", "update a@1>5"}
			if !slices.Equal(got, want) {
				t.Errorf("calls after relist %q, want %q (c unchanged: no call)", got, want)
			}
			if rvs := drain(f.watches); !slices.Contains(rvs, "7") {
				t.Errorf("watches after relist from %q, want one from the list's 7", rvs)
			}
			var names []string
			for _, o := range inf.List() {
				names = append(names, o.GetMetadata().GetName())
			}
			slices.Sort(names)
			if want := []string{"a", "c", "d", "m1", "m2"}; !slices.Equal(names, want) {
				t.Errorf("cache holds %q, want %q", names, want)
			}
		})
	}
}

func TestResyncUpdatesEveryObject(t *testing.T) {
	f := newFakeAPI()
	f.put("a", nil)
	f.put("b", nil)
	rec := &recorder{}
	run(t, f, Options{Resync: 10 * time.Millisecond}, rec)
	for _, want := range []string{"update a@1>1", "update b@2>2"} {
		rec.until(t, func(c string) bool { return c == want })
	}
}

func TestLateHandlerGetsSyntheticAddsAndMayReadTheCache(t *testing.T) {
	f := newFakeAPI()
	f.put("a", nil)
	f.put("b", nil)
	rec := &recorder{}
	inf := run(t, f, Options{}, rec)

	late := &recorder{}
	inf.AddHandler(Handler{OnAdd: func(o scheme.Object) {
		// Handlers run outside the store lock: reading here must not block.
		if _, ok := inf.Get(Key(o)); !ok {
			late.add("missing " + at(o))
			return
		}
		late.add("add " + at(o))
	}})
	f.put("c", nil)
	got := late.until(t, func(c string) bool { return c == "add c@3" })
	slices.Sort(got)
	if want := []string{"add a@1", "add b@2"}; !slices.Equal(got, want) {
		t.Errorf("late handler got %q before c, want %q", got, want)
	}
}

func TestIndexesFollowChanges(t *testing.T) {
	f := newFakeAPI()
	f.put("a", map[string]string{"team": "x"})
	f.put("b", map[string]string{"team": "x"})
	f.put("c", map[string]string{"team": "y"})
	rec := &recorder{}
	inf := run(t, f, Options{Indexers: map[string]IndexFunc{
		"team": func(o scheme.Object) []string { return []string{o.GetMetadata().GetLabels()["team"]} },
	}}, rec)
	f.put("a", map[string]string{"team": "y"})
	f.del("c")
	rec.untilMarker(t, f, "m")

	names := func(objs []scheme.Object) []string {
		var out []string
		for _, o := range objs {
			out = append(out, o.GetMetadata().GetName())
		}
		slices.Sort(out)
		return out
	}
	tests := []struct {
		value string
		want  []string
	}{
		{"x", []string{"b"}},
		{"y", []string{"a"}},
		{"z", nil},
	}
	for _, tc := range tests {
		if got := names(inf.ByIndex("team", tc.value)); !slices.Equal(got, tc.want) {
			t.Errorf("ByIndex(team, %s) = %q, want %q", tc.value, got, tc.want)
		}
	}
	if got, ok := inf.Get("default/a"); !ok || got.GetMetadata().GetResourceVersion() != "4" {
		t.Errorf("Get(default/a) = %v, %v; want resourceVersion 4", got, ok)
	}
}

// testWriter sends the informer's log to the test's, shown when it fails.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
