package stats

import (
	"encoding/json"
	"time"
)

// The Summary API's types, with the JSON names of upstream's
// k8s.io/kubelet/pkg/apis/stats/v1alpha1 so that anything reading a
// kubelet's /stats/summary (metrics-server, kubectl get --raw) reads ours.
// Fields we never fill (accelerators, PSI, swap, user-defined metrics) are
// left out rather than sent empty.

// Summary is a snapshot of the node's and its pods' usage.
type Summary struct {
	Node NodeStats  `json:"node"`
	Pods []PodStats `json:"pods"`
}

// NodeStats is the node as a whole.
type NodeStats struct {
	NodeName string `json:"nodeName"`
	// StartTime is when the figures started counting: the machine's boot.
	StartTime Time          `json:"startTime"`
	CPU       *CPUStats     `json:"cpu,omitempty"`
	Memory    *MemoryStats  `json:"memory,omitempty"`
	Network   *NetworkStats `json:"network,omitempty"`
	// Fs is the filesystem of the kubelet's root directory.
	Fs      *FsStats      `json:"fs,omitempty"`
	Runtime *RuntimeStats `json:"runtime,omitempty"`
	Rlimit  *RlimitStats  `json:"rlimit,omitempty"`
}

// RuntimeStats is the container runtime's share of the node.
type RuntimeStats struct {
	ImageFs     *FsStats `json:"imageFs,omitempty"`
	ContainerFs *FsStats `json:"containerFs,omitempty"`
}

// RlimitStats is the node's process table.
type RlimitStats struct {
	Time                  Time   `json:"time"`
	MaxPID                *int64 `json:"maxpid,omitempty"`
	NumOfRunningProcesses *int64 `json:"curproc,omitempty"`
}

// PodStats is one pod: its containers and, where the runtime reports it,
// the pod's cgroup as a whole (else the sum of its containers).
type PodStats struct {
	PodRef           PodReference     `json:"podRef"`
	StartTime        Time             `json:"startTime"`
	Containers       []ContainerStats `json:"containers"`
	CPU              *CPUStats        `json:"cpu,omitempty"`
	Memory           *MemoryStats     `json:"memory,omitempty"`
	Network          *NetworkStats    `json:"network,omitempty"`
	VolumeStats      []VolumeStats    `json:"volume,omitempty"`
	EphemeralStorage *FsStats         `json:"ephemeral-storage,omitempty"`
	ProcessStats     *ProcessStats    `json:"process_stats,omitempty"`
}

// ContainerStats is one running container.
type ContainerStats struct {
	Name      string       `json:"name"`
	StartTime Time         `json:"startTime"`
	CPU       *CPUStats    `json:"cpu,omitempty"`
	Memory    *MemoryStats `json:"memory,omitempty"`
	Rootfs    *FsStats     `json:"rootfs,omitempty"`
	Logs      *FsStats     `json:"logs,omitempty"`
}

// PodReference names a pod.
type PodReference struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	UID       string `json:"uid"`
}

// InterfaceStats is one network interface's counters.
type InterfaceStats struct {
	Name     string  `json:"name"`
	RxBytes  *uint64 `json:"rxBytes,omitempty"`
	RxErrors *uint64 `json:"rxErrors,omitempty"`
	TxBytes  *uint64 `json:"txBytes,omitempty"`
	TxErrors *uint64 `json:"txErrors,omitempty"`
}

// NetworkStats is the default interface inline, and every interface.
type NetworkStats struct {
	Time Time `json:"time"`
	InterfaceStats
	Interfaces []InterfaceStats `json:"interfaces,omitempty"`
}

// CPUStats: UsageNanoCores is a rate over the last sampling window,
// UsageCoreNanoSeconds the cumulative counter.
type CPUStats struct {
	Time                 Time    `json:"time"`
	UsageNanoCores       *uint64 `json:"usageNanoCores,omitempty"`
	UsageCoreNanoSeconds *uint64 `json:"usageCoreNanoSeconds,omitempty"`
}

// MemoryStats: WorkingSetBytes is what the eviction manager and `top`
// count (usage less inactive file pages).
type MemoryStats struct {
	Time            Time    `json:"time"`
	AvailableBytes  *uint64 `json:"availableBytes,omitempty"`
	UsageBytes      *uint64 `json:"usageBytes,omitempty"`
	WorkingSetBytes *uint64 `json:"workingSetBytes,omitempty"`
	RSSBytes        *uint64 `json:"rssBytes,omitempty"`
	PageFaults      *uint64 `json:"pageFaults,omitempty"`
	MajorPageFaults *uint64 `json:"majorPageFaults,omitempty"`
}

// ProcessStats is the number of processes in a pod.
type ProcessStats struct {
	ProcessCount *uint64 `json:"process_count,omitempty"`
}

// VolumeStats is one of a pod's volumes.
type VolumeStats struct {
	FsStats
	Name   string        `json:"name,omitempty"`
	PVCRef *PVCReference `json:"pvcRef,omitempty"`
}

// PVCReference names the claim a volume came from.
type PVCReference struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// FsStats is a filesystem, or one user's share of it.
type FsStats struct {
	Time           Time    `json:"time"`
	AvailableBytes *uint64 `json:"availableBytes,omitempty"`
	CapacityBytes  *uint64 `json:"capacityBytes,omitempty"`
	UsedBytes      *uint64 `json:"usedBytes,omitempty"`
	InodesFree     *uint64 `json:"inodesFree,omitempty"`
	Inodes         *uint64 `json:"inodes,omitempty"`
	InodesUsed     *uint64 `json:"inodesUsed,omitempty"`
}

// Time marshals as metav1.Time does: RFC 3339 in UTC to the second, and
// null when zero.
type Time struct{ time.Time }

// NewTime wraps t.
func NewTime(t time.Time) Time { return Time{t} }

func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339))
}

func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	pt, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return err
	}
	t.Time = pt.Local()
	return nil
}
