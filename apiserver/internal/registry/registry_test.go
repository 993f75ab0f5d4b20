package registry

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/admission/namespacelifecycle"
	"skiff.dev/apiserver/internal/etcd"
	"skiff.dev/apiserver/internal/request"
	"skiff.dev/apiserver/internal/storage"
	"skiff.dev/apiserver/internal/watchcache"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// newRegistry runs a registry on an embedded etcd with the given plugins
// after NamespaceLifecycle.
func newRegistry(t *testing.T, plugins ...admission.Plugin) *Registry {
	t.Helper()
	return newRegistryWith(t, Config{}, plugins...)
}

// newRegistryWith is newRegistry with cfg's fields besides the store and
// the admission chain.
func newRegistryWith(t *testing.T, cfg Config, plugins ...admission.Plugin) *Registry {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := etcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cli, err := etcd.Dial(ctx, []string{srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	chain := admission.NewChain(nil, append([]admission.Plugin{namespacelifecycle.New()}, plugins...)...)
	cfg.Store, cfg.Admission = storage.New(cli, "/registry", nil), chain
	r := New(cfg)
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		cli.Close()
		srv.Close()
	})
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

var cmKind, _ = scheme.ForResource("", "configmaps")

func configMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name}, Data: data}
}

// recorder is a plugin of both phases that writes down what it saw, and
// scribbles on the old object it is handed.
type recorder struct {
	calls []string
	users []string
}

func (p *recorder) Name() string                     { return "Recorder" }
func (p *recorder) Handles(admission.Operation) bool { return true }
func (p *recorder) Admit(_ context.Context, a *admission.Attributes) error {
	p.calls = append(p.calls, "admit "+string(a.Operation)+" "+a.Kind.Resource+"/"+a.Subresource+" "+a.Namespace+"/"+a.Name)
	p.users = append(p.users, a.User.Name)
	if old := a.OldObject(); old != nil {
		old.GetMetadata().Labels = map[string]string{"scribbled": "yes"}
	}
	if cm, ok := a.Object.(*corev1.ConfigMap); ok && a.Operation == admission.Create {
		cm.Data["admitted"] = "yes"
	}
	return nil
}
func (p *recorder) Validate(_ context.Context, a *admission.Attributes) error {
	p.calls = append(p.calls, "validate "+string(a.Operation)+" "+a.Kind.Resource+"/"+a.Subresource+" "+a.Namespace+"/"+a.Name)
	if cm, ok := a.Object.(*corev1.ConfigMap); ok && cm.Data["refuse"] != "" {
		return apierrors.NewForbidden("configmaps", cm.Metadata.Name, "refused by Recorder")
	}
	return nil
}

func TestAdmissionPhasesSeeTheWriteAndAPrivateOldObject(t *testing.T) {
	rec := &recorder{}
	r := newRegistry(t, rec)
	rec.calls, rec.users = nil, nil // the default namespaces' creation
	ctx := request.WithUser(context.Background(), request.User{Name: "alice"})
	o, err := r.Create(ctx, cmKind, "default", configMap("cm", map[string]string{"a": "1"}), false)
	if err != nil {
		t.Fatal(err)
	}
	if o.Msg.(*corev1.ConfigMap).Data["admitted"] != "yes" {
		t.Fatal("a mutating plugin's change was not stored")
	}
	// Wait for the cache, so the update's old object is the cache's own.
	if err := r.Cache(cmKind).WaitRev(ctx, o.Rev); err != nil {
		t.Fatal(err)
	}
	cached, _ := r.Cache(cmKind).Get("default/cm")
	before := proto.Clone(cached.Msg)
	next := proto.Clone(o.Msg).(*corev1.ConfigMap)
	next.Data["b"] = "2"
	if _, err := r.Update(ctx, cmKind, "default", next, false); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(before, cached.Msg) {
		t.Fatalf("a plugin changed the cached object: %v", cached.Msg)
	}
	refused := configMap("no", map[string]string{"refuse": "x"})
	if _, err := r.Create(ctx, cmKind, "default", refused, false); !apierrors.IsForbidden(err) {
		t.Fatalf("validating plugin's refusal: %v", err)
	}
	if _, err := r.Delete(ctx, cmKind, "default", "cm", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"admit CREATE configmaps/ default/cm", "validate CREATE configmaps/ default/cm",
		"admit UPDATE configmaps/ default/cm", "validate UPDATE configmaps/ default/cm",
		"admit CREATE configmaps/ default/no", "validate CREATE configmaps/ default/no",
		"admit DELETE configmaps/ default/cm", "validate DELETE configmaps/ default/cm",
	}
	if len(rec.calls) != len(want) {
		t.Fatalf("calls:\n%q\nwant\n%q", rec.calls, want)
	}
	for i := range want {
		if rec.calls[i] != want[i] {
			t.Errorf("call %d = %q, want %q", i, rec.calls[i], want[i])
		}
	}
	for _, u := range rec.users {
		if u != "alice" {
			t.Fatalf("plugin saw user %q", u)
		}
	}
}

func TestBindAndEvictGoThroughAdmission(t *testing.T) {
	rec := &recorder{}
	r := newRegistry(t, rec)
	ctx := context.Background()
	podKind, _ := scheme.ForResource("", "pods")
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "p"},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "x"}}}}
	if _, err := r.Create(ctx, podKind, "default", pod, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Bind(ctx, &corev1.Binding{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "p"}, Target: &corev1.ObjectReference{Name: "n1"}}); err != nil {
		t.Fatal(err)
	}
	rec.calls = nil
	if _, err := r.Evict(ctx, evictionOf("default", "p")); err != nil {
		t.Fatal(err)
	}
	// The eviction is admitted as pods/eviction; the pod's delete it
	// causes is not admitted a second time, as upstream.
	want := []string{"admit CREATE pods/eviction default/p", "validate CREATE pods/eviction default/p"}
	if len(rec.calls) != 2 || rec.calls[0] != want[0] || rec.calls[1] != want[1] {
		t.Fatalf("eviction calls %q, want %q", rec.calls, want)
	}
}

func TestRecentWritesLeaveNothingBehind(t *testing.T) {
	k := cmKind
	obj := func(rev int64) *watchcache.Object {
		return &watchcache.Object{Key: "default/a", Rev: rev, Msg: configMap("a", nil), Raw: []byte("value-suffix")}
	}
	var r recentWrites
	// The event wins the race: the cache decodes rev 5 before the writer
	// offers it. The late offer must not stay.
	if o := r.take("default/a", []byte("value"), 5); o != nil {
		t.Fatal("took an offer nobody made")
	}
	r.offer(k, obj(5))
	if r.len() != 0 {
		t.Fatalf("a late offer was kept: %d waiting", r.len())
	}
	// The writer wins: the cache takes the object as built.
	r.offer(k, obj(7))
	if o := r.take("default/a", []byte("value"), 7); o == nil || o.Rev != 7 {
		t.Fatalf("take = %v", o)
	}
	if r.len() != 0 {
		t.Fatal("a taken offer stayed")
	}
	// A relist covers what was offered and not yet taken.
	r.offer(k, obj(9))
	r.reset(9)
	if r.len() != 0 {
		t.Fatal("a relist left an offer behind")
	}
	// Other bytes under the same revision are not the offer.
	r.offer(k, obj(11))
	if o := r.take("default/a", []byte("other"), 11); o != nil {
		t.Fatal("took an offer for other bytes")
	}
}

func TestRecentWritesAreAllCollectedUnderLoad(t *testing.T) {
	r := newRegistry(t)
	ctx := context.Background()
	for i := range 200 {
		if _, err := r.Create(ctx, cmKind, "default", configMap(fmt.Sprintf("cm-%d", i), nil), false); err != nil {
			t.Fatal(err)
		}
	}
	res := r.res(cmKind)
	if _, err := res.cache.WaitFresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n := res.recent.len(); n != 0 {
		t.Fatalf("%d written objects are still waiting for a cache that has passed them", n)
	}
}

func evictionOf(ns, name string) *policyv1.Eviction {
	return &policyv1.Eviction{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// A generated name that is taken is replaced by a fresh one, up to
// upstream's seven retries; a name the client chose is never changed.
func TestGenerateNameRetriesCollisions(t *testing.T) {
	r := newRegistry(t)
	ctx := context.Background()
	if _, err := r.Create(ctx, cmKind, "default", configMap("web-aaaaa", nil), false); err != nil {
		t.Fatal(err)
	}
	suffixes := []string{"aaaaa", "aaaaa", "bbbbb"}
	defer func(old func() string) { nameSuffix = old }(nameSuffix)
	nameSuffix = func() string { s := suffixes[0]; suffixes = suffixes[1:]; return s }
	cm := configMap("", nil)
	cm.Metadata.GenerateName = "web-"
	o, err := r.Create(ctx, cmKind, "default", cm, false)
	if err != nil {
		t.Fatalf("create with generateName after two collisions: %v", err)
	}
	if got := o.Msg.(*corev1.ConfigMap).Metadata.Name; got != "web-bbbbb" {
		t.Errorf("name = %q, want web-bbbbb", got)
	}
	// Always colliding: AlreadyExists after the retries.
	nameSuffix = func() string { return "aaaaa" }
	cm = configMap("", nil)
	cm.Metadata.GenerateName = "web-"
	if _, err := r.Create(ctx, cmKind, "default", cm, false); !apierrors.IsAlreadyExists(err) {
		t.Errorf("create colliding every time = %v, want AlreadyExists", err)
	}
	if _, err := r.Create(ctx, cmKind, "default", configMap("web-aaaaa", nil), false); !apierrors.IsAlreadyExists(err) {
		t.Errorf("create of a taken chosen name = %v, want AlreadyExists", err)
	}
}

// A pod in its grace period stays while its kubelet writes its status; the
// kubelet's final delete, with grace 0, removes it (upstream's
// shouldDeleteDuringUpdate).
func TestGracefulPodSurvivesStatusWrites(t *testing.T) {
	r := newRegistry(t)
	ctx := context.Background()
	podKind, _ := scheme.ForResource("", "pods")
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: &corev1.PodSpec{NodeName: "n1", Containers: []*corev1.Container{{Name: "c", Image: "x"}}}}
	if _, err := r.Create(ctx, podKind, "default", pod, false); err != nil {
		t.Fatal(err)
	}
	o, err := r.Delete(ctx, podKind, "default", "web", DeleteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deleting := o.Msg.(*corev1.Pod)
	if deleting.Metadata.DeletionTimestamp == nil || deleting.Metadata.GetDeletionGracePeriodSeconds() != 30 {
		t.Fatalf("a bound pod's delete: deletionTimestamp %v, grace %d", deleting.Metadata.DeletionTimestamp, deleting.Metadata.GetDeletionGracePeriodSeconds())
	}
	next := proto.Clone(deleting).(*corev1.Pod)
	next.Status = &corev1.PodStatus{Phase: "Running"}
	if _, err := r.UpdateStatus(ctx, podKind, "default", next, false); err != nil {
		t.Fatalf("status write during the grace period: %v", err)
	}
	if _, err := r.Get(ctx, podKind, "default", "web", ""); err != nil {
		t.Fatalf("the pod went with its status write, before its grace period: %v", err)
	}
	zero := int64(0)
	if _, err := r.Delete(ctx, podKind, "default", "web", DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, podKind, "default", "web", ""); !apierrors.IsNotFound(err) {
		t.Fatalf("after the final delete: %v, want NotFound", err)
	}
}
