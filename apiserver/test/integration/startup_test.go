package integration

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"skiff.dev/apiserver/app"
)

// fullEtcd is an external etcd whose space quota is used up: it still
// serves reads, and refuses every write, as a real one does until an
// operator compacts and defragments it.
func fullEtcd(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cfg := embed.NewConfig()
	cfg.Name = "full"
	cfg.Dir = filepath.Join(dir, "data")
	sock := url.URL{Scheme: "unix", Path: filepath.Join(dir, "etcd.sock")}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{sock}, []url.URL{sock}
	peer := url.URL{Scheme: "http", Host: "localhost:0"}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = nil, []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	cfg.QuotaBackendBytes = 1 << 20
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("etcd not ready")
	}
	endpoint := "unix://" + sock.Path
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	blob := strings.Repeat("x", 64<<10)
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("etcd never ran out of space")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cli.Put(ctx, "/filler/"+strings.Repeat("k", i%50)+string(rune('a'+i%26)), blob)
		cancel()
		if errors.Is(err, rpctypes.ErrNoSpace) {
			return endpoint
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A start-up that cannot finish (here: the default namespaces cannot be
// written) is an error that says why, not a clean exit.
func TestFailedStartIsAnErrorThatSaysWhy(t *testing.T) {
	endpoint := fullEtcd(t)
	o := *app.NewOptions()
	o.DataDir = t.TempDir()
	o.BindAddress, o.SecurePort, o.MetricsBindAddress = "127.0.0.1", 0, ""
	o.AdvertiseAddress = "192.0.2.1"
	o.EtcdServers = []string{endpoint}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := app.New(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(ctx)
	if ctx.Err() != nil {
		t.Fatal("Start did not return on its own")
	}
	if err == nil || !strings.Contains(err.Error(), "create namespace default") || !strings.Contains(err.Error(), "space exceeded") {
		t.Fatalf("Start = %v, want the namespace that could not be created and why", err)
	}
	select {
	case <-s.Ready():
		t.Fatal("a server that failed to start said it was ready")
	default:
	}
}
