package netexec

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func newTestServer(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	s := NewServer()
	s.Hostname = func() (string, error) { return "pod-a", nil }
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestSimpleEndpoints(t *testing.T) {
	_, ts := newTestServer(t)
	for _, tc := range []struct {
		path     string
		code     int
		body     string
		bodyHave string
	}{
		{path: "/hostname", code: 200, body: "pod-a"},
		{path: "/hostName", code: 200, body: "pod-a"},
		{path: "/echo?msg=hello%20world", code: 200, body: "hello world"},
		{path: "/echo?msg=gone&code=404", code: 404, body: "gone"},
		{path: "/echo?code=abc", code: 400, bodyHave: "must be an HTTP status code"},
		{path: "/", code: 200, bodyHave: "NOW: "},
	} {
		code, body := get(t, ts.URL+tc.path)
		if code != tc.code {
			t.Errorf("GET %s: status %d, want %d (%q)", tc.path, code, tc.code, body)
		}
		if tc.bodyHave != "" && !strings.Contains(body, tc.bodyHave) {
			t.Errorf("GET %s: body %q does not contain %q", tc.path, body, tc.bodyHave)
		} else if tc.bodyHave == "" && body != tc.body {
			t.Errorf("GET %s: body %q, want %q", tc.path, body, tc.body)
		}
	}
}

func TestClientIPIsTheCallersAddress(t *testing.T) {
	_, ts := newTestServer(t)
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /clientip HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	if body != conn.LocalAddr().String() {
		t.Errorf("/clientip = %q, want the client's ip:port %q", body, conn.LocalAddr())
	}
}

func TestHealthzFollowsReadiness(t *testing.T) {
	s, ts := newTestServer(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, ts.URL+p); code != http.StatusPreconditionFailed {
			t.Errorf("%s before ready: %d, want 412", p, code)
		}
	}
	s.SetReady(true)
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, ts.URL+p); code != 200 || body != "ok" {
			t.Errorf("%s when ready: %d %q, want 200 ok", p, code, body)
		}
	}
}

func shellOutput(t *testing.T, ts *httptest.Server, cmd string) map[string]string {
	t.Helper()
	code, body := get(t, ts.URL+"/shell?cmd="+url.QueryEscape(cmd))
	if code != 200 {
		t.Fatalf("/shell: status %d (%q)", code, body)
	}
	out := map[string]string{}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("/shell body %q is not JSON: %v", body, err)
	}
	return out
}

func TestShell(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("/bin/sh is missing")
	}
	_, ts := newTestServer(t)
	out := shellOutput(t, ts, "echo one; echo two >&2")
	if out["output"] != "one\ntwo\n" || out["error"] != "" {
		t.Errorf("/shell = %v, want combined output and no error", out)
	}
	out = shellOutput(t, ts, "exit 3")
	if out["error"] != "exit status 3" {
		t.Errorf("/shell exit 3: %v, want error \"exit status 3\"", out)
	}
}

func TestShellWithoutAShellExecsTheCommand(t *testing.T) {
	if _, err := os.Stat("/bin/echo"); err != nil {
		t.Skip("/bin/echo is missing")
	}
	s, ts := newTestServer(t)
	s.ShellPath = filepath.Join(t.TempDir(), "no-sh")
	out := shellOutput(t, ts, "/bin/echo a   b")
	if out["output"] != "a b\n" {
		t.Errorf("/shell without a shell = %v, want output \"a b\\n\"", out)
	}
}

func TestExitRespondsThenRequestsExit(t *testing.T) {
	s, ts := newTestServer(t)
	code, body := get(t, ts.URL+"/exit?code=7&timeout=2s")
	if code != 200 || body != "exiting with code 7" {
		t.Fatalf("/exit: %d %q", code, body)
	}
	select {
	case req := <-s.Exit:
		if req.Code != 7 || req.Timeout != 2*time.Second {
			t.Errorf("exit request %+v, want code 7 timeout 2s", req)
		}
	default:
		t.Fatal("/exit answered without requesting an exit")
	}
	for _, bad := range []string{"code=128", "code=x", "timeout=soon", "wait=later"} {
		if code, _ := get(t, ts.URL+"/exit?"+bad); code != http.StatusBadRequest {
			t.Errorf("/exit?%s: status %d, want 400", bad, code)
		}
	}
	select {
	case req := <-s.Exit:
		t.Errorf("an invalid /exit requested %+v", req)
	default:
	}
}

func TestRedirect(t *testing.T) {
	_, ts := newTestServer(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(ts.URL + "/redirect?location=" + url.QueryEscape("/echo?msg=x") + "&code=307")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 307 || resp.Header.Get("Location") != "/echo?msg=x" {
		t.Errorf("/redirect: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func listenUDP(t *testing.T, s *Server) net.Addr {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeUDP(conn) }()
	t.Cleanup(func() {
		conn.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeUDP: %v", err)
		}
	})
	return conn.LocalAddr()
}

func TestUDPCommands(t *testing.T) {
	s := NewServer()
	s.Hostname = func() (string, error) { return "pod-u", nil }
	addr := listenUDP(t, s)
	conn, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct{ send, want string }{
		{"hostname", "pod-u"},
		{"hostName\n", "pod-u"},
		{"echo Hello There", "Hello There"},
		{"clientip", conn.LocalAddr().String()},
	} {
		if _, err := conn.Write([]byte(tc.send)); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("UDP %q: %v", tc.send, err)
		}
		if got := string(buf[:n]); got != tc.want {
			t.Errorf("UDP %q = %q, want %q", tc.send, got, tc.want)
		}
	}
}

func TestDialReachesOtherServers(t *testing.T) {
	_, caller := newTestServer(t)
	target := NewServer()
	target.Hostname = func() (string, error) { return "pod-b", nil }
	targetHTTP := httptest.NewServer(target.Handler())
	defer targetHTTP.Close()
	udpAddr := listenUDP(t, target)

	_, httpPort, _ := net.SplitHostPort(targetHTTP.Listener.Addr().String())
	_, udpPort, _ := net.SplitHostPort(udpAddr.String())
	for _, tc := range []struct{ query, want string }{
		{"host=127.0.0.1&port=" + httpPort + "&request=hostname&tries=2", `{"responses":["pod-b","pod-b"]}`},
		{"host=127.0.0.1&port=" + udpPort + "&request=hostname&protocol=udp", `{"responses":["pod-b"]}`},
	} {
		code, body := get(t, caller.URL+"/dial?"+tc.query)
		if code != 200 || body != tc.want {
			t.Errorf("/dial?%s = %d %s, want %s", tc.query, code, body, tc.want)
		}
	}

	// A port nobody listens on: the error is reported, not a response.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	code, body := get(t, caller.URL+"/dial?host=127.0.0.1&port="+closedPort+"&request=hostname")
	var out map[string][]string
	if err := json.Unmarshal([]byte(body), &out); err != nil || code != 200 || len(out["errors"]) != 1 || len(out["responses"]) != 0 {
		t.Errorf("/dial to a closed port = %d %s, want one error", code, body)
	}

	for _, bad := range []string{"host=127.0.0.1&port=1", "host=127.0.0.1&port=1&request=x&protocol=sctp", "host=127.0.0.1&port=1&request=x&tries=z"} {
		if code, _ := get(t, caller.URL+"/dial?"+bad); code != http.StatusBadRequest {
			t.Errorf("/dial?%s: status %d, want 400", bad, code)
		}
	}
}
