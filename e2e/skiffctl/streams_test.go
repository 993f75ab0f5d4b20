package skiffctl

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// streamKubelet is node n1's kubelet with containerd's stream server
// behind it: exec as v4.channel.k8s.io over SPDY running a few scripted
// commands, port-forward over a websocket to a port that answers one HTTP
// request.
type streamKubelet struct {
	mu       sync.Mutex
	paths    []string
	received []byte // what a cp into the pod sent
}

func (k *streamKubelet) asked() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.paths...)
}

func wsSend(ws *websocket.Conn, ch byte, data []byte) {
	ws.WriteMessage(websocket.BinaryMessage, append([]byte{ch}, data...))
}

func exitStatusJSON(code int) []byte {
	if code == 0 {
		return []byte(`{"metadata":{},"status":"Success"}`)
	}
	return fmt.Appendf(nil, `{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"%d"}]}}`, code)
}

// acceptExec is the stream server's side of an SPDY exec, as upstream's
// createHTTPStreamStreams: the protocol negotiated, then the streams the
// query asks for, by streamType.
func acceptExec(w http.ResponseWriter, r *http.Request) (httpstream.Connection, map[string]httpstream.Stream) {
	if _, err := httpstream.Handshake(r, w, []string{"v4.channel.k8s.io"}); err != nil {
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
		return nil, nil
	}
	want := 1
	for _, k := range []string{"input", "output", "error", "tty"} {
		if r.URL.Query().Get(k) == "1" {
			want++
		}
	}
	streams := map[string]httpstream.Stream{}
	timeout := time.After(5 * time.Second)
	for len(streams) < want {
		select {
		case c := <-ch:
			<-c.sent
			streams[c.s.Headers().Get("streamType")] = c.s
		case <-timeout:
			conn.Close()
			return nil, nil
		}
	}
	return conn, streams
}

func (k *streamKubelet) serve(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	k.paths = append(k.paths, r.URL.Path+"?"+r.URL.RawQuery)
	k.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/portForward/") {
		up := websocket.Upgrader{Subprotocols: []string{"v4.channel.k8s.io"}}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		port, _ := strconv.Atoi(r.URL.Query().Get("port"))
		p := binary.LittleEndian.AppendUint16(nil, uint16(port))
		wsSend(ws, 0, p)
		wsSend(ws, 1, p)
		if port != 80 {
			wsSend(ws, 1, fmt.Appendf(nil, "error forwarding port %d to pod sb, uid : connection refused", port))
			return
		}
		if _, m, err := ws.ReadMessage(); err != nil || !bytes.HasPrefix(m[1:], []byte("GET /hostname")) {
			return
		}
		wsSend(ws, 0, []byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nweb"))
		return
	}
	conn, st := acceptExec(w, r)
	if conn == nil {
		return
	}
	defer conn.Close()
	cmd := r.URL.Query()["command"]
	code := 0
	switch {
	case cmd[0] == "echo":
		io.WriteString(st["stdout"], strings.Join(cmd[1:], " ")+"\n")
	case cmd[0] == "fail":
		io.WriteString(st["stderr"], "failing\n")
		code, _ = strconv.Atoi(cmd[1])
	case cmd[0] == "upper": // tr a-z A-Z: it ends with its stdin
		in, _ := io.ReadAll(st["stdin"])
		st["stdout"].Write(bytes.ToUpper(in))
	case cmd[0] == "tar" && cmd[1] == "cf": // tar cf - /data
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755})
		tw.WriteHeader(&tar.Header{Name: "data/f.txt", Mode: 0o644, Size: 5})
		tw.Write([]byte("hello"))
		tw.Close()
		st["stdout"].Write(b.Bytes())
	case cmd[0] == "tar" && cmd[1] == "-xmf": // cp into the pod: tar -xmf - -C dir
		in, _ := io.ReadAll(st["stdin"])
		k.mu.Lock()
		k.received = in
		k.mu.Unlock()
	default:
		io.WriteString(st["error"], `{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: exec: \"`+cmd[0]+`\": executable file not found in $PATH","reason":"InternalError","code":500}`)
		return
	}
	st["error"].Write(exitStatusJSON(code))
}

func startStreamsCluster(t *testing.T) (*cluster, *streamKubelet) {
	t.Helper()
	c := newCluster(t)
	k := &streamKubelet{}
	srv := httptest.NewTLSServer(http.HandlerFunc(k.serve))
	t.Cleanup(srv.Close)
	ctx := context.Background()
	api := client.New(c.s.Conn)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	nodes := client.For[*corev1.Node](api, "")
	node, err := nodes.Create(ctx, &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	node.Status = &corev1.NodeStatus{
		Addresses:       []*corev1.NodeAddress{{Type: "InternalIP", Address: host}},
		DaemonEndpoints: &corev1.NodeDaemonEndpoints{KubeletEndpoint: &corev1.DaemonEndpoint{Port: int32(p)}},
	}
	if _, err := nodes.UpdateStatus(ctx, node); err != nil {
		t.Fatal(err)
	}
	pods := client.For[*corev1.Pod](api, "default")
	for _, pod := range []*corev1.Pod{
		{Metadata: &metav1.ObjectMeta{Name: "web"}, Spec: &corev1.PodSpec{NodeName: "n1", Containers: []*corev1.Container{
			{Name: "app", Image: "x", Ports: []*corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}, {Name: "side", Image: "x"}}}},
		{Metadata: &metav1.ObjectMeta{Name: "done"}, Spec: &corev1.PodSpec{NodeName: "n1", Containers: []*corev1.Container{{Name: "app", Image: "x"}}}},
	} {
		created, err := pods.Create(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		phase := "Running"
		if pod.Metadata.Name == "done" {
			phase = "Succeeded"
		}
		created.Status = &corev1.PodStatus{Phase: phase}
		if _, err := pods.UpdateStatus(ctx, created); err != nil {
			t.Fatal(err)
		}
	}
	return c, k
}

func TestExecAndCp(t *testing.T) {
	c, k := startStreamsCluster(t)
	out, errOut, code := c.run("", "exec", "web", "--", "echo", "hi", "there")
	if code != 0 || out != "hi there\n" || errOut != `Defaulted container "app" out of: app, side`+"\n" {
		t.Errorf("exec echo: %d %q %q", code, out, errOut)
	}
	if q := k.asked(); q[0] != "/exec/default/web/app?command=echo&command=hi&command=there&error=1&output=1" {
		t.Errorf("kubelet asked %s", q[0])
	}
	out, errOut, code = c.run("", "exec", "web", "-c", "side", "--", "fail", "7")
	if code != 7 || out != "" || errOut != "failing\ncommand terminated with exit code 7\n" {
		t.Errorf("exec fail 7: %d %q %q", code, out, errOut)
	}
	out, errOut, code = c.run("abc", "exec", "-i", "-t", "web", "-c", "app", "--", "upper")
	// -t without a terminal on stdin is dropped, with kubectl's warning.
	if code != 0 || out != "ABC" || errOut != "Unable to use a TTY - input is not a terminal or the right kind of file\n" {
		t.Errorf("exec -it upper: %d %q %q", code, out, errOut)
	}
	if q := k.asked(); q[len(q)-1] != "/exec/default/web/app?command=upper&error=1&input=1&output=1" {
		t.Errorf("kubelet asked %s", q[len(q)-1])
	}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"exec", "web", "-c", "app", "--", "nope"}, "error: Internal error occurred: error executing command in container: exec: \"nope\": executable file not found in $PATH\n"},
		{[]string{"exec", "web", "-c", "ghost", "--", "echo"}, "Error from server (BadRequest): container ghost is not valid for pod web\n"},
		{[]string{"exec", "missing", "--", "echo"}, "Error from server (NotFound): pods \"missing\" not found\n"},
		{[]string{"exec", "done", "--", "echo"}, "error: cannot exec into a container in a completed pod; current phase is Succeeded\n"},
		{[]string{"exec", "web"}, "error: you must specify at least one command for the container\n"},
	} {
		_, errOut, code := c.run("", tc.args...)
		if code != 1 || errOut != tc.err {
			t.Errorf("%v: %d %q, want %q", tc.args, code, errOut, tc.err)
		}
	}

	dir := t.TempDir()
	if out, errOut, code := c.run("", "cp", "web:/data", filepath.Join(dir, "got"), "-c", "app"); code != 0 {
		t.Fatalf("cp from the pod: %d %q %q", code, out, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "got", "f.txt")); err != nil || string(b) != "hello" {
		t.Errorf("copied from the pod: %q, %v", b, err)
	}
	src := filepath.Join(dir, "in.txt")
	os.WriteFile(src, []byte("to the pod"), 0o600)
	if out, errOut, code := c.run("", "cp", src, "default/web:/tmp/x.txt", "-c", "app"); code != 0 {
		t.Fatalf("cp into the pod: %d %q %q", code, out, errOut)
	}
	k.mu.Lock()
	tr := tar.NewReader(bytes.NewReader(k.received))
	k.mu.Unlock()
	h, err := tr.Next()
	body, _ := io.ReadAll(tr)
	if err != nil || h.Name != "x.txt" || string(body) != "to the pod" {
		t.Errorf("the pod received %v %q (%v)", h, body, err)
	}
	if q := k.asked(); q[len(q)-1] != "/exec/default/web/app?command=tar&command=-xmf&command=-&command=-C&command=%2Ftmp&error=1&input=1&output=1" {
		t.Errorf("cp into the pod ran %s", q[len(q)-1])
	}
}

func TestPortForward(t *testing.T) {
	c, k := startStreamsCluster(t)
	r := c.start("port-forward", "pod/web", ":http", "--address", "127.0.0.1")
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 80\n`)
	r.waitFor("the listening address", func(out string) bool { return re.MatchString(out) })
	addr := "127.0.0.1:" + re.FindStringSubmatch(r.out.String())[1]
	for i := 0; i < 2; i++ {
		resp, err := http.Get("http://" + addr + "/hostname")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "web" {
			t.Errorf("GET through the forward: %q", b)
		}
	}
	r.waitFor("a line per connection", func(out string) bool { return strings.Count(out, "Handling connection for ") == 2 })
	if code := r.stop(); code != 0 {
		t.Errorf("port-forward exit %d: %s", code, r.err.String())
	}
	if q := k.asked(); len(q) != 2 || q[0] != "/portForward/default/web?port=80" {
		t.Errorf("kubelet asked %v", q)
	}

	_, errOut, code := c.run("", "port-forward", "done", "8080:80")
	if code != 1 || errOut != "error: unable to forward port because pod is not running. Current status=Succeeded\n" {
		t.Errorf("port-forward to a finished pod: %d %q", code, errOut)
	}
}
