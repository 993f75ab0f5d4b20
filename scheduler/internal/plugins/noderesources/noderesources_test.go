package noderesources

import (
	"context"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
)

func rl(kv ...string) map[string]*metav1.Quantity {
	m := map[string]*metav1.Quantity{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = &metav1.Quantity{String_: kv[i+1]}
	}
	return m
}

func podWith(containers, inits []map[string]*metav1.Quantity, overhead map[string]*metav1.Quantity) *framework.PodInfo {
	p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "d", Name: "p"}, Spec: &corev1.PodSpec{Overhead: overhead}}
	for _, r := range containers {
		p.Spec.Containers = append(p.Spec.Containers, &corev1.Container{Resources: &corev1.ResourceRequirements{Requests: r}})
	}
	for _, r := range inits {
		p.Spec.InitContainers = append(p.Spec.InitContainers, &corev1.Container{Resources: &corev1.ResourceRequirements{Requests: r}})
	}
	return framework.NewPodInfo(p)
}

func nodeWith(alloc map[string]*metav1.Quantity, pods ...*framework.PodInfo) *framework.NodeInfo {
	n := framework.NewNodeInfo(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n"}, Status: &corev1.NodeStatus{Allocatable: alloc}})
	for _, p := range pods {
		n.AddPod(p)
	}
	return n
}

func TestFitFilter(t *testing.T) {
	alloc := rl("cpu", "2", "memory", "4Gi", "pods", "3", "example.com/gpu", "1", "ephemeral-storage", "10Gi")
	used := podWith([]map[string]*metav1.Quantity{rl("cpu", "1", "memory", "1Gi")}, nil, nil)
	cases := []struct {
		name string
		pod  *framework.PodInfo
		node *framework.NodeInfo
		want string
	}{
		{"fits", podWith([]map[string]*metav1.Quantity{rl("cpu", "1")}, nil, nil), nodeWith(alloc, used), ""},
		{"cpu", podWith([]map[string]*metav1.Quantity{rl("cpu", "1500m")}, nil, nil), nodeWith(alloc, used), "Insufficient cpu"},
		{"memory and cpu", podWith([]map[string]*metav1.Quantity{rl("cpu", "3", "memory", "5Gi")}, nil, nil), nodeWith(alloc), "Insufficient cpu, Insufficient memory"},
		{"init container is the largest step", podWith([]map[string]*metav1.Quantity{rl("cpu", "500m")}, []map[string]*metav1.Quantity{rl("cpu", "1500m")}, nil), nodeWith(alloc, used), "Insufficient cpu"},
		{"init containers do not add up", podWith([]map[string]*metav1.Quantity{rl("cpu", "500m")}, []map[string]*metav1.Quantity{rl("cpu", "1"), rl("cpu", "1")}, nil), nodeWith(alloc, used), ""},
		{"overhead counts", podWith([]map[string]*metav1.Quantity{rl("cpu", "900m")}, nil, rl("cpu", "200m")), nodeWith(alloc, used), "Insufficient cpu"},
		{"extended resource", podWith([]map[string]*metav1.Quantity{rl("example.com/gpu", "2")}, nil, nil), nodeWith(alloc), "Insufficient example.com/gpu"},
		{"ephemeral storage", podWith([]map[string]*metav1.Quantity{rl("ephemeral-storage", "11Gi")}, nil, nil), nodeWith(alloc), "Insufficient ephemeral-storage"},
		{"pods", podWith(nil, nil, nil), nodeWith(alloc, used, used, used), "Too many pods"},
	}
	for _, tc := range cases {
		st := NewFit().Filter(context.Background(), nil, tc.pod, tc.node)
		if got := st.Message(); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestScoringStrategies(t *testing.T) {
	alloc := rl("cpu", "4", "memory", "8Gi", "pods", "110")
	empty := nodeWith(alloc)
	half := nodeWith(alloc, podWith([]map[string]*metav1.Quantity{rl("cpu", "2", "memory", "4Gi")}, nil, nil))
	p := podWith([]map[string]*metav1.Quantity{rl("cpu", "1", "memory", "2Gi")}, nil, nil)
	score := func(f *Fit, n *framework.NodeInfo) int64 { s, _ := f.Score(context.Background(), nil, p, n); return s }
	least := NewFit()
	if a, b := score(least, empty), score(least, half); a != 75 || b != 25 {
		t.Errorf("LeastAllocated: empty %d half %d, want 75 25", a, b)
	}
	most := NewFit()
	most.Strategy = MostAllocated
	if a, b := score(most, empty), score(most, half); a != 25 || b != 75 {
		t.Errorf("MostAllocated: empty %d half %d, want 25 75", a, b)
	}
	ratio := NewFit()
	ratio.Strategy = RequestedToCapacityRatio
	ratio.Shape = []ShapePoint{{0, 0}, {100, 10}}
	if a := score(ratio, half); a != 75 {
		t.Errorf("RequestedToCapacityRatio: %d, want 75", a)
	}
	// A pod asking nothing is counted with upstream's non-zero defaults.
	if s := score(least, nodeWith(alloc)); s == 100 {
		t.Error("non-zero defaults not applied")
	}
	b := NewBalanced()
	cpuHeavy := podWith([]map[string]*metav1.Quantity{rl("cpu", "4", "memory", "0")}, nil, nil)
	even, _ := b.Score(context.Background(), nil, p, empty)
	skewed, _ := b.Score(context.Background(), nil, cpuHeavy, empty)
	if even <= skewed {
		t.Errorf("BalancedAllocation: even %d skewed %d", even, skewed)
	}
}
