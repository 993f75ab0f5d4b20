// Package framework is the scheduler's plugin framework, as upstream's: a
// scheduling cycle runs the extension points (queue sort, pre-filter, filter,
// post-filter, pre-score, score, normalize, reserve, permit, pre-bind, bind,
// post-bind) of every enabled plugin, over a snapshot of nodes with the pods
// they already run (NodeInfo). Requests are parsed once per pod and kept in
// PodInfo, so filters compare integers, not quantities.
package framework

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Resource is an amount of each resource: CPU in millicores, the rest in
// units (bytes for memory and ephemeral storage).
type Resource struct {
	MilliCPU         int64
	Memory           int64
	EphemeralStorage int64
	AllowedPods      int64
	Scalar           map[string]int64 // extended resources: nvidia.com/gpu, hugepages-2Mi, ...
}

// Add adds r2 to r.
func (r *Resource) Add(r2 *Resource) {
	r.MilliCPU += r2.MilliCPU
	r.Memory += r2.Memory
	r.EphemeralStorage += r2.EphemeralStorage
	for k, v := range r2.Scalar {
		if r.Scalar == nil {
			r.Scalar = map[string]int64{}
		}
		r.Scalar[k] += v
	}
}

// Sub removes r2 from r.
func (r *Resource) Sub(r2 *Resource) {
	r.MilliCPU -= r2.MilliCPU
	r.Memory -= r2.Memory
	r.EphemeralStorage -= r2.EphemeralStorage
	for k, v := range r2.Scalar {
		if r.Scalar != nil {
			r.Scalar[k] -= v
		}
	}
}

// max sets each resource of r to the larger of r and r2.
func (r *Resource) max(r2 *Resource) {
	r.MilliCPU = max(r.MilliCPU, r2.MilliCPU)
	r.Memory = max(r.Memory, r2.Memory)
	r.EphemeralStorage = max(r.EphemeralStorage, r2.EphemeralStorage)
	for k, v := range r2.Scalar {
		if r.Scalar == nil {
			r.Scalar = map[string]int64{}
		}
		r.Scalar[k] = max(r.Scalar[k], v)
	}
}

// ResourceFromList parses a resource list (requests, capacity).
func ResourceFromList(l map[string]*metav1.Quantity) *Resource {
	r := &Resource{}
	for name, q := range l {
		v, err := resource.ParseQuantity(q.GetString_())
		if err != nil {
			continue
		}
		switch name {
		case "cpu":
			r.MilliCPU = v.MilliValue()
		case "memory":
			r.Memory = v.Value()
		case "ephemeral-storage":
			r.EphemeralStorage = v.Value()
		case "pods":
			r.AllowedPods = v.Value()
		default:
			if r.Scalar == nil {
				r.Scalar = map[string]int64{}
			}
			r.Scalar[name] = v.Value()
		}
	}
	return r
}

// PodInfo is a pod with what scheduling needs parsed once.
type PodInfo struct {
	Pod *corev1.Pod
	// Requests is upstream's effective request: the sum of app containers
	// (and restartable init containers), or the largest init container if
	// larger, plus overhead.
	Requests *Resource
	// NonZero is the request with upstream's defaults for containers that ask
	// nothing (100m CPU, 200Mi memory), used by scoring.
	NonZero   *Resource
	HostPorts []HostPort
}

// HostPort is one port a pod takes on its node.
type HostPort struct {
	IP       string
	Protocol string
	Port     int32
}

const (
	defaultMilliCPU = 100
	defaultMemory   = 200 * 1024 * 1024
)

// NewPodInfo parses a pod.
func NewPodInfo(p *corev1.Pod) *PodInfo {
	pi := &PodInfo{Pod: p, Requests: &Resource{}, NonZero: &Resource{}}
	spec := p.GetSpec()
	for _, c := range spec.GetContainers() {
		r := ResourceFromList(c.GetResources().GetRequests())
		pi.Requests.Add(r)
		pi.NonZero.Add(nonZero(r))
		for _, port := range c.GetPorts() {
			if port.HostPort > 0 {
				proto := port.Protocol
				if proto == "" {
					proto = "TCP"
				}
				pi.HostPorts = append(pi.HostPorts, HostPort{IP: port.HostIP, Protocol: proto, Port: port.HostPort})
			}
		}
	}
	// Init containers run one at a time before the app containers (sidecars,
	// restartPolicy Always, keep running and add up).
	initMax, initNZ := &Resource{}, &Resource{}
	sidecars, sidecarsNZ := &Resource{}, &Resource{}
	for _, c := range spec.GetInitContainers() {
		r := ResourceFromList(c.GetResources().GetRequests())
		if c.GetRestartPolicy() == "Always" {
			sidecars.Add(r)
			sidecarsNZ.Add(nonZero(r))
			continue
		}
		step := *r
		step.Add(sidecars)
		initMax.max(&step)
		stepNZ := *nonZero(r)
		stepNZ.Add(sidecarsNZ)
		initNZ.max(&stepNZ)
	}
	pi.Requests.Add(sidecars)
	pi.NonZero.Add(sidecarsNZ)
	pi.Requests.max(initMax)
	pi.NonZero.max(initNZ)
	if oh := spec.GetOverhead(); len(oh) > 0 {
		o := ResourceFromList(oh)
		pi.Requests.Add(o)
		pi.NonZero.Add(o)
	}
	return pi
}

func nonZero(r *Resource) *Resource {
	out := &Resource{MilliCPU: r.MilliCPU, Memory: r.Memory}
	if out.MilliCPU == 0 {
		out.MilliCPU = defaultMilliCPU
	}
	if out.Memory == 0 {
		out.Memory = defaultMemory
	}
	return out
}

// Key is the pod's "namespace/name".
func (pi *PodInfo) Key() string {
	return pi.Pod.GetMetadata().GetNamespace() + "/" + pi.Pod.GetMetadata().GetName()
}

// NodeInfo is a node and the pods on it, as the scheduler counts them.
type NodeInfo struct {
	Node *corev1.Node
	Pods []*PodInfo
	// PodsWithRequiredAntiAffinity are the pods whose required anti-affinity
	// every incoming pod must respect: kept apart so that check does not
	// walk every pod of the cluster in every cycle.
	PodsWithRequiredAntiAffinity []*PodInfo
	Requested                    Resource // sum of pods' requests
	NonZero                      Resource // sum of pods' non-zero requests
	Allocatable                  *Resource
	UsedPorts                    map[HostPort]bool
	Images                       map[string]int64 // image name → size
	// Generation moves on every change, so snapshots copy only what changed.
	Generation int64
}

// NewNodeInfo builds a NodeInfo for node with no pods.
func NewNodeInfo(n *corev1.Node) *NodeInfo {
	ni := &NodeInfo{UsedPorts: map[HostPort]bool{}}
	ni.SetNode(n)
	return ni
}

// SetNode replaces the node object.
func (n *NodeInfo) SetNode(node *corev1.Node) {
	n.Node = node
	n.Allocatable = ResourceFromList(node.GetStatus().GetAllocatable())
	n.Images = map[string]int64{}
	for _, img := range node.GetStatus().GetImages() {
		for _, name := range img.Names {
			n.Images[name] = img.SizeBytes
		}
	}
}

// Name is the node's name.
func (n *NodeInfo) Name() string { return n.Node.GetMetadata().GetName() }

// AddPod counts a pod on the node.
func (n *NodeInfo) AddPod(pi *PodInfo) {
	n.Pods = append(n.Pods, pi)
	if len(pi.Pod.GetSpec().GetAffinity().GetPodAntiAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution()) > 0 {
		n.PodsWithRequiredAntiAffinity = append(n.PodsWithRequiredAntiAffinity, pi)
	}
	n.Requested.Add(pi.Requests)
	n.NonZero.Add(pi.NonZero)
	for _, hp := range pi.HostPorts {
		n.UsedPorts[hp] = true
	}
}

// RemovePod uncounts a pod; false when it was not there.
func (n *NodeInfo) RemovePod(key string) bool {
	for i, pi := range n.Pods {
		if pi.Key() == key {
			n.Requested.Sub(pi.Requests)
			n.NonZero.Sub(pi.NonZero)
			for _, hp := range pi.HostPorts {
				delete(n.UsedPorts, hp)
			}
			n.Pods[i] = n.Pods[len(n.Pods)-1]
			n.Pods = n.Pods[:len(n.Pods)-1]
			for j, a := range n.PodsWithRequiredAntiAffinity {
				if a == pi {
					n.PodsWithRequiredAntiAffinity = append(n.PodsWithRequiredAntiAffinity[:j:j], n.PodsWithRequiredAntiAffinity[j+1:]...)
					break
				}
			}
			return true
		}
	}
	return false
}

// Clone copies the NodeInfo for a snapshot (pods are shared, read-only).
func (n *NodeInfo) Clone() *NodeInfo {
	c := *n
	c.Pods = append([]*PodInfo(nil), n.Pods...)
	c.PodsWithRequiredAntiAffinity = append([]*PodInfo(nil), n.PodsWithRequiredAntiAffinity...)
	c.Requested.Scalar = cloneMap(n.Requested.Scalar)
	c.NonZero.Scalar = cloneMap(n.NonZero.Scalar)
	c.UsedPorts = make(map[HostPort]bool, len(n.UsedPorts))
	for k, v := range n.UsedPorts {
		c.UsedPorts[k] = v
	}
	return &c
}

func cloneMap(m map[string]int64) map[string]int64 {
	if m == nil {
		return nil
	}
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Code is a plugin's verdict.
type Code int

const (
	Success Code = iota
	Error
	Unschedulable
	// UnschedulableAndUnresolvable: preemption cannot help on this node.
	UnschedulableAndUnresolvable
	Wait
	Skip
)

// Status is a plugin's result with reasons a user can read.
type Status struct {
	Code    Code
	Reasons []string
	Plugin  string
	Err     error
}

// NewStatus builds a status.
func NewStatus(code Code, reasons ...string) *Status { return &Status{Code: code, Reasons: reasons} }

// AsStatus wraps an error.
func AsStatus(err error) *Status {
	return &Status{Code: Error, Err: err, Reasons: []string{err.Error()}}
}

// IsSuccess: nil or Success.
func (s *Status) IsSuccess() bool { return s == nil || s.Code == Success }

// Message joins the reasons.
func (s *Status) Message() string {
	if s == nil {
		return ""
	}
	return strings.Join(s.Reasons, ", ")
}

// Diagnosis records why nodes were rejected, for FailedScheduling.
type Diagnosis struct {
	NodeToStatus map[string]*Status
}

// Summary is upstream's FailedScheduling message: "0/5 nodes are available:
// 2 Insufficient cpu, 3 node(s) had untolerated taint {k: v}."
func (d *Diagnosis) Summary(total int) string {
	counts := map[string]int{}
	for _, st := range d.NodeToStatus {
		for _, r := range st.Reasons {
			counts[r]++
		}
	}
	reasons := make([]string, 0, len(counts))
	for r, n := range counts {
		reasons = append(reasons, fmt.Sprintf("%d %s", n, r))
	}
	sort.Strings(reasons)
	msg := fmt.Sprintf("0/%d nodes are available", total)
	if len(reasons) > 0 {
		msg += ": " + strings.Join(reasons, ", ")
	}
	return msg + "."
}
