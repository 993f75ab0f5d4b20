// Package placement says which nodes a pod may run on by its own spec:
// taints against tolerations, and its nodeSelector and required node
// affinity against a node's labels and name. Upstream keeps these in
// k8s.io/component-helpers/scheduling/corev1 so that the scheduler, the
// DaemonSet controller and the taint manager agree; here they are in the
// proto module for the same reason, as the scheduler, the controller-manager
// and the kubelet may not import each other.
package placement

import (
	"strconv"

	corev1 "skiff.dev/proto/api/core/v1"
)

// ToleratesTaint is upstream's Toleration.ToleratesTaint.
func ToleratesTaint(tol *corev1.Toleration, t *corev1.Taint) bool {
	if tol.GetEffect() != "" && tol.GetEffect() != t.GetEffect() {
		return false
	}
	if tol.GetKey() != "" && tol.GetKey() != t.GetKey() {
		return false
	}
	switch tol.GetOperator() {
	case "", "Equal":
		return tol.GetValue() == t.GetValue()
	case "Exists":
		return true
	}
	return false
}

// Tolerates reports whether any of tols tolerates t.
func Tolerates(tols []*corev1.Toleration, t *corev1.Taint) bool {
	for _, tol := range tols {
		if ToleratesTaint(tol, t) {
			return true
		}
	}
	return false
}

// UntoleratedTaint is upstream's FindMatchingUntoleratedTaint: the first
// of taints that include selects and no toleration tolerates.
func UntoleratedTaint(taints []*corev1.Taint, tols []*corev1.Toleration, include func(*corev1.Taint) bool) (*corev1.Taint, bool) {
	for _, t := range taints {
		if include(t) && !Tolerates(tols, t) {
			return t, true
		}
	}
	return nil, false
}

// RequiredMatches is upstream's GetRequiredNodeAffinity(pod).Match(node):
// every nodeSelector label, and any one of the required node affinity
// terms (none: any node).
func RequiredMatches(spec *corev1.PodSpec, n *corev1.Node) bool {
	labels := n.GetMetadata().GetLabels()
	for k, v := range spec.GetNodeSelector() {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	req := spec.GetAffinity().GetNodeAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution()
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

// TermMatches: every match expression and match field of a non-empty term
// holds (an empty term matches nothing, as upstream).
func TermMatches(t *corev1.NodeSelectorTerm, n *corev1.Node) bool {
	if len(t.GetMatchExpressions())+len(t.GetMatchFields()) == 0 {
		return false
	}
	labels := n.GetMetadata().GetLabels()
	for _, r := range t.GetMatchExpressions() {
		if !requirementMatches(r, labels) {
			return false
		}
	}
	for _, r := range t.GetMatchFields() {
		// metadata.name is the only field upstream selects nodes by.
		if r.GetKey() != "metadata.name" || !requirementMatches(r, map[string]string{"metadata.name": n.GetMetadata().GetName()}) {
			return false
		}
	}
	return true
}

func requirementMatches(r *corev1.NodeSelectorRequirement, labels map[string]string) bool {
	v, has := labels[r.GetKey()]
	switch r.GetOperator() {
	case "In":
		for _, want := range r.GetValues() {
			if has && v == want {
				return true
			}
		}
		return false
	case "NotIn":
		for _, no := range r.GetValues() {
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
		if !has || len(r.GetValues()) != 1 {
			return false
		}
		got, err1 := strconv.ParseInt(v, 10, 64)
		want, err2 := strconv.ParseInt(r.GetValues()[0], 10, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		if r.GetOperator() == "Gt" {
			return got > want
		}
		return got < want
	}
	return false
}
