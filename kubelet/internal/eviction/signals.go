package eviction

import (
	"context"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
)

// Observation is one signal as measured: what is available of what there
// is (bytes, inodes or PIDs), and when.
type Observation struct {
	Available, Capacity int64
	Time                time.Time
}

// Observations are the signals measured in one pass; a signal missing
// (the runtime reports no image filesystem, say) meets no threshold.
type Observations map[Signal]Observation

// NodeStats is one measurement of the node.
type NodeStats struct {
	Signals Observations
	// DedicatedImageFs says the runtime's image filesystem is another
	// device than the kubelet's root directory: disk pressure on one is
	// then relieved differently from the other.
	DedicatedImageFs bool
	// Unmeasured says why signals are missing, nil when none is.
	Unmeasured error
}

// FsUsage is what a pod or container takes of a filesystem; nil fields
// were not measured.
type FsUsage struct {
	Bytes, Inodes *uint64
}

// ContainerStats is one running container's usage.
type ContainerStats struct {
	Name string
	// Memory is its working set.
	Memory *uint64
	// Rootfs is its writable layer (on the image filesystem), Logs its
	// log files (on the node's).
	Rootfs, Logs FsUsage
}

// PodStats is one pod's usage.
type PodStats struct {
	// Memory is the pod's working set (its cgroup's, or its containers'
	// added up).
	Memory *uint64
	// Processes is how many processes the pod runs.
	Processes  *uint64
	Containers []ContainerStats
	// Volumes is its local ephemeral volumes (emptyDirs on disk).
	Volumes FsUsage
}

// Provider measures what the manager decides on: the node's signals every
// interval, the pods' usage only when a pod must be chosen. Upstream reads
// both from one stats summary; splitting them keeps the CRI calls and the
// walks of volumes off the pressure-free path.
type Provider interface {
	Node(ctx context.Context) (*NodeStats, error)
	// Pods are the pods' usage by UID; a pod without figures (not running
	// yet) is left out.
	Pods(ctx context.Context, pods []*corev1.Pod) (map[string]PodStats, error)
}
