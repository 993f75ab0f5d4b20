// Package csitest is a fake CSI driver for tests: identity and node
// services on a unix socket, recording every node call.
package csitest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Call is one recorded node call.
type Call struct {
	Method   string // NodeStageVolume, NodePublishVolume, …
	Volume   string
	Path     string // staging path for (un)stage, target path for (un)publish
	Staging  string // the staging path a publish names
	ReadOnly bool
	Context  map[string]string
}

// Driver is the fake.
type Driver struct {
	csipb.UnimplementedIdentityServer
	csipb.UnimplementedNodeServer

	Name   string
	NodeID string
	Stage  bool // advertise STAGE_UNSTAGE_VOLUME
	// OnPublish and OnUnpublish run at (un)publish (tests make the
	// target a "mount" in their fake mount table there).
	OnPublish, OnUnpublish func(target string)
	// FailPublish makes NodePublishVolume fail with this message.
	FailPublish string

	Socket string

	mu    sync.Mutex
	calls []Call
}

// Start serves d on a socket in a temporary directory until the test ends.
func Start(t *testing.T, d *Driver) *Driver {
	t.Helper()
	dir, err := os.MkdirTemp("", "csi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d.Socket = filepath.Join(dir, "csi.sock")
	l, err := net.Listen("unix", d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csipb.RegisterIdentityServer(srv, d)
	csipb.RegisterNodeServer(srv, d)
	go srv.Serve(l) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	return d
}

// Calls returns the recorded calls and forgets them.
func (d *Driver) Calls() []Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.calls
	d.calls = nil
	return c
}

func (d *Driver) record(c Call) {
	d.mu.Lock()
	d.calls = append(d.calls, c)
	d.mu.Unlock()
}

func (d *Driver) GetPluginInfo(context.Context, *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	return &csipb.GetPluginInfoResponse{Name: d.Name, VendorVersion: "test"}, nil
}

func (d *Driver) NodeGetInfo(context.Context, *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	return &csipb.NodeGetInfoResponse{NodeId: d.NodeID, MaxVolumesPerNode: 7,
		AccessibleTopology: &csipb.Topology{Segments: map[string]string{"kubernetes.io/hostname": d.NodeID}}}, nil
}

func (d *Driver) NodeGetCapabilities(context.Context, *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	r := &csipb.NodeGetCapabilitiesResponse{}
	if d.Stage {
		r.Capabilities = append(r.Capabilities, &csipb.NodeServiceCapability{Type: &csipb.NodeServiceCapability_Rpc{
			Rpc: &csipb.NodeServiceCapability_RPC{Type: csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}}})
	}
	return r, nil
}

func (d *Driver) NodeStageVolume(_ context.Context, r *csipb.NodeStageVolumeRequest) (*csipb.NodeStageVolumeResponse, error) {
	if r.GetVolumeId() == "" || r.GetStagingTargetPath() == "" || r.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "missing field")
	}
	d.record(Call{Method: "NodeStageVolume", Volume: r.GetVolumeId(), Path: r.GetStagingTargetPath(), Context: r.GetVolumeContext()})
	return &csipb.NodeStageVolumeResponse{}, nil
}

func (d *Driver) NodeUnstageVolume(_ context.Context, r *csipb.NodeUnstageVolumeRequest) (*csipb.NodeUnstageVolumeResponse, error) {
	d.record(Call{Method: "NodeUnstageVolume", Volume: r.GetVolumeId(), Path: r.GetStagingTargetPath()})
	return &csipb.NodeUnstageVolumeResponse{}, nil
}

func (d *Driver) NodePublishVolume(_ context.Context, r *csipb.NodePublishVolumeRequest) (*csipb.NodePublishVolumeResponse, error) {
	if r.GetVolumeId() == "" || r.GetTargetPath() == "" || r.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "missing field")
	}
	d.record(Call{Method: "NodePublishVolume", Volume: r.GetVolumeId(), Path: r.GetTargetPath(), Staging: r.GetStagingTargetPath(),
		ReadOnly: r.GetReadonly(), Context: r.GetVolumeContext()})
	if d.FailPublish != "" {
		return nil, status.Error(codes.Internal, d.FailPublish)
	}
	if err := os.MkdirAll(r.GetTargetPath(), 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if d.OnPublish != nil {
		d.OnPublish(r.GetTargetPath())
	}
	return &csipb.NodePublishVolumeResponse{}, nil
}

func (d *Driver) NodeUnpublishVolume(_ context.Context, r *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
	d.record(Call{Method: "NodeUnpublishVolume", Volume: r.GetVolumeId(), Path: r.GetTargetPath()})
	if d.OnUnpublish != nil {
		d.OnUnpublish(r.GetTargetPath())
	}
	if err := os.RemoveAll(r.GetTargetPath()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csipb.NodeUnpublishVolumeResponse{}, nil
}
