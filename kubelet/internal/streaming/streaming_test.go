package streaming

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critesting "k8s.io/cri-api/pkg/apis/testing"

	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/kuberuntime"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// streamRuntime is the fake CRI whose Exec, Attach and PortForward hand
// out URLs on a test stream server and record what they were asked.
type streamRuntime struct {
	*cri.Fake
	base string

	mu       sync.Mutex
	execs    []*runtimeapi.ExecRequest
	attaches []*runtimeapi.AttachRequest
	forwards []*runtimeapi.PortForwardRequest
}

func (r *streamRuntime) Exec(_ context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.execs = append(r.execs, req)
	return &runtimeapi.ExecResponse{Url: r.base + "/exec/tok1"}, nil
}

func (r *streamRuntime) Attach(_ context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attaches = append(r.attaches, req)
	return &runtimeapi.AttachResponse{Url: r.base + "/attach/tok2"}, nil
}

func (r *streamRuntime) PortForward(_ context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forwards = append(r.forwards, req)
	return &runtimeapi.PortForwardResponse{Url: r.base + "/portforward/tok3"}, nil
}

// upgradeEcho is a stream server: it answers a websocket or SPDY upgrade
// with 101, echoes the subprotocol (the websocket's, or SPDY's
// X-Stream-Protocol-Version), writes the path it was asked for and then
// echoes bytes.
func upgradeEcho(t *testing.T) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := r.Header.Get("Upgrade")
		var proto string
		switch {
		case strings.EqualFold(up, "websocket"):
			proto = "Sec-WebSocket-Protocol: " + r.Header.Get("Sec-WebSocket-Protocol")
		case strings.EqualFold(up, "SPDY/3.1"):
			proto = "X-Stream-Protocol-Version: " + r.Header.Get("X-Stream-Protocol-Version")
		default:
			http.Error(w, "not an upgrade", http.StatusBadRequest)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n%s\r\n\r\n%s\n", up, proto, r.URL.Path)
		rw.Flush()
		io.Copy(conn, rw)
	}))
}

func newTestHandler(t *testing.T) (*streamRuntime, *httptest.Server) {
	backend := upgradeEcho(t)
	t.Cleanup(backend.Close)
	rt := &streamRuntime{Fake: cri.NewFake(), base: backend.URL}
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "web", Uid: "uid-1"},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app"}, {Name: "idle"}}}}
	running := func(id, name string, created int64, state runtimeapi.ContainerState) *critesting.FakeContainer {
		return &critesting.FakeContainer{ContainerStatus: runtimeapi.ContainerStatus{
			Id: id, State: state, CreatedAt: created,
			Labels: map[string]string{kuberuntime.LabelPodUID: "uid-1", kuberuntime.LabelContainerName: name},
		}}
	}
	rt.SetFakeContainers([]*critesting.FakeContainer{
		running("app-old", "app", 1, runtimeapi.ContainerState_CONTAINER_RUNNING),
		running("app-new", "app", 2, runtimeapi.ContainerState_CONTAINER_RUNNING),
		running("app-dead", "app", 3, runtimeapi.ContainerState_CONTAINER_EXITED),
		running("idle-dead", "idle", 1, runtimeapi.ContainerState_CONTAINER_EXITED),
	})
	rt.SetFakeSandboxes([]*critesting.FakePodSandbox{
		{PodSandboxStatus: runtimeapi.PodSandboxStatus{Id: "sb-dead", State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY, CreatedAt: 2,
			Labels: map[string]string{kuberuntime.LabelPodUID: "uid-1"}}},
		{PodSandboxStatus: runtimeapi.PodSandboxStatus{Id: "sb-1", State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: 1,
			Labels: map[string]string{kuberuntime.LabelPodUID: "uid-1"}}},
	})
	srv := httptest.NewServer(Handler(rt, func(ns, name string) (*corev1.Pod, bool) {
		if ns == "ns" && name == "web" {
			return pod, true
		}
		return nil, false
	}, nil))
	t.Cleanup(srv.Close)
	return rt, srv
}

// upgrade sends a websocket upgrade for path to srv over a raw connection
// and returns the response and the connection for the stream.
func upgrade(t *testing.T, srv *httptest.Server, path string) (*http.Response, *bufio.Reader, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: kubelet\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n", path)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp, br, conn
}

func TestExecProxiesToTheRuntimesStreamURL(t *testing.T) {
	rt, srv := newTestHandler(t)
	resp, br, conn := upgrade(t, srv, "/exec/ns/web/app?command=sh&command=-c&command=echo+hi&input=1&output=1&error=1&tty=1")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "v4.channel.k8s.io" {
		t.Errorf("subprotocol %q did not pass through", got)
	}
	line, _ := br.ReadString('\n')
	if line != "/exec/tok1\n" {
		t.Errorf("the stream server was asked for %q, want /exec/tok1", line)
	}
	fmt.Fprint(conn, "ping\n")
	if line, _ := br.ReadString('\n'); line != "ping\n" {
		t.Errorf("bytes did not pass both ways: got %q", line)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.execs) != 1 {
		t.Fatalf("%d CRI Exec calls, want 1", len(rt.execs))
	}
	e := rt.execs[0]
	// tty drops stderr, as upstream does.
	if e.ContainerId != "app-new" || strings.Join(e.Cmd, " ") != "sh -c echo hi" || !e.Tty || !e.Stdin || !e.Stdout || e.Stderr {
		t.Errorf("CRI Exec request %v", e)
	}
}

// TestExecProxiesSPDY is kubectl's (and the apiserver's) exec: a POST
// upgraded to SPDY/3.1 offering its protocol in X-Stream-Protocol-Version,
// which must reach the stream server for it to choose.
func TestExecProxiesSPDY(t *testing.T) {
	rt, srv := newTestHandler(t)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "POST /exec/ns/web/app?command=cat&input=1&output=1 HTTP/1.1\r\nHost: kubelet\r\nContent-Length: 0\r\n"+
		"Upgrade: SPDY/3.1\r\nConnection: Upgrade\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "SPDY/3.1" {
		t.Fatalf("status %d, upgrade %q; want 101 SPDY/3.1", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
	if got := resp.Header.Get("X-Stream-Protocol-Version"); got != "v4.channel.k8s.io" {
		t.Errorf("the stream server saw X-Stream-Protocol-Version %q", got)
	}
	if line, _ := br.ReadString('\n'); line != "/exec/tok1\n" {
		t.Errorf("the stream server was asked for %q", line)
	}
	fmt.Fprint(conn, "frame\n")
	if line, _ := br.ReadString('\n'); line != "frame\n" {
		t.Errorf("bytes did not pass both ways: got %q", line)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.execs) != 1 || !rt.execs[0].Stdin || rt.execs[0].Stderr {
		t.Errorf("CRI Exec requests %v", rt.execs)
	}
}

func TestAttachAndPortForward(t *testing.T) {
	rt, srv := newTestHandler(t)
	resp, br, _ := upgrade(t, srv, "/attach/ns/web/app?output=1&error=1")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("attach: status %d, want 101", resp.StatusCode)
	}
	if line, _ := br.ReadString('\n'); line != "/attach/tok2\n" {
		t.Errorf("attach reached %q", line)
	}
	resp, br, _ = upgrade(t, srv, "/portForward/ns/web?port=80&port=8080,9090")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("portForward: status %d, want 101", resp.StatusCode)
	}
	if line, _ := br.ReadString('\n'); line != "/portforward/tok3\n" {
		t.Errorf("portForward reached %q", line)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if a := rt.attaches[0]; a.ContainerId != "app-new" || a.Stdin || !a.Stdout || !a.Stderr || a.Tty {
		t.Errorf("CRI Attach request %v", a)
	}
	if f := rt.forwards[0]; f.PodSandboxId != "sb-1" || fmt.Sprint(f.Port) != "[80 8080 9090]" {
		t.Errorf("CRI PortForward request %v", f)
	}
}

func TestErrors(t *testing.T) {
	_, srv := newTestHandler(t)
	for _, tc := range []struct {
		path string
		code int
		msg  string
	}{
		{"/exec/ns/nope/app?command=ls&output=1", 404, "pod does not exist"},
		{"/exec/ns/web/other-uid/app?command=ls&output=1", 404, "pod does not exist"},
		{"/exec/ns/web/app?output=1", 400, "you must specify at least one command for the container"},
		{"/exec/ns/web/app?command=ls", 400, "you must specify at least 1 of stdin, stdout, stderr"},
		{"/exec/ns/web/idle?command=ls&output=1", 400, `container "idle" in pod "web" is not running`},
		{"/exec/ns/web/ghost?command=ls&output=1", 404, `container not found ("ghost")`},
		{"/attach/ns/web/uid-1/ghost?output=1", 404, `container not found ("ghost")`},
		{"/portForward/ns/web?port=0", 400, `port "0" must be > 0`},
		{"/portForward/ns/web?port=http", 400, `unable to parse "http" as a port`},
	} {
		resp, br, _ := upgrade(t, srv, tc.path)
		body, _ := io.ReadAll(io.LimitReader(br, resp.ContentLength))
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.msg) {
			t.Errorf("%s: %d %q, want %d %q", tc.path, resp.StatusCode, body, tc.code, tc.msg)
		}
	}
}
