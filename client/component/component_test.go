package component

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNewLogger(t *testing.T) {
	tests := []struct {
		format     string
		verbosity  int
		wantDebug  bool
		wantJSON   bool
		wantErrMsg string
	}{
		{format: "", verbosity: 0},
		{format: "text", verbosity: 1, wantDebug: true},
		{format: "json", verbosity: 0, wantJSON: true},
		{format: "json", verbosity: 2, wantDebug: true, wantJSON: true},
		{format: "xml", wantErrMsg: `log format "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := NewLogger(&buf, tt.format, tt.verbosity)
			if tt.wantErrMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrMsg) {
					t.Fatalf("err = %v, want %q", err, tt.wantErrMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("dbg", "k", "v")
			log.Info("hello", "k", "v")
			out := buf.String()
			if got := strings.Contains(out, "dbg"); got != tt.wantDebug {
				t.Errorf("debug line present = %v, want %v:\n%s", got, tt.wantDebug, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			line := lines[len(lines)-1]
			var m map[string]any
			isJSON := json.Unmarshal([]byte(line), &m) == nil
			if isJSON != tt.wantJSON {
				t.Errorf("json = %v, want %v: %s", isJSON, tt.wantJSON, line)
			}
			if tt.wantJSON && (m["msg"] != "hello" || m["k"] != "v") {
				t.Errorf("json line = %s", line)
			}
			if !tt.wantJSON && !strings.Contains(line, "msg=hello k=v") {
				t.Errorf("text line = %q", line)
			}
		})
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "skiff_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	s := &Server{Addr: "127.0.0.1:0", Registry: reg, Ready: map[string]func(context.Context) error{
		"etcd":     func(context.Context) error { return errors.New("etcd down") },
		"informer": func(context.Context) error { return nil },
	}, Health: map[string]func(context.Context) error{
		"deployment-controller": func(context.Context) error { return errors.New("stopped unexpectedly") },
	}}
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	base := "http://" + addr.String()

	if code, body := get(t, base+"/livez"); code != 200 || body != "ok" {
		t.Errorf("/livez = %d %q, want 200 ok", code, body)
	}
	code, body := get(t, base+"/healthz")
	if code != 500 || !strings.Contains(body, "[-]deployment-controller failed: stopped unexpectedly") || !strings.Contains(body, "healthz check failed") {
		t.Errorf("/healthz with a failing check = %d %q", code, body)
	}
	code, body = get(t, base+"/readyz")
	if code != 500 || !strings.Contains(body, "[-]etcd failed: etcd down") || !strings.Contains(body, "[+]informer ok") {
		t.Errorf("/readyz with a failing check = %d %q", code, body)
	}
	code, body = get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "skiff_test_total 3") {
		t.Errorf("/metrics = %d, body lacks the counter:\n%s", code, body)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Errorf("/debug/pprof/ without Profiling = %d, want 404", code)
	}
	prof := httptest.NewServer((&Server{Profiling: true}).Handler())
	defer prof.Close()
	if code, _ := get(t, prof.URL+"/debug/pprof/"); code != 200 {
		t.Errorf("/debug/pprof/ with Profiling = %d, want 200", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Start after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after cancel")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("server still answers after shutdown")
	}
}

func TestServerReadyWhenChecksPass(t *testing.T) {
	s := &Server{Addr: "127.0.0.1:0", Ready: map[string]func(context.Context) error{
		"etcd": func(context.Context) error { return nil },
	}}
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Start(ctx)
	if code, body := get(t, "http://"+addr.String()+"/readyz"); code != 200 || body != "ok" {
		t.Errorf("/readyz = %d %q, want 200 ok", code, body)
	}
}

func TestServerPortInUse(t *testing.T) {
	a := &Server{Addr: "127.0.0.1:0"}
	addr, err := a.Listen()
	if err != nil {
		t.Fatal(err)
	}
	b := &Server{Addr: addr.String()}
	if err := b.Start(context.Background()); err == nil {
		t.Error("Start on a taken port returned nil")
	}
}

func TestGroup(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		fns     map[string]func(ctx context.Context) error
		wantErr string
	}{
		{
			name: "first error cancels the rest and is returned",
			fns: map[string]func(ctx context.Context) error{
				"failer": func(context.Context) error { return boom },
				"waiter": func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			},
			wantErr: "failer: boom",
		},
		{
			name: "a nil return also stops the others",
			fns: map[string]func(ctx context.Context) error{
				"quitter": func(context.Context) error { return nil },
				"waiter":  func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			},
		},
		{
			name: "an error during shutdown is kept",
			fns: map[string]func(ctx context.Context) error{
				"quitter": func(context.Context) error { return nil },
				"flusher": func(ctx context.Context) error { <-ctx.Done(); return boom },
			},
			wantErr: "flusher: boom",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := NewGroup(context.Background())
			for n, fn := range tt.fns {
				g.Go(n, fn)
			}
			errc := make(chan error, 1)
			go func() { errc <- g.Wait() }()
			select {
			case err := <-errc:
				got := ""
				if err != nil {
					got = err.Error()
				}
				if got != tt.wantErr {
					t.Errorf("Wait = %q, want %q", got, tt.wantErr)
				}
				if tt.wantErr != "" && !errors.Is(err, boom) {
					t.Errorf("Wait error does not wrap the cause: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Wait did not return")
			}
		})
	}
}

func TestGroupParentCancel(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	g, ctx := NewGroup(parent)
	g.Go("waiter", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	cancel()
	if err := g.Wait(); err != nil {
		t.Errorf("Wait after parent cancel = %v, want nil", err)
	}
	if ctx.Err() == nil {
		t.Error("group context not cancelled")
	}
}

func TestSignalContext(t *testing.T) {
	ctx, cancel := SignalContext()
	defer cancel()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not cancelled by SIGTERM")
	}
}

// A Gatherer, when set, is what /metrics serves: several registries merged.
func TestMetricsFromAGatherer(t *testing.T) {
	a, b := prometheus.NewRegistry(), prometheus.NewRegistry()
	for i, r := range []*prometheus.Registry{a, b} {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: fmt.Sprintf("skiff_test_%d_total", i), Help: "test"})
		r.MustRegister(c)
		c.Inc()
	}
	srv := httptest.NewServer((&Server{Gatherer: prometheus.Gatherers{a, b}}).Handler())
	defer srv.Close()
	code, body := get(t, srv.URL+"/metrics")
	if code != 200 || !strings.Contains(body, "skiff_test_0_total 1") || !strings.Contains(body, "skiff_test_1_total 1") {
		t.Errorf("/metrics = %d, want both registries' counters:\n%s", code, body)
	}
}
