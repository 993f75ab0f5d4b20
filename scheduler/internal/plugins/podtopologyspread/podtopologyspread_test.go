package podtopologyspread

import (
	"context"
	"fmt"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
)

// cluster builds nodes n0..n(k-1) in zones and places pods labelled app=web.
func cluster(zones []string, webPods map[int]int, extra ...*corev1.Node) []*framework.NodeInfo {
	var out []*framework.NodeInfo
	for i, z := range zones {
		labels := map[string]string{"kubernetes.io/hostname": fmt.Sprintf("n%d", i)}
		if z != "" {
			labels["zone"] = z
		}
		ni := framework.NewNodeInfo(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: fmt.Sprintf("n%d", i), Labels: labels}})
		for j := range webPods[i] {
			ni.AddPod(framework.NewPodInfo(&corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "d", Name: fmt.Sprintf("w%d-%d", i, j), Labels: map[string]string{"app": "web"}}}))
		}
		out = append(out, ni)
	}
	for _, n := range extra {
		out = append(out, framework.NewNodeInfo(n))
	}
	return out
}

func spreadPod(maxSkew int32, minDomains *int32, when string) *framework.PodInfo {
	return framework.NewPodInfo(&corev1.Pod{
		Metadata: &metav1.ObjectMeta{Namespace: "d", Name: "new", Labels: map[string]string{"app": "web"}},
		Spec: &corev1.PodSpec{TopologySpreadConstraints: []*corev1.TopologySpreadConstraint{{
			MaxSkew: maxSkew, TopologyKey: "zone", WhenUnsatisfiable: when, MinDomains: minDomains,
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		}}},
	})
}

func TestFilter(t *testing.T) {
	three := int32(3)
	cases := []struct {
		name   string
		pod    *framework.PodInfo
		nodes  []*framework.NodeInfo
		wantOK []string
	}{
		{"even zones accept anywhere", spreadPod(1, nil, "DoNotSchedule"), cluster([]string{"a", "b"}, nil), []string{"n0", "n1"}},
		{"skew 1 allows only the emptier zone", spreadPod(1, nil, "DoNotSchedule"), cluster([]string{"a", "b"}, map[int]int{0: 1}), []string{"n1"}},
		{"maxSkew 2 tolerates one more", spreadPod(2, nil, "DoNotSchedule"), cluster([]string{"a", "b"}, map[int]int{0: 1}), []string{"n0", "n1"}},
		{"node without the key is rejected", spreadPod(1, nil, "DoNotSchedule"), cluster([]string{"a", ""}, nil), []string{"n0"}},
		{"minDomains above the domains counts min as 0", spreadPod(1, &three, "DoNotSchedule"), cluster([]string{"a", "b"}, map[int]int{0: 1, 1: 1}), nil},
		{"ScheduleAnyway never filters", spreadPod(1, nil, "ScheduleAnyway"), cluster([]string{"a", "b"}, map[int]int{0: 5}), []string{"n0", "n1"}},
	}
	for _, tc := range cases {
		cs := framework.NewCycleState()
		Plugin{}.PreFilter(context.Background(), cs, tc.pod, tc.nodes)
		var ok []string
		for _, n := range tc.nodes {
			if (Plugin{}).Filter(context.Background(), cs, tc.pod, n).IsSuccess() {
				ok = append(ok, n.Name())
			}
		}
		if fmt.Sprint(ok) != fmt.Sprint(tc.wantOK) {
			t.Errorf("%s: feasible %v, want %v", tc.name, ok, tc.wantOK)
		}
	}
}

func TestScorePrefersFewerMatches(t *testing.T) {
	nodes := cluster([]string{"a", "b"}, map[int]int{0: 3})
	pod := spreadPod(1, nil, "ScheduleAnyway")
	cs := framework.NewCycleState()
	Plugin{}.PreFilter(context.Background(), cs, pod, nodes)
	scores := make([]framework.NodeScore, len(nodes))
	for i, n := range nodes {
		s, _ := Plugin{}.Score(context.Background(), cs, pod, n)
		scores[i] = framework.NodeScore{Name: n.Name(), Score: s}
	}
	Plugin{}.NormalizeScore(context.Background(), cs, pod, scores)
	if scores[1].Score <= scores[0].Score {
		t.Fatalf("scores %v", scores)
	}
}
