// Package noderesources holds upstream's NodeResourcesFit (filter and score:
// LeastAllocated by default, MostAllocated, RequestedToCapacityRatio) and
// NodeResourcesBalancedAllocation.
package noderesources

import (
	"context"
	"math"
	"sort"

	"skiff.dev/scheduler/internal/framework"
)

const (
	FitName      = "NodeResourcesFit"
	BalancedName = "NodeResourcesBalancedAllocation"
)

// Strategy scores a node from its requested and allocatable amounts.
type Strategy string

const (
	LeastAllocated           Strategy = "LeastAllocated"
	MostAllocated            Strategy = "MostAllocated"
	RequestedToCapacityRatio Strategy = "RequestedToCapacityRatio"
)

// ResourceWeight is one resource in scoring.
type ResourceWeight struct {
	Name   string
	Weight int64
}

// ShapePoint is a point of RequestedToCapacityRatio's utilization → score curve.
type ShapePoint struct {
	Utilization int64 // 0..100
	Score       int64 // 0..10
}

// Fit is NodeResourcesFit.
type Fit struct {
	Strategy  Strategy
	Resources []ResourceWeight // default cpu:1, memory:1
	Shape     []ShapePoint     // RequestedToCapacityRatio only
	// IgnoredResources are extended resources the filter does not check.
	IgnoredResources map[string]bool
}

func (*Fit) Name() string { return FitName }

// NewFit is the plugin with upstream's defaults.
func NewFit() *Fit {
	return &Fit{Strategy: LeastAllocated, Resources: []ResourceWeight{{"cpu", 1}, {"memory", 1}}}
}

// Filter: the pod's requests fit in allocatable minus what is requested.
func (f *Fit) Filter(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) *framework.Status {
	var reasons []string
	if int64(len(node.Pods))+1 > node.Allocatable.AllowedPods {
		reasons = append(reasons, "Too many pods")
	}
	r, a, u := pod.Requests, node.Allocatable, &node.Requested
	if r.MilliCPU > 0 && r.MilliCPU > a.MilliCPU-u.MilliCPU {
		reasons = append(reasons, "Insufficient cpu")
	}
	if r.Memory > 0 && r.Memory > a.Memory-u.Memory {
		reasons = append(reasons, "Insufficient memory")
	}
	if r.EphemeralStorage > 0 && r.EphemeralStorage > a.EphemeralStorage-u.EphemeralStorage {
		reasons = append(reasons, "Insufficient ephemeral-storage")
	}
	if len(r.Scalar) > 0 {
		names := make([]string, 0, len(r.Scalar))
		for n := range r.Scalar {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if v := r.Scalar[n]; v > 0 && !f.IgnoredResources[n] && v > a.Scalar[n]-u.Scalar[n] {
				reasons = append(reasons, "Insufficient "+n)
			}
		}
	}
	if len(reasons) > 0 {
		return framework.NewStatus(framework.Unschedulable, reasons...)
	}
	return nil
}

// amounts returns requested (with the pod) and allocatable for a resource,
// counting non-zero requests as upstream's scorers do.
func amounts(name string, pod *framework.PodInfo, node *framework.NodeInfo) (req, alloc int64) {
	switch name {
	case "cpu":
		return node.NonZero.MilliCPU + pod.NonZero.MilliCPU, node.Allocatable.MilliCPU
	case "memory":
		return node.NonZero.Memory + pod.NonZero.Memory, node.Allocatable.Memory
	case "ephemeral-storage":
		return node.Requested.EphemeralStorage + pod.Requests.EphemeralStorage, node.Allocatable.EphemeralStorage
	}
	return node.Requested.Scalar[name] + pod.Requests.Scalar[name], node.Allocatable.Scalar[name]
}

// Score is the strategy's weighted score over the configured resources.
func (f *Fit) Score(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) (int64, *framework.Status) {
	var sum, weights int64
	for _, rw := range f.Resources {
		req, alloc := amounts(rw.Name, pod, node)
		if alloc == 0 {
			continue
		}
		var s int64
		switch f.Strategy {
		case MostAllocated:
			s = min(req, alloc) * framework.MaxNodeScore / alloc
		case RequestedToCapacityRatio:
			s = shapeScore(f.Shape, min(req, alloc)*100/alloc)
		default:
			if req > alloc {
				s = 0
			} else {
				s = (alloc - req) * framework.MaxNodeScore / alloc
			}
		}
		sum += s * rw.Weight
		weights += rw.Weight
	}
	if weights == 0 {
		return 0, nil
	}
	return sum / weights, nil
}

// shapeScore interpolates the piecewise-linear shape (scores 0..10 scaled to
// 0..100) at a utilization.
func shapeScore(shape []ShapePoint, util int64) int64 {
	if len(shape) == 0 {
		shape = []ShapePoint{{0, 10}, {100, 0}}
	}
	scale := framework.MaxNodeScore / 10
	if util <= shape[0].Utilization {
		return shape[0].Score * scale
	}
	for i := 1; i < len(shape); i++ {
		p0, p1 := shape[i-1], shape[i]
		if util <= p1.Utilization {
			return (p0.Score*scale*(p1.Utilization-util) + p1.Score*scale*(util-p0.Utilization)) / (p1.Utilization - p0.Utilization)
		}
	}
	return shape[len(shape)-1].Score * scale
}

// Balanced is NodeResourcesBalancedAllocation: nodes whose resources would be
// used in the same proportion score higher (one minus the standard deviation
// of the fractions).
type Balanced struct{ Resources []string }

func (*Balanced) Name() string { return BalancedName }

// NewBalanced is the plugin over cpu and memory.
func NewBalanced() *Balanced { return &Balanced{Resources: []string{"cpu", "memory"}} }

func (b *Balanced) Score(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) (int64, *framework.Status) {
	fr := make([]float64, 0, len(b.Resources))
	for _, name := range b.Resources {
		req, alloc := amounts(name, pod, node)
		if alloc == 0 {
			continue
		}
		f := float64(req) / float64(alloc)
		fr = append(fr, math.Min(f, 1))
	}
	if len(fr) < 2 {
		return framework.MaxNodeScore, nil
	}
	var mean float64
	for _, f := range fr {
		mean += f
	}
	mean /= float64(len(fr))
	var v float64
	for _, f := range fr {
		v += (f - mean) * (f - mean)
	}
	std := math.Sqrt(v / float64(len(fr)))
	return int64((1 - std) * float64(framework.MaxNodeScore)), nil
}
