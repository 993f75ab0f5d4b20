package replicaset

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"skiff.dev/client/controller"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

var (
	rsKind, _   = scheme.ForMessage(&appsv1.ReplicaSet{})
	rcKind, _   = scheme.ForMessage(&corev1.ReplicationController{})
	podKind, _  = scheme.ForMessage(&corev1.Pod{})
	webLabels   = map[string]string{"app": "web"}
	templateLbl = map[string]string{"app": "web", "tier": "frontend"}
)

func newRS(name string, replicas int32) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, Generation: 1},
		Spec: &appsv1.ReplicaSetSpec{
			Replicas: proto.Int32(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: webLabels},
			Template: &corev1.PodTemplateSpec{
				Metadata: &metav1.ObjectMeta{Labels: templateLbl, Annotations: map[string]string{"note": "from-template"}},
				Spec:     &corev1.PodSpec{Containers: []*corev1.Container{{Name: "web", Image: "skiff.local/pause:1"}}},
			},
		},
	}
}

func newRC(name string, replicas int32) *corev1.ReplicationController {
	rs := newRS(name, replicas)
	return &corev1.ReplicationController{
		Metadata: rs.Metadata,
		Spec: &corev1.ReplicationControllerSpec{
			Replicas: rs.Spec.Replicas, Selector: webLabels, Template: rs.Spec.Template,
		},
	}
}

// ownedPod is a pod of owner (nil for an orphan) with the template's labels.
func ownedPod(name string, o scheme.Object, kind *scheme.Kind, opts ...podOpt) *corev1.Pod {
	p := testPod(name, opts...)
	p.Metadata.Labels = maps.Clone(templateLbl)
	if o != nil {
		p.Metadata.OwnerReferences = []*metav1.OwnerReference{controller.NewControllerRef(o, kind)}
	}
	return p
}

type fixture struct {
	t   *testing.T
	ctx context.Context
	cs  *fake.Clientset
	c   *Controller
	rec *record.FakeRecorder
}

func newFixture(t *testing.T, rc bool, objs ...scheme.Object) *fixture {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	f := informers.NewFactory(cs.Client, informers.Options{})
	rec := record.NewFakeRecorder(1000)
	cc := controllers.Context{
		Client:     cs.Client,
		Informers:  f,
		Recorder:   func(string) record.Recorder { return rec },
		Registerer: prometheus.NewRegistry(),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Options:    &controllers.Options{},
		Now:        func() time.Time { return now },
	}
	newFn := NewReplicaSet
	if rc {
		newFn = NewReplicationController
	}
	ctrl, err := newFn(cc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); f.Shutdown() })
	f.Start(ctx)
	c := ctrl.(*Controller)
	if !informers.WaitForCacheSync(ctx, c.regs...) {
		t.Fatal("caches did not sync")
	}
	return &fixture{t: t, ctx: ctx, cs: cs, c: c, rec: rec}
}

func (f *fixture) sync(key string) error {
	f.t.Helper()
	return f.c.sync(f.ctx, key)
}

// eventually polls cond until it holds or a deadline passes.
func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// cachedPods waits until the controller's cache holds n active pods.
func (f *fixture) waitCachedPods(n int) {
	f.t.Helper()
	f.eventually(fmt.Sprintf("%d active pods in the cache", n), func() bool {
		k := 0
		for _, p := range f.c.pods.List(nil) {
			if isPodActive(p) {
				k++
			}
		}
		return k == n
	})
}

func (f *fixture) storedPods() []*corev1.Pod {
	var out []*corev1.Pod
	for _, o := range f.cs.Tracker().List(podKind, "default") {
		out = append(out, o.(*corev1.Pod))
	}
	return out
}

func (f *fixture) storedRS(name string) *appsv1.ReplicaSet {
	f.t.Helper()
	o, err := f.cs.Tracker().Get(rsKind, "default", name)
	if err != nil {
		f.t.Fatal(err)
	}
	return o.(*appsv1.ReplicaSet)
}

func (f *fixture) actions(verb, resource, sub string) []fake.Action {
	var out []fake.Action
	for _, a := range f.cs.Actions() {
		if a.Verb == verb && a.Resource == resource && a.Subresource == sub {
			out = append(out, a)
		}
	}
	return out
}

// events drains the recorder.
func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// drainQueue empties the work queue of what the informers put there.
func (f *fixture) drainQueue() {
	for f.c.queue.Len() > 0 {
		k, _ := f.c.queue.Get()
		f.c.queue.Done(k)
	}
}

func (f *fixture) queued() []string {
	var out []string
	for f.c.queue.Len() > 0 {
		k, _ := f.c.queue.Get()
		f.c.queue.Done(k)
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func countPrefix(events []string, prefix string) int {
	n := 0
	for _, e := range events {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

func TestScaleUpCreatesPodsFromTemplate(t *testing.T) {
	rs := newRS("web", 10)
	f := newFixture(t, false, rs)
	var mu sync.Mutex
	inFlight, maxInFlight := 0, 0
	f.cs.PrependReactor("create", "pods", func(fake.Action) (bool, scheme.Object, error) {
		mu.Lock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		mu.Unlock()
		// Let a batch's creates overlap, so that the batch size shows.
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return false, nil, nil
	})

	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	pods := f.storedPods()
	if len(pods) != 10 {
		t.Fatalf("%d pods, want 10", len(pods))
	}
	// Batches of 1, 2, 4, then the remaining 3.
	if maxInFlight > 4 {
		t.Errorf("%d creates in flight at once, want batches of at most 4 for 10 pods", maxInFlight)
	}
	stored := f.storedRS("web")
	for _, p := range pods {
		m := p.Metadata
		if m.GenerateName != "web-" || !strings.HasPrefix(m.Name, "web-") {
			t.Errorf("pod %q generateName %q, want web-", m.Name, m.GenerateName)
		}
		if m.Namespace != "default" || !maps.Equal(m.Labels, templateLbl) || m.Annotations["note"] != "from-template" {
			t.Errorf("pod %q: namespace %q labels %v annotations %v", m.Name, m.Namespace, m.Labels, m.Annotations)
		}
		ref := metav1.GetControllerOf(m)
		if ref == nil || ref.Kind != "ReplicaSet" || ref.ApiVersion != "apps/v1" || ref.Name != "web" ||
			ref.Uid != stored.Metadata.Uid || !ref.GetBlockOwnerDeletion() {
			t.Errorf("pod %q controller ref %v", m.Name, ref)
		}
		if len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Image != "skiff.local/pause:1" {
			t.Errorf("pod %q spec %v", m.Name, p.Spec)
		}
	}
	ev := f.events()
	if n := countPrefix(ev, "Normal SuccessfulCreate Created pod: web-"); n != 10 {
		t.Errorf("%d SuccessfulCreate events, want 10: %v", n, ev)
	}

	// Once the informer has seen them, status counts them.
	f.waitCachedPods(10)
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	st := f.storedRS("web").Status
	if st.GetReplicas() != 10 || st.GetFullyLabeledReplicas() != 10 || st.GetObservedGeneration() != 1 {
		t.Errorf("status %v, want 10 replicas, 10 fully labeled, observedGeneration 1", st)
	}
	if n := len(f.actions("create", "pods", "")); n != 10 {
		t.Errorf("%d creates in all, want 10", n)
	}
}

func TestCreateErrorStopsSlowStartAndSetsReplicaFailure(t *testing.T) {
	f := newFixture(t, false, newRS("web", 10))
	var mu sync.Mutex
	calls := 0
	f.cs.PrependReactor("create", "pods", func(fake.Action) (bool, scheme.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 3 {
			return true, nil, apierrors.NewForbidden("pods", "", "exceeded quota: compute-resources")
		}
		return false, nil, nil
	})

	err := f.sync("default/web")
	if err == nil {
		t.Fatal("sync succeeded, want the create error")
	}
	// Batch 1 (one pod) succeeded; batch 2 (two) had the failure; no batch 3.
	if n := len(f.actions("create", "pods", "")); n != 3 {
		t.Errorf("%d create requests, want 3", n)
	}
	if n := len(f.storedPods()); n != 2 {
		t.Errorf("%d pods, want 2", n)
	}
	cond := getCondition(f.storedRS("web").Status, replicaFailure)
	if cond == nil || cond.Status != "True" || cond.Reason != "FailedCreate" ||
		!strings.Contains(cond.Message, "exceeded quota") {
		t.Errorf("ReplicaFailure condition %v, want True/FailedCreate with the error", cond)
	}
	ev := f.events()
	if n := countPrefix(ev, "Warning FailedCreate Error creating: "); n != 1 {
		t.Errorf("events %v, want one FailedCreate", ev)
	}
	// Only the two created pods are expected: once seen, the next sync runs.
	key := "default/web"
	f.eventually("expectations satisfied by the two created pods", func() bool { return f.c.exp.SatisfiedExpectations(key) })

	// The quota frees up: the next sync creates the rest and clears the
	// condition.
	f.waitCachedPods(2)
	mu.Lock()
	calls = 100
	mu.Unlock()
	if err := f.sync(key); err != nil {
		t.Fatal(err)
	}
	if n := len(f.storedPods()); n != 10 {
		t.Errorf("%d pods, want 10", n)
	}
	if c := getCondition(f.storedRS("web").Status, replicaFailure); c != nil {
		t.Errorf("ReplicaFailure %v still set after a successful sync", c)
	}
}

func TestExpectationsPreventDoubleCreation(t *testing.T) {
	f := newFixture(t, false, newRS("web", 3))
	// Creates succeed but the pods never reach the informer, as when the
	// watch lags behind the writes.
	var mu sync.Mutex
	var made []*corev1.Pod
	f.cs.PrependReactor("create", "pods", func(a fake.Action) (bool, scheme.Object, error) {
		p := proto.Clone(a.Object).(*corev1.Pod)
		mu.Lock()
		defer mu.Unlock()
		p.Metadata.Name = fmt.Sprintf("%s%d", p.Metadata.GenerateName, len(made))
		p.Metadata.Uid = "uid-" + p.Metadata.Name
		made = append(made, p)
		return true, p, nil
	})

	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	if n := len(f.actions("create", "pods", "")); n != 3 {
		t.Fatalf("%d creates after two syncs, want 3: the second must wait for the first's pods", n)
	}
	// The informer observes two of them: still waiting for the third.
	f.c.addPod(made[0])
	f.c.addPod(made[1])
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	if n := len(f.actions("create", "pods", "")); n != 3 {
		t.Fatalf("%d creates, want still 3 while one creation is unobserved", n)
	}
	// All observed: the cache still holds none, so the controller creates
	// again, as upstream's would.
	f.c.addPod(made[2])
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	if n := len(f.actions("create", "pods", "")); n != 6 {
		t.Fatalf("%d creates, want 6 once expectations are met", n)
	}
}

func TestScaleDownDeletesByRank(t *testing.T) {
	rs := newRS("web", 2)
	ready := readySince(time.Hour)
	objs := []scheme.Object{rs,
		ownedPod("ready-old", rs, rsKind, ready, onNode("n1"), created(48*time.Hour)),
		ownedPod("ready-crowded", rs, rsKind, ready, onNode("n2"), created(48*time.Hour)),
		ownedPod("ready-crowded-2", rs, rsKind, ready, onNode("n2"), created(48*time.Hour)),
		// Not on n1: n1 must hold fewer active pods than n2, or the two
		// nodes tie and either ready pod may go.
		ownedPod("not-ready", rs, rsKind, notReady(), onNode("n3")),
		ownedPod("pending", rs, rsKind, phase("Pending"), onNode("n3")),
	}
	f := newFixture(t, false, objs...)
	// One chosen pod is deleted by someone else meanwhile: not an error.
	f.cs.PrependReactor("delete", "pods", func(a fake.Action) (bool, scheme.Object, error) {
		if a.Name == "pending" {
			return true, nil, apierrors.NewNotFound("pods", a.Name)
		}
		return false, nil, nil
	})

	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	var deleted []string
	for _, a := range f.actions("delete", "pods", "") {
		deleted = append(deleted, a.Name)
	}
	slices.Sort(deleted)
	// Pending first, then not ready, then a ready pod on the crowded node.
	want := []string{"not-ready", "pending", "ready-crowded"}
	if len(deleted) == 3 && strings.HasPrefix(deleted[2], "ready-crowded") {
		deleted[2] = "ready-crowded"
	}
	if !slices.Equal(deleted, want) {
		t.Errorf("deleted %v, want %v (either ready-crowded pod)", deleted, want)
	}
	ev := f.events()
	if n := countPrefix(ev, "Normal SuccessfulDelete Deleted pod: "); n != 2 {
		t.Errorf("events %v, want two SuccessfulDelete", ev)
	}
	if countPrefix(ev, "Warning") != 0 {
		t.Errorf("events %v: the already-gone pod is no failure", ev)
	}
	// The scheduled pods are deleted gracefully; their deletionTimestamp
	// satisfies the expectations, and the next sync deletes nothing more.
	f.eventually("deletions observed", func() bool { return f.c.exp.SatisfiedExpectations("default/web") })
	f.cs.ClearActions()
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	if n := len(f.actions("delete", "pods", "")); n != 1 {
		// "pending" is still there (the reactor refused it) and is the one
		// excess pod left.
		t.Errorf("%d deletes on the second sync, want 1 (the pod the first could not delete)", n)
	}
}

func TestAdoptsOrphan(t *testing.T) {
	rs := newRS("web", 1)
	orphan := ownedPod("orphan", nil, nil, readySince(time.Hour))
	f := newFixture(t, false, rs, orphan)
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	o, err := f.cs.Tracker().Get(podKind, "default", "orphan")
	if err != nil {
		t.Fatal(err)
	}
	if !controller.IsControlledBy(o, f.storedRS("web")) {
		t.Errorf("orphan's owner references %v, want the ReplicaSet as controller", o.GetMetadata().GetOwnerReferences())
	}
	if n := len(f.actions("create", "pods", "")); n != 0 {
		t.Errorf("%d pods created, want none: the adopted pod is the replica", n)
	}
	// canAdopt read the ReplicaSet afresh before adopting.
	if n := len(f.actions("get", "replicasets", "")); n != 1 {
		t.Errorf("%d gets of the ReplicaSet, want 1 (the adoption recheck)", n)
	}
	if st := f.storedRS("web").Status; st.GetReplicas() != 1 || st.GetReadyReplicas() != 1 {
		t.Errorf("status %v, want 1 replica, 1 ready", st)
	}
}

func TestDoesNotAdoptForADeletingOwner(t *testing.T) {
	rs := newRS("web", 1)
	f := newFixture(t, false, rs, ownedPod("orphan", nil, nil))
	// The cache has the live ReplicaSet; the apiserver's is being deleted.
	f.cs.PrependReactor("get", "replicasets", func(fake.Action) (bool, scheme.Object, error) {
		fresh := proto.Clone(f.storedRS("web")).(*appsv1.ReplicaSet)
		fresh.Metadata.DeletionTimestamp = metav1.NewTime(now)
		return true, fresh, nil
	})
	err := f.sync("default/web")
	if err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("sync error %v, want the adoption refused", err)
	}
	p, _ := f.cs.Tracker().Get(podKind, "default", "orphan")
	if len(p.GetMetadata().GetOwnerReferences()) != 0 {
		t.Errorf("pod adopted by a deleting ReplicaSet: %v", p.GetMetadata().GetOwnerReferences())
	}
	if n := len(f.actions("create", "pods", "")); n != 0 {
		t.Errorf("%d pods created after a failed claim, want none", n)
	}
}

func TestReleasesPodWhoseLabelsChanged(t *testing.T) {
	rs := newRS("web", 1)
	moved := ownedPod("moved", rs, rsKind, readySince(time.Hour))
	moved.Metadata.Labels = map[string]string{"app": "debug"}
	f := newFixture(t, false, rs, moved)
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	p, _ := f.cs.Tracker().Get(podKind, "default", "moved")
	if len(p.GetMetadata().GetOwnerReferences()) != 0 {
		t.Errorf("released pod still has owner references %v", p.GetMetadata().GetOwnerReferences())
	}
	if n := len(f.actions("create", "pods", "")); n != 1 {
		t.Errorf("%d pods created, want 1 replacement", n)
	}
}

func TestIgnoresPodOwnedByAnotherReplicaSet(t *testing.T) {
	rs, other := newRS("web", 1), newRS("other", 0)
	other.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}}
	theirs := ownedPod("theirs", other, rsKind, readySince(time.Hour))
	f := newFixture(t, false, rs, other, theirs)
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	p, _ := f.cs.Tracker().Get(podKind, "default", "theirs")
	if ref := metav1.GetControllerOf(p.GetMetadata()); ref == nil || ref.Name != "other" {
		t.Errorf("pod's controller %v, want still other", ref)
	}
	if n := len(f.actions("create", "pods", "")); n != 1 {
		t.Errorf("%d pods created, want 1: another's pod is no replica", n)
	}
	if n := len(f.actions("patch", "pods", "")); n != 0 {
		t.Errorf("%d pod patches, want none", n)
	}
}

func TestStatusCounters(t *testing.T) {
	rs := newRS("web", 4)
	rs.Spec.MinReadySeconds = 10
	partial := ownedPod("partial", rs, rsKind, readySince(time.Hour))
	partial.Metadata.Labels = webLabels // selected, but not fully labeled
	objs := []scheme.Object{rs,
		ownedPod("available", rs, rsKind, readySince(time.Minute)),
		ownedPod("ready-not-available", rs, rsKind, readySince(4*time.Second)),
		ownedPod("not-ready", rs, rsKind, notReady()),
		partial,
		ownedPod("terminating", rs, rsKind, readySince(time.Hour), func(p *corev1.Pod) {
			p.Metadata.DeletionTimestamp = metav1.NewTime(now)
			p.Metadata.Finalizers = []string{"example.com/hold"}
		}),
		ownedPod("succeeded", rs, rsKind, phase("Succeeded")),
	}
	f := newFixture(t, false, objs...)
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	st := f.storedRS("web").Status
	want := &appsv1.ReplicaSetStatus{Replicas: 4, FullyLabeledReplicas: 3, ReadyReplicas: 3, AvailableReplicas: 2,
		TerminatingReplicas: proto.Int32(1), ObservedGeneration: 1}
	if !proto.Equal(st, want) {
		t.Errorf("status %v, want %v", st, want)
	}
	if n := len(f.actions("create", "pods", "")) + len(f.actions("delete", "pods", "")); n != 0 {
		t.Errorf("%d pod writes, want none at the desired count", n)
	}
	// Nothing changed: no second status write.
	f.cs.ClearActions()
	f.eventually("the cache to see the status", func() bool {
		o, _ := f.c.w.get("default", "web")
		return o.rs.GetStatus().GetReplicas() == 4
	})
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	if n := len(f.actions("update", "replicasets", "status")); n != 0 {
		t.Errorf("%d status updates for an unchanged status, want 0", n)
	}
	// The ready pod becomes available 6s from now.
	if d, ok := nextAvailabilityCheck(f.c.pods.List(nil), 10, now); !ok || d != 6*time.Second {
		t.Errorf("next availability check in %v (%v), want 6s", d, ok)
	}
}

func TestStatusUpdateRetriesOnConflict(t *testing.T) {
	f := newFixture(t, false, newRS("web", 0))
	conflicts := 0
	f.cs.PrependReactor("update", "replicasets", func(a fake.Action) (bool, scheme.Object, error) {
		if a.Subresource == "status" && conflicts == 0 {
			conflicts++
			return true, nil, apierrors.NewConflict("replicasets.apps", "web", "the object has been modified")
		}
		return false, nil, nil
	})
	if err := f.sync("default/web"); err != nil {
		t.Fatal(err)
	}
	if got := f.storedRS("web").Status.GetObservedGeneration(); got != 1 {
		t.Errorf("observedGeneration %d after a retried update, want 1", got)
	}
	if n := len(f.actions("update", "replicasets", "status")); n != 2 {
		t.Errorf("%d status updates, want 2 (a conflict, then success)", n)
	}
}

func TestPodEventsEnqueueOwners(t *testing.T) {
	web, api := newRS("web", 1), newRS("api", 1)
	api.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}
	f := newFixture(t, false, web, api)
	f.drainQueue()

	orphan := ownedPod("p", nil, nil)
	f.c.addPod(orphan)
	if got := f.queued(); !slices.Equal(got, []string{"default/web"}) {
		t.Errorf("orphan add queued %v, want the matching ReplicaSet", got)
	}

	// Labels move the orphan from web's selector to api's: both look.
	moved := proto.Clone(orphan).(*corev1.Pod)
	moved.Metadata.Labels = map[string]string{"app": "api"}
	moved.Metadata.ResourceVersion = "2"
	orphan.Metadata.ResourceVersion = "1"
	f.c.updatePod(orphan, moved)
	if got := f.queued(); !slices.Equal(got, []string{"default/api"}) {
		t.Errorf("label change queued %v, want the newly matching ReplicaSet", got)
	}

	// The controller reference changes from web to api: both sync.
	owned := ownedPod("q", web, rsKind)
	owned.Metadata.ResourceVersion = "1"
	reowned := proto.Clone(owned).(*corev1.Pod)
	reowned.Metadata.OwnerReferences = []*metav1.OwnerReference{controller.NewControllerRef(api, rsKind)}
	reowned.Metadata.ResourceVersion = "2"
	f.c.updatePod(owned, reowned)
	if got := f.queued(); !slices.Equal(got, []string{"default/api", "default/web"}) {
		t.Errorf("controller change queued %v, want both ReplicaSets", got)
	}

	// A resync (same resourceVersion) does nothing.
	f.c.updatePod(owned, owned)
	if got := f.queued(); len(got) != 0 {
		t.Errorf("resync queued %v, want nothing", got)
	}

	// A reference to an RS of the same name but another UID is not ours.
	stale := ownedPod("r", web, rsKind)
	stale.Metadata.OwnerReferences[0].Uid = "someone-else"
	f.c.addPod(stale)
	if got := f.queued(); len(got) != 0 {
		t.Errorf("pod of a stale owner queued %v, want nothing", got)
	}

	// A graceful deletion is observed as a deletion.
	f.c.exp.ExpectDeletions("default/web", []string{"default/q"})
	deleting := proto.Clone(owned).(*corev1.Pod)
	deleting.Metadata.DeletionTimestamp = metav1.NewTime(now)
	deleting.Metadata.ResourceVersion = "3"
	f.c.updatePod(owned, deleting)
	if !f.c.exp.SatisfiedExpectations("default/web") {
		t.Error("deletionTimestamp not observed as the expected deletion")
	}
	if got := f.queued(); !slices.Equal(got, []string{"default/web"}) {
		t.Errorf("graceful deletion queued %v, want the owner", got)
	}
}

func TestReplicationController(t *testing.T) {
	rc := newRC("legacy", 2)
	orphan := ownedPod("orphan", nil, nil, readySince(time.Hour))
	f := newFixture(t, true, rc, orphan)
	if f.c.Name() != "replicationcontroller" {
		t.Errorf("Name() = %q", f.c.Name())
	}
	if err := f.sync("default/legacy"); err != nil {
		t.Fatal(err)
	}
	stored, _ := f.cs.Tracker().Get(rcKind, "default", "legacy")
	pods := f.storedPods()
	if len(pods) != 2 {
		t.Fatalf("%d pods, want 2 (the adopted orphan and one new)", len(pods))
	}
	for _, p := range pods {
		ref := metav1.GetControllerOf(p.Metadata)
		if ref == nil || ref.Kind != "ReplicationController" || ref.ApiVersion != "v1" || ref.Uid != stored.GetMetadata().GetUid() {
			t.Errorf("pod %q controller ref %v, want the RC", p.Metadata.Name, ref)
		}
	}
	ev := f.events()
	if n := countPrefix(ev, "Normal SuccessfulCreate Created pod: legacy-"); n != 1 {
		t.Errorf("events %v, want one SuccessfulCreate", ev)
	}

	// Scale down to 1: the new, not yet ready pod goes.
	f.waitCachedPods(2)
	f.eventually("creation observed", func() bool { return f.c.exp.SatisfiedExpectations("default/legacy") })
	cur := proto.Clone(stored).(*corev1.ReplicationController)
	cur.Spec.Replicas = proto.Int32(1)
	if _, err := f.cs.Client.Resource(rcKind, "default").Update(f.ctx, cur, false); err != nil {
		t.Fatal(err)
	}
	f.eventually("the cache to see the new replicas", func() bool {
		o, _ := f.c.w.get("default", "legacy")
		return replicas(o.rs) == 1
	})
	if err := f.sync("default/legacy"); err != nil {
		t.Fatal(err)
	}
	dels := f.actions("delete", "pods", "")
	if len(dels) != 1 || dels[0].Name == "orphan" {
		t.Errorf("deletes %v, want the new pod, not the ready orphan", dels)
	}
	// Status follows once the informer has seen the deletion.
	f.waitCachedPods(1)
	if err := f.sync("default/legacy"); err != nil {
		t.Fatal(err)
	}
	rcNow, _ := f.cs.Tracker().Get(rcKind, "default", "legacy")
	st := rcNow.(*corev1.ReplicationController).Status
	if st.GetReplicas() != 1 || st.GetReadyReplicas() != 1 || st.GetObservedGeneration() != 2 {
		t.Errorf("RC status %v, want 1 replica, 1 ready, observedGeneration 2", st)
	}
}

func TestRCViewAsReplicaSet(t *testing.T) {
	rc := newRC("legacy", 3)
	rc.Status = &corev1.ReplicationControllerStatus{Replicas: 2, ObservedGeneration: 1,
		Conditions: []*corev1.ReplicationControllerCondition{{Type: replicaFailure, Status: "True", Reason: "FailedCreate"}}}
	rs := rcAsReplicaSet(rc)
	sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil || sel.String() != "app=web" {
		t.Errorf("selector %v (%v), want app=web", sel, err)
	}
	if replicas(rs) != 3 || rs.Status.Replicas != 2 || getCondition(rs.Status, replicaFailure).GetReason() != "FailedCreate" {
		t.Errorf("view %v", rs)
	}
	st := calculateStatus(rs, nil, nil, false, nil, now)
	back := rcWithStatus(rc, st)
	if back.Status.Replicas != 0 || len(back.Status.Conditions) != 0 || rc.Status.Replicas != 2 {
		t.Errorf("status back on the RC %v (original %v)", back.Status, rc.Status)
	}
}

// TestBothControllersShareOneProcess builds them as the manager does: one
// factory, one registry.
func TestBothControllersShareOneProcess(t *testing.T) {
	cs := fake.NewClientset()
	t.Cleanup(cs.Close)
	cc := controllers.Context{
		Client:     cs.Client,
		Informers:  informers.NewFactory(cs.Client, informers.Options{}),
		Registerer: prometheus.NewRegistry(),
		Options:    &controllers.Options{ConcurrentSyncs: map[string]int{"replicationcontroller": 2}},
	}
	rs, err := NewReplicaSet(cc)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := NewReplicationController(cc)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Name() != "replicaset" || rc.Name() != "replicationcontroller" {
		t.Errorf("names %q, %q", rs.Name(), rc.Name())
	}
	if w := rs.(*Controller).workers; w != 5 {
		t.Errorf("replicaset workers %d, want the default 5", w)
	}
	if w := rc.(*Controller).workers; w != 2 {
		t.Errorf("replicationcontroller workers %d, want 2 from the options", w)
	}
}

func TestReplicaFailureConditionKeepsItsTransitionTime(t *testing.T) {
	rs := newRS("web", 3)
	since := metav1.NewTime(now.Add(-time.Hour))
	rs.Status = &appsv1.ReplicaSetStatus{Conditions: []*appsv1.ReplicaSetCondition{
		{Type: replicaFailure, Status: "True", Reason: "FailedCreate", Message: "old", LastTransitionTime: since}}}
	st := calculateStatus(rs, nil, nil, true, fmt.Errorf("still failing"), now)
	if c := getCondition(st, replicaFailure); c == nil || !proto.Equal(c.LastTransitionTime, since) || c.Message != "old" {
		t.Errorf("condition %v, want the existing one kept", c)
	}
	if st.GetTerminatingReplicas() != 0 || st.TerminatingReplicas == nil {
		t.Errorf("terminatingReplicas %v, want 0 set", st.TerminatingReplicas)
	}
	if rs.Status.Conditions[0].Message != "old" || len(rs.Status.Conditions) != 1 {
		t.Error("calculateStatus modified its input")
	}
	cleared := calculateStatus(rs, nil, nil, true, nil, now)
	if len(cleared.Conditions) != 0 {
		t.Errorf("conditions %v after success, want none", cleared.Conditions)
	}
}

// TestRunConverges drives the controller through its queue and workers.
func TestRunConverges(t *testing.T) {
	f := newFixture(t, false, newRS("web", 3))
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- f.c.Run(ctx) }()
	f.eventually("3 pods and a status that counts them", func() bool {
		return len(f.storedPods()) == 3 && f.storedRS("web").GetStatus().GetReplicas() == 3
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if n := len(f.actions("create", "pods", "")); n != 3 {
		t.Errorf("%d creates, want exactly 3", n)
	}
}
