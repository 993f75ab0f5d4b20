package cni

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"
)

// nodeExec runs plugins inside the test's node namespace, as containerd
// runs them inside a skiff-local node: the bridge, the host-side veth and
// portmap's rules all land there, never on the host.
type nodeExec struct {
	*invoke.DefaultExec
	netns string
}

func (e nodeExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+e.netns, "--", path)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s%s", filepath.Base(path), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNetns runs f on a thread in the namespace; the thread is not handed
// back to the runtime (it exits with the goroutine), so no other goroutine
// ever runs in that namespace.
func inNetns(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// TestBridgeInNetns runs the real bridge, host-local and portmap plugins
// through libcni with our conflist, between two network namespaces it makes
// (a "node" and a "pod") and deletes. Opt-in: SKIFF_TEST_NETNS=1, as root.
func TestBridgeInNetns(t *testing.T) {
	if os.Getenv("SKIFF_TEST_NETNS") == "" {
		t.Skip("set SKIFF_TEST_NETNS=1 (as root) to run the CNI plugins in throwaway network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			t.Skipf("/usr/lib/cni/%s missing (hack/install-deps.sh installs the CNI plugins)", p)
		}
	}
	for _, tool := range []string{"ip", "nsenter", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s missing", tool)
		}
	}

	suffix := fmt.Sprint(os.Getpid())
	node, pod := "skiff-cnitest-node-"+suffix, "skiff-cnitest-pod-"+suffix
	for _, ns := range []string{node, pod} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	nodePath, podPath := "/run/netns/"+node, "/run/netns/"+pod
	run(t, "ip", "-n", node, "link", "set", "lo", "up")

	tmp := t.TempDir()
	dataDir := filepath.Join(tmp, "networks")
	b, err := Conflist(Options{PodCIDRs: []string{"10.250.1.0/24"}, DataDir: dataDir, BinDir: "/usr/lib/cni"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{"/usr/lib/cni"}, filepath.Join(tmp, "cache"),
		nodeExec{DefaultExec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}, netns: nodePath})
	rt := &libcni.RuntimeConf{
		ContainerID: "skiffcnitest" + suffix,
		NetNS:       podPath,
		IfName:      "eth0",
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{
			{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"},
		}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatal(err)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			cni.DelNetworkList(context.Background(), list, rt)
		}
	})
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("result %v: want one address", res)
	}
	podIP := res.IPs[0].Address.IP
	if _, want, _ := net.ParseCIDR("10.250.1.0/24"); !want.Contains(podIP) || res.IPs[0].Gateway.String() != "10.250.1.1" {
		t.Fatalf("address %v gateway %v, want in 10.250.1.0/24 via 10.250.1.1", res.IPs[0].Address, res.IPs[0].Gateway)
	}

	if out := run(t, "ip", "-n", node, "-4", "addr", "show", "cni0"); !strings.Contains(out, "10.250.1.1/24") {
		t.Errorf("cni0 in the node: %s", out)
	}
	if out := run(t, "ip", "-n", pod, "-4", "addr", "show", "eth0"); !strings.Contains(out, podIP.String()+"/24") {
		t.Errorf("eth0 in the pod: %s", out)
	}
	if out := run(t, "ip", "-n", pod, "route", "show", "default"); !strings.Contains(out, "via 10.250.1.1") {
		t.Errorf("pod's default route: %s", out)
	}
	if out := run(t, "nsenter", "--net="+nodePath, "iptables", "-t", "nat", "-S"); !strings.Contains(out, "18080") {
		t.Errorf("portmap's rules in the node: %s", out)
	}

	// The pod reaches the node through the bridge: a listener on the
	// gateway address in the node answers a pod's connection with a body.
	var l net.Listener
	if err := inNetns(nodePath, func() (err error) { l, err = net.Listen("tcp", "10.250.1.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hello from the node"))
			c.Close()
		}
	}()
	var body []byte
	if err := inNetns(podPath, func() error {
		c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		var buf bytes.Buffer
		_, err = buf.ReadFrom(c)
		body = buf.Bytes()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if string(body) != "hello from the node" {
		t.Errorf("pod read %q", body)
	}

	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatal(err)
	}
	deleted = true
	if _, err := os.Stat(filepath.Join(dataDir, "skiff", podIP.String())); !os.IsNotExist(err) {
		t.Errorf("host-local kept %s after DEL: %v", podIP, err)
	}
	if out, _ := exec.Command("ip", "-n", pod, "link", "show", "eth0").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Errorf("eth0 still in the pod after DEL: %s", out)
	}
}
