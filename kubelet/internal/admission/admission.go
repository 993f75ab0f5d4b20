// Package admission is the kubelet's predicate admission
// (pkg/kubelet/lifecycle/predicate.go): a pod bound to this node runs only if
// its requests fit the node's allocatable beside the pods already admitted,
// else it fails with upstream's OutOfcpu, OutOfmemory, OutOfpods... reason
// and "Node didn't have enough resource: ..." message.
package admission

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// The reasons of pkg/kubelet/lifecycle (the others are "OutOf<name>").
const (
	OutOfCPU              = "OutOfcpu"
	OutOfMemory           = "OutOfmemory"
	OutOfEphemeralStorage = "OutOfephemeral-storage"
	OutOfPods             = "OutOfpods"
	InvalidNodeInfo       = "InvalidNodeInfo"
)

// InsufficientResource is upstream's InsufficientResourceError.
type InsufficientResource struct {
	Name                      string
	Requested, Used, Capacity int64
}

func (e *InsufficientResource) Error() string {
	return fmt.Sprintf("Node didn't have enough resource: %s, requested: %d, used: %d, capacity: %d",
		e.Name, e.Requested, e.Used, e.Capacity)
}

// Reason is the pod status reason for e.
func (e *InsufficientResource) Reason() string { return "OutOf" + e.Name }

// Admit says whether pod may run on node beside others (the pods the
// kubelet has admitted before; terminated ones, Succeeded or Failed, do not
// count). On refusal, reason and message are what the pod's status shows
// (phase Failed), as upstream, from the first resource short in upstream's
// order: pods, cpu, memory, ephemeral-storage, then extended resources by
// name. Extended resources the node does not know are ignored, as upstream's
// removeMissingExtendedResources.
func Admit(pod *corev1.Pod, node *corev1.Node, others []*corev1.Pod) (ok bool, reason, message string) {
	if node == nil {
		return false, InvalidNodeInfo, "Kubelet cannot get node info."
	}
	if err := Fits(pod, node, others); err != nil {
		return false, err.Reason(), err.Error()
	}
	return true, "", ""
}

// Fits is upstream's noderesources.Fits as the kubelet uses it: the first
// resource the pod does not fit, or nil.
func Fits(pod *corev1.Pod, node *corev1.Node, others []*corev1.Pod) *InsufficientResource {
	alloc := parseList(node.GetStatus().GetAllocatable())
	used := map[string]int64{}
	count := int64(0)
	for _, o := range others {
		if o.GetMetadata().GetUid() == pod.GetMetadata().GetUid() {
			continue
		}
		if p := o.GetStatus().GetPhase(); p == "Succeeded" || p == "Failed" {
			continue
		}
		count++
		for k, v := range Requests(o) {
			used[k] += v
		}
	}
	if count+1 > alloc["pods"] {
		return &InsufficientResource{Name: "pods", Requested: 1, Used: count, Capacity: alloc["pods"]}
	}
	req := Requests(pod)
	var extended []string
	for name := range req {
		switch name {
		case "cpu", "memory", "ephemeral-storage", "pods":
		default:
			if _, known := alloc[name]; known {
				extended = append(extended, name)
			}
		}
	}
	sort.Strings(extended)
	// Only cpu, memory and ephemeral-storage requests of zero pass without a
	// look, as upstream: a pod asking nothing always fits those.
	for _, name := range append([]string{"cpu", "memory", "ephemeral-storage"}, extended...) {
		r := req[name]
		if r == 0 {
			continue
		}
		if r > alloc[name]-used[name] {
			return &InsufficientResource{Name: name, Requested: r, Used: used[name], Capacity: alloc[name]}
		}
	}
	return nil
}

// Requests is upstream's PodRequests, cpu in millicores and everything else
// in units: the sum over app containers and sidecars, or the largest need of
// an init container step if larger, plus the pod's overhead; pod-level
// requests, when set, replace the containers' sum for what they name.
func Requests(pod *corev1.Pod) map[string]int64 {
	spec := pod.GetSpec()
	sum := map[string]int64{}
	for _, c := range spec.GetContainers() {
		add(sum, parseList(c.GetResources().GetRequests()))
	}
	// Init containers run one at a time, each beside the sidecars started
	// before it; sidecars keep running and add up.
	initMax := map[string]int64{}
	sidecars := map[string]int64{}
	for _, c := range spec.GetInitContainers() {
		r := parseList(c.GetResources().GetRequests())
		if c.GetRestartPolicy() == "Always" {
			add(sidecars, r)
			maxInto(initMax, sidecars)
			continue
		}
		step := map[string]int64{}
		add(step, sidecars)
		add(step, r)
		maxInto(initMax, step)
	}
	add(sum, sidecars)
	maxInto(sum, initMax)
	if pr := spec.GetResources(); pr != nil {
		for k, v := range parseList(pr.GetRequests()) {
			if k == "cpu" || k == "memory" {
				sum[k] = v
			}
		}
	}
	add(sum, parseList(spec.GetOverhead()))
	return sum
}

func add(into, l map[string]int64) {
	for k, v := range l {
		into[k] += v
	}
}

func maxInto(into, l map[string]int64) {
	for k, v := range l {
		into[k] = max(into[k], v)
	}
}

// parseList parses a resource list: cpu in millicores, the rest in units.
// Entries that do not parse count as absent (validation rejects them).
func parseList(l map[string]*metav1.Quantity) map[string]int64 {
	out := make(map[string]int64, len(l))
	for name, q := range l {
		v, err := resource.ParseQuantity(strings.TrimSpace(q.GetString_()))
		if err != nil {
			continue
		}
		if name == "cpu" {
			out[name] = v.MilliValue()
		} else {
			out[name] = v.Value()
		}
	}
	return out
}
