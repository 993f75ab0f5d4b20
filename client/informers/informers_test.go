package informers

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client/informer"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

func pod(ns, name string, lbls map[string]string) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls}}
}

func node(name string) *corev1.Node {
	return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: name}}
}

// started runs f until the test ends and waits for its caches.
func started(t *testing.T, f *Factory) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		f.Shutdown()
	})
	f.Start(ctx)
	wait(t, f.WaitForCacheSync)
	return ctx
}

// wait calls a WaitForCacheSync with a deadline.
func wait(t *testing.T, sync func(context.Context) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !sync(ctx) {
		t.Fatal("caches never synced")
	}
}

func names[T scheme.Object](objs []T) []string {
	out := []string{}
	for _, o := range objs {
		out = append(out, informer.Key(o))
	}
	slices.Sort(out)
	return out
}

func TestFactorySharesOneListAndWatchPerKind(t *testing.T) {
	api := newFakeAPI(pod("a", "p1", nil), node("n1"))
	f := NewFactory(api.start(t), Options{})
	podKind, _ := scheme.ForResource("", "pods")

	p1, p2 := For[*corev1.Pod](f), For[*corev1.Pod](f)
	if p1.Informer() != p2.Informer() || p1.Informer() != f.ForKind(podKind) {
		t.Fatal("asking for pods twice gave two informers")
	}
	For[*corev1.Node](f)
	started(t, f)
	f.Start(context.Background()) // already running: starts nothing

	// A controller started later asks for a new kind and starts the factory again.
	cms := For[*corev1.ConfigMap](f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Start(ctx)
	wait(t, cms.Informer().WaitForSync)

	api.put(pod("a", "p2", nil))
	pollUntil(t, "p2 in the cache", func() bool {
		_, err := p1.Lister().Get("a", "p2")
		return err == nil
	})
	for _, res := range []string{"pods", "nodes", "configmaps"} {
		if lists, watches := api.calls(res); lists != 1 || watches != 1 {
			t.Errorf("%s: %d lists and %d watches, want 1 and 1", res, lists, watches)
		}
	}
	if lists, _ := api.calls("deployments.apps"); lists != 0 {
		t.Errorf("deployments listed %d times; nobody asked for them", lists)
	}
}

func TestListerGetListAndNamespace(t *testing.T) {
	api := newFakeAPI(
		pod("a", "web-1", map[string]string{"app": "web"}),
		pod("a", "web-2", map[string]string{"app": "web", "tier": "front"}),
		pod("a", "db-1", map[string]string{"app": "db"}),
		pod("b", "web-1", map[string]string{"app": "web"}),
		node("n1"),
	)
	f := NewFactory(api.start(t), Options{})
	pods := For[*corev1.Pod](f).Lister()
	nodes := For[*corev1.Node](f).Lister()
	deps := For[*appsv1.Deployment](f).Lister()
	started(t, f)

	web := labels.SelectorFromSet(labels.Set{"app": "web"})
	tests := []struct {
		name string
		got  []*corev1.Pod
		want []string
	}{
		{"everything", pods.List(labels.Everything()), []string{"a/db-1", "a/web-1", "a/web-2", "b/web-1"}},
		{"nil selector", pods.List(nil), []string{"a/db-1", "a/web-1", "a/web-2", "b/web-1"}},
		{"app=web", pods.List(web), []string{"a/web-1", "a/web-2", "b/web-1"}},
		{"namespace a, app=web", pods.Namespace("a").List(web), []string{"a/web-1", "a/web-2"}},
		{"namespace b", pods.Namespace("b").List(labels.Everything()), []string{"b/web-1"}},
		{"namespace c", pods.Namespace("c").List(labels.Everything()), []string{}},
		{"namespace a, tier notin (front)", pods.Namespace("a").List(mustParse(t, "tier notin (front)")), []string{"a/db-1", "a/web-1"}},
	}
	for _, tc := range tests {
		if got := names(tc.got); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}

	if p, err := pods.Get("b", "web-1"); err != nil || informer.Key(p) != "b/web-1" {
		t.Errorf("Get(b, web-1) = %v, %v", p, err)
	}
	if p, err := pods.Namespace("a").Get("db-1"); err != nil || informer.Key(p) != "a/db-1" {
		t.Errorf("Namespace(a).Get(db-1) = %v, %v", p, err)
	}
	if n, err := nodes.Get("ignored", "n1"); err != nil || n.GetMetadata().GetName() != "n1" {
		t.Errorf("Get of a cluster-scoped node = %v, %v", n, err)
	}
	notFound := []struct {
		what     string
		err      error
		resource string
		name     string
	}{
		{"pod in another namespace", second(pods.Get("b", "db-1")), "pods", "db-1"},
		{"node", second(nodes.Get("", "n2")), "nodes", "n2"},
		{"deployment", second(deps.Get("a", "web")), "deployments.apps", "web"},
	}
	for _, tc := range notFound {
		if !apierrors.IsNotFound(tc.err) {
			t.Errorf("%s: err %v, want NotFound", tc.what, tc.err)
			continue
		}
		if md := apierrors.Metadata(tc.err); md["resource"] != tc.resource || md["name"] != tc.name {
			t.Errorf("%s: NotFound names %v, want resource %s and name %s", tc.what, md, tc.resource, tc.name)
		}
	}

	// Listers follow the cache.
	api.del(pod("a", "web-1", nil))
	api.put(pod("b", "web-2", map[string]string{"app": "web"}))
	pollUntil(t, "the delete and add", func() bool {
		return slices.Equal(names(pods.List(web)), []string{"a/web-2", "b/web-1", "b/web-2"})
	})
	if _, err := pods.Get("a", "web-1"); !apierrors.IsNotFound(err) {
		t.Errorf("deleted pod: err %v, want NotFound", err)
	}
}

func TestRegistrationsSyncOnceHandlersHaveEveryObject(t *testing.T) {
	api := newFakeAPI(node("n1"), node("n2"), node("n3"))
	f := NewFactory(api.start(t), Options{})
	nodes := For[*corev1.Node](f).Informer()

	release := make(chan struct{})
	var mu sync.Mutex
	var early, late []string
	slowReg := nodes.AddHandler(informer.Handler{OnAdd: func(o scheme.Object) {
		<-release
		mu.Lock()
		early = append(early, o.GetMetadata().GetName())
		mu.Unlock()
	}})
	started(t, f)

	// The cache has synced, but the handler has not had its objects.
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if WaitForCacheSync(short, slowReg) {
		t.Fatal("WaitForCacheSync returned true while the handler was still blocked")
	}

	// A handler added now gets the current nodes first and syncs on its own.
	lateReg := nodes.AddHandler(informer.Handler{OnAdd: func(o scheme.Object) {
		mu.Lock()
		late = append(late, o.GetMetadata().GetName())
		mu.Unlock()
	}})
	wait(t, func(ctx context.Context) bool { return WaitForCacheSync(ctx, lateReg) })
	mu.Lock()
	slices.Sort(late)
	if want := []string{"n1", "n2", "n3"}; !slices.Equal(late, want) {
		t.Errorf("late handler synced having had %q, want %q", late, want)
	}
	mu.Unlock()
	if slowReg.HasSynced() {
		t.Error("blocked handler's registration has synced")
	}

	close(release)
	wait(t, func(ctx context.Context) bool { return WaitForCacheSync(ctx, slowReg, lateReg, nodes) })
	mu.Lock()
	defer mu.Unlock()
	if len(early) != 3 {
		t.Errorf("handler synced having had %q, want all three nodes", early)
	}
}

func mustParse(t *testing.T, s string) labels.Selector {
	t.Helper()
	sel, err := labels.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func second[T any](_ T, err error) error { return err }

func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
