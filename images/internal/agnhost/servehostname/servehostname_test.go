package servehostname

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestHTTPAnswersHostnameOnEveryPath(t *testing.T) {
	ts := httptest.NewServer(HTTPHandler("backend-1", true))
	defer ts.Close()
	for _, p := range []string{"/", "/anything"} {
		resp, err := http.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "backend-1" || !resp.Close {
			t.Errorf("GET %s = %q (close %v), want backend-1 and a closed connection", p, b, resp.Close)
		}
	}
}

func TestTCPWritesHostnameAndCloses(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ServeTCP(l, "backend-2") }()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(conn) // returns only because the server closes
	conn.Close()
	if err != nil || string(b) != "backend-2" {
		t.Errorf("TCP read %q, %v; want backend-2 then EOF", b, err)
	}
	l.Close()
	if err := <-done; err != nil {
		t.Errorf("ServeTCP: %v", err)
	}
}

func TestUDPAnswersHostname(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ServeUDP(pc, "backend-3") }()
	conn, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("anything"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "backend-3" {
		t.Errorf("UDP reply %q, %v; want backend-3", buf[:n], err)
	}
	pc.Close()
	if err := <-done; err != nil {
		t.Errorf("ServeUDP: %v", err)
	}
}

func TestHTTPWithTCPIsRefused(t *testing.T) {
	if err := Main([]string{"--tcp"}); err == nil {
		t.Error("serve-hostname --tcp (with --http defaulting to true) started; upstream refuses it")
	}
}
