package informer

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"skiff.dev/proto/scheme"
)

// start runs an informer on f without handlers; stop ends it and returns
// once Run has.
func start(t *testing.T, f *fakeAPI, opts Options) (inf *Informer, stop func()) {
	t.Helper()
	inf = New(f.start(t), opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		inf.Run(ctx)
		close(done)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return inf, stop
}

func waitSynced(t *testing.T, what string, r interface{ HasSynced() bool }) {
	t.Helper()
	pollUntil(t, what, r.HasSynced)
}

func TestSlowHandlerDelaysNeitherOthersNorTheStore(t *testing.T) {
	f := newFakeAPI()
	f.put("a", nil) // 1
	inf, _ := start(t, f, Options{})
	release := make(chan struct{})
	slow := &recorder{}
	slowReg := inf.AddHandler(Handler{OnAdd: func(o scheme.Object) {
		<-release
		slow.add("add " + at(o))
	}})
	fast := &recorder{}
	fastReg := inf.AddHandler(fast.handler())
	waitSynced(t, "the fast handler", fastReg)

	for _, n := range []string{"b", "c", "d"} {
		f.put(n, nil) // 2, 3, 4
	}
	if got, want := fast.untilMarker(t, f, "m"), []string{"add a@1", "add b@2", "add c@3", "add d@4"}; !slices.Equal(got, want) {
		t.Errorf("fast handler got %q, want %q", got, want)
	}
	if _, ok := inf.Get("default/m"); !ok {
		t.Error("the store waited for the slow handler")
	}
	if slowReg.HasSynced() {
		t.Error("slow handler's registration synced before its first object was handled")
	}

	close(release)
	got := slow.until(t, func(c string) bool { return c == "add m@5" })
	if want := []string{"add a@1", "add b@2", "add c@3", "add d@4"}; !slices.Equal(got, want) {
		t.Errorf("slow handler got %q, want the store's order %q", got, want)
	}
	waitSynced(t, "the slow handler", slowReg)
}

func TestRegistrationHasSynced(t *testing.T) {
	f := newFakeAPI()
	f.put("a", nil)
	f.put("b", nil)
	f.put("c", nil)
	inf := New(f.start(t), Options{})
	var early atomic.Int32
	gate := make(chan struct{})
	earlyReg := inf.AddHandler(Handler{OnAdd: func(scheme.Object) {
		<-gate
		early.Add(1)
	}})
	if earlyReg.HasSynced() {
		t.Fatal("registered before Run, synced")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		inf.Run(ctx)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if !inf.WaitForSync(wctx) {
		t.Fatal("informer never synced")
	}
	if earlyReg.HasSynced() {
		t.Error("informer synced and handler blocked, yet its registration synced")
	}
	close(gate)
	waitSynced(t, "the handler added before Run", earlyReg)
	if n := early.Load(); n != 3 {
		t.Errorf("synced after %d adds, want the initial list's 3", n)
	}

	// Joining later: synced once its snapshot is handled.
	var late atomic.Int32
	lateReg := inf.AddHandler(Handler{OnAdd: func(scheme.Object) { late.Add(1) }})
	waitSynced(t, "the handler added after sync", lateReg)
	if n := late.Load(); n != 3 {
		t.Errorf("late handler synced after %d adds, want the snapshot's 3", n)
	}
}

// view replays a handler's calls onto a map, failing on any call that does
// not follow from what the handler saw before: an add of an object it has,
// or an update or delete whose old state is not the one it holds.
type view struct {
	mu   sync.Mutex
	objs map[string]string // name → resourceVersion
	errs []string
}

func (v *view) handler() Handler {
	return Handler{
		OnAdd: func(o scheme.Object) {
			v.mu.Lock()
			defer v.mu.Unlock()
			n := o.GetMetadata().GetName()
			if rv, ok := v.objs[n]; ok {
				v.errs = append(v.errs, fmt.Sprintf("add %s over %s@%s", at(o), n, rv))
			}
			v.objs[n] = o.GetMetadata().GetResourceVersion()
		},
		OnUpdate: func(old, o scheme.Object) {
			v.mu.Lock()
			defer v.mu.Unlock()
			n := o.GetMetadata().GetName()
			if rv := v.objs[n]; rv != old.GetMetadata().GetResourceVersion() {
				v.errs = append(v.errs, fmt.Sprintf("update %s>%s, handler had %q", at(old), o.GetMetadata().GetResourceVersion(), rv))
			}
			v.objs[n] = o.GetMetadata().GetResourceVersion()
		},
		OnDelete: func(o scheme.Object) {
			v.mu.Lock()
			defer v.mu.Unlock()
			n := o.GetMetadata().GetName()
			if _, ok := v.objs[n]; !ok {
				v.errs = append(v.errs, "delete of unseen "+n)
			}
			delete(v.objs, n)
		},
	}
}

func TestHandlersJoiningMidStreamSeeNoGapOrDuplicate(t *testing.T) {
	f := newFakeAPI()
	for n := range 20 {
		f.put(fmt.Sprint("o", n), nil)
	}
	inf, _ := start(t, f, Options{})
	wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !inf.WaitForSync(wctx) {
		t.Fatal("never synced")
	}

	// Handlers join while a writer changes, adds and deletes objects.
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		rnd := rand.New(rand.NewPCG(1, 2))
		for range 2000 {
			n := fmt.Sprint("o", rnd.IntN(30))
			f.mu.Lock()
			_, exists := f.objs[n]
			f.mu.Unlock()
			if exists && rnd.IntN(3) == 0 {
				f.del(n)
			} else {
				f.put(n, nil)
			}
		}
	}()
	var views []*view
	for range 8 {
		v := &view{objs: map[string]string{}}
		views = append(views, v)
		inf.AddHandler(v.handler())
	}
	<-writerDone
	marker := f.put("marker", nil)
	for n, v := range views {
		pollUntil(t, fmt.Sprint("handler ", n, " to see the marker"), func() bool {
			v.mu.Lock()
			defer v.mu.Unlock()
			return v.objs["marker"] == marker
		})
	}
	want := map[string]string{}
	for _, o := range inf.List() {
		want[o.GetMetadata().GetName()] = o.GetMetadata().GetResourceVersion()
	}
	for n, v := range views {
		v.mu.Lock()
		if len(v.errs) > 0 {
			t.Errorf("handler %d: %s", n, strings.Join(v.errs, "; "))
		}
		if !maps.Equal(v.objs, want) {
			t.Errorf("handler %d ended with %v, the store with %v", n, v.objs, want)
		}
		v.mu.Unlock()
	}
}

func TestAddIndexersAfterStart(t *testing.T) {
	f := newFakeAPI()
	f.put("a", map[string]string{"team": "x"})
	f.put("b", map[string]string{"team": "y"})
	rec := &recorder{}
	inf := run(t, f, Options{}, rec)
	team := func(o scheme.Object) []string { return []string{o.GetMetadata().GetLabels()["team"]} }
	if err := inf.AddIndexers(map[string]IndexFunc{"team": team}); err != nil {
		t.Fatal(err)
	}
	byTeam := func(v string) []string {
		var out []string
		for _, o := range inf.ByIndex("team", v) {
			out = append(out, o.GetMetadata().GetName())
		}
		slices.Sort(out)
		return out
	}
	if got := byTeam("x"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("existing objects not indexed: team x has %q", got)
	}
	f.put("b", map[string]string{"team": "x"})
	f.put("c", map[string]string{"team": "y"})
	rec.untilMarker(t, f, "m")
	if got, want := byTeam("x"), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("team x has %q, want %q", got, want)
	}
	if got, want := byTeam("y"), []string{"c"}; !slices.Equal(got, want) {
		t.Errorf("team y has %q, want %q", got, want)
	}

	for _, name := range []string{"team", NamespaceIndex} {
		err := inf.AddIndexers(map[string]IndexFunc{name: team, "other": team})
		if err == nil {
			t.Errorf("adding a second %q index: no error", name)
		}
		if got := inf.ByIndex("other", "x"); len(got) != 0 {
			t.Errorf("a failed AddIndexers still added an index")
		}
	}
}

func TestNamespaceIndexIsBuiltIn(t *testing.T) {
	f := newFakeAPI()
	f.put("a", nil)
	f.put("b", nil)
	inf := run(t, f, Options{}, &recorder{})
	if got := len(inf.ByIndex(NamespaceIndex, "default")); got != 2 {
		t.Errorf("namespace default holds %d objects, want 2", got)
	}
	if got := len(inf.ByIndex(NamespaceIndex, "other")); got != 0 {
		t.Errorf("namespace other holds %d objects, want 0", got)
	}
}

func TestNoHandlerCallAfterRunReturns(t *testing.T) {
	f := newFakeAPI()
	inf, stop := start(t, f, Options{})
	entered := make(chan struct{}, 100)
	release := make(chan struct{})
	var calls atomic.Int32
	inf.AddHandler(Handler{OnAdd: func(scheme.Object) {
		calls.Add(1)
		entered <- struct{}{}
		<-release
	}})
	for _, n := range []string{"a", "b", "c"} {
		f.put(n, nil)
	}
	<-entered // the handler is inside its first call, with two more queued
	pollUntil(t, "the store to hold c", func() bool { _, ok := inf.Get("default/c"); return ok })

	stopped := make(chan struct{})
	go func() {
		stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("Run returned while a handler was still running")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-stopped
	if n := calls.Load(); n != 1 {
		t.Errorf("%d handler calls, want only the one under way when Run was stopped", n)
	}
}
