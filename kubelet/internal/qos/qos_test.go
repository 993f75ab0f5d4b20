package qos

import (
	"testing"

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

func pod(init []*corev1.Container, cs ...*corev1.Container) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Uid: "1234"}, Spec: &corev1.PodSpec{InitContainers: init, Containers: cs}}
}

func TestComputeClass(t *testing.T) {
	g := rl("cpu", "100m", "memory", "100Mi")
	cases := []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"nothing", pod(nil, ctr("a", nil, nil)), BestEffort},
		{"zero requests", pod(nil, ctr("a", rl("cpu", "0", "memory", "0"), nil)), BestEffort},
		{"only extended resources", pod(nil, ctr("a", rl("nvidia.com/gpu", "1"), rl("nvidia.com/gpu", "1"))), BestEffort},
		{"guaranteed", pod(nil, ctr("a", g, g)), Guaranteed},
		{"guaranteed, two containers", pod(nil, ctr("a", g, g), ctr("b", rl("cpu", "1", "memory", "1Gi"), rl("cpu", "1", "memory", "1Gi"))), Guaranteed},
		{"limits only (requests default to them)", pod(nil, ctr("a", nil, g)), Burstable},
		{"equal in other units", pod(nil, ctr("a", rl("cpu", "1", "memory", "1024Mi"), rl("cpu", "1000m", "memory", "1Gi"))), Guaranteed},
		{"request below limit", pod(nil, ctr("a", rl("cpu", "50m", "memory", "100Mi"), g)), Burstable},
		{"cpu only", pod(nil, ctr("a", rl("cpu", "100m"), rl("cpu", "100m"))), Burstable},
		{"one container best effort", pod(nil, ctr("a", g, g), ctr("b", nil, nil)), Burstable},
		{"memory request only", pod(nil, ctr("a", rl("memory", "1Mi"), nil)), Burstable},
		{"init container best effort, app guaranteed", pod([]*corev1.Container{ctr("i", nil, nil)}, ctr("a", g, g)), Burstable},
		{"init container guaranteed, app best effort", pod([]*corev1.Container{ctr("i", g, g)}, ctr("a", nil, nil)), Burstable},
		{"init and app guaranteed", pod([]*corev1.Container{ctr("i", g, g)}, ctr("a", g, g)), Guaranteed},
		{"init container burstable", pod([]*corev1.Container{ctr("i", rl("memory", "1Mi"), nil)}, ctr("a", nil, nil)), Burstable},
	}
	for _, tc := range cases {
		if got := ComputeClass(tc.pod); got != tc.want {
			t.Errorf("%s: class = %s, want %s", tc.name, got, tc.want)
		}
	}
	// Overhead does not change the class.
	p := pod(nil, ctr("a", g, g))
	p.Spec.Overhead = rl("cpu", "250m", "memory", "120Mi")
	if got := ComputeClass(p); got != Guaranteed {
		t.Errorf("guaranteed with overhead: %s", got)
	}
	p = pod(nil, ctr("a", nil, nil))
	p.Spec.Overhead = rl("cpu", "250m")
	if got := ComputeClass(p); got != BestEffort {
		t.Errorf("best effort with overhead: %s", got)
	}
	// Pod-level resources decide alone.
	p = pod(nil, ctr("a", nil, nil), ctr("b", nil, nil))
	p.Spec.Resources = &corev1.ResourceRequirements{Requests: g, Limits: g}
	if got := ComputeClass(p); got != Guaranteed {
		t.Errorf("pod-level guaranteed: %s", got)
	}
	// The class in the status wins: it never changes once set.
	p = pod(nil, ctr("a", nil, nil))
	p.Status = &corev1.PodStatus{QosClass: Burstable}
	if got := Class(p); got != Burstable {
		t.Errorf("Class with status = %s", got)
	}
}

func TestMilliCPUToShares(t *testing.T) {
	for _, tc := range []struct{ milli, want int64 }{
		{0, 2}, {1, 2}, {2, 2}, {3, 3}, {10, 10}, {100, 102}, {250, 256}, {1000, 1024}, {1500, 1536}, {256000, 262144}, {300000, 262144},
	} {
		if got := MilliCPUToShares(tc.milli); got != tc.want {
			t.Errorf("MilliCPUToShares(%d) = %d, want %d", tc.milli, got, tc.want)
		}
	}
}

func TestMilliCPUToQuota(t *testing.T) {
	for _, tc := range []struct{ milli, want int64 }{
		{0, 0}, {1, 1000}, {5, 1000}, {9, 1000}, {10, 1000}, {11, 1100}, {200, 20000}, {500, 50000}, {1000, 100000}, {1500, 150000},
	} {
		if got := MilliCPUToQuota(tc.milli, QuotaPeriod); got != tc.want {
			t.Errorf("MilliCPUToQuota(%d) = %d, want %d", tc.milli, got, tc.want)
		}
	}
}

func TestOOMScoreAdjust(t *testing.T) {
	const capacity = 4000000000
	g := rl("cpu", "100m", "memory", "100Mi")
	critical := pod(nil, ctr("a", nil, nil))
	critical.Spec.PriorityClassName = "system-node-critical"
	critical.Metadata.Annotations = map[string]string{"kubernetes.io/config.source": "file"}
	prio := int32(2000001000)
	criticalByPriority := pod(nil, ctr("a", nil, nil))
	criticalByPriority.Spec.PriorityClassName = "system-node-critical"
	criticalByPriority.Spec.Priority = &prio
	notCritical := pod(nil, ctr("a", nil, nil))
	notCritical.Spec.PriorityClassName = "system-node-critical" // but neither static nor of critical priority
	sidecarPod := pod([]*corev1.Container{ctr("side", rl("memory", "1000"), nil)}, ctr("a", rl("memory", "2000000000"), nil), ctr("b", rl("memory", "3000000000"), nil))
	always := "Always"
	sidecarPod.Spec.InitContainers[0].RestartPolicy = &always
	cases := []struct {
		name string
		pod  *corev1.Pod
		c    int // index into containers, -1 for the first init container
		want int
	}{
		{"guaranteed", pod(nil, ctr("a", g, g)), 0, -997},
		{"best effort", pod(nil, ctr("a", nil, nil)), 0, 1000},
		{"burstable, half the memory", pod(nil, ctr("a", rl("memory", "2000000000"), nil)), 0, 500},
		{"burstable, a tenth", pod(nil, ctr("a", rl("memory", "400000000"), nil)), 0, 900},
		{"burstable, tiny request", pod(nil, ctr("a", rl("memory", "1"), nil)), 0, 999},
		{"burstable, no memory request", pod(nil, ctr("a", rl("cpu", "1"), nil)), 0, 999},
		{"burstable, all the memory", pod(nil, ctr("a", rl("memory", "4000000000"), nil)), 0, 3},
		{"burstable, more than the memory", pod(nil, ctr("a", rl("memory", "8000000000"), nil)), 0, 3},
		{"node critical static pod", critical, 0, -997},
		{"node critical by priority", criticalByPriority, 0, -997},
		{"node critical class alone", notCritical, 0, 1000},
		{"sidecar matches the smallest regular container", sidecarPod, -1, 500},
		{"regular container beside a sidecar", sidecarPod, 1, 250},
	}
	for _, tc := range cases {
		c := tc.pod.Spec.InitContainers
		var ct *corev1.Container
		if tc.c < 0 {
			ct = c[0]
		} else {
			ct = tc.pod.Spec.Containers[tc.c]
		}
		if got := OOMScoreAdjust(tc.pod, ct, capacity); got != tc.want {
			t.Errorf("%s: oom_score_adj = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestContainerResourcesFor(t *testing.T) {
	node := Node{MemoryCapacity: 4 << 30}
	cases := []struct {
		name                       string
		c                          *corev1.Container
		shares, quota, mem, oomAdj int64
	}{
		{"best effort", ctr("a", nil, nil), 2, 0, 0, 1000},
		{"request only", ctr("a", rl("cpu", "250m", "memory", "1Gi"), nil), 256, 0, 0, 750},
		{"limit only: shares from the limit (undefaulted: Burstable)", ctr("a", nil, rl("cpu", "500m", "memory", "128Mi")), 512, 50000, 128 << 20, 999},
		{"guaranteed", ctr("a", rl("cpu", "1", "memory", "1Gi"), rl("cpu", "1", "memory", "1Gi")), 1024, 100000, 1 << 30, -997},
		{"tiny limit gets the 1 ms quota", ctr("a", rl("cpu", "1m"), rl("cpu", "5m")), 2, 1000, 0, 999},
	}
	for _, tc := range cases {
		p := pod(nil, tc.c)
		r := ContainerResourcesFor(p, tc.c, node)
		if r.CpuShares != tc.shares || r.CpuQuota != tc.quota || r.CpuPeriod != 100000 || r.MemoryLimitInBytes != tc.mem || r.OomScoreAdj != tc.oomAdj {
			t.Errorf("%s: shares %d quota %d period %d memory %d oom %d, want %d %d 100000 %d %d",
				tc.name, r.CpuShares, r.CpuQuota, r.CpuPeriod, r.MemoryLimitInBytes, r.OomScoreAdj, tc.shares, tc.quota, tc.mem, tc.oomAdj)
		}
		if r.MemorySwapLimitInBytes != 0 || r.Unified != nil {
			t.Errorf("%s: swap set without swap control", tc.name)
		}
	}
	c := ctr("a", nil, rl("memory", "64Mi"))
	if r := ContainerResourcesFor(pod(nil, c), c, Node{MemoryCapacity: 1 << 30, SwapControl: true}); r.MemorySwapLimitInBytes != 64<<20 {
		t.Errorf("cgroup v1 with swap control: swap limit %d, want the memory limit (no swap)", r.MemorySwapLimitInBytes)
	}
	if r := ContainerResourcesFor(pod(nil, c), c, Node{MemoryCapacity: 1 << 30, SwapControl: true, CgroupV2: true}); r.Unified["memory.swap.max"] != "0" {
		t.Errorf("cgroup v2 with swap control: unified %v, want memory.swap.max=0", r.Unified)
	}
}

func TestMemTotal(t *testing.T) {
	got, err := memTotal([]byte("MemFree:  10 kB\nMemTotal:       16316412 kB\n"))
	if err != nil || got != 16316412*1024 {
		t.Errorf("memTotal = %d, %v", got, err)
	}
	if _, err := memTotal([]byte("nothing\n")); err == nil {
		t.Error("memTotal without MemTotal: no error")
	}
	n, err := DetectNode()
	if err != nil || n.MemoryCapacity <= 0 {
		t.Errorf("DetectNode on this machine = %+v, %v", n, err)
	}
}

func TestPodCgroupParent(t *testing.T) {
	g := rl("cpu", "1", "memory", "1Gi")
	cases := []struct {
		root string
		pod  *corev1.Pod
		want string
	}{
		{"/", pod(nil, ctr("a", g, g)), "/kubepods/pod1234"},
		{"", pod(nil, ctr("a", g, nil)), "/kubepods/burstable/pod1234"},
		{"/", pod(nil, ctr("a", nil, nil)), "/kubepods/besteffort/pod1234"},
		{"/skiff-node-1", pod(nil, ctr("a", nil, nil)), "/skiff-node-1/kubepods/besteffort/pod1234"},
	}
	for _, tc := range cases {
		if got := PodCgroupParent(tc.root, tc.pod); got != tc.want {
			t.Errorf("PodCgroupParent(%q) = %s, want %s", tc.root, got, tc.want)
		}
	}
}
