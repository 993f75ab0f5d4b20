package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"

	"skiff.dev/apiserver/internal/kubeletclient"
	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// fakeKubelet is a kubelet's stream endpoints as containerd's stream server
// behind it speaks them, scripted per test: exec and attach as
// v4.channel.k8s.io over SPDY, port-forward over a websocket.
type fakeKubelet struct {
	srv *httptest.Server

	mu   sync.Mutex
	reqs []*url.URL
}

// spdyStreams are one exec's streams as the stream server received them,
// by streamType.
type spdyStreams map[string]httpstream.Stream

func (s spdyStreams) write(t *testing.T, typ, data string) {
	if _, err := io.WriteString(s[typ], data); err != nil {
		t.Errorf("writing %s: %v", typ, err)
	}
}

// acceptSPDY is the stream server's side of an SPDY exec: it negotiates
// the protocol and waits for the streams the query asks for, as
// upstream's createHTTPStreamStreams.
func acceptSPDY(t *testing.T, w http.ResponseWriter, r *http.Request) (httpstream.Connection, spdyStreams) {
	if _, err := httpstream.Handshake(r, w, []string{channelProtocol}); err != nil {
		t.Error(err)
		return nil, nil
	}
	type created struct {
		s    httpstream.Stream
		sent <-chan struct{}
	}
	ch := make(chan created, 5)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, sent <-chan struct{}) error {
		ch <- created{s, sent}
		return nil
	})
	if conn == nil {
		t.Error("the SPDY upgrade failed")
		return nil, nil
	}
	q := r.URL.Query()
	want := 1
	for _, k := range []string{"input", "output", "error", "tty"} {
		if q.Get(k) == "1" {
			want++
		}
	}
	streams := spdyStreams{}
	timeout := time.After(5 * time.Second)
	for len(streams) < want {
		select {
		case c := <-ch:
			<-c.sent
			streams[c.s.Headers().Get("streamType")] = c.s
		case <-timeout:
			t.Errorf("got streams %v, want %d", streams, want)
			conn.Close()
			return nil, nil
		}
	}
	return conn, streams
}

func newFakeKubelet(t *testing.T, exec func(path string, q url.Values, s spdyStreams), portForward func(q url.Values, ws *websocket.Conn)) *fakeKubelet {
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
		if strings.HasPrefix(r.URL.Path, "/portForward/") {
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer ws.Close()
			portForward(r.URL.Query(), ws)
			return
		}
		conn, streams := acceptSPDY(t, w, r)
		if conn == nil {
			return
		}
		// As the runtime, end the connection once the command is done.
		defer conn.Close()
		exec(r.URL.Path, r.URL.Query(), streams)
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

func streamTypes(s spdyStreams) string {
	var types []string
	for typ := range s {
		types = append(types, typ)
	}
	sort.Strings(types)
	return strings.Join(types, ",")
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

func TestExecRelaysStreamsStdinCloseAndExitCode(t *testing.T) {
	types := make(chan string, 1)
	k := newFakeKubelet(t, func(path string, q url.Values, s spdyStreams) {
		types <- streamTypes(s)
		// cat, upper-cased: it ends only when its stdin does.
		buf := make([]byte, 64)
		for {
			n, err := s["stdin"].Read(buf)
			s.write(t, "stdout", strings.ToUpper(string(buf[:n])))
			if err != nil {
				break
			}
		}
		s.write(t, "stderr", "leaving\n")
		s.write(t, "error", exitJSON(3))
	}, nil)
	c := streamCluster(t, k)
	stdinR, stdinW := io.Pipe()
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
	// The client's stdin_close is the command's EOF.
	stdinW.Close()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("exec did not end after its stdin closed")
	}
	var exit *client.ExitError
	if !errors.As(err, &exit) || exit.Code != 3 || err.Error() != "command terminated with exit code 3" {
		t.Fatalf("exec returned %v, want exit code 3", err)
	}
	if stdout.String() != "HELLO\nBYE\n" || stderr.String() != "leaving\n" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	// Resize is only a stream with a TTY.
	if got := <-types; got != "error,stderr,stdin,stdout" {
		t.Errorf("streams %s", got)
	}
	reqs := k.requests()
	if len(reqs) != 1 || reqs[0].Path != "/exec/ns/web/app" {
		t.Fatalf("kubelet requests %v", reqs)
	}
	q := reqs[0].Query()
	if strings.Join(q["command"], " ") != "sh -c cat" || q.Get("input") != "1" || q.Get("output") != "1" || q.Get("error") != "1" || q.Has("tty") {
		t.Errorf("kubelet query %v", q)
	}
}

func TestExecTTYResizeAndSuccess(t *testing.T) {
	got := make(chan string, 2)
	k := newFakeKubelet(t, func(path string, q url.Values, s spdyStreams) {
		got <- streamTypes(s)
		var size struct{ Width, Height int }
		if err := json.NewDecoder(s["resize"]).Decode(&size); err != nil {
			t.Errorf("reading a resize: %v", err)
			return
		}
		got <- fmt.Sprintf("%dx%d", size.Width, size.Height)
		s.write(t, "stdout", "# ")
		s.write(t, "error", exitJSON(0))
	}, nil)
	c := streamCluster(t, k)
	resize := make(chan client.TerminalSize, 1)
	resize <- client.TerminalSize{Width: 120, Height: 40}
	var stdout bytes.Buffer
	err := c.Exec(context.Background(), client.ExecOptions{Namespace: "ns", Name: "solo",
		Command: []string{"sh"}, Stdout: &stdout, Stderr: io.Discard, TTY: true, Resize: resize})
	if err != nil {
		t.Fatal(err)
	}
	// A terminal has no separate stderr.
	if types, size := <-got, <-got; types != "error,resize,stdout" || size != "120x40" {
		t.Errorf("streams %s, resize %s", types, size)
	}
	q := k.requests()[0]
	// The only container is chosen.
	if q.Path != "/exec/ns/solo/only" || q.Query().Get("tty") != "1" || q.Query().Has("error") || q.Query().Has("input") {
		t.Errorf("kubelet request %v", q)
	}
	if stdout.String() != "# " {
		t.Errorf("stdout %q", stdout.String())
	}
}

func TestAttachAndExecErrors(t *testing.T) {
	k := newFakeKubelet(t, func(path string, q url.Values, s spdyStreams) {
		if strings.HasPrefix(path, "/attach/") {
			s.write(t, "stdout", "log line\n")
			s.write(t, "error", exitJSON(0))
			return
		}
		s.write(t, "error", `{"status":"Failure","reason":"InternalError","message":"Internal error occurred: error executing command in container: executable file not found in $PATH"}`)
	}, nil)
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

	// A kubelet gone mid-stream is no exit status, not a success.
	k2 := newFakeKubelet(t, func(string, url.Values, spdyStreams) {}, nil)
	c2 := streamCluster(t, k2)
	err = c2.Exec(ctx, client.ExecOptions{Namespace: "ns", Name: "solo", Command: []string{"sleep"}, Stdout: io.Discard})
	if err == nil || errors.As(err, &exit) || !strings.Contains(err.Error(), "the stream ended before the command reported how it exited") {
		t.Errorf("exec cut short: %v", err)
	}
}

func TestPortForwardRelaysOneConnection(t *testing.T) {
	k := newFakeKubelet(t, nil, func(q url.Values, ws *websocket.Conn) {
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
