package healthcheck

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"skiff.dev/proxy/internal/proxy"
)

var (
	web = proxy.NamespacedName{Namespace: "default", Name: "web"}
	api = proxy.NamespacedName{Namespace: "prod", Name: "api"}
)

// freePort is a port nothing listens on right now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// served is what s serves now.
func served(s *ServiceServer) map[proxy.NamespacedName]uint16 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[proxy.NamespacedName]uint16{}
	for nn, inst := range s.services {
		out[nn] = inst.port
	}
	return out
}

func loopback() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil }

func newServiceServer(t *testing.T, cfg ServiceConfig) *ServiceServer {
	t.Helper()
	if cfg.Family == "" {
		cfg.Family = proxy.IPv4
	}
	if cfg.Addresses == nil {
		cfg.Addresses = loopback
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	s := NewServiceServer(cfg)
	t.Cleanup(s.Close)
	return s
}

type answer struct {
	code   int
	header http.Header
	body   string
}

// probe asks as a load balancer would, on a connection of its own so that
// a closed listener shows as refused.
func probe(port uint16, path string) (answer, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, header: resp.Header, body: string(b)}, err
}

func mustProbe(t *testing.T, port uint16) answer {
	t.Helper()
	a, err := probe(port, "/")
	if err != nil {
		t.Fatalf("probing port %d: %v", port, err)
	}
	return a
}

func refused(t *testing.T, port uint16) {
	t.Helper()
	if _, err := probe(port, "/"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("port %d: %v, want connection refused", port, err)
	}
}

func TestServiceHealthListenersFollowTheServices(t *testing.T) {
	s := newServiceServer(t, ServiceConfig{})
	p1, p2, p3 := freePort(t), freePort(t), freePort(t)
	if err := s.SyncServices(map[proxy.NamespacedName]uint16{web: p1, api: p2}); err != nil {
		t.Fatal(err)
	}
	if a := mustProbe(t, p1); !strings.Contains(a.body, `"name":"web"`) {
		t.Errorf("port %d answers %q, want web's health", p1, a.body)
	}
	if a := mustProbe(t, p2); !strings.Contains(a.body, `"name":"api"`) {
		t.Errorf("port %d answers %q, want api's health", p2, a.body)
	}

	// web goes away, api's port changes: both old listeners close.
	if err := s.SyncServices(map[proxy.NamespacedName]uint16{api: p3}); err != nil {
		t.Fatal(err)
	}
	refused(t, p1)
	refused(t, p2)
	if a := mustProbe(t, p3); !strings.Contains(a.body, `"name":"api"`) {
		t.Errorf("port %d answers %q, want api's health", p3, a.body)
	}

	// The same set again leaves the listener alone.
	s.mu.RLock()
	before := s.services[api]
	s.mu.RUnlock()
	err := s.SyncServices(map[proxy.NamespacedName]uint16{api: p3})
	s.mu.RLock()
	after := s.services[api]
	s.mu.RUnlock()
	if err != nil || after != before {
		t.Errorf("an unchanged sync reopened the listener (err %v)", err)
	}

	// A port one Service gives up, another takes in the same sync.
	if err := s.SyncServices(map[proxy.NamespacedName]uint16{web: p3}); err != nil {
		t.Fatalf("taking over a released port: %v", err)
	}
	if a := mustProbe(t, p3); !strings.Contains(a.body, `"name":"web"`) {
		t.Errorf("port %d answers %q, want web's health", p3, a.body)
	}

	if err := s.SyncServices(nil); err != nil {
		t.Fatal(err)
	}
	refused(t, p3)
	if got := served(s); len(got) != 0 {
		t.Errorf("still serving %v", got)
	}
}

func TestServiceHealthAnswersLikeUpstream(t *testing.T) {
	s := newServiceServer(t, ServiceConfig{Proxy: &Server{Timeout: time.Minute}})
	port := freePort(t)
	if err := s.SyncServices(map[proxy.NamespacedName]uint16{web: port}); err != nil {
		t.Fatal(err)
	}
	check := func(a answer, code int, body, weight string) {
		t.Helper()
		if a.code != code || a.body != body {
			t.Errorf("got %d %s, want %d %s", a.code, a.body, code, body)
		}
		for k, v := range map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff",
			"X-Load-Balancing-Endpoint-Weight": weight} {
			if got := a.header.Get(k); got != v {
				t.Errorf("%s: %q, want %q", k, got, v)
			}
		}
	}
	check(mustProbe(t, port), http.StatusServiceUnavailable,
		`{"service":{"namespace":"default","name":"web"},"localEndpoints":0,"serviceProxyHealthy":true}`, "0")

	s.SyncEndpoints(map[proxy.NamespacedName]int{web: 2, api: 5})
	// Any path: load balancers are configured with one of their own.
	for _, path := range []string{"/", "/healthz", "/some/lb/path?x=1"} {
		a, err := probe(port, path)
		if err != nil {
			t.Fatal(err)
		}
		check(a, http.StatusOK, `{"service":{"namespace":"default","name":"web"},"localEndpoints":2,"serviceProxyHealthy":true}`, "2")
	}

	// A Service left out of the counts has none.
	s.SyncEndpoints(map[proxy.NamespacedName]int{api: 5})
	check(mustProbe(t, port), http.StatusServiceUnavailable,
		`{"service":{"namespace":"default","name":"web"},"localEndpoints":0,"serviceProxyHealthy":true}`, "0")
}

func TestServiceHealthFailsWithTheProxy(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	ph := &Server{Timeout: time.Minute, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}
	s := newServiceServer(t, ServiceConfig{Proxy: ph})
	port := freePort(t)
	if err := s.SyncServices(map[proxy.NamespacedName]uint16{web: port}); err != nil {
		t.Fatal(err)
	}
	s.SyncEndpoints(map[proxy.NamespacedName]int{web: 1})
	ph.Updated("IPv4")
	if a := mustProbe(t, port); a.code != http.StatusOK {
		t.Fatalf("healthy proxy, one endpoint: %d %s", a.code, a.body)
	}
	ph.QueuedUpdate("IPv4")
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	a := mustProbe(t, port)
	if a.code != http.StatusServiceUnavailable ||
		a.body != `{"service":{"namespace":"default","name":"web"},"localEndpoints":1,"serviceProxyHealthy":false}` {
		t.Errorf("proxy behind on its rules: %d %s, want 503 with serviceProxyHealthy false", a.code, a.body)
	}
	if w := a.header.Get("X-Load-Balancing-Endpoint-Weight"); w != "1" {
		t.Errorf("weight %q, want the count still", w)
	}
}

func TestServiceHealthRetriesATakenPort(t *testing.T) {
	s := newServiceServer(t, ServiceConfig{})
	taken, free := freePort(t), freePort(t)
	squatter, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", taken))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	ports := map[proxy.NamespacedName]uint16{web: taken, api: free}
	err = s.SyncServices(ports)
	if err == nil || !strings.Contains(err.Error(), "default/web") || !strings.Contains(err.Error(), fmt.Sprint(taken)) {
		t.Fatalf("binding a taken port: %v, want an error naming the Service and port", err)
	}
	if a := mustProbe(t, free); !strings.Contains(a.body, `"name":"api"`) {
		t.Errorf("the other Service is not served: %q", a.body)
	}
	// Still taken: still an error, nothing else disturbed.
	if err := s.SyncServices(ports); err == nil {
		t.Error("second try on a taken port succeeded")
	}
	squatter.Close()
	if err := s.SyncServices(ports); err != nil {
		t.Fatalf("retry once the port is free: %v", err)
	}
	if a := mustProbe(t, taken); !strings.Contains(a.body, `"name":"web"`) {
		t.Errorf("port %d after the retry answers %q", taken, a.body)
	}
}

// recordingListen opens loopback listeners whatever address it is asked
// for, and notes what was asked, so other addresses can be tested without
// sending them anything.
type recordingListen struct {
	mu     sync.Mutex
	asked  []string
	failOn string
}

func (r *recordingListen) listen(network, addr string) (net.Listener, error) {
	r.mu.Lock()
	r.asked = append(r.asked, network+" "+addr)
	r.mu.Unlock()
	if addr == r.failOn {
		return nil, syscall.EADDRNOTAVAIL
	}
	return net.Listen("tcp4", "127.0.0.1:0")
}

func (r *recordingListen) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.asked
	r.asked = nil
	return out
}

func TestServiceHealthListensOnTheNodePortAddresses(t *testing.T) {
	var mu sync.Mutex
	var addrs []netip.Addr
	var addrErr error
	setAddrs := func(err error, as ...string) {
		mu.Lock()
		defer mu.Unlock()
		addrs, addrErr = nil, err
		for _, a := range as {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
	}
	r := &recordingListen{}
	s := newServiceServer(t, ServiceConfig{Listen: r.listen, Addresses: func() ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		return addrs, addrErr
	}})
	ports := map[proxy.NamespacedName]uint16{web: 30100}

	// Another family's, invalid and repeated addresses are left out.
	setAddrs(nil, "192.168.0.10", "fd00::10", "10.0.0.1", "192.168.0.10", "::ffff:10.0.0.2")
	mu.Lock()
	addrs = append(addrs, netip.Addr{})
	mu.Unlock()
	if err := s.SyncServices(ports); err != nil {
		t.Fatal(err)
	}
	if got, want := r.take(), []string{"tcp4 10.0.0.1:30100", "tcp4 10.0.0.2:30100", "tcp4 192.168.0.10:30100"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("listened on %v, want %v", got, want)
	}
	if err := s.SyncServices(ports); err != nil || len(r.take()) != 0 {
		t.Errorf("same addresses: reopened (err %v)", err)
	}

	// The node's addresses change: the listeners move.
	setAddrs(nil, "192.168.0.11")
	if err := s.SyncServices(ports); err != nil {
		t.Fatal(err)
	}
	if got := r.take(); fmt.Sprint(got) != "[tcp4 192.168.0.11:30100]" {
		t.Errorf("after the address change listened on %v", got)
	}

	// Listing them fails: what is open stays open, nothing crashes.
	setAddrs(errors.New("netlink: no"))
	if err := s.SyncServices(ports); err == nil || served(s)[web] == 0 {
		t.Errorf("failed address listing: err %v, serving %v", err, served(s))
	}

	// No address of the family at all: nothing to listen on, and said so.
	setAddrs(nil, "fd00::10")
	if err := s.SyncServices(ports); err == nil || len(served(s)) != 0 {
		t.Errorf("no IPv4 address: err %v, serving %v", err, served(s))
	}

	// One address of two fails: none of the Service's is kept open.
	setAddrs(nil, "10.0.0.1", "10.0.0.2")
	r.failOn = "10.0.0.2:30100"
	if err := s.SyncServices(ports); err == nil || len(served(s)) != 0 {
		t.Errorf("half the addresses bound: err %v, serving %v", err, served(s))
	}
	r.take()

	// Port 0 is no port.
	r.failOn = ""
	if err := s.SyncServices(map[proxy.NamespacedName]uint16{web: 0}); err != nil || len(r.take()) != 0 || len(served(s)) != 0 {
		t.Errorf("port 0: err %v, serving %v", err, served(s))
	}
}

func TestServiceHealthWildcardPerFamily(t *testing.T) {
	for _, tc := range []struct {
		family proxy.Family
		want   string
	}{{proxy.IPv4, "tcp4 0.0.0.0:30100"}, {proxy.IPv6, "tcp6 [::]:30100"}} {
		r := &recordingListen{}
		s := NewServiceServer(ServiceConfig{Family: tc.family, Listen: r.listen, Logger: slog.New(slog.DiscardHandler)})
		if err := s.SyncServices(map[proxy.NamespacedName]uint16{web: 30100}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if got := r.take(); fmt.Sprint(got) != "["+tc.want+"]" {
			t.Errorf("%s, every address: listened on %v, want %s", tc.family, got, tc.want)
		}
	}
}

func TestServiceHealthBadCountsAndClose(t *testing.T) {
	s := newServiceServer(t, ServiceConfig{})
	port := freePort(t)
	if err := s.SyncServices(map[proxy.NamespacedName]uint16{web: port}); err != nil {
		t.Fatal(err)
	}
	s.SyncEndpoints(map[proxy.NamespacedName]int{web: -3})
	if a := mustProbe(t, port); a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, `"localEndpoints":0`) {
		t.Errorf("negative count: %d %s", a.code, a.body)
	}
	s.Close()
	refused(t, port)
	if err := s.SyncServices(map[proxy.NamespacedName]uint16{web: port}); err != nil || len(served(s)) != 0 {
		t.Errorf("a sync after Close opened %v (err %v)", served(s), err)
	}
	refused(t, port)
}
