package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// SandboxImage is the pause image every node's containerd uses.
const SandboxImage = "skiff.local/pause:3.10"

// containerdConfig is node n's config.toml (containerd 1.6, version 2):
// every path its own, so that nodes share nothing but the kernel.
// The registry section has config_path and nothing else: setting mirrors
// too makes the CRI plugin fail to load. Hosts under it (TrustRegistry) are
// read at every pull, so tests add them to a running node.
func containerdConfig(n *Node) string {
	d := func(p string) string { return strconv.Quote(filepath.Join(n.Dir, p)) }
	return `version = 2
root = ` + d("containerd/root") + `
state = ` + d("containerd/state") + `
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = ` + strconv.Quote(n.ContainerdSocket()) + `

[cgroup]
  path = ` + strconv.Quote(n.CgroupParent()+"/containerd") + `

[plugins."io.containerd.internal.v1.opt"]
  path = ` + d("containerd/opt") + `

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ` + strconv.Quote(SandboxImage) + `
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = ` + d("runc") + `
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = ` + strconv.Quote(n.CNIConfDir()) + `
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ` + strconv.Quote(n.RegistryConfigDir()) + `
`
}

// RegistryConfigDir is the node's containerd registry hosts directory
// (certs.d): one directory per registry host, named host[:port], holding
// that registry's hosts.toml.
func (n *Node) RegistryConfigDir() string { return filepath.Join(n.Dir, "certs.d") }

// TrustRegistry lets the node's containerd pull from the plain-HTTP registry
// at hostPort (for instance the node's gateway and a port opened with
// AllowHostPort): containerd speaks HTTPS to every registry not on
// localhost unless its hosts.toml names an http:// server.
func (n *Node) TrustRegistry(hostPort string) error {
	if _, _, err := net.SplitHostPort(hostPort); err != nil {
		return fmt.Errorf("registry %q: %w", hostPort, err)
	}
	dir := filepath.Join(n.RegistryConfigDir(), hostPort)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	server := strconv.Quote("http://" + hostPort)
	hosts := fmt.Sprintf(`server = %s

[host.%s]
  capabilities = ["pull", "resolve"]
  skip_verify = true
`, server, server)
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644)
}

// startContainerd writes the node's config and starts containerd inside the
// node (nsenter execs it, so the PID is containerd's).
func startContainerd(o Options, n *Node) (*Process, error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, errors.New("containerd is not installed (hack/install-deps.sh)")
	}
	if err := os.MkdirAll(n.RegistryConfigDir(), 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(n)), 0o644); err != nil {
		return nil, err
	}
	return start(o, Component{Name: "containerd-" + n.Name, Binary: "nsenter",
		Args: []string{"--net=" + n.NetNS(), "--mount=" + n.MountNS(), "--", bin, "--config", cfg}})
}

// DialCRI connects to a CRI endpoint (a unix socket path).
func DialCRI(socket string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// waitCRI polls the CRI Version call until containerd answers: the socket
// exists well before the CRI plugin is loaded.
func waitCRI(ctx context.Context, p *Process, socket string, timeout time.Duration) error {
	conn, err := DialCRI(socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	deadline := time.Now().Add(timeout)
	var last error
	for {
		select {
		case err := <-p.exited:
			p.exited <- err
			return fmt.Errorf("exited before it was ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, last = rt.Version(cctx, &runtimeapi.VersionRequest{})
		cancel()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CRI not answering after %s: %v", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeAllPods stops and removes every pod sandbox through the CRI, so
// that CNI DEL runs and host-local releases the addresses.
func removeAllPods(socket string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := DialCRI(socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if status.Code(err) == codes.Unavailable {
		// containerd is gone: the namespaces' teardown ends what it ran.
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range resp.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", s.Id, err))
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", s.Id, err))
		}
	}
	return errors.Join(errs...)
}

// shimPIDs are the containerd shims serving the containerd at socket, found
// by their -address argument (they outlive containerd by design).
func shimPIDs(socket string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == socket {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// killShims ends the shims left by the node's containerd: SIGTERM, then
// SIGKILL for any still there after two seconds.
func killShims(socket string) {
	pids := shimPIDs(socket)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, pid := range pids {
		for pidAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
