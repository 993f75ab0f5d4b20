// Package etcd starts the embedded etcd that makes one skiff-apiserver binary a
// whole control plane, and dials an external etcd cluster when one is given.
//
// The embedded member listens for clients on a unix socket inside the data
// directory and on no peer port at all, so two apiservers on one machine (tests,
// a second local cluster) can never collide on an address.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Server is a running embedded etcd member.
type Server struct {
	etcd     *embed.Etcd
	Endpoint string // "unix:///…/etcd.sock", written to <dir>/endpoint for etcdctl
}

// Start runs an embedded single-member etcd with its data in dir.
func Start(ctx context.Context, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(abs, "etcd.sock")
	// A stale socket from a killed process would make listen fail.
	_ = os.Remove(sock)
	cfg := embed.NewConfig()
	cfg.Name = "skiff"
	cfg.Dir = filepath.Join(abs, "data")
	cfg.ListenClientUrls = []url.URL{{Scheme: "unix", Path: sock}}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	// A single member never talks to peers; advertise a URL nobody listens on
	// so the cluster membership is well formed.
	peer := url.URL{Scheme: "http", Host: "localhost:0"}
	cfg.ListenPeerUrls = nil
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(abs, "etcd.log")}
	// Skiff compacts on its own schedule (--etcd-compaction-interval).
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "0"
	cfg.QuotaBackendBytes = 8 << 30
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("embedded etcd did not become ready in 60s")
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	s := &Server{etcd: e, Endpoint: "unix://" + sock}
	if err := os.WriteFile(filepath.Join(abs, "endpoint"), []byte(s.Endpoint+"\n"), 0o600); err != nil {
		e.Close()
		return nil, err
	}
	return s, nil
}

// Err reports a fatal error of the running member.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the member cleanly: in-flight requests finish and the WAL is synced.
func (s *Server) Close() {
	s.etcd.Close()
}

// Dial connects to etcd endpoints ("unix:///path", "http://host:2379", …).
func Dial(ctx context.Context, endpoints []string) (*clientv3.Client, error) {
	for i, e := range endpoints {
		endpoints[i] = strings.TrimSpace(e)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 10 * time.Second,
		Context:     ctx,
		Logger:      zap.NewNop(),
		// Large lists of objects come back in one response.
		MaxCallRecvMsgSize: 256 << 20,
		DialOptions:        []grpc.DialOption{},
	})
	if err != nil {
		return nil, fmt.Errorf("dial etcd %v: %w", endpoints, err)
	}
	return cli, nil
}
