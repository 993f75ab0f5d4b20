package statefulset

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	"skiff.dev/controller-manager/internal/controllers/history"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

var crKind, _ = scheme.ForMessage(&appsv1.ControllerRevision{})

type fixture struct {
	t   *testing.T
	ctx context.Context
	cs  *fake.Clientset
	c   *Controller
	now time.Time
}

func newFixture(t *testing.T, objs ...scheme.Object) *fixture {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	cc, _ := controllertest.Context(cs, controllers.Options{})
	f := &fixture{t: t, cs: cs, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cc.Now = func() time.Time { return f.now }
	f.c = newController(cc)
	ctx, cancel := context.WithCancel(context.Background())
	f.ctx = ctx
	cc.Informers.Start(ctx)
	t.Cleanup(func() { cancel(); f.c.queue.ShutDown(); cc.Informers.Shutdown() })
	if !informers.WaitForCacheSync(ctx, f.c.synced...) {
		t.Fatal("caches did not sync")
	}
	return f
}

func names[T scheme.Object](objs []T) string {
	m := map[string]string{}
	for _, o := range objs {
		m[o.GetMetadata().GetName()] = o.GetMetadata().GetResourceVersion()
	}
	return fmt.Sprint(m)
}

func (f *fixture) waitForCaches() {
	f.t.Helper()
	controllertest.Eventually(f.t, func() (bool, string) {
		for _, k := range []*scheme.Kind{setKind, podKind, pvcKind, crKind} {
			var got string
			switch k {
			case setKind:
				got = names(f.c.setLister.List(labels.Everything()))
			case podKind:
				got = names(f.c.podLister.List(labels.Everything()))
			case pvcKind:
				got = names(f.c.pvcLister.List(labels.Everything()))
			default:
				got = names(f.c.crLister.List(labels.Everything()))
			}
			if want := names(f.cs.Tracker().List(k, "")); got != want {
				return false, fmt.Sprintf("%s cache %s, tracker %s", k.Kind, got, want)
			}
		}
		return true, ""
	})
}

func (f *fixture) sync() {
	f.t.Helper()
	f.waitForCaches()
	if err := f.c.reconcile(f.ctx, "default/web"); err != nil {
		f.t.Fatalf("reconcile: %v", err)
	}
	f.waitForCaches()
}

func (f *fixture) set() *appsv1.StatefulSet {
	o, err := f.cs.Tracker().Get(setKind, "default", "web")
	if err != nil {
		f.t.Fatal(err)
	}
	return o.(*appsv1.StatefulSet)
}

func (f *fixture) pods() map[string]*corev1.Pod {
	out := map[string]*corev1.Pod{}
	for _, o := range f.cs.Tracker().List(podKind, "default") {
		out[o.GetMetadata().GetName()] = o.(*corev1.Pod)
	}
	return out
}

// live are the pods not being deleted, sorted by name.
func (f *fixture) live() []string {
	var out []string
	for n, p := range f.pods() {
		if p.Metadata.DeletionTimestamp == nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func (f *fixture) claims() map[string]*corev1.PersistentVolumeClaim {
	out := map[string]*corev1.PersistentVolumeClaim{}
	for _, o := range f.cs.Tracker().List(pvcKind, "default") {
		out[o.GetMetadata().GetName()] = o.(*corev1.PersistentVolumeClaim)
	}
	return out
}

// ready plays scheduler and kubelet for one pod.
func (f *fixture) ready(name string) {
	f.t.Helper()
	p := f.pods()[name]
	if p == nil {
		f.t.Fatalf("no pod %s", name)
	}
	p.Spec.NodeName = "n1"
	p.Status = &corev1.PodStatus{Phase: "Running", Conditions: []*corev1.PodCondition{{Type: "Ready", Status: "True", LastTransitionTime: metav1.NewTime(f.now)}}}
	if err := f.cs.Tracker().Add(p); err != nil {
		f.t.Fatal(err)
	}
}

// gone finishes the deletion of every pod being deleted.
func (f *fixture) gone() {
	f.t.Helper()
	for n, p := range f.pods() {
		if p.Metadata.DeletionTimestamp != nil {
			if _, err := client.For[*corev1.Pod](f.cs.Client, "default").Delete(f.ctx, n, client.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
				f.t.Fatal(err)
			}
		}
	}
}

func (f *fixture) update(change func(*appsv1.StatefulSet)) {
	f.t.Helper()
	s := f.set()
	change(s)
	if _, err := client.For[*appsv1.StatefulSet](f.cs.Client, "default").Update(f.ctx, s); err != nil {
		f.t.Fatal(err)
	}
}

func newSet(replicas int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "default", Uid: "uid-web", Generation: 1},
		Spec: &appsv1.StatefulSetSpec{
			Replicas:    new(replicas),
			ServiceName: "nginx",
			Selector:    &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: &corev1.PodTemplateSpec{
				Metadata: &metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:     &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "img:1"}}},
			},
			VolumeClaimTemplates: []*corev1.PersistentVolumeClaim{{Metadata: &metav1.ObjectMeta{Name: "data"},
				Spec: &corev1.PersistentVolumeClaimSpec{AccessModes: []string{"ReadWriteOnce"}}}},
		},
	}
}

func TestOrderedReadyCreatesInOrderWithIdentityAndClaims(t *testing.T) {
	f := newFixture(t, newSet(3))
	f.sync()
	if got := fmt.Sprint(f.live()); got != "[web-0]" {
		t.Fatalf("pods = %s, want only web-0", got)
	}
	// web-0 not ready: web-1 waits.
	f.sync()
	if got := fmt.Sprint(f.live()); got != "[web-0]" {
		t.Fatalf("web-1 was created before web-0 was Running and Ready: %s", got)
	}
	p := f.pods()["web-0"]
	if p.Spec.Hostname != "web-0" || p.Spec.Subdomain != "nginx" || p.Metadata.Labels[podNameLabel] != "web-0" || p.Metadata.Labels[podIndexLabel] != "0" {
		t.Errorf("identity: hostname %q subdomain %q labels %v", p.Spec.Hostname, p.Spec.Subdomain, p.Metadata.Labels)
	}
	if len(p.Spec.Volumes) != 1 || p.Spec.Volumes[0].Name != "data" || p.Spec.Volumes[0].VolumeSource.PersistentVolumeClaim.ClaimName != "data-web-0" {
		t.Errorf("volumes = %v", p.Spec.Volumes)
	}
	c := f.claims()["data-web-0"]
	if c == nil || c.Metadata.Labels["app"] != "web" || len(c.Metadata.OwnerReferences) != 0 {
		t.Fatalf("claim data-web-0 = %v (want it, labelled, with no owner under Retain)", c)
	}
	f.ready("web-0")
	f.sync()
	if got := fmt.Sprint(f.live()); got != "[web-0 web-1]" {
		t.Fatalf("pods = %s", got)
	}
	f.ready("web-1")
	f.sync()
	f.ready("web-2")
	f.sync()
	st := f.set().Status
	if st.Replicas != 3 || st.ReadyReplicas != 3 || st.AvailableReplicas != 3 || st.UpdatedReplicas != 3 || st.CurrentReplicas != 3 ||
		st.CurrentRevision == "" || st.CurrentRevision != st.UpdateRevision || st.ObservedGeneration != 1 {
		t.Errorf("status = %v", st)
	}
	// A pod that dies is recreated under the same name on the same claim.
	uid := f.pods()["web-1"].Metadata.Uid
	if _, err := client.For[*corev1.Pod](f.cs.Client, "default").Delete(f.ctx, "web-1", client.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
	f.sync()
	if p := f.pods()["web-1"]; p == nil || p.Metadata.Uid == uid || p.Spec.Volumes[0].VolumeSource.PersistentVolumeClaim.ClaimName != "data-web-1" {
		t.Errorf("web-1 not recreated on its claim: %v", p)
	}
	if len(f.claims()) != 3 {
		t.Errorf("claims = %d, want 3 kept", len(f.claims()))
	}
}

func TestParallelAndOrdinalsStart(t *testing.T) {
	s := newSet(3)
	s.Spec.PodManagementPolicy = "Parallel"
	s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 5}
	f := newFixture(t, s)
	f.sync()
	if got := fmt.Sprint(f.live()); got != "[web-5 web-6 web-7]" {
		t.Fatalf("pods = %s, want web-5..7 at once", got)
	}
}

func TestScaleDownFromHighestAndRetention(t *testing.T) {
	s := newSet(3)
	s.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenDeleted: "Retain", WhenScaled: "Delete"}
	f := newFixture(t, s)
	for _, n := range []string{"web-0", "web-1", "web-2"} {
		f.sync()
		f.ready(n)
	}
	f.sync()
	f.update(func(s *appsv1.StatefulSet) { s.Spec.Replicas = new(int32(1)) })
	f.sync()
	if got := fmt.Sprint(f.live()); got != "[web-0 web-1]" {
		t.Fatalf("after one step: %s, want web-2 gone first", got)
	}
	// The condemned claim is owned by its pod, for the garbage collector.
	for _, n := range []string{"data-web-1", "data-web-2"} {
		c := f.claims()[n]
		if len(c.Metadata.OwnerReferences) != 1 || c.Metadata.OwnerReferences[0].Kind != "Pod" {
			t.Errorf("claim %s owners = %v, want its pod", n, c.Metadata.OwnerReferences)
		}
	}
	if c := f.claims()["data-web-0"]; len(c.Metadata.OwnerReferences) != 0 {
		t.Errorf("kept claim data-web-0 has owners %v", c.Metadata.OwnerReferences)
	}
	// OrderedReady waits for web-2 to be gone before removing web-1.
	f.sync()
	if got := fmt.Sprint(f.live()); got != "[web-0 web-1]" {
		t.Fatalf("web-1 removed while web-2 terminates: %s", got)
	}
	f.gone()
	f.sync()
	if got := fmt.Sprint(f.live()); got != "[web-0]" {
		t.Fatalf("after the second step: %s", got)
	}
}

func TestWhenDeletedOwnsClaimsBySet(t *testing.T) {
	s := newSet(1)
	s.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenDeleted: "Delete", WhenScaled: "Retain"}
	f := newFixture(t, s)
	f.sync()
	c := f.claims()["data-web-0"]
	if len(c.Metadata.OwnerReferences) != 1 || c.Metadata.OwnerReferences[0].Uid != "uid-web" || c.Metadata.OwnerReferences[0].GetController() {
		t.Errorf("owners = %v, want the set, not as controller", c.Metadata.OwnerReferences)
	}
}

func TestRollingUpdateWithPartition(t *testing.T) {
	s := newSet(3)
	s.Spec.UpdateStrategy = &appsv1.StatefulSetUpdateStrategy{Type: "RollingUpdate", RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: new(int32(1))}}
	f := newFixture(t, s)
	for _, n := range []string{"web-0", "web-1", "web-2"} {
		f.sync()
		f.ready(n)
	}
	f.sync()
	oldRev := f.set().Status.CurrentRevision
	f.update(func(s *appsv1.StatefulSet) { s.Spec.Template.Spec.Containers[0].Image = "img:2" })
	for range 8 {
		f.sync()
		f.gone()
		for _, n := range f.live() {
			if !isRunningAndReady(f.pods()[n]) {
				f.ready(n)
			}
		}
	}
	f.sync()
	st := f.set().Status
	if st.UpdateRevision == oldRev || st.CurrentRevision != oldRev {
		t.Fatalf("revisions current %s update %s (old %s)", st.CurrentRevision, st.UpdateRevision, oldRev)
	}
	revs := map[string]string{}
	for n, p := range f.pods() {
		revs[n] = podRevision(p)
		if n != "web-0" && p.Spec.Containers[0].Image != "img:2" {
			t.Errorf("%s image %s, want img:2", n, p.Spec.Containers[0].Image)
		}
	}
	if revs["web-0"] != oldRev || revs["web-1"] != st.UpdateRevision || revs["web-2"] != st.UpdateRevision {
		t.Errorf("pod revisions = %v: want web-0 below the partition on %s", revs, oldRev)
	}
	if st.UpdatedReplicas != 2 || st.CurrentReplicas != 1 {
		t.Errorf("updated %d current %d, want 2 and 1", st.UpdatedReplicas, st.CurrentReplicas)
	}
	// Partition 0 finishes the rollout; the update revision becomes current.
	f.update(func(s *appsv1.StatefulSet) { s.Spec.UpdateStrategy.RollingUpdate.Partition = new(int32(0)) })
	for range 4 {
		f.sync()
		f.gone()
		for _, n := range f.live() {
			if !isRunningAndReady(f.pods()[n]) {
				f.ready(n)
			}
		}
	}
	f.sync()
	if st := f.set().Status; st.CurrentRevision != st.UpdateRevision || st.CurrentReplicas != 3 {
		t.Errorf("status after full rollout = %v", st)
	}
}

func TestRevisionHashing(t *testing.T) {
	s := newSet(1)
	a, _ := history.TemplatePatch(s.Spec.Template)
	b, _ := history.TemplatePatch(s.Spec.Template)
	if string(a) != string(b) {
		t.Fatal("the same template gives different revision data")
	}
	r := &appsv1.ControllerRevision{Data: &metav1.RawExtension{Raw: a}}
	if history.HashControllerRevision(r, nil) == history.HashControllerRevision(r, new(int32(1))) {
		t.Error("the collision count does not change the hash")
	}
	back, err := history.TemplateFromPatch(a)
	if err != nil || back.Spec.Containers[0].Image != "img:1" || back.Metadata.Labels["app"] != "web" {
		t.Errorf("round trip = %v, %v", back, err)
	}
}
