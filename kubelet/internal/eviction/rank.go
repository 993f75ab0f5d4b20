package eviction

import (
	"cmp"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/api/resource"

	"skiff.dev/kubelet/internal/admission"
	corev1 "skiff.dev/proto/api/core/v1"
)

// Upstream's eviction messages (pkg/kubelet/eviction/helpers.go), trailing
// spaces included: the parts are concatenated.
const (
	nodeLowMessageFmt      = "The node was low on resource: %v. "
	thresholdMetMessageFmt = "Threshold quantity: %v, available: %v. "
	containerMessageFmt    = "Container %s was using %s, request is %s, has larger consumption of %v. "
)

// statsFunc is a pod's usage, false when it has none.
type statsFunc func(pod *corev1.Pod) (PodStats, bool)

func statsOf(m map[string]PodStats) statsFunc {
	return func(pod *corev1.Pod) (PodStats, bool) {
		s, ok := m[pod.GetMetadata().GetUid()]
		return s, ok
	}
}

// cmpFunc orders two pods: negative puts a first in line for eviction.
type cmpFunc func(a, b *corev1.Pod) int

func orderedBy(pods []*corev1.Pod, cmps ...cmpFunc) {
	slices.SortStableFunc(pods, func(a, b *corev1.Pod) int {
		for _, c := range cmps {
			if r := c(a, b); r != 0 {
				return r
			}
		}
		return 0
	})
}

// cmpBool puts true first.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

func podPriority(p *corev1.Pod) int32 {
	if v := p.GetSpec().Priority; v != nil {
		return *v
	}
	return 0
}

// priority puts the lower priority first.
func priority(a, b *corev1.Pod) int {
	return cmp.Compare(podPriority(a), podPriority(b))
}

// withStats puts pods without figures first, as upstream: nothing shows
// they are not the culprit.
func withStats(stats statsFunc, f func(a, b *corev1.Pod, sa, sb PodStats) int) cmpFunc {
	return func(a, b *corev1.Pod) int {
		sa, okA := stats(a)
		sb, okB := stats(b)
		if !okA || !okB {
			return cmpBool(!okA, !okB)
		}
		return f(a, b, sa, sb)
	}
}

func value(p *uint64) int64 {
	if p == nil {
		return 0
	}
	return int64(*p)
}

func request(pod *corev1.Pod, res string) int64 { return admission.Requests(pod)[res] }

// rankMemoryPressure is upstream's: pods using more memory than they
// request first, then by priority, then by how far above their request.
func rankMemoryPressure(pods []*corev1.Pod, stats statsFunc) {
	exceeds := withStats(stats, func(a, b *corev1.Pod, sa, sb PodStats) int {
		return cmpBool(value(sa.Memory) > request(a, "memory"), value(sb.Memory) > request(b, "memory"))
	})
	usage := withStats(stats, func(a, b *corev1.Pod, sa, sb PodStats) int {
		return cmp.Compare(value(sb.Memory)-request(b, "memory"), value(sa.Memory)-request(a, "memory"))
	})
	orderedBy(pods, exceeds, priority, usage)
}

// rankPIDPressure is upstream's: by priority, then the most processes.
func rankPIDPressure(pods []*corev1.Pod, stats statsFunc) {
	usage := withStats(stats, func(_, _ *corev1.Pod, sa, sb PodStats) int {
		return cmp.Compare(value(sb.Processes), value(sa.Processes))
	})
	orderedBy(pods, priority, usage)
}

// What of a pod's disk usage counts for a filesystem.
type fsParts struct{ rootfs, logs, volumes bool }

// diskUsage is the pod's use of res (ephemeral-storage bytes or inodes)
// on the parts that live on the filesystem under pressure.
func diskUsage(s PodStats, parts fsParts, res string) int64 {
	pick := func(u FsUsage) int64 {
		if res == resourceInodes {
			return value(u.Inodes)
		}
		return value(u.Bytes)
	}
	var sum int64
	for _, c := range s.Containers {
		if parts.rootfs {
			sum += pick(c.Rootfs)
		}
		if parts.logs {
			sum += pick(c.Logs)
		}
	}
	if parts.volumes {
		sum += pick(s.Volumes)
	}
	return sum
}

// rankDiskPressure is upstream's rankDiskPressureFunc: pods using more
// than they request first, then by priority, then by how far above their
// request. Inodes are never requested.
func rankDiskPressure(parts fsParts, res string) func([]*corev1.Pod, statsFunc) {
	return func(pods []*corev1.Pod, stats statsFunc) {
		req := func(p *corev1.Pod) int64 {
			if res == resourceInodes {
				return 0
			}
			return request(p, resourceEphemeralStorage)
		}
		exceeds := withStats(stats, func(a, b *corev1.Pod, sa, sb PodStats) int {
			return cmpBool(diskUsage(sa, parts, res) > req(a), diskUsage(sb, parts, res) > req(b))
		})
		usage := withStats(stats, func(a, b *corev1.Pod, sa, sb PodStats) int {
			return cmp.Compare(diskUsage(sb, parts, res)-req(b), diskUsage(sa, parts, res)-req(a))
		})
		orderedBy(pods, exceeds, priority, usage)
	}
}

// rankFunc is the ranking for signal (upstream's buildSignalToRankFunc):
// with a dedicated image filesystem, nodefs holds logs and volumes and
// imagefs the writable layers; with one filesystem, both hold everything.
func rankFunc(signal Signal, dedicatedImageFs bool) func([]*corev1.Pod, statsFunc) {
	all := fsParts{rootfs: true, logs: true, volumes: true}
	node, image := all, all
	if dedicatedImageFs {
		node, image = fsParts{logs: true, volumes: true}, fsParts{rootfs: true}
	}
	switch signal {
	case SignalMemoryAvailable:
		return rankMemoryPressure
	case SignalPIDAvailable:
		return rankPIDPressure
	case SignalNodeFsAvailable:
		return rankDiskPressure(node, resourceEphemeralStorage)
	case SignalNodeFsInodesFree:
		return rankDiskPressure(node, resourceInodes)
	case SignalImageFsAvailable:
		return rankDiskPressure(image, resourceEphemeralStorage)
	case SignalImageFsInodesFree:
		return rankDiskPressure(image, resourceInodes)
	}
	return nil
}

// evictionMessage is upstream's: the starved resource, the threshold and
// what was available, then each container using more than it requests.
func evictionMessage(res string, pod *corev1.Pod, stats statsFunc, met []Threshold, obs Observations) string {
	msg := fmt.Sprintf(nodeLowMessageFmt, res)
	for _, t := range met {
		if signalToResource[t.Signal] != res {
			continue
		}
		if o, ok := obs[t.Signal]; ok {
			msg += fmt.Sprintf(thresholdMetMessageFmt, t.Value.quantity(o.Capacity), quantity(res, o.Available))
			break
		}
	}
	ps, ok := stats(pod)
	if !ok {
		return msg
	}
	containers := append(append([]*corev1.Container{}, pod.GetSpec().GetContainers()...), pod.GetSpec().GetInitContainers()...)
	for _, cs := range ps.Containers {
		for _, c := range containers {
			if c.GetName() != cs.Name {
				continue
			}
			req := resource.Quantity{}
			if q, ok := c.GetResources().GetRequests()[res]; ok {
				if p, err := resource.ParseQuantity(q.GetString_()); err == nil {
					req = p
				}
			}
			var usage *resource.Quantity
			switch res {
			case resourceEphemeralStorage:
				if cs.Rootfs.Bytes != nil && cs.Logs.Bytes != nil {
					usage = resource.NewQuantity(int64(*cs.Rootfs.Bytes+*cs.Logs.Bytes), resource.BinarySI)
				}
			case resourceMemory:
				if cs.Memory != nil {
					usage = resource.NewQuantity(int64(*cs.Memory), resource.BinarySI)
				}
			}
			if usage != nil && usage.Cmp(req) > 0 {
				msg += fmt.Sprintf(containerMessageFmt, c.GetName(), usage.String(), req.String(), res)
			}
			break
		}
	}
	return msg
}

// quantity formats an amount of res as upstream's observations do: bytes
// in binary units, counts in decimal ones.
func quantity(res string, v int64) *resource.Quantity {
	if res == resourceInodes || res == resourcePIDs {
		return resource.NewQuantity(v, resource.DecimalSI)
	}
	return resource.NewQuantity(v, resource.BinarySI)
}
