// Package defaultbinder writes the pod's Binding through the apiserver's
// binding subresource (upstream's DefaultBinder).
package defaultbinder

import (
	"context"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
)

const Name = "DefaultBinder"

type Plugin struct{ Client *client.Client }

func (Plugin) Name() string { return Name }

func (p Plugin) Bind(ctx context.Context, _ *framework.CycleState, pod *framework.PodInfo, node string) *framework.Status {
	m := pod.Pod.GetMetadata()
	err := p.Client.Bind(ctx, &corev1.Binding{
		Metadata: &metav1.ObjectMeta{Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()},
		Target:   &corev1.ObjectReference{Kind: "Node", Name: node},
	})
	if err != nil {
		return framework.AsStatus(err)
	}
	return nil
}
