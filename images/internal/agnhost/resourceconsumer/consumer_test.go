package resourceconsumer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

func processCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func post(t *testing.T, srv *httptest.Server, path string, form url.Values) (int, string) {
	t.Helper()
	resp, err := http.PostForm(srv.URL+path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Burning 300 millicores for 1 s costs the process about 0.3 s of CPU, and
// far less than a busy core would.
func TestConsumeCPU(t *testing.T) {
	c := New()
	defer c.Close()
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	before := processCPU(t)
	start := time.Now()
	if code, body := post(t, srv, "/ConsumeCPU?millicores=300&durationSec=1", nil); code != 200 || !strings.Contains(body, "300 millicores") {
		t.Fatalf("ConsumeCPU: %d %q", code, body)
	}
	time.Sleep(50 * time.Millisecond)
	resp, err := http.Get(srv.URL + "/GetCurrentStatus")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(st), `"millicores":300`) {
		t.Errorf("status while consuming: %s", st)
	}
	for c.current() > 0 && time.Since(start) < 5*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	used := processCPU(t) - before
	if used < 200*time.Millisecond || used > 450*time.Millisecond {
		t.Errorf("300 millicores for 1 s used %s of CPU, want about 300ms", used)
	}
	t.Logf("300 millicores for 1 s: %s of CPU over %s", used, time.Since(start).Round(time.Millisecond))
}

func (c *Consumer) current() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.millicores + c.megabytes
}

func TestConsumeMemHolds(t *testing.T) {
	c := New()
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	if code, body := post(t, srv, "/ConsumeMem", url.Values{"megabytes": {"8"}, "durationSec": {"30"}}); code != 200 || !strings.Contains(body, "8 megabytes") {
		t.Fatalf("ConsumeMem: %d %q", code, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.current() != 8 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.current() != 8 {
		t.Fatalf("holding %d MB, want 8", c.current())
	}
	c.Close()
	for c.current() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.current() != 0 {
		t.Errorf("still holding %d after Close", c.current())
	}
}

func TestBadParameters(t *testing.T) {
	c := New()
	defer c.Close()
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	for _, tc := range []struct{ path, want string }{
		{"/ConsumeCPU?durationSec=1", `millicores: "" must be an integer`},
		{"/ConsumeCPU?millicores=-5&durationSec=1", `millicores: "-5"`},
		{"/ConsumeCPU?millicores=100&durationSec=0", `durationSec: "0" must be an integer from 1 to 3600`},
		{"/ConsumeCPU?millicores=100&durationSec=99999", `durationSec: "99999"`},
		{"/ConsumeMem?megabytes=x&durationSec=1", `megabytes: "x"`},
	} {
		if code, body := post(t, srv, tc.path, nil); code != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %q, want 400 with %q", tc.path, code, body, tc.want)
		}
	}
	resp, err := http.Get(srv.URL + "/ConsumeCPU?millicores=1&durationSec=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || c.current() != 0 {
		t.Errorf("GET /ConsumeCPU: %d, consuming %d; want 405 and nothing", resp.StatusCode, c.current())
	}
}
