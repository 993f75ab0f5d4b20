// Package cri connects the kubelet to a container runtime through the
// Container Runtime Interface: a thin adapter from cri-api's service
// interfaces to its gRPC clients over a unix socket, as upstream's
// cri-client does without its logging and metrics layers.
package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Runtime is what the kubelet needs of a CRI runtime.
type Runtime interface {
	cri.RuntimeService
	cri.ImageManagerService
}

// maxMsgSize is upstream's: a node with thousands of containers lists more
// than gRPC's default 4 MiB.
const maxMsgSize = 16 * 1024 * 1024

// ExitError is ExecSync's answer for a command that ran and exited non-zero,
// as upstream's utilexec.CodeExitError: callers tell "the probe failed" from
// "the runtime could not run it".
type ExitError struct {
	Code   int32
	Stdout []byte
	Stderr []byte
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("command terminated with exit code %d", e.Code)
}

// ExitStatus is the command's exit code.
func (e *ExitError) ExitStatus() int { return int(e.Code) }

// Dial connects to the runtime at endpoint ("unix:///run/containerd/containerd.sock"
// or a bare path) and checks that it serves CRI v1. timeout bounds the
// connection and every later unary call, as --runtime-request-timeout does.
func Dial(ctx context.Context, endpoint string, timeout time.Duration) (Runtime, error) {
	path, err := socketPath(endpoint)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	conn, err := grpc.NewClient("passthrough:///"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", strings.TrimPrefix(addr, "passthrough:///"))
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("cri: dial %s: %w", endpoint, err)
	}
	r := &remote{conn: conn, rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn), timeout: timeout}
	vctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// WaitForReady makes the first call wait for the socket instead of
	// failing at once while the runtime is still starting.
	if _, err := r.rt.Version(vctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cri: runtime at %s does not serve runtime.v1: %w", endpoint, err)
	}
	return r, nil
}

func socketPath(endpoint string) (string, error) {
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
		endpoint = strings.TrimPrefix(endpoint, "unix://")
	case strings.Contains(endpoint, "://"):
		return "", fmt.Errorf("cri: endpoint %q: only unix sockets are supported", endpoint)
	}
	if endpoint == "" {
		return "", errors.New("cri: empty endpoint")
	}
	return endpoint, nil
}

type remote struct {
	conn    *grpc.ClientConn
	rt      runtimeapi.RuntimeServiceClient
	img     runtimeapi.ImageServiceClient
	timeout time.Duration
}

var _ Runtime = (*remote)(nil)

func (r *remote) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

func (r *remote) Version(ctx context.Context, apiVersion string) (*runtimeapi.VersionResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.rt.Version(ctx, &runtimeapi.VersionRequest{Version: apiVersion})
}

func (r *remote) Status(ctx context.Context, verbose bool) (*runtimeapi.StatusResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.rt.Status(ctx, &runtimeapi.StatusRequest{Verbose: verbose})
}

func (r *remote) RuntimeConfig(ctx context.Context) (*runtimeapi.RuntimeConfigResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.rt.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{})
}

func (r *remote) UpdateRuntimeConfig(ctx context.Context, c *runtimeapi.RuntimeConfig) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.UpdateRuntimeConfig(ctx, &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: c})
	return err
}

// Close closes the connection; the image service shares it, so a second
// Close is harmless.
func (r *remote) Close(context.Context) error {
	err := r.conn.Close()
	if err != nil && strings.Contains(err.Error(), "closing") {
		return nil
	}
	return err
}

// Sandboxes.

func (r *remote) RunPodSandbox(ctx context.Context, config *runtimeapi.PodSandboxConfig, runtimeHandler string) (string, error) {
	// Upstream doubles the timeout: sandbox creation includes CNI set-up.
	ctx, cancel := context.WithTimeout(ctx, 2*r.timeout)
	defer cancel()
	resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: config, RuntimeHandler: runtimeHandler})
	if err != nil {
		return "", err
	}
	if resp.PodSandboxId == "" {
		return "", fmt.Errorf("cri: RunPodSandbox for %s returned no id", config.GetMetadata().GetName())
	}
	return resp.PodSandboxId, nil
}

func (r *remote) StopPodSandbox(ctx context.Context, id string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
	return err
}

func (r *remote) RemovePodSandbox(ctx context.Context, id string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
	return err
}

func (r *remote) PodSandboxStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: verbose})
}

func (r *remote) ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: filter})
	if err != nil {
		return nil, err
	}
	return resp.Items, nil
}

func (r *remote) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.rt.PortForward(ctx, req)
}

func (r *remote) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.rt.UpdatePodSandboxResources(ctx, req)
}

func (r *remote) CheckpointPod(ctx context.Context, req *runtimeapi.CheckpointPodRequest) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.CheckpointPod(ctx, req)
	return err
}

func (r *remote) RestorePod(ctx context.Context, req *runtimeapi.RestorePodRequest) (*runtimeapi.RestorePodResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.rt.RestorePod(ctx, req)
}

// Containers.

func (r *remote) CreateContainer(ctx context.Context, sandboxID string, config *runtimeapi.ContainerConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sandboxID, Config: config, SandboxConfig: sandboxConfig})
	if err != nil {
		return "", err
	}
	if resp.ContainerId == "" {
		return "", fmt.Errorf("cri: CreateContainer for %s returned no id", config.GetMetadata().GetName())
	}
	return resp.ContainerId, nil
}

func (r *remote) StartContainer(ctx context.Context, id string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
	return err
}

// StopContainer waits for the grace period on top of the request timeout:
// the runtime holds the call until the container is gone.
func (r *remote) StopContainer(ctx context.Context, id string, timeout int64) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout+time.Duration(timeout)*time.Second)
	defer cancel()
	_, err := r.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: timeout})
	return err
}

func (r *remote) RemoveContainer(ctx context.Context, id string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
	return err
}

func (r *remote) ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: filter})
	if err != nil {
		return nil, err
	}
	return resp.Containers, nil
}

func (r *remote) ContainerStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.ContainerStatusResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: verbose})
}

func (r *remote) UpdateContainerResources(ctx context.Context, id string, res *runtimeapi.ContainerResources) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: res.GetLinux(), Windows: res.GetWindows()})
	return err
}

// ExecSync runs cmd and returns an *ExitError when it exits non-zero.
func (r *remote) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) ([]byte, []byte, error) {
	d := r.timeout
	if timeout > 0 {
		d += timeout
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	resp, err := r.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: int64(timeout.Seconds())})
	if err != nil {
		return nil, nil, err
	}
	if resp.ExitCode != 0 {
		return resp.Stdout, resp.Stderr, &ExitError{Code: resp.ExitCode, Stdout: resp.Stdout, Stderr: resp.Stderr}
	}
	return resp.Stdout, resp.Stderr, nil
}

func (r *remote) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.rt.Exec(ctx, req)
}

func (r *remote) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.rt.Attach(ctx, req)
}

func (r *remote) ReopenContainerLog(ctx context.Context, id string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: id})
	return err
}

func (r *remote) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.CheckpointContainer(ctx, req)
	return err
}

// GetContainerEvents streams until ctx ends or the stream breaks.
func (r *remote) GetContainerEvents(ctx context.Context, ch chan *runtimeapi.ContainerEventResponse, established func(runtimeapi.RuntimeService_GetContainerEventsClient)) error {
	stream, err := r.rt.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		return err
	}
	if established != nil {
		established(stream)
	}
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if ev != nil {
			select {
			case ch <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// Stats.

func (r *remote) ContainerStats(ctx context.Context, id string) (*runtimeapi.ContainerStats, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		return nil, err
	}
	return resp.Stats, nil
}

func (r *remote) ListContainerStats(ctx context.Context, filter *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: filter})
	if err != nil {
		return nil, err
	}
	return resp.Stats, nil
}

func (r *remote) PodSandboxStats(ctx context.Context, id string) (*runtimeapi.PodSandboxStats, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: id})
	if err != nil {
		return nil, err
	}
	return resp.Stats, nil
}

func (r *remote) ListPodSandboxStats(ctx context.Context, filter *runtimeapi.PodSandboxStatsFilter) ([]*runtimeapi.PodSandboxStats, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{Filter: filter})
	if err != nil {
		return nil, err
	}
	return resp.Stats, nil
}

func (r *remote) ListMetricDescriptors(ctx context.Context) ([]*runtimeapi.MetricDescriptor, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.Descriptors, nil
}

func (r *remote) ListPodSandboxMetrics(ctx context.Context) ([]*runtimeapi.PodSandboxMetrics, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.PodMetrics, nil
}

// Images.

func (r *remote) ListImages(ctx context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.img.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: filter})
	if err != nil {
		return nil, err
	}
	return resp.Images, nil
}

func (r *remote) ImageStatus(ctx context.Context, image *runtimeapi.ImageSpec, verbose bool) (*runtimeapi.ImageStatusResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: image, Verbose: verbose})
}

// PullImage has no timeout of its own, as upstream: a large image takes
// as long as it takes; the caller's context bounds it.
func (r *remote) PullImage(ctx context.Context, image *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error) {
	resp, err := r.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: image, Auth: auth, SandboxConfig: sandboxConfig})
	if err != nil {
		return "", err
	}
	if resp.ImageRef == "" {
		return "", fmt.Errorf("cri: PullImage %s returned no image reference", image.GetImage())
	}
	return resp.ImageRef, nil
}

func (r *remote) RemoveImage(ctx context.Context, image *runtimeapi.ImageSpec) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: image})
	return err
}

func (r *remote) ImageFsInfo(ctx context.Context) (*runtimeapi.ImageFsInfoResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
}
