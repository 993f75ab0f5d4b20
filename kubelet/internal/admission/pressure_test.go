package admission

import (
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func TestPressure(t *testing.T) {
	bestEffort := func() *corev1.Pod { return pod(nil, "") }
	burstable := pod(rl("memory", "100Mi"), "")
	prio := int32(SystemCriticalPriority)
	critical := bestEffort()
	critical.Spec.Priority = &prio
	byClass := bestEffort()
	byClass.Spec.PriorityClassName = SystemNodeCritical
	low := int32(1000)
	classButLowPriority := bestEffort()
	classButLowPriority.Spec.PriorityClassName, classButLowPriority.Spec.Priority = SystemClusterCritical, &low
	static := bestEffort()
	static.Metadata.Annotations = map[string]string{"kubernetes.io/config.source": "file"}
	tolerant := bestEffort()
	tolerant.Spec.Tolerations = []*corev1.Toleration{{Key: "node.kubernetes.io/memory-pressure", Operator: "Exists", Effect: "NoSchedule"}}
	tolerantOfAll := bestEffort()
	tolerantOfAll.Spec.Tolerations = []*corev1.Toleration{{Operator: "Exists"}}
	wrongEffect := bestEffort()
	wrongEffect.Spec.Tolerations = []*corev1.Toleration{{Key: "node.kubernetes.io/memory-pressure", Operator: "Exists", Effect: "NoExecute"}}

	const (
		memory = "The node had condition: [MemoryPressure]. "
		disk   = "The node had condition: [DiskPressure]. "
		both   = "The node had condition: [MemoryPressure DiskPressure]. "
		pids   = "The node had condition: [PIDPressure]. "
	)
	for _, tc := range []struct {
		name              string
		pod               *corev1.Pod
		memory, disk, pid bool
		message           string // empty: admitted
	}{
		{name: "no pressure", pod: bestEffort()},
		{name: "memory pressure, BestEffort", pod: bestEffort(), memory: true, message: memory},
		{name: "memory pressure, Burstable", pod: burstable, memory: true},
		{name: "memory pressure, BestEffort tolerating it", pod: tolerant, memory: true},
		{name: "memory pressure, BestEffort tolerating everything", pod: tolerantOfAll, memory: true},
		{name: "memory pressure, BestEffort tolerating another effect", pod: wrongEffect, memory: true, message: memory},
		{name: "disk pressure, Burstable", pod: burstable, disk: true, message: disk},
		{name: "disk pressure, tolerating memory pressure", pod: tolerant, disk: true, message: disk},
		{name: "memory and disk pressure, Burstable", pod: burstable, memory: true, disk: true, message: both},
		{name: "PID pressure", pod: burstable, pid: true, message: pids},
		{name: "disk pressure, critical priority", pod: critical, disk: true},
		{name: "disk pressure, critical class", pod: byClass, disk: true},
		{name: "disk pressure, critical class but a low priority", pod: classButLowPriority, disk: true, message: disk},
		{name: "disk pressure, static pod", pod: static, memory: true, disk: true, pid: true},
	} {
		ok, reason, message := Pressure(tc.pod, tc.memory, tc.disk, tc.pid)
		if tc.message == "" {
			if !ok {
				t.Errorf("%s: refused: %s %q", tc.name, reason, message)
			}
			continue
		}
		if ok || reason != "Evicted" || message != tc.message {
			t.Errorf("%s: Pressure = %v %q %q, want Evicted %q", tc.name, ok, reason, message, tc.message)
		}
	}
}

func TestIsCritical(t *testing.T) {
	mirror := pod(nil, "")
	mirror.Metadata = &metav1.ObjectMeta{Name: "m", Annotations: map[string]string{"kubernetes.io/config.mirror": "hash"}}
	if !IsCritical(mirror) {
		t.Error("a mirror pod is critical")
	}
	if IsCritical(pod(nil, "")) {
		t.Error("a plain pod is critical")
	}
}
