// Package nodename filters out every node but the one a pod names in
// spec.nodeName (upstream's NodeName plugin).
package nodename

import (
	"context"

	"skiff.dev/scheduler/internal/framework"
)

// Name is the plugin's name.
const Name = "NodeName"

// ErrReason is upstream's message.
const ErrReason = "node(s) didn't match the requested node name"

type Plugin struct{}

func (Plugin) Name() string { return Name }

func (Plugin) Filter(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) *framework.Status {
	if n := pod.Pod.GetSpec().GetNodeName(); n != "" && n != node.Name() {
		return framework.NewStatus(framework.UnschedulableAndUnresolvable, ErrReason)
	}
	return nil
}
