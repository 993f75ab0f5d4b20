package kuberuntime

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"

	corev1 "skiff.dev/proto/api/core/v1"
)

// Labels and annotations upstream's kubelet puts on sandboxes and
// containers; tools (crictl, containerd's CRI plugin, log shippers) read
// them, so the names are upstream's.
const (
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelContainerName = "io.kubernetes.container.name"

	AnnotationContainerHash           = "io.kubernetes.container.hash"
	AnnotationContainerRestartCount   = "io.kubernetes.container.restartCount"
	AnnotationTerminationMessagePath  = "io.kubernetes.container.terminationMessagePath"
	AnnotationTerminationMessagePolcy = "io.kubernetes.container.terminationMessagePolicy"
	AnnotationPreStopHandler          = "io.kubernetes.container.preStopHandler"
	AnnotationContainerPorts          = "io.kubernetes.container.ports"
	AnnotationPodDeletionGrace        = "io.kubernetes.pod.deletionGracePeriod"
	AnnotationPodTerminationGrace     = "io.kubernetes.pod.terminationGracePeriod"
)

func sandboxLabels(pod *corev1.Pod) map[string]string {
	md := pod.GetMetadata()
	l := make(map[string]string, len(md.GetLabels())+3)
	for k, v := range md.GetLabels() {
		l[k] = v
	}
	l[LabelPodName] = md.GetName()
	l[LabelPodNamespace] = md.GetNamespace()
	l[LabelPodUID] = md.GetUid()
	return l
}

func sandboxAnnotations(pod *corev1.Pod) map[string]string {
	a := make(map[string]string, len(pod.GetMetadata().GetAnnotations()))
	for k, v := range pod.GetMetadata().GetAnnotations() {
		a[k] = v
	}
	return a
}

func containerLabels(pod *corev1.Pod, c *corev1.Container) map[string]string {
	md := pod.GetMetadata()
	return map[string]string{
		LabelPodName:       md.GetName(),
		LabelPodNamespace:  md.GetNamespace(),
		LabelPodUID:        md.GetUid(),
		LabelContainerName: c.GetName(),
	}
}

func containerAnnotations(pod *corev1.Pod, c *corev1.Container, restartCount int) map[string]string {
	a := map[string]string{
		AnnotationContainerHash:           HashContainer(c),
		AnnotationContainerRestartCount:   strconv.Itoa(restartCount),
		AnnotationTerminationMessagePath:  c.GetTerminationMessagePath(),
		AnnotationTerminationMessagePolcy: c.GetTerminationMessagePolicy(),
	}
	if g := pod.GetMetadata().DeletionGracePeriodSeconds; g != nil {
		a[AnnotationPodDeletionGrace] = strconv.FormatInt(*g, 10)
	}
	if g := pod.GetSpec().TerminationGracePeriodSeconds; g != nil {
		a[AnnotationPodTerminationGrace] = strconv.FormatInt(*g, 10)
	}
	if ps := c.GetLifecycle().GetPreStop(); ps != nil {
		if b, err := json.Marshal(ps); err == nil {
			a[AnnotationPreStopHandler] = string(b)
		}
	}
	if len(c.GetPorts()) > 0 {
		if b, err := json.Marshal(c.GetPorts()); err == nil {
			a[AnnotationContainerPorts] = string(b)
		}
	}
	return a
}

// HashContainer is the container's spec hash, recorded on the container so
// a later sync can tell that the spec changed and restart it. Like
// upstream's since 1.31 it covers only the name and the image, the fields
// of a running pod that may change, so an upgraded kubelet does not
// restart every container because its hash function covers new fields.
func HashContainer(c *corev1.Container) string {
	b, _ := json.Marshal(map[string]string{"name": c.GetName(), "image": c.GetImage()})
	h := fnv.New32a()
	h.Write(b)
	return strconv.FormatUint(uint64(h.Sum32()), 16)
}

// restartCountOf reads the restart count a container was created with.
func restartCountOf(annotations map[string]string) int {
	n, err := strconv.Atoi(annotations[AnnotationContainerRestartCount])
	if err != nil {
		return 0
	}
	return n
}

// FormatPod names a pod in messages as upstream's format.Pod.
func FormatPod(pod *corev1.Pod) string {
	md := pod.GetMetadata()
	return fmt.Sprintf("%s_%s(%s)", md.GetName(), md.GetNamespace(), md.GetUid())
}
