package defaulttolerationseconds

import (
	"context"
	"fmt"
	"testing"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/request"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func secs(n int64) *int64 { return &n }

func describe(ts []*corev1.Toleration) []string {
	var out []string
	for _, t := range ts {
		s := "-"
		if t.TolerationSeconds != nil {
			s = fmt.Sprint(*t.TolerationSeconds)
		}
		out = append(out, fmt.Sprintf("%s:%s:%s:%s", t.Key, t.Operator, t.Effect, s))
	}
	return out
}

func TestAdmit(t *testing.T) {
	k, _ := scheme.ForResource("", "pods")
	for _, tc := range []struct {
		name string
		have []*corev1.Toleration
		sub  string
		want string
	}{
		{name: "none gets both", want: "[node.kubernetes.io/not-ready:Exists:NoExecute:300 node.kubernetes.io/unreachable:Exists:NoExecute:200]"},
		{name: "own not-ready kept, unreachable added",
			have: []*corev1.Toleration{{Key: TaintNodeNotReady, Operator: "Exists", Effect: "NoExecute", TolerationSeconds: secs(30)}},
			want: "[node.kubernetes.io/not-ready:Exists:NoExecute:30 node.kubernetes.io/unreachable:Exists:NoExecute:200]"},
		{name: "an empty effect covers NoExecute",
			have: []*corev1.Toleration{{Key: TaintNodeUnreachable, Operator: "Exists"}},
			want: "[node.kubernetes.io/unreachable:Exists::- node.kubernetes.io/not-ready:Exists:NoExecute:300]"},
		{name: "tolerate everything needs nothing",
			have: []*corev1.Toleration{{Operator: "Exists"}},
			want: "[:Exists::-]"},
		{name: "a NoSchedule toleration does not count",
			have: []*corev1.Toleration{{Key: TaintNodeNotReady, Operator: "Exists", Effect: "NoSchedule"}},
			want: "[node.kubernetes.io/not-ready:Exists:NoSchedule:- node.kubernetes.io/not-ready:Exists:NoExecute:300 node.kubernetes.io/unreachable:Exists:NoExecute:200]"},
		{name: "a subresource is left alone", sub: "binding", want: "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Namespace: "default"}, Spec: &corev1.PodSpec{Tolerations: tc.have}}
			a := admission.NewAttributes(admission.Create, k, tc.sub, "default", "p", request.User{}, pod, nil, false)
			if err := New(300, 200).Admit(context.Background(), a); err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprint(describe(pod.Spec.Tolerations))
			if got != tc.want {
				t.Errorf("tolerations = %s, want %s", got, tc.want)
			}
		})
	}
}
