// Package nodes tests skiff-local's nodes on this machine: two nodes, each
// in network and mount namespaces of its own with its own containerd, reach
// each other and the apiserver, cannot route anywhere else, run pods through
// the CRI, and leave nothing behind. No kubelet: this is the plumbing under it.
package nodes

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client/config"
	"skiff.dev/e2e/local"
)

const busyboxImage = "skiff.local/busybox:1.35"

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestTwoNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nodes need root (network and mount namespaces, veths, nftables)")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Skip("containerd is not installed: run hack/install-deps.sh")
	}
	binDir, _ := filepath.Abs("../../bin")
	for _, b := range []string{"skiff-apiserver", "skiff-scheduler", "skiff-controller-manager"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			t.Fatalf("%s/%s is missing: run `make build` (or `make e2e`) first", binDir, b)
		}
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := local.Up(ctx, local.Options{Dir: dir, BinDir: binDir, Nodes: 2, NoKubelet: true, Log: logWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	down := false
	t.Cleanup(func() {
		if !down {
			if err := c.Down(); err != nil {
				t.Error(err)
			}
		}
	})
	if len(c.Nodes) != 2 || c.Nodes[0].Name != "skiff-node-1" || c.Nodes[1].Name != "skiff-node-2" {
		t.Fatalf("nodes: %+v", c.Nodes)
	}

	t.Run("each node has its own containerd in its own namespaces", func(t *testing.T) {
		for _, n := range c.Nodes {
			rt := criClient(t, n)
			v, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
			if err != nil {
				t.Fatalf("%s: CRI Version: %v", n.Name, err)
			}
			if v.RuntimeName != "containerd" {
				t.Errorf("%s: runtime %q, want containerd", n.Name, v.RuntimeName)
			}
			pid := strconv.Itoa(n.Containerd.PID)
			if ino := inode(t, "/proc/"+pid+"/ns/net"); ino != inode(t, n.NetNS()) {
				t.Errorf("%s: containerd is not in the node's network namespace", n.Name)
			}
			// Seen through containerd's own root, /var/lib/cni is the
			// node's directory and /sys shows the node's links.
			if inode(t, "/proc/"+pid+"/root/var/lib/cni") != inode(t, filepath.Join(n.Dir, "var-lib-cni")) {
				t.Errorf("%s: /var/lib/cni inside the node is not its own", n.Name)
			}
			if inode(t, "/proc/"+pid+"/root/run/containerd") != inode(t, filepath.Join(n.Dir, "run-containerd")) {
				t.Errorf("%s: /run/containerd inside the node is not its own", n.Name)
			}
			links, _ := os.ReadDir("/proc/" + pid + "/root/sys/class/net")
			var names []string
			for _, l := range links {
				names = append(names, l.Name())
			}
			if got := strings.Join(names, ","); got != "eth0,lo" {
				t.Errorf("%s: /sys/class/net inside the node lists %s, want eth0,lo", n.Name, got)
			}
			if _, err := os.Stat("/proc/" + pid + "/root/sys/fs/cgroup/memory" + n.CgroupParent() + "/containerd"); err != nil {
				t.Errorf("%s: containerd's cgroup under the node's parent: %v", n.Name, err)
			}
		}
	})

	t.Run("nodes reach each other across namespaces", func(t *testing.T) {
		for _, pair := range [][2]*local.Node{{c.Nodes[0], c.Nodes[1]}, {c.Nodes[1], c.Nodes[0]}} {
			from, to := pair[0], pair[1]
			addr := serveHello(t, to, "hello from "+to.Name)
			got, err := fetch(from.NetNS(), hostPort(net.JoinHostPort(to.IP, addr.Port())))
			if err != nil {
				t.Fatalf("%s → %s: %v", from.Name, to.Name, err)
			}
			if got != "hello from "+to.Name {
				t.Errorf("%s → %s: %q", from.Name, to.Name, got)
			}
		}
	})

	t.Run("nodes reach the apiserver at their gateway", func(t *testing.T) {
		cfg, err := config.Load(c.Kubeconfig())
		if err != nil {
			t.Fatal(err)
		}
		r, err := cfg.Resolve("")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range c.Nodes {
			tc := r.TLS.Clone()
			tc.ServerName = n.HostIP
			tc.NextProtos = []string{"h2"}
			err := inNetNS(n.NetNS(), func() error {
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", net.JoinHostPort(n.HostIP, strconv.Itoa(c.Port)), tc)
				if err != nil {
					return err
				}
				return conn.Close()
			})
			if err != nil {
				t.Errorf("%s: TLS to the apiserver at %s:%d: %v", n.Name, n.HostIP, c.Port, err)
			}
		}
	})

	t.Run("the forward guard keeps nodes from routing anywhere else", func(t *testing.T) {
		// A namespace the host routes to but which is no node: without the
		// guard node 1 would reach it through the host.
		outside := outsideNamespace(t)
		addr := serveHelloIn(t, outside.ns, outside.ip, "outside")
		if got, err := fetch("", addr); err != nil || got != "outside" {
			t.Fatalf("host → outside namespace (the control): %q, %v", got, err)
		}
		got, err := fetch(c.Nodes[0].NetNS(), addr)
		if err == nil {
			t.Fatalf("skiff-node-1 reached %s through the host (%q): the forward guard lets it out", addr, got)
		}
	})

	t.Run("pods on both nodes reach each other", func(t *testing.T) {
		images := filepath.Join(binDir, "images")
		tars, _ := filepath.Glob(filepath.Join(images, "*.tar"))
		if len(tars) == 0 {
			t.Skipf("no image tarballs in %s: run `make images`", images)
		}
		var ips []string
		var pods []string
		for i, n := range c.Nodes {
			importImages(t, n, tars)
			podCIDR := fmt.Sprintf("10.244.%d.0/24", i)
			writeCNIConfig(t, n, podCIDR)
			if err := c.AddPodRoutes(n.Name, podCIDR); err != nil {
				t.Fatal(err)
			}
			name := "web-" + n.Name
			sandbox, ip := runWebPod(t, ctx, n, name)
			if _, cidr, _ := net.ParseCIDR(podCIDR); !cidr.Contains(net.ParseIP(ip)) {
				t.Fatalf("%s: pod IP %s outside the node's pod CIDR %s", n.Name, ip, podCIDR)
			}
			ips = append(ips, ip)
			pods = append(pods, sandbox)
		}
		for _, n := range c.Nodes {
			leases, _ := filepath.Glob(filepath.Join(n.Dir, "var-lib-cni", "networks", "skiff", "10.244.*"))
			if len(leases) != 1 {
				t.Errorf("%s: host-local leases in the node's own /var/lib/cni: %v, want one", n.Name, leases)
			}
		}
		// From the host, from node 1 to node 2's pod, and pod to pod both
		// ways, always by body.
		for i, ip := range ips {
			want := "hello from web-" + c.Nodes[i].Name
			if got, err := httpGet("", ip); err != nil || got != want {
				t.Errorf("host → pod on %s (%s): %q, %v", c.Nodes[i].Name, ip, got, err)
			}
		}
		if got, err := httpGet(c.Nodes[0].NetNS(), ips[1]); err != nil || got != "hello from web-skiff-node-2" {
			t.Errorf("skiff-node-1 → pod on skiff-node-2: %q, %v", got, err)
		}
		for i, j := range []int{1, 0} {
			rt := criClient(t, c.Nodes[i])
			cs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: pods[i]}})
			if err != nil || len(cs.Containers) != 1 {
				t.Fatalf("containers of %s: %v %v", pods[i], cs, err)
			}
			out, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: cs.Containers[0].Id, Timeout: 10,
				Cmd: []string{"timeout", "5", "wget", "-qO-", "http://" + ips[j] + ":8080/"}})
			if err != nil {
				t.Fatal(err)
			}
			want := "hello from web-" + c.Nodes[j].Name
			if got := strings.TrimSpace(string(out.Stdout)); out.ExitCode != 0 || got != want {
				t.Errorf("pod on %s → pod on %s: exit %d, %q (stderr %q)", c.Nodes[i].Name, c.Nodes[j].Name, out.ExitCode, got, out.Stderr)
			}
		}
	})

	t.Run("teardown leaves nothing", func(t *testing.T) {
		if err := c.Leftovers(); err == nil || !strings.Contains(err.Error(), "network namespace skiff-node-1") {
			t.Errorf("Leftovers on a running cluster: %v, want it to name the nodes' namespaces", err)
		}
		down = true
		if err := c.Down(); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
		if strings.Contains(string(out), "skiff-node-") {
			t.Errorf("network namespaces left: %s", out)
		}
		out, _ = exec.Command("ip", "-o", "link", "show").CombinedOutput()
		for _, n := range c.Nodes {
			if strings.Contains(string(out), " "+n.HostIf+"@") {
				t.Errorf("link %s left", n.HostIf)
			}
		}
		mounts, _ := os.ReadFile("/proc/mounts")
		if strings.Contains(string(mounts), dir) {
			t.Errorf("mounts under %s left:\n%s", dir, mounts)
		}
		for _, n := range c.Nodes {
			if _, err := os.Stat("/sys/fs/cgroup/memory" + n.CgroupParent()); err == nil {
				t.Errorf("cgroup %s left", n.CgroupParent())
			}
			if pids := shims(n.ContainerdSocket()); len(pids) > 0 {
				t.Errorf("%s: shims left: %v", n.Name, pids)
			}
			// host-local keeps one file per leased address: CNI DEL ran.
			leases, _ := filepath.Glob(filepath.Join(n.Dir, "var-lib-cni", "networks", "skiff", "10.244.*"))
			if len(leases) > 0 {
				t.Errorf("%s: addresses still leased: %v", n.Name, leases)
			}
		}
		if exec.Command("nft", "list", "table", "inet", "skiff-local").Run() == nil {
			t.Error("nftables table inet skiff-local left")
		}
	})
}

func criClient(t testing.TB, n *local.Node) runtimeapi.RuntimeServiceClient {
	t.Helper()
	conn, err := local.DialCRI(n.ContainerdSocket())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// inNetNS runs fn on a thread moved into the network namespace at path
// ("" = the host's). The thread is never unlocked, so it ends with the
// goroutine instead of going back to the pool in the wrong namespace.
func inNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %v", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

type hostPort string

func (h hostPort) Port() string { _, p, _ := net.SplitHostPort(string(h)); return p }

// serveHello listens in node n's namespace and answers every connection
// with msg.
func serveHello(t *testing.T, n *local.Node, msg string) hostPort {
	return serveHelloIn(t, n.NetNS(), n.IP, msg)
}

func serveHelloIn(t *testing.T, ns, ip, msg string) hostPort {
	t.Helper()
	var l net.Listener
	if err := inNetNS(ns, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(ip, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(conn, msg)
			conn.Close()
		}
	}()
	return hostPort(l.Addr().String())
}

// fetch connects from namespace ns to addr and reads until the server
// closes.
func fetch(ns string, addr hostPort) (string, error) {
	var got string
	err := inNetNS(ns, func() error {
		conn, err := net.DialTimeout("tcp", string(addr), time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		data, err := io.ReadAll(conn)
		got = string(data)
		return err
	})
	return got, err
}

func httpGet(ns, ip string) (string, error) {
	var got string
	err := inNetNS(ns, func() error {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "8080"), 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", ip)
		data, err := io.ReadAll(conn)
		if _, body, ok := strings.Cut(string(data), "\r\n\r\n"); ok {
			got = strings.TrimSpace(body)
		}
		return err
	})
	return got, err
}

type outsideNS struct{ ns, ip string }

// outsideNamespace is a network namespace joined to the host by a veth
// whose name the guard does not match, with a route back to the nodes.
func outsideNamespace(t *testing.T) outsideNS {
	t.Helper()
	const name, hostIf = "skiff-test-outside", "sktest0"
	steps := [][]string{
		{"ip", "netns", "add", name},
		{"ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"ip", "addr", "add", "10.251.0.1/30", "dev", hostIf},
		{"ip", "link", "set", hostIf, "up"},
		{"ip", "-n", name, "addr", "add", "10.251.0.2/30", "dev", "eth0"},
		{"ip", "-n", name, "link", "set", "eth0", "up"},
		{"ip", "-n", name, "route", "add", "10.250.0.0/16", "via", "10.251.0.1"},
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", hostIf).Run()
		exec.Command("ip", "netns", "del", name).Run()
	})
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return outsideNS{ns: "/run/netns/" + name, ip: "10.251.0.2"}
}

func importImages(t testing.TB, n *local.Node, tars []string) {
	t.Helper()
	for _, tar := range tars {
		out, err := exec.Command("ctr", "--address", n.ContainerdSocket(), "-n", "k8s.io", "images", "import", tar).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: import %s: %v: %s", n.Name, tar, err, out)
		}
	}
	out, _ := exec.Command("ctr", "--address", n.ContainerdSocket(), "-n", "k8s.io", "images", "ls", "-q").CombinedOutput()
	for _, want := range []string{local.SandboxImage, busyboxImage} {
		if !strings.Contains(string(out), want) {
			t.Skipf("%s is not among the tarballs in bin/images: run `make images`", want)
		}
	}
}

// writeCNIConfig is what the kubelet will write: a bridge with host-local
// IPAM over the node's pod CIDR, leases in the node's own directory.
func writeCNIConfig(t testing.TB, n *local.Node, podCIDR string) {
	t.Helper()
	conf := `{
  "cniVersion": "1.0.0",
  "name": "skiff",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "` + podCIDR + `"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`
	if err := os.WriteFile(filepath.Join(n.CNIConfDir(), "10-skiff.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runWebPod runs a pod with a busybox httpd answering "hello from <name>"
// and returns its sandbox ID and IP.
func runWebPod(t *testing.T, ctx context.Context, n *local.Node, name string) (string, string) {
	t.Helper()
	rt := criClient(t, n)
	meta := &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: name + "-uid"}
	sc := &runtimeapi.PodSandboxConfig{Metadata: meta, Hostname: name, LogDirectory: filepath.Join(n.Dir, "pod-logs", name),
		Linux: &runtimeapi.LinuxPodSandboxConfig{CgroupParent: n.CgroupParent() + "/kubepods/pod" + name}}
	var sandbox string
	// The CNI config is picked up asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sc})
		if err == nil {
			sandbox = resp.PodSandboxId
			break
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "cni") {
			t.Fatalf("%s: RunPodSandbox: %v", n.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cc := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "web"},
		Image:    &runtimeapi.ImageSpec{Image: busyboxImage},
		Command:  []string{"sh", "-c", "mkdir -p /www && echo hello from " + name + " > /www/index.html && exec httpd -f -p 8080 -h /www"},
		LogPath:  "web.log",
	}
	cr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sandbox, Config: cc, SandboxConfig: sc})
	if err != nil {
		t.Fatalf("%s: CreateContainer: %v", n.Name, err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatalf("%s: StartContainer: %v", n.Name, err)
	}
	st, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sandbox})
	if err != nil {
		t.Fatal(err)
	}
	ip := st.Status.GetNetwork().GetIp()
	// httpd is up once it answers; poll from the host.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if got, err := httpGet("", ip); err == nil && got != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: pod %s (%s) does not answer on :8080", n.Name, name, ip)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return sandbox, ip
}

func shims(socket string) []string {
	out, _ := exec.Command("pgrep", "-f", "containerd-shim.*-address "+socket).Output()
	return strings.Fields(string(out))
}
