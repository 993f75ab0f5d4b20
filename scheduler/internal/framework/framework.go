package framework

import (
	"context"
	"sync"
	"time"
)

// CycleState carries data between a cycle's extension points (a pre-filter
// computes, filters read). One per scheduling attempt.
type CycleState struct {
	mu   sync.RWMutex
	data map[string]any
}

// NewCycleState is an empty state.
func NewCycleState() *CycleState { return &CycleState{data: map[string]any{}} }

func (c *CycleState) Write(key string, v any) {
	c.mu.Lock()
	c.data[key] = v
	c.mu.Unlock()
}

func (c *CycleState) Read(key string) (any, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.data[key]
	return v, ok
}

// Plugin is anything with a name.
type Plugin interface{ Name() string }

// QueueSortPlugin orders the active queue.
type QueueSortPlugin interface {
	Plugin
	Less(a, b *QueuedPodInfo) bool
}

// QueuedPodInfo is a pod in the scheduling queue.
type QueuedPodInfo struct {
	*PodInfo
	Timestamp               time.Time // when it entered the queue
	InitialAttemptTimestamp time.Time
	Attempts                int
	// UnschedulablePlugins are what rejected it last, to move it back only on
	// events that could help.
	UnschedulablePlugins map[string]bool
}

// PreFilterPlugin computes per-pod data once, or rejects the pod outright.
type PreFilterPlugin interface {
	Plugin
	PreFilter(ctx context.Context, state *CycleState, pod *PodInfo, nodes []*NodeInfo) *Status
}

// FilterPlugin says whether the pod fits a node. Filters run concurrently
// over nodes and must not write shared state.
type FilterPlugin interface {
	Plugin
	Filter(ctx context.Context, state *CycleState, pod *PodInfo, node *NodeInfo) *Status
}

// PostFilterPlugin runs when no node fits (preemption).
type PostFilterPlugin interface {
	Plugin
	PostFilter(ctx context.Context, state *CycleState, pod *PodInfo, d *Diagnosis) (nominatedNode string, s *Status)
}

// PreScorePlugin prepares scoring over the feasible nodes.
type PreScorePlugin interface {
	Plugin
	PreScore(ctx context.Context, state *CycleState, pod *PodInfo, nodes []*NodeInfo) *Status
}

// MaxNodeScore is the top of every plugin's (normalized) score.
const MaxNodeScore int64 = 100

// ScorePlugin ranks a feasible node, 0..MaxNodeScore after normalization.
type ScorePlugin interface {
	Plugin
	Score(ctx context.Context, state *CycleState, pod *PodInfo, node *NodeInfo) (int64, *Status)
}

// NodeScore is one node's score.
type NodeScore struct {
	Name  string
	Score int64
}

// ScoreNormalizer maps a plugin's raw scores onto 0..MaxNodeScore.
type ScoreNormalizer interface {
	NormalizeScore(ctx context.Context, state *CycleState, pod *PodInfo, scores []NodeScore) *Status
}

// ReservePlugin keeps (or releases) resources before binding.
type ReservePlugin interface {
	Plugin
	Reserve(ctx context.Context, state *CycleState, pod *PodInfo, node string) *Status
	Unreserve(ctx context.Context, state *CycleState, pod *PodInfo, node string)
}

// PermitPlugin may hold a pod before binding (Wait) or refuse it.
type PermitPlugin interface {
	Plugin
	Permit(ctx context.Context, state *CycleState, pod *PodInfo, node string) (*Status, time.Duration)
}

// PreBindPlugin runs before the binding is written.
type PreBindPlugin interface {
	Plugin
	PreBind(ctx context.Context, state *CycleState, pod *PodInfo, node string) *Status
}

// BindPlugin writes the binding; the first that does not Skip wins.
type BindPlugin interface {
	Plugin
	Bind(ctx context.Context, state *CycleState, pod *PodInfo, node string) *Status
}

// PostBindPlugin is told about a successful bind.
type PostBindPlugin interface {
	Plugin
	PostBind(ctx context.Context, state *CycleState, pod *PodInfo, node string)
}

// Handle is what plugins may use of the scheduler.
type Handle interface {
	// Snapshot is the node view of the current cycle.
	Snapshot() []*NodeInfo
}
