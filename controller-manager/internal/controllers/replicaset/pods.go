package replicaset

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/record"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// errNoLabels is upstream's refusal to create a pod its owner could never
// select again.
var errNoLabels = errors.New("unable to create pods, no labels")

// podFromTemplate is upstream's GetPodFromTemplate: a pod named after its
// owner ("<name>-" and a random suffix from the apiserver), with the
// template's labels, annotations, finalizers and spec, controlled by ref.
func podFromTemplate(template *corev1.PodTemplateSpec, namespace, ownerName string, ref *metav1.OwnerReference) *corev1.Pod {
	tm := template.GetMetadata()
	pod := &corev1.Pod{
		Metadata: &metav1.ObjectMeta{
			GenerateName: ownerName + "-",
			Namespace:    namespace,
			Labels:       maps.Clone(tm.GetLabels()),
			Annotations:  maps.Clone(tm.GetAnnotations()),
			Finalizers:   slices.Clone(tm.GetFinalizers()),
		},
		Spec: proto.Clone(template.GetSpec()).(*corev1.PodSpec),
	}
	if pod.Spec == nil {
		pod.Spec = &corev1.PodSpec{}
	}
	if ref != nil {
		pod.Metadata.OwnerReferences = []*metav1.OwnerReference{ref}
	}
	return pod
}

// isNamespaceTerminating reports the apiserver refusing a create in a
// namespace being deleted; upstream stays quiet about those.
func isNamespaceTerminating(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(apierrors.Message(err), "because it is being terminated")
}

// createPod is upstream's RealPodControl.CreatePods for one pod, with its
// events.
func (c *Controller) createPod(ctx context.Context, o owner, ref *metav1.OwnerReference) error {
	m := o.rs.GetMetadata()
	pod := podFromTemplate(o.rs.GetSpec().GetTemplate(), m.GetNamespace(), m.GetName(), ref)
	if len(pod.Metadata.Labels) == 0 {
		return errNoLabels
	}
	created, err := client.For[*corev1.Pod](c.client, m.GetNamespace()).Create(ctx, pod)
	if err != nil {
		if !isNamespaceTerminating(err) {
			c.recorder.Eventf(o.obj, record.Warning, failedCreateReason, "Error creating: %v", apierrors.Message(err))
		}
		return err
	}
	c.log.Debug("Controller created pod", "controller", m.GetName(), "pod", created.GetMetadata().GetName())
	c.recorder.Eventf(o.obj, record.Normal, successfulCreateReason, "Created pod: %v", created.GetMetadata().GetName())
	return nil
}

// deletePod is upstream's RealPodControl.DeletePod, guarded by the pod's
// UID so that a pod recreated under the same name since the cache saw it is
// not the one deleted.
func (c *Controller) deletePod(ctx context.Context, o owner, pod *corev1.Pod) error {
	m := pod.GetMetadata()
	uid := m.GetUid()
	_, err := client.For[*corev1.Pod](c.client, m.GetNamespace()).Delete(ctx, m.GetName(),
		client.DeleteOptions{Preconditions: &apipb.Preconditions{Uid: &uid}})
	if err != nil {
		if podGone(err) {
			c.log.Debug("Pod has already been deleted", "pod", m.GetNamespace()+"/"+m.GetName())
			return err
		}
		c.recorder.Eventf(o.obj, record.Warning, failedDeleteReason, "Error deleting: %v", apierrors.Message(err))
		return err
	}
	c.recorder.Eventf(o.obj, record.Normal, successfulDeleteReason, "Deleted pod: %v", m.GetName())
	return nil
}

// podGone reports a delete that found the pod already gone: NotFound, or
// the UID precondition failing because the name now holds another pod.
func podGone(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.IsConflict(err)
}

// slowStartBatch is upstream's: it calls fn count times, in batches of
// initialBatchSize, then twice that, and so on, each batch concurrently; it
// stops after the first batch with an error, so that a quota or admission
// failure costs one request rather than hundreds. It returns the number of
// successful calls and an error of the failed batch.
func slowStartBatch(count, initialBatchSize int, fn func() error) (int, error) {
	remaining := count
	successes := 0
	for batch := min(remaining, initialBatchSize); batch > 0; batch = min(2*batch, remaining) {
		errCh := make(chan error, batch)
		var wg sync.WaitGroup
		for range batch {
			wg.Go(func() {
				if err := fn(); err != nil {
					errCh <- err
				}
			})
		}
		wg.Wait()
		successes += batch - len(errCh)
		if len(errCh) > 0 {
			return successes, <-errCh
		}
		remaining -= batch
	}
	return successes, nil
}
