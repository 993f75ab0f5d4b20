package pods

import (
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
)

// A pod in a terminal phase stays in it with its reason, whatever the
// containers do afterwards; other moves pass.
func TestKeepTerminalPhase(t *testing.T) {
	evicted := &corev1.PodStatus{Phase: "Failed", Reason: "Evicted", Message: "The node was low on resource: memory."}
	for _, tc := range []struct {
		old, new      *corev1.PodStatus
		phase, reason string
	}{
		{evicted, &corev1.PodStatus{Phase: "Succeeded"}, "Failed", "Evicted"},
		{evicted, &corev1.PodStatus{Phase: "Running"}, "Failed", "Evicted"},
		{&corev1.PodStatus{Phase: "Succeeded"}, &corev1.PodStatus{Phase: "Failed", Reason: "Error"}, "Succeeded", ""},
		{evicted, &corev1.PodStatus{Phase: "Failed", Reason: "Evicted"}, "Failed", "Evicted"},
		{&corev1.PodStatus{Phase: "Running"}, &corev1.PodStatus{Phase: "Succeeded"}, "Succeeded", ""},
		{nil, &corev1.PodStatus{Phase: "Pending"}, "Pending", ""},
	} {
		got := keepTerminalPhase(tc.old, tc.new)
		if got.Phase != tc.phase || got.Reason != tc.reason {
			t.Errorf("%v then %v: got %s/%s, want %s/%s", tc.old.GetPhase(), tc.new.Phase, got.Phase, got.Reason, tc.phase, tc.reason)
		}
	}
	n := &corev1.PodStatus{Phase: "Succeeded"}
	keepTerminalPhase(evicted, n)
	if n.Phase != "Succeeded" {
		t.Error("the caller's status was modified")
	}
}
