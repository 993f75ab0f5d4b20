package namespace

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

func meta(ns, name string) *metav1.ObjectMeta {
	return &metav1.ObjectMeta{Name: name, Namespace: ns}
}

func activeNamespace(name string, specFinalizers ...string) *corev1.Namespace {
	return &corev1.Namespace{Metadata: meta("", name), Spec: &corev1.NamespaceSpec{Finalizers: specFinalizers},
		Status: &corev1.NamespaceStatus{Phase: "Active"}}
}

func configMap(ns, name string) *corev1.ConfigMap { return &corev1.ConfigMap{Metadata: meta(ns, name)} }

// pod is bound to a node when node is set: the fake, as the apiserver,
// then gives its deletion the grace period and keeps it until a kubelet
// deletes it with grace 0.
func pod(ns, name, node string, grace int64, finalizers ...string) *corev1.Pod {
	m := meta(ns, name)
	m.Finalizers = finalizers
	return &corev1.Pod{Metadata: m, Spec: &corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &grace},
		Status: &corev1.PodStatus{Phase: "Running"}}
}

// newController is the controller over cs with upstream's waits shortened.
func newController(t *testing.T, cs *fake.Clientset) (*Controller, controllers.Context) {
	t.Helper()
	cc, _ := controllertest.Context(cs, controllers.Options{})
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	ctrl := c.(*Controller)
	ctrl.deletionGracePeriod = 0
	ctrl.remainingDelay = func(int64) time.Duration { return time.Millisecond }
	return ctrl, cc
}

// deleteNamespace deletes name as a user does: the fake marks it
// Terminating with a deletionTimestamp while spec.finalizers is not empty.
func deleteNamespace(t *testing.T, cs *fake.Clientset, name string) {
	t.Helper()
	if _, err := client.For[*corev1.Namespace](cs.Client, "").Delete(context.Background(), name, client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func kind(t testing.TB, group, resource string) *scheme.Kind {
	t.Helper()
	k, ok := scheme.ForResource(group, resource)
	if !ok {
		t.Fatalf("no kind %s.%s", resource, group)
	}
	return k
}

func names(cs *fake.Clientset, k *scheme.Kind, ns string) []string {
	var out []string
	for _, o := range cs.Tracker().List(k, ns) {
		out = append(out, o.GetMetadata().GetName())
	}
	return out
}

func getNamespace(t *testing.T, cs *fake.Clientset, name string) *corev1.Namespace {
	t.Helper()
	o, err := cs.Tracker().Get(kind(t, "", "namespaces"), "", name)
	if err != nil {
		t.Fatalf("namespace %s: %v", name, err)
	}
	return o.(*corev1.Namespace)
}

func namespaceGone(t *testing.T, cs *fake.Clientset, name string) bool {
	t.Helper()
	_, err := cs.Tracker().Get(kind(t, "", "namespaces"), "", name)
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return apierrors.IsNotFound(err)
}

// conditions renders a namespace's conditions as "Type=Status Reason: Message".
func conditions(ns *corev1.Namespace) map[string]string {
	out := map[string]string{}
	for _, c := range ns.GetStatus().GetConditions() {
		out[c.GetType()] = c.GetStatus() + " " + c.GetReason() + ": " + c.GetMessage()
	}
	return out
}

// wantConditions checks the failing conditions and that every other one
// of the five is False with upstream's "ok" reason.
func wantConditions(t *testing.T, ns *corev1.Namespace, failing map[string]string) {
	t.Helper()
	got := conditions(ns)
	for _, typ := range conditionTypes {
		want, ok := failing[typ]
		if !ok {
			want = "False " + okReasons[typ] + ": " + okMessages[typ]
		}
		if got[typ] != want {
			t.Errorf("condition %s = %q, want %q", typ, got[typ], want)
		}
	}
}

func remaining(t *testing.T, err error) int64 {
	t.Helper()
	var rr *ResourcesRemainingError
	if !errors.As(err, &rr) {
		t.Fatalf("Delete = %v, want content remaining", err)
	}
	return rr.Estimate
}

func TestTerminatingNamespaceIsEmptiedThenFinalized(t *testing.T) {
	cs := fake.NewClientset(
		activeNamespace("doomed", FinalizerKubernetes), activeNamespace("other", FinalizerKubernetes),
		configMap("doomed", "a"), configMap("doomed", "b"),
		&appsv1.Deployment{Metadata: meta("doomed", "web")},
		pod("doomed", "pending", "", 30), pod("doomed", "running", "node-1", 30),
		configMap("other", "a"), pod("other", "running", "node-1", 30))
	defer cs.Close()
	c, _ := newController(t, cs)
	ctx := context.Background()
	deleteNamespace(t, cs, "doomed")

	// The running pod is given its 30 s: the pass waits on it.
	if got := remaining(t, c.deleter.Delete(ctx, "doomed")); got != 30 {
		t.Errorf("estimate = %d s, want the running pod's grace of 30 s", got)
	}
	pods := kind(t, "", "pods")
	for _, k := range []*scheme.Kind{kind(t, "", "configmaps"), kind(t, "apps", "deployments")} {
		if got := names(cs, k, "doomed"); len(got) != 0 {
			t.Errorf("%s left in doomed: %v", k.Resource, got)
		}
	}
	if got := names(cs, pods, "doomed"); !slices.Equal(got, []string{"running"}) {
		t.Errorf("pods in doomed = %v, want only the running one, terminating", got)
	}
	ns := getNamespace(t, cs, "doomed")
	wantConditions(t, ns, map[string]string{
		ContentRemaining: "True SomeResourcesRemain: Some resources are remaining: pods. has 1 resource instances",
	})
	if !slices.Contains(ns.GetSpec().GetFinalizers(), FinalizerKubernetes) {
		t.Fatal("the namespace was finalized while a pod remained")
	}

	// The kubelet has stopped it.
	zero := int64(0)
	if _, err := client.For[*corev1.Pod](cs.Client, "doomed").Delete(ctx, "running", client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if err := c.deleter.Delete(ctx, "doomed"); err != nil {
		t.Fatalf("Delete of the emptied namespace: %v", err)
	}
	if !namespaceGone(t, cs, "doomed") {
		t.Errorf("namespace doomed remains with spec.finalizers %v", getNamespace(t, cs, "doomed").GetSpec().GetFinalizers())
	}

	if got := names(cs, kind(t, "", "configmaps"), "other"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("configmaps in other = %v, want [a]", got)
	}
	p, err := cs.Tracker().Get(pods, "other", "running")
	if err != nil || p.GetMetadata().GetDeletionTimestamp() != nil {
		t.Errorf("pod other/running: %v, deletionTimestamp %v; want it untouched", err, p.GetMetadata().GetDeletionTimestamp())
	}
	for _, a := range cs.Actions() {
		if a.Namespace == "other" || a.Name == "other" {
			t.Errorf("request touching namespace other: %+v", a)
		}
	}
}

func TestContentWithFinalizersBlocksUntilTheyGo(t *testing.T) {
	// A second spec finalizer keeps the namespace after ours goes, to see
	// its conditions clear.
	held := configMap("doomed", "held")
	held.Metadata.Finalizers = []string{"example.com/hold"}
	cs := fake.NewClientset(activeNamespace("doomed", FinalizerKubernetes, "example.com/keep"),
		pod("doomed", "held", "", 0, "example.com/hold"), held)
	defer cs.Close()
	c, _ := newController(t, cs)
	ctx := context.Background()
	deleteNamespace(t, cs, "doomed")

	// No grace period is left to wait for, only the finalizers' owners.
	if got := remaining(t, c.deleter.Delete(ctx, "doomed")); got != finalizerEstimateSeconds {
		t.Errorf("estimate = %d s, want upstream's %d s for finalizers", got, finalizerEstimateSeconds)
	}
	failing := map[string]string{
		ContentRemaining:    "True SomeResourcesRemain: Some resources are remaining: configmaps. has 1 resource instances, pods. has 1 resource instances",
		FinalizersRemaining: "True SomeFinalizersRemain: Some content in the namespace has finalizers remaining: example.com/hold in 2 resource instances",
	}
	wantConditions(t, getNamespace(t, cs, "doomed"), failing)

	// Nothing changed, so nothing is written.
	statusWrites := func() (n int) {
		for _, a := range cs.Actions() {
			if a.Resource == "namespaces" && a.Subresource == "status" {
				n++
			}
		}
		return n
	}
	before := statusWrites()
	remaining(t, c.deleter.Delete(ctx, "doomed"))
	if after := statusWrites(); after != before {
		t.Errorf("%d status writes for unchanged conditions", after-before)
	}

	// The finalizers' owner is done with the pod: the configmap still holds.
	pods := client.For[*corev1.Pod](cs.Client, "doomed")
	p, err := pods.Get(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	p.Metadata.Finalizers = nil
	if _, err := pods.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	remaining(t, c.deleter.Delete(ctx, "doomed"))
	wantConditions(t, getNamespace(t, cs, "doomed"), map[string]string{
		ContentRemaining:    "True SomeResourcesRemain: Some resources are remaining: configmaps. has 1 resource instances",
		FinalizersRemaining: "True SomeFinalizersRemain: Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances",
	})
	cms := client.For[*corev1.ConfigMap](cs.Client, "doomed")
	cm, err := cms.Get(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	cm.Metadata.Finalizers = nil
	if _, err := cms.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if err := c.deleter.Delete(ctx, "doomed"); err != nil {
		t.Fatalf("Delete once the finalizer went: %v", err)
	}
	ns := getNamespace(t, cs, "doomed")
	wantConditions(t, ns, nil)
	if got := ns.GetSpec().GetFinalizers(); !slices.Equal(got, []string{"example.com/keep"}) {
		t.Errorf("spec.finalizers = %v, want only the other controller's", got)
	}
}

func TestFailingDeleteIsReportedAndRetried(t *testing.T) {
	cs := fake.NewClientset(activeNamespace("doomed", FinalizerKubernetes), activeNamespace("keep", FinalizerKubernetes),
		configMap("doomed", "a"), &corev1.Secret{Metadata: meta("doomed", "s")}, configMap("keep", "a"))
	defer cs.Close()
	var failing atomic.Bool
	failing.Store(true)
	var attempts atomic.Int32
	cs.PrependReactor("delete", "configmaps", func(a fake.Action) (bool, scheme.Object, error) {
		if a.Namespace == "doomed" {
			attempts.Add(1)
		}
		if failing.Load() {
			return true, nil, apierrors.NewInternal(errors.New("etcd is unavailable"))
		}
		return false, nil, nil
	})
	c, cc := newController(t, cs)
	deleteNamespace(t, cs, "doomed")
	controllertest.Run(t, cc, c)

	want := "True ContentDeletionFailed: Failed to delete all resource types, 1 remaining: Internal error occurred: etcd is unavailable"
	controllertest.Eventually(t, func() (bool, string) {
		got := conditions(getNamespace(t, cs, "doomed"))[DeletionContentFailure]
		return got == want, fmt.Sprintf("%s = %q, want %q", DeletionContentFailure, got, want)
	})
	if got := names(cs, kind(t, "", "secrets"), "doomed"); len(got) != 0 {
		t.Errorf("secrets %v remain: a failing kind stopped the others", got)
	}
	if !slices.Contains(getNamespace(t, cs, "doomed").GetSpec().GetFinalizers(), FinalizerKubernetes) {
		t.Fatal("finalized though a configmap could not be deleted")
	}

	failing.Store(false)
	controllertest.Eventually(t, func() (bool, string) {
		return namespaceGone(t, cs, "doomed"), "namespace doomed not removed once deletes succeed"
	})
	if n := attempts.Load(); n < 2 {
		t.Errorf("%d delete attempts of the configmap, want a retry", n)
	}
	// The active namespace is not the controller's business.
	if got := names(cs, kind(t, "", "configmaps"), "keep"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("configmaps in keep = %v, want [a]", got)
	}
	for _, a := range cs.Actions() {
		if a.Verb != "list" && a.Verb != "watch" && (a.Namespace == "keep" || a.Name == "keep") {
			t.Errorf("request touching the active namespace: %+v", a)
		}
	}
}

func TestActiveNamespaceIsLeftAlone(t *testing.T) {
	cs := fake.NewClientset(activeNamespace("live", FinalizerKubernetes), configMap("live", "a"))
	defer cs.Close()
	c, _ := newController(t, cs)
	if err := c.deleter.Delete(context.Background(), "live"); err != nil {
		t.Fatal(err)
	}
	for _, a := range cs.Actions() {
		if a.Verb != "get" {
			t.Errorf("request for an active namespace: %+v", a)
		}
	}
	if got := names(cs, kind(t, "", "configmaps"), "live"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("configmaps = %v", got)
	}
}

func TestDiscoveryProblemsBlockFinalizing(t *testing.T) {
	known := func(ctx context.Context) ([]*apipb.APIResource, error) {
		var out []*apipb.APIResource
		for _, k := range scheme.All() {
			out = append(out, &apipb.APIResource{Group: k.Group, Version: k.Version, Resource: k.Resource,
				Namespaced: k.Namespaced, Verbs: []string{"delete", "get", "list"}})
		}
		return out, nil
	}
	for _, tc := range []struct {
		name     string
		discover func(context.Context) ([]*apipb.APIResource, error)
		failing  map[string]string
		deletes  bool
	}{{
		name: "discovery fails",
		discover: func(context.Context) ([]*apipb.APIResource, error) {
			return nil, apierrors.NewUnavailable("the server is shutting down")
		},
		failing: map[string]string{DeletionDiscoveryFailure: "True DiscoveryFailed: the server is shutting down"},
	}, {
		name: "a resource without a type",
		discover: func(ctx context.Context) ([]*apipb.APIResource, error) {
			rs, err := known(ctx)
			return append(rs, &apipb.APIResource{Group: "example.com", Version: "v1", Resource: "widgets",
				Namespaced: true, Verbs: []string{"delete", "list"}}), err
		},
		failing: map[string]string{DeletionGroupVersionParsingFailure: `True GroupVersionParsingFailed: no type known for resource "widgets" in group version "example.com/v1"`},
		// What is known is deleted all the same.
		deletes: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset(activeNamespace("doomed", FinalizerKubernetes), configMap("doomed", "a"))
			defer cs.Close()
			c, _ := newController(t, cs)
			c.deleter.discover = tc.discover
			deleteNamespace(t, cs, "doomed")
			err := c.deleter.Delete(context.Background(), "doomed")
			if err == nil || errors.As(err, new(*ResourcesRemainingError)) {
				t.Fatalf("Delete = %v, want a failure", err)
			}
			ns := getNamespace(t, cs, "doomed")
			wantConditions(t, ns, tc.failing)
			if !slices.Contains(ns.GetSpec().GetFinalizers(), FinalizerKubernetes) {
				t.Error("finalized over content it could not see")
			}
			if left := len(names(cs, kind(t, "", "configmaps"), "doomed")); left == 0 != tc.deletes {
				t.Errorf("%d configmaps left", left)
			}
		})
	}
}

func TestPodPastItsGraceIsAFailure(t *testing.T) {
	// The namespace went a minute ago; the pod had 30 s.
	ns := activeNamespace("doomed", FinalizerKubernetes)
	ns.Metadata.DeletionTimestamp = metav1.NewTime(time.Now().Add(-time.Minute))
	ns.Status.Phase = "Terminating"
	p := pod("doomed", "stuck", "node-1", 30)
	p.Metadata.DeletionTimestamp = metav1.NewTime(time.Now().Add(-30 * time.Second))
	cs := fake.NewClientset(ns, p)
	defer cs.Close()
	c, _ := newController(t, cs)
	err := c.deleter.Delete(context.Background(), "doomed")
	want := "unexpected items still remain in namespace: doomed for gvr: /v1, Resource=pods"
	if err == nil || !strings.Contains(err.Error(), want) || errors.As(err, new(*ResourcesRemainingError)) {
		t.Fatalf("Delete = %v, want %q", err, want)
	}
	wantConditions(t, getNamespace(t, cs, "doomed"), map[string]string{
		DeletionContentFailure: "True ContentDeletionFailed: Failed to delete all resource types, 1 remaining: " + want,
		ContentRemaining:       "True SomeResourcesRemain: Some resources are remaining: pods. has 1 resource instances",
	})
}

func TestPhaseIsRestoredToTerminating(t *testing.T) {
	ns := activeNamespace("doomed", FinalizerKubernetes)
	ns.Metadata.DeletionTimestamp = metav1.NewTime(time.Now())
	cs := fake.NewClientset(ns)
	defer cs.Close()
	c, _ := newController(t, cs)
	if err := c.deleter.Delete(context.Background(), "doomed"); err != nil {
		t.Fatal(err)
	}
	if !namespaceGone(t, cs, "doomed") {
		t.Errorf("empty namespace not finalized; phase %q", getNamespace(t, cs, "doomed").GetStatus().GetPhase())
	}
	var phases []string
	for _, a := range cs.Actions() {
		if a.Resource == "namespaces" && a.Subresource == "status" {
			phases = append(phases, a.Object.(*corev1.Namespace).GetStatus().GetPhase())
		}
	}
	if len(phases) == 0 || phases[0] != "Terminating" {
		t.Errorf("status writes with phases %v, want Terminating first", phases)
	}
}

func TestRetryBackoffStopsAtAMinute(t *testing.T) {
	q := retryCapped{workqueue.New("test")}
	defer q.ShutDown()
	for range 20 {
		q.AddRateLimited("ns")
	}
	// 5 ms doubled 14 times is past a minute: from there on the delay no
	// longer grows.
	if n := q.NumRequeues("ns"); n != 14 {
		t.Errorf("NumRequeues = %d, want the backoff to stop growing at 14", n)
	}
}
