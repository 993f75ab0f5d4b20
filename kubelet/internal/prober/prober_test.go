package prober

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// events is a Recorder that never blocks the workers.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) Event(_ scheme.Object, eventtype, reason, message string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, eventtype+" "+reason+" "+message)
}

func (e *events) Eventf(obj scheme.Object, eventtype, reason, format string, args ...any) {
	e.Event(obj, eventtype, reason, fmt.Sprintf(format, args...))
}

func (e *events) has(s string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, x := range e.list {
		if x == s {
			return true
		}
	}
	return false
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.list...)
}

// newManager ticks probes every 10 ms per periodSecond.
func newManager(t *testing.T, exec Exec, now func() time.Time) (*Manager, *events) {
	t.Helper()
	ev := &events{}
	m := New(exec, ev, now)
	m.unit = 10 * time.Millisecond
	t.Cleanup(m.Close)
	return m, ev
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func intPort(p int) *metav1.IntOrString { return &metav1.IntOrString{IntVal: int32(p)} }

func namedPort(n string) *metav1.IntOrString { return &metav1.IntOrString{Type: 1, StrVal: n} }

func execProbe(cmd ...string) *corev1.Probe {
	return &corev1.Probe{Handler: &corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: cmd}}, PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
}

func newPod(uid string, c ...*corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: "p-" + uid, Namespace: "default", Uid: uid},
		Spec:     &corev1.PodSpec{Containers: c, RestartPolicy: "Always"},
	}
}

func serverPort(t *testing.T, rawURL string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(strings.TrimPrefix(rawURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// fakeExec answers exec probes with the exit code codes returns for the
// container and counts calls per container ID.
type fakeExec struct {
	mu    sync.Mutex
	calls map[string]int
	code  func(containerID string, cmd []string) int32
}

func (f *fakeExec) exec(_ context.Context, id string, cmd []string, _ time.Duration) ([]byte, []byte, int32, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[id+" "+strings.Join(cmd, " ")]++
	code := f.code
	f.mu.Unlock()
	c := code(id, cmd)
	if c != 0 {
		return []byte("boom"), nil, c, nil
	}
	return []byte("ok"), nil, 0, nil
}

func (f *fakeExec) count(id string, cmd ...string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id+" "+strings.Join(cmd, " ")]
}

func TestNoProbes(t *testing.T) {
	m, _ := newManager(t, nil, nil)
	if !m.Ready("unknown", "c") || !m.Started("unknown", "c") {
		t.Error("a pod the manager does not know has no probes: want ready and started")
	}
	m.AddPod(newPod("u1", &corev1.Container{Name: "c"}))
	m.UpdateContainer("u1", "c", "containerd://a", time.Now(), "127.0.0.1")
	if !m.Ready("u1", "c") || !m.Started("u1", "c") {
		t.Error("running container without probes: want ready and started")
	}
	m.UpdateContainer("u1", "c", "", time.Time{}, "127.0.0.1")
	if m.Ready("u1", "c") || m.Started("u1", "c") {
		t.Error("container not running: want neither ready nor started")
	}
}

func TestReadinessHTTP(t *testing.T) {
	var code atomic.Int32
	code.Store(200)
	type seen struct{ path, ua, host, custom, accept string }
	got := make(chan seen, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- seen{r.URL.RequestURI(), r.UserAgent(), r.Host, r.Header.Get("X-Custom"), r.Header.Get("Accept")}:
		default:
		}
		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()

	m, ev := newManager(t, nil, nil)
	probe := &corev1.Probe{
		Handler: &corev1.ProbeHandler{HttpGet: &corev1.HTTPGetAction{
			Path: "/healthz?x=1", Port: namedPort("http"),
			HttpHeaders: []*corev1.HTTPHeader{{Name: "X-Custom", Value: "v"}, {Name: "Host", Value: "example.test"}},
		}},
		PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 2,
	}
	c := &corev1.Container{Name: "web", ReadinessProbe: probe, Ports: []*corev1.ContainerPort{{Name: "http", ContainerPort: int32(serverPort(t, srv.URL))}}}
	m.AddPod(newPod("u1", c))
	if m.Ready("u1", "web") {
		t.Fatal("ready before any probe")
	}
	m.UpdateContainer("u1", "web", "containerd://a", time.Now(), "127.0.0.1")
	select {
	case uid := <-m.Updates():
		if uid != "u1" {
			t.Fatalf("update for %q, want u1", uid)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no readiness update")
	}
	eventually(t, "ready", func() bool { return m.Ready("u1", "web") })
	s := <-got
	if want := (seen{"/healthz?x=1", "kube-probe/1.37", "example.test", "v", "*/*"}); s != want {
		t.Errorf("request %+v, want %+v", s, want)
	}

	go func() { // drain: each change is announced
		for range m.Updates() {
		}
	}()
	code.Store(500)
	eventually(t, "not ready after failureThreshold failures", func() bool { return !m.Ready("u1", "web") })
	if want := "Warning Unhealthy Readiness probe failed: HTTP probe failed with statuscode: 500"; !ev.has(want) {
		t.Errorf("events %q, want %q", ev.all(), want)
	}
	code.Store(200)
	eventually(t, "ready again", func() bool { return m.Ready("u1", "web") })

	// A restarted container is not ready until its own probe succeeds.
	code.Store(503)
	m.UpdateContainer("u1", "web", "containerd://b", time.Now(), "127.0.0.1")
	if m.Ready("u1", "web") {
		t.Error("new container ready before its first probe")
	}
}

func TestHTTPProbe(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "fine") })
	mux.HandleFunc("/local", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	// Never contacted: the probe stops at a redirect to another host.
	mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://elsewhere.invalid/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/bad", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	port := serverPort(t, srv.URL)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	m, _ := newManager(t, nil, nil)
	for _, tc := range []struct {
		path string
		port int
		want outcome
		out  string
	}{
		{"/ok", port, oSuccess, "fine"},
		{"/local", port, oSuccess, "fine"},
		{"/away", port, oWarning, "Probe terminated redirects, Response body: <a href=\"http://elsewhere.invalid/\">Moved Permanently</a>.\n\n"},
		{"/bad", port, oFailure, "HTTP probe failed with statuscode: 404"},
		{"/loop", port, oFailure, "stopped after 10 redirects"},
		{"/ok", closedPort, oFailure, "connection refused"},
	} {
		p := &corev1.Probe{Handler: &corev1.ProbeHandler{HttpGet: &corev1.HTTPGetAction{Path: tc.path, Port: intPort(tc.port), Scheme: "HTTP"}}}
		res, out, err := m.runProbe(context.Background(), p, &corev1.Container{}, "id", "127.0.0.1")
		if err != nil {
			t.Errorf("%s: error %v", tc.path, err)
		}
		if res != tc.want || !strings.Contains(out, tc.out) {
			t.Errorf("%s on %d: %v %q, want %v %q", tc.path, tc.port, res, out, tc.want, tc.out)
		}
	}
}

func TestTCPProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	m, _ := newManager(t, nil, nil)
	p := &corev1.Probe{Handler: &corev1.ProbeHandler{TcpSocket: &corev1.TCPSocketAction{Port: intPort(port), Host: "127.0.0.1"}}}
	if res, out, err := m.runProbe(context.Background(), p, &corev1.Container{}, "id", ""); res != oSuccess || err != nil {
		t.Errorf("listening: %v %q %v, want success", res, out, err)
	}
	l.Close()
	if res, out, err := m.runProbe(context.Background(), p, &corev1.Container{}, "id", ""); res != oFailure || err != nil || !strings.Contains(out, "connection refused") {
		t.Errorf("closed: %v %q %v, want failure: connection refused", res, out, err)
	}
}

func TestGRPCProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("db", healthpb.HealthCheckResponse_NOT_SERVING)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(l)
	defer srv.Stop()
	bare, _ := net.Listen("tcp", "127.0.0.1:0")
	bareSrv := grpc.NewServer() // no health service
	go bareSrv.Serve(bare)
	defer bareSrv.Stop()

	port := int32(l.Addr().(*net.TCPAddr).Port)
	svc := func(s string) *string { return &s }
	m, _ := newManager(t, nil, nil)
	for _, tc := range []struct {
		name    string
		port    int32
		service *string
		want    outcome
		out     string
	}{
		{"serving", port, nil, oSuccess, "service is healthy"},
		{"not serving", port, svc("db"), oFailure, `service unhealthy (responded with "NOT_SERVING")`},
		{"unknown service", port, svc("nope"), oFailure, "error: health rpc probe failed"},
		{"no health service", int32(bare.Addr().(*net.TCPAddr).Port), nil, oFailure, "this server does not implement the grpc health protocol (grpc.health.v1.Health)"},
	} {
		p := &corev1.Probe{Handler: &corev1.ProbeHandler{Grpc: &corev1.GRPCAction{Port: tc.port, Service: tc.service}}}
		res, out, err := m.runProbe(context.Background(), p, &corev1.Container{}, "id", "127.0.0.1")
		if res != tc.want || err != nil || !strings.Contains(out, tc.out) {
			t.Errorf("%s: %v %q %v, want %v %q", tc.name, res, out, err, tc.want, tc.out)
		}
	}
}

func TestExecProbe(t *testing.T) {
	var gotCmd []string
	var gotTimeout time.Duration
	exec := func(ctx context.Context, id string, cmd []string, timeout time.Duration) ([]byte, []byte, int32, error) {
		gotCmd, gotTimeout = cmd, timeout
		switch cmd[0] {
		case "fail":
			return []byte("out "), []byte("err"), 1, nil
		case "hang":
			// What ExecSync answers once its timeout passed.
			return nil, nil, 0, status.Error(codes.DeadlineExceeded, "context deadline exceeded")
		case "slow":
			return nil, nil, 0, fmt.Errorf("exec: %w", context.DeadlineExceeded)
		case "broken":
			return nil, nil, 0, fmt.Errorf("no such container %s", id)
		}
		return []byte("fine"), nil, 0, nil
	}
	m, _ := newManager(t, exec, nil)
	c := &corev1.Container{Env: []*corev1.EnvVar{{Name: "FILE", Value: "/tmp/ok"}}}
	for _, tc := range []struct {
		cmd     []string
		want    outcome
		out     string
		wantErr bool
	}{
		{[]string{"cat", "$(FILE)", "$(MISSING)", "$$(FILE)"}, oSuccess, "fine", false},
		{[]string{"fail"}, oFailure, "out err", false},
		{[]string{"hang", "x"}, oFailure, `command "hang x" timed out`, false},
		{[]string{"slow"}, oFailure, `command "slow" timed out`, false},
		{[]string{"broken"}, oUnknown, "", true},
	} {
		p := &corev1.Probe{Handler: &corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: tc.cmd}}, TimeoutSeconds: 1}
		res, out, err := m.runProbe(context.Background(), p, c, "containerd://a", "")
		if res != tc.want || out != tc.out || (err != nil) != tc.wantErr {
			t.Errorf("%v: %v %q %v, want %v %q (error %v)", tc.cmd, res, out, err, tc.want, tc.out, tc.wantErr)
		}
	}
	if want := []string{"broken"}; strings.Join(gotCmd, " ") != strings.Join(want, " ") || gotTimeout != time.Second {
		t.Errorf("last exec %q timeout %v", gotCmd, gotTimeout)
	}
	// $(VAR) from the literal env, $$ escapes, unknown kept.
	if got := expand([]string{"cat", "$(FILE)", "$(MISSING)", "$$(FILE)", "a$b", "$(open"}, c.Env); strings.Join(got, "|") != "cat|/tmp/ok|$(MISSING)|$(FILE)|a$b|$(open" {
		t.Errorf("expand: %q", got)
	}
}

func TestResolvePort(t *testing.T) {
	c := &corev1.Container{Ports: []*corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}
	for _, tc := range []struct {
		port *metav1.IntOrString
		want int
		err  string
	}{
		{intPort(80), 80, ""},
		{namedPort("http"), 8080, ""},
		{namedPort("9090"), 9090, ""},
		{namedPort("grpc"), 0, "port grpc not found"},
		{intPort(0), 0, "invalid port number: 0"},
		{intPort(70000), 0, "invalid port number: 70000"},
	} {
		got, err := resolvePort(tc.port, c)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%v: error %v, want %q", tc.port, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: %d %v, want %d", tc.port, got, err, tc.want)
		}
	}
}

func TestLivenessFailureDeliveredOncePerRun(t *testing.T) {
	fe := &fakeExec{code: func(string, []string) int32 { return 1 }}
	m, ev := newManager(t, fe.exec, nil)
	probe := execProbe("check")
	probe.FailureThreshold = 3
	grace := int64(7)
	probe.TerminationGracePeriodSeconds = &grace
	m.AddPod(newPod("u1", &corev1.Container{Name: "app", LivenessProbe: probe}))
	m.UpdateContainer("u1", "app", "containerd://a", time.Now(), "127.0.0.1")

	var f LivenessFailure
	select {
	case f = <-m.Liveness():
	case <-time.After(5 * time.Second):
		t.Fatal("no liveness failure")
	}
	want := LivenessFailure{PodUID: "u1", Container: "app", ContainerID: "containerd://a", Probe: "Liveness",
		Message: "Container app failed liveness probe, will be restarted", GracePeriodSeconds: &grace}
	if f.PodUID != want.PodUID || f.Container != want.Container || f.ContainerID != want.ContainerID || f.Probe != want.Probe ||
		f.Message != want.Message || f.GracePeriodSeconds == nil || *f.GracePeriodSeconds != 7 {
		t.Errorf("got %+v, want %+v", f, want)
	}
	if n := fe.count("containerd://a", "check"); n != 3 {
		t.Errorf("%d probes before the failure, want failureThreshold 3", n)
	}
	if !ev.has("Warning Unhealthy Liveness probe failed: boom") {
		t.Errorf("events %q", ev.all())
	}
	// On hold: the same container is not probed again, nothing more comes.
	time.Sleep(100 * time.Millisecond) // ten periods
	if n := fe.count("containerd://a", "check"); n != 3 {
		t.Errorf("%d probes of a container already reported, want 3", n)
	}
	select {
	case f := <-m.Liveness():
		t.Fatalf("second delivery %+v for the same failure run", f)
	default:
	}
	// The restarted container is probed afresh.
	m.UpdateContainer("u1", "app", "containerd://b", time.Now(), "127.0.0.1")
	select {
	case f = <-m.Liveness():
		if f.ContainerID != "containerd://b" {
			t.Errorf("second failure for %q, want containerd://b", f.ContainerID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no liveness failure for the restarted container")
	}
}

func TestStartupGatesOtherProbes(t *testing.T) {
	var up atomic.Bool
	fe := &fakeExec{code: func(_ string, cmd []string) int32 {
		if cmd[0] == "started" && !up.Load() {
			return 1
		}
		return 0
	}}
	m, _ := newManager(t, fe.exec, nil)
	st := execProbe("started")
	st.FailureThreshold = 1000
	m.AddPod(newPod("u1", &corev1.Container{Name: "app", StartupProbe: st, LivenessProbe: execProbe("alive"), ReadinessProbe: execProbe("ready")}))
	m.UpdateContainer("u1", "app", "containerd://a", time.Now(), "127.0.0.1")
	go func() {
		for range m.Updates() {
		}
	}()
	eventually(t, "startup probing", func() bool { return fe.count("containerd://a", "started") >= 5 })
	if m.Started("u1", "app") || m.Ready("u1", "app") {
		t.Error("started or ready while the startup probe fails")
	}
	if n, r := fe.count("containerd://a", "alive"), fe.count("containerd://a", "ready"); n+r != 0 {
		t.Errorf("liveness ran %d and readiness %d times before startup succeeded", n, r)
	}
	up.Store(true)
	eventually(t, "started and ready", func() bool { return m.Started("u1", "app") && m.Ready("u1", "app") })
	eventually(t, "liveness probing", func() bool { return fe.count("containerd://a", "alive") > 0 })
	// Startup probing stops once the container started.
	n := fe.count("containerd://a", "started")
	time.Sleep(50 * time.Millisecond)
	if m := fe.count("containerd://a", "started"); m != n {
		t.Errorf("startup probe ran %d more times after success", m-n)
	}
}

func TestStartupFailureRestarts(t *testing.T) {
	fe := &fakeExec{code: func(string, []string) int32 { return 1 }}
	m, ev := newManager(t, fe.exec, nil)
	st := execProbe("started")
	st.FailureThreshold = 2
	m.AddPod(newPod("u1", &corev1.Container{Name: "app", StartupProbe: st}))
	m.UpdateContainer("u1", "app", "containerd://a", time.Now(), "127.0.0.1")
	go func() {
		for range m.Updates() {
		}
	}()
	select {
	case f := <-m.Liveness():
		if f.Probe != "Startup" || f.ContainerID != "containerd://a" || f.Message != "Container app failed startup probe, will be restarted" {
			t.Errorf("got %+v", f)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no restart for a failed startup probe")
	}
	if !ev.has("Warning Unhealthy Startup probe failed: boom") {
		t.Errorf("events %q", ev.all())
	}
}

// A scripted exec answers each probe as the test says, so thresholds are
// checked step by step.
func TestSuccessAndFailureThresholds(t *testing.T) {
	calls := make(chan chan int32)
	exec := func(ctx context.Context, _ string, _ []string, _ time.Duration) ([]byte, []byte, int32, error) {
		reply := make(chan int32)
		select {
		case calls <- reply:
		case <-ctx.Done():
			return nil, nil, 0, ctx.Err()
		}
		select {
		case code := <-reply:
			return nil, nil, code, nil
		case <-ctx.Done():
			return nil, nil, 0, ctx.Err()
		}
	}
	m, _ := newManager(t, exec, nil)
	p := execProbe("check")
	p.SuccessThreshold, p.FailureThreshold = 2, 2
	m.AddPod(newPod("u1", &corev1.Container{Name: "app", ReadinessProbe: p}))
	go func() {
		for range m.Updates() {
		}
	}()
	m.UpdateContainer("u1", "app", "containerd://a", time.Now(), "127.0.0.1")
	// Each step: the exit code to answer, and readiness once the worker
	// has taken it in (seen at the next call).
	steps := []struct {
		code  int32
		ready bool
	}{
		{0, false}, {1, false}, {0, false}, {0, true}, {1, true}, {0, true}, {1, true}, {1, false}, {0, false}, {0, true},
	}
	for i, s := range steps {
		reply := <-calls
		// The worker took the previous answer in before probing again.
		if i > 0 && m.Ready("u1", "app") != steps[i-1].ready {
			t.Fatalf("after step %d (exit %d): ready %v, want %v", i-1, steps[i-1].code, !steps[i-1].ready, steps[i-1].ready)
		}
		reply <- s.code
	}
	reply := <-calls
	if last := steps[len(steps)-1]; m.Ready("u1", "app") != last.ready {
		t.Fatalf("after the last step: ready %v, want %v", !last.ready, last.ready)
	}
	reply <- 0
}

func TestInitialDelay(t *testing.T) {
	// The injected clock decides when initialDelaySeconds is over.
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var offset atomic.Int64
	now := func() time.Time { return start.Add(time.Duration(offset.Load())) }
	fe := &fakeExec{code: func(string, []string) int32 { return 0 }}
	m, _ := newManager(t, fe.exec, now)
	p := execProbe("ready")
	p.InitialDelaySeconds = 5 // 50 ms at the tests' 10 ms per second
	m.AddPod(newPod("u1", &corev1.Container{Name: "app", ReadinessProbe: p}))
	go func() {
		for range m.Updates() {
		}
	}()
	m.UpdateContainer("u1", "app", "containerd://a", start, "127.0.0.1")
	time.Sleep(150 * time.Millisecond) // fifteen periods, all inside the delay by the clock
	if n := fe.count("containerd://a", "ready"); n != 0 || m.Ready("u1", "app") {
		t.Fatalf("probed %d times (ready %v) within initialDelaySeconds", n, m.Ready("u1", "app"))
	}
	offset.Store(int64(5 * m.unit))
	eventually(t, "ready after the delay", func() bool { return m.Ready("u1", "app") })
}

func TestDeletionStopsLivenessNotReadiness(t *testing.T) {
	var failing atomic.Bool
	fe := &fakeExec{code: func(_ string, cmd []string) int32 {
		if failing.Load() {
			return 1
		}
		return 0
	}}
	m, _ := newManager(t, fe.exec, nil)
	pod := newPod("u1", &corev1.Container{Name: "app", LivenessProbe: execProbe("alive"), ReadinessProbe: execProbe("ready")})
	m.AddPod(pod)
	go func() {
		for range m.Updates() {
		}
	}()
	m.UpdateContainer("u1", "app", "containerd://a", time.Now(), "127.0.0.1")
	eventually(t, "ready", func() bool { return m.Ready("u1", "app") })

	deleted := newPod("u1", pod.Spec.Containers...)
	deleted.Metadata.DeletionTimestamp = metav1.NewTime(time.Now())
	m.AddPod(deleted)
	failing.Store(true)
	eventually(t, "not ready while terminating", func() bool { return !m.Ready("u1", "app") })
	alive := fe.count("containerd://a", "alive")
	time.Sleep(50 * time.Millisecond) // five periods
	if n := fe.count("containerd://a", "alive"); n != alive {
		t.Errorf("liveness probed %d more times on a deleted pod", n-alive)
	}
	select {
	case f := <-m.Liveness():
		t.Errorf("restart %+v asked for a pod being deleted", f)
	default:
	}
}

func TestRemovePodStopsWorkers(t *testing.T) {
	fe := &fakeExec{code: func(string, []string) int32 { return 0 }}
	m, _ := newManager(t, fe.exec, nil)
	m.AddPod(newPod("u1", &corev1.Container{Name: "app", ReadinessProbe: execProbe("ready")}))
	go func() {
		for range m.Updates() {
		}
	}()
	m.UpdateContainer("u1", "app", "containerd://a", time.Now(), "127.0.0.1")
	eventually(t, "ready", func() bool { return m.Ready("u1", "app") })
	m.mu.Lock()
	w := m.workers[key{"u1", "app", readiness}]
	m.mu.Unlock()
	m.RemovePod("u1")
	<-w.ctx.Done()
	m.mu.Lock()
	n := len(m.workers) + len(m.pods)
	m.mu.Unlock()
	if n != 0 {
		t.Errorf("%d workers or pods left after RemovePod", n)
	}
	// A later UpdateContainer for the removed pod starts nothing.
	m.UpdateContainer("u1", "app", "containerd://b", time.Now(), "127.0.0.1")
	if fe.count("containerd://b", "ready") != 0 {
		t.Error("probed a removed pod")
	}
}

func TestSidecarProbedAndErrorsKeepResult(t *testing.T) {
	var broken atomic.Bool
	exec := func(_ context.Context, id string, _ []string, _ time.Duration) ([]byte, []byte, int32, error) {
		if broken.Load() {
			return nil, nil, 0, fmt.Errorf("container %s not found", id)
		}
		return nil, nil, 0, nil
	}
	m, ev := newManager(t, exec, nil)
	always := "Always"
	pod := newPod("u1", &corev1.Container{Name: "app"})
	pod.Spec.InitContainers = []*corev1.Container{
		{Name: "init"}, // a plain init container is never probed
		{Name: "sidecar", RestartPolicy: &always, ReadinessProbe: execProbe("ready")},
	}
	m.AddPod(pod)
	go func() {
		for range m.Updates() {
		}
	}()
	m.UpdateContainer("u1", "sidecar", "containerd://s", time.Now(), "127.0.0.1")
	eventually(t, "sidecar ready", func() bool { return m.Ready("u1", "sidecar") })
	broken.Store(true)
	eventually(t, "errored event", func() bool {
		return ev.has("Warning Unhealthy Readiness probe errored: container containerd://s not found")
	})
	if !m.Ready("u1", "sidecar") {
		t.Error("a probe error changed the result; upstream keeps the last one")
	}
}

func TestProbeWarningEvent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://elsewhere.invalid/x", http.StatusFound)
	}))
	defer srv.Close()
	m, ev := newManager(t, nil, nil)
	p := &corev1.Probe{Handler: &corev1.ProbeHandler{HttpGet: &corev1.HTTPGetAction{Path: "/", Port: intPort(serverPort(t, srv.URL))}},
		PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
	m.AddPod(newPod("u1", &corev1.Container{Name: "web", ReadinessProbe: p}))
	go func() {
		for range m.Updates() {
		}
	}()
	m.UpdateContainer("u1", "web", "containerd://a", time.Now(), "127.0.0.1")
	eventually(t, "ready despite the redirect", func() bool { return m.Ready("u1", "web") })
	want := "Warning ProbeWarning Readiness probe warning: Probe terminated redirects, Response body: <a href=\"http://elsewhere.invalid/x\">Found</a>.\n\n"
	if !ev.has(want) {
		t.Errorf("events %q, want %q", ev.all(), want)
	}
}

func TestUpdatesNeverBlockWorkers(t *testing.T) {
	fe := &fakeExec{code: func(string, []string) int32 { return 0 }}
	m, _ := newManager(t, fe.exec, nil)
	const pods = 50 // more than the channel holds
	for i := range pods {
		uid := fmt.Sprint("u", i)
		m.AddPod(newPod(uid, &corev1.Container{Name: "app", ReadinessProbe: execProbe("ready")}))
		m.UpdateContainer(uid, "app", "containerd://"+uid, time.Now(), "127.0.0.1")
	}
	// Nobody reads Updates, yet every pod becomes ready.
	eventually(t, "all ready", func() bool {
		for i := range pods {
			if !m.Ready(fmt.Sprint("u", i), "app") {
				return false
			}
		}
		return true
	})
	// Then each pod is announced, none lost.
	seen := map[string]bool{}
	for len(seen) < pods {
		select {
		case uid := <-m.Updates():
			seen[uid] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d pods announced", len(seen), pods)
		}
	}
}

func TestHTTPSProbeAndStoppedContainer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "tls") }))
	defer srv.Close()
	m, _ := newManager(t, nil, nil)
	p := &corev1.Probe{Handler: &corev1.ProbeHandler{HttpGet: &corev1.HTTPGetAction{Path: "/", Scheme: "HTTPS", Port: intPort(serverPort(t, strings.Replace(srv.URL, "https", "http", 1)))}},
		PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
	// The serving certificate is not verified, as upstream.
	if res, out, err := m.runProbe(context.Background(), p, &corev1.Container{}, "id", "127.0.0.1"); res != oSuccess || out != "tls" || err != nil {
		t.Fatalf("https: %v %q %v", res, out, err)
	}
	m.AddPod(newPod("u1", &corev1.Container{Name: "web", ReadinessProbe: p}))
	m.UpdateContainer("u1", "web", "containerd://a", time.Now(), "127.0.0.1")
	eventually(t, "ready", func() bool { return m.Ready("u1", "web") })
	drain := func() {
		for {
			select {
			case <-m.Updates():
			default:
				return
			}
		}
	}
	drain()
	// The container exits: not ready, and the pod is announced.
	m.UpdateContainer("u1", "web", "", time.Time{}, "127.0.0.1")
	if m.Ready("u1", "web") {
		t.Error("ready after the container stopped")
	}
	select {
	case uid := <-m.Updates():
		if uid != "u1" {
			t.Errorf("update for %s", uid)
		}
	case <-time.After(5 * time.Second):
		t.Error("stopping the container announced nothing")
	}
}
