package logs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const sample = `2016-10-06T00:17:09.669794202Z stdout F first
2016-10-06T00:17:10.000000000Z stderr F oops
2016-10-06T00:17:11.000000000Z stdout P par
2016-10-06T00:17:11.100000000Z stdout F tial
not a log line
2016-10-06T00:17:12.000000000Z stdout F last
`

func writeLog(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "0.log")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func read(t *testing.T, path string, o Options) (string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := Read(context.Background(), path, o, nil, &out, &errb); err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String()
}

func TestParseCRI(t *testing.T) {
	e, err := ParseCRI([]byte("2016-10-06T00:17:09.669794202Z stdout F hello world\n"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Stream != Stdout || e.Partial || string(e.Message) != "hello world" || e.Time.Nanosecond() != 669794202 {
		t.Errorf("got %+v", e)
	}
	e, err = ParseCRI([]byte("2016-10-06T00:17:09Z stderr P:x part"))
	if err != nil || !e.Partial || e.Stream != Stderr || string(e.Message) != "part" {
		t.Errorf("got %+v, %v", e, err)
	}
	if e, err := ParseCRI([]byte("2016-10-06T00:17:09Z stdout F")); err != nil || len(e.Message) != 0 {
		t.Errorf("empty line: %+v, %v", e, err)
	}
	for _, bad := range []string{"", "nospace", "yesterday stdout F x", "2016-10-06T00:17:09Z stdin F x", "2016-10-06T00:17:09Z stdout X x"} {
		if _, err := ParseCRI([]byte(bad)); err == nil {
			t.Errorf("%q: parsed", bad)
		}
	}
}

func TestReadAllSplitsStreamsAndJoinsPartials(t *testing.T) {
	out, errs := read(t, writeLog(t, sample), AllOptions())
	if out != "first\npartial\nlast\n" {
		t.Errorf("stdout = %q", out)
	}
	if errs != "oops\n" {
		t.Errorf("stderr = %q", errs)
	}
}

func TestTimestamps(t *testing.T) {
	o := AllOptions()
	o.Timestamps = true
	out, _ := read(t, writeLog(t, "2016-10-06T00:17:09.5Z stdout F x\n"), o)
	if out != "2016-10-06T00:17:09.500000000Z x\n" {
		t.Errorf("got %q", out)
	}
}

func TestTail(t *testing.T) {
	p := writeLog(t, sample)
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, ""}, {1, "last\n"}, {3, "tial\nlast\n"}, {100, "first\npartial\nlast\n"}} {
		o := AllOptions()
		o.Tail = tc.n
		if out, _ := read(t, p, o); out != tc.want {
			t.Errorf("tail %d: %q, want %q", tc.n, out, tc.want)
		}
	}
	// Many blocks: the count crosses block boundaries.
	var b strings.Builder
	for i := range 3000 {
		b.WriteString("2016-10-06T00:17:09Z stdout F line " + strings.Repeat("x", i%7) + "\n")
	}
	o := AllOptions()
	o.Tail = 2500
	out, _ := read(t, writeLog(t, b.String()), o)
	if n := strings.Count(out, "\n"); n != 2500 {
		t.Errorf("tail 2500 of 3000: %d lines", n)
	}
}

func TestSinceAndLimitBytes(t *testing.T) {
	p := writeLog(t, sample)
	o := AllOptions()
	o.Since = time.Date(2016, 10, 6, 0, 17, 10, 0, time.UTC)
	out, errs := read(t, p, o)
	if out != "partial\nlast\n" || errs != "oops\n" {
		t.Errorf("since: %q %q", out, errs)
	}
	o = AllOptions()
	o.Bytes = 8
	var all bytes.Buffer
	if err := Read(context.Background(), p, o, nil, &all, &all); err != nil {
		t.Fatal(err)
	}
	if all.String() != "first\noo" {
		t.Errorf("limit 8: %q", all.String())
	}
}

func TestMissingFile(t *testing.T) {
	err := Read(context.Background(), filepath.Join(t.TempDir(), "nope.log"), AllOptions(), nil, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "failed to open log file") {
		t.Errorf("err = %v", err)
	}
}

// syncBuffer is read by the test while Read writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFollowReadsGrowthUntilStopped(t *testing.T) {
	old := pollInterval
	pollInterval = 5 * time.Millisecond
	defer func() { pollInterval = old }()
	p := writeLog(t, "2016-10-06T00:17:09Z stdout F one\n")
	var mu sync.Mutex
	alive := true
	running := func(context.Context) bool { mu.Lock(); defer mu.Unlock(); return alive }
	o := AllOptions()
	o.Follow = true
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Read(context.Background(), p, o, running, out, out) }()

	waitFor(t, func() bool { return out.String() == "one\n" })
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A line written in two pieces is shown once whole.
	f.WriteString("2016-10-06T00:17:10Z stdout F t")
	time.Sleep(20 * time.Millisecond) // let Read hit EOF mid-line
	f.WriteString("wo\n")
	waitFor(t, func() bool { return out.String() == "one\ntwo\n" })
	select {
	case err := <-done:
		t.Fatalf("follow returned early: %v", err)
	default:
	}
	// The container stops after writing a last line: it is read, then Read returns.
	f.WriteString("2016-10-06T00:17:11Z stdout F three\n")
	f.Close()
	mu.Lock()
	alive = false
	mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end when the container stopped")
	}
	if out.String() != "one\ntwo\nthree\n" {
		t.Errorf("got %q", out.String())
	}
}

func TestFollowEndsWithContext(t *testing.T) {
	p := writeLog(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	o := AllOptions()
	o.Follow = true
	done := make(chan error, 1)
	go func() {
		done <- Read(ctx, p, o, func(context.Context) bool { return true }, &bytes.Buffer{}, &bytes.Buffer{})
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after cancel")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestFollowGoesOnAfterRotation: the log is renamed and the runtime opens
// a new one at its path; a follower reads what is left of the old file,
// then the new one.
func TestFollowGoesOnAfterRotation(t *testing.T) {
	old := pollInterval
	pollInterval = 5 * time.Millisecond
	defer func() { pollInterval = old }()
	p := writeLog(t, "2016-10-06T00:17:09Z stdout F one\n")
	var mu sync.Mutex
	alive := true
	running := func(context.Context) bool { mu.Lock(); defer mu.Unlock(); return alive }
	o := AllOptions()
	o.Follow = true
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Read(context.Background(), p, o, running, out, out) }()
	waitFor(t, func() bool { return out.String() == "one\n" })

	// The runtime writes a last line to the renamed file before it reopens.
	rotated, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p, p+".20161006-001710"); err != nil {
		t.Fatal(err)
	}
	rotated.WriteString("2016-10-06T00:17:10Z stdout F two\n")
	rotated.Close()
	if err := os.WriteFile(p, []byte("2016-10-06T00:17:11Z stdout F three\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return out.String() == "one\ntwo\nthree\n" })

	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("2016-10-06T00:17:12Z stdout F four\n")
	f.Close()
	mu.Lock()
	alive = false
	mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end when the container stopped")
	}
	if got, want := out.String(), "one\ntwo\nthree\nfour\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
