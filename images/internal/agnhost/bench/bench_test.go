package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Small enough that every turn ends on its count long before its time
// (5 s over 6 turns), so the counts are exact.
var testBounds = []string{"--workers", "4", "--rounds", "3", "--duration", "5s", "--warmup", "12", "--timeout", "2s"}

// server answers GET / with answer(n), n counting its requests from 1.
func server(t *testing.T, answer func(n int64) (int, string)) (url string, requests *atomic.Int64) {
	t.Helper()
	requests = new(atomic.Int64)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, body := answer(requests.Add(1))
		w.WriteHeader(code)
		io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s.URL + "/", requests
}

func always(body string) func(int64) (int, string) {
	return func(int64) (int, string) { return http.StatusOK, body }
}

func runHTTP(t *testing.T, args ...string) Report {
	t.Helper()
	var stderr bytes.Buffer
	c, err := ParseHTTP(append(args, testBounds...), &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	r, err := RunHTTP(context.Background(), c, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var out bytes.Buffer
	if err := writeReport(&out, r); err != nil {
		t.Fatal(err)
	}
	// The line is what the e2e benchmarks read back.
	var back Report
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("report %q: %v", out.String(), err)
	}
	return back
}

func wantCounts(t *testing.T, what string, r Result, requests, ok, errors, wrong int) {
	t.Helper()
	if r.Requests != requests || r.OK != ok || r.Errors != errors || r.Wrong != wrong {
		t.Errorf("%s: %d requests, %d ok, %d errors (%d wrong), want %d, %d, %d (%d)",
			what, r.Requests, r.OK, r.Errors, r.Wrong, requests, ok, errors, wrong)
	}
	if ok > 0 && (r.Rate <= 0 || r.DurationSeconds <= 0 || r.P50Ms <= 0 || r.P99Ms < r.P50Ms || r.MaxMs < r.P99Ms) {
		t.Errorf("%s: rate %v over %v s, p50 %v p99 %v max %v ms", what, r.Rate, r.DurationSeconds, r.P50Ms, r.P99Ms, r.MaxMs)
	}
}

func TestHTTPCountsEveryRequest(t *testing.T) {
	for _, conn := range []string{"keepalive", "newconn"} {
		t.Run(conn, func(t *testing.T) {
			a, aReqs := server(t, always("pod-a"))
			b, bReqs := server(t, always("pod-b"))
			// The "ClusterIP" alternates between the two backends.
			svc, svcReqs := server(t, func(n int64) (int, string) { return http.StatusOK, []string{"pod-a", "pod-b"}[n%2] })
			r := runHTTP(t, "--direct", "pod-a="+a, "--direct", "pod-b="+b, "--service", svc, "--conn", conn, "--requests", "600", "--wait", "5s")
			wantCounts(t, "direct", r.Direct, 600, 600, 0, 0)
			wantCounts(t, "service", r.Service, 600, 600, 0, 0)
			if r.Kind != "http" || r.Conn != conn || r.Workers != 4 || r.Rounds != 3 || r.RatioPercent <= 0 {
				t.Errorf("report %+v", r)
			}
			// Round-robin over the backends; on top, the warm-up's 12 each
			// and the readiness probes (one straight to each, 20 through
			// the service).
			if got, want := aReqs.Load()+bReqs.Load(), int64(600+12+2); got != want || aReqs.Load() != want/2 {
				t.Errorf("backends got %d + %d requests, want %d in all, half each", aReqs.Load(), bReqs.Load(), want)
			}
			if got := svcReqs.Load(); got != 600+12+20 {
				t.Errorf("service got %d requests, want %d", got, 600+12+20)
			}
		})
	}
}

func TestHTTPWrongBodiesAndFailuresAreErrors(t *testing.T) {
	a, _ := server(t, always("pod-a"))
	// Every third answer is another pod's, every fifth a 503.
	var wrongSent atomic.Int64
	svc, _ := server(t, func(n int64) (int, string) {
		switch {
		case n%3 == 0:
			wrongSent.Add(1)
			return http.StatusOK, "pod-z"
		case n%5 == 0:
			return http.StatusServiceUnavailable, "pod-a"
		}
		return http.StatusOK, "pod-a"
	})
	// --wait 0, since a service answering pod-z would never be ready.
	r := runHTTP(t, "--direct", "pod-a="+a, "--service", svc, "--requests", "600", "--wait", "0")
	wantCounts(t, "direct", r.Direct, 600, 600, 0, 0)
	// Of requests 13 to 612 (after the warm-up's 12): n%3 == 0 200 times,
	// n%5 == 0 but not n%3 80 times.
	wantCounts(t, "service", r.Service, 600, 320, 280, 200)
	if got := int64(r.Service.Wrong + r.Service.WarmupWrong); got != wrongSent.Load() || r.Service.WarmupWrong != 4 {
		t.Errorf("%d wrong answers (%d in the warm-up), want %d (4)", got, r.Service.WarmupWrong, wrongSent.Load())
	}
	if !strings.Contains(r.Service.FirstWrong, `answered "pod-z"`) || r.Service.FirstError == "" {
		t.Errorf("first wrong %q, first error %q", r.Service.FirstWrong, r.Service.FirstError)
	}
}

func TestHTTPWrongBackendStraightIsWrong(t *testing.T) {
	a, _ := server(t, always("pod-a"))
	// pod-b's URL answers as pod-a: every other direct request is wrong.
	r := runHTTP(t, "--direct", "pod-a="+a, "--direct", "pod-b="+a, "--service", a, "--requests", "600", "--wait", "0")
	wantCounts(t, "direct", r.Direct, 600, 300, 300, 300)
	if r.Direct.WarmupWrong != 6 {
		t.Errorf("%d wrong in the warm-up, want 6", r.Direct.WarmupWrong)
	}
}

func TestHTTPWaitsForEveryBackendThroughTheService(t *testing.T) {
	a, _ := server(t, always("pod-a"))
	b, _ := server(t, always("pod-b"))
	// pod-b is reachable through the service only from its 40th request.
	svc, _ := server(t, func(n int64) (int, string) {
		if n < 40 || n%2 == 0 {
			return http.StatusOK, "pod-a"
		}
		return http.StatusOK, "pod-b"
	})
	r := runHTTP(t, "--direct", "pod-a="+a, "--direct", "pod-b="+b, "--service", svc, "--requests", "60", "--wait", "5s")
	wantCounts(t, "service", r.Service, 60, 60, 0, 0)

	// Never: the error says what is missing and which flag bounded it.
	never, _ := server(t, always("pod-a"))
	c, err := ParseHTTP(append([]string{"--direct", "pod-a=" + a, "--direct", "pod-b=" + b, "--service", never, "--wait", "500ms"}, testBounds...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RunHTTP(context.Background(), c, io.Discard); err == nil || !strings.Contains(err.Error(), "--wait") || !strings.Contains(err.Error(), `want ["pod-a" "pod-b"]`) {
		t.Errorf("RunHTTP against a service that never reaches pod-b: %v", err)
	}
}

func TestHTTPFollowsNoRedirect(t *testing.T) {
	elsewhere, elsewhereReqs := server(t, always("pod-a"))
	a, _ := server(t, always("pod-a"))
	redirect := httptest.NewServer(http.RedirectHandler(elsewhere, http.StatusFound))
	t.Cleanup(redirect.Close)
	r := runHTTP(t, "--direct", "pod-a="+a, "--service", redirect.URL+"/", "--requests", "60", "--wait", "0")
	wantCounts(t, "service", r.Service, 60, 0, 60, 0)
	if n := elsewhereReqs.Load(); n != 0 {
		t.Errorf("the redirect's target got %d requests", n)
	}
}

func TestHTTPFlagErrorsNameTheFlag(t *testing.T) {
	ok := []string{"--direct", "pod-a=http://10.244.0.5:8080/hostname", "--service", "http://10.96.0.20/hostname"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--direct is required"},
		{[]string{"--direct", "pod-a=http://10.244.0.5:8080/"}, "--service is required"},
		{[]string{"--direct", "http://10.244.0.5:8080/", "--service", "http://10.96.0.20/"}, "flag -direct: want BODY=URL"},
		{[]string{"--direct", "pod-a=https://10.244.0.5/", "--service", "http://10.96.0.20/"}, "flag -direct: \"https://10.244.0.5/\": want an http:// URL"},
		{[]string{"--direct", "pod-a=http://web.default/", "--service", "http://10.96.0.20/"}, "flag -direct: \"http://web.default/\": want an IP address"},
		{append(ok[:2:2], "--service", "http://web/"), "--service: \"http://web/\": want an IP address"},
		{append(ok, "--conn", "pooled"), `--conn must be keepalive or newconn, got "pooled"`},
		{append(ok, "--workers", "0"), "--workers must be at least 1"},
		{append(ok, "--rounds", "0"), "--rounds must be at least 1"},
		{append(ok, "--requests", "5"), "--requests must be at least 2×--rounds (6)"},
		{append(ok, "--duration", "0s"), "--duration must be positive"},
		{append(ok, "--warmup", "-1"), "--warmup must not be negative"},
		{append(ok, "--timeout", "0s"), "--timeout must be positive"},
		{append(ok, "--wait", "-1s"), "--wait must not be negative"},
		{append(ok, "extra"), "takes no arguments"},
	} {
		_, err := ParseHTTP(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench-http %q: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	if _, err := ParseHTTP(ok, io.Discard); err != nil {
		t.Errorf("bench-http %q: %v", ok, err)
	}
}

// dnsServer answers A queries for name on 127.0.0.1 with answer(n), n
// counting its queries from 1.
func dnsServer(t *testing.T, name string, answer func(n int64) net.IP) (addr string, queries *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	queries = new(atomic.Int64)
	started := make(chan struct{})
	s := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) }, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Name == name && q.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: answer(queries.Add(1))}}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go s.ActivateAndServe()
	<-started
	t.Cleanup(func() { s.Shutdown() })
	return pc.LocalAddr().String(), queries
}

func runDNS(t *testing.T, args ...string) Report {
	t.Helper()
	var stderr bytes.Buffer
	c, err := ParseDNS(append(args, testBounds...), &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	r, err := RunDNS(context.Background(), c, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	return r
}

func TestDNSCountsEveryQueryAndWrongAnswers(t *testing.T) {
	const name = "web.default.svc.cluster.local."
	want, other := net.IPv4(10, 96, 0, 20), net.IPv4(10, 96, 0, 99)
	pod, podQueries := dnsServer(t, name, func(int64) net.IP { return want })
	// The "ClusterIP" gets every fourth answer wrong.
	svc, _ := dnsServer(t, name, func(n int64) net.IP {
		if n%4 == 0 {
			return other
		}
		return want
	})
	r := runDNS(t, "--direct", pod, "--service", svc, "--name", strings.TrimSuffix(name, "."), "--want-a", want.String(), "--queries", "600", "--wait", "0")
	wantCounts(t, "direct", r.Direct, 600, 600, 0, 0)
	// Queries 13 to 612: 150 of them n%4 == 0.
	wantCounts(t, "service", r.Service, 600, 450, 150, 150)
	if r.Service.WarmupWrong != 3 || !strings.Contains(r.Service.FirstWrong, "want A 10.96.0.20") {
		t.Errorf("%d wrong in the warm-up (want 3), first %q", r.Service.WarmupWrong, r.Service.FirstWrong)
	}
	if n := podQueries.Load(); n != 612 {
		t.Errorf("the pod got %d queries, want 612", n)
	}
	if r.Kind != "dns" || r.RatioPercent <= 0 {
		t.Errorf("report %+v", r)
	}
}

func TestDNSWaitsForTheRightAnswer(t *testing.T) {
	const name = "web.default.svc.cluster.local."
	want := net.IPv4(10, 96, 0, 20)
	pod, _ := dnsServer(t, name, func(int64) net.IP { return want })
	// As skiff-dns before its watch has the Service.
	late, _ := dnsServer(t, name, func(n int64) net.IP {
		if n < 4 {
			return net.IPv4(10, 96, 0, 1)
		}
		return want
	})
	r := runDNS(t, "--direct", pod, "--service", late, "--name", name, "--want-a", want.String(), "--queries", "60", "--wait", "5s")
	wantCounts(t, "service", r.Service, 60, 60, 0, 0)
	if r.Service.WarmupWrong != 0 {
		t.Errorf("%d wrong in the warm-up after waiting", r.Service.WarmupWrong)
	}

	// A name the server does not have never becomes ready.
	c, err := ParseDNS(append([]string{"--direct", pod, "--service", pod, "--name", "nope.", "--want-a", want.String(), "--wait", "300ms"}, testBounds...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RunDNS(context.Background(), c, io.Discard); err == nil || !strings.Contains(err.Error(), "NXDOMAIN") {
		t.Errorf("RunDNS for a missing name: %v", err)
	}
}

func TestDNSFlagErrorsNameTheFlag(t *testing.T) {
	ok := []string{"--direct", "10.244.0.3", "--service", "10.96.0.10:53", "--name", "web.default.svc.cluster.local", "--want-a", "10.96.0.20"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{ok[2:], "--direct is required"},
		{append([]string{"--direct", "coredns"}, ok[2:]...), `--direct "coredns": want IP or IP:PORT`},
		{append(ok[:2:2], ok[4:]...), "--service is required"},
		{append(ok[:2:2], append([]string{"--service", "10.96.0.10:0"}, ok[4:]...)...), `--service "10.96.0.10:0"`},
		{ok[:4], "--name is required"},
		{append(ok[:4:4], "--name", "a..b", "--want-a", "10.96.0.20"), "--name \"a..b.\" is not a domain name"},
		{ok[:6], "--want-a is required"},
		{append(ok[:6:6], "--want-a", "fd00::1"), `--want-a "fd00::1" is not an IPv4 address`},
		{append(ok, "--queries", "1"), "--queries must be at least 2×--rounds"},
		{append(ok, "--workers", "-3"), "--workers must be at least 1, got -3"},
	} {
		_, err := ParseDNS(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench-dns %q: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	c, err := ParseDNS(ok, io.Discard)
	if err != nil || c.Direct != "10.244.0.3:53" || c.Name != "web.default.svc.cluster.local." {
		t.Errorf("bench-dns %q: %+v, %v", ok, c, err)
	}
}

// A run stops at its time bound when the count is out of reach.
func TestLoadStopsAtItsDuration(t *testing.T) {
	start := time.Now()
	tl := load(context.Background(), 2, 1<<30, 200*time.Millisecond, func(context.Context, int64) (string, error) {
		time.Sleep(time.Millisecond)
		return "", nil
	})
	if took := time.Since(start); took > time.Second || tl.requests == 0 || tl.requests != tl.ok {
		t.Errorf("took %s for %d requests (%d ok)", took, tl.requests, tl.ok)
	}
	if tl.elapsed < 200*time.Millisecond {
		t.Errorf("elapsed %s, want at least the 200ms bound", tl.elapsed)
	}
}

// portsSeen records the source port of every request a handler is given.
type portsSeen struct {
	mu    sync.Mutex
	ports []int
}

func (p *portsSeen) add(t *testing.T, addr string) {
	_, port, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil {
		t.Errorf("remote address %q", addr)
		return
	}
	p.mu.Lock()
	p.ports = append(p.ports, n)
	p.mu.Unlock()
}

// outside returns the ports seen outside r, and how many were seen.
func (p *portsSeen) outside(r portRange) (out []int, all int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.ports {
		if !r.contains(n) {
			out = append(out, n)
		}
	}
	return out, len(p.ports)
}

func TestEachTargetHasItsOwnSourcePorts(t *testing.T) {
	directPorts, servicePorts, err := halves()
	if err != nil {
		t.Fatal(err)
	}
	if directPorts.hi >= servicePorts.lo {
		t.Fatalf("halves %v and %v overlap", directPorts, servicePorts)
	}
	check := func(what string, seen *portsSeen, r portRange) {
		t.Helper()
		out, all := seen.outside(r)
		if all == 0 {
			t.Errorf("%s: no requests", what)
		}
		if len(out) > 0 {
			t.Errorf("%s: %d of %d requests from ports outside %d-%d, e.g. %d", what, len(out), all, r.lo, r.hi, out[0])
		}
	}

	handler := func(body string, seen *portsSeen) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen.add(t, r.RemoteAddr)
			io.WriteString(w, body)
		}))
		t.Cleanup(s.Close)
		return s
	}
	var podHTTP, svcHTTP portsSeen
	pod, svc := handler("pod-a", &podHTTP), handler("pod-a", &svcHTTP)
	runHTTP(t, "--direct", "pod-a="+pod.URL+"/", "--service", svc.URL+"/", "--conn", "newconn", "--requests", "60", "--wait", "5s")
	check("HTTP straight", &podHTTP, directPorts)
	check("HTTP through the service", &svcHTTP, servicePorts)

	const name = "web.default.svc.cluster.local."
	var podDNS, svcDNS portsSeen
	dnsHandler := func(seen *portsSeen) string {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		started := make(chan struct{})
		s := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) }, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			seen.add(t, w.RemoteAddr().String())
			m := new(dns.Msg)
			m.SetReply(q)
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(10, 96, 0, 20)}}
			w.WriteMsg(m)
		})}
		go s.ActivateAndServe()
		<-started
		t.Cleanup(func() { s.Shutdown() })
		return pc.LocalAddr().String()
	}
	runDNS(t, "--direct", dnsHandler(&podDNS), "--service", dnsHandler(&svcDNS), "--name", name, "--want-a", "10.96.0.20", "--queries", "60", "--wait", "5s")
	check("DNS straight", &podDNS, directPorts)
	check("DNS through the service", &svcDNS, servicePorts)
}
