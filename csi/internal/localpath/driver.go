// Package localpath is the skiff-local-path CSI driver: node-local
// directories as volumes. Its node service makes a volume's directory,
// <root>/<volumeHandle>, at NodePublishVolume and bind-mounts it on the
// target path; NodeUnpublishVolume unmounts it and keeps the data. Cleanup
// removes the directories whose PersistentVolume is gone. Provisioning is
// the controller-manager's (its local-path provisioner): the controller
// service only answers ControllerGetCapabilities, with none.
package localpath

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// DriverName is the CSI driver's name (the StorageClass's provisioner).
const DriverName = "local-path.skiff.dev"

// TopologyKey is the segment the driver reports the node in, the key PVs'
// node affinity uses.
const TopologyKey = "kubernetes.io/hostname"

// Version is the driver's vendor version.
const Version = "v0.1.0"

// Driver serves CSI's identity, controller and node services.
type Driver struct {
	csipb.UnimplementedIdentityServer
	csipb.UnimplementedControllerServer
	csipb.UnimplementedNodeServer

	Name   string
	NodeID string
	Root   string
	Log    *slog.Logger

	// mu orders the calls on one volume (CSI allows a CO to send them
	// concurrently; a plugin may answer Aborted, this one waits).
	mu sync.Mutex
}

// New returns a driver that keeps volumes under root.
func New(nodeID, root string, log *slog.Logger) *Driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{Name: DriverName, NodeID: nodeID, Root: root, Log: log}
}

// VolumeDir is where a volume's data lives.
func (d *Driver) VolumeDir(volumeID string) string { return filepath.Join(d.Root, volumeID) }

// validID refuses volume IDs that would leave the root.
func validID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "volume ID missing in request")
	}
	if id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return status.Errorf(codes.InvalidArgument, "volume ID %q is not a valid directory name", id)
	}
	return nil
}

// Identity service.

func (d *Driver) GetPluginInfo(context.Context, *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	return &csipb.GetPluginInfoResponse{Name: d.Name, VendorVersion: Version}, nil
}

func (d *Driver) GetPluginCapabilities(context.Context, *csipb.GetPluginCapabilitiesRequest) (*csipb.GetPluginCapabilitiesResponse, error) {
	return &csipb.GetPluginCapabilitiesResponse{Capabilities: []*csipb.PluginCapability{
		{Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{Type: csipb.PluginCapability_Service_CONTROLLER_SERVICE}}},
		{Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{Type: csipb.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS}}},
	}}, nil
}

func (d *Driver) Probe(context.Context, *csipb.ProbeRequest) (*csipb.ProbeResponse, error) {
	if _, err := os.Stat(d.Root); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "root %s: %v", d.Root, err)
	}
	return &csipb.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// Controller service: capabilities only.

func (d *Driver) ControllerGetCapabilities(context.Context, *csipb.ControllerGetCapabilitiesRequest) (*csipb.ControllerGetCapabilitiesResponse, error) {
	return &csipb.ControllerGetCapabilitiesResponse{}, nil
}

// Node service.

func (d *Driver) NodeGetInfo(context.Context, *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	return &csipb.NodeGetInfoResponse{NodeId: d.NodeID,
		AccessibleTopology: &csipb.Topology{Segments: map[string]string{TopologyKey: d.NodeID}}}, nil
}

func (d *Driver) NodeGetCapabilities(context.Context, *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	// No STAGE_UNSTAGE_VOLUME: a directory needs no per-node staging.
	return &csipb.NodeGetCapabilitiesResponse{}, nil
}

func (d *Driver) NodePublishVolume(_ context.Context, req *csipb.NodePublishVolumeRequest) (*csipb.NodePublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if err := validID(id); err != nil {
		return nil, err
	}
	if target == "" {
		return nil, status.Error(codes.InvalidArgument, "target path missing in request")
	}
	capability := req.GetVolumeCapability()
	if capability == nil {
		return nil, status.Error(codes.InvalidArgument, "volume capability missing in request")
	}
	if capability.GetBlock() != nil {
		return nil, status.Error(codes.InvalidArgument, "block volumes are not supported")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dir := d.VolumeDir(id)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, status.Errorf(codes.Internal, "making %s: %v", dir, err)
	}
	// World-writable as other local-path provisioners make them: the
	// pod's user is not known here (no fsGroup support).
	if err := os.Chmod(dir, 0o777); err != nil {
		return nil, status.Errorf(codes.Internal, "chmod %s: %v", dir, err)
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "making target %s: %v", target, err)
	}
	mounted, err := isMountPoint(target)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if mounted {
		return &csipb.NodePublishVolumeResponse{}, nil // published already
	}
	if err := bindMount(dir, target, req.GetReadonly()); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	d.Log.Info("Published volume", "volume", id, "target", target, "readOnly", req.GetReadonly())
	return &csipb.NodePublishVolumeResponse{}, nil
}

func (d *Driver) NodeUnpublishVolume(_ context.Context, req *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if err := validID(id); err != nil {
		return nil, err
	}
	if target == "" {
		return nil, status.Error(codes.InvalidArgument, "target path missing in request")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		mounted, err := isMountPoint(target)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		if !mounted {
			break
		}
		if err := unmount(target); err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
	}
	// The plugin removes the target it made (CSI spec).
	if err := os.Remove(target); err != nil && !os.IsNotExist(err) {
		return nil, status.Errorf(codes.Internal, "removing %s: %v", target, err)
	}
	d.Log.Info("Unpublished volume", "volume", id, "target", target)
	return &csipb.NodeUnpublishVolumeResponse{}, nil
}

// Cleanup removes every volume directory under the root whose name is not
// in keep (the volume handles of the driver's existing PVs). It returns
// what it removed.
func (d *Driver) Cleanup(keep map[string]bool) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ents, err := os.ReadDir(d.Root)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []string
	for _, e := range ents {
		if !e.IsDir() || keep[e.Name()] || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := d.VolumeDir(e.Name())
		if m, err := isMountPoint(dir); err != nil || m {
			continue // never remove anything through a mount
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		d.Log.Info("Removed the directory of a deleted volume", "volume", e.Name(), "dir", dir)
		removed = append(removed, e.Name())
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("cleanup: %s", strings.Join(errs, "; "))
	}
	return removed, nil
}
