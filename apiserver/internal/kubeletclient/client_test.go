package kubeletclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/gorilla/websocket"

	"skiff.dev/apiserver/internal/pki"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func nodeFor(t *testing.T, addr string) *corev1.Node {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1"}, Status: &corev1.NodeStatus{
		Addresses:       []*corev1.NodeAddress{{Type: "Hostname", Address: "n1.example"}, {Type: "InternalIP", Address: host}},
		DaemonEndpoints: &corev1.NodeDaemonEndpoints{KubeletEndpoint: &corev1.DaemonEndpoint{Port: int32(p)}},
	}}
}

func TestAddress(t *testing.T) {
	n := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n"}, Status: &corev1.NodeStatus{
		Addresses: []*corev1.NodeAddress{{Type: "Hostname", Address: "n"}, {Type: "ExternalIP", Address: "1.2.3.4"}, {Type: "InternalIP", Address: "10.250.1.2"}}}}
	if a, err := Address(n); err != nil || a != "10.250.1.2:10250" {
		t.Errorf("Address = %q, %v; want the InternalIP and the default port", a, err)
	}
	n.Status.Addresses = n.Status.Addresses[:1]
	n.Status.DaemonEndpoints = &corev1.NodeDaemonEndpoints{KubeletEndpoint: &corev1.DaemonEndpoint{Port: 11250}}
	if a, err := Address(n); err != nil || a != "n:11250" {
		t.Errorf("Address = %q, %v", a, err)
	}
	n.Status.Addresses = nil
	if _, err := Address(n); err == nil || err.Error() != `node "n" has no address` {
		t.Errorf("no address: %v", err)
	}
}

// kubelet is a TLS server that requires a client certificate of the
// cluster CA, as a kubelet with --client-ca-file, serving from a
// certificate the cluster CA signed (so --kubelet-certificate-authority
// can verify it).
func kubelet(t *testing.T, b *pki.Bundle, h http.Handler) *httptest.Server {
	t.Helper()
	caPEM, err := os.ReadFile(b.CACert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	serving, err := tls.LoadX509KeyPair(b.ServerCert, b.ServerKey) // SANs include 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(h)
	s.TLS = &tls.Config{ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, Certificates: []tls.Certificate{serving}}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func TestGetPresentsTheClientCertificate(t *testing.T) {
	b, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	k := kubelet(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/containerLogs/ns/p/missing" {
			http.Error(w, `container "missing" not found in pod "p"`, http.StatusNotFound)
			return
		}
		io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName+" "+r.URL.RequestURI())
	}))
	node := nodeFor(t, k.Listener.Addr().String())
	c := New(Config{CertFile: b.KubeletClientCert, KeyFile: b.KubeletClientKey, CAFile: b.CACert})
	resp, err := c.Get(context.Background(), node, "/containerLogs/ns/p/c", url.Values{"follow": {"true"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "kube-apiserver-kubelet-client /containerLogs/ns/p/c?follow=true" {
		t.Errorf("kubelet saw %q", body)
	}
	_, err = c.Get(context.Background(), node, "/containerLogs/ns/p/missing", nil)
	var ke *Error
	if !errors.As(err, &ke) || ke.Code != 404 || ke.Message != `container "missing" not found in pod "p"` {
		t.Errorf("404: %v", err)
	}

	// Without a client certificate the kubelet refuses the handshake.
	if _, err := New(Config{CAFile: b.CACert}).Get(context.Background(), node, "/healthz", nil); err == nil {
		t.Error("served without a client certificate")
	}
	// A CA that did not sign the kubelet's certificate fails verification.
	other, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{CertFile: b.KubeletClientCert, KeyFile: b.KubeletClientKey, CAFile: other.CACert}).Get(context.Background(), node, "/healthz", nil); err == nil {
		t.Error("an unverifiable kubelet certificate was accepted")
	}
	// A missing CA file is every request's error.
	if _, err := New(Config{CAFile: filepath.Join(t.TempDir(), "nope.crt")}).Get(context.Background(), node, "/healthz", nil); err == nil {
		t.Error("a missing CA file went unreported")
	}
}

func TestDialNegotiatesTheSubprotocol(t *testing.T) {
	b, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	up := websocket.Upgrader{Subprotocols: []string{"v4.channel.k8s.io"}}
	k := kubelet(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("command") == "" {
			http.Error(w, "you must specify at least one command", http.StatusBadRequest)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.WriteMessage(websocket.BinaryMessage, append([]byte{1}, r.URL.Query()["command"][1]...))
	}))
	node := nodeFor(t, k.Listener.Addr().String())
	// No --kubelet-certificate-authority: the serving certificate is not verified.
	c := New(Config{CertFile: b.KubeletClientCert, KeyFile: b.KubeletClientKey})
	ws, err := c.Dial(context.Background(), node, "/exec/ns/p/c", url.Values{"command": {"echo", "hi"}}, []string{"v4.channel.k8s.io"})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if ws.Subprotocol() != "v4.channel.k8s.io" {
		t.Errorf("subprotocol %q", ws.Subprotocol())
	}
	_, msg, err := ws.ReadMessage()
	if err != nil || string(msg) != "\x01hi" {
		t.Errorf("message %q, %v", msg, err)
	}
	_, err = c.Dial(context.Background(), node, "/exec/ns/p/c", nil, []string{"v4.channel.k8s.io"})
	var ke *Error
	if !errors.As(err, &ke) || ke.Code != 400 || ke.Message != "you must specify at least one command" {
		t.Errorf("refused upgrade: %v", err)
	}
}
