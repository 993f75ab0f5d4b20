// Package csi is the kubelet's side of the Container Storage Interface, as
// upstream's pkg/volume/csi: a client of one driver's node service over its
// unix socket (Client), and the registry of the node's drivers (Plugins),
// which the plugin manager fills as drivers' registration sockets come and
// go and which keeps the node's CSINode object in step.
package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// maxSocketPath is what fits in sockaddr_un's sun_path with its NUL.
const maxSocketPath = 107

// SocketPath turns an endpoint, unix:///path or a plain /path, into the
// socket's path.
func SocketPath(endpoint string) (string, error) {
	p := strings.TrimPrefix(endpoint, "unix://")
	if p == "" || !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("endpoint %q: want unix:///path or an absolute path", endpoint)
	}
	if len(p) > maxSocketPath {
		return "", fmt.Errorf("endpoint %q: a unix socket path is at most %d bytes", endpoint, maxSocketPath)
	}
	return p, nil
}

// Client is the node (and identity) service of one CSI driver.
type Client struct {
	conn     *grpc.ClientConn
	node     csipb.NodeClient
	identity csipb.IdentityClient

	mu   sync.Mutex
	caps map[csipb.NodeServiceCapability_RPC_Type]bool // nil until first asked
}

// Dial connects to the driver at endpoint. The connection is made lazily
// by gRPC, so Dial fails only on a malformed endpoint.
func Dial(endpoint string) (*Client, error) {
	path, err := SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}))
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, node: csipb.NewNodeClient(conn), identity: csipb.NewIdentityClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// NodeInfo is what NodeGetInfo tells of the node.
type NodeInfo struct {
	NodeID     string
	MaxVolumes int64
	// Topology is the node's accessible topology segment, e.g.
	// kubernetes.io/hostname=skiff-node-1.
	Topology map[string]string
}

// NodeGetInfo asks the driver for the node's ID and topology.
func (c *Client) NodeGetInfo(ctx context.Context) (NodeInfo, error) {
	r, err := c.node.NodeGetInfo(ctx, &csipb.NodeGetInfoRequest{})
	if err != nil {
		return NodeInfo{}, err
	}
	if r.GetNodeId() == "" {
		return NodeInfo{}, errors.New("NodeGetInfo returned an empty node id")
	}
	return NodeInfo{NodeID: r.GetNodeId(), MaxVolumes: r.GetMaxVolumesPerNode(), Topology: r.GetAccessibleTopology().GetSegments()}, nil
}

// capabilities asks NodeGetCapabilities once; later calls answer from the
// cache (a driver's capabilities do not change while it is registered).
func (c *Client) capabilities(ctx context.Context) (map[csipb.NodeServiceCapability_RPC_Type]bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.caps != nil {
		return c.caps, nil
	}
	r, err := c.node.NodeGetCapabilities(ctx, &csipb.NodeGetCapabilitiesRequest{})
	if err != nil {
		return nil, err
	}
	caps := map[csipb.NodeServiceCapability_RPC_Type]bool{}
	for _, cp := range r.GetCapabilities() {
		if t := cp.GetRpc().GetType(); t != csipb.NodeServiceCapability_RPC_UNKNOWN {
			caps[t] = true
		}
	}
	c.caps = caps
	return caps, nil
}

// StageUnstage says whether the driver advertises STAGE_UNSTAGE_VOLUME, so
// that every volume is staged once per node before it is published into
// pods.
func (c *Client) StageUnstage(ctx context.Context) (bool, error) {
	caps, err := c.capabilities(ctx)
	if err != nil {
		return false, fmt.Errorf("NodeGetCapabilities: %w", err)
	}
	return caps[csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME], nil
}

// NodeStageVolume stages a volume at req's staging path.
func (c *Client) NodeStageVolume(ctx context.Context, req *csipb.NodeStageVolumeRequest) error {
	_, err := c.node.NodeStageVolume(ctx, req)
	return wrap("NodeStageVolume", err)
}

// NodeUnstageVolume undoes NodeStageVolume.
func (c *Client) NodeUnstageVolume(ctx context.Context, volumeID, stagingPath string) error {
	_, err := c.node.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: volumeID, StagingTargetPath: stagingPath})
	return wrap("NodeUnstageVolume", err)
}

// NodePublishVolume makes the volume appear at req's target path.
func (c *Client) NodePublishVolume(ctx context.Context, req *csipb.NodePublishVolumeRequest) error {
	_, err := c.node.NodePublishVolume(ctx, req)
	return wrap("NodePublishVolume", err)
}

// NodeUnpublishVolume undoes NodePublishVolume at targetPath.
func (c *Client) NodeUnpublishVolume(ctx context.Context, volumeID, targetPath string) error {
	_, err := c.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: targetPath})
	return wrap("NodeUnpublishVolume", err)
}

func wrap(call string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("rpc error: %s: %w", call, err)
}
