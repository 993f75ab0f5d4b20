package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/config"
	corev1 "skiff.dev/proto/api/core/v1"
)

// Node is one simulated machine of the cluster: a network namespace and a
// persistent mount namespace of its own, in which its containerd and kubelet
// run. Its state lives in <cluster dir>/nodes/<name>.
type Node struct {
	Name   string `json:"name"`
	Index  int    `json:"index"` // 1-based; picks the /30 and the veth name
	Dir    string `json:"dir"`
	HostIf string `json:"hostIf"` // host side of the veth
	HostIP string `json:"hostIP"` // the node's gateway, and where it reaches the apiserver
	IP     string `json:"ip"`     // the node's eth0 (its InternalIP)
	// PodCIDR is set by AddPodRoutes.
	PodCIDR     string   `json:"podCIDR,omitempty"`
	Containerd  *Process `json:"containerd,omitempty"`
	Kubelet     *Process `json:"kubelet,omitempty"`
	Proxy       *Process `json:"proxy,omitempty"`
	LocalPath   *Process `json:"localPath,omitempty"` // the skiff-local-path CSI node plugin
	Mounted     []string `json:"mounted,omitempty"`   // host mounts made for this node, innermost last
	CreatedDirs []string `json:"createdDirs,omitempty"`
}

// NodeName is the name of node i (1-based).
func NodeName(i int) string { return "skiff-node-" + strconv.Itoa(i) }

func newNode(clusterDir string, i int) *Node {
	host, ip := nodeAddrs(i)
	name := NodeName(i)
	return &Node{Name: name, Index: i, Dir: filepath.Join(clusterDir, "nodes", name), HostIf: hostIfName(i), HostIP: host, IP: ip}
}

// NetNS is the node's network namespace, as `ip netns` names it.
func (n *Node) NetNS() string { return "/run/netns/" + n.Name }

// MountNS is the file that pins the node's mount namespace.
func (n *Node) MountNS() string { return filepath.Join(n.nsDir(), "mnt") }

func (n *Node) nsDir() string { return filepath.Join(n.Dir, "ns") }

// ContainerdSocket is the node's containerd (and CRI) endpoint; it is a
// plain path on the host's file system, so the host dials it directly.
func (n *Node) ContainerdSocket() string { return filepath.Join(n.Dir, "containerd.sock") }

// CNIConfDir is where the node's CNI conflist goes (the kubelet writes it).
func (n *Node) CNIConfDir() string { return filepath.Join(n.Dir, "cni", "net.d") }

// KubeletDir is the kubelet's --root-dir, rshared inside the node so that
// the kubelet's volume mounts reach containerd's mount namespace (the same).
func (n *Node) KubeletDir() string { return filepath.Join(n.Dir, "kubelet") }

// Kubeconfig is the node's client config: the server is the node's gateway.
func (n *Node) Kubeconfig() string { return filepath.Join(n.Dir, "kubelet.conf") }

// CgroupParent is the node's slice of the cgroup tree; containerd runs in
// <parent>/containerd and pods go under <parent>/kubepods.
func (n *Node) CgroupParent() string { return "/skiff/" + n.Name }

// Command runs a program inside the node: its network and mount namespaces.
func (n *Node) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.NetNS(), "--mount=" + n.MountNS(), "--", name}, args...)...)
}

// setupMountNS pins a mount namespace for n, entered from its network
// namespace so that the fresh /sys shows the node's links. Inside it: the
// host's cgroup mounts bound back under the new /sys, the node's own
// /run/containerd (shim sockets) and /var/lib/cni (CNI results and host-local
// leases: containerd 1.6 hard-codes both), and an rshared kubelet root.
func (c *Cluster) setupMountNS(n *Node) error {
	for _, d := range []string{n.nsDir(), filepath.Join(n.Dir, "run-containerd"), filepath.Join(n.Dir, "var-lib-cni"),
		filepath.Join(n.Dir, "cgroup"), n.CNIConfDir(), n.KubeletDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The mount points must exist on the host to be bound over inside.
	for _, d := range []string{"/run/containerd", "/var/lib/cni"} {
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
			n.CreatedDirs = append(n.CreatedDirs, d)
		}
	}
	// A pin may only live on a private mount (on a shared one the kernel
	// refuses it), so the ns directory is bound onto itself and made private,
	// as `ip netns` does for /run/netns.
	if err := run("mount", "--bind", n.nsDir(), n.nsDir()); err != nil {
		return err
	}
	n.Mounted = append(n.Mounted, n.nsDir())
	if err := run("mount", "--make-private", n.nsDir()); err != nil {
		return err
	}
	if err := os.WriteFile(n.MountNS(), nil, 0o644); err != nil {
		return err
	}
	cg := filepath.Join(n.Dir, "cgroup")
	script := []string{
		"set -e",
		"mount --rbind /sys/fs/cgroup " + cg,
		"mount -t sysfs sysfs /sys",
		"mount --move " + cg + " /sys/fs/cgroup",
		"mount --bind " + filepath.Join(n.Dir, "run-containerd") + " /run/containerd",
		"mount --bind " + filepath.Join(n.Dir, "var-lib-cni") + " /var/lib/cni",
		"mount --bind " + n.KubeletDir() + " " + n.KubeletDir(),
		"mount --make-rshared " + n.KubeletDir(),
	}
	// The copy of the host's mounts includes the pins of every node made
	// before; dropping them keeps one node's namespaces from holding
	// another's alive after its teardown.
	for _, m := range c.Nodes {
		script = append(script, "umount -l "+m.NetNS()+" 2>/dev/null || true")
		if m != n {
			script = append(script, "umount -l "+m.nsDir()+" 2>/dev/null || true")
		}
	}
	err := run("nsenter", "--net="+n.NetNS(), "--", "unshare", "--mount="+n.MountNS(), "--propagation", "slave",
		"sh", "-c", strings.Join(script, "\n"))
	if err != nil {
		return err
	}
	n.Mounted = append(n.Mounted, n.MountNS())
	return nil
}

func inode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// writeNodeKubeconfig gives the node's kubelet its identity,
// system:node:<name> in system:nodes, and the server address the node can
// reach: its gateway.
func writeNodeKubeconfig(dir string, n *Node, port int) error {
	return writeIdentityKubeconfig(dir, "https://"+n.HostIP+":"+strconv.Itoa(port), nodeUser(n.Name), []string{nodesGroup}, n.Kubeconfig())
}

// kubeletMetrics is where the node's kubelet serves /healthz: on the node's
// address, which the host reaches over the veth (its 127.0.0.1 is the
// node's own).
func kubeletMetrics(n *Node) string { return n.IP + ":10248" }

// kubeletArgs are the node's kubelet flags, upstream's names. No resolver
// file: pods must not inherit the machine's, which points off the machine.
func kubeletArgs(o Options, n *Node) []string {
	return append([]string{
		"--metrics-bind-address", kubeletMetrics(n),
		"--pod-logs-dir", filepath.Join(n.Dir, "pod-logs"),
		"--pod-infra-container-image", SandboxImage,
		"--resolv-conf", "",
		"--cluster-dns", ClusterDNS,
		"--cluster-domain", ClusterDomain,
		"--kubeconfig", n.Kubeconfig(),
		"--hostname-override", n.Name,
		"--node-ip", n.IP,
		"--container-runtime-endpoint", "unix://" + n.ContainerdSocket(),
		"--root-dir", n.KubeletDir(),
		"--cgroup-driver", "cgroupfs",
		"--cgroup-root", n.CgroupParent(),
		"--cni-conf-dir", n.CNIConfDir(),
		"--pod-manifest-path", filepath.Join(n.Dir, "manifests"),
		"--image-preload-dir", filepath.Join(o.BinDir, "images"),
		// No registry can give back an image collected here: the preloaded
		// ones must stay, however full the host's disk.
		"--image-gc-high-threshold", "100",
		// For the same reason, as kind does: no disk signal evicts, since
		// disk pressure would collect those images too. Memory keeps
		// upstream's threshold.
		"--eviction-hard", "memory.available<100Mi,nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%",
		// The kubelet API admits only clients of the cluster CA: the
		// apiserver with its kubelet client certificate.
		"--client-ca-file", filepath.Join((&Cluster{Dir: o.Dir}).APIServerDataDir(), "pki", "ca.crt"),
	}, o.ExtraKubeletArgs...)
}

// startNodes brings up every node's containerd and then, when the binary is
// there, its kubelet. The network and mount namespaces exist already.
func (c *Cluster) startNodes(ctx context.Context, o Options) error {
	for _, n := range c.Nodes {
		p, err := startContainerd(o, n)
		if err != nil {
			return err
		}
		n.Containerd = p
		if err := c.save(); err != nil {
			return err
		}
		if err := waitCRI(ctx, p, n.ContainerdSocket(), 30*time.Second); err != nil {
			return fmt.Errorf("%s: containerd: %w\n%s", n.Name, err, tail(p.Log, 20))
		}
		fmt.Fprintf(o.Log, "%s: containerd ready (pid %d, socket %s, log %s)\n", n.Name, p.PID, n.ContainerdSocket(), p.Log)
	}
	kubelet := filepath.Join(o.BinDir, "skiff-kubelet")
	if o.NoKubelet {
		fmt.Fprintf(o.Log, "nodes: containerd only (no kubelet asked for)\n")
		return nil
	}
	if _, err := os.Stat(kubelet); err != nil {
		fmt.Fprintf(o.Log, "nodes: %s is missing, so the nodes run containerd only and register no Node (make build)\n", kubelet)
		return nil
	}
	for _, n := range c.Nodes {
		if err := writeNodeKubeconfig(c.Dir, n, c.Port); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(n.Dir, "manifests"), 0o755); err != nil {
			return err
		}
		if err := c.startKubelet(ctx, o, n); err != nil {
			return err
		}
	}
	if err := c.routePodCIDRs(ctx, o, 30*time.Second); err != nil {
		return err
	}
	if err := c.startProxies(ctx, o); err != nil {
		return err
	}
	if err := c.startLocalPath(ctx, o); err != nil {
		return err
	}
	return c.applyAddons(ctx, o)
}

// startKubelet starts n's kubelet inside the node and waits for its
// /healthz, which needs no apiserver.
func (c *Cluster) startKubelet(ctx context.Context, o Options, n *Node) error {
	kubelet := filepath.Join(o.BinDir, "skiff-kubelet")
	p, err := start(o, Component{Name: "skiff-kubelet-" + n.Name, Binary: "nsenter",
		Args: append([]string{"--net=" + n.NetNS(), "--mount=" + n.MountNS(), "--", kubelet}, kubeletArgs(o, n)...)})
	if err != nil {
		return err
	}
	n.Kubelet = p
	if err := c.save(); err != nil {
		return err
	}
	if err := waitReady(ctx, p, "http://"+kubeletMetrics(n)+"/healthz", 30*time.Second); err != nil {
		return fmt.Errorf("%s: skiff-kubelet: %w\n%s", n.Name, err, tail(p.Log, 20))
	}
	fmt.Fprintf(o.Log, "%s: skiff-kubelet ready (pid %d, log %s)\n", n.Name, p.PID, p.Log)
	return nil
}

// RestartKubelet stops n's kubelet and starts it again with the same
// flags, as a reboot of the node's agent would.
func (c *Cluster) RestartKubelet(ctx context.Context, n *Node) error {
	if c.opts.BinDir == "" {
		return errors.New("RestartKubelet: the cluster was not started by this process")
	}
	if n.Kubelet != nil {
		stop(n.Kubelet, 10*time.Second)
	}
	return c.startKubelet(ctx, c.opts, n)
}

// routePodCIDRs waits until every node has registered and been given its
// spec.podCIDR by the controller-manager's nodeipam (in its own order, so
// read, never guessed), and routes each.
func (c *Cluster) routePodCIDRs(ctx context.Context, o Options, timeout time.Duration) error {
	cl, done, err := c.client()
	if err != nil {
		return err
	}
	defer done()
	nodes := client.For[*corev1.Node](cl, "")
	deadline := time.Now().Add(timeout)
	for _, n := range c.Nodes {
		for {
			node, err := nodes.Get(ctx, n.Name)
			if err == nil && node.GetSpec().GetPodCIDR() != "" {
				if err := c.AddPodRoutes(n.Name, node.GetSpec().GetPodCIDR()); err != nil {
					return err
				}
				fmt.Fprintf(o.Log, "%s: pod CIDR %s routed via %s\n", n.Name, n.PodCIDR, n.IP)
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: no Node with a spec.podCIDR after %s (last error: %v)", n.Name, timeout, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// downNodes tears every node down, kubelets first so nothing restarts pods,
// then pods through the CRI (so CNI releases their addresses), containerd,
// stray shims, the namespaces and the network; then it checks that nothing
// is left and reports what is.
func (c *Cluster) downNodes() error {
	var errs []error
	// Nodes stop in parallel: containerd alone takes 1–2 s to exit.
	var wg sync.WaitGroup
	nodeErrs := make([]error, len(c.Nodes))
	for i, n := range c.Nodes {
		wg.Go(func() {
			for _, p := range []*Process{n.Proxy, n.Kubelet, n.LocalPath} {
				if p != nil {
					stop(p, 10*time.Second)
				}
			}
			if n.Containerd != nil && pidAlive(n.Containerd.PID) {
				if err := removeAllPods(n.ContainerdSocket(), 30*time.Second); err != nil {
					nodeErrs[i] = fmt.Errorf("%s: removing pods: %w", n.Name, err)
				}
				stop(n.Containerd, 10*time.Second)
			}
			killShims(n.ContainerdSocket())
			killCgroup(n.CgroupParent())
		})
	}
	wg.Wait()
	errs = append(errs, nodeErrs...)
	// Whatever else entered a node (a shell through nsenter, say) goes with
	// it; otherwise it would keep the namespaces alive.
	for _, pid := range processesInNamespaces(c.Nodes) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, n := range c.Nodes {
		errs = append(errs, c.teardownMounts(n))
	}
	for _, n := range c.Nodes {
		errs = append(errs, c.teardownNodeNetwork(n))
	}
	errs = append(errs, c.teardownGuard())
	if c.MadeRunNetns {
		// `ip netns add` bound /run/netns onto itself; undo it once empty.
		if entries, err := os.ReadDir("/run/netns"); err == nil && len(entries) == 0 {
			if err := syscall.Unmount("/run/netns", 0); err == nil {
				_ = os.Remove("/run/netns")
			}
		}
		c.MadeRunNetns = false
	}
	for _, n := range c.Nodes {
		removeCgroup(n.CgroupParent())
		for _, d := range slices.Backward(n.CreatedDirs) {
			_ = os.Remove(d) // only if empty: another user may have filled it
		}
	}
	removeCgroup("/skiff")
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.Leftovers()
}

func isMountPoint(path string) bool {
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return false
	}
	for l := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[1] == path {
			return true
		}
	}
	return false
}

// pidAlive says pid runs. A zombie does not: the PID 1 of some containers
// never reaps the orphans of a detached skiff-local.
func pidAlive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// teardownMounts unmounts the pin (the namespace dies with its last process)
// and the private ns directory.
func (c *Cluster) teardownMounts(n *Node) error {
	var errs []error
	for _, m := range slices.Backward(n.Mounted) {
		if err := syscall.Unmount(m, 0); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("umount %s: %w", m, err))
		}
	}
	n.Mounted = nil
	return errors.Join(errs...)
}

// cgroupRoots are the host's cgroup hierarchies (v1 controllers and the v2
// unified mount), from /proc/mounts.
func cgroupRoots() []string {
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return nil
	}
	var roots []string
	for l := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && (f[2] == "cgroup" || f[2] == "cgroup2") && !slices.Contains(roots, f[1]) {
			roots = append(roots, f[1])
		}
	}
	return roots
}

// killCgroup SIGKILLs every process left in the node's cgroups: container
// processes whose shim was killed outlive it.
func killCgroup(parent string) {
	for _, root := range cgroupRoots() {
		_ = filepath.WalkDir(filepath.Join(root, parent), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(p)
			for f := range strings.FieldsSeq(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// removeCgroup removes the cgroup directory parent and everything under it
// in every hierarchy, deepest first; a cgroup still holding a process stays
// (and Leftovers reports it).
func removeCgroup(parent string) {
	for _, root := range cgroupRoots() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(root, parent), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			// A killed process leaves its cgroup a moment after the signal.
			deadline := time.Now().Add(2 * time.Second)
			for {
				err := os.Remove(d)
				if err == nil || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

// Leftovers lists what of the cluster's nodes is still on the machine:
// network namespaces, links, mounts, processes in the nodes' namespaces,
// cgroups, the forward guard. nil means the machine is clean.
func (c *Cluster) Leftovers() error {
	var left []string
	if out, err := output("ip", "netns", "list"); err == nil {
		for l := range strings.SplitSeq(out, "\n") {
			f := strings.Fields(l)
			if len(f) > 0 && slices.ContainsFunc(c.Nodes, func(n *Node) bool { return n.Name == f[0] }) {
				left = append(left, "network namespace "+f[0])
			}
		}
	}
	if out, err := output("ip", "-o", "link", "show"); err == nil {
		for _, n := range c.Nodes {
			if strings.Contains(out, " "+n.HostIf+"@") || strings.Contains(out, " "+n.HostIf+":") {
				left = append(left, "link "+n.HostIf)
			}
		}
	}
	if out, err := output("ip", "route", "show"); err == nil {
		for l := range strings.SplitSeq(out, "\n") {
			for _, n := range c.Nodes {
				if strings.Contains(l+" ", " via "+n.IP+" ") || strings.Contains(l+" ", " dev "+n.HostIf+" ") {
					left = append(left, "route "+strings.TrimSpace(l))
				}
			}
		}
	}
	if data, err := os.ReadFile("/proc/mounts"); err == nil {
		for l := range strings.SplitSeq(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			if strings.HasPrefix(f[1], filepath.Join(c.Dir, "nodes")+"/") ||
				slices.ContainsFunc(c.Nodes, func(n *Node) bool { return f[1] == n.NetNS() }) {
				left = append(left, "mount "+f[1])
			}
		}
	}
	for _, pid := range processesInNamespaces(c.Nodes) {
		left = append(left, fmt.Sprintf("process %d (%s) in a node's namespaces", pid, cmdline(pid)))
	}
	// containerd, its shims and the kubelet all name their node's directory.
	nodesDir := filepath.Join(c.Dir, "nodes") + "/"
	if entries, err := os.ReadDir("/proc"); err == nil && len(c.Nodes) > 0 {
		for _, e := range entries {
			if pid, err := strconv.Atoi(e.Name()); err == nil && pidAlive(pid) && strings.Contains(cmdline(pid), nodesDir) {
				left = append(left, fmt.Sprintf("process %d (%s)", pid, cmdline(pid)))
			}
		}
	}
	for _, root := range cgroupRoots() {
		for _, n := range c.Nodes {
			if _, err := os.Stat(filepath.Join(root, n.CgroupParent())); err == nil {
				left = append(left, "cgroup "+filepath.Join(root, n.CgroupParent()))
			}
		}
	}
	if len(c.Nodes) > 0 {
		if run("nft", "list", "table", "inet", nftTable) == nil {
			left = append(left, "nftables table inet "+nftTable)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind after teardown: %s", strings.Join(left, "; "))
	}
	return nil
}

func cmdline(pid int) string {
	data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.ReplaceAll(strings.TrimRight(string(data), "\x00"), "\x00", " ")
}

// processesInNamespaces are the PIDs whose network or mount namespace is one
// of the nodes'. Only namespaces still pinned count: the inode number of a
// freed namespace may already be another's.
func processesInNamespaces(nodes []*Node) []int {
	want := map[uint64]bool{}
	for _, n := range nodes {
		for _, pin := range []string{n.NetNS(), n.MountNS()} {
			if isMountPoint(pin) {
				if ino, err := inode(pin); err == nil {
					want[ino] = true
				}
			}
		}
	}
	if len(want) == 0 {
		return nil
	}
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || !pidAlive(pid) {
			continue
		}
		for _, ns := range []string{"net", "mnt"} {
			if ino, err := inode("/proc/" + e.Name() + "/ns/" + ns); err == nil && want[ino] {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// setupNodes makes o.Nodes nodes' network and mount namespaces and the
// forward guard; their processes start after the control plane.
func (c *Cluster) setupNodes(o Options, apiPort int) error {
	if o.Nodes <= 0 {
		return nil
	}
	if o.Nodes > 254 {
		return fmt.Errorf("--nodes %d: at most 254", o.Nodes)
	}
	if os.Geteuid() != 0 {
		return errors.New("nodes need root (network and mount namespaces, veths, nftables, containerd); --nodes 0 runs the control plane alone")
	}
	for _, tool := range []string{"ip", "nft", "nsenter", "unshare", "mount", "containerd", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed: run hack/install-deps.sh", tool)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return errors.New("the CNI plugins are not installed in /usr/lib/cni: run hack/install-deps.sh")
	}
	// A cluster that died without Down left its nodes behind: clear them.
	if old, err := load(c.Dir); err == nil && len(old.Nodes) > 0 {
		_ = old.downNodes()
	}
	c.MadeRunNetns = !isMountPoint("/run/netns")
	for i := 1; i <= o.Nodes; i++ {
		n := newNode(c.Dir, i)
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			return err
		}
		if err := setupNodeNetwork(n); err != nil {
			// Not ours: keep it out of the teardown.
			if strings.Contains(err.Error(), "exists already") {
				return err
			}
			c.Nodes = append(c.Nodes, n)
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		c.Nodes = append(c.Nodes, n)
		if err := c.save(); err != nil {
			return err
		}
	}
	if err := c.setupGuard(apiPort); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := c.setupMountNS(n); err != nil {
			c.save()
			return fmt.Errorf("%s: mount namespace: %w", n.Name, err)
		}
		if err := c.save(); err != nil {
			return err
		}
	}
	fmt.Fprintf(o.Log, "nodes: %d network and mount namespaces, veths %s1… on %s.0.0/16, forward guard table inet %s\n",
		len(c.Nodes), hostIfPrefix, nodeNetPrefix, nftTable)
	return nil
}

// client is an admin client of the cluster, and what closes it.
func (c *Cluster) client() (*client.Client, func(), error) {
	_, conn, err := config.Open(c.Kubeconfig())
	if err != nil {
		return nil, nil, err
	}
	return client.New(conn), func() { conn.Close() }, nil
}

// waitDefaultServiceAccount waits for the controller-manager to create
// default/default: until then the ServiceAccount admission plugin refuses
// every pod of the namespace, as upstream's does (its e2e framework waits
// the same way).
func (c *Cluster) waitDefaultServiceAccount(ctx context.Context, timeout time.Duration) error {
	cl, done, err := c.client()
	if err != nil {
		return err
	}
	defer done()
	sas := client.For[*corev1.ServiceAccount](cl, "default")
	deadline := time.Now().Add(timeout)
	for {
		_, err := sas.Get(ctx, "default")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no ServiceAccount default/default after %s (last error: %v)", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
