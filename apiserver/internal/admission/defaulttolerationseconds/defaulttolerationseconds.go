// Package defaulttolerationseconds is upstream's DefaultTolerationSeconds
// admission plugin: a pod that does not say how long it tolerates its node
// being not-ready or unreachable gets five minutes of each, so a node that
// misses a few heartbeats does not have every pod evicted at once.
package defaulttolerationseconds

import (
	"context"

	"skiff.dev/apiserver/internal/admission"
	corev1 "skiff.dev/proto/api/core/v1"
)

// PluginName is upstream's name for it.
const PluginName = "DefaultTolerationSeconds"

// The taints the node lifecycle controller puts on a silent or NotReady node.
const (
	TaintNodeNotReady    = "node.kubernetes.io/not-ready"
	TaintNodeUnreachable = "node.kubernetes.io/unreachable"
)

// Plugin adds the default tolerations.
type Plugin struct {
	notReady, unreachable int64
}

// New returns the plugin with the seconds of
// --default-not-ready-toleration-seconds and
// --default-unreachable-toleration-seconds.
func New(notReady, unreachable int64) *Plugin {
	return &Plugin{notReady: notReady, unreachable: unreachable}
}

// Name is PluginName.
func (p *Plugin) Name() string { return PluginName }

// Handles pod creation only, as upstream: an update cannot add tolerations
// with seconds anyway.
func (p *Plugin) Handles(op admission.Operation) bool { return op == admission.Create }

// Admit adds each default toleration the pod does not already cover.
func (p *Plugin) Admit(_ context.Context, a *admission.Attributes) error {
	pod, ok := a.Object.(*corev1.Pod)
	if !ok || a.Subresource != "" {
		return nil
	}
	if pod.Spec == nil {
		return nil // validation answers for a pod without a spec
	}
	var notReady, unreachable bool
	for _, t := range pod.Spec.Tolerations {
		noExecute := t.GetEffect() == "NoExecute" || t.GetEffect() == ""
		notReady = notReady || noExecute && (t.GetKey() == TaintNodeNotReady || t.GetKey() == "")
		unreachable = unreachable || noExecute && (t.GetKey() == TaintNodeUnreachable || t.GetKey() == "")
	}
	if !notReady {
		s := p.notReady
		pod.Spec.Tolerations = append(pod.Spec.Tolerations, &corev1.Toleration{Key: TaintNodeNotReady, Operator: "Exists", Effect: "NoExecute", TolerationSeconds: &s})
	}
	if !unreachable {
		s := p.unreachable
		pod.Spec.Tolerations = append(pod.Spec.Tolerations, &corev1.Toleration{Key: TaintNodeUnreachable, Operator: "Exists", Effect: "NoExecute", TolerationSeconds: &s})
	}
	return nil
}
