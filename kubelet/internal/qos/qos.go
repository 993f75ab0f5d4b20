// Package qos classifies pods into upstream's quality-of-service classes and
// turns a container's requests and limits into the CRI's Linux resources
// (CPU shares, CFS quota and period, memory limit, oom_score_adj) and the
// pod's cgroup parent under the QoS hierarchy, as the kubelet's container
// manager does with the cgroupfs driver.
package qos

import (
	"path"

	"k8s.io/apimachinery/pkg/api/resource"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// The QoS classes (v1.PodQOSClass).
const (
	Guaranteed = "Guaranteed"
	Burstable  = "Burstable"
	BestEffort = "BestEffort"
)

// Class is the pod's QoS class: the one in its status when set (the class
// never changes once computed, as upstream's GetPodQOS), else computed.
func Class(pod *corev1.Pod) string {
	if c := pod.GetStatus().GetQosClass(); c != "" {
		return c
	}
	return ComputeClass(pod)
}

// ComputeClass is upstream's ComputePodQOS: only cpu and memory count;
// BestEffort when no container (init containers included) asks for either;
// Guaranteed when every container has cpu and memory limits and the pod's
// summed requests equal its summed limits; Burstable otherwise. Pod-level
// resources, when set, decide alone. Overhead plays no part.
func ComputeClass(pod *corev1.Pod) string {
	requests := map[string]resource.Quantity{}
	limits := map[string]resource.Quantity{}
	guaranteed := true
	if pr := pod.GetSpec().GetResources(); pr != nil && (len(pr.GetRequests()) > 0 || len(pr.GetLimits()) > 0) {
		addQoSResources(requests, pr.GetRequests())
		if len(pr.GetLimits()) > 0 {
			found := addQoSResources(limits, pr.GetLimits())
			if !found["cpu"] || !found["memory"] {
				guaranteed = false
			}
		}
	} else {
		all := append(append([]*corev1.Container{}, pod.GetSpec().GetContainers()...), pod.GetSpec().GetInitContainers()...)
		for _, c := range all {
			addQoSResources(requests, c.GetResources().GetRequests())
			found := addQoSResources(limits, c.GetResources().GetLimits())
			if !found["cpu"] || !found["memory"] {
				guaranteed = false
			}
		}
	}
	if len(requests) == 0 && len(limits) == 0 {
		return BestEffort
	}
	if guaranteed {
		for name, req := range requests {
			if lim, ok := limits[name]; !ok || lim.Cmp(req) != 0 {
				guaranteed = false
				break
			}
		}
	}
	if guaranteed && len(requests) == len(limits) {
		return Guaranteed
	}
	return Burstable
}

// addQoSResources adds the positive cpu and memory amounts of l into sum and
// says which it found.
func addQoSResources(sum map[string]resource.Quantity, l map[string]*metav1.Quantity) map[string]bool {
	found := map[string]bool{}
	for name, q := range l {
		if name != "cpu" && name != "memory" {
			continue
		}
		v, ok := parse(q)
		if !ok || v.Sign() <= 0 {
			continue
		}
		found[name] = true
		if cur, ok := sum[name]; ok {
			v.Add(cur)
		}
		sum[name] = v
	}
	return found
}

func parse(q *metav1.Quantity) (resource.Quantity, bool) {
	if q == nil {
		return resource.Quantity{}, false
	}
	v, err := resource.ParseQuantity(q.GetString_())
	if err != nil {
		return resource.Quantity{}, false
	}
	return v, true
}

// PodCgroupParent is the pod's cgroup under root with the cgroupfs driver:
// <root>/kubepods/pod<uid> for Guaranteed pods, and
// <root>/kubepods/{burstable,besteffort}/pod<uid> for the others, as
// upstream's qosContainerManager lays them out.
func PodCgroupParent(root string, pod *corev1.Pod) string {
	if root == "" {
		root = "/"
	}
	dir := path.Join(root, "kubepods")
	switch Class(pod) {
	case Burstable:
		dir = path.Join(dir, "burstable")
	case BestEffort:
		dir = path.Join(dir, "besteffort")
	}
	return path.Join(dir, "pod"+pod.GetMetadata().GetUid())
}
