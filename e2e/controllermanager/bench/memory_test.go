package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/client"
	"skiff.dev/client/controller"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

const mib = 1 << 20

// BenchmarkRSSIdle prints the controller-manager's memory on an empty
// cluster: the built binary's resident set (rss-MiB, and its peak,
// peak-rss-MiB) and the Go heap an embedded one holds (heap-MiB).
func BenchmarkRSSIdle(b *testing.B) { memory(b, 0) }

// BenchmarkRSS10000Pods is BenchmarkRSSIdle with 10,000 pods stored, owned by
// 20 ReplicaSets of 500, for every pod informer to cache.
func BenchmarkRSS10000Pods(b *testing.B) { memory(b, 10000) }

func memory(b *testing.B, pods int) {
	s := apitest.Start(b)
	c := client.New(s.Conn)
	if pods > 0 {
		populate(b, c, "loaded", 20, pods/20)
	}
	createNamespace(b, c, "sentinel")
	// Each controller-manager is stopped before the next starts: two
	// without leader election would both act on the sentinels.
	b.Run("binary", func(b *testing.B) {
		for i := range b.N {
			binaryRSS(b, s, c, fmt.Sprintf("binary-%d", i))
		}
	})
	b.Run("embedded", func(b *testing.B) {
		for i := range b.N {
			embeddedHeap(b, s, c, fmt.Sprintf("embedded-%d", i))
		}
	})
}

// populate stores sets ReplicaSets of perSet pods each, the pods labelled
// and owned as the ReplicaSet controller makes them. The ReplicaSets are at
// their size, so the controllers have nothing to do but cache them.
func populate(b *testing.B, c *client.Client, ns string, sets, perSet int) {
	b.Helper()
	createNamespace(b, c, ns)
	ctx := context.Background()
	start := time.Now()
	for r := range sets {
		name := fmt.Sprintf("svc-%02d", r)
		hash := fmt.Sprintf("6c%07x", r*7919)
		rs := replicaSet(ns, name+"-"+hash, int32(perSet))
		rs.Spec.Selector.MatchLabels = map[string]string{"app": name, "pod-template-hash": hash}
		rs.Spec.Template.Metadata.Labels = map[string]string{"app": name, "tier": "frontend", "pod-template-hash": hash}
		rs, err := client.For[*appsv1.ReplicaSet](c, ns).Create(ctx, rs)
		if err != nil {
			b.Fatal(err)
		}
		ref := controller.NewControllerRef(rs, rsKind)
		pods := client.For[*corev1.Pod](c, ns)
		if err := parallel(perSet, 32, func(i int) error {
			t := rs.GetSpec().GetTemplate()
			_, err := pods.Create(ctx, &corev1.Pod{
				Metadata: &metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%05d", rs.GetMetadata().GetName(), i),
					Labels: t.GetMetadata().GetLabels(), OwnerReferences: []*metav1.OwnerReference{ref}},
				Spec: t.GetSpec(),
			})
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("stored %d pods in %d ReplicaSets in %s", sets*perSet, sets, time.Since(start).Round(time.Millisecond))
}

// settle samples f every 250ms until three samples in a row lie within 2%
// of the one before (the controllers' first syncs are done), or 20 seconds
// pass, and returns the last sample.
func settle(f func() (uint64, error)) (uint64, error) {
	var last uint64
	steady := 0
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && steady < 3; <-t.C {
		v, err := f()
		if err != nil {
			return 0, err
		}
		if last > 0 && max(v, last)-min(v, last) <= last/50 {
			steady++
		} else {
			steady = 0
		}
		last = v
	}
	return last, nil
}

// embeddedHeap is the figure without the binary: the Go heap in use after
// a collection, from before an embedded controller-manager starts to after
// its caches synced. Not this process's RSS: that holds the apiserver and
// etcd too, which grow on their own while serving the manager's lists and
// watches, and the Go runtime returns freed pages to the OS lazily, so an
// RSS delta mixes all three. Live heap after GC is what the manager keeps
// (plus the apiserver's per-watch buffers, a small part); the binary's RSS
// adds the runtime's overhead and the garbage between collections on top.
func embeddedHeap(b *testing.B, s *apitest.Server, c *client.Client, name string) {
	heap := func() (uint64, error) {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse, nil
	}
	base, _ := heap()
	enabled, stop := manager(b, s, c, "*")
	sentinel(b, c, "sentinel", name, false, nil)
	after, _ := settle(heap)
	stop()
	delta := float64(after) - float64(base)
	b.Logf("embedded controller-manager (%s): %.1f MiB of Go heap in use (%.1f MiB before it started, %.1f MiB once synced)",
		enabled, delta/mib, float64(base)/mib, float64(after)/mib)
	b.ReportMetric(delta/mib, "heap-MiB")
}

// binDir is where `make build` puts the binaries.
func binDir() string {
	if d := os.Getenv("SKIFF_BIN_DIR"); d != "" {
		return d
	}
	d, _ := filepath.Abs("../../../bin")
	return d
}

// binaryRSS runs bin/skiff-controller-manager against the apiserver with
// the admin kubeconfig and its default controllers, and reads its resident
// set once its caches synced.
func binaryRSS(b *testing.B, s *apitest.Server, c *client.Client, name string) {
	path := filepath.Join(binDir(), "skiff-controller-manager")
	if _, err := os.Stat(path); err != nil {
		b.Skipf("%s is missing: run `make build` first (or set SKIFF_BIN_DIR)", path)
	}
	var logs bytes.Buffer
	cmd := exec.Command(path, "--kubeconfig", s.AdminConfig(), "--leader-elect=false",
		"--metrics-bind-address", "127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	b.Cleanup(stop)
	alive := func() error {
		select {
		case err := <-exited:
			exited <- err
			stopped = true
			return fmt.Errorf("%s exited: %v\n%s", path, err, tail(logs.String(), 20))
		default:
			return nil
		}
	}
	sentinel(b, c, "sentinel", name, false, alive)
	rss, err := settle(func() (uint64, error) {
		if err := alive(); err != nil {
			return 0, err
		}
		return procStatus(cmd.Process.Pid, "VmRSS")
	})
	if err != nil {
		b.Fatal(err)
	}
	peak, err := procStatus(cmd.Process.Pid, "VmHWM")
	if err != nil {
		b.Fatal(err)
	}
	stop()
	b.Logf("%s: VmRSS %.1f MiB, VmHWM %.1f MiB once synced", filepath.Base(path), float64(rss)/mib, float64(peak)/mib)
	b.ReportMetric(float64(rss)/mib, "rss-MiB")
	b.ReportMetric(float64(peak)/mib, "peak-rss-MiB")
}

// procStatus reads one "kB" field of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return kb << 10, err
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New(field + " not in /proc status")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
