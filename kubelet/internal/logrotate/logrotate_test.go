package logrotate

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critesting "k8s.io/cri-api/pkg/apis/testing"
	testingclock "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeRuntime is cri-api's fake runtime whose ReopenContainerLog does what
// containerd does: it opens the container's log path again, creating it.
type fakeRuntime struct {
	*critesting.FakeRuntimeService
}

func (f *fakeRuntime) ReopenContainerLog(ctx context.Context, id string) error {
	if err := f.FakeRuntimeService.ReopenContainerLog(ctx, id); err != nil {
		return err
	}
	f.Lock()
	c, ok := f.Containers[id]
	var path string
	if ok {
		path = c.LogPath
	}
	f.Unlock()
	if !ok {
		return errors.New("container not found")
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	return file.Close()
}

func (f *fakeRuntime) reopens() int {
	return strings.Count(strings.Join(f.GetCalls(), ","), "ReopenContainerLog")
}

type env struct {
	dir   string
	rt    *fakeRuntime
	clock *testingclock.FakeClock
	m     *Manager
}

// newEnv has one container per state given, named c0, c1…, logging to
// <dir>/<name>/0.log; MaxSize is 100 bytes.
func newEnv(t *testing.T, states ...runtimeapi.ContainerState) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), rt: &fakeRuntime{critesting.NewFakeRuntimeService()}, clock: testingclock.NewFakeClock(t0)}
	var cs []*critesting.FakeContainer
	for i, st := range states {
		id := "c" + string(rune('0'+i))
		if err := os.Mkdir(filepath.Join(e.dir, id), 0o755); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, &critesting.FakeContainer{ContainerStatus: runtimeapi.ContainerStatus{
			Id: id, State: st, LogPath: e.logPath(id), Metadata: &runtimeapi.ContainerMetadata{Name: id}}})
	}
	e.rt.SetFakeContainers(cs)
	m, err := New(Config{Runtime: e.rt, MaxSize: "100", MaxFiles: DefaultMaxFiles, Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

func (e *env) logPath(id string) string { return filepath.Join(e.dir, id, "0.log") }

// write appends n bytes of line to the container's current log, as the
// runtime does.
func (e *env) write(t *testing.T, id string, line string, n int) {
	t.Helper()
	f, err := os.OpenFile(e.logPath(id), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Repeat(line, n/len(line)+1)[:n]); err != nil {
		t.Fatal(err)
	}
}

func (e *env) files(t *testing.T, id string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.dir, id))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		out = append(out, en.Name())
	}
	return out
}

func (e *env) rotate(t *testing.T) {
	t.Helper()
	if err := e.m.RotateLogs(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		r = gz
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(b)
}

// TestRotationKeepsMaxFiles rotates a chatty container's log six times:
// five files remain, the current one, the newest rotated one as it was,
// and three older ones gzipped; the oldest is gone.
func TestRotationKeepsMaxFiles(t *testing.T) {
	e := newEnv(t, runtimeapi.ContainerState_CONTAINER_RUNNING)
	lines := []string{"a\n", "b\n", "c\n", "d\n", "e\n", "f\n"}
	for _, l := range lines {
		e.write(t, "c0", l, 100)
		e.rotate(t)
		e.clock.Step(DefaultMonitorInterval)
	}
	e.write(t, "c0", "g\n", 10)
	// Rotated at 12:00:00 ("a") … 12:00:50 ("f"): "a" and "b" are gone.
	contents := map[string]string{
		"0.log":                    strings.Repeat("g\n", 5),
		"0.log.20260301-120020.gz": strings.Repeat("c\n", 50),
		"0.log.20260301-120030.gz": strings.Repeat("d\n", 50),
		"0.log.20260301-120040.gz": strings.Repeat("e\n", 50),
		"0.log.20260301-120050":    strings.Repeat("f\n", 50),
	}
	if got, want := e.files(t, "c0"), slices.Sorted(maps.Keys(contents)); !slices.Equal(got, want) {
		t.Fatalf("files %q, want %q", got, want)
	}
	for name, c := range contents {
		if got := read(t, filepath.Join(e.dir, "c0", name)); got != c {
			t.Errorf("%s holds %q, want %q", name, got, c)
		}
	}
	if n := e.rt.reopens(); n != len(lines) {
		t.Errorf("ReopenContainerLog called %d times, want %d", n, len(lines))
	}
}

func TestOnlyLargeLogsOfRunningContainersRotate(t *testing.T) {
	e := newEnv(t, runtimeapi.ContainerState_CONTAINER_RUNNING, runtimeapi.ContainerState_CONTAINER_RUNNING, runtimeapi.ContainerState_CONTAINER_EXITED)
	e.write(t, "c0", "x\n", 99)  // below MaxSize
	e.write(t, "c1", "x\n", 100) // at MaxSize
	e.write(t, "c2", "x\n", 500) // exited: writes nothing more
	e.rotate(t)
	for id, want := range map[string][]string{
		"c0": {"0.log"},
		"c1": {"0.log", "0.log.20260301-120000"},
		"c2": {"0.log"},
	} {
		if got := e.files(t, id); !slices.Equal(got, want) {
			t.Errorf("%s: files %q, want %q", id, got, want)
		}
	}
	if got := read(t, e.logPath("c1")); got != "" {
		t.Errorf("the reopened log holds %q, want it empty", got)
	}
	if n := e.rt.reopens(); n != 1 {
		t.Errorf("ReopenContainerLog called %d times, want 1", n)
	}
}

// TestFailedReopenPutsTheLogBack: the runtime still writes to the file it
// has open, so it goes back to the log's path for the next pass.
func TestFailedReopenPutsTheLogBack(t *testing.T) {
	e := newEnv(t, runtimeapi.ContainerState_CONTAINER_RUNNING)
	e.write(t, "c0", "x\n", 100)
	e.rt.InjectError("ReopenContainerLog", errors.New("container is not running"))
	e.rotate(t)
	if got, want := e.files(t, "c0"), []string{"0.log"}; !slices.Equal(got, want) {
		t.Fatalf("files %q, want %q", got, want)
	}
	if got := read(t, e.logPath("c0")); got != strings.Repeat("x\n", 50) {
		t.Fatalf("the log holds %q after a failed rotation", got)
	}
	e.clock.Step(DefaultMonitorInterval)
	e.rotate(t)
	if got, want := e.files(t, "c0"), []string{"0.log", "0.log.20260301-120010"}; !slices.Equal(got, want) {
		t.Fatalf("files %q, want %q", got, want)
	}
}

func TestMissingLogIsReopened(t *testing.T) {
	e := newEnv(t, runtimeapi.ContainerState_CONTAINER_RUNNING)
	e.rotate(t)
	if _, err := os.Stat(e.logPath("c0")); err != nil {
		t.Fatalf("the missing log was not reopened: %v", err)
	}
	if n := e.rt.reopens(); n != 1 {
		t.Errorf("ReopenContainerLog called %d times, want 1", n)
	}
}

// TestLeftoversOfAnInterruptedRotation: a temporary file and a rotated
// file whose .gz was complete are removed, not counted.
func TestLeftoversOfAnInterruptedRotation(t *testing.T) {
	e := newEnv(t, runtimeapi.ContainerState_CONTAINER_RUNNING)
	dir := filepath.Join(e.dir, "c0")
	gz := func(name, content string) {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		w := gzip.NewWriter(f)
		w.Write([]byte(content))
		w.Close()
		f.Close()
	}
	gz("0.log.20260301-110000.gz", "old\n")
	for name, content := range map[string]string{
		"0.log.20260301-110000":     "old\n",   // compressed already
		"0.log.20260301-110010.tmp": "half",    // a compression cut short
		"0.log.20260301-110010":     "older\n", // to be compressed now
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	e.write(t, "c0", "x\n", 100)
	e.rotate(t)
	want := []string{"0.log", "0.log.20260301-110000.gz", "0.log.20260301-110010.gz", "0.log.20260301-120000"}
	if got := e.files(t, "c0"); !slices.Equal(got, want) {
		t.Fatalf("files %q, want %q", got, want)
	}
	if got := read(t, filepath.Join(dir, "0.log.20260301-110010.gz")); got != "older\n" {
		t.Errorf("compressed %q, want %q", got, "older\n")
	}
}

func TestClean(t *testing.T) {
	e := newEnv(t, runtimeapi.ContainerState_CONTAINER_RUNNING)
	for range 3 {
		e.write(t, "c0", "x\n", 100)
		e.rotate(t)
		e.clock.Step(DefaultMonitorInterval)
	}
	// Another container's log in the same directory is not this one's.
	if err := os.WriteFile(filepath.Join(e.dir, "c0", "1.log"), []byte("next\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Clean(context.Background(), "c0"); err != nil {
		t.Fatal(err)
	}
	if got, want := e.files(t, "c0"), []string{"1.log"}; !slices.Equal(got, want) {
		t.Errorf("files %q after Clean, want %q", got, want)
	}
}

func TestRunRotatesEveryInterval(t *testing.T) {
	e := newEnv(t, runtimeapi.ContainerState_CONTAINER_RUNNING)
	e.write(t, "c0", "x\n", 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.m.Run(ctx) }()
	waitFiles(t, e, 2) // at once
	e.write(t, "c0", "x\n", 100)
	e.clock.Step(DefaultMonitorInterval)
	waitFiles(t, e, 3)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitFiles(t *testing.T, e *env, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.files(t, "c0")) < n {
		if time.Now().After(deadline) {
			t.Fatalf("files %q, want %d", e.files(t, "c0"), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		size  string
		files int
		want  string
	}{
		{DefaultMaxSize, DefaultMaxFiles, ""},
		{"-1", 2, ""}, // disables the rotation
		{DefaultMaxSize, 1, "invalid MaxFiles 1, must be > 1"},
		{"10MB!", 5, `failed to parse container log max size "10MB!"`},
	} {
		err := Validate(tt.size, tt.files)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)) {
			t.Errorf("Validate(%q, %d) = %v, want %q", tt.size, tt.files, err, tt.want)
		}
	}
}
