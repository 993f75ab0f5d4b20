package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// LocalPathDriver is the CSI driver of the local-path StorageClass
// (manifests/addons/local-path.yaml).
const LocalPathDriver = "local-path.skiff.dev"

// LocalPathRoot is where the node's local-path volumes keep their data.
func (n *Node) LocalPathRoot() string { return filepath.Join(n.Dir, "local-path") }

// localPathSocket is the plugin's CSI endpoint: short, as a unix socket's
// path must be.
func (n *Node) localPathSocket() string { return filepath.Join(n.Dir, "local-path.sock") }

// localPathRegistration is the plugin's socket in the kubelet's plugin
// registry, <root-dir>/plugins_registry.
func (n *Node) localPathRegistration() string {
	return filepath.Join(n.KubeletDir(), "plugins_registry", LocalPathDriver+"-reg.sock")
}

// startLocalPath starts every node's skiff-local-path CSI node plugin inside
// the node, beside its kubelet: in the node's mount namespace, so the bind
// mounts it makes under the kubelet's root directory are the ones the
// kubelet and containerd see, and in its network namespace, to read PVs
// from the apiserver with the node's credentials.
func (c *Cluster) startLocalPath(ctx context.Context, o Options) error {
	bin := filepath.Join(o.BinDir, "skiff-local-path")
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintf(o.Log, "nodes: %s is missing, so the local-path StorageClass has no node plugin (make build)\n", bin)
		return nil
	}
	for _, n := range c.Nodes {
		p, err := start(o, Component{Name: "skiff-local-path-" + n.Name, Binary: "nsenter",
			Args: []string{"--net=" + n.NetNS(), "--mount=" + n.MountNS(), "--", bin,
				"--endpoint", "unix://" + n.localPathSocket(),
				"--registration-dir", filepath.Dir(n.localPathRegistration()),
				"--root", n.LocalPathRoot(),
				"--node-id", n.Name,
				"--kubeconfig", n.Kubeconfig(),
			}})
		if err != nil {
			return err
		}
		n.LocalPath = p
		if err := c.save(); err != nil {
			return err
		}
		if err := waitFile(ctx, p, n.localPathRegistration(), 30*time.Second); err != nil {
			return fmt.Errorf("%s: skiff-local-path: %w\n%s", n.Name, err, tail(p.Log, 20))
		}
		fmt.Fprintf(o.Log, "%s: skiff-local-path ready (pid %d, log %s)\n", n.Name, p.PID, p.Log)
	}
	return nil
}

// waitFile waits for path to exist while p runs.
func waitFile(ctx context.Context, p *Process, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case err := <-p.exited:
			p.exited <- err
			return fmt.Errorf("exited before making %s: %v", path, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %s", path, timeout)
		}
	}
}
