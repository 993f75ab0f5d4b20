package skiffctl

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// row is one printed object: its name and the resourceVersion printed.
type row struct{ name, rv string }

// rows reads the NAME RV table get -w prints with custom columns.
func rows(out string, prefix string) []row {
	var rs []row
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && strings.HasPrefix(f[0], prefix) {
			rs = append(rs, row{f[0], f[1]})
		}
	}
	return rs
}

// TestGetWatchMissesNoWrite runs get -w while a writer creates and then
// updates 300 config maps. kubectl's output is the list, each object as it
// was at the list's revision, then every later write once, in order: the
// watch must start at the list's own revision.
func TestGetWatchMissesNoWrite(t *testing.T) {
	c := newCluster(t)
	cmKind, _ := scheme.ForResource("", "configmaps")
	cms := client.New(c.s.Conn).Resource(cmKind, "default")
	const n, writers = 300, 4
	// Each writer creates then updates its share of the objects, so every
	// object's writes are in order and the writers together keep the
	// apiserver busy while get -w lists and starts watching.
	var mu sync.Mutex
	var writes []row
	var errs []error
	started, startOnce := make(chan struct{}), sync.Once{}
	var wg sync.WaitGroup
	for wr := range writers {
		wg.Go(func() {
			defer startOnce.Do(func() { close(started) }) // a failed writer: its error ends the test
			for i := wr; i < 2*n; i += writers {
				name := fmt.Sprintf("cm-%03d", i%n)
				var obj scheme.Object
				var err error
				if i < n {
					obj, err = cms.Create(context.Background(), &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": "0"}}, false)
				} else {
					obj, err = cms.Patch(context.Background(), name, "merge", []byte(`{"data":{"v":"1"}}`), "", false)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					writes = append(writes, row{name, obj.GetMetadata().GetResourceVersion()})
				}
				if len(writes) == n/2 || err != nil {
					startOnce.Do(func() { close(started) })
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	<-started
	w := c.start("get", "cm", "-w", "-o", "custom-columns=NAME:.metadata.name,RV:.metadata.resourceVersion")
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	sort.Slice(writes, func(i, j int) bool { return revisionOf(t, writes[i].rv) < revisionOf(t, writes[j].rv) })
	// Events come in revision order: once a last write is printed, all
	// before it were printed or never will be.
	if _, err := cms.Create(context.Background(), &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: "the-end"}}, false); err != nil {
		t.Fatal(err)
	}
	w.waitFor("the last write", func(out string) bool { return strings.Contains(out, "the-end ") })
	if code := w.stop(); code != 0 {
		t.Fatalf("get -w exited %d after Ctrl-C: %s", code, w.err.String())
	}
	out := w.out.String()
	if !strings.HasPrefix(out, "NAME") || strings.Count(out, "NAME") != 1 {
		t.Fatalf("want one header, first:\n%s", out)
	}
	got := rows(out, "cm-")
	// Some split of the writes is the list (state by name) and the watch.
	for listed := 0; listed <= len(writes); listed++ {
		state := map[string]string{}
		for _, wr := range writes[:listed] {
			state[wr.name] = wr.rv
		}
		var want []row
		for name, rv := range state {
			want = append(want, row{name, rv})
		}
		sort.Slice(want, func(i, j int) bool { return want[i].name < want[j].name })
		want = append(want, writes[listed:]...)
		if slices.Equal(got, want) {
			return
		}
	}
	twice := len(got)
	distinct := map[row]bool{}
	for _, r := range got {
		distinct[r] = true
	}
	twice -= len(distinct)
	t.Fatalf("get -w printed %d rows (%d more than once) for %d writes: not the list followed by every later write",
		len(got), twice, len(writes))
}

// TestGetWatchSurvivesAnApiserverRestart: a get -w goes on printing the
// writes made after the apiserver restarted, each once.
func TestGetWatchSurvivesAnApiserverRestart(t *testing.T) {
	c := newCluster(t)
	cm := func(name string) string { return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\n" }
	c.must(cm("before"), "create", "-f", "-")
	w := c.start("get", "cm", "-w", "-o", "name")
	w.waitFor("the listed object", func(out string) bool { return out == "configmap/before\n" })
	c.must(cm("watched"), "create", "-f", "-")
	w.waitFor("the watched object", func(out string) bool { return strings.Contains(out, "configmap/watched\n") })
	c.s.Restart()
	want := "configmap/before\nconfigmap/watched\n"
	for i := range 3 {
		c.must(cm(fmt.Sprintf("after-%d", i)), "create", "-f", "-")
		want += fmt.Sprintf("configmap/after-%d\n", i)
	}
	w.waitFor("the objects created after the restart", func(out string) bool { return strings.Contains(out, "configmap/after-2\n") })
	if code := w.stop(); code != 0 {
		t.Fatalf("get -w exited %d after Ctrl-C: %s", code, w.err.String())
	}
	if out := w.out.String(); out != want {
		t.Fatalf("get -w across a restart printed:\n%s\nwant:\n%s", out, want)
	}
}

// TestGetWatchOfOneObject: get -w TYPE NAME prints the object and then only
// its changes, from the list's revision (a write right after the object is
// printed is not lost); a name that does not exist is NotFound, as kubectl
// says.
func TestGetWatchOfOneObject(t *testing.T) {
	c := newCluster(t)
	c.must("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {v: \"0\"}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n", "create", "-f", "-")
	w := c.start("get", "cm", "a", "-w", "-o", "jsonpath={.metadata.name}={.data.v}{\"\\n\"}")
	w.waitFor("the object", func(out string) bool { return out != "" })
	c.must("", "patch", "cm", "b", "-p", `{"data":{"v":"1"}}`)
	c.must("", "patch", "cm", "a", "-p", `{"data":{"v":"1"}}`)
	w.waitFor("the change", func(out string) bool { return strings.Count(out, "\n") == 2 })
	w.stop()
	if out := w.out.String(); out != "a=0\na=1\n" {
		t.Fatalf("get -w cm a printed %q", out)
	}
	w = c.start("get", "cm", "nope", "-w")
	if code := w.wait(); code != 1 || w.err.String() != "Error from server (NotFound): configmaps \"nope\" not found\n" {
		t.Fatalf("get -w of a missing object: %d %q", code, w.err.String())
	}
}

// TestGetWatchOnlyPrintsChangesOnly: --watch-only lists nothing, then
// prints each change.
func TestGetWatchOnlyPrintsChangesOnly(t *testing.T) {
	c := newCluster(t)
	c.must("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n", "create", "-f", "-")
	w := c.start("get", "cm", "-w", "--watch-only", "-o", "name")
	c.waitWatchers("configmaps", 1) // it prints nothing until a change: wait for its watch
	c.must("", "label", "cm", "b", "x=y")
	w.waitFor("the change", func(out string) bool { return out != "" })
	if code := w.stop(); code != 0 {
		t.Fatalf("get -w exited %d after Ctrl-C: %s", code, w.err.String())
	}
	if out := w.out.String(); out != "configmap/b\n" {
		t.Fatalf("--watch-only printed %q", out)
	}
}

func revisionOf(t *testing.T, rv string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", rv, err)
	}
	return n
}
