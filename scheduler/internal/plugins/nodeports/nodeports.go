// Package nodeports filters out nodes where a host port the pod asks for is
// taken (upstream's NodePorts): same protocol and port, and overlapping
// addresses (0.0.0.0 overlaps every address).
package nodeports

import (
	"context"

	"skiff.dev/scheduler/internal/framework"
)

const Name = "NodePorts"

// ErrReason is upstream's message.
const ErrReason = "node(s) didn't have free ports for the requested pod ports"

type Plugin struct{}

func (Plugin) Name() string { return Name }

func wildcard(ip string) bool { return ip == "" || ip == "0.0.0.0" || ip == "::" }

// Conflicts reports whether want clashes with a port in use.
func Conflicts(used map[framework.HostPort]bool, want framework.HostPort) bool {
	for u := range used {
		if u.Port != want.Port || u.Protocol != want.Protocol {
			continue
		}
		if wildcard(u.IP) || wildcard(want.IP) || u.IP == want.IP {
			return true
		}
	}
	return false
}

func (Plugin) Filter(_ context.Context, _ *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) *framework.Status {
	for _, hp := range pod.HostPorts {
		if Conflicts(node.UsedPorts, hp) {
			return framework.NewStatus(framework.Unschedulable, ErrReason)
		}
	}
	return nil
}
