package admission

import (
	"fmt"

	"skiff.dev/kubelet/internal/qos"
	"skiff.dev/kubelet/internal/staticpods"
	corev1 "skiff.dev/proto/api/core/v1"
)

// Evicted is the reason of a pod the eviction manager stopped or turned
// away (upstream's eviction.Reason).
const Evicted = "Evicted"

// SystemCriticalPriority is upstream's scheduling.SystemCriticalPriority:
// pods at or above it are critical.
const SystemCriticalPriority = 2000000000

// The priority classes upstream creates, both critical.
const (
	SystemNodeCritical    = "system-node-critical"
	SystemClusterCritical = "system-cluster-critical"
)

// taintMemoryPressure is the taint the node lifecycle controller puts on a
// node under memory pressure; a BestEffort pod tolerating it is admitted
// anyway, as the scheduler would place it.
const taintMemoryPressure = "node.kubernetes.io/memory-pressure"

// IsCritical is upstream's IsCriticalPod: static and mirror pods, and pods
// of critical priority. A pod whose priority is not filled in counts by
// its priority class's name, which the apiserver's priority admission
// would have turned into a critical priority.
func IsCritical(pod *corev1.Pod) bool {
	if staticpods.IsStaticPod(pod) || staticpods.IsMirrorPod(pod) {
		return true
	}
	if p := pod.GetSpec().Priority; p != nil {
		return *p >= SystemCriticalPriority
	}
	switch pod.GetSpec().GetPriorityClassName() {
	case SystemNodeCritical, SystemClusterCritical:
		return true
	}
	return false
}

// Pressure is upstream's eviction admitter: with no node pressure every
// pod is admitted, and critical pods always are; under memory pressure
// alone only BestEffort pods are turned away (unless they tolerate the
// memory-pressure taint); under disk or PID pressure every other pod is.
// The refusal is reason Evicted, "The node had condition: [DiskPressure]. ".
func Pressure(pod *corev1.Pod, memory, disk, pid bool) (ok bool, reason, message string) {
	var conditions []string
	for _, c := range []struct {
		on   bool
		name string
	}{{memory, "MemoryPressure"}, {disk, "DiskPressure"}, {pid, "PIDPressure"}} {
		if c.on {
			conditions = append(conditions, c.name)
		}
	}
	if len(conditions) == 0 || IsCritical(pod) {
		return true, "", ""
	}
	if memory && len(conditions) == 1 {
		if qos.Class(pod) != qos.BestEffort || toleratesMemoryPressure(pod) {
			return true, "", ""
		}
	}
	return false, Evicted, fmt.Sprintf("The node had condition: %v. ", conditions)
}

// toleratesMemoryPressure is upstream's TolerationsTolerateTaint for the
// memory-pressure NoSchedule taint.
func toleratesMemoryPressure(pod *corev1.Pod) bool {
	for _, t := range pod.GetSpec().GetTolerations() {
		if e := t.GetEffect(); e != "" && e != "NoSchedule" {
			continue
		}
		switch t.GetOperator() {
		case "Exists":
			if t.GetKey() == "" || t.GetKey() == taintMemoryPressure {
				return true
			}
		case "", "Equal":
			if t.GetKey() == taintMemoryPressure && t.GetValue() == "" {
				return true
			}
		}
	}
	return false
}
