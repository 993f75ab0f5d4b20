package liveness

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestHealthyForTenSecondsThenFailing(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &clock{t: start}
	ts := httptest.NewServer(Handler(start, c.now))
	defer ts.Close()
	check := func(wantCode int, wantBody string) {
		t.Helper()
		resp, err := http.Get(ts.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantCode || !strings.HasPrefix(string(b), wantBody) {
			t.Errorf("/healthz = %d %q, want %d %q", resp.StatusCode, b, wantCode, wantBody)
		}
	}
	check(200, "ok")
	c.add(10 * time.Second)
	check(200, "ok")
	c.add(time.Millisecond)
	check(500, "error: 10.001")
}

func TestRedirect(t *testing.T) {
	ts := httptest.NewServer(Handler(time.Now(), time.Now))
	defer ts.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(ts.URL + "/redirect?loc=%2Fhealthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/healthz" {
		t.Errorf("/redirect = %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}
