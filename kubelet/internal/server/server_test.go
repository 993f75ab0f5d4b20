package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critesting "k8s.io/cri-api/pkg/apis/testing"

	"skiff.dev/kubelet/internal/cri"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func testPod() *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web", Uid: "uid-1"},
		Spec: &corev1.PodSpec{
			Containers:     []*corev1.Container{{Name: "app"}, {Name: "sidecar"}, {Name: "gone"}},
			InitContainers: []*corev1.Container{{Name: "init"}},
		},
		Status: &corev1.PodStatus{
			ContainerStatuses: []*corev1.ContainerStatus{
				{Name: "app", ContainerID: "containerd://c2", RestartCount: 1,
					State:     &corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
					LastState: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ContainerID: "containerd://c1"}}},
				{Name: "sidecar", State: &corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}},
				// Known to the pod's status but no longer to the runtime:
				// its log is found by the kubelet's own layout.
				{Name: "gone", ContainerID: "containerd://c9", State: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ContainerID: "containerd://c9"}}},
			},
			InitContainerStatuses: []*corev1.ContainerStatus{
				{Name: "init", State: &corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}},
			},
		},
	}
}

type fixture struct {
	srv  *Server
	http *httptest.Server
	dir  string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	write := func(p, s string) string {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cur := write(filepath.Join(dir, "rt", "1.log"), "2016-10-06T00:17:09Z stdout F one\n2016-10-06T00:17:10Z stderr F two\n2016-10-06T00:17:11Z stdout F three\n")
	prev := write(filepath.Join(dir, "rt", "0.log"), "2016-10-06T00:16:00Z stdout F crashed\n")
	write(filepath.Join(dir, "pods", "default_web_uid-1", "gone", "0.log"), "2016-10-06T00:16:00Z stdout F from the layout\n")
	f := cri.NewFake()
	f.SetFakeContainers([]*critesting.FakeContainer{
		{ContainerStatus: runtimeapi.ContainerStatus{Id: "c2", State: runtimeapi.ContainerState_CONTAINER_EXITED, LogPath: cur}},
		{ContainerStatus: runtimeapi.ContainerStatus{Id: "c1", State: runtimeapi.ContainerState_CONTAINER_EXITED, LogPath: prev}},
	})
	pod := testPod()
	s, err := New(Config{
		Runtime: f, PodLogsDir: filepath.Join(dir, "pods"),
		Pod: func(ns, name string) (*corev1.Pod, bool) {
			if ns == "default" && name == "web" {
				return pod, true
			}
			return nil, false
		},
		Pods:   func() []*corev1.Pod { return []*corev1.Pod{pod} },
		Health: map[string]func(context.Context) error{"pleg": func(context.Context) error { return nil }},
		Now:    func() time.Time { return time.Date(2016, 10, 6, 0, 17, 12, 0, time.UTC) },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(s.Handler())
	t.Cleanup(h.Close)
	return &fixture{srv: s, http: h, dir: dir}
}

func (f *fixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(f.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestContainerLogs(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/containerLogs/default/web/app", 200, "one\ntwo\nthree\n"},
		{"/containerLogs/default/web/app?tailLines=1", 200, "three\n"},
		{"/containerLogs/default/web/app?sinceSeconds=2", 200, "two\nthree\n"},
		{"/containerLogs/default/web/app?sinceTime=2016-10-06T00:17:11Z", 200, "three\n"},
		{"/containerLogs/default/web/app?limitBytes=6", 200, "one\ntw"},
		{"/containerLogs/default/web/app?tailLines=1&timestamps=true", 200, "2016-10-06T00:17:11.000000000Z three\n"},
		{"/containerLogs/default/web/app?previous=true", 200, "crashed\n"},
		{"/containerLogs/default/web/gone", 200, "from the layout\n"},
		{"/containerLogs/default/web/sidecar", 400, `container "sidecar" in pod "web" is waiting to start: ContainerCreating` + "\n"},
		{"/containerLogs/default/web/init", 400, `container "init" in pod "web" is waiting to start: trying and failing to pull image` + "\n"},
		{"/containerLogs/default/web/sidecar?previous=1", 400, `previous terminated container "sidecar" in pod "web" not found` + "\n"},
		{"/containerLogs/default/web/nope", 404, `container "nope" not found in pod "web"` + "\n"},
		{"/containerLogs/default/other/app", 404, `pod "other" does not exist` + "\n"},
		{"/containerLogs/default/web/app?tailLines=x", 400, `tailLines: "x" is not an integer` + "\n"},
		{"/containerLogs/default/web/app?sinceSeconds=1&sinceTime=2016-10-06T00:17:11Z", 400, "at most one of sinceTime or sinceSeconds may be specified\n"},
		{"/containerLogs/default/web", 400, "missing container name: want /containerLogs/{namespace}/{pod}/{container}\n"},
	} {
		code, body := f.get(t, tc.path)
		if code != tc.code || body != tc.body {
			t.Errorf("GET %s = %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
		}
	}
}

func TestFollowEndsWhenTheContainerHasExited(t *testing.T) {
	f := newFixture(t)
	// c2 is exited in the runtime: follow reads to the end and returns.
	code, body := f.get(t, "/containerLogs/default/web/app?follow=true")
	if code != 200 || body != "one\ntwo\nthree\n" {
		t.Errorf("got %d %q", code, body)
	}
}

func TestPodsHealthzAndStreams(t *testing.T) {
	f := newFixture(t)
	code, body := f.get(t, "/pods")
	var list struct {
		Kind  string
		Items []struct {
			Metadata struct{ Namespace, Name string }
		}
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 {
		t.Fatalf("/pods: %d %q %v", code, body, err)
	}
	if list.Kind != "PodList" || len(list.Items) != 1 || list.Items[0].Metadata.Name != "web" {
		t.Errorf("/pods = %s", body)
	}
	if code, body := f.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, _ := f.get(t, "/exec/default/web/app?command=ls"); code != http.StatusNotImplemented {
		t.Errorf("/exec without streaming = %d", code)
	}
}

func TestStreamsAreHandedToStreaming(t *testing.T) {
	var got []string
	s, err := New(Config{Runtime: cri.NewFake(), Pod: func(string, string) (*corev1.Pod, bool) { return nil, false },
		Pods: func() []*corev1.Pod { return nil },
		Streaming: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = append(got, r.URL.Path)
		})})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/exec/ns/p/c", "/attach/ns/p/c", "/portForward/ns/p"} {
		s.Handler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	if strings.Join(got, ",") != "/exec/ns/p/c,/attach/ns/p/c,/portForward/ns/p" {
		t.Errorf("streaming got %v", got)
	}
}

// TestClientCertificateRequired serves with a generated serving pair and a
// client CA: a client without a certificate from that CA is refused at the
// handshake, one with it is served.
func TestClientCertificateRequired(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := newCA(t, dir)
	certFile, keyFile, err := EnsureSelfSigned(filepath.Join(dir, "pki"), []string{"node-1", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	// A second call keeps the pair.
	before, _ := os.ReadFile(certFile)
	if _, _, err := EnsureSelfSigned(filepath.Join(dir, "pki"), []string{"node-1", "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(certFile); string(after) != string(before) {
		t.Error("EnsureSelfSigned replaced a valid pair")
	}
	tlsCfg, err := serverTLS(certFile, keyFile, caCert)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Runtime: cri.NewFake(), Pod: func(string, string) (*corev1.Pod, bool) { return nil, false },
		Pods: func() []*corev1.Pod { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l, tlsCfg) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	pool := x509.NewCertPool()
	served, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(served)
	url := "https://" + l.Addr().String() + "/healthz"
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if resp, err := anon.Get(url); err == nil {
		resp.Body.Close()
		t.Fatal("a client without a certificate was served")
	}
	client := clientCert(t, caCert, caKey)
	authed := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{client}}}}
	resp, err := authed.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz = %d", resp.StatusCode)
	}
}

func clientCert(t *testing.T, caCertFile, caKeyFile string) tls.Certificate {
	t.Helper()
	ca, err := tls.LoadX509KeyPair(caCertFile, caKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	caX, _ := x509.ParseCertificate(ca.Certificate[0])
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caX, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// newCA writes a CA as the cluster's: no extended key usage, so it signs
// client certificates.
func newCA(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "skiff-ca"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := writeFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
