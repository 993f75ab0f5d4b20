// Package nodeunschedulable filters out cordoned nodes unless the pod
// tolerates node.kubernetes.io/unschedulable (upstream's NodeUnschedulable).
package nodeunschedulable

import (
	"context"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/placement"
	"skiff.dev/scheduler/internal/framework"
)

const Name = "NodeUnschedulable"

// ErrReason is upstream's message.
const ErrReason = "node(s) were unschedulable"

var taint = &corev1.Taint{Key: "node.kubernetes.io/unschedulable", Effect: "NoSchedule"}

type Plugin struct{}

func (Plugin) Name() string { return Name }

func (Plugin) Filter(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) *framework.Status {
	if !node.Node.GetSpec().GetUnschedulable() {
		return nil
	}
	if placement.Tolerates(pod.Pod.GetSpec().GetTolerations(), taint) {
		return nil
	}
	return framework.NewStatus(framework.UnschedulableAndUnresolvable, ErrReason)
}
