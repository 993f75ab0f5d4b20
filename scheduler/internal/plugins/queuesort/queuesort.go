// Package queuesort orders the active queue by priority, then by the time a
// pod entered the queue (upstream's PrioritySort).
package queuesort

import "skiff.dev/scheduler/internal/framework"

const Name = "PrioritySort"

type Plugin struct{}

func (Plugin) Name() string { return Name }

func (Plugin) Less(a, b *framework.QueuedPodInfo) bool {
	pa, pb := a.Pod.GetSpec().GetPriority(), b.Pod.GetSpec().GetPriority()
	return pa > pb || (pa == pb && a.Timestamp.Before(b.Timestamp))
}
