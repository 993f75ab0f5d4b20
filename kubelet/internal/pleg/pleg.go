// Package pleg is the pod lifecycle event generator: it relists the
// runtime's sandboxes and containers every period, diffs them against the
// last relist and tells the pod workers which pods changed, as upstream's
// GenericPLEG (containerd 1.6 has no CRI event stream to replace it).
package pleg

import (
	"context"
	"log/slog"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/kuberuntime"
)

// EventType is upstream's PodLifeCycleEventType.
type EventType string

const (
	ContainerStarted EventType = "ContainerStarted"
	ContainerDied    EventType = "ContainerDied"
	ContainerRemoved EventType = "ContainerRemoved"
	ContainerChanged EventType = "ContainerChanged"
	// PodSync asks for a sync without a container event.
	PodSync EventType = "PodSync"
)

// Event is one change of one pod; Data is the container (or sandbox) ID.
type Event struct {
	ID   string // pod UID
	Type EventType
	Data string
}

// state is a container's state as the relist sees it.
type state string

const (
	running     state = "running"
	exited      state = "exited"
	unknown     state = "unknown"
	nonExistent state = "non-existent"
)

func containerState(s runtimeapi.ContainerState) state {
	switch s {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return running
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		return exited
	}
	return unknown
}

func sandboxState(s runtimeapi.PodSandboxState) state {
	if s == runtimeapi.PodSandboxState_SANDBOX_READY {
		return running
	}
	return exited
}

// generateEvents is upstream's: the event a container's transition from
// old to new produces.
func generateEvents(uid, id string, old, new state) []Event {
	if old == new {
		return nil
	}
	switch new {
	case running:
		return []Event{{uid, ContainerStarted, id}}
	case exited:
		return []Event{{uid, ContainerDied, id}}
	case unknown:
		return []Event{{uid, ContainerChanged, id}}
	case nonExistent:
		if old == exited {
			return []Event{{uid, ContainerRemoved, id}}
		}
		return []Event{{uid, ContainerDied, id}, {uid, ContainerRemoved, id}}
	}
	return nil
}

// pods is one relist: pod UID → container or sandbox ID → state.
type pods map[string]map[string]state

// Cache holds the newest runtime status of each pod the relist saw change.
type Cache struct {
	mu   sync.RWMutex
	pods map[string]*kuberuntime.PodStatus
}

// Get returns the pod's last inspected status, nil if none.
func (c *Cache) Get(uid string) *kuberuntime.PodStatus {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.pods[uid]
}

// Set stores a pod's status.
func (c *Cache) Set(uid string, s *kuberuntime.PodStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pods == nil {
		c.pods = map[string]*kuberuntime.PodStatus{}
	}
	c.pods[uid] = s
}

// Delete forgets a pod.
func (c *Cache) Delete(uid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pods, uid)
}

// UIDs lists the pods in the cache.
func (c *Cache) UIDs() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.pods))
	for uid := range c.pods {
		out = append(out, uid)
	}
	return out
}

// PLEG relists a runtime.
type PLEG struct {
	rt     cri.Runtime
	period time.Duration
	log    *slog.Logger
	now    func() time.Time
	events chan Event
	cache  *Cache

	mu       sync.Mutex
	last     pods
	relisted time.Time
	dropped  int
}

// New returns a PLEG relisting rt every period (upstream: 1 s).
func New(rt cri.Runtime, period time.Duration, log *slog.Logger) *PLEG {
	if log == nil {
		log = slog.Default()
	}
	return &PLEG{rt: rt, period: period, log: log, now: time.Now, events: make(chan Event, 1000), cache: &Cache{}}
}

// Events delivers the pod events; when the reader falls behind, events are
// dropped (the periodic resync catches up), never blocking the relist.
func (p *PLEG) Events() <-chan Event { return p.events }

// Cache is the runtime status per pod the relist keeps.
func (p *PLEG) Cache() *Cache { return p.cache }

// Healthy reports whether a relist finished within the last three minutes,
// as upstream's relistThreshold.
func (p *PLEG) Healthy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.relisted.IsZero() && p.now().Sub(p.relisted) < 3*time.Minute
}

// Run relists until ctx ends.
func (p *PLEG) Run(ctx context.Context) {
	t := time.NewTicker(p.period)
	defer t.Stop()
	for {
		if err := p.Relist(ctx); err != nil && ctx.Err() == nil {
			p.log.Info("PLEG relist failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Relist lists the runtime once, emits the differences from the last
// relist and refreshes the cache of the pods that changed.
func (p *PLEG) Relist(ctx context.Context) error {
	sandboxes, err := p.rt.ListPodSandbox(ctx, nil)
	if err != nil {
		return err
	}
	containers, err := p.rt.ListContainers(ctx, nil)
	if err != nil {
		return err
	}
	cur := pods{}
	add := func(uid, id string, s state) {
		if uid == "" {
			return // not ours: no pod UID label
		}
		if cur[uid] == nil {
			cur[uid] = map[string]state{}
		}
		cur[uid][id] = s
	}
	for _, sb := range sandboxes {
		add(sb.GetLabels()[kuberuntime.LabelPodUID], sb.GetId(), sandboxState(sb.GetState()))
	}
	for _, c := range containers {
		add(c.GetLabels()[kuberuntime.LabelPodUID], c.GetId(), containerState(c.GetState()))
	}

	p.mu.Lock()
	old := p.last
	p.mu.Unlock()
	evs := diff(old, cur)

	changed := map[string]bool{}
	for _, e := range evs {
		changed[e.ID] = true
	}
	for uid := range changed {
		if _, ok := cur[uid]; !ok {
			p.cache.Delete(uid)
			continue
		}
		st, err := kuberuntime.Inspect(ctx, p.rt, uid, p.now())
		if err != nil {
			p.log.Info("PLEG inspecting a pod", "uid", uid, "err", err)
			continue
		}
		p.cache.Set(uid, st)
	}

	p.mu.Lock()
	p.last = cur
	p.relisted = p.now()
	p.mu.Unlock()
	for _, e := range evs {
		// Upstream does not send ContainerChanged to the workers.
		if e.Type == ContainerChanged {
			continue
		}
		select {
		case p.events <- e:
		default:
			p.mu.Lock()
			p.dropped++
			p.mu.Unlock()
		}
	}
	return nil
}

// diff is the events that take old to cur, pods in sorted order of
// discovery irrelevant to the workers (each pod's events keep their order).
func diff(old, cur pods) []Event {
	var evs []Event
	for uid, cs := range cur {
		for id, s := range cs {
			o, ok := old[uid][id]
			if !ok {
				o = nonExistent
			}
			evs = append(evs, generateEvents(uid, id, o, s)...)
		}
	}
	for uid, cs := range old {
		for id, o := range cs {
			if _, ok := cur[uid][id]; !ok {
				evs = append(evs, generateEvents(uid, id, o, nonExistent)...)
			}
		}
	}
	return evs
}
