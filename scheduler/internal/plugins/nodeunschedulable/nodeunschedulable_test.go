package nodeunschedulable

import (
	"context"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
)

func TestFilter(t *testing.T) {
	cordoned := framework.NewNodeInfo(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n"}, Spec: &corev1.NodeSpec{Unschedulable: true}})
	open := framework.NewNodeInfo(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n"}})
	pod := func(tols ...*corev1.Toleration) *framework.PodInfo {
		return framework.NewPodInfo(&corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p"}, Spec: &corev1.PodSpec{Tolerations: tols}})
	}
	cases := []struct {
		name string
		pod  *framework.PodInfo
		node *framework.NodeInfo
		want string
	}{
		{"schedulable", pod(), open, ""},
		{"cordoned", pod(), cordoned, ErrReason},
		{"tolerates unschedulable", pod(&corev1.Toleration{Key: "node.kubernetes.io/unschedulable", Operator: "Exists", Effect: "NoSchedule"}), cordoned, ""},
		{"tolerates everything", pod(&corev1.Toleration{Operator: "Exists"}), cordoned, ""},
		{"wrong effect", pod(&corev1.Toleration{Key: "node.kubernetes.io/unschedulable", Operator: "Exists", Effect: "NoExecute"}), cordoned, ErrReason},
	}
	for _, tc := range cases {
		if got := (Plugin{}).Filter(context.Background(), nil, tc.pod, tc.node).Message(); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
