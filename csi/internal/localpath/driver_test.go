package localpath

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
}

func mountCap() *csipb.VolumeCapability {
	return &csipb.VolumeCapability{AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
}

func publish(t *testing.T, d *Driver, id, target string, ro bool) {
	t.Helper()
	if _, err := d.NodePublishVolume(context.Background(), &csipb.NodePublishVolumeRequest{VolumeId: id, TargetPath: target,
		VolumeCapability: mountCap(), Readonly: ro}); err != nil {
		t.Fatalf("NodePublishVolume %s: %v", id, err)
	}
}

func unpublish(t *testing.T, d *Driver, id, target string) {
	t.Helper()
	if _, err := d.NodeUnpublishVolume(context.Background(), &csipb.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatalf("NodeUnpublishVolume %s: %v", id, err)
	}
}

func TestPublishWriteUnpublishKeepsData(t *testing.T) {
	needRoot(t)
	root, pods := t.TempDir(), t.TempDir()
	d := New("node-1", root, nil)
	target := filepath.Join(pods, "uid-1", "mount")
	publish(t, d, "pvc-1", target, false)
	publish(t, d, "pvc-1", target, false) // idempotent
	if m, _ := isMountPoint(target); !m {
		t.Fatal("target is not a mount point after NodePublishVolume")
	}
	// What the pod writes lands in the volume's directory.
	if err := os.WriteFile(filepath.Join(target, "hello"), []byte("world"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "pvc-1", "hello"))
	if err != nil || string(b) != "world" {
		t.Fatalf("volume dir has %q, %v", b, err)
	}
	unpublish(t, d, "pvc-1", target)
	unpublish(t, d, "pvc-1", target) // idempotent
	if m, _ := isMountPoint(target); m {
		t.Error("still mounted after NodeUnpublishVolume")
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("target left: %v", err)
	}
	// The data stays for the next pod.
	target2 := filepath.Join(pods, "uid-2", "mount")
	publish(t, d, "pvc-1", target2, false)
	defer unpublish(t, d, "pvc-1", target2)
	if b, err := os.ReadFile(filepath.Join(target2, "hello")); err != nil || string(b) != "world" {
		t.Fatalf("second pod reads %q, %v", b, err)
	}
}

func TestReadOnlyPublish(t *testing.T) {
	needRoot(t)
	root, pods := t.TempDir(), t.TempDir()
	d := New("node-1", root, nil)
	target := filepath.Join(pods, "mount")
	publish(t, d, "pvc-ro", target, true)
	defer unpublish(t, d, "pvc-ro", target)
	if err := os.WriteFile(filepath.Join(target, "x"), nil, 0o644); err == nil {
		t.Fatal("wrote through a read-only publish")
	}
}

func TestCleanupRemovesOnlyDeletedVolumes(t *testing.T) {
	needRoot(t)
	root, pods := t.TempDir(), t.TempDir()
	d := New("node-1", root, nil)
	for _, id := range []string{"pvc-keep", "pvc-gone", "pvc-busy"} {
		if err := os.MkdirAll(filepath.Join(root, id), 0o777); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, id, "f"), []byte(id), 0o644)
	}
	// pvc-busy's directory is itself a mount point: never removed through.
	busy := filepath.Join(root, "pvc-busy")
	if err := bindMount(t.TempDir(), busy, false); err != nil {
		t.Fatal(err)
	}
	defer unmount(busy)
	removed, err := d.Cleanup(map[string]bool{"pvc-keep": true})
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != "pvc-gone" {
		t.Errorf("removed %v, want [pvc-gone]", removed)
	}
	if _, err := os.Stat(filepath.Join(root, "pvc-gone")); !os.IsNotExist(err) {
		t.Errorf("pvc-gone left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "pvc-keep", "f")); err != nil {
		t.Errorf("pvc-keep lost its data: %v", err)
	}
	_ = pods
}

func TestRequestsRefused(t *testing.T) {
	d := New("node-1", t.TempDir(), nil)
	ctx := context.Background()
	for name, req := range map[string]*csipb.NodePublishVolumeRequest{
		"escaping id":   {VolumeId: "../etc", TargetPath: "/tmp/x", VolumeCapability: mountCap()},
		"no target":     {VolumeId: "pvc-1", VolumeCapability: mountCap()},
		"no capability": {VolumeId: "pvc-1", TargetPath: "/tmp/x"},
		"block": {VolumeId: "pvc-1", TargetPath: "/tmp/x", VolumeCapability: &csipb.VolumeCapability{
			AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}}}},
	} {
		if _, err := d.NodePublishVolume(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	info, err := d.NodeGetInfo(ctx, &csipb.NodeGetInfoRequest{})
	if err != nil || info.GetNodeId() != "node-1" || info.GetAccessibleTopology().GetSegments()[TopologyKey] != "node-1" {
		t.Errorf("NodeGetInfo = %v, %v", info, err)
	}
	caps, err := d.NodeGetCapabilities(ctx, &csipb.NodeGetCapabilitiesRequest{})
	if err != nil || len(caps.GetCapabilities()) != 0 {
		t.Errorf("NodeGetCapabilities = %v, %v; want none (no staging)", caps, err)
	}
}
