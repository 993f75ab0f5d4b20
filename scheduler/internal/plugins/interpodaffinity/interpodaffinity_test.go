package interpodaffinity

import (
	"context"
	"fmt"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
)

func affTerm(app, key string) *corev1.PodAffinityTerm {
	return &corev1.PodAffinityTerm{LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}, TopologyKey: key}
}

func podWith(name string, labels map[string]string, aff *corev1.Affinity) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "d", Name: name, Labels: labels}, Spec: &corev1.PodSpec{Affinity: aff}}
}

// nodes: n0,n1 in zone a; n2 in zone b. placed: node index → pods.
func nodes(placed map[int][]*corev1.Pod) []*framework.NodeInfo {
	zones := []string{"a", "a", "b"}
	var out []*framework.NodeInfo
	for i, z := range zones {
		ni := framework.NewNodeInfo(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: fmt.Sprintf("n%d", i),
			Labels: map[string]string{"zone": z, "host": fmt.Sprintf("n%d", i)}}})
		for _, p := range placed[i] {
			ni.AddPod(framework.NewPodInfo(p))
		}
		out = append(out, ni)
	}
	return out
}

func TestFilter(t *testing.T) {
	db := podWith("db", map[string]string{"app": "db"}, nil)
	antiDB := podWith("anti", map[string]string{"app": "cache"}, &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{affTerm("web", "zone")}}})
	cases := []struct {
		name   string
		pod    *corev1.Pod
		placed map[int][]*corev1.Pod
		want   []string
	}{
		{"affinity to db's zone", podWith("p", nil, &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{affTerm("db", "zone")}}}),
			map[int][]*corev1.Pod{0: {db}}, []string{"n0", "n1"}},
		{"affinity to db's host", podWith("p", nil, &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{affTerm("db", "host")}}}),
			map[int][]*corev1.Pod{0: {db}}, []string{"n0"}},
		{"no match anywhere and not self-matching", podWith("p", nil, &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{affTerm("db", "zone")}}}),
			nil, nil},
		{"first of a self-matching group goes anywhere", podWith("p", map[string]string{"app": "db"}, &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{affTerm("db", "zone")}}}),
			nil, []string{"n0", "n1", "n2"}},
		{"anti-affinity to db's zone", podWith("p", nil, &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{affTerm("db", "zone")}}}),
			map[int][]*corev1.Pod{0: {db}}, []string{"n2"}},
		{"existing pod's anti-affinity", podWith("web", map[string]string{"app": "web"}, nil),
			map[int][]*corev1.Pod{2: {antiDB}}, []string{"n0", "n1"}},
		{"other namespace does not count", podWith("p", nil, &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{affTerm("db", "zone")}}}),
			map[int][]*corev1.Pod{0: {{Metadata: &metav1.ObjectMeta{Namespace: "other", Name: "db", Labels: map[string]string{"app": "db"}}, Spec: &corev1.PodSpec{}}}}, []string{"n0", "n1", "n2"}},
	}
	for _, tc := range cases {
		ns := nodes(tc.placed)
		pi := framework.NewPodInfo(tc.pod)
		cs := framework.NewCycleState()
		Plugin{}.PreFilter(context.Background(), cs, pi, ns)
		var ok []string
		for _, n := range ns {
			if (Plugin{}).Filter(context.Background(), cs, pi, n).IsSuccess() {
				ok = append(ok, n.Name())
			}
		}
		if fmt.Sprint(ok) != fmt.Sprint(tc.want) {
			t.Errorf("%s: feasible %v, want %v", tc.name, ok, tc.want)
		}
	}
}

func TestScorePreferredTerms(t *testing.T) {
	db := podWith("db", map[string]string{"app": "db"}, nil)
	ns := nodes(map[int][]*corev1.Pod{2: {db}})
	pi := framework.NewPodInfo(podWith("p", nil, &corev1.Affinity{PodAffinity: &corev1.PodAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []*corev1.WeightedPodAffinityTerm{{Weight: 10, PodAffinityTerm: affTerm("db", "zone")}}}}))
	cs := framework.NewCycleState()
	Plugin{}.PreFilter(context.Background(), cs, pi, ns)
	var scores []framework.NodeScore
	for _, n := range ns {
		s, _ := Plugin{}.Score(context.Background(), cs, pi, n)
		scores = append(scores, framework.NodeScore{Name: n.Name(), Score: s})
	}
	Plugin{}.NormalizeScore(context.Background(), cs, pi, scores)
	if scores[2].Score != 100 || scores[0].Score != 0 {
		t.Fatalf("scores %v", scores)
	}
}
