package podcgroups

import (
	"github.com/opencontainers/cgroups"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/resource"

	"skiff.dev/kubelet/internal/admission"
	"skiff.dev/kubelet/internal/qos"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// PodResources is upstream's ResourceConfigForPod with the CFS quota
// enforced over the default 100 ms period, in cgroup v1 terms: cpu shares
// from the pod's summed cpu requests (2 for BestEffort); for Guaranteed pods
// the CFS quota of the summed cpu limits and the summed memory limit; for
// Burstable pods each only when every container declares that limit, since
// one unbounded container leaves the pod unbounded. pidsLimit (> 0) caps the
// pod's processes (--pod-max-pids).
func PodResources(pod *corev1.Pod, pidsLimit int64) *cgroups.Resources {
	r := &cgroups.Resources{}
	if pidsLimit > 0 {
		r.PidsLimit = &pidsLimit
	}
	class := qos.Class(pod)
	if class == qos.BestEffort {
		r.CpuShares = qos.MinShares
		return r
	}
	r.CpuShares = uint64(qos.MilliCPUToShares(podRequests(pod)["cpu"]))
	l := podLimits(pod)
	if class == qos.Guaranteed || l.allCPU {
		r.CpuQuota = qos.MilliCPUToQuota(l.cpu, qos.QuotaPeriod)
		r.CpuPeriod = qos.QuotaPeriod
	}
	if class == qos.Guaranteed || l.allMemory {
		r.Memory = l.memory
	}
	return r
}

// podRequests is admission.Requests (upstream's PodRequests) after
// upstream's defaulting of requests to limits, which Skiff's apiserver does
// not do: the kubelet gives a container with only a cpu limit the shares of
// that limit (qos.ContainerResourcesFor), and its pod must not get fewer.
func podRequests(pod *corev1.Pod) map[string]int64 {
	defaulted := func(c *corev1.Container) bool {
		for name := range c.GetResources().GetLimits() {
			if _, ok := c.GetResources().GetRequests()[name]; !ok {
				return true
			}
		}
		return false
	}
	spec := pod.GetSpec()
	if !anyContainer(spec, defaulted) {
		return admission.Requests(pod)
	}
	p := proto.Clone(pod).(*corev1.Pod)
	for _, c := range append(append([]*corev1.Container(nil), p.GetSpec().GetInitContainers()...), p.GetSpec().GetContainers()...) {
		if c.Resources == nil {
			continue
		}
		if c.Resources.Requests == nil {
			c.Resources.Requests = map[string]*metav1.Quantity{}
		}
		for name, q := range c.Resources.Limits {
			if _, ok := c.Resources.Requests[name]; !ok {
				c.Resources.Requests[name] = q
			}
		}
	}
	return admission.Requests(p)
}

func anyContainer(spec *corev1.PodSpec, f func(*corev1.Container) bool) bool {
	for _, c := range append(append([]*corev1.Container(nil), spec.GetInitContainers()...), spec.GetContainers()...) {
		if f(c) {
			return true
		}
	}
	return false
}

// limits are a pod's cpu (millicores) and memory (bytes) limits and whether
// every container, init containers included, declares each.
type limits struct {
	cpu, memory       int64
	allCPU, allMemory bool
}

// podLimits is upstream's PodLimits with its ContainerFn: app containers
// and sidecars add up; an init container runs beside the sidecars started
// before it, and the largest such step wins if larger; the overhead adds to
// a limit that is set; pod-level limits replace the containers' and declare
// what they name.
func podLimits(pod *corev1.Pod) limits {
	spec := pod.GetSpec()
	l := limits{allCPU: true, allMemory: true}
	declare := func(cpu, memory int64) {
		l.allCPU = l.allCPU && cpu > 0
		l.allMemory = l.allMemory && memory > 0
	}
	for _, c := range spec.GetContainers() {
		cpu, memory := cpuMemory(c.GetResources().GetLimits())
		declare(cpu, memory)
		l.cpu += cpu
		l.memory += memory
	}
	var sideCPU, sideMemory, initCPU, initMemory int64
	for _, c := range spec.GetInitContainers() {
		cpu, memory := cpuMemory(c.GetResources().GetLimits())
		if c.GetRestartPolicy() == "Always" {
			l.cpu += cpu
			l.memory += memory
			sideCPU += cpu
			sideMemory += memory
			cpu, memory = sideCPU, sideMemory
		} else {
			cpu, memory = cpu+sideCPU, memory+sideMemory
		}
		declare(cpu, memory)
		initCPU, initMemory = max(initCPU, cpu), max(initMemory, memory)
	}
	l.cpu, l.memory = max(l.cpu, initCPU), max(l.memory, initMemory)
	overCPU, overMemory := cpuMemory(spec.GetOverhead())
	if l.cpu > 0 {
		l.cpu += overCPU
	}
	if l.memory > 0 {
		l.memory += overMemory
	}
	if pl := spec.GetResources().GetLimits(); len(pl) > 0 {
		cpu, memory := cpuMemory(pl)
		if cpu > 0 {
			l.cpu, l.allCPU = cpu, true
		}
		if memory > 0 {
			l.memory, l.allMemory = memory, true
		}
	}
	return l
}

// cpuMemory reads the cpu (millicores) and memory (bytes) of a resource
// list; what does not parse counts as absent (validation rejects it).
func cpuMemory(l map[string]*metav1.Quantity) (cpu, memory int64) {
	if q, err := resource.ParseQuantity(l["cpu"].GetString_()); err == nil {
		cpu = q.MilliValue()
	}
	if q, err := resource.ParseQuantity(l["memory"].GetString_()); err == nil {
		memory = q.Value()
	}
	return cpu, memory
}

// nodeResources is upstream's getCgroupConfig for the kubepods cgroup:
// the shares of its cpu and its memory as the limit.
func nodeResources(l map[string]resource.Quantity) *cgroups.Resources {
	r := &cgroups.Resources{}
	if q, ok := l["cpu"]; ok {
		r.CpuShares = uint64(qos.MilliCPUToShares(q.MilliValue()))
	}
	if q, ok := l["memory"]; ok {
		r.Memory = q.Value()
	}
	return r
}

// burstableShares is upstream's setCPUCgroupConfig: the Burstable tier
// weighs as much as its pods ask for.
func burstableShares(pods []*corev1.Pod) uint64 {
	var milli int64
	for _, p := range pods {
		if qos.Class(p) == qos.Burstable {
			milli += podRequests(p)["cpu"]
		}
	}
	return uint64(qos.MilliCPUToShares(milli))
}
