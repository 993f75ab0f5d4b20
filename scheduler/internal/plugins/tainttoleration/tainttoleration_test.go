package tainttoleration

import (
	"context"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
)

func TestFilterAndScore(t *testing.T) {
	node := func(taints ...*corev1.Taint) *framework.NodeInfo {
		return framework.NewNodeInfo(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n"}, Spec: &corev1.NodeSpec{Taints: taints}})
	}
	pod := func(tols ...*corev1.Toleration) *framework.PodInfo {
		return framework.NewPodInfo(&corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p"}, Spec: &corev1.PodSpec{Tolerations: tols}})
	}
	batch := &corev1.Taint{Key: "dedicated", Value: "batch", Effect: "NoSchedule"}
	cases := []struct {
		name string
		pod  *framework.PodInfo
		node *framework.NodeInfo
		want string
	}{
		{"no taints", pod(), node(), ""},
		{"untolerated", pod(), node(batch), "node(s) had untolerated taint {dedicated: batch}"},
		{"equal", pod(&corev1.Toleration{Key: "dedicated", Operator: "Equal", Value: "batch"}), node(batch), ""},
		{"wrong value", pod(&corev1.Toleration{Key: "dedicated", Value: "web"}), node(batch), "node(s) had untolerated taint {dedicated: batch}"},
		{"exists any key", pod(&corev1.Toleration{Operator: "Exists"}), node(batch), ""},
		{"other effect", pod(&corev1.Toleration{Key: "dedicated", Operator: "Exists", Effect: "NoExecute"}), node(batch), "node(s) had untolerated taint {dedicated: batch}"},
		{"prefer is not a filter", pod(), node(&corev1.Taint{Key: "k", Effect: "PreferNoSchedule"}), ""},
	}
	for _, tc := range cases {
		if got := (Plugin{}).Filter(context.Background(), nil, tc.pod, tc.node).Message(); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	prefer := &corev1.Taint{Key: "k", Effect: "PreferNoSchedule"}
	scores := []framework.NodeScore{{Name: "clean"}, {Name: "tainted"}}
	scores[1].Score, _ = (Plugin{}).Score(context.Background(), nil, pod(), node(prefer))
	(Plugin{}).NormalizeScore(context.Background(), nil, nil, scores)
	if scores[0].Score != 100 || scores[1].Score != 0 {
		t.Errorf("scores %v", scores)
	}
}
