// Package cache is the scheduler's view of nodes and the pods bound or
// assumed onto them. A pod is "assumed" on its node the moment the scheduler
// picks it, before the Binding is written, so the next cycle already counts
// its resources; the informer's bound pod later confirms the assumption, and
// a failed bind forgets it. Snapshots copy only the nodes that changed since
// the last one (generation numbers), which keeps a cycle's setup cheap with
// thousands of nodes.
package cache

import (
	"sort"
	"sync"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/scheduler/internal/framework"
)

type podState struct {
	pi      *framework.PodInfo
	node    string
	assumed bool
}

// Cache is safe for concurrent use.
type Cache struct {
	mu         sync.Mutex
	nodes      map[string]*framework.NodeInfo
	pods       map[string]*podState
	generation int64
	nodeSetGen int64 // moves when nodes are added or removed
	// dirty are the nodes changed since the last snapshot update, so an
	// update costs what changed, not the size of the cluster. They are
	// dirty for the snapshot last updated; any other is updated in full.
	dirty map[string]struct{}
	last  *Snapshot
}

// New returns an empty cache.
func New() *Cache {
	return &Cache{nodes: map[string]*framework.NodeInfo{}, pods: map[string]*podState{}, dirty: map[string]struct{}{}}
}

func (c *Cache) touch(n *framework.NodeInfo) {
	c.generation++
	n.Generation = c.generation
	if n.Node.GetMetadata() != nil {
		c.dirty[n.Name()] = struct{}{}
	}
}

// nodeFor returns the NodeInfo of name, creating a placeholder for pods
// that arrive before their node.
func (c *Cache) nodeFor(name string) *framework.NodeInfo {
	n, ok := c.nodes[name]
	if !ok {
		n = framework.NewNodeInfo(&corev1.Node{})
		c.nodes[name] = n
	}
	return n
}

// SetNode adds or updates a node.
func (c *Cache) SetNode(node *corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	name := node.GetMetadata().GetName()
	n, ok := c.nodes[name]
	if !ok || n.Node.GetMetadata() == nil {
		c.generation++
		c.nodeSetGen = c.generation
	}
	if !ok {
		n = framework.NewNodeInfo(node)
		c.nodes[name] = n
	} else {
		n.SetNode(node)
	}
	c.touch(n)
}

// RemoveNode forgets a node (its pods' states stay until they are deleted).
func (c *Cache) RemoveNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, name)
	c.generation++
	c.nodeSetGen = c.generation
}

// Assume counts pi on node before its binding is written.
func (c *Cache) Assume(pi *framework.PodInfo, node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := pi.Key()
	if _, ok := c.pods[k]; ok {
		return
	}
	n := c.nodeFor(node)
	n.AddPod(pi)
	c.touch(n)
	c.pods[k] = &podState{pi: pi, node: node, assumed: true}
}

// Forget drops an assumption whose bind failed.
func (c *Cache) Forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.pods[key]
	if !ok || !st.assumed {
		return
	}
	c.removeLocked(key, st)
}

func (c *Cache) removeLocked(key string, st *podState) {
	if n, ok := c.nodes[st.node]; ok && n.RemovePod(key) {
		c.touch(n)
	}
	delete(c.pods, key)
}

// SetPod records a bound pod from the informer (confirming an assumption).
func (c *Cache) SetPod(p *corev1.Pod) {
	node := p.GetSpec().GetNodeName()
	if node == "" {
		return
	}
	pi := framework.NewPodInfo(p)
	k := pi.Key()
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.pods[k]; ok {
		c.removeLocked(k, st)
	}
	if terminal(p) {
		return
	}
	n := c.nodeFor(node)
	n.AddPod(pi)
	c.touch(n)
	c.pods[k] = &podState{pi: pi, node: node}
}

// RemovePod forgets a deleted pod.
func (c *Cache) RemovePod(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.pods[key]; ok {
		c.removeLocked(key, st)
	}
}

// IsAssumed reports whether key is assumed and not yet confirmed.
func (c *Cache) IsAssumed(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.pods[key]
	return ok && st.assumed
}

func terminal(p *corev1.Pod) bool {
	ph := p.GetStatus().GetPhase()
	return ph == "Succeeded" || ph == "Failed"
}

// Snapshot is the scheduler's read-only view during one cycle.
type Snapshot struct {
	generation int64
	nodeSetGen int64
	byName     map[string]*framework.NodeInfo
	List       []*framework.NodeInfo // sorted by name
}

// NewSnapshot is empty; Update fills it.
func NewSnapshot() *Snapshot {
	return &Snapshot{byName: map[string]*framework.NodeInfo{}, nodeSetGen: -1}
}

// Get returns a node of the snapshot.
func (s *Snapshot) Get(name string) *framework.NodeInfo { return s.byName[name] }

// Update brings s up to date, copying only nodes changed since its last update.
func (c *Cache) Update(s *Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s != c.last {
		// The dirty set tells what changed since c.last was updated, not
		// since s was: walk every node once.
		for name := range c.nodes {
			c.dirty[name] = struct{}{}
		}
		s.nodeSetGen = -1
		c.last = s
	}
	for name := range c.dirty {
		delete(c.dirty, name)
		n, ok := c.nodes[name]
		if !ok || n.Generation <= s.generation || n.Node.GetMetadata() == nil {
			continue
		}
		clone := n.Clone()
		if old, ok := s.byName[name]; ok {
			*old = *clone // keep the pointer the list holds
		} else {
			s.byName[name] = clone
		}
	}
	if s.nodeSetGen != c.nodeSetGen {
		for name := range s.byName {
			if n, ok := c.nodes[name]; !ok || n.Node.GetMetadata() == nil {
				delete(s.byName, name)
			}
		}
		s.List = s.List[:0]
		for _, n := range s.byName {
			s.List = append(s.List, n)
		}
		sort.Slice(s.List, func(i, j int) bool { return s.List[i].Name() < s.List[j].Name() })
		s.nodeSetGen = c.nodeSetGen
	}
	s.generation = c.generation
}
