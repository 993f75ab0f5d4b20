// Package nodeaffinity filters nodes by the pod's nodeSelector and required
// node affinity, and scores them by its preferred node affinity (upstream's
// NodeAffinity), with the operators In, NotIn, Exists, DoesNotExist, Gt, Lt.
package nodeaffinity

import (
	"context"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/placement"
	"skiff.dev/scheduler/internal/framework"
)

const Name = "NodeAffinity"

// ErrReason is upstream's message.
const ErrReason = "node(s) didn't match Pod's node affinity/selector"

type Plugin struct{}

func (Plugin) Name() string { return Name }

func (Plugin) Filter(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) *framework.Status {
	if !RequiredMatches(pod.Pod, node.Node) {
		return framework.NewStatus(framework.UnschedulableAndUnresolvable, ErrReason)
	}
	return nil
}

// RequiredMatches: the pod's nodeSelector and required node affinity
// match the node (proto/placement, shared with the DaemonSet controller).
func RequiredMatches(p *corev1.Pod, n *corev1.Node) bool {
	return placement.RequiredMatches(p.GetSpec(), n)
}

// Score sums the weights of the preferred terms the node matches.
func (Plugin) Score(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) (int64, *framework.Status) {
	var s int64
	for _, t := range pod.Pod.GetSpec().GetAffinity().GetNodeAffinity().GetPreferredDuringSchedulingIgnoredDuringExecution() {
		if t.Weight != 0 && placement.TermMatches(t.GetPreference(), node.Node) {
			s += int64(t.Weight)
		}
	}
	return s, nil
}

func (Plugin) NormalizeScore(_ context.Context, _ *framework.CycleState, _ *framework.PodInfo, scores []framework.NodeScore) *framework.Status {
	framework.DefaultNormalize(scores, false)
	return nil
}
