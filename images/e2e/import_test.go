// Package e2e checks the built images on a real containerd: they import
// with `ctr images import` and their programs run under runc.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const namespace = "skiff-images-e2e"

// containerd is a containerd of the test's own: its root, state and sockets
// live in a temporary directory, so nothing is left in the host's.
type containerd struct {
	sock string
	// runFlags keep what `ctr run` creates (runc's state, the stdio FIFOs)
	// in the test's directory too.
	runFlags []string
}

// run is `ctr run --rm` with the instance's runFlags.
func (c *containerd) run(ctx context.Context, args ...string) (string, error) {
	return c.ctr(ctx, append(append([]string{"run", "--rm"}, c.runFlags...), args...)...)
}

func (c *containerd) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.sock, "--namespace", namespace}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func startContainerd(t *testing.T) *containerd {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	c := &containerd{sock: sock, runFlags: []string{
		"--runc-root", filepath.Join(dir, "runc"), "--fifo-dir", filepath.Join(dir, "fifo"),
	}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.ctr(ctx, "version")
		cancel()
		if err == nil {
			return c
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("containerd exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("containerd did not answer within 20s: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func requireTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containerd")
	}
	for _, bin := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (Debian package containerd/runc)", bin)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("/bin/busybox is not installed (Debian package busybox-static)")
	}
}

func buildImages(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("go", "run", "skiff.dev/images/cmd/skiff-images", "--out", out)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skiff-images: %v\n%s", err, b)
	}
	t.Logf("skiff-images:\n%s", b)
	return out
}

func TestImagesImportAndRun(t *testing.T) {
	requireTools(t)
	images := buildImages(t)
	c := startContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, f := range []string{"pause-3.10.tar", "agnhost-2.53.tar", "busybox-1.35.tar", "coredns-1.15.tar"} {
		out, err := c.ctr(ctx, "images", "import", filepath.Join(images, f))
		if err != nil {
			t.Fatalf("ctr images import %s: %v\n%s", f, err, out)
		}
		t.Logf("ctr images import %s:\n%s", f, out)
	}
	out, err := c.ctr(ctx, "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ctr images ls:\n%s", out)
	for _, ref := range []string{"skiff.local/pause:3.10", "skiff.local/agnhost:2.53", "skiff.local/busybox:1.35", "skiff.local/coredns:1.15"} {
		if !strings.Contains(out, ref+" ") {
			t.Errorf("%s not among the imported images", ref)
		}
		if !strings.Contains(out, "linux/"+runtime.GOARCH) {
			t.Errorf("images are not for linux/%s", runtime.GOARCH)
		}
	}
	if t.Failed() {
		return
	}

	t.Run("busybox", func(t *testing.T) {
		out, err := c.run(ctx, "skiff.local/busybox:1.35", "e2e-busybox",
			"sh", "-c", "echo hello from $(id -un); which wget nslookup sleep cat")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		want := "hello from root\n/bin/wget\n/bin/nslookup\n/bin/sleep\n/bin/cat\n"
		if out != want {
			t.Errorf("busybox printed %q, want %q", out, want)
		}
	})

	t.Run("agnhost entrypoint", func(t *testing.T) {
		// No arguments: the image's entrypoint, /agnhost, runs alone and
		// prints its usage.
		out, err := c.run(ctx, "skiff.local/agnhost:2.53", "e2e-agnhost-usage")
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "netexec") {
			t.Errorf("agnhost without a subcommand: %v\n%s", err, out)
		}
	})

	t.Run("agnhost netexec", func(t *testing.T) {
		// Inside the container, with its shell and wget: start netexec and
		// poll it until it answers (for at most 10 s).
		script := `/agnhost netexec --http-port=8080 --udp-port=8081 2>/dev/null &
for i in $(seq 200); do
  if out=$(wget -qO- "http://127.0.0.1:8080/echo?msg=pong" 2>/dev/null); then break; fi
  usleep 50000
done
echo "echo=$out"
[ "$(wget -qO- http://127.0.0.1:8080/hostname)" = "$(hostname)" ] && echo hostname=match
wget -qO- "http://127.0.0.1:8080/shell?cmd=ls%20/bin/sh"; echo
wget -qO- "http://127.0.0.1:8080/dial?host=127.0.0.1&port=8081&protocol=udp&request=echo%20hi"; echo`
		out, err := c.run(ctx, "skiff.local/agnhost:2.53", "e2e-agnhost", "sh", "-c", script)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		want := "echo=pong\nhostname=match\n{\"output\":\"/bin/sh\\n\"}\n{\"responses\":[\"hi\"]}\n"
		if out != want {
			t.Errorf("netexec in the image printed\n%s\nwant\n%s", out, want)
		}
	})

	t.Run("coredns", func(t *testing.T) {
		// The entrypoint is skiff-dns: static, alone in the image, CoreDNS
		// with our plugin compiled in.
		out, err := c.run(ctx, "skiff.local/coredns:1.15", "e2e-coredns", "/coredns", "-version")
		if err != nil || !strings.Contains(out, "skiff-dns ") || !strings.Contains(out, "CoreDNS-1.15.0") {
			t.Errorf("/coredns -version: %v\n%s", err, out)
		}
		out, err = c.run(ctx, "skiff.local/coredns:1.15", "e2e-coredns-plugins", "/coredns", "-plugins")
		plugins := strings.Fields(out)
		if err != nil || !slices.Contains(plugins, "skiff") || slices.Contains(plugins, "kubernetes") {
			t.Errorf("/coredns -plugins: %v\n%s", err, out)
		}
	})

	t.Run("pause", func(t *testing.T) {
		args := append([]string{"--address", c.sock, "--namespace", namespace, "run", "--rm"}, c.runFlags...)
		run := exec.CommandContext(ctx, "ctr", append(args, "skiff.local/pause:3.10", "e2e-pause")...)
		var out bytes.Buffer
		run.Stdout, run.Stderr = &out, &out
		if err := run.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- run.Wait() }()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ls, _ := c.ctr(ctx, "tasks", "ls")
			if strings.Contains(ls, "RUNNING") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the pause task never ran:\n%s\n%s", ls, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if o, err := c.ctr(ctx, "tasks", "kill", "--signal", "SIGTERM", "e2e-pause"); err != nil {
			t.Fatalf("kill: %v\n%s", err, o)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pause after SIGTERM: %v (want exit 0)\n%s", err, out.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("pause ignored SIGTERM\n%s", out.String())
		}
		if !strings.Contains(out.String(), "Shutting down, got signal: terminated") {
			t.Errorf("pause printed %q", out.String())
		}
	})

	// Remove what the test imported; the containerd itself goes with its
	// temporary directory.
	for _, ref := range []string{"skiff.local/pause:3.10", "skiff.local/agnhost:2.53", "skiff.local/busybox:1.35", "skiff.local/coredns:1.15"} {
		if o, err := c.ctr(ctx, "images", "rm", "--sync", ref); err != nil {
			t.Errorf("ctr images rm %s: %v\n%s", ref, err, o)
		}
	}
}
