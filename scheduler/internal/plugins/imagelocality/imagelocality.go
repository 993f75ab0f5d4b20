// Package imagelocality prefers nodes that already hold the pod's images,
// weighted by image size and how widely the image is spread (upstream's
// ImageLocality, which keeps a few nodes from attracting every pod).
package imagelocality

import (
	"context"
	"strings"

	"skiff.dev/scheduler/internal/framework"
)

const Name = "ImageLocality"

const (
	mb       int64 = 1024 * 1024
	minThres       = 23 * mb
	maxThres       = 1000 * mb
)

type Plugin struct {
	// Spread is the share of nodes holding each image, computed in PreScore.
	spread map[string]float64
}

func (*Plugin) Name() string { return Name }

func normalized(image string) string {
	if !strings.Contains(image[strings.LastIndex(image, "/")+1:], ":") && !strings.Contains(image, "@") {
		return image + ":latest"
	}
	return image
}

func (p *Plugin) PreScore(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, nodes []*framework.NodeInfo) *framework.Status {
	p.spread = map[string]float64{}
	total := len(nodes)
	if total == 0 {
		return nil
	}
	for _, c := range pod.Pod.GetSpec().GetContainers() {
		img := normalized(c.Image)
		n := 0
		for _, ni := range nodes {
			if _, ok := ni.Images[img]; ok {
				n++
			}
		}
		p.spread[img] = float64(n) / float64(total)
	}
	return nil
}

func (p *Plugin) Score(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) (int64, *framework.Status) {
	var sum int64
	for _, c := range pod.Pod.GetSpec().GetContainers() {
		img := normalized(c.Image)
		if size, ok := node.Images[img]; ok {
			sum += int64(float64(size) * p.spread[img])
		}
	}
	n := int64(len(pod.Pod.GetSpec().GetContainers()))
	lo, hi := minThres, maxThres*max(n, 1)
	sum = min(max(sum, lo), hi)
	return framework.MaxNodeScore * (sum - lo) / (hi - lo), nil
}
