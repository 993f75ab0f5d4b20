package admission

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

var uid int

func pod(req map[string]*metav1.Quantity, phase string) *corev1.Pod {
	uid++
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: "p", Uid: string(rune('a' + uid))},
		Spec:     &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Resources: &corev1.ResourceRequirements{Requests: req}}}},
		Status:   &corev1.PodStatus{Phase: phase},
	}
}

func node(alloc map[string]*metav1.Quantity) *corev1.Node {
	return &corev1.Node{Status: &corev1.NodeStatus{Allocatable: alloc}}
}

func TestAdmit(t *testing.T) {
	n := node(rl("cpu", "2", "memory", "4Gi", "pods", "3", "ephemeral-storage", "10Gi", "example.com/dongle", "1"))
	cases := []struct {
		name            string
		pod             *corev1.Pod
		others          []*corev1.Pod
		reason, message string
	}{
		{"fits", pod(rl("cpu", "1", "memory", "1Gi"), ""), nil, "", ""},
		{"asks nothing", pod(nil, ""), []*corev1.Pod{pod(rl("cpu", "2"), "Running")}, "", ""},
		{"exactly full", pod(rl("cpu", "1"), ""), []*corev1.Pod{pod(rl("cpu", "1"), "Running")}, "", ""},
		{"cpu", pod(rl("cpu", "1500m"), ""), []*corev1.Pod{pod(rl("cpu", "1"), "Running")},
			OutOfCPU, "Node didn't have enough resource: cpu, requested: 1500, used: 1000, capacity: 2000"},
		{"memory", pod(rl("memory", "3Gi"), ""), []*corev1.Pod{pod(rl("memory", "2Gi"), "Pending")},
			OutOfMemory, "Node didn't have enough resource: memory, requested: 3221225472, used: 2147483648, capacity: 4294967296"},
		{"cpu before memory", pod(rl("cpu", "3", "memory", "5Gi"), ""), nil,
			OutOfCPU, "Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000"},
		{"ephemeral storage", pod(rl("ephemeral-storage", "11Gi"), ""), nil,
			OutOfEphemeralStorage, "Node didn't have enough resource: ephemeral-storage, requested: 11811160064, used: 0, capacity: 10737418240"},
		{"extended resource", pod(rl("example.com/dongle", "2"), ""), nil,
			"OutOfexample.com/dongle", "Node didn't have enough resource: example.com/dongle, requested: 2, used: 0, capacity: 1"},
		{"extended resource the node does not know", pod(rl("example.com/other", "2"), ""), nil, "", ""},
		{"pods", pod(nil, ""), []*corev1.Pod{pod(nil, "Running"), pod(nil, "Running"), pod(nil, "Pending")},
			OutOfPods, "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3"},
		{"pods before cpu", pod(rl("cpu", "10"), ""), []*corev1.Pod{pod(nil, "Running"), pod(nil, "Running"), pod(nil, "Running")},
			OutOfPods, "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3"},
		{"terminated pods do not count", pod(rl("cpu", "2"), ""), []*corev1.Pod{pod(rl("cpu", "2"), "Succeeded"), pod(rl("cpu", "2"), "Failed"), pod(nil, "Succeeded")}, "", ""},
	}
	for _, tc := range cases {
		ok, reason, message := Admit(tc.pod, n, tc.others)
		if ok != (tc.reason == "") || reason != tc.reason || message != tc.message {
			t.Errorf("%s: Admit = %v %q %q, want %q %q", tc.name, ok, reason, message, tc.reason, tc.message)
		}
	}
}

func TestAdmitIgnoresThePodItself(t *testing.T) {
	n := node(rl("cpu", "1", "pods", "1"))
	p := pod(rl("cpu", "1"), "Running")
	if ok, reason, msg := Admit(p, n, []*corev1.Pod{p}); !ok {
		t.Errorf("re-admitting a pod counted it twice: %s %s", reason, msg)
	}
}

func TestAdmitNoNode(t *testing.T) {
	if ok, reason, _ := Admit(pod(nil, ""), nil, nil); ok || reason != InvalidNodeInfo {
		t.Errorf("Admit without node = %v %s", ok, reason)
	}
}

func TestRequests(t *testing.T) {
	always := "Always"
	p := &corev1.Pod{Spec: &corev1.PodSpec{
		InitContainers: []*corev1.Container{
			{Name: "big-init", Resources: &corev1.ResourceRequirements{Requests: rl("cpu", "3", "memory", "1Gi")}},
			{Name: "sidecar", RestartPolicy: &always, Resources: &corev1.ResourceRequirements{Requests: rl("cpu", "500m", "memory", "100Mi")}},
			{Name: "init-after-sidecar", Resources: &corev1.ResourceRequirements{Requests: rl("memory", "2Gi")}},
		},
		Containers: []*corev1.Container{
			{Name: "a", Resources: &corev1.ResourceRequirements{Requests: rl("cpu", "1", "memory", "200Mi")}},
			{Name: "b", Resources: &corev1.ResourceRequirements{Requests: rl("cpu", "250m")}},
		},
		Overhead: rl("cpu", "100m", "memory", "10Mi"),
	}}
	r := Requests(p)
	// cpu: max(app 1250m + sidecar 500m, big-init 3000m) + 100m overhead.
	// memory: max(app 200Mi + sidecar 100Mi, 2Gi + sidecar 100Mi) + 10Mi.
	if r["cpu"] != 3100 || r["memory"] != (2048+100+10)<<20 {
		t.Errorf("Requests = %v", r)
	}
	p.Spec.Resources = &corev1.ResourceRequirements{Requests: rl("cpu", "4")}
	if r := Requests(p); r["cpu"] != 4100 {
		t.Errorf("pod-level cpu request: %d, want 4100 (pod-level plus overhead)", r["cpu"])
	}
}
