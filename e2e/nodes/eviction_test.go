package nodes

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/config"
	"skiff.dev/e2e/local"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// The node's --root-dir is a tmpfs of its own, so that the test, not the
// machine's disk (shared with whatever else runs here), decides how full
// nodefs is: 64 MiB, with nodefs.available<50% as the only threshold.
const (
	evictionNodefsSize = 64 << 20
	evictionThreshold  = "nodefs.available<50%"
	evictionFill       = 40 // MiB a pod writes into its emptyDir
)

// A real kubelet over real containerd measures its nodefs with statfs: a
// BestEffort pod filling its emptyDir past the hard threshold puts the node
// under DiskPressure, is evicted (Failed, Evicted, upstream's message and
// event, its container stopped), and a pod bound after it is refused by
// admission while the pressure lasts.
func TestEviction(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nodes need root (network and mount namespaces, veths, nftables)")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Skip("containerd is not installed: run hack/install-deps.sh")
	}
	binDir, _ := filepath.Abs("../../bin")
	for _, b := range []string{"skiff-apiserver", "skiff-scheduler", "skiff-controller-manager", "skiff-kubelet", "images/busybox-1.35.tar", "images/pause-3.10.tar"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			t.Fatalf("%s/%s is missing: run `make build images` (or `make e2e`) first", binDir, b)
		}
	}
	began := time.Now()
	nodefs := t.TempDir()
	if err := syscall.Mount("tmpfs", nodefs, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", evictionNodefsSize)); err != nil {
		t.Fatalf("mounting the node's nodefs: %v", err)
	}
	// Registered before the cluster's teardown, so it runs after it.
	t.Cleanup(func() {
		if err := syscall.Unmount(nodefs, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", nodefs, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := local.Up(ctx, local.Options{Dir: t.TempDir(), BinDir: binDir, Nodes: 1, Log: logWriter{t},
		ExtraKubeletArgs: []string{"--root-dir", nodefs, "--eviction-hard", evictionThreshold}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Down(); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() && c.Nodes[0].Kubelet != nil {
			b, _ := os.ReadFile(c.Nodes[0].Kubelet.Log)
			t.Logf("the kubelet's eviction log:\n%s", grepLines(string(b), "vict"))
		}
	})
	kc, err := config.Load(c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	r, err := kc.Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := r.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cl := client.New(conn)
	n := c.Nodes[0]
	nodes := client.For[*corev1.Node](cl, "")
	pods := client.For[*corev1.Pod](cl, "default")

	nodeCondition := func(typ string) *corev1.NodeCondition {
		node, err := nodes.Get(ctx, n.Name)
		if err != nil {
			return nil
		}
		for _, cond := range node.GetStatus().GetConditions() {
			if cond.Type == typ {
				return cond
			}
		}
		return nil
	}
	eventually(t, 60*time.Second, "the node Ready without DiskPressure", func() (bool, string) {
		ready, disk := nodeCondition("Ready"), nodeCondition("DiskPressure")
		return ready.GetStatus() == "True" && disk.GetStatus() == "False", fmt.Sprintf("Ready %v, DiskPressure %v", ready, disk)
	})
	if avail := available(t, nodefs); avail <= evictionNodefsSize/2 {
		t.Fatalf("nodefs has %d bytes available before any pod: the threshold is crossed already", avail)
	}

	no := false
	grace := int64(30)
	filler := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "filler"}, Spec: &corev1.PodSpec{
		NodeName: n.Name, AutomountServiceAccountToken: &no, TerminationGracePeriodSeconds: &grace,
		Containers: []*corev1.Container{{Name: "fill", Image: busyboxImage, Command: []string{"sh", "-c",
			fmt.Sprintf("dd if=/dev/zero of=/data/fill bs=1M count=%d && exec sleep 3600", evictionFill)},
			VolumeMounts: []*corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
		Volumes: []*corev1.Volume{{Name: "data", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
	}}
	if _, err := pods.Create(ctx, filler); err != nil {
		t.Fatal(err)
	}
	var evicted *corev1.Pod
	eventually(t, 90*time.Second, "filler evicted", func() (bool, string) {
		evicted, err = pods.Get(ctx, "filler")
		if err != nil {
			return false, err.Error()
		}
		st := evicted.GetStatus()
		return st.GetPhase() == "Failed" && st.GetReason() == "Evicted", st.String()
	})
	if avail := available(t, nodefs); avail >= evictionNodefsSize/2 {
		t.Errorf("nodefs has %d bytes available after the fill: the threshold was never crossed", avail)
	}
	// Upstream's message: the threshold is half of the 64Mi, what was
	// left below it, then the container's writable layer and logs.
	const wantMsg = "The node was low on resource: ephemeral-storage. Threshold quantity: 32Mi, available: "
	if msg := evicted.GetStatus().GetMessage(); !strings.HasPrefix(msg, wantMsg) {
		t.Errorf("eviction message %q, want it to begin %q", msg, wantMsg)
	}
	eventually(t, 30*time.Second, "filler's container terminated", func() (bool, string) {
		p, err := pods.Get(ctx, "filler")
		if err != nil {
			return false, err.Error()
		}
		cs := p.GetStatus().GetContainerStatuses()
		return len(cs) == 1 && cs[0].GetState().GetTerminated() != nil && p.GetStatus().GetPhase() == "Failed", fmt.Sprint(cs)
	})
	eventually(t, 30*time.Second, "the Evicted event", func() (bool, string) {
		ev, err := podEvents(ctx, cl, "filler")
		if err != nil {
			return false, err.Error()
		}
		return strings.HasPrefix(ev["Evicted"], wantMsg), fmt.Sprint(ev)
	})
	eventually(t, 30*time.Second, "DiskPressure True", func() (bool, string) {
		disk := nodeCondition("DiskPressure")
		return disk.GetStatus() == "True" && disk.GetReason() == "KubeletHasDiskPressure" && disk.GetMessage() == "kubelet has disk pressure",
			fmt.Sprint(disk)
	})
	if mem, pid := nodeCondition("MemoryPressure"), nodeCondition("PIDPressure"); mem.GetStatus() != "False" || pid.GetStatus() != "False" {
		t.Errorf("MemoryPressure %v, PIDPressure %v: only nodefs has a threshold", mem, pid)
	}
	metrics := kubeletMetricsText(t, n)
	if !strings.Contains(metrics, `kubelet_evictions{eviction_signal="nodefs.available"} 1`) {
		t.Errorf("kubelet_evictions is not 1 for nodefs.available:\n%s", grepLines(metrics, "kubelet_evictions"))
	}
	if !strings.Contains(metrics, `kubelet_eviction_stats_age_seconds_count{eviction_signal="nodefs.available"}`) {
		t.Errorf("no kubelet_eviction_stats_age_seconds for nodefs.available")
	}

	late := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "late"}, Spec: &corev1.PodSpec{
		NodeName: n.Name, AutomountServiceAccountToken: &no,
		Containers: []*corev1.Container{{Name: "sleep", Image: busyboxImage, Command: []string{"sleep", "3600"}}}}}
	if _, err := pods.Create(ctx, late); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "late refused by admission", func() (bool, string) {
		p, err := pods.Get(ctx, "late")
		if err != nil {
			return false, err.Error()
		}
		st := p.GetStatus()
		return st.GetPhase() == "Failed" && st.GetReason() == "Evicted" && st.GetMessage() == "The node had condition: [DiskPressure]. ", st.String()
	})
	t.Logf("TestEviction took %s", time.Since(began).Round(time.Second))
}

// available is what unprivileged users may still write on the
// filesystem of path.
func available(t *testing.T, path string) int64 {
	t.Helper()
	var s syscall.Statfs_t
	if err := syscall.Statfs(path, &s); err != nil {
		t.Fatal(err)
	}
	return int64(s.Bavail) * int64(s.Bsize)
}

// kubeletMetricsText is the node's kubelet /metrics, read from the host
// over the node's veth.
func kubeletMetricsText(t *testing.T, n *local.Node) string {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + n.IP + ":10248/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
