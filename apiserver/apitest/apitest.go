// Package apitest runs a real skiff-apiserver in-process, on an embedded etcd
// in a temporary directory and on 127.0.0.1 ports chosen by the kernel, for
// integration tests of the apiserver and of the components that talk to it.
package apitest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"skiff.dev/apiserver/app"
	"skiff.dev/client/config"
	"skiff.dev/proto/apipb"
)

// Server is one running apiserver and an admin connection to it.
type Server struct {
	t       testing.TB
	Opts    app.Options
	Server  *app.Server
	Conn    *grpc.ClientConn
	API     apipb.APIClient
	cancel  context.CancelFunc
	done    chan error
	Metrics string // "http://127.0.0.1:port"
}

// Start runs an apiserver with its data in a fresh temporary directory.
func Start(t testing.TB, mutate ...func(*app.Options)) *Server {
	t.Helper()
	o := *app.NewOptions()
	o.DataDir = t.TempDir()
	o.BindAddress = "127.0.0.1"
	o.SecurePort = 0
	o.MetricsBindAddress = "127.0.0.1:0"
	o.ShutdownTimeout = 5 * time.Second
	// As upstream's integration tests: no controller-manager creates the
	// "default" service accounts here, so the ServiceAccount plugin would
	// refuse every pod. Tests of it turn it back on.
	o.DisableAdmissionPlugins = []string{"ServiceAccount"}
	// The kubernetes Service's endpoint: no pod dials it here, and a fixed
	// address keeps tests off the host's interfaces (a sandbox may have
	// none but loopback, which the apiserver refuses).
	o.AdvertiseAddress = "192.0.2.1"
	for _, m := range mutate {
		m(&o)
	}
	s := &Server{t: t, Opts: o}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := app.New(ctx, s.Opts, log)
	if err != nil {
		cancel()
		s.t.Fatalf("apiserver: %v", err)
	}
	s.Server, s.cancel, s.done = srv, cancel, make(chan error, 1)
	go func() { s.done <- srv.Start(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-s.done:
		s.t.Fatalf("apiserver stopped before ready: %v", err)
	case <-time.After(60 * time.Second):
		s.t.Fatal("apiserver not ready in 60s")
	}
	if a := srv.MetricsAddr(); a != nil {
		s.Metrics = "http://" + a.String()
	}
	cfg, err := config.Load(srv.AdminConfig())
	if err != nil {
		s.t.Fatal(err)
	}
	r, err := cfg.Resolve("")
	if err != nil {
		s.t.Fatal(err)
	}
	s.Conn, err = r.Dial()
	if err != nil {
		s.t.Fatal(err)
	}
	s.API = apipb.NewAPIClient(s.Conn)
}

// Stop shuts the apiserver down gracefully; safe to call twice.
func (s *Server) Stop() {
	if s.cancel == nil {
		return
	}
	s.Conn.Close()
	s.cancel()
	s.cancel = nil
	if err := <-s.done; err != nil {
		s.t.Errorf("apiserver shutdown: %v", err)
	}
}

// Restart stops the apiserver and starts it again on the same data
// directory and the same port, as an operator restarting the process would.
func (s *Server) Restart() {
	s.t.Helper()
	port := s.Server.Addr().(*net.TCPAddr).Port
	s.Stop()
	s.Opts.SecurePort = port
	s.start()
}

// EtcdClient is a client of the server's embedded etcd, closed when the test
// ends: benchmarks measure their limit, raw etcd writes, on it.
func (s *Server) EtcdClient() *clientv3.Client {
	s.t.Helper()
	ep, err := os.ReadFile(filepath.Join(s.Opts.DataDir, "etcd", "endpoint"))
	if err != nil {
		s.t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{strings.TrimSpace(string(ep))}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cli.Close() })
	return cli
}

// AdminConfig is the path of the admin kubeconfig.
func (s *Server) AdminConfig() string { return s.Server.AdminConfig() }
