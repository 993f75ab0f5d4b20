package podcgroups

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
	"k8s.io/apimachinery/pkg/api/resource"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func rl(kv ...string) map[string]*metav1.Quantity {
	m := map[string]*metav1.Quantity{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = &metav1.Quantity{String_: kv[i+1]}
	}
	return m
}

func ctr(name string, req, lim map[string]*metav1.Quantity) *corev1.Container {
	return &corev1.Container{Name: name, Resources: &corev1.ResourceRequirements{Requests: req, Limits: lim}}
}

func pod(uid string, init []*corev1.Container, cs ...*corev1.Container) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p-" + uid, Uid: uid}, Spec: &corev1.PodSpec{InitContainers: init, Containers: cs}}
}

func sidecar(c *corev1.Container) *corev1.Container {
	always := "Always"
	c.RestartPolicy = &always
	return c
}

func TestPodResources(t *testing.T) {
	g := rl("cpu", "250m", "memory", "64Mi")
	withOverhead := pod("o", nil, ctr("a", rl("cpu", "100m"), rl("cpu", "200m")))
	withOverhead.Spec.Overhead = rl("cpu", "50m", "memory", "10Mi")
	podLevel := pod("pl", nil, ctr("a", rl("cpu", "100m"), nil), ctr("b", nil, nil))
	podLevel.Spec.Resources = &corev1.ResourceRequirements{Requests: rl("cpu", "300m"), Limits: rl("cpu", "500m", "memory", "1Gi")}
	cases := []struct {
		name   string
		pod    *corev1.Pod
		shares uint64
		quota  int64 // 0: none (nor a period)
		memory int64 // 0: none
	}{
		{"guaranteed", pod("g", nil, ctr("a", g, g)), 256, 25000, 64 << 20},
		{"guaranteed, two containers", pod("g2", nil, ctr("a", g, g), ctr("b", g, g)), 512, 50000, 128 << 20},
		{"best effort", pod("be", nil, ctr("a", nil, nil)), 2, 0, 0},
		{"burstable, every limit declared", pod("b", nil, ctr("a", rl("cpu", "100m", "memory", "32Mi"), g), ctr("b", rl("cpu", "100m"), g)), 204, 50000, 128 << 20},
		{"burstable, one container without a cpu limit", pod("b1", nil, ctr("a", rl("cpu", "100m"), g), ctr("b", rl("cpu", "100m"), rl("memory", "1Mi"))), 204, 0, 65 << 20},
		{"burstable, one container without limits", pod("b2", nil, ctr("a", rl("cpu", "100m"), g), ctr("b", nil, nil)), 102, 0, 0},
		{"burstable, limits only: requests default to them", pod("b3", nil, ctr("a", nil, rl("cpu", "500m", "memory", "16Mi"))), 512, 50000, 16 << 20},
		{"init container asks more than the app", pod("i", []*corev1.Container{ctr("init", rl("cpu", "1"), rl("cpu", "1", "memory", "1Gi"))}, ctr("a", rl("cpu", "200m"), rl("cpu", "200m", "memory", "64Mi"))), 1024, 100000, 1 << 30},
		{"init container without a limit leaves the pod unbounded", pod("i2", []*corev1.Container{ctr("init", rl("cpu", "10m"), nil)}, ctr("a", rl("cpu", "200m"), rl("cpu", "200m", "memory", "64Mi"))), 204, 0, 0},
		{"a sidecar adds to the app", pod("s", []*corev1.Container{sidecar(ctr("side", rl("cpu", "100m"), rl("cpu", "100m", "memory", "16Mi")))}, ctr("a", rl("cpu", "200m"), rl("cpu", "200m", "memory", "64Mi"))), 307, 30000, 80 << 20},
		{"overhead adds to requests and to the limits that are set", withOverhead, 153, 25000, 0},
		{"pod-level resources decide", podLevel, 307, 50000, 1 << 30},
	}
	for _, tc := range cases {
		r := PodResources(tc.pod, 0)
		period := uint64(0)
		if tc.quota != 0 {
			period = 100000
		}
		if r.CpuShares != tc.shares || r.CpuQuota != tc.quota || r.CpuPeriod != period || r.Memory != tc.memory || r.PidsLimit != nil {
			t.Errorf("%s: shares %d quota %d period %d memory %d pids %v, want %d %d %d %d none",
				tc.name, r.CpuShares, r.CpuQuota, r.CpuPeriod, r.Memory, r.PidsLimit, tc.shares, tc.quota, period, tc.memory)
		}
	}
	if r := PodResources(pod("g", nil, ctr("a", g, g)), 1024); r.PidsLimit == nil || *r.PidsLimit != 1024 {
		t.Errorf("--pod-max-pids 1024: pids limit %v", r.PidsLimit)
	}
	if r := PodResources(pod("g", nil, ctr("a", g, g)), -1); r.PidsLimit != nil {
		t.Errorf("--pod-max-pids -1: pids limit %d, want none", *r.PidsLimit)
	}
}

func TestBurstableShares(t *testing.T) {
	pods := []*corev1.Pod{
		pod("g", nil, ctr("a", rl("cpu", "1", "memory", "1Gi"), rl("cpu", "1", "memory", "1Gi"))),
		pod("b1", nil, ctr("a", rl("cpu", "250m"), nil)),
		pod("b2", nil, ctr("a", rl("cpu", "500m"), nil), ctr("b", rl("memory", "1Mi"), nil)),
		pod("be", nil, ctr("a", nil, nil)),
	}
	if got := burstableShares(pods); got != 768 {
		t.Errorf("burstable shares %d, want 768 (750m of Burstable requests)", got)
	}
	if got := burstableShares(nil); got != 2 {
		t.Errorf("burstable shares with no pods %d, want 2", got)
	}
}

// fakeCgroupfs is a directory standing for the cpu, memory and pids
// hierarchies: the library writes plain files there in its TestMode.
type fakeCgroupfs struct{ root string }

var fakeSubsystems = []string{"cpu", "memory", "pids"}

func (f fakeCgroupfs) newCgroup(c *cgroups.Cgroup) (cgroups.Manager, error) {
	paths := map[string]string{}
	for _, sub := range fakeSubsystems {
		paths[sub] = filepath.Join(f.root, sub, c.Path)
	}
	m, err := fs.NewManager(c, paths)
	if err != nil {
		return nil, err
	}
	return fakeCgroup{m}, nil
}

func (f fakeCgroupfs) read(t *testing.T, sub, cgroup, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.root, sub, cgroup, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (f fakeCgroupfs) exists(sub, cgroup string) bool {
	_, err := os.Stat(filepath.Join(f.root, sub, cgroup))
	return err == nil
}

// fakeCgroup removes its directories with their files, as rmdir does on a
// real cgroupfs.
type fakeCgroup struct{ cgroups.Manager }

func (c fakeCgroup) Destroy() error {
	var errs []error
	for _, p := range c.GetPaths() {
		errs = append(errs, os.RemoveAll(p))
	}
	return errors.Join(errs...)
}

func newFake(t *testing.T, pidsLimit int64) (*Manager, fakeCgroupfs) {
	t.Helper()
	cgroups.TestMode = true
	t.Cleanup(func() { cgroups.TestMode = false })
	f := fakeCgroupfs{root: t.TempDir()}
	m, err := New(Config{Root: "/skiff/node-1", PodPidsLimit: pidsLimit})
	if err != nil {
		t.Fatal(err)
	}
	if m.v2 {
		t.Skip("the fake cgroupfs is of cgroup v1 layout; this host is in unified mode")
	}
	m.cfg.newCgroup = f.newCgroup
	return m, f
}

func TestQoSCgroups(t *testing.T) {
	m, f := newFake(t, -1)
	if err := m.UpdateQoS(nil); err == nil {
		t.Error("UpdateQoS before EnsureQoS: no error")
	}
	alloc := map[string]resource.Quantity{"cpu": resource.MustParse("1900m"), "memory": resource.MustParse("3996Mi"), "pods": resource.MustParse("110")}
	if err := m.EnsureQoS(alloc); err != nil {
		t.Fatal(err)
	}
	const k = "/skiff/node-1/kubepods"
	for _, c := range []struct{ sub, cgroup, file, want string }{
		{"memory", k, "memory.limit_in_bytes", strconv.Itoa(3996 << 20)},
		{"cpu", k, "cpu.shares", "1945"},
		{"cpu", k + "/besteffort", "cpu.shares", "2"},
	} {
		if got := f.read(t, c.sub, c.cgroup, c.file); got != c.want {
			t.Errorf("%s %s = %s, want %s", c.cgroup, c.file, got, c.want)
		}
	}
	for _, sub := range fakeSubsystems {
		if !f.exists(sub, k+"/burstable") || !f.exists(sub, k+"/besteffort") {
			t.Errorf("QoS cgroups missing in %s", sub)
		}
	}

	// Burstable weighs its pods' requests, and follows them as they go.
	b1 := pod("b1", nil, ctr("a", rl("cpu", "250m"), nil))
	b2 := pod("b2", nil, ctr("a", rl("cpu", "500m"), nil))
	if err := m.UpdateQoS([]*corev1.Pod{b1, b2}); err != nil {
		t.Fatal(err)
	}
	if got := f.read(t, "cpu", k+"/burstable", "cpu.shares"); got != "768" {
		t.Errorf("burstable cpu.shares %s, want 768", got)
	}
	if err := m.UpdateQoS([]*corev1.Pod{b2}); err != nil {
		t.Fatal(err)
	}
	if got := f.read(t, "cpu", k+"/burstable", "cpu.shares"); got != "512" {
		t.Errorf("burstable cpu.shares after a pod left %s, want 512", got)
	}
	// kubepods' limits are put back each time (a failed lowering is retried).
	if err := os.WriteFile(filepath.Join(f.root, "memory", k, "memory.limit_in_bytes"), []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.UpdateQoS(nil); err != nil {
		t.Fatal(err)
	}
	if got := f.read(t, "memory", k, "memory.limit_in_bytes"); got != strconv.Itoa(3996<<20) {
		t.Errorf("kubepods memory limit after UpdateQoS %s", got)
	}
	// A limit the kernel refuses on an existing kubepods (pods of an earlier
	// run above it) does not stop the kubelet; UpdateQoS keeps reporting it.
	limit := filepath.Join(f.root, "memory", k, "memory.limit_in_bytes")
	if err := os.Remove(limit); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(limit, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsureQoS(alloc); err != nil {
		t.Errorf("EnsureQoS over an existing kubepods whose limit fails: %v", err)
	}
	if err := m.UpdateQoS(nil); err == nil {
		t.Error("UpdateQoS: no error for a limit that failed")
	}
}

func TestPodCgroups(t *testing.T) {
	m, f := newFake(t, 100)
	if err := m.EnsureQoS(map[string]resource.Quantity{"cpu": resource.MustParse("2")}); err != nil {
		t.Fatal(err)
	}
	g := rl("cpu", "250m", "memory", "64Mi")
	guaranteed := pod("uid-g", nil, ctr("a", g, g))
	burstable := pod("uid-b", nil, ctr("a", rl("cpu", "100m"), nil))
	bestEffort := pod("uid-be", nil, ctr("a", nil, nil))
	for _, p := range []*corev1.Pod{guaranteed, burstable, bestEffort} {
		if err := m.EnsurePod(p); err != nil {
			t.Fatal(err)
		}
	}
	const k = "/skiff/node-1/kubepods"
	if got := m.PodCgroup(guaranteed); got != k+"/poduid-g" {
		t.Errorf("guaranteed pod cgroup %s", got)
	}
	for _, c := range []struct{ sub, cgroup, file, want string }{
		{"memory", k + "/poduid-g", "memory.limit_in_bytes", "67108864"},
		{"cpu", k + "/poduid-g", "cpu.cfs_quota_us", "25000"},
		{"cpu", k + "/poduid-g", "cpu.cfs_period_us", "100000"},
		{"cpu", k + "/poduid-g", "cpu.shares", "256"},
		{"pids", k + "/poduid-g", "pids.max", "100"},
		{"cpu", k + "/burstable/poduid-b", "cpu.shares", "102"},
		{"cpu", k + "/besteffort/poduid-be", "cpu.shares", "2"},
	} {
		if got := f.read(t, c.sub, c.cgroup, c.file); got != c.want {
			t.Errorf("%s %s = %s, want %s", c.cgroup, c.file, got, c.want)
		}
	}
	if f.exists("cpu", k+"/burstable/poduid-b/cpu.cfs_quota_us") || f.exists("memory", k+"/burstable/poduid-b/memory.limit_in_bytes") {
		t.Error("a Burstable pod without limits got a quota or a memory limit")
	}
	// An existing pod cgroup is left as it is.
	shares := filepath.Join(f.root, "cpu", k, "poduid-g", "cpu.shares")
	if err := os.WriteFile(shares, []byte("1000"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsurePod(guaranteed); err != nil {
		t.Fatal(err)
	}
	if got := f.read(t, "cpu", k+"/poduid-g", "cpu.shares"); got != "1000" {
		t.Errorf("EnsurePod rewrote an existing cgroup: shares %s", got)
	}

	// What is left in a pod's cgroup, a container's cgroup included, is
	// killed before the cgroup goes.
	sleep := exec.Command("sleep", "20")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleep.Process.Kill() })
	ctrDir := filepath.Join(f.root, "cpu", k, "poduid-g", "ctr")
	if err := os.MkdirAll(ctrDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for dir, procs := range map[string]string{filepath.Dir(ctrDir): "", ctrDir: strconv.Itoa(sleep.Process.Pid) + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(procs), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.RemovePod("uid-g"); err != nil {
		t.Fatal(err)
	}
	err := sleep.Wait()
	if ws, ok := sleep.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the process left in the pod cgroup: %v, want killed", err)
	}
	for _, sub := range fakeSubsystems {
		if f.exists(sub, k+"/poduid-g") {
			t.Errorf("pod cgroup left in %s", sub)
		}
	}
	if err := m.RemovePod("uid-g"); err != nil {
		t.Errorf("removing a removed pod cgroup: %v", err)
	}

	// Housekeeping removes the cgroups of pods nobody knows, in any tier.
	orphan := pod("uid-orphan", nil, ctr("a", rl("cpu", "1"), nil))
	if err := m.EnsurePod(orphan); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.root, "cpu", k, "burstable", "not-a-pod"), 0o755); err != nil {
		t.Fatal(err)
	}
	var asked []string
	err = m.CleanupOrphans(func(uid string) bool {
		asked = append(asked, uid)
		return uid == "uid-b"
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(asked)
	if !slices.Equal(asked, []string{"uid-b", "uid-be", "uid-orphan"}) {
		t.Errorf("asked about %v", asked)
	}
	if !f.exists("cpu", k+"/burstable/poduid-b") {
		t.Error("a known pod's cgroup was removed")
	}
	for _, gone := range []string{k + "/burstable/poduid-orphan", k + "/besteffort/poduid-be"} {
		if f.exists("memory", gone) || f.exists("cpu", gone) {
			t.Errorf("orphaned cgroup %s left", gone)
		}
	}
	if !f.exists("cpu", k+"/burstable/not-a-pod") {
		t.Error("a cgroup that is no pod's was removed")
	}
}
