package component

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestServerHealthAndReadiness(t *testing.T) {
	ready := errors.New("etcd is not answering")
	s := &Server{Registry: prometheus.NewRegistry(), Ready: map[string]func(context.Context) error{
		"etcd": func(context.Context) error { return ready },
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx, l) }()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok" {
		t.Errorf("/healthz %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 500 || !strings.Contains(body, "[-]etcd failed: etcd is not answering") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	ready = nil
	if code, body := get("/readyz"); code != 200 || body != "ok" {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	if code, _ := get("/metrics"); code != 200 {
		t.Errorf("/metrics %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestGroupFirstErrorCancelsTheRest(t *testing.T) {
	g, _ := NewGroup(context.Background())
	g.Go("waits", func(ctx context.Context) error { <-ctx.Done(); return nil })
	g.Go("fails", func(context.Context) error { return errors.New("boom") })
	if err := g.Wait(); err == nil || err.Error() != "fails: boom" {
		t.Fatalf("Wait = %v", err)
	}
}

func TestNewLogger(t *testing.T) {
	var b strings.Builder
	log, err := NewLogger(&b, "json", 1)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello", "k", "v")
	if !strings.Contains(b.String(), `"msg":"hello","k":"v"`) {
		t.Fatalf("json debug log: %s", b.String())
	}
	if _, err := NewLogger(&b, "xml", 0); err == nil {
		t.Fatal("xml format accepted")
	}
}
