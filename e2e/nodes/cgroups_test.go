package nodes

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// cgroupMounts are the host's cgroup hierarchies (v1 controllers and the v2
// mount), which the nodes' mount namespaces share.
func cgroupMounts(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && (f[2] == "cgroup" || f[2] == "cgroup2") {
			out = append(out, f[1])
		}
	}
	return out
}

func readCgroupFile(hierarchy, cgroup, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", hierarchy, cgroup, file))
	return strings.TrimSpace(string(b)), err
}

// The kubelet makes the QoS hierarchy under its --cgroup-root, each pod's
// cgroup with the pod's limits before its containers (which the runtime puts
// beneath it), and removes the cgroup of a pod that is gone, or that it does
// not know, killing what is left in it.
func TestPodCgroups(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		t.Skip("this test reads cgroup v1 files; the host has no v1 memory hierarchy at /sys/fs/cgroup/memory")
	}
	c, cl := kubeletClusterN(t, 1)
	node := c.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes := client.For[*corev1.Node](cl, "")
	var n *corev1.Node
	eventually(t, 60*time.Second, "the node Ready with a podCIDR", func() (bool, string) {
		var err error
		if n, err = nodes.Get(ctx, node.Name); err != nil {
			return false, err.Error()
		}
		return nodeCondition(n, "Ready") == "True" && n.GetSpec().GetPodCIDR() != "", n.GetStatus().String()
	})
	kubepods := node.CgroupParent() + "/kubepods"

	// kubepods holds node allocatable (local nodes reserve nothing, so the
	// capacity) and the QoS tiers are there before any pod.
	capCPU := resource.MustParse(n.Status.Capacity["cpu"].GetString_())
	capMem := resource.MustParse(n.Status.Capacity["memory"].GetString_())
	if got, err := readCgroupFile("cpu", kubepods, "cpu.shares"); err != nil || got != strconv.FormatInt(capCPU.MilliValue()*1024/1000, 10) {
		t.Errorf("kubepods cpu.shares %q (%v), want the shares of %s cpus", got, err, capCPU.String())
	}
	got, err := readCgroupFile("memory", kubepods, "memory.limit_in_bytes")
	if limit, _ := strconv.ParseInt(got, 10, 64); err != nil || limit > capMem.Value() || limit < capMem.Value()-4096 {
		t.Errorf("kubepods memory.limit_in_bytes %q (%v), want the node's %d bytes (to the page)", got, err, capMem.Value())
	}
	if got, err := readCgroupFile("cpu", kubepods+"/besteffort", "cpu.shares"); err != nil || got != "2" {
		t.Errorf("besteffort cpu.shares %q (%v), want 2", got, err)
	}

	// Burstable pods already on the node (the DNS addon's) weigh in the
	// Burstable tier too: upstream's shares of the summed cpu requests.
	var baseMilli int64
	all, err := client.For[*corev1.Pod](cl, "").List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all.Items {
		if p.GetStatus().GetQosClass() != "Burstable" || p.GetMetadata().GetDeletionTimestamp() != nil {
			continue
		}
		for _, ctr := range p.GetSpec().GetContainers() {
			if q, ok := ctr.GetResources().GetRequests()["cpu"]; ok {
				v := resource.MustParse(q.GetString_())
				baseMilli += v.MilliValue()
			}
		}
	}
	shares := func(milli int64) string { return strconv.FormatInt(max(2, milli*1024/1000), 10) }

	pods := client.For[*corev1.Pod](cl, "default")
	grace := int64(1)
	g := map[string]*metav1.Quantity{"cpu": {String_: "250m"}, "memory": {String_: "64Mi"}}
	guaranteed := agnhost("web")
	guaranteed.Resources = &corev1.ResourceRequirements{Requests: g, Limits: g}
	burstable := agnhost("web")
	burstable.Resources = &corev1.ResourceRequirements{Requests: map[string]*metav1.Quantity{"cpu": {String_: "100m"}},
		Limits: map[string]*metav1.Quantity{"memory": {String_: "128Mi"}}}
	uids := map[string]string{}
	for name, ctr := range map[string]*corev1.Container{"guaranteed": guaranteed, "burstable": burstable} {
		p, err := pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: name},
			Spec: &corev1.PodSpec{TerminationGracePeriodSeconds: &grace, Containers: []*corev1.Container{ctr}}})
		if err != nil {
			t.Fatal(err)
		}
		uids[name] = p.Metadata.Uid
	}
	for name := range uids {
		eventually(t, 60*time.Second, name+" Running and Ready", func() (bool, string) {
			p, err := pods.Get(ctx, name)
			if err != nil {
				return false, err.Error()
			}
			return p.GetStatus().GetPhase() == "Running" && condition(p, "Ready") == "True", p.GetStatus().String()
		})
	}

	gPod := kubepods + "/pod" + uids["guaranteed"]
	bPod := kubepods + "/burstable/pod" + uids["burstable"]
	for _, f := range []struct{ hierarchy, cgroup, file, want string }{
		{"memory", gPod, "memory.limit_in_bytes", "67108864"},
		{"cpu", gPod, "cpu.cfs_quota_us", "25000"},
		{"cpu", gPod, "cpu.cfs_period_us", "100000"},
		{"cpu", gPod, "cpu.shares", "256"},
		{"cpu", bPod, "cpu.shares", "102"},
		// Not every container has a cpu limit: the pod has no quota.
		{"cpu", bPod, "cpu.cfs_quota_us", "-1"},
		{"memory", bPod, "memory.limit_in_bytes", "134217728"},
		{"cpu", kubepods + "/burstable", "cpu.shares", shares(baseMilli + 100)},
		{"cpu", kubepods + "/besteffort", "cpu.shares", "2"},
	} {
		if got, err := readCgroupFile(f.hierarchy, f.cgroup, f.file); err != nil || got != f.want {
			t.Errorf("%s %s = %q (%v), want %s", f.cgroup, f.file, got, err, f.want)
		}
	}
	// The runtime put the sandbox and the container beneath the pod's cgroup.
	entries, err := os.ReadDir(filepath.Join("/sys/fs/cgroup/memory", gPod))
	if err != nil {
		t.Fatal(err)
	}
	var children []string
	for _, e := range entries {
		if e.IsDir() {
			children = append(children, e.Name())
		}
	}
	if len(children) != 2 {
		t.Errorf("cgroups under the Guaranteed pod's: %v, want the sandbox's and the container's", children)
	}

	// A deleted pod's cgroup goes, in every hierarchy, and the Burstable
	// tier weighs only the pods left.
	for name := range uids {
		if _, err := pods.Delete(ctx, name, client.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mounts := cgroupMounts(t)
	for _, cg := range []string{gPod, bPod} {
		eventually(t, 60*time.Second, "the deleted pod's cgroup "+cg+" gone", func() (bool, string) {
			for _, m := range mounts {
				if _, err := os.Stat(filepath.Join(m, cg)); err == nil {
					return false, "still in " + m
				}
			}
			return true, ""
		})
	}
	eventually(t, 20*time.Second, "burstable cpu.shares back to "+shares(baseMilli), func() (bool, string) {
		got, err := readCgroupFile("cpu", kubepods+"/burstable", "cpu.shares")
		return err == nil && got == shares(baseMilli), fmt.Sprintf("%q %v", got, err)
	})

	// A pod cgroup the kubelet does not know (left by an earlier run) is
	// emptied and removed at housekeeping.
	orphan := kubepods + "/besteffort/pod0badc0de-0000-4000-8000-000000000000"
	sleep := exec.Command("sleep", "300")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleep.Process.Kill() })
	waited := make(chan error, 1)
	for _, h := range []string{"memory", "cpu"} {
		dir := filepath.Join("/sys/fs/cgroup", h, orphan)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(sleep.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	go func() { waited <- sleep.Wait() }()
	select {
	case err := <-waited:
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("the process in the orphaned pod cgroup: %v, want killed", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the process in an orphaned pod cgroup is still running after 40 s")
	}
	eventually(t, 20*time.Second, "the orphaned pod cgroup gone", func() (bool, string) {
		for _, h := range []string{"memory", "cpu"} {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, orphan)); err == nil {
				return false, "still in " + h
			}
		}
		return true, ""
	})
}

func nodeCondition(n *corev1.Node, typ string) string {
	for _, c := range n.GetStatus().GetConditions() {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}
