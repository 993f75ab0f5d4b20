package garbagecollector

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

var testNow = time.Unix(1700000000, 0)

func schemeScope(apiVersion, kind string) (bool, bool) {
	k, ok := scheme.ForGVK(apiVersion, kind)
	return ok && k.Namespaced, ok
}

func oref(kind, name, uid string, block bool) *metav1.OwnerReference {
	apiVersion := "apps/v1"
	if kind == "Node" || kind == "Namespace" || kind == "Pod" {
		apiVersion = "v1"
	}
	r := &metav1.OwnerReference{ApiVersion: apiVersion, Kind: kind, Name: name, Uid: uid}
	if block {
		t := true
		r.BlockOwnerDeletion = &t
	}
	return r
}

func objMeta(ns, name, uid string, owners ...*metav1.OwnerReference) *metav1.ObjectMeta {
	return &metav1.ObjectMeta{Namespace: ns, Name: name, Uid: uid, OwnerReferences: owners}
}

// deleting is m with a deletionTimestamp and finalizers.
func deleting(m *metav1.ObjectMeta, finalizers ...string) *metav1.ObjectMeta {
	c := proto.Clone(m).(*metav1.ObjectMeta)
	c.DeletionTimestamp = metav1.NewTime(testNow)
	c.Finalizers = finalizers
	return c
}

func add(apiVersion, kind string, m *metav1.ObjectMeta) *event {
	return &event{typ: addEvent, apiVersion: apiVersion, kind: kind, obj: m}
}

func update(apiVersion, kind string, old, cur *metav1.ObjectMeta) *event {
	return &event{typ: updateEvent, apiVersion: apiVersion, kind: kind, obj: cur, old: old}
}

func del(apiVersion, kind string, m *metav1.ObjectMeta) *event {
	return &event{typ: deleteEvent, apiVersion: apiVersion, kind: kind, obj: m}
}

func virtualDel(apiVersion, kind, ns, name, uid string) *event {
	return &event{virtual: true, typ: deleteEvent, apiVersion: apiVersion, kind: kind, obj: objMeta(ns, name, uid)}
}

// Objects of the table: a ReplicaSet and its pods in "default".
var (
	rs      = objMeta("default", "rs", "rs-uid")
	podA    = objMeta("default", "a", "a-uid", oref("ReplicaSet", "rs", "rs-uid", true))
	podB    = objMeta("default", "b", "b-uid", oref("ReplicaSet", "rs", "rs-uid", false))
	podBare = objMeta("default", "a", "a-uid")
)

const (
	pods = "v1/Pod"
	rss  = "apps/v1/ReplicaSet"
)

func gvk(s string) (string, string) {
	i := len(s) - 1
	for s[i] != '/' {
		i--
	}
	return s[:i], s[i+1:]
}

func addOf(k string, m *metav1.ObjectMeta) *event { a, b := gvk(k); return add(a, b, m) }
func updOf(k string, old, cur *metav1.ObjectMeta) *event {
	a, b := gvk(k)
	return update(a, b, old, cur)
}
func delOf(k string, m *metav1.ObjectMeta) *event { a, b := gvk(k); return del(a, b, m) }

// nodeState is what a test checks of a node.
type nodeState struct {
	virtual, deletingDependents, beingDeleted bool
	namespace                                 string
	dependents                                []string
}

func stateOf(g *graph) map[string]nodeState {
	out := map[string]nodeState{}
	for uid, n := range g.nodes {
		s := nodeState{virtual: n.virtual, deletingDependents: n.deletingDependents, beingDeleted: n.beingDeleted, namespace: n.identity.Namespace}
		for d := range n.dependents {
			s.dependents = append(s.dependents, d.identity.UID)
		}
		slices.Sort(s.dependents)
		out[uid] = s
	}
	return out
}

func normalize(c changes) changes {
	slices.Sort(c.attemptToDelete)
	c.attemptToDelete = slices.Compact(c.attemptToDelete)
	slices.Sort(c.attemptToDeleteRateLimited)
	slices.Sort(c.attemptToOrphan)
	if len(c.attemptToDelete) == 0 {
		c.attemptToDelete = nil
	}
	return c
}

func invalid(dep objectReference, ownerKind, ownerName, ownerUID string) invalidOwnerRef {
	r := ownerRef{APIVersion: "apps/v1", Kind: ownerKind, Name: ownerName, UID: ownerUID}
	return invalidOwnerRef{dependent: dep, owner: inNamespace(r, dep.Namespace)}
}

func TestGraphProcess(t *testing.T) {
	podRef := func(m *metav1.ObjectMeta) objectReference {
		return objectReference{APIVersion: "v1", Kind: "Pod", Name: m.Name, UID: m.Uid, Namespace: m.Namespace}
	}
	rsOther := objMeta("other", "rs", "rs-uid")
	clusterRole := objMeta("", "cr", "cr-uid", oref("ReplicaSet", "rs", "rs-uid", false))
	crRef := objectReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "cr", UID: "cr-uid"}
	podWrongKind := objMeta("default", "a", "a-uid", oref("Deployment", "rs", "rs-uid", false))
	podOtherName := objMeta("default", "b", "b-uid", oref("ReplicaSet", "rs-old", "rs-uid", false))
	podUnblocked := objMeta("default", "a", "a-uid", oref("ReplicaSet", "rs", "rs-uid", false))

	type step struct {
		ev   *event
		want changes
	}
	cases := []struct {
		name  string
		steps []step
		nodes map[string]nodeState
		// absent are identities the absent-owner cache must hold.
		absent []objectReference
	}{{
		name:  "dependent before its owner: a virtual owner, checked by the workers",
		steps: []step{{ev: addOf(pods, podA), want: changes{attemptToDelete: []string{"rs-uid"}}}},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {virtual: true, namespace: "default", dependents: []string{"a-uid"}},
		},
	}, {
		name: "owner observed after its dependent replaces the virtual node quietly",
		steps: []step{
			{ev: addOf(pods, podA), want: changes{attemptToDelete: []string{"rs-uid"}}},
			{ev: addOf(rss, rs)},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {namespace: "default", dependents: []string{"a-uid"}},
		},
	}, {
		name: "owner before dependent: no work",
		steps: []step{
			{ev: addOf(rss, rs)},
			{ev: addOf(pods, podA)},
			{ev: addOf(pods, podB)},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"b-uid":  {namespace: "default"},
			"rs-uid": {namespace: "default", dependents: []string{"a-uid", "b-uid"}},
		},
	}, {
		name: "owner deleted: its dependents are queued and it is known absent",
		steps: []step{
			{ev: addOf(rss, rs)},
			{ev: addOf(pods, podA)},
			{ev: addOf(pods, podB)},
			{ev: delOf(rss, rs), want: changes{attemptToDelete: []string{"a-uid", "b-uid"}}},
		},
		nodes: map[string]nodeState{
			"a-uid": {namespace: "default"},
			"b-uid": {namespace: "default"},
		},
		absent: []objectReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "rs-uid", Namespace: "default"}},
	}, {
		name: "owner that never existed: the virtual delete queues its dependents",
		steps: []step{
			{ev: addOf(pods, podA), want: changes{attemptToDelete: []string{"rs-uid"}}},
			{ev: virtualDel("apps/v1", "ReplicaSet", "default", "rs", "rs-uid"), want: changes{attemptToDelete: []string{"a-uid"}}},
		},
		nodes:  map[string]nodeState{"a-uid": {namespace: "default"}},
		absent: []objectReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "rs-uid", Namespace: "default"}},
	}, {
		name: "virtual delete of other coordinates leaves an observed node",
		steps: []step{
			{ev: addOf(rss, rs)},
			{ev: addOf(pods, podWrongKind), want: changes{attemptToDelete: []string{"a-uid"}}},
			{ev: virtualDel("apps/v1", "Deployment", "default", "rs", "rs-uid"), want: changes{attemptToDelete: []string{"a-uid"}}},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {namespace: "default", dependents: []string{"a-uid"}},
		},
		absent: []objectReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "rs", UID: "rs-uid", Namespace: "default"}},
	}, {
		name: "virtual owner named two ways: the absent identity is replaced by the other",
		steps: []step{
			{ev: addOf(pods, podA), want: changes{attemptToDelete: []string{"rs-uid"}}},
			{ev: addOf(pods, podOtherName), want: changes{attemptToDelete: []string{"b-uid"}}},
			{ev: virtualDel("apps/v1", "ReplicaSet", "default", "rs", "rs-uid"),
				want: changes{attemptToDelete: []string{"a-uid"}, attemptToDeleteRateLimited: []string{"rs-uid"}}},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"b-uid":  {namespace: "default"},
			"rs-uid": {virtual: true, namespace: "default", dependents: []string{"a-uid", "b-uid"}},
		},
	}, {
		name: "a reference that names the owner by another kind makes the dependent suspect",
		steps: []step{
			{ev: addOf(rss, rs)},
			{ev: addOf(pods, podWrongKind), want: changes{attemptToDelete: []string{"a-uid"}}},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {namespace: "default", dependents: []string{"a-uid"}},
		},
	}, {
		name: "owner reference added by an update",
		steps: []step{
			{ev: addOf(pods, podBare)},
			{ev: updOf(pods, podBare, podA), want: changes{attemptToDelete: []string{"rs-uid"}}},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {virtual: true, namespace: "default", dependents: []string{"a-uid"}},
		},
	}, {
		name: "blocking reference removed: the owner is queued, the link dropped",
		steps: []step{
			{ev: addOf(rss, rs)},
			{ev: addOf(pods, podA)},
			{ev: updOf(pods, podA, podBare), want: changes{attemptToDelete: []string{"rs-uid"}}},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {namespace: "default"},
		},
	}, {
		name: "blockOwnerDeletion turned off: the owner is queued",
		steps: []step{
			{ev: addOf(rss, rs)},
			{ev: addOf(pods, podA)},
			{ev: updOf(pods, podA, podUnblocked), want: changes{attemptToDelete: []string{"rs-uid"}}},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {namespace: "default", dependents: []string{"a-uid"}},
		},
	}, {
		name: "virtual owner dropped with its last dependent",
		steps: []step{
			{ev: addOf(pods, podA), want: changes{attemptToDelete: []string{"rs-uid"}}},
			{ev: delOf(pods, podA)},
		},
		nodes: map[string]nodeState{},
	}, {
		name: "foreground deletion starts: dependents and owner queued once",
		steps: []step{
			{ev: addOf(rss, rs)},
			{ev: addOf(pods, podA)},
			{ev: addOf(pods, podB)},
			{ev: updOf(rss, rs, deleting(rs, finalizerDeleteDependents)), want: changes{attemptToDelete: []string{"a-uid", "b-uid", "rs-uid"}}},
			{ev: updOf(rss, deleting(rs, finalizerDeleteDependents), deleting(rs, finalizerDeleteDependents))},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"b-uid":  {namespace: "default"},
			"rs-uid": {namespace: "default", deletingDependents: true, beingDeleted: true, dependents: []string{"a-uid", "b-uid"}},
		},
	}, {
		name: "an owner first seen deleting its dependents",
		steps: []step{
			{ev: addOf(pods, podA), want: changes{attemptToDelete: []string{"rs-uid"}}},
			{ev: addOf(rss, deleting(rs, finalizerDeleteDependents)), want: changes{attemptToDelete: []string{"a-uid", "rs-uid"}}},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {namespace: "default", deletingDependents: true, beingDeleted: true, dependents: []string{"a-uid"}},
		},
	}, {
		name: "a dependent gone lets a foreground owner finish",
		steps: []step{
			{ev: addOf(rss, deleting(rs, finalizerDeleteDependents)), want: changes{attemptToDelete: []string{"rs-uid"}}},
			{ev: addOf(pods, podA)},
			{ev: delOf(pods, podA), want: changes{attemptToDelete: []string{"rs-uid"}}},
		},
		nodes: map[string]nodeState{
			"rs-uid": {namespace: "default", deletingDependents: true, beingDeleted: true},
		},
	}, {
		name: "orphan deletion starts: the owner is queued for orphaning",
		steps: []step{
			{ev: addOf(rss, rs)},
			{ev: addOf(pods, podA)},
			{ev: updOf(rss, rs, deleting(rs, finalizerOrphanDependents)), want: changes{attemptToOrphan: []string{"rs-uid"}}},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {namespace: "default", beingDeleted: true, dependents: []string{"a-uid"}},
		},
	}, {
		name: "owner observed in another namespace, then its dependent: event and check",
		steps: []step{
			{ev: addOf(rss, rsOther)},
			{ev: addOf(pods, podA), want: changes{attemptToDelete: []string{"a-uid"},
				invalidOwnerRefs: []invalidOwnerRef{invalid(podRef(podA), "ReplicaSet", "rs", "rs-uid")}}},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {namespace: "other", dependents: []string{"a-uid"}},
		},
	}, {
		name: "dependent first, then its owner observed in another namespace: event and check",
		steps: []step{
			{ev: addOf(pods, podA), want: changes{attemptToDelete: []string{"rs-uid"}}},
			{ev: addOf(rss, rsOther), want: changes{attemptToDelete: []string{"a-uid"},
				invalidOwnerRefs: []invalidOwnerRef{invalid(podRef(podA), "ReplicaSet", "rs", "rs-uid")}}},
		},
		nodes: map[string]nodeState{
			"a-uid":  {namespace: "default"},
			"rs-uid": {namespace: "other", dependents: []string{"a-uid"}},
		},
	}, {
		name: "cluster-scoped dependent naming a namespaced kind: one event, at once",
		steps: []step{
			{ev: add("rbac.authorization.k8s.io/v1", "ClusterRole", clusterRole), want: changes{attemptToDelete: []string{"rs-uid"},
				invalidOwnerRefs: []invalidOwnerRef{invalid(crRef, "ReplicaSet", "rs", "rs-uid")}}},
			// Observing the owner makes the dependent suspect, and says
			// nothing more.
			{ev: addOf(rss, rsOther), want: changes{attemptToDelete: []string{"cr-uid"}}},
		},
		nodes: map[string]nodeState{
			"cr-uid": {},
			"rs-uid": {namespace: "other", dependents: []string{"cr-uid"}},
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			absent := newReferenceCache(10)
			g := newGraph(absent, schemeScope)
			for i, s := range tc.steps {
				got := normalize(g.process(s.ev))
				if want := normalize(s.want); !reflect.DeepEqual(got, want) {
					t.Errorf("step %d: changes\n got %+v\nwant %+v", i, got, want)
				}
			}
			if got := stateOf(g); !reflect.DeepEqual(got, tc.nodes) {
				t.Errorf("nodes\n got %+v\nwant %+v", got, tc.nodes)
			}
			for _, r := range tc.absent {
				if !absent.has(r) {
					t.Errorf("absent-owner cache lacks %s", r)
				}
			}
		})
	}
}

func TestReferencesDiffs(t *testing.T) {
	a := ownerRef{UID: "a", Name: "a"}
	b := ownerRef{UID: "b", Name: "b", BlockOwnerDeletion: true}
	bUnblocked := ownerRef{UID: "b", Name: "b"}
	c := ownerRef{UID: "c", Name: "c"}
	added, removed, changed := referencesDiffs([]ownerRef{a, b}, []ownerRef{bUnblocked, c})
	if !reflect.DeepEqual(added, []ownerRef{c}) || !reflect.DeepEqual(removed, []ownerRef{a}) ||
		!reflect.DeepEqual(changed, []ownerRefPair{{old: b, new: bUnblocked}}) {
		t.Errorf("got added %v removed %v changed %v", added, removed, changed)
	}
	added, removed, changed = referencesDiffs([]ownerRef{a}, []ownerRef{a})
	if added != nil || removed != nil || changed != nil {
		t.Errorf("no change: got added %v removed %v changed %v", added, removed, changed)
	}
}

func TestViewReportsBlockingDependents(t *testing.T) {
	g := newGraph(newReferenceCache(10), schemeScope)
	for _, ev := range []*event{addOf(rss, deleting(rs, finalizerDeleteDependents)), addOf(pods, podA), addOf(pods, podB)} {
		g.process(ev)
	}
	v, ok := g.view("rs-uid")
	if !ok {
		t.Fatal("no node rs-uid")
	}
	var blocking []string
	for _, d := range v.blockingDependents() {
		blocking = append(blocking, d.identity.UID)
	}
	if !v.deletingDependents || len(v.dependents) != 2 || !reflect.DeepEqual(blocking, []string{"a-uid"}) {
		t.Errorf("view: deletingDependents %v, %d dependents, blocking %v; want true, 2, [a-uid]", v.deletingDependents, len(v.dependents), blocking)
	}
}

func TestReferenceCacheEvictsLeastRecentlyUsed(t *testing.T) {
	c := newReferenceCache(2)
	ref := func(i int) objectReference { return objectReference{UID: fmt.Sprint(i)} }
	c.add(ref(1))
	c.add(ref(2))
	c.has(ref(1)) // 2 is now the least recently used
	c.add(ref(3))
	if !c.has(ref(1)) || c.has(ref(2)) || !c.has(ref(3)) {
		t.Errorf("cache holds 1:%v 2:%v 3:%v; want true false true", c.has(ref(1)), c.has(ref(2)), c.has(ref(3)))
	}
}

func TestObjectReferenceStringIsUpstreams(t *testing.T) {
	r := objectReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "u", Namespace: "default"}
	if got, want := r.String(), "[apps/v1/ReplicaSet, namespace: default, name: rs, uid: u]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
