package placement

import (
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func TestRequiredMatches(t *testing.T) {
	n := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"zone": "a", "cores": "8"}}}
	expr := func(key, op string, vals ...string) *corev1.NodeSelectorTerm {
		return &corev1.NodeSelectorTerm{MatchExpressions: []*corev1.NodeSelectorRequirement{{Key: key, Operator: op, Values: vals}}}
	}
	pod := func(sel map[string]string, terms ...*corev1.NodeSelectorTerm) *corev1.Pod {
		p := &corev1.Pod{Spec: &corev1.PodSpec{NodeSelector: sel}}
		if len(terms) > 0 {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}}
		}
		return p
	}
	cases := []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"nothing asked", pod(nil), true},
		{"selector", pod(map[string]string{"zone": "a"}), true},
		{"selector miss", pod(map[string]string{"zone": "b"}), false},
		{"In", pod(nil, expr("zone", "In", "b", "a")), true},
		{"NotIn", pod(nil, expr("zone", "NotIn", "a")), false},
		{"NotIn absent key", pod(nil, expr("gpu", "NotIn", "x")), true},
		{"Exists", pod(nil, expr("cores", "Exists")), true},
		{"DoesNotExist", pod(nil, expr("cores", "DoesNotExist")), false},
		{"Gt", pod(nil, expr("cores", "Gt", "4")), true},
		{"Gt equal", pod(nil, expr("cores", "Gt", "8")), false},
		{"Lt", pod(nil, expr("cores", "Lt", "16")), true},
		{"Lt not a number", pod(nil, expr("zone", "Lt", "16")), false},
		{"terms are ORed", pod(nil, expr("zone", "In", "b"), expr("cores", "Exists")), true},
		{"matchFields name", pod(nil, &corev1.NodeSelectorTerm{MatchFields: []*corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: "In", Values: []string{"n1"}}}}), true},
		{"empty term matches nothing", pod(nil, &corev1.NodeSelectorTerm{}), false},
	}
	for _, tc := range cases {
		if got := RequiredMatches(tc.pod.Spec, n); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestTolerations(t *testing.T) {
	taint := &corev1.Taint{Key: "dedicated", Value: "batch", Effect: "NoSchedule"}
	for _, tc := range []struct {
		tol  *corev1.Toleration
		want bool
	}{
		{&corev1.Toleration{Key: "dedicated", Value: "batch"}, true},
		{&corev1.Toleration{Key: "dedicated", Operator: "Equal", Value: "web"}, false},
		{&corev1.Toleration{Key: "dedicated", Operator: "Exists", Effect: "NoSchedule"}, true},
		{&corev1.Toleration{Key: "dedicated", Operator: "Exists", Effect: "NoExecute"}, false},
		{&corev1.Toleration{Operator: "Exists"}, true},
		{&corev1.Toleration{Key: "other", Operator: "Exists"}, false},
	} {
		if got := ToleratesTaint(tc.tol, taint); got != tc.want {
			t.Errorf("%v tolerates %v: %v, want %v", tc.tol, taint, got, tc.want)
		}
	}
	soft := &corev1.Taint{Key: "soft", Effect: "PreferNoSchedule"}
	hard := func(t *corev1.Taint) bool { return t.Effect != "PreferNoSchedule" }
	if got, ok := UntoleratedTaint([]*corev1.Taint{soft, taint}, nil, hard); !ok || got != taint {
		t.Errorf("UntoleratedTaint: %v %v, want the NoSchedule taint", got, ok)
	}
	if _, ok := UntoleratedTaint([]*corev1.Taint{soft, taint}, []*corev1.Toleration{{Key: "dedicated", Operator: "Exists"}}, hard); ok {
		t.Error("UntoleratedTaint found a tolerated taint")
	}
}
