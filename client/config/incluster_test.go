package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// serviceAccountDir stands a temporary directory in for the pod's mount.
func serviceAccountDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := ServiceAccountDir
	ServiceAccountDir = dir
	t.Cleanup(func() { ServiceAccountDir = old })
	return dir
}

// tokenServer is a TLS gRPC server that records the authorization
// metadata of each health check.
func tokenServer(t *testing.T, ca *testCA) (addr string, seen <-chan string) {
	t.Helper()
	srvCert, srvKey := ca.issue(t, "server", x509.ExtKeyUsageServerAuth, net.ParseIP("127.0.0.1"))
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}})))
	ch := make(chan string, 10)
	healthpb.RegisterHealthServer(gs, authRecorder{health.NewServer(), ch})
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String(), ch
}

type authRecorder struct {
	*health.Server
	seen chan<- string
}

func (h authRecorder) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h.seen <- firstOf(md.Get("authorization"))
	return h.Server.Check(ctx, req)
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func TestInClusterConfig(t *testing.T) {
	ca := newTestCA(t)
	addr, seen := tokenServer(t, ca)
	host, port, _ := net.SplitHostPort(addr)
	t.Setenv("KUBERNETES_SERVICE_HOST", host)
	t.Setenv("KUBERNETES_SERVICE_PORT", port)
	t.Setenv("POD_NAMESPACE", "")
	dir := serviceAccountDir(t, map[string]string{"token": "first-token\n", "ca.crt": string(ca.pem), "namespace": "team-a"})

	r, err := InClusterConfig()
	if err != nil {
		t.Fatal(err)
	}
	if r.Server != addr || r.Namespace != "team-a" || r.BearerTokenFile != filepath.Join(dir, "token") {
		t.Errorf("resolved server %q namespace %q token file %q", r.Server, r.Namespace, r.BearerTokenFile)
	}
	conn, err := r.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	now := time.Now()
	r.tokenCreds().now = func() time.Time { return now }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check := func() string {
		t.Helper()
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		return <-seen
	}
	if got := check(); got != "Bearer first-token" {
		t.Errorf("authorization %q, want Bearer first-token", got)
	}

	// The kubelet rotates the token; it is read again once a minute.
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("second-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(30 * time.Second)
	if got := check(); got != "Bearer first-token" {
		t.Errorf("within the minute: %q, want the token read last", got)
	}
	now = now.Add(31 * time.Second)
	if got := check(); got != "Bearer second-token" {
		t.Errorf("after the minute: %q, want the rotated token", got)
	}
	// A file that vanishes mid-rotation costs nothing: the last token stays.
	os.Remove(filepath.Join(dir, "token"))
	now = now.Add(2 * time.Minute)
	if got := check(); got != "Bearer second-token" {
		t.Errorf("token file gone: %q, want the last token", got)
	}

	t.Setenv("POD_NAMESPACE", "from-env")
	if r, err := InClusterConfig(); err == nil {
		t.Errorf("no token file: resolved %+v", r)
	}
	os.WriteFile(filepath.Join(dir, "token"), []byte("t"), 0o600)
	if r, err := InClusterConfig(); err != nil || r.Namespace != "from-env" {
		t.Errorf("POD_NAMESPACE: %v, %v", r, err)
	}
}

func TestNotInCluster(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	serviceAccountDir(t, map[string]string{"token": "t"})
	if _, err := InClusterConfig(); !errors.Is(err, ErrNotInCluster) {
		t.Errorf("err = %v, want ErrNotInCluster", err)
	}
}

func TestKubeconfigTokenFileIsRelativeToTheConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config")
	c := NewAdmin("https://127.0.0.1:6443", nil, nil, nil)
	c.Users[0].User = User{TokenFile: "sa-token"}
	if err := c.Write(path); err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := loaded.Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	if r.BearerTokenFile != filepath.Join(dir, "sa-token") {
		t.Errorf("token file %q", r.BearerTokenFile)
	}
}
