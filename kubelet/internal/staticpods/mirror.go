package staticpods

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// Mirrors creates and deletes mirror pods (upstream's MirrorClient).
type Mirrors struct {
	Client   *client.Client
	NodeName string
	// Node is the registered Node, whose UID the mirror's owner reference
	// names; nil reads it through Client.
	Node func() *corev1.Node
}

// MirrorPod is the API's reflection of a static pod: its metadata and spec,
// the config.mirror annotation with its hash, and the Node as its
// controlling owner (upstream since 1.24: the Node's deletion takes its
// mirror pods with it, and only the node's own kubelet may make them).
func MirrorPod(static *corev1.Pod, nodeName, nodeUID string) *corev1.Pod {
	p := proto.Clone(static).(*corev1.Pod)
	md := p.Metadata
	// The apiserver owns these; the mirror's UID is its own.
	md.Uid, md.ResourceVersion, md.CreationTimestamp, md.Generation = "", "", nil, 0
	md.Annotations = maps.Clone(static.GetMetadata().GetAnnotations())
	if md.Annotations == nil {
		md.Annotations = map[string]string{}
	}
	md.Annotations[ConfigMirrorAnnotation] = ConfigHash(static)
	controller := true
	md.OwnerReferences = []*metav1.OwnerReference{{ApiVersion: "v1", Kind: "Node", Name: nodeName, Uid: nodeUID, Controller: &controller}}
	p.Status = nil
	return p
}

func (m *Mirrors) nodeUID(ctx context.Context) (string, error) {
	var node *corev1.Node
	if m.Node != nil {
		node = m.Node()
	} else {
		var err error
		if node, err = client.For[*corev1.Node](m.Client, "").Get(ctx, m.NodeName); err != nil {
			return "", err
		}
	}
	if node == nil {
		return "", errors.New("the node is not registered yet")
	}
	if node.GetMetadata().GetDeletionTimestamp() != nil {
		return "", errors.New("the node is being deleted")
	}
	if uid := node.GetMetadata().GetUid(); uid != "" {
		return uid, nil
	}
	return "", errors.New("the node has no UID")
}

// Create makes static's mirror pod. One of this hash already there is no
// error.
func (m *Mirrors) Create(ctx context.Context, static *corev1.Pod) error {
	uid, err := m.nodeUID(ctx)
	if err != nil {
		return fmt.Errorf("no mirror pod without the node's UID: %w", err)
	}
	mirror := MirrorPod(static, m.NodeName, uid)
	pods := client.For[*corev1.Pod](m.Client, mirror.Metadata.Namespace)
	_, err = pods.Create(ctx, mirror)
	if apierrors.IsAlreadyExists(err) {
		if cur, gerr := pods.Get(ctx, mirror.Metadata.Name); gerr == nil && IsMirrorPodOf(cur, static) && cur.GetMetadata().GetDeletionTimestamp() == nil {
			return nil
		}
	}
	return err
}

// Delete removes a mirror pod for good (grace 0: nothing runs it), only
// the one of UID uid if uid is not empty. It reports whether it deleted
// one; one already gone or replaced is no error.
func (m *Mirrors) Delete(ctx context.Context, namespace, name, uid string) (bool, error) {
	zero := int64(0)
	o := client.DeleteOptions{GracePeriodSeconds: &zero}
	if uid != "" {
		o.Preconditions = &apipb.Preconditions{Uid: &uid}
	}
	_, err := client.For[*corev1.Pod](m.Client, namespace).Delete(ctx, name, o)
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return false, nil
	}
	return false, err
}
