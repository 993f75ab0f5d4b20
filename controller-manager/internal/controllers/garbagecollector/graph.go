package garbagecollector

import (
	"container/list"
	"fmt"
	"slices"
	"sync"

	metav1 "skiff.dev/proto/api/meta/v1"
)

// Finalizers the apiserver puts on an object deleted with the Orphan or the
// Foreground propagation policy (upstream's metav1.FinalizerOrphanDependents
// and metav1.FinalizerDeleteDependents).
const (
	finalizerOrphanDependents = "orphan"
	finalizerDeleteDependents = "foregroundDeletion"
)

// objectReference is where an object is: an owner reference's coordinates
// and the namespace, which owner references leave out.
type objectReference struct {
	APIVersion string
	Kind       string
	Name       string
	UID        string
	Namespace  string
}

// String is upstream's rendering; the OwnerRefInvalidNamespace event's
// message embeds it.
func (r objectReference) String() string {
	return fmt.Sprintf("[%s/%s, namespace: %s, name: %s, uid: %s]", r.APIVersion, r.Kind, r.Namespace, r.Name, r.UID)
}

// ownerRef is an owner reference as the graph keeps it: plain values, so two
// references compare with ==.
type ownerRef struct {
	APIVersion         string
	Kind               string
	Name               string
	UID                string
	Controller         bool
	BlockOwnerDeletion bool
}

// coordinates are the fields that say which object a reference means.
func (r ownerRef) coordinates() objectReference {
	return objectReference{APIVersion: r.APIVersion, Kind: r.Kind, Name: r.Name, UID: r.UID}
}

// matches is upstream's ownerReferenceMatchesCoordinates.
func (r ownerRef) matches(o objectReference) bool {
	return r.UID == o.UID && r.Name == o.Name && r.Kind == o.Kind && r.APIVersion == o.APIVersion
}

func ownerRefsOf(m *metav1.ObjectMeta) []ownerRef {
	refs := m.GetOwnerReferences()
	if len(refs) == 0 {
		return nil
	}
	out := make([]ownerRef, 0, len(refs))
	for _, r := range refs {
		out = append(out, ownerRef{APIVersion: r.GetApiVersion(), Kind: r.GetKind(), Name: r.GetName(), UID: r.GetUid(),
			Controller: r.GetController(), BlockOwnerDeletion: r.GetBlockOwnerDeletion()})
	}
	return out
}

// node is one object of the graph, or (virtual) an owner some dependent
// names that no informer has shown yet.
type node struct {
	identity   objectReference
	dependents map[*node]struct{}
	owners     []ownerRef
	// deletingDependents: deletionTimestamp set and the foregroundDeletion
	// finalizer present.
	deletingDependents bool
	// beingDeleted: deletionTimestamp set; a one-way trip.
	beingDeleted bool
	virtual      bool
}

func (n *node) dependentList() []*node {
	out := make([]*node, 0, len(n.dependents))
	for d := range n.dependents {
		out = append(out, d)
	}
	return out
}

// blocks reports whether n holds a blockOwnerDeletion reference to uid.
func (n *node) blocks(uid string) bool {
	for _, o := range n.owners {
		if o.UID == uid && o.BlockOwnerDeletion {
			return true
		}
	}
	return false
}

type eventType int

const (
	addEvent eventType = iota
	updateEvent
	deleteEvent
)

// event is one informer notification, or (virtual) the workers' finding
// that an object the graph holds does not exist.
type event struct {
	virtual    bool
	typ        eventType
	apiVersion string
	kind       string
	obj        *metav1.ObjectMeta
	// old is the previous state of an update; nil otherwise.
	old *metav1.ObjectMeta
}

func (e *event) identity() objectReference {
	return objectReference{APIVersion: e.apiVersion, Kind: e.kind, Name: e.obj.GetName(), UID: e.obj.GetUid(), Namespace: e.obj.GetNamespace()}
}

// changes is the work one event makes: node UIDs for the workers' queues and
// invalid owner references to report.
type changes struct {
	attemptToDelete            []string
	attemptToDeleteRateLimited []string
	attemptToOrphan            []string
	invalidOwnerRefs           []invalidOwnerRef
}

// invalidOwnerRef is a dependent naming an owner that cannot be in its scope:
// an OwnerRefInvalidNamespace event on the dependent.
type invalidOwnerRef struct {
	dependent objectReference
	// owner is the reference's coordinates in the dependent's namespace,
	// as the event's message shows it.
	owner objectReference
}

func (c *changes) delete(n *node) { c.attemptToDelete = append(c.attemptToDelete, n.identity.UID) }

// scopeFunc says whether a kind is namespaced, and whether it is known.
type scopeFunc func(apiVersion, kind string) (namespaced, known bool)

// graph is upstream's uidToNode with the GraphBuilder's logic. One goroutine
// calls process; workers read through view. mu guards every node.
type graph struct {
	mu     sync.RWMutex
	nodes  map[string]*node
	absent *referenceCache
	scope  scopeFunc
}

func newGraph(absent *referenceCache, scope scopeFunc) *graph {
	return &graph{nodes: map[string]*node{}, absent: absent, scope: scope}
}

// wrongScope: a cluster-scoped dependent naming an owner of a namespaced kind,
// which no owner reference can resolve (it carries no namespace).
func (g *graph) wrongScope(dependent *node, ref ownerRef) bool {
	if dependent.identity.Namespace != "" || g.scope == nil {
		return false
	}
	namespaced, known := g.scope(ref.APIVersion, ref.Kind)
	return known && namespaced
}

// process applies one event to the graph (upstream's processGraphChanges).
func (g *graph) process(ev *event) changes {
	var c changes
	if ev.obj == nil || ev.obj.GetUid() == "" {
		return c
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	uid := ev.obj.GetUid()
	existing, found := g.nodes[uid]
	if found && !ev.virtual && existing.virtual {
		// First sight of an owner known so far only from its dependents'
		// references: those that named it by other coordinates are suspect.
		observed := ev.identity()
		if observed != existing.identity {
			_, mismatched := partitionDependents(existing.dependentList(), observed)
			for _, dep := range mismatched {
				if observed.Namespace != "" && dep.identity.Namespace != observed.Namespace {
					g.reportInvalidNamespace(&c, dep, observed.UID)
				}
				c.delete(dep)
			}
			existing.identity = observed
		}
		existing.virtual = false
	}
	switch {
	case (ev.typ == addEvent || ev.typ == updateEvent) && !found:
		n := &node{
			identity:           ev.identity(),
			dependents:         map[*node]struct{}{},
			owners:             ownerRefsOf(ev.obj),
			deletingDependents: beingDeleted(ev.obj) && hasFinalizer(ev.obj, finalizerDeleteDependents),
			beingDeleted:       beingDeleted(ev.obj),
		}
		g.nodes[uid] = n
		g.addDependentToOwners(&c, n, n.owners)
		// An add may already be a deletion in progress.
		g.processTransitions(&c, ev.old, ev.obj, n)
	case ev.typ == addEvent || ev.typ == updateEvent:
		if !ev.virtual && (existing.identity.APIVersion != ev.apiVersion || existing.identity.Kind != ev.kind) {
			existing.identity.APIVersion, existing.identity.Kind = ev.apiVersion, ev.kind
		}
		owners := ownerRefsOf(ev.obj)
		added, removed, changed := referencesDiffs(existing.owners, owners)
		if len(added)+len(removed)+len(changed) > 0 {
			// An owner waiting for its dependents may be free now.
			g.addUnblockedOwnersToDeleteQueue(&c, removed, changed)
			existing.owners = owners
			g.addDependentToOwners(&c, existing, added)
			g.removeDependentFromOwners(existing, removed)
		}
		if beingDeleted(ev.obj) {
			existing.beingDeleted = true
		}
		g.processTransitions(&c, ev.old, ev.obj, existing)
	case ev.typ == deleteEvent:
		if !found {
			return c
		}
		remove := true
		if ev.virtual {
			deleted := ev.identity()
			if existing.virtual {
				// Its coordinates are only what dependents said: if some
				// said otherwise, only theirs is still in question.
				matching, nonmatching := partitionDependents(existing.dependentList(), deleted)
				if len(nonmatching) > 0 {
					remove = false
					if len(matching) > 0 {
						g.absent.add(deleted)
						for _, dep := range matching {
							c.delete(dep)
						}
					}
					if existing.identity == deleted {
						if alt := alternateOwnerIdentity(nonmatching, deleted); alt != nil {
							existing.identity = *alt
							c.attemptToDeleteRateLimited = append(c.attemptToDeleteRateLimited, uid)
						}
					}
				}
			} else if existing.identity != deleted {
				// A real, observed object is not removed on a virtual
				// event about other coordinates; the dependents that
				// used those coordinates are dangling though.
				remove = false
				matching, _ := partitionDependents(existing.dependentList(), deleted)
				if len(matching) > 0 {
					g.absent.add(deleted)
					for _, dep := range matching {
						c.delete(dep)
					}
				}
			}
		}
		if remove {
			g.removeNode(existing)
			if len(existing.dependents) > 0 {
				g.absent.add(ev.identity())
			}
			for dep := range existing.dependents {
				c.delete(dep)
			}
			for _, o := range existing.owners {
				if owner, ok := g.nodes[o.UID]; ok && owner.deletingDependents {
					// It may have been waiting for this one.
					c.delete(owner)
				}
			}
		}
	}
	return c
}

// addDependentToOwners links n into its owners' dependents, creating virtual
// nodes for owners not seen yet; the workers then ask the apiserver about
// those.
func (g *graph) addDependentToOwners(c *changes, n *node, owners []ownerRef) {
	suspect := false
	for _, ref := range owners {
		if g.wrongScope(n, ref) {
			// Known from the scheme without any lookup (upstream finds it
			// only once the owner is observed).
			c.invalidOwnerRefs = append(c.invalidOwnerRefs, invalidOwnerRef{dependent: n.identity, owner: inNamespace(ref, n.identity.Namespace)})
		}
		owner, ok := g.nodes[ref.UID]
		if !ok {
			owner = &node{
				identity:   inNamespace(ref, n.identity.Namespace),
				dependents: map[*node]struct{}{},
				virtual:    true,
			}
			g.nodes[ref.UID] = owner
		}
		owner.dependents[n] = struct{}{}
		switch {
		case !ok:
			c.delete(owner)
		case suspect:
		case owner.identity.Namespace != "" && owner.identity.Namespace != n.identity.Namespace:
			// A namespaced owner in another namespace cannot own n.
			if !owner.virtual {
				g.reportInvalidNamespace(c, n, ref.UID)
			}
			suspect = true
		case !ref.matches(owner.identity):
			suspect = true
		case owner.identity.Namespace == "" && n.identity.Namespace != "" && owner.virtual:
			// A virtual owner taken for cluster-scoped may be a namespaced
			// one a cluster-scoped dependent names wrongly.
			suspect = true
		}
	}
	if suspect {
		// The workers check whether the references dangle.
		c.delete(n)
	}
}

func inNamespace(ref ownerRef, namespace string) objectReference {
	o := ref.coordinates()
	o.Namespace = namespace
	return o
}

// reportInvalidNamespace is upstream's reportInvalidNamespaceOwnerRef.
func (g *graph) reportInvalidNamespace(c *changes, n *node, ownerUID string) {
	i := slices.IndexFunc(n.owners, func(r ownerRef) bool { return r.UID == ownerUID })
	if i < 0 || g.wrongScope(n, n.owners[i]) {
		// Reported when the reference was added.
		return
	}
	c.invalidOwnerRefs = append(c.invalidOwnerRefs, invalidOwnerRef{dependent: n.identity, owner: inNamespace(n.owners[i], n.identity.Namespace)})
}

func (g *graph) removeDependentFromOwners(n *node, owners []ownerRef) {
	for _, ref := range owners {
		owner, ok := g.nodes[ref.UID]
		if !ok {
			continue
		}
		delete(owner.dependents, n)
		// A virtual node stands only for its dependents' references; with
		// none left nothing would ever remove it (upstream keeps it).
		if owner.virtual && len(owner.dependents) == 0 {
			delete(g.nodes, ref.UID)
		}
	}
}

func (g *graph) removeNode(n *node) {
	delete(g.nodes, n.identity.UID)
	g.removeDependentFromOwners(n, n.owners)
}

// addUnblockedOwnersToDeleteQueue: a blocking reference removed or made
// non-blocking may let a foreground deletion finish.
func (g *graph) addUnblockedOwnersToDeleteQueue(c *changes, removed []ownerRef, changed []ownerRefPair) {
	for _, ref := range removed {
		if ref.BlockOwnerDeletion {
			if n, ok := g.nodes[ref.UID]; ok {
				c.delete(n)
			}
		}
	}
	for _, p := range changed {
		if p.old.BlockOwnerDeletion && !p.new.BlockOwnerDeletion {
			if n, ok := g.nodes[p.new.UID]; ok {
				c.delete(n)
			}
		}
	}
}

// processTransitions queues the work a deletion with the orphan or the
// foregroundDeletion finalizer asks for, once, when it starts.
func (g *graph) processTransitions(c *changes, old, cur *metav1.ObjectMeta, n *node) {
	if deletionStartsWithFinalizer(old, cur, finalizerOrphanDependents) {
		c.attemptToOrphan = append(c.attemptToOrphan, n.identity.UID)
		return
	}
	if deletionStartsWithFinalizer(old, cur, finalizerDeleteDependents) {
		// A node first created virtual lacks the flag: set it here.
		n.deletingDependents = true
		for dep := range n.dependents {
			c.delete(dep)
		}
		c.delete(n)
	}
}

func deletionStartsWithFinalizer(old, cur *metav1.ObjectMeta, finalizer string) bool {
	if !beingDeleted(cur) || !hasFinalizer(cur, finalizer) {
		return false
	}
	return old == nil || !beingDeleted(old) || !hasFinalizer(old, finalizer)
}

func beingDeleted(m *metav1.ObjectMeta) bool { return m.GetDeletionTimestamp() != nil }

func hasFinalizer(m *metav1.ObjectMeta, f string) bool { return slices.Contains(m.GetFinalizers(), f) }

type ownerRefPair struct{ old, new ownerRef }

// referencesDiffs is upstream's: references by UID added, removed, and
// changed in some field.
func referencesDiffs(old, cur []ownerRef) (added, removed []ownerRef, changed []ownerRefPair) {
	byUID := make(map[string]ownerRef, len(old))
	for _, r := range old {
		byUID[r.UID] = r
	}
	for _, r := range cur {
		o, ok := byUID[r.UID]
		if !ok {
			added = append(added, r)
			continue
		}
		if o != r {
			changed = append(changed, ownerRefPair{old: o, new: r})
		}
		delete(byUID, r.UID)
	}
	for _, r := range old {
		if _, ok := byUID[r.UID]; ok {
			removed = append(removed, r)
		}
	}
	return added, removed, changed
}

// partitionDependents splits dependents into those whose reference to
// owner.UID matches owner's coordinates and those with one that does not; a
// dependent with both lands in both.
func partitionDependents(dependents []*node, owner objectReference) (matching, nonmatching []*node) {
	for _, dep := range dependents {
		match, mismatch := false, false
		if owner.Namespace != "" && owner.Namespace != dep.identity.Namespace {
			mismatch = true
		} else {
			for _, ref := range dep.owners {
				if ref.UID != owner.UID {
					continue
				}
				if ref.matches(owner) {
					match = true
				} else {
					mismatch = true
				}
			}
		}
		if match {
			matching = append(matching, dep)
		}
		if mismatch {
			nonmatching = append(nonmatching, dep)
		}
	}
	return matching, nonmatching
}

// referenceLess orders kind and apiVersion first, so that kinds group
// whatever their scope.
func referenceLess(a, b objectReference) bool {
	switch {
	case a.Kind != b.Kind:
		return a.Kind < b.Kind
	case a.APIVersion != b.APIVersion:
		return a.APIVersion < b.APIVersion
	case a.Namespace != b.Namespace:
		return a.Namespace < b.Namespace
	case a.Name != b.Name:
		return a.Name < b.Name
	}
	return a.UID < b.UID
}

// alternateOwnerIdentity is upstream's getAlternateOwnerIdentity: another
// identity the dependents use for absent.UID, the first after absent in
// referenceLess order or else the first of all; nil if there is none.
func alternateOwnerIdentity(deps []*node, absent objectReference) *objectReference {
	clusterScoped := absent.Namespace == ""
	seen := map[objectReference]bool{absent: true}
	var first, firstAfter *objectReference
	for _, dep := range deps {
		for _, ref := range dep.owners {
			if ref.UID != absent.UID {
				continue
			}
			if ref.matches(absent) && (clusterScoped || absent.Namespace == dep.identity.Namespace) {
				continue
			}
			alt := inNamespace(ref, dep.identity.Namespace)
			if clusterScoped && alt.APIVersion == absent.APIVersion && alt.Kind == absent.Kind {
				// That kind is known cluster-scoped now.
				alt.Namespace = ""
			}
			if seen[alt] {
				continue
			}
			seen[alt] = true
			if first == nil || referenceLess(alt, *first) {
				first = &alt
			}
			if referenceLess(absent, alt) && (firstAfter == nil || referenceLess(alt, *firstAfter)) {
				firstAfter = &alt
			}
		}
	}
	if firstAfter != nil {
		return firstAfter
	}
	return first
}

// nodeView is what a worker reads of a node: a copy taken under the lock.
type nodeView struct {
	identity           objectReference
	owners             []ownerRef
	virtual            bool
	beingDeleted       bool
	deletingDependents bool
	dependents         []dependentView
}

type dependentView struct {
	identity           objectReference
	deletingDependents bool
	// blocking: it holds a blockOwnerDeletion reference to the node.
	blocking bool
}

func (v *nodeView) blockingDependents() []dependentView {
	var out []dependentView
	for _, d := range v.dependents {
		if d.blocking {
			out = append(out, d)
		}
	}
	return out
}

// view copies the node of uid.
func (g *graph) view(uid string) (nodeView, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	n, ok := g.nodes[uid]
	if !ok {
		return nodeView{}, false
	}
	v := nodeView{identity: n.identity, owners: slices.Clone(n.owners), virtual: n.virtual,
		beingDeleted: n.beingDeleted, deletingDependents: n.deletingDependents}
	for d := range n.dependents {
		v.dependents = append(v.dependents, dependentView{identity: d.identity, deletingDependents: d.deletingDependents, blocking: d.blocks(uid)})
	}
	slices.SortFunc(v.dependents, func(a, b dependentView) int {
		if referenceLess(a.identity, b.identity) {
			return -1
		}
		if referenceLess(b.identity, a.identity) {
			return 1
		}
		return 0
	})
	return v, true
}

// observed reports whether the node of uid exists and an informer has shown it.
func (g *graph) observed(uid string) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	n, ok := g.nodes[uid]
	return ok && !n.virtual
}

// referenceCache is upstream's ReferenceCache: the owners known not to
// exist, least recently used dropped first.
type referenceCache struct {
	mu    sync.Mutex
	size  int
	ll    *list.List
	items map[objectReference]*list.Element
}

func newReferenceCache(size int) *referenceCache {
	return &referenceCache{size: size, ll: list.New(), items: map[objectReference]*list.Element{}}
}

func (c *referenceCache) add(r objectReference) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[r]; ok {
		c.ll.MoveToFront(e)
		return
	}
	c.items[r] = c.ll.PushFront(r)
	if c.ll.Len() > c.size {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(objectReference))
	}
}

func (c *referenceCache) has(r objectReference) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[r]
	if ok {
		c.ll.MoveToFront(e)
	}
	return ok
}
