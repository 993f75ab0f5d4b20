package deployment

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

var (
	rsKind, _  = scheme.ForMessage(&appsv1.ReplicaSet{})
	podKind, _ = scheme.ForMessage(&corev1.Pod{})
)

// fixture is the controller over a fake apiserver whose informers run; the
// test calls reconcile itself, once the caches show every write so far.
type fixture struct {
	t   *testing.T
	ctx context.Context
	cs  *fake.Clientset
	c   *Controller
	rec *record.FakeRecorder
	// now is the controller's clock; only the test goroutine reads it.
	now time.Time
}

func newFixture(t *testing.T, objs ...scheme.Object) *fixture {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	cc, rec := controllertest.Context(cs, controllers.Options{})
	f := &fixture{t: t, cs: cs, rec: rec, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cc.Now = func() time.Time { return f.now }
	f.c = newController(cc)
	ctx, cancel := context.WithCancel(context.Background())
	f.ctx = ctx
	cc.Informers.Start(ctx)
	t.Cleanup(func() {
		cancel()
		f.c.queue.ShutDown()
		cc.Informers.Shutdown()
	})
	if !informers.WaitForCacheSync(ctx, f.c.synced...) {
		t.Fatal("caches did not sync")
	}
	return f
}

// waitForCaches waits until the listers hold exactly what the tracker does.
func (f *fixture) waitForCaches() {
	f.t.Helper()
	controllertest.Eventually(f.t, func() (bool, string) {
		for _, k := range []*scheme.Kind{deploymentKind, rsKind, podKind} {
			want := map[string]string{}
			for _, o := range f.cs.Tracker().List(k, "") {
				want[o.GetMetadata().GetName()] = o.GetMetadata().GetResourceVersion()
			}
			got := map[string]string{}
			var objs []scheme.Object
			switch k {
			case deploymentKind:
				for _, o := range f.c.dLister.List(labels.Everything()) {
					objs = append(objs, o)
				}
			case rsKind:
				for _, o := range f.c.rsLister.List(labels.Everything()) {
					objs = append(objs, o)
				}
			default:
				for _, o := range f.c.podLister.List(labels.Everything()) {
					objs = append(objs, o)
				}
			}
			for _, o := range objs {
				got[o.GetMetadata().GetName()] = o.GetMetadata().GetResourceVersion()
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return false, fmt.Sprintf("%s cache %v, tracker %v", k.Kind, got, want)
			}
		}
		return true, ""
	})
}

func (f *fixture) sync(name string) error {
	f.t.Helper()
	f.waitForCaches()
	return f.c.reconcile(f.ctx, "default/"+name)
}

func (f *fixture) mustSync(name string) {
	f.t.Helper()
	if err := f.sync(name); err != nil {
		f.t.Fatalf("reconcile: %v", err)
	}
}

func (f *fixture) deployment(name string) *appsv1.Deployment {
	f.t.Helper()
	o, err := f.cs.Tracker().Get(deploymentKind, "default", name)
	if err != nil {
		f.t.Fatal(err)
	}
	return o.(*appsv1.Deployment)
}

// replicaSets are the tracker's ReplicaSets, lowest revision first.
func (f *fixture) replicaSets() []*appsv1.ReplicaSet {
	var out []*appsv1.ReplicaSet
	for _, o := range f.cs.Tracker().List(rsKind, "default") {
		out = append(out, o.(*appsv1.ReplicaSet))
	}
	sort.SliceStable(out, byRevision(out))
	return out
}

func (f *fixture) replicaSet(name string) *appsv1.ReplicaSet {
	f.t.Helper()
	o, err := f.cs.Tracker().Get(rsKind, "default", name)
	if err != nil {
		f.t.Fatal(err)
	}
	return o.(*appsv1.ReplicaSet)
}

// updateDeployment changes the stored Deployment as a user would.
func (f *fixture) updateDeployment(name string, change func(d *appsv1.Deployment)) {
	f.t.Helper()
	d := f.deployment(name)
	change(d)
	if _, err := client.For[*appsv1.Deployment](f.cs.Client, "default").Update(f.ctx, d); err != nil {
		f.t.Fatal(err)
	}
}

// setRSStatus plays the ReplicaSet controller: replicas pods exist,
// available of them available (and ready).
func (f *fixture) setRSStatus(name string, replicas, available int32) {
	f.t.Helper()
	rs := f.replicaSet(name)
	rs.Status = &appsv1.ReplicaSetStatus{Replicas: replicas, ReadyReplicas: available, AvailableReplicas: available,
		ObservedGeneration: rs.Metadata.Generation, TerminatingReplicas: ptr(int32(0))}
	if _, err := client.For[*appsv1.ReplicaSet](f.cs.Client, "default").UpdateStatus(f.ctx, rs); err != nil {
		f.t.Fatal(err)
	}
}

// settle makes every ReplicaSet's pods exist and be available.
func (f *fixture) settle() {
	f.t.Helper()
	for _, rs := range f.replicaSets() {
		n := rsReplicas(rs)
		if st := rs.GetStatus(); st.GetReplicas() != n || st.GetAvailableReplicas() != n || st.GetObservedGeneration() != rs.Metadata.Generation {
			f.setRSStatus(rs.Metadata.Name, n, n)
		}
	}
}

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

// writes are the create, update, patch and delete requests since the last
// ClearActions, as "verb resource[/sub] name".
func (f *fixture) writes() []string {
	var out []string
	for _, a := range f.cs.Actions() {
		switch a.Verb {
		case "get", "list", "watch":
			continue
		}
		r := a.Resource
		if a.Subresource != "" {
			r += "/" + a.Subresource
		}
		out = append(out, a.Verb+" "+r+" "+a.Name)
	}
	return out
}

func sizes(rss []*appsv1.ReplicaSet) []int32 {
	var out []int32
	for _, rs := range rss {
		out = append(out, rsReplicas(rs))
	}
	return out
}

func newDeployment(name string, replicas int32, strategy *appsv1.DeploymentStrategy) *appsv1.Deployment {
	return &appsv1.Deployment{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name},
		Spec: &appsv1.DeploymentSpec{
			Replicas:                ptr(replicas),
			Selector:                &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template:                template("img:1", map[string]string{"app": name}),
			Strategy:                strategy,
			RevisionHistoryLimit:    ptr(int32(10)),
			ProgressDeadlineSeconds: ptr(int32(600)),
		},
		Status: &appsv1.DeploymentStatus{},
	}
}

func rolling(maxSurge, maxUnavailable *metav1.IntOrString) *appsv1.DeploymentStrategy {
	return &appsv1.DeploymentStrategy{Type: RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: maxSurge, MaxUnavailable: maxUnavailable}}
}

func condition(d *appsv1.Deployment, t string) *appsv1.DeploymentCondition {
	return GetDeploymentCondition(d.GetStatus(), t)
}

func TestNewDeploymentCreatesReplicaSet(t *testing.T) {
	d := newDeployment("web", 3, rolling(metav1.IntOrStringFromString("25%"), metav1.IntOrStringFromString("25%")))
	d.Spec.MinReadySeconds = 5
	d.Metadata.Annotations = map[string]string{ChangeCauseAnnotation: "first", lastAppliedConfigAnnotation: "{}"}
	f := newFixture(t, d)
	f.mustSync("web")

	hash := controller.ComputeHash(d.Spec.Template, nil)
	rss := f.replicaSets()
	if len(rss) != 1 {
		t.Fatalf("%d ReplicaSets, want 1", len(rss))
	}
	rs := rss[0]
	if want := "web-" + hash; rs.Metadata.Name != want {
		t.Errorf("name = %s, want %s", rs.Metadata.Name, want)
	}
	for what, l := range map[string]map[string]string{
		"labels": rs.Metadata.Labels, "selector": rs.Spec.Selector.MatchLabels, "template labels": rs.Spec.Template.Metadata.Labels,
	} {
		if l[DefaultDeploymentUniqueLabelKey] != hash || l["app"] != "web" {
			t.Errorf("%s = %v, want app=web and pod-template-hash=%s", what, l, hash)
		}
	}
	if ref := metav1.GetControllerOf(rs.Metadata); ref == nil || ref.Uid != "uid-web" || ref.Kind != "Deployment" || ref.ApiVersion != "apps/v1" || !ref.GetBlockOwnerDeletion() {
		t.Errorf("controller ref = %v", ref)
	}
	wantAnn := map[string]string{RevisionAnnotation: "1", DesiredReplicasAnnotation: "3", MaxReplicasAnnotation: "4", ChangeCauseAnnotation: "first"}
	if fmt.Sprint(rs.Metadata.Annotations) != fmt.Sprint(wantAnn) {
		t.Errorf("annotations = %v, want %v", rs.Metadata.Annotations, wantAnn)
	}
	if rs.Spec.GetReplicas() != 3 || rs.Spec.MinReadySeconds != 5 {
		t.Errorf("replicas %d minReadySeconds %d, want 3 and 5", rs.Spec.GetReplicas(), rs.Spec.MinReadySeconds)
	}
	if !EqualIgnoreHash(rs.Spec.Template, d.Spec.Template) {
		t.Error("the ReplicaSet's template is not the Deployment's")
	}

	got := f.deployment("web")
	if got.Metadata.Annotations[RevisionAnnotation] != "1" {
		t.Errorf("deployment revision = %q, want 1", got.Metadata.Annotations[RevisionAnnotation])
	}
	if c := condition(got, condProgressing); c == nil || c.Reason != NewReplicaSetReason || c.Status != conditionTrue ||
		c.Message != fmt.Sprintf("Created new replica set %q", rs.Metadata.Name) {
		t.Errorf("Progressing = %v", c)
	}
	if c := condition(got, condAvailable); c == nil || c.Reason != MinimumReplicasUnavailable || c.Status != conditionFalse {
		t.Errorf("Available = %v", c)
	}
	if got.Status.ObservedGeneration != 1 {
		t.Errorf("observedGeneration = %d", got.Status.ObservedGeneration)
	}
	if ev := f.events(); len(ev) != 1 || ev[0] != "Normal ScalingReplicaSet Scaled up replica set "+rs.Metadata.Name+" from 0 to 3" {
		t.Errorf("events = %q", ev)
	}

	// The pods come up: the status follows, the rollout is complete.
	f.setRSStatus(rs.Metadata.Name, 3, 3)
	f.mustSync("web")
	got = f.deployment("web")
	st := got.Status
	if st.Replicas != 3 || st.UpdatedReplicas != 3 || st.ReadyReplicas != 3 || st.AvailableReplicas != 3 || st.UnavailableReplicas != 0 || st.GetTerminatingReplicas() != 0 || st.TerminatingReplicas == nil {
		t.Errorf("status = %v", st)
	}
	if c := condition(got, condProgressing); c.Reason != NewRSAvailableReason || c.Message != fmt.Sprintf("ReplicaSet %q has successfully progressed.", rs.Metadata.Name) {
		t.Errorf("Progressing = %v", c)
	}
	if c := condition(got, condAvailable); c.Reason != MinimumReplicasAvailable || c.Status != conditionTrue {
		t.Errorf("Available = %v", c)
	}

	// Nothing changed: nothing is written.
	f.cs.ClearActions()
	f.mustSync("web")
	if w := f.writes(); len(w) != 0 {
		t.Errorf("an idempotent sync wrote %v", w)
	}
}

func TestRollingUpdateStepByStep(t *testing.T) {
	const replicas, surge, unavailable = 4, 1, 1
	f := newFixture(t, newDeployment("web", replicas, rolling(metav1.IntOrStringFromInt(surge), metav1.IntOrStringFromInt(unavailable))))
	f.mustSync("web")
	f.settle()
	f.mustSync("web")
	first := f.replicaSets()[0].Metadata.Name
	f.events()

	f.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "img:2" })
	var steps []string
	for i := 0; i < 20; i++ {
		f.mustSync("web")
		rss := f.replicaSets()
		total, avail := int32(0), int32(0)
		for _, rs := range rss {
			total += rsReplicas(rs)
			// Pods the ReplicaSet keeps of those available before this step.
			avail += min(rsReplicas(rs), rs.GetStatus().GetAvailableReplicas())
		}
		if total > replicas+surge {
			t.Fatalf("step %d: %d pods, more than replicas+maxSurge", i, total)
		}
		if avail < replicas-unavailable {
			t.Fatalf("step %d: %d pods available, fewer than replicas-maxUnavailable", i, avail)
		}
		if s := fmt.Sprint(sizes(rss)); len(steps) == 0 || steps[len(steps)-1] != s {
			steps = append(steps, s)
		}
		if len(rss) == 2 && rsReplicas(rss[0]) == 0 && rsReplicas(rss[1]) == replicas && rss[1].Status.AvailableReplicas == replicas {
			break
		}
		f.settle()
	}
	// Old, new: surge one and, the new pod not yet available, take one
	// away; then up by one, down by two (the surge plus one unavailable)...
	if want := "[[3 1] [3 2] [1 2] [1 4] [0 4]]"; fmt.Sprint(steps) != want {
		t.Errorf("steps = %v, want %s", steps, want)
	}
	rss := f.replicaSets()
	second := rss[1].Metadata.Name
	if rss[1].Metadata.Annotations[RevisionAnnotation] != "2" || f.deployment("web").Metadata.Annotations[RevisionAnnotation] != "2" {
		t.Errorf("revisions: new RS %s, deployment %s", rss[1].Metadata.Annotations[RevisionAnnotation], f.deployment("web").Metadata.Annotations[RevisionAnnotation])
	}
	want := []string{
		"Normal ScalingReplicaSet Scaled up replica set " + second + " from 0 to 1",
		"Normal ScalingReplicaSet Scaled down replica set " + first + " from 4 to 3",
		"Normal ScalingReplicaSet Scaled up replica set " + second + " from 1 to 2",
		"Normal ScalingReplicaSet Scaled down replica set " + first + " from 3 to 1",
		"Normal ScalingReplicaSet Scaled up replica set " + second + " from 2 to 4",
		"Normal ScalingReplicaSet Scaled down replica set " + first + " from 1 to 0",
	}
	if got := f.events(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	f.settle()
	f.mustSync("web")
	if c := condition(f.deployment("web"), condProgressing); c.Reason != NewRSAvailableReason {
		t.Errorf("Progressing = %v", c)
	}
}

// A new template whose pods never become available: the old ReplicaSet
// keeps replicas-maxUnavailable pods.
func TestRollingUpdateStopsAtMaxUnavailable(t *testing.T) {
	f := newFixture(t, newDeployment("web", 4, rolling(metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(1))))
	f.mustSync("web")
	f.settle()
	f.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "bad" })
	for i := 0; i < 6; i++ {
		f.mustSync("web")
		for _, rs := range f.replicaSets() {
			avail := rsReplicas(rs)
			if rs.Metadata.Annotations[RevisionAnnotation] == "2" {
				avail = 0
			}
			f.setRSStatus(rs.Metadata.Name, rsReplicas(rs), avail)
		}
	}
	if got := fmt.Sprint(sizes(f.replicaSets())); got != "[3 2]" {
		t.Errorf("sizes = %s, want [3 2]", got)
	}
	d := f.deployment("web")
	if d.Status.AvailableReplicas != 3 || d.Status.UnavailableReplicas != 2 || d.Status.UpdatedReplicas != 2 {
		t.Errorf("status = %v", d.Status)
	}
	if c := condition(d, condAvailable); c.Status != conditionTrue {
		t.Errorf("Available = %v (3 of 4 is the minimum)", c)
	}
}

func TestRecreateWaitsForOldPods(t *testing.T) {
	f := newFixture(t, newDeployment("web", 2, &appsv1.DeploymentStrategy{Type: RecreateDeploymentStrategyType}))
	f.mustSync("web")
	f.settle()
	f.mustSync("web")
	old := f.replicaSets()[0]
	// Its pods, as the ReplicaSet controller made them.
	for i := range 2 {
		pod := &corev1.Pod{
			Metadata: &metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", old.Metadata.Name, i), Namespace: "default",
				Labels:          old.Spec.Template.Metadata.Labels,
				OwnerReferences: []*metav1.OwnerReference{metav1.NewControllerRef(old, "apps/v1", "ReplicaSet")}},
			Spec:   &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app", Image: "img:1"}}},
			Status: &corev1.PodStatus{Phase: "Running"},
		}
		if err := f.cs.Tracker().Add(pod); err != nil {
			t.Fatal(err)
		}
	}
	f.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "img:2" })

	f.mustSync("web")
	if rss := f.replicaSets(); len(rss) != 1 || rsReplicas(rss[0]) != 0 {
		t.Fatalf("after the first sync: %d ReplicaSets, sizes %v; want the old one at 0 and no new one", len(rss), sizes(rss))
	}
	// The ReplicaSet controller has deleted its pods as far as its status
	// goes, but they are still terminating.
	f.setRSStatus(old.Metadata.Name, 0, 0)
	f.mustSync("web")
	if rss := f.replicaSets(); len(rss) != 1 {
		t.Fatalf("a new ReplicaSet while old pods run: %v", sizes(rss))
	}

	// The last pod going wakes the Deployment.
	f.waitForCaches()
	for f.c.queue.Len() > 0 {
		k, _ := f.c.queue.Get()
		f.c.queue.Done(k)
		f.c.queue.Forget(k)
	}
	for i := range 2 {
		if _, err := client.For[*corev1.Pod](f.cs.Client, "default").Delete(f.ctx, fmt.Sprintf("%s-%d", old.Metadata.Name, i), client.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	controllertest.Eventually(t, func() (bool, string) {
		return f.c.queue.Len() == 1, fmt.Sprintf("queue length %d", f.c.queue.Len())
	})

	f.mustSync("web")
	rss := f.replicaSets()
	if len(rss) != 2 || fmt.Sprint(sizes(rss)) != "[0 2]" {
		t.Fatalf("sizes = %v, want [0 2]", sizes(rss))
	}
}

func TestScalingMidRolloutIsProportional(t *testing.T) {
	d := newDeployment("web", 10, rolling(metav1.IntOrStringFromInt(3), metav1.IntOrStringFromInt(2)))
	d.Spec.Template.Spec.Containers[0].Image = "img:2"
	d.Metadata.Annotations = map[string]string{RevisionAnnotation: "2"}
	mk := func(name, image, rev string, replicas int32, created int64) *appsv1.ReplicaSet {
		tmpl := template(image, map[string]string{"app": "web", DefaultDeploymentUniqueLabelKey: name})
		return &appsv1.ReplicaSet{
			Metadata: &metav1.ObjectMeta{Name: "web-" + name, Namespace: "default", CreationTimestamp: metav1.NewTime(time.Unix(created, 0)),
				Labels:          tmpl.Metadata.Labels,
				OwnerReferences: []*metav1.OwnerReference{metav1.NewControllerRef(d, "apps/v1", "Deployment")},
				Annotations:     map[string]string{RevisionAnnotation: rev, DesiredReplicasAnnotation: "10", MaxReplicasAnnotation: "13"}},
			Spec: &appsv1.ReplicaSetSpec{Replicas: ptr(replicas), Template: tmpl,
				Selector: &metav1.LabelSelector{MatchLabels: tmpl.Metadata.Labels}},
			Status: &appsv1.ReplicaSetStatus{Replicas: replicas, AvailableReplicas: replicas, ReadyReplicas: replicas, ObservedGeneration: 1},
		}
	}
	f := newFixture(t, d, mk("old", "img:1", "1", 8, 100), mk("new", "img:2", "2", 5, 200))

	f.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(20)) })
	f.mustSync("web")
	// 13 -> 23: 8/13 of 23 is 14, 5/13 is 9.
	if got := fmt.Sprint(sizes(f.replicaSets())); got != "[14 9]" {
		t.Errorf("scaled up: %s, want [14 9]", got)
	}
	for _, rs := range f.replicaSets() {
		if a := rs.Metadata.Annotations; a[DesiredReplicasAnnotation] != "20" || a[MaxReplicasAnnotation] != "23" {
			t.Errorf("%s annotations = %v", rs.Metadata.Name, a)
		}
	}
	ev := f.events()
	sort.Strings(ev)
	if want := "[Normal ScalingReplicaSet Scaled up replica set web-new from 5 to 9 Normal ScalingReplicaSet Scaled up replica set web-old from 8 to 14]"; fmt.Sprint(ev) != want {
		t.Errorf("events = %v", ev)
	}

	f.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(5)) })
	f.mustSync("web")
	// 23 -> 8: round(14*8/23) = 5, round(9*8/23) = 3.
	if got := fmt.Sprint(sizes(f.replicaSets())); got != "[5 3]" {
		t.Errorf("scaled down: %s, want [5 3]", got)
	}
}

func TestPausedDeploymentOnlyScales(t *testing.T) {
	f := newFixture(t, newDeployment("web", 3, rolling(metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(0))))
	f.mustSync("web")
	f.settle()
	f.mustSync("web")
	rs := f.replicaSets()[0].Metadata.Name
	f.events()

	f.updateDeployment("web", func(d *appsv1.Deployment) {
		d.Spec.Paused = true
		d.Spec.Template.Spec.Containers[0].Image = "img:2"
		d.Spec.Replicas = ptr(int32(5))
	})
	f.mustSync("web")
	rss := f.replicaSets()
	if len(rss) != 1 || rsReplicas(rss[0]) != 5 {
		t.Fatalf("paused: sizes %v, want the one ReplicaSet scaled to 5", sizes(rss))
	}
	if c := condition(f.deployment("web"), condProgressing); c.Reason != PausedDeployReason || c.Status != conditionUnknown || c.Message != "Deployment is paused" {
		t.Errorf("Progressing = %v", c)
	}
	if ev := f.events(); fmt.Sprint(ev) != "[Normal ScalingReplicaSet Scaled up replica set "+rs+" from 3 to 5]" {
		t.Errorf("events = %v", ev)
	}
	f.settle()
	f.mustSync("web")
	if len(f.replicaSets()) != 1 {
		t.Fatal("a paused Deployment rolled out")
	}

	f.cs.ClearActions()
	f.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Paused = false })
	f.mustSync("web")
	resumed := false
	for _, a := range f.cs.Actions() {
		if d, ok := a.Object.(*appsv1.Deployment); ok && a.Subresource == "status" {
			if c := condition(d, condProgressing); c != nil && c.Reason == ResumedDeployReason {
				resumed = true
			}
		}
	}
	if !resumed {
		t.Error("no status write said DeploymentResumed")
	}
	if rss := f.replicaSets(); len(rss) != 2 {
		t.Errorf("resumed: %d ReplicaSets, want the rollout to start", len(rss))
	}
}

// rollback does what `skiffctl rollout undo` does: a merge patch of the
// Deployment's template with the ReplicaSet's, its hash label removed.
func rollback(t *testing.T, f *fixture, rs *appsv1.ReplicaSet) {
	t.Helper()
	js, err := codec.MarshalFields(rs.Spec.Template)
	if err != nil {
		t.Fatal(err)
	}
	var tmpl map[string]any
	if err := json.Unmarshal(js, &tmpl); err != nil {
		t.Fatal(err)
	}
	delete(tmpl["metadata"].(map[string]any)["labels"].(map[string]any), DefaultDeploymentUniqueLabelKey)
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": tmpl}})
	if _, err := client.For[*appsv1.Deployment](f.cs.Client, "default").Patch(f.ctx, "web", "merge", patch, ""); err != nil {
		t.Fatal(err)
	}
}

func TestRollbackReusesReplicaSet(t *testing.T) {
	f := newFixture(t, newDeployment("web", 2, rolling(metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(0))))
	f.mustSync("web")
	f.settle()
	f.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "img:2" })
	for i := 0; i < 10 && fmt.Sprint(sizes(f.replicaSets())) != "[0 2]"; i++ {
		f.mustSync("web")
		f.settle()
	}
	rss := f.replicaSets()
	if fmt.Sprint(sizes(rss)) != "[0 2]" {
		t.Fatalf("rollout did not finish: %v", sizes(rss))
	}
	first := rss[0]

	rollback(t, f, first)
	f.cs.ClearActions()
	for i := 0; i < 10 && fmt.Sprint(sizes(f.replicaSets())) != "[0 2]" || i == 0; i++ {
		f.mustSync("web")
		f.settle()
	}
	f.mustSync("web")
	for _, w := range f.writes() {
		if strings.HasPrefix(w, "create ") {
			t.Errorf("a rollback created a ReplicaSet: %s", w)
		}
	}
	rss = f.replicaSets()
	if len(rss) != 2 {
		t.Fatalf("%d ReplicaSets, want 2", len(rss))
	}
	// byRevision: the re-used one is now the latest.
	reused := rss[1]
	if reused.Metadata.Name != first.Metadata.Name {
		t.Fatalf("the latest ReplicaSet is %s, want the re-used %s", reused.Metadata.Name, first.Metadata.Name)
	}
	if a := reused.Metadata.Annotations; a[RevisionAnnotation] != "3" || a[RevisionHistoryAnnotation] != "1" {
		t.Errorf("re-used annotations = %v, want revision 3, history 1", a)
	}
	if rsReplicas(reused) != 2 || rsReplicas(rss[0]) != 0 {
		t.Errorf("sizes = %v", sizes(rss))
	}
	if got := f.deployment("web").Metadata.Annotations[RevisionAnnotation]; got != "3" {
		t.Errorf("deployment revision = %s, want 3", got)
	}
}

func TestRevisionHistoryCleanup(t *testing.T) {
	tests := []struct {
		name        string
		limit       *int32
		unsettled   string // revision whose pods are still terminating
		wantDeleted []string
	}{
		{"oldest beyond the limit", ptr(int32(2)), "", []string{"web-r1", "web-r2"}},
		{"a ReplicaSet with pods is kept", ptr(int32(2)), "1", []string{"web-r2"}},
		{"limit zero", ptr(int32(0)), "", []string{"web-r1", "web-r2", "web-r3", "web-r4"}},
		{"default of ten keeps all", nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDeployment("web", 1, rolling(metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(0)))
			d.Spec.RevisionHistoryLimit = tt.limit
			d.Spec.Template.Spec.Containers[0].Image = "img:5"
			d.Metadata.Generation = 1
			d.Metadata.Annotations = map[string]string{RevisionAnnotation: "5"}
			d.Status = &appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1, ReadyReplicas: 1}
			objs := []scheme.Object{d}
			for rev := 1; rev <= 5; rev++ {
				replicas := int32(0)
				if rev == 5 {
					replicas = 1
				}
				tmpl := template(fmt.Sprintf("img:%d", rev), map[string]string{"app": "web", DefaultDeploymentUniqueLabelKey: fmt.Sprint(rev)})
				rs := &appsv1.ReplicaSet{
					Metadata: &metav1.ObjectMeta{Name: fmt.Sprintf("web-r%d", rev), Namespace: "default", Generation: 1,
						CreationTimestamp: metav1.NewTime(time.Unix(int64(1000-rev), 0)), // creation order must not matter
						Labels:            tmpl.Metadata.Labels,
						OwnerReferences:   []*metav1.OwnerReference{metav1.NewControllerRef(d, "apps/v1", "Deployment")},
						Annotations:       map[string]string{RevisionAnnotation: fmt.Sprint(rev), DesiredReplicasAnnotation: "1", MaxReplicasAnnotation: "2"}},
					Spec:   &appsv1.ReplicaSetSpec{Replicas: ptr(replicas), Template: tmpl, Selector: &metav1.LabelSelector{MatchLabels: tmpl.Metadata.Labels}},
					Status: &appsv1.ReplicaSetStatus{Replicas: replicas, AvailableReplicas: replicas, ObservedGeneration: 1},
				}
				if fmt.Sprint(rev) == tt.unsettled {
					rs.Status.Replicas = 1
				}
				objs = append(objs, rs)
			}
			f := newFixture(t, objs...)
			f.mustSync("web")
			var deleted []string
			for _, a := range f.cs.Actions() {
				if a.Verb == "delete" {
					deleted = append(deleted, a.Name)
				}
			}
			if fmt.Sprint(deleted) != fmt.Sprint(tt.wantDeleted) {
				t.Errorf("deleted %v, want %v", deleted, tt.wantDeleted)
			}
			if _, err := f.cs.Tracker().Get(rsKind, "default", "web-r5"); err != nil {
				t.Error("the new ReplicaSet was deleted")
			}
		})
	}
}

func TestProgressDeadlineExceeded(t *testing.T) {
	d := newDeployment("web", 2, rolling(metav1.IntOrStringFromInt(2), metav1.IntOrStringFromInt(0)))
	d.Spec.ProgressDeadlineSeconds = ptr(int32(10))
	f := newFixture(t, d)
	t0 := f.now
	f.mustSync("web")
	rs := f.replicaSets()[0].Metadata.Name
	c := condition(f.deployment("web"), condProgressing)
	if c.Reason != NewReplicaSetReason || !c.LastUpdateTime.AsTime().Equal(t0) {
		t.Fatalf("Progressing = %v", c)
	}

	// Pods created, none available: progress, at t0+2s.
	f.now = t0.Add(2 * time.Second)
	f.setRSStatus(rs, 2, 0)
	f.mustSync("web")
	c = condition(f.deployment("web"), condProgressing)
	if c.Reason != ReplicaSetUpdatedReason || !c.LastUpdateTime.AsTime().Equal(t0.Add(2*time.Second)) || c.Message != fmt.Sprintf("ReplicaSet %q is progressing.", rs) {
		t.Fatalf("Progressing = %v", c)
	}

	// No progress, within the deadline: nothing written; a check is
	// queued for when the deadline passes (here, under a second away: now).
	f.now = t0.Add(11*time.Second + 500*time.Millisecond)
	f.waitForCaches()
	for f.c.queue.Len() > 0 {
		k, _ := f.c.queue.Get()
		f.c.queue.Done(k)
		f.c.queue.Forget(k)
	}
	f.cs.ClearActions()
	f.mustSync("web")
	if w := f.writes(); len(w) != 0 {
		t.Errorf("wrote %v without progress", w)
	}
	controllertest.Eventually(t, func() (bool, string) {
		return f.c.queue.Len() == 1, fmt.Sprintf("queue length %d, want the progress check queued", f.c.queue.Len())
	})
	if got := f.c.requeueStuckDeployment(f.deployment("web"), f.deployment("web").Status); got != 0 {
		t.Errorf("requeue in %v, want now", got)
	}
	f.now = t0.Add(5 * time.Second)
	if got := f.c.requeueStuckDeployment(f.deployment("web"), f.deployment("web").Status); got != 7*time.Second {
		t.Errorf("requeue in %v, want 7s (lastUpdate+10s-now)", got)
	}

	// Past the deadline.
	f.now = t0.Add(13 * time.Second)
	f.mustSync("web")
	c = condition(f.deployment("web"), condProgressing)
	if c.Reason != TimedOutReason || c.Status != conditionFalse || c.Message != fmt.Sprintf("ReplicaSet %q has timed out progressing.", rs) {
		t.Errorf("Progressing = %v", c)
	}
	// Reported once; later progress checks keep it.
	f.now = t0.Add(30 * time.Second)
	f.cs.ClearActions()
	f.mustSync("web")
	if w := f.writes(); len(w) != 0 {
		t.Errorf("timed out again: %v", w)
	}
}

func TestReplicaFailureIsCopied(t *testing.T) {
	f := newFixture(t, newDeployment("web", 1, rolling(metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(0))))
	f.mustSync("web")
	rs := f.replicaSets()[0]
	rs.Status = &appsv1.ReplicaSetStatus{ObservedGeneration: 1, Conditions: []*appsv1.ReplicaSetCondition{{
		Type: condReplicaFailure, Status: conditionTrue, Reason: "FailedCreate", Message: "pods is forbidden: exceeded quota",
		LastTransitionTime: metav1.NewTime(f.now)}}}
	if _, err := client.For[*appsv1.ReplicaSet](f.cs.Client, "default").UpdateStatus(f.ctx, rs); err != nil {
		t.Fatal(err)
	}
	f.mustSync("web")
	c := condition(f.deployment("web"), condReplicaFailure)
	if c == nil || c.Reason != "FailedCreate" || c.Message != "pods is forbidden: exceeded quota" || c.Status != conditionTrue {
		t.Fatalf("ReplicaFailure = %v", c)
	}
	f.setRSStatus(rs.Metadata.Name, 1, 1)
	f.mustSync("web")
	if c := condition(f.deployment("web"), condReplicaFailure); c != nil {
		t.Errorf("ReplicaFailure stays after the ReplicaSet's went: %v", c)
	}
}

func TestHashCollisionBumpsCollisionCount(t *testing.T) {
	d := newDeployment("web", 1, rolling(metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(0)))
	hash := controller.ComputeHash(d.Spec.Template, nil)
	squatter := &appsv1.ReplicaSet{
		Metadata: &metav1.ObjectMeta{Name: "web-" + hash, Namespace: "default", Labels: map[string]string{"other": "x"}},
		Spec: &appsv1.ReplicaSetSpec{Replicas: ptr(int32(0)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"other": "x"}},
			Template: template("unrelated", map[string]string{"other": "x"})},
	}
	f := newFixture(t, d, squatter)
	if err := f.sync("web"); err == nil {
		t.Fatal("a collision is retried: want an error")
	}
	if got := f.deployment("web").Status.GetCollisionCount(); got != 1 {
		t.Fatalf("collisionCount = %d, want 1", got)
	}
	f.mustSync("web")
	want := "web-" + controller.ComputeHash(d.Spec.Template, ptr(int32(1)))
	if _, err := f.cs.Tracker().Get(rsKind, "default", want); err != nil {
		t.Errorf("no ReplicaSet %s after the bump: %v", want, err)
	}
	if got := f.replicaSet("web-" + hash); got.Spec.GetReplicas() != 0 || metav1.GetControllerOf(got.Metadata) != nil {
		t.Errorf("the colliding ReplicaSet was touched: %v", got)
	}
}

func TestAdoptsAndReleasesReplicaSets(t *testing.T) {
	d := newDeployment("web", 1, rolling(metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(0)))
	tmpl := proto.Clone(d.Spec.Template).(*corev1.PodTemplateSpec)
	tmpl.Metadata.Labels[DefaultDeploymentUniqueLabelKey] = "abc"
	orphan := &appsv1.ReplicaSet{
		Metadata: &metav1.ObjectMeta{Name: "web-abc", Namespace: "default", Labels: tmpl.Metadata.Labels},
		Spec:     &appsv1.ReplicaSetSpec{Replicas: ptr(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: tmpl.Metadata.Labels}, Template: tmpl},
	}
	strayTmpl := template("img:0", map[string]string{"app": "elsewhere"})
	stray := &appsv1.ReplicaSet{
		Metadata: &metav1.ObjectMeta{Name: "web-stray", Namespace: "default", Labels: strayTmpl.Metadata.Labels,
			OwnerReferences: []*metav1.OwnerReference{metav1.NewControllerRef(d, "apps/v1", "Deployment")}},
		Spec: &appsv1.ReplicaSetSpec{Replicas: ptr(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: strayTmpl.Metadata.Labels}, Template: strayTmpl},
	}
	f := newFixture(t, d, orphan, stray)
	f.mustSync("web")
	if ref := metav1.GetControllerOf(f.replicaSet("web-abc").Metadata); ref == nil || ref.Uid != "uid-web" {
		t.Errorf("orphan not adopted: %v", ref)
	}
	if ref := metav1.GetControllerOf(f.replicaSet("web-stray").Metadata); ref != nil {
		t.Errorf("non-matching ReplicaSet not released: %v", ref)
	}
	if rss := f.replicaSets(); len(rss) != 2 {
		t.Errorf("the adopted ReplicaSet with the template is the new one; got %d ReplicaSets", len(rss))
	}
	if got := f.replicaSet("web-abc").Metadata.Annotations[RevisionAnnotation]; got != "1" {
		t.Errorf("adopted revision = %q, want 1", got)
	}
}

func TestSelectingAll(t *testing.T) {
	d := newDeployment("web", 1, rolling(metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(0)))
	d.Spec.Selector = &metav1.LabelSelector{}
	d.Metadata.Generation = 3
	f := newFixture(t, d)
	f.mustSync("web")
	if ev := f.events(); fmt.Sprint(ev) != "[Warning SelectingAll This deployment is selecting all pods. A non-empty selector is required.]" {
		t.Errorf("events = %v", ev)
	}
	if got := f.deployment("web"); got.Status.ObservedGeneration != 3 || len(f.replicaSets()) != 0 {
		t.Errorf("observedGeneration %d, %d ReplicaSets", got.Status.ObservedGeneration, len(f.replicaSets()))
	}
}

// Upstream's rolling_test tables, over the fake: the ReplicaSets' sizes and
// availability in, the size written out.
func TestReconcileNewReplicaSet(t *testing.T) {
	tests := []struct {
		deploymentReplicas int32
		maxSurge           int32
		oldReplicas        int32
		newReplicas        int32
		scaleExpected      bool
		expectedNew        int32
	}{
		{10, 0, 10, 0, false, 0},
		{10, 2, 10, 0, true, 2},
		{10, 2, 5, 0, true, 7},
		{10, 2, 10, 2, false, 0},
		{10, 2, 2, 11, true, 10},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			f, d, oldRS, newRS := rollingFixture(t, tt.deploymentReplicas, tt.maxSurge, 0, tt.oldReplicas, tt.newReplicas, tt.oldReplicas, 0)
			scaled, err := f.c.reconcileNewReplicaSet(f.ctx, []*appsv1.ReplicaSet{newRS, oldRS}, newRS, d)
			if err != nil {
				t.Fatal(err)
			}
			if scaled != tt.scaleExpected {
				t.Fatalf("scaled = %v, want %v; writes %v", scaled, tt.scaleExpected, f.writes())
			}
			if !tt.scaleExpected {
				if w := f.writes(); len(w) != 0 {
					t.Errorf("unexpected writes %v", w)
				}
				return
			}
			if got := f.replicaSet(newRS.Metadata.Name).Spec.GetReplicas(); got != tt.expectedNew {
				t.Errorf("new replicas = %d, want %d", got, tt.expectedNew)
			}
		})
	}
}

func TestReconcileOldReplicaSets(t *testing.T) {
	tests := []struct {
		deploymentReplicas int32
		maxUnavailable     int32
		oldReplicas        int32
		newReplicas        int32
		readyOld, readyNew int32
		scaleExpected      bool
		expectedOld        int32
	}{
		{10, 0, 10, 0, 10, 0, true, 9},
		{10, 2, 10, 0, 10, 0, true, 8},
		// Unhealthy old replicas are cleaned up.
		{10, 2, 10, 0, 8, 0, true, 8},
		// One unhealthy cleaned up, one ready scaled down.
		{10, 2, 10, 0, 9, 0, true, 8},
		// The new ReplicaSet's unavailable pods count against scaling down.
		{10, 2, 8, 2, 8, 0, false, 8},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			f, d, oldRS, newRS := rollingFixture(t, tt.deploymentReplicas, 0, tt.maxUnavailable, tt.oldReplicas, tt.newReplicas, tt.readyOld, tt.readyNew)
			scaled, err := f.c.reconcileOldReplicaSets(f.ctx, []*appsv1.ReplicaSet{oldRS, newRS}, []*appsv1.ReplicaSet{oldRS}, newRS, d)
			if err != nil {
				t.Fatal(err)
			}
			if scaled != tt.scaleExpected {
				t.Fatalf("scaled = %v, want %v", scaled, tt.scaleExpected)
			}
			if got := f.replicaSet(oldRS.Metadata.Name).Spec.GetReplicas(); got != tt.expectedOld {
				t.Errorf("old replicas = %d, want %d", got, tt.expectedOld)
			}
		})
	}
}

func TestCleanupUnhealthyReplicas(t *testing.T) {
	tests := []struct {
		oldReplicas, ready, maxCleanup, expected int32
	}{
		{10, 8, 1, 1},
		{10, 8, 3, 2},
		{10, 8, 0, 0},
		{10, 10, 3, 0},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			f, d, oldRS, _ := rollingFixture(t, 10, 2, 2, tt.oldReplicas, 0, tt.ready, 0)
			_, n, err := f.c.cleanupUnhealthyReplicas(f.ctx, []*appsv1.ReplicaSet{oldRS}, d, tt.maxCleanup)
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.expected {
				t.Errorf("cleaned up %d, want %d", n, tt.expected)
			}
			if got := f.replicaSet(oldRS.Metadata.Name).Spec.GetReplicas(); got != tt.oldReplicas-tt.expected {
				t.Errorf("old replicas = %d, want %d", got, tt.oldReplicas-tt.expected)
			}
		})
	}
}

func TestScaleDownOldReplicaSetsForRollingUpdate(t *testing.T) {
	tests := []struct {
		deploymentReplicas, maxUnavailable, ready, oldReplicas int32
		scaleExpected                                          bool
		expectedOld                                            int32
	}{
		{10, 0, 10, 10, true, 9},
		{10, 2, 10, 10, true, 8},
		{10, 2, 8, 10, false, 10},
		{10, 2, 10, 0, false, 0},
		{10, 2, 1, 10, false, 10},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			f, d, oldRS, _ := rollingFixture(t, tt.deploymentReplicas, 0, tt.maxUnavailable, tt.oldReplicas, 0, tt.ready, 0)
			n, err := f.c.scaleDownOldReplicaSetsForRollingUpdate(f.ctx, []*appsv1.ReplicaSet{oldRS}, []*appsv1.ReplicaSet{oldRS}, d)
			if err != nil {
				t.Fatal(err)
			}
			if (n > 0) != tt.scaleExpected {
				t.Errorf("scaled down %d, want scaling %v", n, tt.scaleExpected)
			}
			if got := f.replicaSet(oldRS.Metadata.Name).Spec.GetReplicas(); got != tt.expectedOld {
				t.Errorf("old replicas = %d, want %d", got, tt.expectedOld)
			}
		})
	}
}

// rollingFixture stores a Deployment with counts for fenceposts, an old and
// a new ReplicaSet with the given sizes and available pods, and returns
// them as stored (with their resourceVersions).
func rollingFixture(t *testing.T, replicas, maxSurge, maxUnavailable, oldReplicas, newReplicas, availOld, availNew int32) (*fixture, *appsv1.Deployment, *appsv1.ReplicaSet, *appsv1.ReplicaSet) {
	t.Helper()
	d := newDeployment("foo", replicas, rolling(metav1.IntOrStringFromInt(maxSurge), metav1.IntOrStringFromInt(maxUnavailable)))
	mk := func(name string, n, avail int32, created int64) *appsv1.ReplicaSet {
		rs := replicaSet(name, n, time.Unix(created, 0))
		rs.Metadata.OwnerReferences = []*metav1.OwnerReference{metav1.NewControllerRef(d, "apps/v1", "Deployment")}
		rs.Status = &appsv1.ReplicaSetStatus{Replicas: n, AvailableReplicas: avail, ReadyReplicas: avail}
		return rs
	}
	f := newFixture(t, d, mk("foo-old", oldReplicas, availOld, 1), mk("foo-new", newReplicas, availNew, 2))
	f.waitForCaches()
	f.cs.ClearActions()
	return f, f.deployment("foo"), f.replicaSet("foo-old"), f.replicaSet("foo-new")
}

func TestReplicaSetCreateError(t *testing.T) {
	f := newFixture(t, newDeployment("web", 1, rolling(metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(0))))
	f.cs.PrependReactor("create", "replicasets", func(fake.Action) (bool, scheme.Object, error) {
		return true, nil, apierrors.NewForbidden("replicasets.apps", "web", "exceeded quota")
	})
	if err := f.sync("web"); err == nil {
		t.Fatal("a failed create is retried: want an error")
	}
	c := condition(f.deployment("web"), condProgressing)
	if c == nil || c.Reason != FailedRSCreateReason || c.Status != conditionFalse || !strings.HasPrefix(c.Message, "Failed to create new replica set \"web-") {
		t.Errorf("Progressing = %v", c)
	}
	if ev := f.events(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning ReplicaSetCreateError Failed to create new replica set") {
		t.Errorf("events = %v", ev)
	}
}
