package imagelocality

import (
	"context"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
)

func TestScorePrefersNodesWithTheImage(t *testing.T) {
	node := func(name string, images ...string) *framework.NodeInfo {
		n := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: name}, Status: &corev1.NodeStatus{}}
		for _, img := range images {
			n.Status.Images = append(n.Status.Images, &corev1.ContainerImage{Names: []string{img}, SizeBytes: 500 * mb})
		}
		return framework.NewNodeInfo(n)
	}
	nodes := []*framework.NodeInfo{node("has", "nginx:1.27"), node("untagged", "nginx:latest"), node("none")}
	pod := framework.NewPodInfo(&corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p"}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Image: "nginx:1.27"}}}})
	p := &Plugin{}
	p.PreScore(context.Background(), nil, pod, nodes)
	has, _ := p.Score(context.Background(), nil, pod, nodes[0])
	none, _ := p.Score(context.Background(), nil, pod, nodes[2])
	if has <= none || none != 0 {
		t.Fatalf("has %d none %d", has, none)
	}
	// An untagged image is :latest.
	latest := framework.NewPodInfo(&corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "q"}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Image: "nginx"}}}})
	p.PreScore(context.Background(), nil, latest, nodes)
	if s, _ := p.Score(context.Background(), nil, latest, nodes[1]); s == 0 {
		t.Fatal("nginx did not match nginx:latest")
	}
}
