package nodename

import (
	"context"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
)

func TestFilter(t *testing.T) {
	node := framework.NewNodeInfo(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1"}})
	for _, tc := range []struct{ nodeName, want string }{{"", ""}, {"n1", ""}, {"n2", ErrReason}} {
		p := framework.NewPodInfo(&corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p"}, Spec: &corev1.PodSpec{NodeName: tc.nodeName}})
		st := Plugin{}.Filter(context.Background(), nil, p, node)
		if st.Message() != tc.want || (tc.want != "" && st.Code != framework.UnschedulableAndUnresolvable) {
			t.Errorf("nodeName %q: %v", tc.nodeName, st)
		}
	}
}
