package daemonset

import (
	"context"
	"fmt"
	"skiff.dev/client/controller"
	"sort"
	"strings"
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

var (
	nodeKind, _ = scheme.ForMessage(&corev1.Node{})
	crKind, _   = scheme.ForMessage(&appsv1.ControllerRevision{})
)

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

func names[T scheme.Object](objs []T) map[string]string {
	out := map[string]string{}
	for _, o := range objs {
		out[o.GetMetadata().GetName()] = o.GetMetadata().GetResourceVersion()
	}
	return out
}

// waitForCaches waits until every lister holds what the tracker does.
func (f *fixture) waitForCaches() {
	f.t.Helper()
	controllertest.Eventually(f.t, func() (bool, string) {
		for _, k := range []*scheme.Kind{dsKind, podKind, nodeKind, crKind} {
			want := map[string]string{}
			for _, o := range f.cs.Tracker().List(k, "") {
				want[o.GetMetadata().GetName()] = o.GetMetadata().GetResourceVersion()
			}
			var got map[string]string
			switch k {
			case dsKind:
				got = names(f.c.dsLister.List(labels.Everything()))
			case podKind:
				got = names(f.c.podLister.List(labels.Everything()))
			case nodeKind:
				got = names(f.c.nodeLister.List(labels.Everything()))
			default:
				got = names(f.c.crLister.List(labels.Everything()))
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return false, fmt.Sprintf("%s cache %v, tracker %v", k.Kind, got, want)
			}
		}
		return true, ""
	})
}

func (f *fixture) sync(name string) {
	f.t.Helper()
	f.waitForCaches()
	if err := f.c.reconcile(f.ctx, "default/"+name); err != nil {
		f.t.Fatalf("reconcile: %v", err)
	}
	f.waitForCaches()
}

func (f *fixture) ds(name string) *appsv1.DaemonSet {
	f.t.Helper()
	o, err := f.cs.Tracker().Get(dsKind, "default", name)
	if err != nil {
		f.t.Fatal(err)
	}
	return o.(*appsv1.DaemonSet)
}

func (f *fixture) pods() []*corev1.Pod {
	var out []*corev1.Pod
	for _, o := range f.cs.Tracker().List(podKind, "default") {
		out = append(out, o.(*corev1.Pod))
	}
	return out
}

func (f *fixture) revisions() []*appsv1.ControllerRevision {
	var out []*appsv1.ControllerRevision
	for _, o := range f.cs.Tracker().List(crKind, "default") {
		out = append(out, o.(*appsv1.ControllerRevision))
	}
	history.SortControllerRevisions(out)
	return out
}

// podNodes is "node=revision-hash" for every pod, sorted.
func (f *fixture) podNodes() []string {
	var out []string
	for _, p := range f.pods() {
		n, _ := targetNodeName(p)
		out = append(out, n+"="+p.Metadata.Labels[history.ControllerRevisionHashLabel])
	}
	sort.Strings(out)
	return out
}

// runPods plays scheduler and kubelet: every pod bound to its node,
// Running and Ready since ready.
func (f *fixture) runPods(ready time.Time) {
	f.t.Helper()
	f.finishDeletions()
	for _, p := range f.pods() {
		if isPodReady(p) {
			continue
		}
		n, _ := targetNodeName(p)
		p.Spec.NodeName = n
		p.Status = &corev1.PodStatus{Phase: "Running", Conditions: []*corev1.PodCondition{
			{Type: "Ready", Status: "True", LastTransitionTime: metav1.NewTime(ready)}}}
		if err := f.cs.Tracker().Add(p); err != nil {
			f.t.Fatal(err)
		}
	}
}

// finishDeletions plays the kubelet for pods being deleted: gone for good.
func (f *fixture) finishDeletions() {
	f.t.Helper()
	for _, p := range f.pods() {
		if p.Metadata.DeletionTimestamp != nil {
			if _, err := client.For[*corev1.Pod](f.cs.Client, "default").Delete(f.ctx, p.Metadata.Name, client.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
				f.t.Fatal(err)
			}
		}
	}
}

func (f *fixture) update(name string, change func(*appsv1.DaemonSet)) {
	f.t.Helper()
	ds := f.ds(name)
	change(ds)
	if _, err := client.For[*appsv1.DaemonSet](f.cs.Client, "default").Update(f.ctx, ds); err != nil {
		f.t.Fatal(err)
	}
}

func node(name string, l map[string]string, taints ...*corev1.Taint) *corev1.Node {
	return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: name, Labels: l}, Spec: &corev1.NodeSpec{Taints: taints}}
}

func newDS(name string, strategy *appsv1.DaemonSetUpdateStrategy) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, Generation: 1},
		Spec: &appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: &corev1.PodTemplateSpec{
				Metadata: &metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:     &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "img:1"}}},
			},
			UpdateStrategy: strategy,
		},
	}
}

func rolling(maxUnavailable, maxSurge int32) *appsv1.DaemonSetUpdateStrategy {
	return &appsv1.DaemonSetUpdateStrategy{Type: "RollingUpdate", RollingUpdate: &appsv1.RollingUpdateDaemonSet{
		MaxUnavailable: metav1.IntOrStringFromInt(maxUnavailable), MaxSurge: metav1.IntOrStringFromInt(maxSurge)}}
}

func TestNodeEligibility(t *testing.T) {
	term := func(reqs ...*corev1.NodeSelectorRequirement) *corev1.Affinity {
		return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []*corev1.NodeSelectorTerm{{MatchExpressions: reqs}}}}}
	}
	ssd := map[string]string{"disk": "ssd", "zone": "a"}
	cases := []struct {
		name                 string
		spec                 *corev1.PodSpec
		node                 *corev1.Node
		run, continueRunning bool
	}{
		{"no constraints", &corev1.PodSpec{}, node("n", nil), true, true},
		{"nodeSelector matches", &corev1.PodSpec{NodeSelector: map[string]string{"disk": "ssd"}}, node("n", ssd), true, true},
		{"nodeSelector does not match", &corev1.PodSpec{NodeSelector: map[string]string{"disk": "hdd"}}, node("n", ssd), false, false},
		{"nodeSelector label missing", &corev1.PodSpec{NodeSelector: map[string]string{"gpu": "yes"}}, node("n", ssd), false, false},
		{"affinity In", &corev1.PodSpec{Affinity: term(&corev1.NodeSelectorRequirement{Key: "zone", Operator: "In", Values: []string{"a", "b"}})}, node("n", ssd), true, true},
		{"affinity NotIn", &corev1.PodSpec{Affinity: term(&corev1.NodeSelectorRequirement{Key: "zone", Operator: "NotIn", Values: []string{"a"}})}, node("n", ssd), false, false},
		{"affinity DoesNotExist", &corev1.PodSpec{Affinity: term(&corev1.NodeSelectorRequirement{Key: "gpu", Operator: "DoesNotExist"})}, node("n", ssd), true, true},
		{"affinity on metadata.name", &corev1.PodSpec{Affinity: replaceNodeNameAffinity(nil, "other")}, node("n", ssd), false, false},
		{"template nodeName elsewhere", &corev1.PodSpec{NodeName: "other"}, node("n", nil), false, false},
		{"untolerated NoSchedule: no new pod, the old keeps running", &corev1.PodSpec{},
			node("n", nil, &corev1.Taint{Key: "dedicated", Value: "db", Effect: "NoSchedule"}), false, true},
		{"untolerated NoExecute: evicted", &corev1.PodSpec{},
			node("n", nil, &corev1.Taint{Key: "dedicated", Value: "db", Effect: "NoExecute"}), false, false},
		{"PreferNoSchedule is ignored", &corev1.PodSpec{},
			node("n", nil, &corev1.Taint{Key: "dedicated", Value: "db", Effect: "PreferNoSchedule"}), true, true},
		{"tolerated by Equal", &corev1.PodSpec{Tolerations: []*corev1.Toleration{{Key: "dedicated", Operator: "Equal", Value: "db", Effect: "NoExecute"}}},
			node("n", nil, &corev1.Taint{Key: "dedicated", Value: "db", Effect: "NoExecute"}), true, true},
		{"toleration of another value", &corev1.PodSpec{Tolerations: []*corev1.Toleration{{Key: "dedicated", Value: "web"}}},
			node("n", nil, &corev1.Taint{Key: "dedicated", Value: "db", Effect: "NoSchedule"}), false, true},
		{"not-ready node tolerated automatically", &corev1.PodSpec{},
			node("n", nil, &corev1.Taint{Key: taintNodeNotReady, Effect: "NoExecute"}, &corev1.Taint{Key: taintNodeUnreachable, Effect: "NoExecute"}), true, true},
		{"cordoned and under pressure tolerated automatically", &corev1.PodSpec{},
			node("n", nil, &corev1.Taint{Key: taintNodeUnschedulable, Effect: "NoSchedule"}, &corev1.Taint{Key: taintNodeDiskPressure, Effect: "NoSchedule"},
				&corev1.Taint{Key: taintNodeMemoryPressure, Effect: "NoSchedule"}, &corev1.Taint{Key: taintNodePIDPressure, Effect: "NoSchedule"}), true, true},
		{"network unavailable: not for a pod network pod", &corev1.PodSpec{},
			node("n", nil, &corev1.Taint{Key: taintNodeNetworkUnavailable, Effect: "NoSchedule"}), false, true},
		{"network unavailable: tolerated for hostNetwork", &corev1.PodSpec{HostNetwork: true},
			node("n", nil, &corev1.Taint{Key: taintNodeNetworkUnavailable, Effect: "NoSchedule"}), true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run, cont := nodeShouldRunDaemonPod(tc.node, newPodSpec(&corev1.PodTemplateSpec{Spec: tc.spec}))
			if run != tc.run || cont != tc.continueRunning {
				t.Errorf("shouldRun, shouldContinueRunning = %v, %v; want %v, %v", run, cont, tc.run, tc.continueRunning)
			}
		})
	}
}

func TestOnePodPerEligibleNode(t *testing.T) {
	ds := newDS("agent", rolling(1, 0))
	ds.Spec.Template.Spec.NodeSelector = map[string]string{"role": "worker"}
	ds.Spec.Template.Spec.Tolerations = []*corev1.Toleration{{Key: taintNodeNotReady, Operator: "Exists", Effect: "NoExecute", TolerationSeconds: new(int64(30))}}
	worker := map[string]string{"role": "worker"}
	f := newFixture(t, ds, node("a", worker), node("b", worker), node("c", map[string]string{"role": "infra"}),
		node("d", worker, &corev1.Taint{Key: "maint", Effect: "NoSchedule"}))
	f.sync("agent")
	f.sync("agent") // the status of the pods the first sync made

	revs := f.revisions()
	if len(revs) != 1 || revs[0].Revision != 1 {
		t.Fatalf("revisions = %v, want one, revision 1", revs)
	}
	hash := revs[0].Metadata.Labels[history.ControllerRevisionHashLabel]
	if revs[0].Metadata.Name != "agent-"+hash || hash != controller.ComputeHash(ds.Spec.Template, nil) {
		t.Errorf("revision %s hash %s, want agent-<template hash>", revs[0].Metadata.Name, hash)
	}
	if got, want := f.podNodes(), []string{"a=" + hash, "b=" + hash}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pods = %v, want %v", got, want)
	}
	for _, p := range f.pods() {
		if !strings.HasPrefix(p.Metadata.Name, "agent-") || p.Spec.NodeName != "" {
			t.Errorf("pod %s nodeName %q: want generated name, left to the scheduler", p.Metadata.Name, p.Spec.NodeName)
		}
		if ref := metav1.GetControllerOf(p.Metadata); ref == nil || ref.Uid != "uid-agent" || ref.Kind != "DaemonSet" {
			t.Errorf("controller ref = %v", ref)
		}
		if p.Metadata.Labels[templateGenerationLabel] != "1" || p.Metadata.Labels["app"] != "agent" {
			t.Errorf("labels = %v", p.Metadata.Labels)
		}
		terms := p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
		if len(terms) != 1 || len(terms[0].MatchFields) != 1 || terms[0].MatchFields[0].Key != "metadata.name" {
			t.Errorf("node affinity = %v", terms)
		}
		var keys []string
		for _, tol := range p.Spec.Tolerations {
			keys = append(keys, tol.Key+":"+tol.Effect)
			if tol.Key == taintNodeNotReady && tol.TolerationSeconds != nil {
				t.Errorf("the automatic not-ready toleration should replace the user's bounded one: %v", tol)
			}
		}
		want := "[node.kubernetes.io/not-ready:NoExecute node.kubernetes.io/unreachable:NoExecute node.kubernetes.io/disk-pressure:NoSchedule " +
			"node.kubernetes.io/memory-pressure:NoSchedule node.kubernetes.io/pid-pressure:NoSchedule node.kubernetes.io/unschedulable:NoSchedule]"
		if fmt.Sprint(keys) != want {
			t.Errorf("tolerations = %v, want %v", keys, want)
		}
	}
	st := f.ds("agent").Status
	if st.DesiredNumberScheduled != 2 || st.CurrentNumberScheduled != 2 || st.NumberReady != 0 || st.UpdatedNumberScheduled != 2 ||
		st.NumberAvailable != 0 || st.NumberUnavailable != 2 || st.ObservedGeneration != 1 || st.NumberMisscheduled != 0 {
		t.Errorf("status = %v", st)
	}

	f.runPods(f.now)
	f.sync("agent")
	st = f.ds("agent").Status
	if st.NumberReady != 2 || st.NumberAvailable != 2 || st.NumberUnavailable != 0 {
		t.Errorf("status after pods ran = %v", st)
	}

	// Idempotent.
	f.cs.ClearActions()
	f.sync("agent")
	for _, a := range f.cs.Actions() {
		if a.Verb != "get" && a.Verb != "list" && a.Verb != "watch" {
			t.Errorf("a settled sync wrote: %s %s %s", a.Verb, a.Resource, a.Name)
		}
	}
}

func TestNodesComeAndStopMatching(t *testing.T) {
	ds := newDS("agent", rolling(1, 0))
	ds.Spec.Template.Spec.NodeSelector = map[string]string{"role": "worker"}
	worker := map[string]string{"role": "worker"}
	f := newFixture(t, ds, node("a", worker))
	f.sync("agent")
	f.runPods(f.now)

	// A new node gets its pod, and its add event enqueues the DaemonSet.
	if _, err := client.For[*corev1.Node](f.cs.Client, "").Create(f.ctx, node("b", worker)); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		return f.c.queue.Len() > 0, "no sync queued for a new node"
	})
	f.sync("agent")
	hash := f.revisions()[0].Metadata.Labels[history.ControllerRevisionHashLabel]
	if got, want := f.podNodes(), []string{"a=" + hash, "b=" + hash}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pods = %v, want %v", got, want)
	}
	f.runPods(f.now)

	// A relabelled node loses its pod.
	n, _ := f.cs.Tracker().Get(nodeKind, "", "a")
	a := n.(*corev1.Node)
	a.Metadata.Labels = map[string]string{"role": "infra"}
	if _, err := client.For[*corev1.Node](f.cs.Client, "").Update(f.ctx, a); err != nil {
		t.Fatal(err)
	}
	f.sync("agent")
	live := 0
	for _, p := range f.pods() {
		if p.Metadata.DeletionTimestamp == nil {
			live++
			if p.Spec.NodeName != "b" {
				t.Errorf("pod %s on %s survives, want only b's", p.Metadata.Name, p.Spec.NodeName)
			}
		}
	}
	if live != 1 {
		t.Errorf("%d live pods, want 1", live)
	}
	if st := f.ds("agent").Status; st.DesiredNumberScheduled != 1 {
		t.Errorf("desiredNumberScheduled = %d, want 1", st.DesiredNumberScheduled)
	}
}

func TestMisscheduledAndNoExecute(t *testing.T) {
	ds := newDS("agent", rolling(1, 0))
	f := newFixture(t, ds, node("a", nil), node("b", nil))
	f.sync("agent")
	f.runPods(f.now)
	// b gets a NoSchedule taint: its pod stays but counts as misscheduled.
	n, _ := f.cs.Tracker().Get(nodeKind, "", "b")
	b := n.(*corev1.Node)
	b.Spec = &corev1.NodeSpec{}
	b.Spec.Taints = []*corev1.Taint{{Key: "maint", Effect: "NoSchedule"}}
	if err := f.cs.Tracker().Add(b); err != nil {
		t.Fatal(err)
	}
	f.sync("agent")
	if got := len(f.pods()); got != 2 {
		t.Errorf("%d pods, want 2 (NoSchedule keeps the running pod)", got)
	}
	st := f.ds("agent").Status
	if st.DesiredNumberScheduled != 1 || st.NumberMisscheduled != 1 || st.CurrentNumberScheduled != 1 {
		t.Errorf("status = %v, want desired 1 misscheduled 1 current 1", st)
	}
	// NoExecute: the pod goes.
	b.Spec.Taints = []*corev1.Taint{{Key: "maint", Effect: "NoExecute"}}
	if err := f.cs.Tracker().Add(b); err != nil {
		t.Fatal(err)
	}
	f.sync("agent")
	for _, p := range f.pods() {
		if p.Spec.NodeName == "b" && p.Metadata.DeletionTimestamp == nil {
			t.Errorf("pod %s still runs on a NoExecute-tainted node", p.Metadata.Name)
		}
	}
}

func TestRollingUpdateMaxUnavailable(t *testing.T) {
	f := newFixture(t, newDS("agent", rolling(2, 0)), node("a", nil), node("b", nil), node("c", nil), node("d", nil), node("e", nil))
	f.sync("agent")
	f.runPods(f.now)
	f.sync("agent")
	old := f.revisions()[0].Metadata.Labels[history.ControllerRevisionHashLabel]

	f.update("agent", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].Image = "img:2" })
	f.sync("agent")
	revs := f.revisions()
	if len(revs) != 2 || revs[1].Revision != 2 {
		t.Fatalf("revisions = %d, want 2 with the new one at revision 2", len(revs))
	}
	cur := revs[1].Metadata.Labels[history.ControllerRevisionHashLabel]
	if cur == old {
		t.Fatal("the new template has the old hash")
	}
	// maxUnavailable 2: exactly two old pods deleted, none created yet.
	count := func() (oldN, newN int) {
		for _, p := range f.pods() {
			if p.Metadata.DeletionTimestamp != nil {
				continue
			}
			switch p.Metadata.Labels[history.ControllerRevisionHashLabel] {
			case old:
				oldN++
			case cur:
				newN++
			}
		}
		return
	}
	if o, n := count(); o != 3 || n != 0 {
		t.Fatalf("after the first step: %d old, %d new pods; want 3 and 0", o, n)
	}
	// Once they are gone the manage step replaces them, unready: nothing
	// else is deleted.
	f.sync("agent")
	if o, n := count(); o != 3 || n != 0 {
		t.Fatalf("a replacement was made before the old pod was gone: %d old, %d new", o, n)
	}
	f.finishDeletions()
	f.sync("agent")
	if o, n := count(); o != 3 || n != 2 {
		t.Fatalf("after replacement: %d old, %d new; want 3 and 2", o, n)
	}
	f.sync("agent")
	if o, n := count(); o != 3 || n != 2 {
		t.Fatalf("with the new pods unavailable the update must wait: %d old, %d new", o, n)
	}
	st := f.ds("agent").Status
	if st.UpdatedNumberScheduled != 2 || st.NumberUnavailable != 2 || st.DesiredNumberScheduled != 5 {
		t.Errorf("status mid-rollout = %v", st)
	}
	for range 10 {
		f.runPods(f.now)
		f.sync("agent")
	}
	if o, n := count(); o != 0 || n != 5 {
		t.Fatalf("after the rollout: %d old, %d new; want 0 and 5", o, n)
	}
	st = f.ds("agent").Status
	if st.UpdatedNumberScheduled != 5 || st.NumberAvailable != 5 || st.ObservedGeneration != 2 {
		t.Errorf("final status = %v", st)
	}
}

func TestRollingUpdateMaxSurge(t *testing.T) {
	f := newFixture(t, newDS("agent", rolling(0, 1)), node("a", nil), node("b", nil), node("c", nil))
	f.sync("agent")
	f.runPods(f.now)
	f.sync("agent")
	f.update("agent", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].Image = "img:2" })
	f.sync("agent")
	cur := f.revisions()[1].Metadata.Labels[history.ControllerRevisionHashLabel]

	perNode := func() map[string][]string {
		out := map[string][]string{}
		for _, p := range f.pods() {
			if p.Metadata.DeletionTimestamp != nil {
				continue
			}
			n, _ := targetNodeName(p)
			h := "old"
			if p.Metadata.Labels[history.ControllerRevisionHashLabel] == cur {
				h = "new"
			}
			out[n] = append(out[n], h)
			sort.Strings(out[n])
		}
		return out
	}
	// One surge pod beside its old one; no old pod deleted.
	if got := fmt.Sprint(perNode()); got != "map[a:[new old] b:[old] c:[old]]" {
		t.Fatalf("after the first step: %s", got)
	}
	f.sync("agent")
	if got := fmt.Sprint(perNode()); got != "map[a:[new old] b:[old] c:[old]]" {
		t.Fatalf("with the surge pod unavailable nothing else may happen: %s", got)
	}
	// It becomes available: its old pod goes, the next node surges (the
	// surge waits for the deletion to be observed, so two syncs).
	f.runPods(f.now)
	f.sync("agent")
	f.sync("agent")
	if got := fmt.Sprint(perNode()); got != "map[a:[new] b:[new old] c:[old]]" {
		t.Fatalf("after the surge pod is ready: %s", got)
	}
	for range 6 {
		f.runPods(f.now)
		f.sync("agent")
	}
	if got := fmt.Sprint(perNode()); got != "map[a:[new] b:[new] c:[new]]" {
		t.Fatalf("after the rollout: %s", got)
	}
}

func TestOnDelete(t *testing.T) {
	f := newFixture(t, newDS("agent", &appsv1.DaemonSetUpdateStrategy{Type: "OnDelete"}), node("a", nil), node("b", nil))
	f.sync("agent")
	f.runPods(f.now)
	f.update("agent", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].Image = "img:2" })
	f.sync("agent")
	f.sync("agent")
	revs := f.revisions()
	old, cur := revs[0].Metadata.Labels[history.ControllerRevisionHashLabel], revs[1].Metadata.Labels[history.ControllerRevisionHashLabel]
	if got, want := f.podNodes(), []string{"a=" + old, "b=" + old}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("OnDelete replaced pods on its own: %v", got)
	}
	// The user deletes a's pod: its replacement is new.
	for _, p := range f.pods() {
		if p.Spec.NodeName == "a" {
			if _, err := client.For[*corev1.Pod](f.cs.Client, "default").Delete(f.ctx, p.Metadata.Name, client.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.sync("agent")
	f.sync("agent") // the status of the pod the first sync made
	if got, want := f.podNodes(), []string{"a=" + cur, "b=" + old}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pods = %v, want %v", got, want)
	}
	if st := f.ds("agent").Status; st.UpdatedNumberScheduled != 1 {
		t.Errorf("updatedNumberScheduled = %d, want 1", st.UpdatedNumberScheduled)
	}
}

func TestRollbackReusesRevisionAndHistoryLimit(t *testing.T) {
	ds := newDS("agent", rolling(1, 0))
	ds.Spec.RevisionHistoryLimit = new(int32(1))
	f := newFixture(t, ds, node("a", nil))
	f.sync("agent")
	first := f.revisions()[0].Metadata.Name
	for _, img := range []string{"img:2", "img:3"} {
		f.update("agent", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].Image = img })
		for range 3 {
			f.runPods(f.now)
			f.sync("agent")
		}
	}
	revs := f.revisions()
	// img:1 is pruned (limit 1 old revision, no pod runs it), img:2 kept.
	if len(revs) != 2 || revs[0].Metadata.Name == first || revs[1].Revision != 3 {
		var s []string
		for _, r := range revs {
			s = append(s, fmt.Sprintf("%s@%d", r.Metadata.Name, r.Revision))
		}
		t.Fatalf("revisions = %v", s)
	}
	// Back to img:2: its revision is reused and renumbered 4.
	two := revs[0].Metadata.Name
	f.update("agent", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].Image = "img:2" })
	f.sync("agent")
	revs = f.revisions()
	if last := revs[len(revs)-1]; last.Metadata.Name != two || last.Revision != 4 {
		t.Errorf("newest revision %s@%d, want %s@4", last.Metadata.Name, last.Revision, two)
	}
}
