package daemonset

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/placement"
)

// Upstream's well-known taint keys the controller tolerates on its pods.
const (
	taintNodeNotReady           = "node.kubernetes.io/not-ready"
	taintNodeUnreachable        = "node.kubernetes.io/unreachable"
	taintNodeDiskPressure       = "node.kubernetes.io/disk-pressure"
	taintNodeMemoryPressure     = "node.kubernetes.io/memory-pressure"
	taintNodePIDPressure        = "node.kubernetes.io/pid-pressure"
	taintNodeUnschedulable      = "node.kubernetes.io/unschedulable"
	taintNodeNetworkUnavailable = "node.kubernetes.io/network-unavailable"

	effectNoSchedule = "NoSchedule"
	effectNoExecute  = "NoExecute"

	// objectNameField is the field a node selector requirement names a node by.
	objectNameField = "metadata.name"
)

// addDaemonPodTolerations is upstream's AddOrUpdateDaemonPodTolerations: a
// daemon pod keeps running on a node that is not ready or unreachable, and
// is placed on one under resource pressure or cordoned; a host-network pod
// also on one whose network is not yet up.
func addDaemonPodTolerations(spec *corev1.PodSpec) {
	add := func(key, effect string) {
		addOrUpdateToleration(spec, &corev1.Toleration{Key: key, Operator: "Exists", Effect: effect})
	}
	add(taintNodeNotReady, effectNoExecute)
	add(taintNodeUnreachable, effectNoExecute)
	add(taintNodeDiskPressure, effectNoSchedule)
	add(taintNodeMemoryPressure, effectNoSchedule)
	add(taintNodePIDPressure, effectNoSchedule)
	add(taintNodeUnschedulable, effectNoSchedule)
	if spec.GetHostNetwork() {
		add(taintNodeNetworkUnavailable, effectNoSchedule)
	}
}

// addOrUpdateToleration is upstream's AddOrUpdateTolerationInPodSpec: a
// toleration with the same key, operator, value and effect is replaced,
// otherwise the new one is appended.
func addOrUpdateToleration(spec *corev1.PodSpec, tol *corev1.Toleration) {
	for i, t := range spec.Tolerations {
		if t.GetKey() == tol.Key && t.GetOperator() == tol.Operator && t.GetValue() == tol.Value && t.GetEffect() == tol.Effect {
			spec.Tolerations[i] = tol
			return
		}
	}
	spec.Tolerations = append(spec.Tolerations, tol)
}

// newPodSpec is the spec a daemon pod for node would have: the template's,
// with the daemon tolerations, as upstream's NewPod, for the predicates.
func newPodSpec(tmpl *corev1.PodTemplateSpec) *corev1.PodSpec {
	spec := proto.Clone(tmpl.GetSpec()).(*corev1.PodSpec)
	if spec == nil {
		spec = &corev1.PodSpec{}
	}
	addDaemonPodTolerations(spec)
	return spec
}

// nodeShouldRunDaemonPod is upstream's NodeShouldRunDaemonPod: whether a
// daemon pod should be placed on the node, and whether one already there
// should keep running. The node must match the template's nodeName (if
// any), nodeSelector and required node affinity; a NoSchedule or NoExecute
// taint the pod does not tolerate stops new pods, and only an untolerated
// NoExecute taint removes running ones.
func nodeShouldRunDaemonPod(n *corev1.Node, spec *corev1.PodSpec) (shouldRun, shouldContinueRunning bool) {
	if name := spec.GetNodeName(); name != "" && name != n.GetMetadata().GetName() {
		return false, false
	}
	if !placement.RequiredMatches(spec, n) {
		return false, false
	}
	taints := n.GetSpec().GetTaints()
	tols := spec.GetTolerations()
	if _, bad := placement.UntoleratedTaint(taints, tols, func(t *corev1.Taint) bool {
		return t.GetEffect() == effectNoSchedule || t.GetEffect() == effectNoExecute
	}); bad {
		_, noExec := placement.UntoleratedTaint(taints, tols, func(t *corev1.Taint) bool { return t.GetEffect() == effectNoExecute })
		return false, !noExec
	}
	return true, true
}

// replaceNodeNameAffinity is upstream's
// ReplaceDaemonSetPodNodeNameNodeAffinity: the pod's required node affinity
// becomes the one term "metadata.name In [node]", so that the scheduler
// places it on that node and nowhere else. The user's own required terms
// have been checked against the node already.
func replaceNodeNameAffinity(aff *corev1.Affinity, node string) *corev1.Affinity {
	sel := &corev1.NodeSelector{NodeSelectorTerms: []*corev1.NodeSelectorTerm{{
		MatchFields: []*corev1.NodeSelectorRequirement{{Key: objectNameField, Operator: "In", Values: []string{node}}},
	}}}
	if aff == nil {
		aff = &corev1.Affinity{}
	}
	if aff.NodeAffinity == nil {
		aff.NodeAffinity = &corev1.NodeAffinity{}
	}
	aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = sel
	return aff
}

// targetNodeName is upstream's GetTargetNodeName: the pod's node, or the
// node its affinity pins it to while it waits for the scheduler.
func targetNodeName(pod *corev1.Pod) (string, error) {
	if n := pod.GetSpec().GetNodeName(); n != "" {
		return n, nil
	}
	terms := pod.GetSpec().GetAffinity().GetNodeAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution().GetNodeSelectorTerms()
	for _, t := range terms {
		for _, f := range t.GetMatchFields() {
			if f.GetKey() == objectNameField && f.GetOperator() == "In" && len(f.GetValues()) == 1 {
				return f.GetValues()[0], nil
			}
		}
	}
	return "", fmt.Errorf("no node name found for pod %s/%s", pod.GetMetadata().GetNamespace(), pod.GetMetadata().GetName())
}
