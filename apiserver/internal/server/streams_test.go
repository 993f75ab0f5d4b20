package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"skiff.dev/apiserver/internal/kubeletclient"
	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// fakeKubelet is a kubelet's stream endpoints as containerd's stream server
// behind it speaks them (v4.channel.k8s.io), scripted per test.
type fakeKubelet struct {
	srv *httptest.Server

	mu   sync.Mutex
	reqs []*url.URL
}

func newFakeKubelet(t *testing.T, serve func(path string, q url.Values, ws *websocket.Conn)) *fakeKubelet {
	k := &fakeKubelet{}
	up := websocket.Upgrader{Subprotocols: []string{channelProtocol}}
	k.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		k.reqs = append(k.reqs, r.URL)
		k.mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/gone") {
			http.Error(w, `container not found ("gone")`, http.StatusNotFound)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.Close()
		serve(r.URL.Path, r.URL.Query(), ws)
	}))
	t.Cleanup(k.srv.Close)
	return k
}

func (k *fakeKubelet) requests() []*url.URL {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*url.URL(nil), k.reqs...)
}

// streamCluster is a Service over a real registry with a node whose
// kubelet is k, served over gRPC to a client.
func streamCluster(t *testing.T, k *fakeKubelet) *client.Client {
	t.Helper()
	s := newService(t, nil)
	s.SetKubeletClient(kubeletclient.New(kubeletclient.Config{}))
	host, port, _ := net.SplitHostPort(k.srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	ctx := context.Background()
	nodes, _ := scheme.ForResource("", "nodes")
	pods, _ := scheme.ForResource("", "pods")
	node := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1"}}
	if _, err := s.reg.Create(ctx, nodes, "", node, false); err != nil {
		t.Fatal(err)
	}
	node.Status = &corev1.NodeStatus{
		Addresses:       []*corev1.NodeAddress{{Type: "InternalIP", Address: host}},
		DaemonEndpoints: &corev1.NodeDaemonEndpoints{KubeletEndpoint: &corev1.DaemonEndpoint{Port: int32(p)}},
	}
	if _, err := s.reg.UpdateStatus(ctx, nodes, "", node, false); err != nil {
		t.Fatal(err)
	}
	for _, pod := range []*corev1.Pod{
		{Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "ns"}, Spec: &corev1.PodSpec{NodeName: "n1",
			Containers:     []*corev1.Container{{Name: "app", Image: "x"}, {Name: "side", Image: "x"}, {Name: "gone", Image: "x"}},
			InitContainers: []*corev1.Container{{Name: "setup", Image: "x"}}}},
		{Metadata: &metav1.ObjectMeta{Name: "solo", Namespace: "ns"}, Spec: &corev1.PodSpec{NodeName: "n1",
			Containers: []*corev1.Container{{Name: "only", Image: "x"}}}},
		{Metadata: &metav1.ObjectMeta{Name: "pending", Namespace: "ns"}, Spec: &corev1.PodSpec{
			Containers: []*corev1.Container{{Name: "c", Image: "x"}}}},
	} {
		if _, err := s.reg.Create(ctx, pods, "ns", pod, false); err != nil {
			t.Fatal(err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	apipb.RegisterAPIServer(gs, s)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return client.New(cc)
}

// send writes one channel message.
func send(t *testing.T, ws *websocket.Conn, ch byte, data string) {
	if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{ch}, data...)); err != nil {
		t.Error(err)
	}
}

func exitJSON(code int) string {
	if code == 0 {
		return `{"metadata":{},"status":"Success"}`
	}
	b, _ := json.Marshal(map[string]any{
		"status": "Failure", "reason": "NonZeroExitCode", "message": "command terminated with non-zero exit code",
		"details": map[string]any{"causes": []any{map[string]string{"reason": "ExitCode", "message": strconv.Itoa(code)}}},
	})
	return string(b)
}

func TestExecRelaysStreamsResizeAndExitCode(t *testing.T) {
	var resizes []string
	k := newFakeKubelet(t, func(path string, q url.Values, ws *websocket.Conn) {
		send(t, ws, chanStdout, "") // the stream server's "connected"
		for {
			_, m, err := ws.ReadMessage()
			if err != nil {
				t.Error(err)
				return
			}
			switch m[0] {
			case chanResize:
				resizes = append(resizes, string(m[1:]))
			case chanStdin:
				send(t, ws, chanStdout, strings.ToUpper(string(m[1:])))
				if strings.Contains(string(m[1:]), "bye") {
					send(t, ws, chanStderr, "leaving\n")
					send(t, ws, chanError, exitJSON(3))
					return
				}
			}
		}
	})
	c := streamCluster(t, k)
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	var stdout, stderr bytes.Buffer
	resize := make(chan client.TerminalSize, 1)
	resize <- client.TerminalSize{Width: 80, Height: 24}
	done := make(chan error, 1)
	go func() {
		done <- c.Exec(context.Background(), client.ExecOptions{Namespace: "ns", Name: "web", Container: "app",
			Command: []string{"sh", "-c", "cat"}, Stdin: stdinR, Stdout: &stdout, Stderr: &stderr, Resize: resize})
	}()
	io.WriteString(stdinW, "hello\n")
	io.WriteString(stdinW, "bye\n")
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("exec did not end")
	}
	var exit *client.ExitError
	if !errors.As(err, &exit) || exit.Code != 3 || err.Error() != "command terminated with exit code 3" {
		t.Fatalf("exec returned %v, want exit code 3", err)
	}
	if stdout.String() != "HELLO\nBYE\n" || stderr.String() != "leaving\n" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	reqs := k.requests()
	if len(reqs) != 1 || reqs[0].Path != "/exec/ns/web/app" {
		t.Fatalf("kubelet requests %v", reqs)
	}
	q := reqs[0].Query()
	if strings.Join(q["command"], " ") != "sh -c cat" || q.Get("input") != "1" || q.Get("output") != "1" || q.Get("error") != "1" || q.Has("tty") {
		t.Errorf("kubelet query %v", q)
	}
	// Resize is only sent with a TTY.
	if len(resizes) != 0 {
		t.Errorf("resizes without a tty: %v", resizes)
	}
}

func TestExecTTYResizeAndSuccess(t *testing.T) {
	got := make(chan string, 1)
	k := newFakeKubelet(t, func(path string, q url.Values, ws *websocket.Conn) {
		_, m, err := ws.ReadMessage()
		if err != nil || m[0] != chanResize {
			t.Errorf("first message %q, %v; want a resize", m, err)
			return
		}
		got <- string(m[1:])
		send(t, ws, chanStdout, "# ")
		send(t, ws, chanError, exitJSON(0))
	})
	c := streamCluster(t, k)
	resize := make(chan client.TerminalSize, 1)
	resize <- client.TerminalSize{Width: 120, Height: 40}
	var stdout bytes.Buffer
	err := c.Exec(context.Background(), client.ExecOptions{Namespace: "ns", Name: "solo",
		Command: []string{"sh"}, Stdout: &stdout, Stderr: io.Discard, TTY: true, Resize: resize})
	if err != nil {
		t.Fatal(err)
	}
	if r := <-got; r != `{"Width":120,"Height":40}` {
		t.Errorf("resize message %s", r)
	}
	q := k.requests()[0]
	// The only container is chosen; a terminal has no separate stderr.
	if q.Path != "/exec/ns/solo/only" || q.Query().Get("tty") != "1" || q.Query().Has("error") || q.Query().Has("input") {
		t.Errorf("kubelet request %v", q)
	}
	if stdout.String() != "# " {
		t.Errorf("stdout %q", stdout.String())
	}
}

func TestAttachAndExecErrors(t *testing.T) {
	k := newFakeKubelet(t, func(path string, q url.Values, ws *websocket.Conn) {
		if strings.HasPrefix(path, "/attach/") {
			send(t, ws, chanStdout, "log line\n")
			send(t, ws, chanError, exitJSON(0))
			return
		}
		send(t, ws, chanError, `{"status":"Failure","reason":"InternalError","message":"Internal error occurred: error executing command in container: executable file not found in $PATH"}`)
	})
	c := streamCluster(t, k)
	ctx := context.Background()
	var out bytes.Buffer
	if err := c.Attach(ctx, client.ExecOptions{Namespace: "ns", Name: "web", Container: "side", Stdout: &out}); err != nil || out.String() != "log line\n" {
		t.Errorf("attach: %v, %q", err, out.String())
	}
	if r := k.requests(); r[0].Path != "/attach/ns/web/side" || r[0].Query().Has("command") {
		t.Errorf("attach request %v", r[0])
	}
	for _, tc := range []struct {
		opts   client.ExecOptions
		reason apierrors.Reason
		msg    string
	}{
		{client.ExecOptions{Name: "web", Command: []string{"x"}}, apierrors.ReasonNotFound, `pods "web" not found`},
		{client.ExecOptions{Namespace: "ns", Name: "web", Command: []string{"x"}}, apierrors.ReasonBadRequest,
			"a container name must be specified for pod web, choose one of: [app side gone] or one of the init containers: [setup]"},
		{client.ExecOptions{Namespace: "ns", Name: "web", Container: "nope", Command: []string{"x"}}, apierrors.ReasonBadRequest, "container nope is not valid for pod web"},
		{client.ExecOptions{Namespace: "ns", Name: "pending", Command: []string{"x"}}, apierrors.ReasonBadRequest, "pod pending does not have a host assigned"},
		{client.ExecOptions{Namespace: "ns", Name: "web", Container: "gone", Command: []string{"x"}}, apierrors.ReasonNotFound, `container not found ("gone")`},
		{client.ExecOptions{Namespace: "ns", Name: "solo"}, apierrors.ReasonBadRequest, "you must specify at least one command for the container"},
	} {
		tc.opts.Stdout = io.Discard
		err := c.Exec(ctx, tc.opts)
		if apierrors.ReasonOf(err) != tc.reason || !strings.Contains(apierrors.Message(err), tc.msg) {
			t.Errorf("exec %+v: %v; want %s %q", tc.opts, err, tc.reason, tc.msg)
		}
	}
	err := c.Exec(ctx, client.ExecOptions{Namespace: "ns", Name: "solo", Command: []string{"nope"}, Stdout: io.Discard})
	var exit *client.ExitError
	if err == nil || errors.As(err, &exit) || !strings.Contains(err.Error(), "executable file not found") {
		t.Errorf("exec of a missing binary: %v", err)
	}
}

func TestPortForwardRelaysOneConnection(t *testing.T) {
	k := newFakeKubelet(t, func(path string, q url.Values, ws *websocket.Conn) {
		port := q.Get("port")
		p, _ := strconv.Atoi(port)
		prefix := string([]byte{byte(p), byte(p >> 8)})
		send(t, ws, chanPortData, prefix)
		send(t, ws, chanPortError, prefix)
		if port == "81" {
			send(t, ws, chanPortError, "error forwarding port 81 to pod sb-1: connection refused")
			return
		}
		_, m, err := ws.ReadMessage()
		if err != nil || m[0] != chanPortData {
			t.Errorf("kubelet read %q, %v", m, err)
			return
		}
		send(t, ws, chanPortData, "HTTP/1.1 200 OK\r\n\r\n"+string(m[1:]))
	})
	c := streamCluster(t, k)
	local, remote := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- c.PortForward(context.Background(), "ns", "web", 8080, remote) }()
	io.WriteString(local, "GET / ")
	b := make([]byte, 64)
	n, _ := io.ReadAtLeast(local, b, len("HTTP/1.1 200 OK\r\n\r\nGET / "))
	if got := string(b[:n]); got != "HTTP/1.1 200 OK\r\n\r\nGET / " {
		t.Errorf("read %q through the forward", got)
	}
	if err := <-done; err != nil {
		t.Errorf("port-forward: %v", err)
	}
	if r := k.requests(); r[0].Path != "/portForward/ns/web" || r[0].Query().Get("port") != "8080" {
		t.Errorf("kubelet request %v", r[0])
	}
	_, remote2 := net.Pipe()
	err := c.PortForward(context.Background(), "ns", "web", 81, remote2)
	if err == nil || err.Error() != "error forwarding port 81 to pod sb-1: connection refused" {
		t.Errorf("port-forward to a closed port: %v", err)
	}
	_, remote3 := net.Pipe()
	if err := c.PortForward(context.Background(), "ns", "web", 0, remote3); !apierrors.IsBadRequest(err) {
		t.Errorf("port 0: %v", err)
	}
}
