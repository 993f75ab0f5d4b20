package fake

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

func newClientset(t *testing.T, objs ...scheme.Object) *Clientset {
	t.Helper()
	cs := NewClientset(objs...)
	t.Cleanup(cs.Close)
	return cs
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func kindFor(t *testing.T, group, resource string) *scheme.Kind {
	t.Helper()
	k, ok := scheme.ForResource(group, resource)
	if !ok {
		t.Fatalf("no kind %s.%s", resource, group)
	}
	return k
}

func meta(ns, name string) *metav1.ObjectMeta { return &metav1.ObjectMeta{Namespace: ns, Name: name} }

func rvOf(t *testing.T, o scheme.Object) int64 {
	t.Helper()
	v, err := strconv.ParseInt(o.GetMetadata().GetResourceVersion(), 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", o.GetMetadata().GetResourceVersion(), err)
	}
	return v
}

func deployment(ns, name string, replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{Metadata: meta(ns, name), Spec: &appsv1.DeploymentSpec{Replicas: proto.Int32(replicas)}}
}

func TestCreateFillsServerMetadata(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t)
	pods := client.For[*corev1.Pod](cs.Client, "prod")
	before := time.Now().Add(-time.Second)
	p, err := pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{GenerateName: "web-"},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app", Image: "nginx"}}},
		// Status is the server's: a create cannot set it.
		Status: &corev1.PodStatus{Phase: "Running"}})
	if err != nil {
		t.Fatal(err)
	}
	m := p.GetMetadata()
	if !strings.HasPrefix(m.Name, "web-") || len(m.Name) != len("web-")+5 {
		t.Errorf("name %q, want web- and a 5-character suffix", m.Name)
	}
	if m.Namespace != "prod" || m.Uid == "" || m.Generation != 1 || rvOf(t, p) <= 0 {
		t.Errorf("metadata %v", m)
	}
	if ct := m.GetCreationTimestamp().AsTime(); ct.Before(before) || ct.After(time.Now().Add(time.Second)) {
		t.Errorf("creationTimestamp %v", ct)
	}
	if p.GetStatus().GetPhase() != "Pending" {
		t.Errorf("phase %q, want Pending", p.GetStatus().GetPhase())
	}
	got, err := pods.Get(ctx, m.Name)
	if err != nil || !proto.Equal(got, p) {
		t.Fatalf("Get = %v, %v; want %v", got, err, p)
	}
	_, err = pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: m.Name}})
	if !apierrors.IsAlreadyExists(err) || apierrors.Message(err) != `pods "`+m.Name+`" already exists` {
		t.Errorf("second create: %v, want AlreadyExists", err)
	}
	if _, err := pods.Create(ctx, &corev1.Pod{}); !apierrors.IsInvalid(err) {
		t.Errorf("create without a name: %v, want Invalid", err)
	}
	if _, err := pods.Get(ctx, "nope"); !apierrors.IsNotFound(err) {
		t.Errorf("get missing: %v, want NotFound", err)
	}
}

func TestResourceVersionIsOneCounterAcrossKinds(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t)
	cm, err := client.For[*corev1.ConfigMap](cs.Client, "default").Create(ctx, &corev1.ConfigMap{Metadata: meta("", "a")})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := client.For[*corev1.Secret](cs.Client, "default").Create(ctx, &corev1.Secret{Metadata: meta("", "a")})
	if err != nil {
		t.Fatal(err)
	}
	if rvOf(t, sec) != rvOf(t, cm)+1 {
		t.Errorf("resourceVersions %d then %d, want consecutive", rvOf(t, cm), rvOf(t, sec))
	}
}

func TestUpdateConflictsOnStaleResourceVersion(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t, &corev1.ConfigMap{Metadata: meta("default", "cfg"), Data: map[string]string{"a": "1"}})
	cms := client.For[*corev1.ConfigMap](cs.Client, "default")
	cur, err := cms.Get(ctx, "cfg")
	if err != nil {
		t.Fatal(err)
	}
	stale := proto.Clone(cur).(*corev1.ConfigMap)
	cur.Data["a"] = "2"
	next, err := cms.Update(ctx, cur)
	if err != nil {
		t.Fatal(err)
	}
	if rvOf(t, next) <= rvOf(t, stale) {
		t.Errorf("resourceVersion did not move: %d → %d", rvOf(t, stale), rvOf(t, next))
	}
	stale.Data["a"] = "3"
	_, err = cms.Update(ctx, stale)
	if !apierrors.IsConflict(err) || !strings.Contains(apierrors.Message(err), apierrors.StaleMessage) {
		t.Fatalf("update with a stale resourceVersion: %v, want Conflict", err)
	}
	// Without a resourceVersion an update is unconditional.
	stale.Metadata.ResourceVersion = ""
	if got, err := cms.Update(ctx, stale); err != nil || got.Data["a"] != "3" {
		t.Fatalf("unconditional update: %v, %v", got, err)
	}
	if _, err := cms.Update(ctx, &corev1.ConfigMap{Metadata: meta("", "missing")}); !apierrors.IsNotFound(err) {
		t.Errorf("update of a missing object: %v, want NotFound", err)
	}
}

func TestGenerationMovesOnSpecChangesOnly(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t)
	deps := client.For[*appsv1.Deployment](cs.Client, "default")
	d, err := deps.Create(ctx, deployment("", "web", 1))
	if err != nil {
		t.Fatal(err)
	}
	if d.Metadata.Generation != 1 {
		t.Fatalf("generation %d on create, want 1", d.Metadata.Generation)
	}
	d.Metadata.Labels = map[string]string{"tier": "web"}
	if d, err = deps.Update(ctx, d); err != nil || d.Metadata.Generation != 1 {
		t.Fatalf("after a label change: generation %d, %v; want 1", d.GetMetadata().GetGeneration(), err)
	}
	d.Spec.Replicas = proto.Int32(3)
	if d, err = deps.Update(ctx, d); err != nil || d.Metadata.Generation != 2 {
		t.Fatalf("after a spec change: generation %d, %v; want 2", d.GetMetadata().GetGeneration(), err)
	}
	d.Status = &appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3}
	if d, err = deps.UpdateStatus(ctx, d); err != nil || d.Metadata.Generation != 2 {
		t.Fatalf("after a status change: generation %d, %v; want 2", d.GetMetadata().GetGeneration(), err)
	}
	// An update that changes nothing is not a write.
	rv := d.Metadata.ResourceVersion
	if d, err = deps.Update(ctx, d); err != nil || d.Metadata.ResourceVersion != rv {
		t.Errorf("no-op update moved resourceVersion %s → %s (%v)", rv, d.GetMetadata().GetResourceVersion(), err)
	}
}

func TestStatusSubresourceSplitsSpecAndStatus(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t, deployment("default", "web", 1))
	deps := client.For[*appsv1.Deployment](cs.Client, "default")
	d, _ := deps.Get(ctx, "web")
	d.Spec.Replicas = proto.Int32(5)
	d.Status = &appsv1.DeploymentStatus{Replicas: 1}
	got, err := deps.Update(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetSpec().GetReplicas() != 5 || got.GetStatus() != nil {
		t.Errorf("Update: replicas %d, status %v; want the spec written and the status ignored", got.GetSpec().GetReplicas(), got.GetStatus())
	}
	got.Spec.Replicas = proto.Int32(9)
	got.Status = &appsv1.DeploymentStatus{Replicas: 5, ReadyReplicas: 5}
	got, err = deps.UpdateStatus(ctx, got)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetSpec().GetReplicas() != 5 || got.GetStatus().GetReadyReplicas() != 5 {
		t.Errorf("UpdateStatus: replicas %d, ready %d; want the spec ignored and the status written", got.GetSpec().GetReplicas(), got.GetStatus().GetReadyReplicas())
	}
	// A kind without a status subresource has no UpdateStatus.
	cms := client.For[*corev1.ConfigMap](cs.Client, "default")
	cm, _ := cms.Create(ctx, &corev1.ConfigMap{Metadata: meta("", "c")})
	if _, err := cms.UpdateStatus(ctx, cm); !apierrors.IsNotFound(err) {
		t.Errorf("configmaps/status: %v, want NotFound", err)
	}
}

func TestPatchTypes(t *testing.T) {
	ctx := testContext(t)
	pod := &corev1.Pod{Metadata: meta("default", "web"), Spec: &corev1.PodSpec{Containers: []*corev1.Container{
		{Name: "app", Image: "app:1"}, {Name: "sidecar", Image: "proxy:1"}}}}
	cs := newClientset(t, pod, deployment("default", "web", 1))
	pods := client.For[*corev1.Pod](cs.Client, "default")

	p, err := pods.Patch(ctx, "web", "merge", []byte(`{"metadata":{"labels":{"app":"web"}}}`), "")
	if err != nil || p.Metadata.Labels["app"] != "web" {
		t.Fatalf("merge patch: %v, %v", p.GetMetadata().GetLabels(), err)
	}
	// Strategic merge patches merge containers by name; a merge patch
	// would have replaced the list.
	p, err = pods.Patch(ctx, "web", "strategic", []byte(`{"spec":{"containers":[{"name":"app","image":"app:2"}]}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if c := p.GetSpec().GetContainers(); len(c) != 2 || c[0].Image != "app:2" || c[1].Image != "proxy:1" {
		t.Errorf("strategic patch: containers %v", c)
	}
	p, err = pods.Patch(ctx, "web", "json", []byte(`[{"op":"replace","path":"/spec/containers/1/image","value":"proxy:2"}]`), "")
	if err != nil || p.GetSpec().GetContainers()[1].GetImage() != "proxy:2" {
		t.Fatalf("json patch: %v, %v", p.GetSpec().GetContainers(), err)
	}
	// The status subresource patches only the status.
	p, err = pods.Patch(ctx, "web", "merge", []byte(`{"status":{"phase":"Running"},"metadata":{"labels":{"app":"ignored"}}}`), "status")
	if err != nil || p.GetStatus().GetPhase() != "Running" || p.Metadata.Labels["app"] != "web" {
		t.Fatalf("status patch: phase %q labels %v, %v", p.GetStatus().GetPhase(), p.GetMetadata().GetLabels(), err)
	}
	if p, err = pods.Patch(ctx, "web", "merge", []byte(`{"status":{"phase":"Failed"}}`), ""); err != nil || p.GetStatus().GetPhase() != "Running" {
		t.Errorf("main-resource patch of status: phase %q, %v; want it ignored", p.GetStatus().GetPhase(), err)
	}

	deps := client.For[*appsv1.Deployment](cs.Client, "default")
	d, err := deps.Patch(ctx, "web", "merge", []byte(`{"spec":{"replicas":4}}`), "")
	if err != nil || d.GetSpec().GetReplicas() != 4 || d.Metadata.Generation != 2 {
		t.Fatalf("deployment patch: replicas %d generation %d, %v", d.GetSpec().GetReplicas(), d.GetMetadata().GetGeneration(), err)
	}
	// A resourceVersion in the patch is a precondition.
	_, err = deps.Patch(ctx, "web", "merge", []byte(`{"metadata":{"resourceVersion":"1"},"spec":{"replicas":5}}`), "")
	if !apierrors.IsConflict(err) {
		t.Errorf("patch with a stale resourceVersion: %v, want Conflict", err)
	}
	for _, c := range []struct{ typ, patch string }{
		{"merge", `{"spec":{"nope":1}}`}, {"json", `{"op":"add"}`}, {"merge", `not json`},
		{"json", `[{"op":"replace","path":"/spec/missing/0","value":1}]`},
	} {
		if _, err := deps.Patch(ctx, "web", c.typ, []byte(c.patch), ""); !apierrors.IsBadRequest(err) {
			t.Errorf("%s patch %s: %v, want BadRequest", c.typ, c.patch, err)
		}
	}
	if _, err := deps.Patch(ctx, "missing", "merge", []byte(`{}`), ""); !apierrors.IsNotFound(err) {
		t.Errorf("patch of a missing object: %v, want NotFound", err)
	}
}

func TestDeleteWithFinalizersWaitsForTheLastOne(t *testing.T) {
	ctx := testContext(t)
	cm := &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "cfg", Finalizers: []string{"a", "b"}}}
	cs := newClientset(t, cm)
	cms := client.For[*corev1.ConfigMap](cs.Client, "default")
	w, err := cms.Dynamic().Watch(ctx, client.ListOptions{ResourceVersion: "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	expectEvent(t, w.Events(), client.Added, "cfg")

	got, err := cms.Delete(ctx, "cfg", client.DeleteOptions{})
	if err != nil || got.Metadata.DeletionTimestamp == nil {
		t.Fatalf("delete: %v, %v; want a deletionTimestamp", got, err)
	}
	expectEvent(t, w.Events(), client.Modified, "cfg")
	cur, err := cms.Get(ctx, "cfg")
	if err != nil || cur.Metadata.DeletionTimestamp == nil {
		t.Fatalf("get after delete: %v, %v; want it kept", cur, err)
	}
	// Updates cannot clear deletionTimestamp.
	cur.Metadata.DeletionTimestamp = nil
	cur.Metadata.Finalizers = []string{"b"}
	if cur, err = cms.Update(ctx, cur); err != nil || cur.Metadata.DeletionTimestamp == nil {
		t.Fatalf("remove one finalizer: %v, %v", cur, err)
	}
	expectEvent(t, w.Events(), client.Modified, "cfg")
	cur.Metadata.Finalizers = nil
	if _, err := cms.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	ev := expectEvent(t, w.Events(), client.Deleted, "cfg")
	if rvOf(t, ev.Object) <= rvOf(t, cur) {
		t.Errorf("DELETED at resourceVersion %d, want after %d", rvOf(t, ev.Object), rvOf(t, cur))
	}
	if _, err := cms.Get(ctx, "cfg"); !apierrors.IsNotFound(err) {
		t.Errorf("get after the last finalizer went: %v, want NotFound", err)
	}
}

func TestDeletePropagationPolicyAddsFinalizer(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t,
		&appsv1.ReplicaSet{Metadata: meta("default", "orphaned")},
		&appsv1.ReplicaSet{Metadata: meta("default", "foreground")},
		&appsv1.ReplicaSet{Metadata: meta("default", "background")})
	rss := client.For[*appsv1.ReplicaSet](cs.Client, "default")
	for name, want := range map[string]string{"orphaned": "orphan", "foreground": "foregroundDeletion"} {
		policy := map[string]string{"orphaned": "Orphan", "foreground": "Foreground"}[name]
		got, err := rss.Delete(ctx, name, client.DeleteOptions{PropagationPolicy: policy})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Metadata.Finalizers, []string{want}) || got.Metadata.DeletionTimestamp == nil {
			t.Errorf("%s: finalizers %v deletionTimestamp %v; want [%s] and set", policy, got.Metadata.Finalizers, got.Metadata.DeletionTimestamp, want)
		}
		if _, err := rss.Get(ctx, name); err != nil {
			t.Errorf("%s: %v, want the object kept for the garbage collector", policy, err)
		}
	}
	if _, err := rss.Delete(ctx, "background", client.DeleteOptions{PropagationPolicy: "Background"}); err != nil {
		t.Fatal(err)
	}
	if _, err := rss.Get(ctx, "background"); !apierrors.IsNotFound(err) {
		t.Errorf("background: %v, want it gone", err)
	}
	if _, err := rss.Delete(ctx, "orphaned", client.DeleteOptions{PropagationPolicy: "Sideways"}); !apierrors.IsBadRequest(err) {
		t.Errorf("unknown policy: %v, want BadRequest", err)
	}
}

func TestDeletePreconditions(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t, &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "cfg", Uid: "uid-1"}})
	cms := client.For[*corev1.ConfigMap](cs.Client, "default")
	_, err := cms.Delete(ctx, "cfg", client.DeleteOptions{Preconditions: &apipb.Preconditions{Uid: proto.String("uid-2")}})
	if !apierrors.IsConflict(err) || apierrors.Message(err) != `Operation cannot be fulfilled on configmaps "cfg": Precondition failed: UID in precondition: uid-2, UID in object meta: uid-1` {
		t.Errorf("uid precondition: %v", err)
	}
	_, err = cms.Delete(ctx, "cfg", client.DeleteOptions{Preconditions: &apipb.Preconditions{ResourceVersion: proto.String("999")}})
	if !apierrors.IsConflict(err) || !strings.Contains(apierrors.Message(err), "ResourceVersion in precondition: 999") {
		t.Errorf("resourceVersion precondition: %v", err)
	}
	if _, err := cms.Delete(ctx, "cfg", client.DeleteOptions{Preconditions: &apipb.Preconditions{Uid: proto.String("uid-1")}}); err != nil {
		t.Errorf("matching precondition: %v", err)
	}
	if _, err := cms.Delete(ctx, "cfg", client.DeleteOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("second delete: %v, want NotFound", err)
	}
}

func TestPodGracefulDeletion(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t,
		&corev1.Pod{Metadata: meta("default", "running"), Spec: &corev1.PodSpec{NodeName: "node-1"}},
		&corev1.Pod{Metadata: meta("default", "short"), Spec: &corev1.PodSpec{NodeName: "node-1", TerminationGracePeriodSeconds: proto.Int64(5)}},
		&corev1.Pod{Metadata: meta("default", "unscheduled")},
		&corev1.Pod{Metadata: meta("default", "done"), Spec: &corev1.PodSpec{NodeName: "node-1"}, Status: &corev1.PodStatus{Phase: "Succeeded"}})
	pods := client.For[*corev1.Pod](cs.Client, "default")
	start := time.Now()
	for name, grace := range map[string]int64{"running": 30, "short": 5} {
		p, err := pods.Delete(ctx, name, client.DeleteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Metadata.GetDeletionGracePeriodSeconds() != grace {
			t.Errorf("%s: deletionGracePeriodSeconds %d, want %d", name, p.Metadata.GetDeletionGracePeriodSeconds(), grace)
		}
		due := p.Metadata.GetDeletionTimestamp().AsTime()
		if d := due.Sub(start); d < time.Duration(grace-1)*time.Second || d > time.Duration(grace+1)*time.Second {
			t.Errorf("%s: deletionTimestamp %v after the request, want %ds", name, d, grace)
		}
		if _, err := pods.Get(ctx, name); err != nil {
			t.Errorf("%s: %v, want it kept until the kubelet deletes it", name, err)
		}
	}
	// The kubelet's final delete.
	if _, err := pods.Delete(ctx, "running", client.DeleteOptions{GracePeriodSeconds: proto.Int64(0)}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"running", "unscheduled", "done"} {
		if name != "running" {
			if _, err := pods.Delete(ctx, name, client.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := pods.Get(ctx, name); !apierrors.IsNotFound(err) {
			t.Errorf("%s: %v, want it gone at once", name, err)
		}
	}
}

func TestNamespaceDeletionWaitsForSpecFinalizers(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t, &corev1.Namespace{Metadata: meta("", "team"), Spec: &corev1.NamespaceSpec{Finalizers: []string{"kubernetes"}},
		Status: &corev1.NamespaceStatus{Phase: "Active"}})
	nss := client.For[*corev1.Namespace](cs.Client, "")
	ns, err := nss.Delete(ctx, "team", client.DeleteOptions{})
	if err != nil || ns.GetStatus().GetPhase() != "Terminating" || ns.Metadata.DeletionTimestamp == nil {
		t.Fatalf("delete: %v, %v; want Terminating with a deletionTimestamp", ns, err)
	}
	if _, err := nss.Get(ctx, "team"); err != nil {
		t.Fatalf("get: %v, want the namespace kept", err)
	}
	ns.Spec.Finalizers = nil
	if _, err := nss.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := nss.Get(ctx, "team"); !apierrors.IsNotFound(err) {
		t.Errorf("after the namespace controller finalized it: %v, want NotFound", err)
	}
}

func TestListSelectorsAndScope(t *testing.T) {
	ctx := testContext(t)
	pod := func(ns, name, node, phase string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: &corev1.PodSpec{NodeName: node}, Status: &corev1.PodStatus{Phase: phase}}
	}
	cs := newClientset(t,
		pod("a", "web-1", "node-1", "Running", map[string]string{"app": "web"}),
		pod("a", "web-2", "node-2", "Pending", map[string]string{"app": "web"}),
		pod("a", "db-1", "node-1", "Running", map[string]string{"app": "db"}),
		pod("b", "web-1", "", "Pending", map[string]string{"app": "web"}),
		&corev1.Event{Metadata: meta("a", "ev1"), InvolvedObject: &corev1.ObjectReference{Kind: "Pod", Name: "web-1"}, Type: "Warning", Reason: "Failed"},
		&corev1.Event{Metadata: meta("a", "ev2"), InvolvedObject: &corev1.ObjectReference{Kind: "Pod", Name: "db-1"}, Type: "Normal", Reason: "Started"})
	names := func(l []scheme.Object) []string {
		var out []string
		for _, o := range l {
			out = append(out, informer.Key(o))
		}
		return out
	}
	podKind := kindFor(t, "", "pods")
	for _, c := range []struct {
		ns, labels, fields string
		want               []string
	}{
		{"", "", "", []string{"a/db-1", "a/web-1", "a/web-2", "b/web-1"}},
		{"a", "", "", []string{"a/db-1", "a/web-1", "a/web-2"}},
		{"", "app=web", "", []string{"a/web-1", "a/web-2", "b/web-1"}},
		{"", "app in (db),app!=web", "", []string{"a/db-1"}},
		{"", "", "spec.nodeName=node-1", []string{"a/db-1", "a/web-1"}},
		{"", "", "spec.nodeName=", []string{"b/web-1"}},
		{"", "app=web", "status.phase!=Running", []string{"a/web-2", "b/web-1"}},
		{"", "", "metadata.namespace=b", []string{"b/web-1"}},
		{"a", "", "metadata.name=web-2", []string{"a/web-2"}},
	} {
		l, err := cs.Client.Resource(podKind, c.ns).List(ctx, client.ListOptions{LabelSelector: c.labels, FieldSelector: c.fields})
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if got := names(l.Items); !slices.Equal(got, c.want) {
			t.Errorf("ns %q labels %q fields %q: %v, want %v", c.ns, c.labels, c.fields, got, c.want)
		}
	}
	evs, err := cs.Client.Resource(kindFor(t, "", "events"), "a").List(ctx, client.ListOptions{FieldSelector: "involvedObject.kind=Pod,involvedObject.name=web-1,type=Warning,reason=Failed"})
	if err != nil || !slices.Equal(names(evs.Items), []string{"a/ev1"}) {
		t.Errorf("events by involvedObject: %v, %v", names(evs.Items), err)
	}
	_, err = cs.Client.Resource(kindFor(t, "", "configmaps"), "").List(ctx, client.ListOptions{FieldSelector: "spec.nodeName=x"})
	if !apierrors.IsBadRequest(err) || apierrors.Message(err) != "field label not supported: spec.nodeName" {
		t.Errorf("unsupported field: %v, want BadRequest", err)
	}
	if _, err := cs.Client.Resource(podKind, "").List(ctx, client.ListOptions{LabelSelector: "app=(("}); !apierrors.IsBadRequest(err) {
		t.Errorf("bad label selector: %v, want BadRequest", err)
	}
	l, err := cs.Client.Resource(podKind, "").List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rv, _ := strconv.ParseInt(l.ResourceVersion, 10, 64); rv != 6 {
		t.Errorf("list resourceVersion %q, want 6 (six objects written)", l.ResourceVersion)
	}
	// Paging hands out every object once.
	var paged []string
	opts := client.ListOptions{Limit: 3}
	for {
		page, err := cs.Client.Resource(podKind, "").List(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, names(page.Items)...)
		if page.Continue == "" {
			break
		}
		opts.Continue = page.Continue
	}
	if !slices.Equal(paged, names(l.Items)) {
		t.Errorf("paged list %v, want %v", paged, names(l.Items))
	}
}

func expectEvent(t *testing.T, ch <-chan client.Event, typ client.EventType, name string) client.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("watch ended, want %s %s", typ, name)
		}
		if ev.Type != typ || ev.Object.GetMetadata().GetName() != name {
			t.Fatalf("got %s %s, want %s %s", ev.Type, ev.Object.GetMetadata().GetName(), typ, name)
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("no event, want %s %s", typ, name)
	}
	return client.Event{}
}

// watchFromNow watches from the current resourceVersion, so that what the
// test writes next arrives as changes however soon the server starts the
// stream.
func watchFromNow(ctx context.Context, d *client.Dynamic, o client.ListOptions) (*client.Watcher, error) {
	l, err := d.List(ctx, client.ListOptions{Limit: 1})
	if err != nil {
		return nil, err
	}
	o.ResourceVersion = l.ResourceVersion
	return d.Watch(ctx, o)
}

func TestWatchFiltersAndTransitions(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t)
	cmKind := kindFor(t, "", "configmaps")
	cms := client.For[*corev1.ConfigMap](cs.Client, "a")
	w, err := watchFromNow(ctx, cs.Client.Resource(cmKind, "a"), client.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := client.For[*corev1.ConfigMap](cs.Client, "b").Create(ctx, &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: "other-ns", Labels: map[string]string{"app": "web"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: "db", Labels: map[string]string{"app": "db"}}}); err != nil {
		t.Fatal(err)
	}
	web, err := cms.Create(ctx, &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	expectEvent(t, w.Events(), client.Added, "web")
	web.Data = map[string]string{"k": "v"}
	if web, err = cms.Update(ctx, web); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, w.Events(), client.Modified, "web")
	// Leaving the selection is a DELETED to this watch, joining it an ADDED.
	web.Metadata.Labels["app"] = "other"
	if _, err := cms.Update(ctx, web); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, w.Events(), client.Deleted, "web")
	if _, err := cms.Patch(ctx, "db", "merge", []byte(`{"metadata":{"labels":{"app":"web"}}}`), ""); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, w.Events(), client.Added, "db")
	if _, err := cms.Delete(ctx, "db", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, w.Events(), client.Deleted, "db")

	// Field selectors apply to watches too: a kubelet's view of its node.
	podKind := kindFor(t, "", "pods")
	pw, err := watchFromNow(ctx, cs.Client.Resource(podKind, ""), client.ListOptions{FieldSelector: "spec.nodeName=node-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Stop()
	pods := client.For[*corev1.Pod](cs.Client, "a")
	if _, err := pods.Create(ctx, &corev1.Pod{Metadata: meta("", "p")}); err != nil {
		t.Fatal(err)
	}
	if err := cs.Client.Bind(ctx, &corev1.Binding{Metadata: meta("a", "p"), Target: &corev1.ObjectReference{Name: "node-1"}}); err != nil {
		t.Fatal(err)
	}
	ev := expectEvent(t, pw.Events(), client.Added, "p")
	if ev.Object.(*corev1.Pod).GetSpec().GetNodeName() != "node-1" {
		t.Errorf("bound pod %v", ev.Object)
	}
	// A stream's error arrives with its first receive: the watch ends with it.
	bad, err := cs.Client.Resource(cmKind, "").Watch(ctx, client.ListOptions{FieldSelector: "status.phase=x"})
	if err == nil {
		for range bad.Events() {
		}
		err = bad.Err()
	}
	if !apierrors.IsBadRequest(err) {
		t.Errorf("watch with an unsupported field: %v, want BadRequest", err)
	}
}

func TestWatchReplaysFromResourceVersion(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t)
	cms := client.For[*corev1.ConfigMap](cs.Client, "default")
	a, _ := cms.Create(ctx, &corev1.ConfigMap{Metadata: meta("", "a")})
	b, _ := cms.Create(ctx, &corev1.ConfigMap{Metadata: meta("", "b")})
	b.Data = map[string]string{"x": "y"}
	b, _ = cms.Update(ctx, b)
	if _, err := cms.Delete(ctx, "a", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, client.ListOptions{ResourceVersion: a.Metadata.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var got []string
	var revs []int64
	for range 3 {
		select {
		case ev := <-w.Events():
			got = append(got, string(ev.Type)+" "+ev.Object.Metadata.Name)
			revs = append(revs, rvOf(t, ev.Object))
		case <-ctx.Done():
			t.Fatalf("replay stalled after %v", got)
		}
	}
	if want := []string{"ADDED b", "MODIFIED b", "DELETED a"}; !slices.Equal(got, want) {
		t.Errorf("replay after %s: %v, want %v", a.Metadata.ResourceVersion, got, want)
	}
	if !slices.IsSorted(revs) || revs[1] != rvOf(t, b) {
		t.Errorf("event resourceVersions %v, want increasing with MODIFIED at %d", revs, rvOf(t, b))
	}
	// "" starts with the current state.
	w2, err := cms.Watch(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	ev := <-w2.Events()
	if ev.Type != client.Added || ev.Object.Metadata.Name != "b" || ev.Object.Metadata.ResourceVersion != b.Metadata.ResourceVersion {
		t.Errorf("initial event %s %v", ev.Type, ev.Object.GetMetadata())
	}
}

func TestWatchBookmarks(t *testing.T) {
	defer func(d time.Duration) { bookmarkInterval = d }(bookmarkInterval)
	bookmarkInterval = 10 * time.Millisecond
	ctx := testContext(t)
	cs := newClientset(t)
	w, err := client.For[*corev1.Pod](cs.Client, "").Watch(ctx, client.ListOptions{ResourceVersion: "0", AllowBookmarks: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	cm, err := client.For[*corev1.ConfigMap](cs.Client, "default").Create(ctx, &corev1.ConfigMap{Metadata: meta("", "c")})
	if err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ev := <-w.Events():
			if ev.Type != client.Bookmark {
				t.Fatalf("got %s, want only bookmarks", ev.Type)
			}
			if rvOf(t, ev.Object) >= rvOf(t, cm) {
				return
			}
		case <-ctx.Done():
			t.Fatal("no bookmark reached the configmap's resourceVersion")
		}
	}
}

func TestInformerRunsOnTheFake(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t, &corev1.ConfigMap{Metadata: meta("default", "seed")})
	inf := informer.New(cs.Client.Resource(kindFor(t, "", "configmaps"), "default"), informer.Options{})
	events := make(chan string, 100)
	inf.AddHandler(informer.Handler{
		OnAdd:    func(o scheme.Object) { events <- "add " + o.GetMetadata().GetName() },
		OnUpdate: func(_, o scheme.Object) { events <- "update " + o.GetMetadata().GetName() },
		OnDelete: func(o scheme.Object) { events <- "delete " + o.GetMetadata().GetName() },
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); inf.Run(runCtx) }()
	defer func() { stop(); <-done }()
	if !inf.WaitForSync(ctx) {
		t.Fatal("informer did not sync")
	}
	cms := client.For[*corev1.ConfigMap](cs.Client, "default")
	c, err := cms.Create(ctx, &corev1.ConfigMap{Metadata: meta("", "new")})
	if err != nil {
		t.Fatal(err)
	}
	c.Data = map[string]string{"a": "b"}
	if _, err := cms.Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Delete(ctx, "seed", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 4 {
		select {
		case e := <-events:
			got = append(got, e)
		case <-ctx.Done():
			t.Fatalf("handlers saw %v", got)
		}
	}
	if want := []string{"add seed", "add new", "update new", "delete seed"}; !slices.Equal(got, want) {
		t.Errorf("handlers saw %v, want %v", got, want)
	}
	if o, ok := inf.Get("default/new"); !ok || o.(*corev1.ConfigMap).Data["a"] != "b" {
		t.Errorf("cache holds %v", o)
	}
}

func TestReactorInjectsErrors(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t)
	var seen []Action
	cs.PrependReactor("*", "*", func(a Action) (bool, scheme.Object, error) {
		seen = append(seen, a)
		return false, nil, nil
	})
	cs.PrependReactor("create", "pods", func(a Action) (bool, scheme.Object, error) {
		if a.Name == "doomed" {
			return true, nil, apierrors.NewForbidden("pods", a.Name, "exceeded quota")
		}
		return false, nil, nil
	})
	cs.PrependReactor("update", "deployments/status", func(Action) (bool, scheme.Object, error) {
		return true, nil, apierrors.NewConflict("deployments.apps", "web", apierrors.StaleMessage)
	})
	pods := client.For[*corev1.Pod](cs.Client, "default")
	if _, err := pods.Create(ctx, &corev1.Pod{Metadata: meta("", "doomed")}); !apierrors.IsForbidden(err) {
		t.Errorf("create doomed: %v, want the reactor's Forbidden", err)
	}
	if _, err := pods.Get(ctx, "doomed"); !apierrors.IsNotFound(err) {
		t.Errorf("a refused create was stored: %v", err)
	}
	if _, err := pods.Create(ctx, &corev1.Pod{Metadata: meta("", "fine")}); err != nil {
		t.Errorf("create fine: %v, want the tracker to answer", err)
	}
	deps := client.For[*appsv1.Deployment](cs.Client, "default")
	d, err := deps.Create(ctx, deployment("", "web", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deps.Update(ctx, d); err != nil {
		t.Errorf("update: %v, want only the status subresource refused", err)
	}
	if _, err := deps.UpdateStatus(ctx, d); !apierrors.IsConflict(err) {
		t.Errorf("update status: %v, want the reactor's Conflict", err)
	}
	// A reactor can answer with an object of its own.
	cs.PrependReactor("get", "pods", func(a Action) (bool, scheme.Object, error) {
		return true, &corev1.Pod{Metadata: meta(a.Namespace, a.Name), Spec: &corev1.PodSpec{NodeName: "fabricated"}}, nil
	})
	if p, err := pods.Get(ctx, "anything"); err != nil || p.GetSpec().GetNodeName() != "fabricated" {
		t.Errorf("reactor get: %v, %v", p, err)
	}
	// The wildcard reactor came last: it saw only what no other reactor handled.
	var verbs []string
	for _, a := range seen {
		verbs = append(verbs, a.Verb+" "+a.Resource+"/"+a.Subresource+" "+a.Name)
	}
	want := []string{"get pods/ doomed", "create pods/ fine", "create deployments/ web", "update deployments/ web"}
	if !slices.Equal(verbs, want) {
		t.Errorf("fall-through reactor saw %v, want %v", verbs, want)
	}
}

func TestActionsRecordEveryRequest(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t, &corev1.Pod{Metadata: meta("prod", "web")})
	pods := client.For[*corev1.Pod](cs.Client, "prod")
	if _, err := pods.List(ctx, client.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	p, _ := pods.Get(ctx, "web")
	p.Metadata.Labels = map[string]string{"a": "b"}
	p, _ = pods.Update(ctx, p)
	p.Status = &corev1.PodStatus{Phase: "Running"}
	_, _ = pods.UpdateStatus(ctx, p)
	_, _ = pods.Patch(ctx, "web", "merge", []byte(`{"metadata":{"annotations":{"x":"y"}}}`), "")
	_ = cs.Client.Bind(ctx, &corev1.Binding{Metadata: meta("prod", "web"), Target: &corev1.ObjectReference{Name: "n1"}})
	_ = cs.Client.Evict(ctx, &policyv1.Eviction{Metadata: meta("prod", "web"), DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: proto.Int64(0)}})
	_, _ = pods.Delete(ctx, "web", client.DeleteOptions{})
	nodes := client.For[*corev1.Node](cs.Client, "ignored")
	_, _ = nodes.Create(ctx, &corev1.Node{Metadata: meta("", "n1")})

	var got []string
	for _, a := range cs.Actions() {
		got = append(got, strings.Join([]string{a.Verb, a.Resource, a.Subresource, a.Namespace, a.Name}, ":"))
	}
	want := []string{
		"list:pods::prod:", "get:pods::prod:web", "update:pods::prod:web", "update:pods:status:prod:web",
		"patch:pods::prod:web", "bind:pods:binding:prod:web", "evict:pods:eviction:prod:web",
		"delete:pods::prod:web", "create:nodes:::n1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("actions\n %v\nwant\n %v", got, want)
	}
	acts := cs.Actions()
	if u := acts[2].Object.(*corev1.Pod); u.Metadata.Labels["a"] != "b" {
		t.Errorf("update action object %v", u)
	}
	if a := acts[4]; a.PatchType != "merge" || !json.Valid(a.Patch) {
		t.Errorf("patch action %q %s", a.PatchType, a.Patch)
	}
	if b, ok := acts[5].Object.(*corev1.Binding); !ok || b.GetTarget().GetName() != "n1" {
		t.Errorf("bind action object %v", acts[5].Object)
	}
	// The evict went through: the delete after it found nothing.
	if _, err := pods.Get(ctx, "web"); !apierrors.IsNotFound(err) {
		t.Errorf("evicted pod: %v", err)
	}
	cs.ClearActions()
	if n := len(cs.Actions()); n != 0 {
		t.Errorf("%d actions after ClearActions", n)
	}
}

func TestBind(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t, &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "p", Uid: "u1"}})
	b := &corev1.Binding{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "p", Uid: "u1", Annotations: map[string]string{"why": "fit"}},
		Target: &corev1.ObjectReference{Name: "node-1"}}
	if err := cs.Client.Bind(ctx, b); err != nil {
		t.Fatal(err)
	}
	p, err := client.For[*corev1.Pod](cs.Client, "default").Get(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if p.GetSpec().GetNodeName() != "node-1" || p.Metadata.Annotations["why"] != "fit" {
		t.Errorf("bound pod %v", p)
	}
	if c := p.GetStatus().GetConditions(); len(c) != 1 || c[0].Type != "PodScheduled" || c[0].Status != "True" {
		t.Errorf("conditions %v", c)
	}
	if err := cs.Client.Bind(ctx, b); !apierrors.IsConflict(err) {
		t.Errorf("second bind: %v, want Conflict", err)
	}
	if err := cs.Client.Bind(ctx, &corev1.Binding{Metadata: meta("default", "missing"), Target: &corev1.ObjectReference{Name: "n"}}); !apierrors.IsNotFound(err) {
		t.Errorf("bind of a missing pod: %v, want NotFound", err)
	}
}

func TestTrackerAddGetList(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t)
	tr := cs.Tracker()
	cmKind := kindFor(t, "", "configmaps")
	nodeKind := kindFor(t, "", "nodes")
	w, err := watchFromNow(ctx, cs.Client.Resource(cmKind, ""), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := tr.Add(&corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: "c", Namespace: "x", ResourceVersion: "42"}}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Add(&corev1.Node{Metadata: meta("", "n"), Status: &corev1.NodeStatus{Phase: "Running"}}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Add(&corev1.ConfigMap{Metadata: meta("", "d")}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Add(&corev1.ConfigMap{}); err == nil {
		t.Error("Add of a nameless object succeeded")
	}
	c, err := tr.Get(cmKind, "x", "c")
	if err != nil {
		t.Fatal(err)
	}
	if m := c.GetMetadata(); m.Uid == "" || m.CreationTimestamp == nil || m.ResourceVersion != "42" {
		t.Errorf("added metadata %v", m)
	}
	n, _ := tr.Get(nodeKind, "", "n")
	if n.(*corev1.Node).GetStatus().GetPhase() != "Running" || rvOf(t, n) != 43 || n.GetMetadata().Generation != 1 {
		t.Errorf("node %v: want its status kept, resourceVersion 43, generation 1", n)
	}
	if _, err := tr.Get(cmKind, "x", "nope"); !apierrors.IsNotFound(err) {
		t.Errorf("Get missing: %v", err)
	}
	var names []string
	for _, o := range tr.List(cmKind, "") {
		names = append(names, informer.Key(o))
	}
	if !slices.Equal(names, []string{"default/d", "x/c"}) {
		t.Errorf("List = %v", names)
	}
	if l := tr.List(cmKind, "x"); len(l) != 1 {
		t.Errorf("List(x) = %v", l)
	}
	// Objects from the tracker are copies.
	c.GetMetadata().Name = "changed"
	if again, _ := tr.Get(cmKind, "x", "c"); again.GetMetadata().Name != "c" {
		t.Error("Get returned the stored object")
	}
	// Adds reach watchers, and no Action is recorded.
	// (The watch may start before or after the adds: either way each is
	// one ADDED.)
	var added []string
	for range 2 {
		select {
		case ev := <-w.Events():
			added = append(added, string(ev.Type)+" "+ev.Object.GetMetadata().GetName())
		case <-ctx.Done():
			t.Fatalf("watch saw %v", added)
		}
	}
	if slices.Sort(added); !slices.Equal(added, []string{"ADDED c", "ADDED d"}) {
		t.Errorf("watch saw %v", added)
	}
	for _, a := range cs.Actions() {
		if a.Verb != "watch" && a.Verb != "list" {
			t.Errorf("Add recorded %v", a)
		}
	}
}

func TestHistoryAndGetAt(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t)
	cms := client.For[*corev1.ConfigMap](cs.Client, "default")
	v1, _ := cms.Create(ctx, &corev1.ConfigMap{Metadata: meta("", "c"), Data: map[string]string{"v": "1"}})
	v1.Data["v"] = "2"
	v2, _ := cms.Update(ctx, v1)
	old, err := cms.Dynamic().GetAt(ctx, "c", v1.Metadata.ResourceVersion)
	if err != nil || old.(*corev1.ConfigMap).Data["v"] != "1" {
		t.Errorf("GetAt %s: %v, %v", v1.Metadata.ResourceVersion, old, err)
	}
	revs, _, err := cms.Dynamic().History(ctx, "c", 0)
	if err != nil || len(revs) != 2 || revs[0].ResourceVersion != v2.Metadata.ResourceVersion {
		t.Errorf("History: %v, %v", revs, err)
	}
}

func TestDiscoveryListsEveryKind(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t)
	d, err := cs.Client.Discovery(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Resources) != len(scheme.All()) {
		t.Fatalf("%d resources, want %d", len(d.Resources), len(scheme.All()))
	}
	for i, k := range scheme.All() {
		r := d.Resources[i]
		if r.Group != k.Group || r.Resource != k.Resource || r.Kind != k.Kind || r.Namespaced != k.Namespaced {
			t.Errorf("resource %d = %v, want %s", i, r, k.GroupResource())
		}
	}
}

func TestUnknownResource(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t)
	_, err := cs.Client.API.Get(ctx, &apipb.GetRequest{Resource: &apipb.Resource{Group: "nope", Version: "v1", Resource: "things"}, Name: "x"})
	if !apierrors.IsNotFound(err) {
		t.Errorf("unknown resource: %v, want NotFound", err)
	}
}

func TestCloseEndsWatches(t *testing.T) {
	ctx := testContext(t)
	cs := NewClientset()
	w, err := client.For[*corev1.Pod](cs.Client, "").Watch(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs.Close()
	cs.Close()
	select {
	case _, ok := <-w.Events():
		if ok {
			t.Error("event after Close")
		}
	case <-ctx.Done():
		t.Fatal("watch still open after Close")
	}
	if w.Err() == nil {
		t.Error("watch ended without an error, as if stopped by its caller")
	}
}
