package endpoints

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	"skiff.dev/controller-manager/internal/controllers/endpointslice"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func testService(name string, mutate ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name,
			Labels: map[string]string{"team": "a"}, CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
		Spec: &corev1.ServiceSpec{
			Selector: map[string]string{"app": name}, ClusterIP: "10.96.0.10", IpFamilies: []string{"IPv4"},
			Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: metav1.IntOrStringFromString("http")}},
		},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

func testPod(app string, i int, ready bool, mutate ...func(*corev1.Pod)) *corev1.Pod {
	ip := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
	status := "True"
	if !ready {
		status = "False"
	}
	p := &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", app, i), Namespace: "default",
			Uid: fmt.Sprintf("pod-uid-%d", i), Labels: map[string]string{"app": app}},
		Spec: &corev1.PodSpec{NodeName: "node-1", Containers: []*corev1.Container{{Name: "c",
			Ports: []*corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: "TCP"}}}}},
		Status: &corev1.PodStatus{Phase: "Running", PodIP: ip, PodIPs: []*corev1.PodIP{{Ip: ip}},
			Conditions: []*corev1.PodCondition{{Type: "Ready", Status: status, LastTransitionTime: metav1.NewTime(time.Unix(2000, 0))}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

type harness struct {
	t   *testing.T
	cs  *fake.Clientset
	c   *Controller
	ctx context.Context
}

func newHarness(t *testing.T, objs ...scheme.Object) *harness {
	t.Helper()
	cs := fake.NewClientset(objs...)
	cc, _ := controllertest.Context(cs, controllers.Options{})
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cc.Informers.Start(ctx)
	t.Cleanup(func() {
		cancel()
		c.(*Controller).queue.ShutDown()
		cc.Informers.Shutdown()
		cs.Close()
	})
	if !informers.WaitForCacheSync(ctx, c.(*Controller).synced...) {
		t.Fatal("caches never synced")
	}
	return &harness{t: t, cs: cs, c: c.(*Controller), ctx: ctx}
}

// sync reconciles key, waiting out a cache that has not yet seen the
// controller's last write.
func (h *harness) sync(key string) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := h.c.reconcile(h.ctx, key)
		if err == nil {
			return
		}
		if !errors.Is(err, errStale) || time.Now().After(deadline) {
			h.t.Fatalf("reconcile %s: %v", key, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (h *harness) endpoints(name string) *corev1.Endpoints {
	h.t.Helper()
	k, _ := scheme.ForResource("", "endpoints")
	o, err := h.cs.Tracker().Get(k, "default", name)
	if err != nil {
		h.t.Fatalf("endpoints %s: %v", name, err)
	}
	return o.(*corev1.Endpoints)
}

func (h *harness) writes() []string {
	var out []string
	for _, a := range h.cs.Actions() {
		if a.Resource == "endpoints" && (a.Verb == "create" || a.Verb == "update" || a.Verb == "delete") {
			out = append(out, a.Verb+" "+a.Name)
		}
	}
	return out
}

func TestAddressesAndNotReadyAddresses(t *testing.T) {
	h := newHarness(t, testService("web"), testPod("web", 0, true), testPod("web", 1, false), testPod("web", 2, true),
		testPod("other", 3, true, func(p *corev1.Pod) { p.Metadata.Labels["app"] = "other" }))
	h.sync("default/web")
	e := h.endpoints("web")
	if got, want := show(e.Subsets), "{10.0.0.1,10.0.0.3|10.0.0.2|http:8080}"; got != want {
		t.Errorf("subsets = %s, want %s", got, want)
	}
	a := e.Subsets[0].Addresses[0]
	if a.GetNodeName() != "node-1" || a.GetTargetRef().GetName() != "web-0" || a.GetTargetRef().GetUid() != "pod-uid-0" || a.GetTargetRef().GetKind() != "Pod" {
		t.Errorf("address = %v", a)
	}
	l := e.GetMetadata().GetLabels()
	if l["team"] != "a" || l[LabelManagedBy] != ControllerName {
		t.Errorf("labels = %v, want the Service's and managed-by", l)
	}
	if _, ok := l[endpointslice.LabelHeadless]; ok {
		t.Error("a ClusterIP Service's Endpoints is labelled headless")
	}
	if e.GetMetadata().GetAnnotations()[endpointslice.AnnotationLastChangeTriggerTime] == "" {
		t.Error("no last-change-trigger-time annotation")
	}
	if _, ok := e.GetMetadata().GetAnnotations()[AnnotationOverCapacity]; ok {
		t.Error("over-capacity annotation under capacity")
	}

	// Unchanged: no write. A pod turning ready: one update.
	controllertest.Eventually(t, func() (bool, string) {
		_, err := h.c.endpoints.Get("default", "web")
		return err == nil, "the Endpoints never reached the cache"
	})
	h.cs.ClearActions()
	h.sync("default/web")
	if w := h.writes(); len(w) != 0 {
		t.Errorf("a sync without changes wrote %v", w)
	}
	p := testPod("web", 1, true)
	k, _ := scheme.ForResource("", "pods")
	cur, _ := h.cs.Tracker().Get(k, "default", "web-1")
	p.Metadata = cur.GetMetadata()
	updated, err := client.For[*corev1.Pod](h.cs.Client, "default").UpdateStatus(h.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		c, err := h.c.pods.Get("default", "web-1")
		return err == nil && c.GetMetadata().GetResourceVersion() == updated.GetMetadata().GetResourceVersion(), "the pod update never reached the cache"
	})
	h.sync("default/web")
	if w := h.writes(); fmt.Sprint(w) != "[update web]" {
		t.Errorf("writes = %v, want one update", w)
	}
	if got, want := show(h.endpoints("web").Subsets), "{10.0.0.1,10.0.0.2,10.0.0.3||http:8080}"; got != want {
		t.Errorf("subsets = %s, want %s", got, want)
	}
}

func TestCappedAtMaxCapacity(t *testing.T) {
	objs := []scheme.Object{testService("web")}
	for i := range 900 {
		objs = append(objs, testPod("web", i, true))
	}
	for i := 900; i < 1200; i++ {
		objs = append(objs, testPod("web", i, false))
	}
	h := newHarness(t, objs...)
	h.sync("default/web")
	e := h.endpoints("web")
	ready, notReady := countAddresses(e.Subsets)
	if ready != 900 || notReady != 100 {
		t.Errorf("%d ready and %d not ready addresses, want every ready one and 100 not ready", ready, notReady)
	}
	if got := e.GetMetadata().GetAnnotations()[AnnotationOverCapacity]; got != "truncated" {
		t.Errorf("%s = %q, want truncated", AnnotationOverCapacity, got)
	}
	// Still over capacity next time, but the truncated content is the
	// same: nothing to write.
	controllertest.Eventually(t, func() (bool, string) {
		_, err := h.c.endpoints.Get("default", "web")
		return err == nil, "the Endpoints never reached the cache"
	})
	h.cs.ClearActions()
	h.sync("default/web")
	if w := h.writes(); len(w) != 0 {
		t.Errorf("a sync without changes wrote %v", w)
	}
}

func TestTerminatingPods(t *testing.T) {
	terminating := func(p *corev1.Pod) { p.Metadata.DeletionTimestamp = metav1.NewTime(time.Unix(3000, 0)) }
	h := newHarness(t,
		testService("web"),
		testService("all", func(s *corev1.Service) {
			s.Spec.Selector = map[string]string{"app": "web"}
			s.Spec.PublishNotReadyAddresses = true
		}),
		testPod("web", 0, true), testPod("web", 1, true, terminating), testPod("web", 2, false))
	h.sync("default/web")
	h.sync("default/all")
	if got, want := show(h.endpoints("web").Subsets), "{10.0.0.1|10.0.0.3|http:8080}"; got != want {
		t.Errorf("web subsets = %s, want the terminating pod left out: %s", got, want)
	}
	if got, want := show(h.endpoints("all").Subsets), "{10.0.0.1,10.0.0.2,10.0.0.3||http:8080}"; got != want {
		t.Errorf("publishNotReadyAddresses subsets = %s, want every pod ready: %s", got, want)
	}
}

func TestHeadlessWithoutPorts(t *testing.T) {
	h := newHarness(t, testService("db", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.Ports = "None", nil }),
		testPod("db", 0, true, func(p *corev1.Pod) { p.Spec.Hostname, p.Spec.Subdomain = "db-0", "db" }))
	h.sync("default/db")
	e := h.endpoints("db")
	if got, want := show(e.Subsets), "{10.0.0.1||}"; got != want {
		t.Errorf("subsets = %s, want %s", got, want)
	}
	if got := e.Subsets[0].Addresses[0].GetHostname(); got != "db-0" {
		t.Errorf("hostname = %q, want db-0", got)
	}
	if _, ok := e.GetMetadata().GetLabels()[endpointslice.LabelHeadless]; !ok {
		t.Errorf("labels = %v, want %s", e.GetMetadata().GetLabels(), endpointslice.LabelHeadless)
	}
}

func TestNamedPortPerPod(t *testing.T) {
	h := newHarness(t, testService("web"), testPod("web", 0, true),
		testPod("web", 1, true, func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].ContainerPort = 9090 }))
	h.sync("default/web")
	if got, want := show(h.endpoints("web").Subsets), "{10.0.0.1||http:8080} {10.0.0.2||http:9090}"; got != want {
		t.Errorf("subsets = %s, want %s", got, want)
	}
}

func TestServiceWithoutSelectorIsLeftAlone(t *testing.T) {
	mine := &corev1.Endpoints{Metadata: &metav1.ObjectMeta{Name: "ext", Namespace: "default"},
		Subsets: []*corev1.EndpointSubset{subset([]string{"192.0.2.1"}, nil, port("", 443))}}
	h := newHarness(t, testService("ext", func(s *corev1.Service) { s.Spec.Selector = nil }), mine, testPod("ext", 0, true))
	h.cs.ClearActions()
	h.sync("default/ext")
	if w := h.writes(); len(w) != 0 {
		t.Errorf("writes = %v, want none", w)
	}
	if got := show(h.endpoints("ext").Subsets); got != "{192.0.2.1||:443}" {
		t.Errorf("subsets = %s, want the user's", got)
	}
}

func TestDeletedWithItsService(t *testing.T) {
	h := newHarness(t, testService("web"), testPod("web", 0, true))
	h.sync("default/web")
	if _, err := client.For[*corev1.Service](h.cs.Client, "default").Delete(h.ctx, "web", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		_, err := h.c.services.Get("default", "web")
		return err != nil, "the Service deletion never reached the cache"
	})
	h.sync("default/web")
	k, _ := scheme.ForResource("", "endpoints")
	if objs := h.cs.Tracker().List(k, "default"); len(objs) != 0 {
		t.Errorf("%d Endpoints left after the Service went", len(objs))
	}
}

func TestRunCleansUpLeftovers(t *testing.T) {
	orphan := &corev1.Endpoints{Metadata: &metav1.ObjectMeta{Name: "gone", Namespace: "default",
		Labels: map[string]string{LabelManagedBy: ControllerName}}}
	users := &corev1.Endpoints{Metadata: &metav1.ObjectMeta{Name: "mine", Namespace: "default"}}
	cs := fake.NewClientset(orphan, users, testService("web"), testPod("web", 0, true))
	defer cs.Close()
	cc, _ := controllertest.Context(cs, controllers.Options{})
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "endpoint" {
		t.Errorf("Name() = %q", c.Name())
	}
	controllertest.Run(t, cc, c)
	k, _ := scheme.ForResource("", "endpoints")
	names := func() string {
		var out []string
		for _, o := range cs.Tracker().List(k, "default") {
			out = append(out, o.GetMetadata().GetName())
		}
		return fmt.Sprint(out)
	}
	controllertest.Eventually(t, func() (bool, string) {
		return names() == "[mine web]", "Endpoints are " + names() + ", want the user's and web's, the orphan deleted"
	})
}
