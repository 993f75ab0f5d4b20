package garbagecollector

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

type fixture struct {
	cs  *fake.Clientset
	gc  *GarbageCollector
	rec *record.FakeRecorder
	reg *prometheus.Registry
	ctx context.Context
}

// start runs the collector over a fake apiserver holding objs, with its
// informers synced.
func start(t *testing.T, objs ...scheme.Object) *fixture {
	t.Helper()
	cs := fake.NewClientset(objs...)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := informers.NewFactory(cs.Client, informers.Options{Logger: log})
	rec := record.NewFakeRecorder(100)
	reg := prometheus.NewRegistry()
	ctrl, err := New(controllers.Context{
		Client: cs.Client, Informers: f, Logger: log, Registerer: reg,
		Recorder: func(string) record.Recorder { return rec },
		Options:  &controllers.Options{ConcurrentSyncs: map[string]int{Name: 4}},
	})
	if err != nil {
		t.Fatal(err)
	}
	gc := ctrl.(*GarbageCollector)
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx)
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		f.Shutdown()
		cs.Close()
	})
	syncCtx, cancelSync := context.WithTimeout(ctx, 10*time.Second)
	defer cancelSync()
	if !informers.WaitForCacheSync(syncCtx, gc.synced...) {
		t.Fatal("informers did not sync")
	}
	return &fixture{cs: cs, gc: gc, rec: rec, reg: reg, ctx: ctx}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func boolp(b bool) *bool { return &b }

func rsRef(name, uid string, block bool) *metav1.OwnerReference {
	return &metav1.OwnerReference{ApiVersion: "apps/v1", Kind: "ReplicaSet", Name: name, Uid: uid,
		Controller: boolp(true), BlockOwnerDeletion: boolp(block)}
}

func replicaSet(ns, name, uid string) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name, Uid: uid}}
}

func pod(ns, name, uid string, owners ...*metav1.OwnerReference) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name, Uid: uid, OwnerReferences: owners}}
}

var (
	podKind, _ = scheme.ForMessage(&corev1.Pod{})
	rsKind, _  = scheme.ForMessage(&appsv1.ReplicaSet{})
	pvKind, _  = scheme.ForMessage(&corev1.PersistentVolume{})
)

func (f *fixture) get(k *scheme.Kind, ns, name string) (scheme.Object, bool) {
	o, err := f.cs.Tracker().Get(k, ns, name)
	return o, err == nil
}

func (f *fixture) gone(k *scheme.Kind, ns, name string) func() bool {
	return func() bool { _, ok := f.get(k, ns, name); return !ok }
}

func (f *fixture) deleteRS(t *testing.T, name, policy string) {
	t.Helper()
	if _, err := client.For[*appsv1.ReplicaSet](f.cs.Client, "default").Delete(f.ctx, name, client.DeleteOptions{PropagationPolicy: policy}); err != nil {
		t.Fatal(err)
	}
}

func ownerUIDs(o scheme.Object) []string {
	var out []string
	for _, r := range o.GetMetadata().GetOwnerReferences() {
		out = append(out, r.GetUid())
	}
	return out
}

func (f *fixture) deletedNames(resource string) []string {
	var out []string
	for _, a := range f.cs.Actions() {
		if a.Verb == "delete" && a.Resource == resource {
			out = append(out, a.Name)
		}
	}
	return out
}

func TestBackgroundDeletesTheReplicaSetsPods(t *testing.T) {
	f := start(t,
		replicaSet("default", "rs", "rs-uid"),
		pod("default", "rs-1", "p1", rsRef("rs", "rs-uid", true)),
		pod("default", "rs-2", "p2", rsRef("rs", "rs-uid", true)),
		pod("default", "lonely", "p3"),
	)
	f.deleteRS(t, "rs", "Background")
	eventually(t, "the ReplicaSet's pods to be deleted", func() bool {
		return f.gone(podKind, "default", "rs-1")() && f.gone(podKind, "default", "rs-2")()
	})
	if _, ok := f.get(podKind, "default", "lonely"); !ok {
		t.Error("a pod with no owner was deleted")
	}
	if got := f.deletedNames("pods"); slices.Contains(got, "lonely") {
		t.Errorf("pods deleted %v; lonely has no owner", got)
	}
}

func TestDanglingReferenceIsRemovedWhileAnotherOwnerLives(t *testing.T) {
	f := start(t,
		replicaSet("default", "keep", "keep-uid"),
		replicaSet("default", "old", "old-uid"),
		pod("default", "shared", "p1", rsRef("keep", "keep-uid", false), rsRef("old", "old-uid", false)),
	)
	f.deleteRS(t, "old", "Background")
	eventually(t, "the reference to the deleted owner to go", func() bool {
		o, ok := f.get(podKind, "default", "shared")
		return !ok || slices.Equal(ownerUIDs(o), []string{"keep-uid"})
	})
	o, ok := f.get(podKind, "default", "shared")
	if !ok {
		t.Fatal("the pod was deleted although one owner lives")
	}
	if r := o.GetMetadata().GetOwnerReferences()[0]; r.GetName() != "keep" || !r.GetController() {
		t.Errorf("remaining reference %v; want the controller reference to keep", r)
	}
}

func TestForegroundKeepsTheOwnerUntilBlockingDependentsAreGone(t *testing.T) {
	held := pod("default", "held", "p1", rsRef("rs", "rs-uid", true))
	held.Metadata.Finalizers = []string{"example.com/hold"}
	f := start(t,
		replicaSet("default", "rs", "rs-uid"),
		held,
		pod("default", "free", "p2", rsRef("rs", "rs-uid", true)),
	)
	f.deleteRS(t, "rs", "Foreground")
	eventually(t, "the dependents to be deleted", func() bool {
		o, ok := f.get(podKind, "default", "held")
		return f.gone(podKind, "default", "free")() && ok && o.GetMetadata().GetDeletionTimestamp() != nil
	})
	// One blocking dependent is left: the owner keeps its finalizer, and
	// checking it again changes nothing.
	n, ok := f.gc.graph.view("rs-uid")
	if !ok || !n.deletingDependents {
		t.Fatalf("graph node of the ReplicaSet: %+v, %v; want one deleting its dependents", n, ok)
	}
	if err := f.gc.attemptToDeleteItem(f.ctx, n); err != nil {
		t.Fatal(err)
	}
	o, ok := f.get(rsKind, "default", "rs")
	if !ok || !slices.Contains(o.GetMetadata().GetFinalizers(), finalizerDeleteDependents) {
		t.Fatalf("ReplicaSet %v (exists %v); want it kept with its foregroundDeletion finalizer while a blocking pod remains", o, ok)
	}

	// The last blocking dependent goes: the finalizer is removed, and with
	// it the owner.
	if _, err := client.For[*corev1.Pod](f.cs.Client, "default").Patch(f.ctx, "held", "merge", []byte(`{"metadata":{"finalizers":null}}`), ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ReplicaSet to go", f.gone(rsKind, "default", "rs"))
}

func TestOrphanRemovesTheOwnerReferences(t *testing.T) {
	f := start(t,
		replicaSet("default", "rs", "rs-uid"),
		replicaSet("default", "other", "other-uid"),
		pod("default", "rs-1", "p1", rsRef("rs", "rs-uid", true)),
		pod("default", "rs-2", "p2", rsRef("rs", "rs-uid", true), rsRef("other", "other-uid", false)),
	)
	f.deleteRS(t, "rs", "Orphan")
	eventually(t, "the ReplicaSet to go", f.gone(rsKind, "default", "rs"))
	for name, want := range map[string][]string{"rs-1": nil, "rs-2": {"other-uid"}} {
		o, ok := f.get(podKind, "default", name)
		if !ok {
			t.Errorf("pod %s was deleted; orphaned dependents stay", name)
			continue
		}
		if got := ownerUIDs(o); !slices.Equal(got, want) {
			t.Errorf("pod %s owners %v, want %v", name, got, want)
		}
	}
	if got := f.deletedNames("pods"); len(got) != 0 {
		t.Errorf("deleted pods %v; want none", got)
	}
}

func TestDependentOfAnOwnerThatNeverExistedIsDeleted(t *testing.T) {
	f := start(t,
		// The name exists, but as another object: the UID decides.
		replicaSet("default", "rs", "new-uid"),
		pod("default", "ghostly", "p1", rsRef("ghost", "ghost-uid", true)),
		pod("default", "stale", "p2", rsRef("rs", "old-uid", true)),
		pod("default", "owned", "p3", rsRef("rs", "new-uid", true)),
	)
	eventually(t, "the dependents of absent owners to be deleted", func() bool {
		return f.gone(podKind, "default", "ghostly")() && f.gone(podKind, "default", "stale")()
	})
	for k, name := range map[*scheme.Kind]string{podKind: "owned", rsKind: "rs"} {
		if _, ok := f.get(k, "default", name); !ok {
			t.Errorf("%s %s was deleted", k.Kind, name)
		}
	}
}

func waitEvent(t *testing.T, rec *record.FakeRecorder) string {
	t.Helper()
	select {
	case e := <-rec.Events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event recorded")
		return ""
	}
}

func TestOwnerInAnotherNamespaceIsAbsent(t *testing.T) {
	f := start(t,
		replicaSet("other", "rs", "rs-uid"),
		pod("default", "stray", "p1", rsRef("rs", "rs-uid", true)),
	)
	want := `Warning OwnerRefInvalidNamespace ownerRef [apps/v1/ReplicaSet, namespace: default, name: rs, uid: rs-uid] does not exist in namespace "default"`
	if got := waitEvent(t, f.rec); got != want {
		t.Errorf("event %q, want %q", got, want)
	}
	eventually(t, "the pod to be deleted", f.gone(podKind, "default", "stray"))
	if _, ok := f.get(rsKind, "other", "rs"); !ok {
		t.Error("the owner in the other namespace was deleted")
	}
}

func TestClusterScopedDependentOfANamespacedKind(t *testing.T) {
	pv := &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: "pv", Uid: "pv-uid",
		OwnerReferences: []*metav1.OwnerReference{rsRef("rs", "rs-uid", false)}}}
	f := start(t, replicaSet("default", "rs", "rs-uid"), pv)
	want := `Warning OwnerRefInvalidNamespace ownerRef [apps/v1/ReplicaSet, namespace: , name: rs, uid: rs-uid] does not exist in namespace ""`
	if got := waitEvent(t, f.rec); got != want {
		t.Errorf("event %q, want %q", got, want)
	}
	// The reference cannot be resolved: as upstream, the collector leaves
	// the object alone rather than retry forever.
	var n nodeView
	eventually(t, "the PersistentVolume in the graph", func() bool {
		var ok bool
		n, ok = f.gc.graph.view("pv-uid")
		return ok && !n.virtual
	})
	if err := f.gc.attemptToDeleteItem(f.ctx, n); !errors.Is(err, errNamespacedOwnerOfClusterScoped) {
		t.Errorf("attemptToDeleteItem: %v, want %v", err, errNamespacedOwnerOfClusterScoped)
	}
	if _, ok := f.get(pvKind, "", "pv"); !ok {
		t.Error("the PersistentVolume was deleted")
	}
	if got := f.deletedNames("persistentvolumes"); len(got) != 0 {
		t.Errorf("deleted %v", got)
	}
}

func TestNameWorkersAndMetric(t *testing.T) {
	f := start(t)
	if got := f.gc.Name(); got != "garbagecollector" {
		t.Errorf("Name %q", got)
	}
	if f.gc.workers != 4 {
		t.Errorf("workers %d, want the configured 4", f.gc.workers)
	}
	f.gc.syncErrors.Inc()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, want := range []string{"garbagecollector_controller_resources_sync_error_total", "workqueue_adds_total"} {
		if !slices.Contains(names, want) {
			t.Errorf("metrics %s lack %s", strings.Join(names, " "), want)
		}
	}
}

func TestRemoveFinalizerLeavesAnotherObjectOfTheNameAlone(t *testing.T) {
	rs := replicaSet("default", "rs", "new-uid")
	rs.Metadata.Finalizers = []string{finalizerOrphanDependents}
	f := start(t, rs)
	old := objectReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "old-uid", Namespace: "default"}
	if err := f.gc.removeFinalizer(f.ctx, old, finalizerOrphanDependents); err != nil {
		t.Fatal(err)
	}
	o, _ := f.get(rsKind, "default", "rs")
	if !slices.Contains(o.GetMetadata().GetFinalizers(), finalizerOrphanDependents) {
		t.Error("the finalizer of a different object of the same name was removed")
	}
}
