// Package tainttoleration filters out nodes with a NoSchedule or NoExecute
// taint the pod does not tolerate, and prefers nodes with fewer untolerated
// PreferNoSchedule taints (upstream's TaintToleration).
package tainttoleration

import (
	"context"
	"fmt"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/placement"
	"skiff.dev/scheduler/internal/framework"
)

const Name = "TaintToleration"

type Plugin struct{}

func (Plugin) Name() string { return Name }

func (Plugin) Filter(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) *framework.Status {
	tols := pod.Pod.GetSpec().GetTolerations()
	for _, t := range node.Node.GetSpec().GetTaints() {
		if t.Effect != "NoSchedule" && t.Effect != "NoExecute" {
			continue
		}
		if !placement.Tolerates(tols, t) {
			return framework.NewStatus(framework.UnschedulableAndUnresolvable, untolerated(t))
		}
	}
	return nil
}

// untolerated is upstream's reason: "node(s) had untolerated taint {key: value}".
func untolerated(t *corev1.Taint) string {
	return fmt.Sprintf("node(s) had untolerated taint {%s: %s}", t.Key, t.Value)
}

// Score counts untolerated PreferNoSchedule taints; NormalizeScore reverses
// it so fewer is better.
func (Plugin) Score(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) (int64, *framework.Status) {
	var n int64
	tols := pod.Pod.GetSpec().GetTolerations()
	for _, t := range node.Node.GetSpec().GetTaints() {
		if t.Effect == "PreferNoSchedule" && !placement.Tolerates(tols, t) {
			n++
		}
	}
	return n, nil
}

func (Plugin) NormalizeScore(_ context.Context, _ *framework.CycleState, _ *framework.PodInfo, scores []framework.NodeScore) *framework.Status {
	framework.DefaultNormalize(scores, true)
	return nil
}
