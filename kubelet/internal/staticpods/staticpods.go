// Package staticpods is the kubelet's second source of pods: the manifests
// of --pod-manifest-path, run without the apiserver (upstream's
// pkg/kubelet/config/file.go), and the mirror pods through which the API
// sees them (pkg/kubelet/pod/mirror_client.go). A static pod's UID is a
// hash of its manifest and node, so an edited manifest is a new pod.
package staticpods

import (
	corev1 "skiff.dev/proto/api/core/v1"
)

// Upstream's annotation keys (pkg/kubelet/types).
const (
	// ConfigSourceAnnotation says where the kubelet read the pod: "file"
	// for a manifest, "api" for the apiserver.
	ConfigSourceAnnotation = "kubernetes.io/config.source"
	// ConfigHashAnnotation is the static pod's UID, the hash of its manifest.
	ConfigHashAnnotation = "kubernetes.io/config.hash"
	// ConfigFirstSeenAnnotation is when the kubelet first read the pod.
	ConfigFirstSeenAnnotation = "kubernetes.io/config.seen"
	// ConfigMirrorAnnotation marks a mirror pod; its value is the config
	// hash of the static pod it reflects.
	ConfigMirrorAnnotation = "kubernetes.io/config.mirror"

	// FileSource and APIServerSource are ConfigSourceAnnotation's values.
	FileSource      = "file"
	APIServerSource = "api"
)

// IsStaticPod reports a pod the kubelet read from a source other than the
// apiserver.
func IsStaticPod(pod *corev1.Pod) bool {
	s := pod.GetMetadata().GetAnnotations()[ConfigSourceAnnotation]
	return s != "" && s != APIServerSource
}

// IsMirrorPod reports an API pod that only reflects a static pod: no
// kubelet runs it.
func IsMirrorPod(pod *corev1.Pod) bool {
	_, ok := pod.GetMetadata().GetAnnotations()[ConfigMirrorAnnotation]
	return ok
}

// ConfigHash is the static pod's config hash.
func ConfigHash(pod *corev1.Pod) string {
	return pod.GetMetadata().GetAnnotations()[ConfigHashAnnotation]
}

// IsMirrorPodOf reports whether mirror reflects this version of the static
// pod: same name and namespace, and the static pod's current hash.
func IsMirrorPodOf(mirror, static *corev1.Pod) bool {
	mm, sm := mirror.GetMetadata(), static.GetMetadata()
	if mm.GetName() != sm.GetName() || mm.GetNamespace() != sm.GetNamespace() {
		return false
	}
	h, ok := mm.GetAnnotations()[ConfigMirrorAnnotation]
	return ok && h == ConfigHash(static)
}

// FullName is upstream's pod full name, name_namespace, the key by which a
// static pod and its mirror find each other.
func FullName(pod *corev1.Pod) string {
	return pod.GetMetadata().GetName() + "_" + pod.GetMetadata().GetNamespace()
}
