package app

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"skiff.dev/client/fake"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func dial(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestRunServesRegistrationAndCSIAndRemovesSockets(t *testing.T) {
	dir, err := os.MkdirTemp("", "lp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	o := NewOptions()
	o.Endpoint = "unix://" + filepath.Join(dir, "csi", "csi.sock")
	o.RegistrationDir = filepath.Join(dir, "reg")
	o.Root = filepath.Join(dir, "data")
	o.NodeID = "node-1"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o, slog.New(slog.DiscardHandler)) }()
	reg := filepath.Join(o.RegistrationDir, "local-path.skiff.dev-reg.sock")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(reg); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	info, err := registerapi.NewRegistrationClient(dial(t, reg)).GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetType() != "CSIPlugin" || info.GetName() != "local-path.skiff.dev" || info.GetEndpoint() != filepath.Join(dir, "csi", "csi.sock") {
		t.Fatalf("GetInfo = %v", info)
	}
	conn := dial(t, info.GetEndpoint())
	ni, err := csipb.NewNodeClient(conn).NodeGetInfo(ctx, &csipb.NodeGetInfoRequest{})
	if err != nil || ni.GetNodeId() != "node-1" {
		t.Fatalf("NodeGetInfo = %v, %v", ni, err)
	}
	pi, err := csipb.NewIdentityClient(conn).GetPluginInfo(ctx, &csipb.GetPluginInfoRequest{})
	if err != nil || pi.GetName() != "local-path.skiff.dev" {
		t.Fatalf("GetPluginInfo = %v, %v", pi, err)
	}
	cc, err := csipb.NewControllerClient(conn).ControllerGetCapabilities(ctx, &csipb.ControllerGetCapabilitiesRequest{})
	if err != nil || len(cc.GetCapabilities()) != 0 {
		t.Fatalf("ControllerGetCapabilities = %v, %v", cc, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{reg, info.GetEndpoint()} {
		if _, err := os.Stat(s); !os.IsNotExist(err) {
			t.Errorf("socket %s left after exit: %v", s, err)
		}
	}
}

func TestKeepSetHasOnlyThisDriversVolumes(t *testing.T) {
	pv := func(name, driver string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: name}, Spec: &corev1.PersistentVolumeSpec{
			PersistentVolumeSource: &corev1.PersistentVolumeSource{Csi: &corev1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: name}}}}
	}
	cs := fake.NewClientset(pv("pvc-a", "local-path.skiff.dev"), pv("pvc-b", "other.csi.dev"))
	defer cs.Close()
	keep, err := KeepSet(context.Background(), cs.Client)
	if err != nil {
		t.Fatal(err)
	}
	if len(keep) != 1 || !keep["pvc-a"] {
		t.Errorf("keep = %v, want only pvc-a", keep)
	}
}
