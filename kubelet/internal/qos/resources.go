package qos

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Upstream's CFS constants (pkg/kubelet/cm/helpers_linux.go); the share
// bounds are the kernel's.
const (
	MinShares      = 2
	MaxShares      = 262144
	SharesPerCPU   = 1024
	MilliCPUToCPU  = 1000
	QuotaPeriod    = 100000 // µs: 100 ms
	MinQuotaPeriod = 1000   // µs: the kernel's 1 ms minimum quota
)

// The oom_score_adj values of pkg/kubelet/qos/policy.go.
const (
	KubeletOOMScoreAdj    = -999
	guaranteedOOMScoreAdj = -997
	besteffortOOMScoreAdj = 1000
)

// MilliCPUToShares converts millicores to CFS shares, at least MinShares
// (zero means "no request": the kernel's minimum, not its 1024 default).
func MilliCPUToShares(milliCPU int64) int64 {
	if milliCPU == 0 {
		return MinShares
	}
	shares := milliCPU * SharesPerCPU / MilliCPUToCPU
	if shares < MinShares {
		return MinShares
	}
	if shares > MaxShares {
		return MaxShares
	}
	return shares
}

// MilliCPUToQuota converts a millicore limit to a CFS quota over period (µs):
// zero for no limit, else at least MinQuotaPeriod.
func MilliCPUToQuota(milliCPU, period int64) int64 {
	if milliCPU == 0 {
		return 0
	}
	quota := milliCPU * period / MilliCPUToCPU
	if quota < MinQuotaPeriod {
		quota = MinQuotaPeriod
	}
	return quota
}

// Node holds the facts about the machine that container resources depend on.
type Node struct {
	// MemoryCapacity is the machine's memory in bytes (cAdvisor's
	// MemoryCapacity), the denominator of Burstable oom_score_adj.
	MemoryCapacity int64
	// SwapControl says the memory cgroup controls swap (memory.memsw.* on
	// v1, memory.swap.max on v2): then containers get no swap, upstream's
	// NoSwap default.
	SwapControl bool
	// CgroupV2 says the unified hierarchy is in use.
	CgroupV2 bool
}

// DetectNode reads the machine's memory from /proc/meminfo and the cgroup
// layout from /sys/fs/cgroup.
func DetectNode() (Node, error) {
	var n Node
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return n, fmt.Errorf("reading memory capacity: %w", err)
	}
	n.MemoryCapacity, err = memTotal(b)
	if err != nil {
		return n, err
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		n.CgroupV2 = true
		// memory.swap.max is absent from the root cgroup: look in our own,
		// as upstream does.
		if self, err := os.ReadFile("/proc/self/cgroup"); err == nil {
			for _, line := range strings.Split(string(self), "\n") {
				if p, ok := strings.CutPrefix(line, "0::"); ok {
					_, err := os.Stat(filepath.Join("/sys/fs/cgroup", p, "memory.swap.max"))
					n.SwapControl = err == nil
				}
			}
		}
	} else {
		_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
		n.SwapControl = err == nil
	}
	return n, nil
}

// memTotal parses MemTotal (in kB) out of /proc/meminfo.
func memTotal(meminfo []byte) (int64, error) {
	s := bufio.NewScanner(bytes.NewReader(meminfo))
	for s.Scan() {
		f := bytes.Fields(s.Bytes())
		if len(f) >= 2 && string(f[0]) == "MemTotal:" {
			kb, err := strconv.ParseInt(string(f[1]), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing MemTotal %q: %w", f[1], err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no MemTotal in /proc/meminfo")
}

// ContainerResources is ContainerResourcesFor on this machine (DetectNode).
// When the machine cannot be read, memory capacity counts as unknown and
// Burstable containers get 999, just above BestEffort.
func ContainerResources(pod *corev1.Pod, c *corev1.Container) *runtimeapi.LinuxContainerResources {
	n, _ := DetectNode()
	return ContainerResourcesFor(pod, c, n)
}

// ContainerResourcesFor is upstream's generateLinuxContainerResources with
// the CFS quota on and the default 100 ms period: shares from the CPU request
// (the limit when only it is set), quota from the CPU limit, the memory
// limit, swap equal to the memory limit where swap is controlled (no swap),
// and oom_score_adj by QoS class.
func ContainerResourcesFor(pod *corev1.Pod, c *corev1.Container, n Node) *runtimeapi.LinuxContainerResources {
	req, lim := c.GetResources().GetRequests(), c.GetResources().GetLimits()
	cpuReq, cpuLim := milli(req["cpu"]), milli(lim["cpu"])
	memLim := value(lim["memory"])

	r := &runtimeapi.LinuxContainerResources{}
	if cpuReq == 0 && cpuLim != 0 {
		r.CpuShares = MilliCPUToShares(cpuLim)
	} else {
		r.CpuShares = MilliCPUToShares(cpuReq)
	}
	r.CpuPeriod = QuotaPeriod
	r.CpuQuota = MilliCPUToQuota(cpuLim, QuotaPeriod)
	if memLim != 0 {
		r.MemoryLimitInBytes = memLim
	}
	r.OomScoreAdj = int64(OOMScoreAdjust(pod, c, n.MemoryCapacity))
	if n.SwapControl {
		if n.CgroupV2 {
			r.Unified = map[string]string{"memory.swap.max": "0"}
		} else {
			r.MemorySwapLimitInBytes = r.MemoryLimitInBytes
		}
	}
	return r
}

// OOMScoreAdjust is upstream's GetContainerOOMScoreAdjust: -997 for
// node-critical and Guaranteed pods, 1000 for BestEffort, and for Burstable
// 1000 - 1000*request/capacity kept within [3, 999] (above Guaranteed, below
// BestEffort). A sidecar gets no more than the regular container asking the
// least memory, so it is not killed before the containers it serves.
func OOMScoreAdjust(pod *corev1.Pod, c *corev1.Container, memoryCapacity int64) int {
	if isNodeCritical(pod) {
		return guaranteedOOMScoreAdj
	}
	switch Class(pod) {
	case Guaranteed:
		return guaranteedOOMScoreAdj
	case BestEffort:
		return besteffortOOMScoreAdj
	}
	if memoryCapacity <= 0 {
		return besteffortOOMScoreAdj - 1
	}
	adj := 1000 - 1000*value(c.GetResources().GetRequests()["memory"])/memoryCapacity
	if isSidecar(pod, c) {
		if cs := pod.GetSpec().GetContainers(); len(cs) > 0 {
			least := value(cs[0].GetResources().GetRequests()["memory"])
			for _, rc := range cs[1:] {
				least = min(least, value(rc.GetResources().GetRequests()["memory"]))
			}
			adj = min(adj, 1000-1000*least/memoryCapacity)
		}
	}
	if adj < 1000+guaranteedOOMScoreAdj {
		return 1000 + guaranteedOOMScoreAdj
	}
	if adj == besteffortOOMScoreAdj {
		return besteffortOOMScoreAdj - 1
	}
	return int(adj)
}

func isSidecar(pod *corev1.Pod, c *corev1.Container) bool {
	if c.GetRestartPolicy() != "Always" {
		return false
	}
	for _, ic := range pod.GetSpec().GetInitContainers() {
		if ic.GetName() == c.GetName() {
			return true
		}
	}
	return false
}

// systemCriticalPriority is scheduling.SystemCriticalPriority: pods at or
// above it are critical.
const systemCriticalPriority = 2 * 1000000000

// isNodeCritical is upstream's IsNodeCriticalPod: a critical pod (static,
// mirror, or of system-critical priority) of the system-node-critical class.
func isNodeCritical(pod *corev1.Pod) bool {
	if pod.GetSpec().GetPriorityClassName() != "system-node-critical" {
		return false
	}
	ann := pod.GetMetadata().GetAnnotations()
	if src, ok := ann["kubernetes.io/config.source"]; ok && src != "api" {
		return true
	}
	if _, ok := ann["kubernetes.io/config.mirror"]; ok {
		return true
	}
	return pod.GetSpec().Priority != nil && *pod.GetSpec().Priority >= systemCriticalPriority
}

func milli(q *metav1.Quantity) int64 {
	v, ok := parse(q)
	if !ok {
		return 0
	}
	return v.MilliValue()
}

func value(q *metav1.Quantity) int64 {
	v, ok := parse(q)
	if !ok {
		return 0
	}
	return v.Value()
}
