// Package nodeaffinity filters nodes by the pod's nodeSelector and required
// node affinity, and scores them by its preferred node affinity (upstream's
// NodeAffinity), with the operators In, NotIn, Exists, DoesNotExist, Gt, Lt.
package nodeaffinity

import (
	"context"
	"strconv"

	corev1 "skiff.dev/proto/api/core/v1"
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

// RequiredMatches: nodeSelector and the required terms (any term; all of a
// term's expressions) match the node.
func RequiredMatches(p *corev1.Pod, n *corev1.Node) bool {
	labels := n.GetMetadata().GetLabels()
	for k, v := range p.GetSpec().GetNodeSelector() {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	req := p.GetSpec().GetAffinity().GetNodeAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution()
	if req == nil {
		return true
	}
	for _, t := range req.GetNodeSelectorTerms() {
		if TermMatches(t, n) {
			return true
		}
	}
	return false
}

// TermMatches: every match expression and match field of the term holds.
func TermMatches(t *corev1.NodeSelectorTerm, n *corev1.Node) bool {
	if len(t.GetMatchExpressions())+len(t.GetMatchFields()) == 0 {
		return false
	}
	labels := n.GetMetadata().GetLabels()
	for _, r := range t.GetMatchExpressions() {
		if !requirement(r, labels) {
			return false
		}
	}
	for _, r := range t.GetMatchFields() {
		if r.Key != "metadata.name" || !requirement(r, map[string]string{"metadata.name": n.GetMetadata().GetName()}) {
			return false
		}
	}
	return true
}

func requirement(r *corev1.NodeSelectorRequirement, labels map[string]string) bool {
	v, has := labels[r.Key]
	switch r.Operator {
	case "In":
		for _, want := range r.Values {
			if has && v == want {
				return true
			}
		}
		return false
	case "NotIn":
		for _, no := range r.Values {
			if has && v == no {
				return false
			}
		}
		return true
	case "Exists":
		return has
	case "DoesNotExist":
		return !has
	case "Gt", "Lt":
		if !has || len(r.Values) != 1 {
			return false
		}
		got, err1 := strconv.ParseInt(v, 10, 64)
		want, err2 := strconv.ParseInt(r.Values[0], 10, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		if r.Operator == "Gt" {
			return got > want
		}
		return got < want
	}
	return false
}

// Score sums the weights of the preferred terms the node matches.
func (Plugin) Score(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) (int64, *framework.Status) {
	var s int64
	for _, t := range pod.Pod.GetSpec().GetAffinity().GetNodeAffinity().GetPreferredDuringSchedulingIgnoredDuringExecution() {
		if t.Weight != 0 && TermMatches(t.GetPreference(), node.Node) {
			s += int64(t.Weight)
		}
	}
	return s, nil
}

func (Plugin) NormalizeScore(_ context.Context, _ *framework.CycleState, _ *framework.PodInfo, scores []framework.NodeScore) *framework.Status {
	framework.DefaultNormalize(scores, false)
	return nil
}
