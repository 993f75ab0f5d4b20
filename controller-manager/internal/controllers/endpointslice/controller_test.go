package endpointslice

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// harness runs the informers of a controller over a fake clientset, and
// lets a test call reconcile itself.
type harness struct {
	t   *testing.T
	cs  *fake.Clientset
	c   *Controller
	ctx context.Context
}

func testNode(name, zone string) *corev1.Node {
	return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelTopologyZone: zone}}}
}

func newHarness(t *testing.T, objs ...scheme.Object) *harness {
	t.Helper()
	cs := fake.NewClientset(append([]scheme.Object{testNode("node-1", "zone-a")}, objs...)...)
	cc, _ := controllertest.Context(cs, controllers.Options{})
	c, err := NewWithConfig(cc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cc.Informers.Start(ctx)
	t.Cleanup(func() {
		cancel()
		c.queue.ShutDown()
		cc.Informers.Shutdown()
		cs.Close()
	})
	if !informers.WaitForCacheSync(ctx, c.synced...) {
		t.Fatal("caches never synced")
	}
	return &harness{t: t, cs: cs, c: c, ctx: ctx}
}

// sync reconciles key once the cache has caught up with the controller's
// last writes (a stale cache refuses, as it should).
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

// settle waits until the controller's caches hold what the apiserver holds
// for the kinds it writes and reads, so a following sync sees it all.
func (h *harness) settle() {
	h.t.Helper()
	controllertest.Eventually(h.t, func() (bool, string) {
		for _, k := range []string{"endpointslices", "pods", "services"} {
			kind, _ := scheme.ForResource(map[string]string{"endpointslices": "discovery.k8s.io"}[k], k)
			want := map[string]string{}
			for _, o := range h.cs.Tracker().List(kind, "default") {
				want[o.GetMetadata().GetName()] = o.GetMetadata().GetResourceVersion()
			}
			got := map[string]string{}
			var cached []scheme.Object
			switch k {
			case "endpointslices":
				for _, o := range h.c.slices.Namespace("default").List(nil) {
					cached = append(cached, o)
				}
			case "pods":
				for _, o := range h.c.pods.Namespace("default").List(nil) {
					cached = append(cached, o)
				}
			case "services":
				for _, o := range h.c.services.Namespace("default").List(nil) {
					cached = append(cached, o)
				}
			}
			for _, o := range cached {
				got[o.GetMetadata().GetName()] = o.GetMetadata().GetResourceVersion()
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return false, fmt.Sprintf("%s cache %v, apiserver %v", k, got, want)
			}
		}
		return true, ""
	})
}

func (h *harness) slices() []*discoveryv1.EndpointSlice {
	kind, _ := scheme.ForResource("discovery.k8s.io", "endpointslices")
	var out []*discoveryv1.EndpointSlice
	for _, o := range h.cs.Tracker().List(kind, "default") {
		out = append(out, o.(*discoveryv1.EndpointSlice))
	}
	return out
}

// writes are the endpointslice requests since the last ClearActions.
func (h *harness) writes() []string {
	var out []string
	for _, a := range h.cs.Actions() {
		if a.Resource == "endpointslices" && a.Verb != "list" && a.Verb != "watch" && a.Verb != "get" {
			out = append(out, a.Verb)
		}
	}
	return out
}

// endpointsByPod are the endpoints of every slice by pod name.
func endpointsByPod(ss []*discoveryv1.EndpointSlice) map[string]*discoveryv1.Endpoint {
	out := map[string]*discoveryv1.Endpoint{}
	for _, s := range ss {
		for _, ep := range s.GetEndpoints() {
			out[ep.GetTargetRef().GetName()] = ep
		}
	}
	return out
}

func conditions(ep *discoveryv1.Endpoint) string {
	c := ep.GetConditions()
	return fmt.Sprintf("ready=%t serving=%t terminating=%t", c.GetReady(), c.GetServing(), c.GetTerminating())
}

func objects[T scheme.Object](objs ...[]T) []scheme.Object {
	var out []scheme.Object
	for _, os := range objs {
		for _, o := range os {
			out = append(out, o)
		}
	}
	return out
}

func TestSlicesForReadyPods(t *testing.T) {
	svc := testService("web")
	h := newHarness(t, append(objects(testPods("web", 3)), svc, testPod("other", 0))...)
	h.sync("default/web")

	ss := h.slices()
	if len(ss) != 1 {
		t.Fatalf("%d slices, want 1", len(ss))
	}
	s := ss[0]
	if s.GetAddressType() != "IPv4" || len(s.GetEndpoints()) != 3 {
		t.Fatalf("slice = %s, want the 3 web pods in IPv4", describe(s))
	}
	for name, ep := range endpointsByPod(ss) {
		if conditions(ep) != "ready=true serving=true terminating=false" || ep.GetZone() != "zone-a" || ep.GetNodeName() != "node-1" {
			t.Errorf("%s: %s zone %q node %q, want ready and serving in zone-a on node-1", name, conditions(ep), ep.GetZone(), ep.GetNodeName())
		}
	}
	m := s.GetMetadata()
	if m.GetLabels()[LabelServiceName] != "web" || m.GetLabels()[LabelManagedBy] != ControllerName {
		t.Errorf("labels = %v", m.GetLabels())
	}
	if _, headless := m.GetLabels()[LabelHeadless]; headless {
		t.Error("a ClusterIP Service's slice is labelled headless")
	}
	if ref := m.GetOwnerReferences(); len(ref) != 1 || ref[0].GetUid() != "uid-web" || !ref[0].GetController() {
		t.Errorf("ownerReferences = %v", ref)
	}
	if m.GetAnnotations()[AnnotationLastChangeTriggerTime] == "" {
		t.Error("no last-change-trigger-time annotation on the first write")
	}
	if got := testutil.ToFloat64(h.c.metrics.changes.WithLabelValues("create")); got != 1 {
		t.Errorf("changes{operation=create} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.c.metrics.desired); got != 3 {
		t.Errorf("endpoints_desired = %v, want 3", got)
	}

	// A second sync of the same state writes nothing.
	h.settle()
	h.cs.ClearActions()
	h.sync("default/web")
	if w := h.writes(); len(w) != 0 {
		t.Errorf("a sync without changes wrote %v", w)
	}
}

func TestPodTurningNotReadyUpdatesInPlace(t *testing.T) {
	h := newHarness(t, append(objects(testPods("web", 3)), testService("web"))...)
	h.sync("default/web")
	h.settle()
	before := h.slices()

	p := testPod("web", 1, notReady)
	kind, _ := scheme.ForResource("", "pods")
	cur, _ := h.cs.Tracker().Get(kind, "default", "web-1")
	p.Metadata = cur.GetMetadata()
	if _, err := client.For[*corev1.Pod](h.cs.Client, "default").UpdateStatus(h.ctx, p); err != nil {
		t.Fatal(err)
	}
	h.settle()
	h.cs.ClearActions()
	h.sync("default/web")

	if w := h.writes(); fmt.Sprint(w) != "[update]" {
		t.Fatalf("writes = %v, want exactly one update", w)
	}
	after := h.slices()
	if len(after) != 1 || after[0].GetMetadata().GetName() != before[0].GetMetadata().GetName() {
		t.Fatalf("slices %s became %s, want the same slice", describeAll(before), describeAll(after))
	}
	eps := endpointsByPod(after)
	if got := conditions(eps["web-1"]); got != "ready=false serving=false terminating=false" {
		t.Errorf("web-1: %s, want not ready and not serving", got)
	}
	if got := conditions(eps["web-0"]); got != "ready=true serving=true terminating=false" {
		t.Errorf("web-0: %s, want unchanged", got)
	}
	if describe(after[0]) != describe(before[0]) {
		t.Errorf("endpoint order changed: %s → %s", describe(before[0]), describe(after[0]))
	}
}

func TestTerminatingPodIsServingAndTerminating(t *testing.T) {
	h := newHarness(t, append(objects(testPods("web", 2)), testService("web"))...)
	h.sync("default/web")
	h.settle()
	// A pod bound to a node is deleted gracefully: it keeps running, with
	// a deletionTimestamp, until the kubelet confirms.
	if _, err := client.For[*corev1.Pod](h.cs.Client, "default").Delete(h.ctx, "web-0", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.settle()
	h.sync("default/web")
	eps := endpointsByPod(h.slices())
	if got := conditions(eps["web-0"]); got != "ready=false serving=true terminating=true" {
		t.Errorf("terminating web-0: %s, want not ready, serving, terminating", got)
	}
	if got := conditions(eps["web-1"]); got != "ready=true serving=true terminating=false" {
		t.Errorf("web-1: %s", got)
	}
}

func TestManyPodsAndOnePodChanging(t *testing.T) {
	h := newHarness(t, append(objects(testPods("web", 250)), testService("web"))...)
	h.sync("default/web")
	ss := h.slices()
	sort.Slice(ss, func(i, j int) bool { return len(ss[i].Endpoints) > len(ss[j].Endpoints) })
	if got := sizes(ss); !slices.Equal(got, []int{100, 100, 50}) {
		t.Fatalf("slice sizes = %v, want 100, 100, 50", got)
	}
	if n := len(endpointsByPod(ss)); n != 250 {
		t.Fatalf("%d pods in slices, want each of the 250 once", n)
	}
	h.settle()

	p := testPod("web", 137, notReady)
	kind, _ := scheme.ForResource("", "pods")
	cur, _ := h.cs.Tracker().Get(kind, "default", "web-137")
	p.Metadata = cur.GetMetadata()
	if _, err := client.For[*corev1.Pod](h.cs.Client, "default").UpdateStatus(h.ctx, p); err != nil {
		t.Fatal(err)
	}
	h.settle()
	h.cs.ClearActions()
	h.sync("default/web")
	var touched []string
	for _, a := range h.cs.Actions() {
		if a.Resource == "endpointslices" && a.Verb != "list" && a.Verb != "watch" {
			touched = append(touched, a.Verb+" "+a.Name)
		}
	}
	if len(touched) != 1 {
		t.Fatalf("writes = %v, want one update of the slice holding web-137", touched)
	}
	for _, s := range h.slices() {
		for _, ep := range s.Endpoints {
			if ep.GetTargetRef().GetName() == "web-137" && "update "+s.GetMetadata().GetName() != touched[0] {
				t.Errorf("web-137 is in %s but %s was written", s.GetMetadata().GetName(), touched[0])
			}
		}
	}
}

func TestNamedTargetPortResolvedPerPod(t *testing.T) {
	svc := testService("web", func(s *corev1.Service) { s.Spec.Ports[0].TargetPort = metav1.IntOrStringFromString("http") })
	moved := testPod("web", 2, func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].ContainerPort = 9090 })
	noPort := testPod("web", 3, func(p *corev1.Pod) { p.Spec.Containers[0].Ports = nil })
	h := newHarness(t, testPod("web", 0), testPod("web", 1), moved, noPort, svc)
	h.sync("default/web")

	byPort := map[string][]string{}
	for _, s := range h.slices() {
		var ports []int32
		for _, p := range s.Ports {
			ports = append(ports, p.GetPort())
		}
		for _, ep := range s.Endpoints {
			k := fmt.Sprint(ports)
			byPort[k] = append(byPort[k], ep.GetTargetRef().GetName())
		}
	}
	// A pod without the named port serves none of the Service's ports: it
	// gets a slice of its own without ports, as upstream.
	if got := fmt.Sprint(byPort); got != "map[[8080]:[web-0 web-1] [9090]:[web-2] []:[web-3]]" {
		t.Errorf("pods by port = %s", got)
	}
}

func TestHeadlessService(t *testing.T) {
	svc := testService("db", func(s *corev1.Service) {
		s.Spec.ClusterIP, s.Spec.Ports = "None", nil
	})
	pods := testPods("db", 2, func(p *corev1.Pod) { p.Spec.Subdomain = "db" })
	pods[0].Spec.Hostname, pods[1].Spec.Hostname = "db-0", "db-1"
	h := newHarness(t, append(objects(pods), svc)...)
	h.sync("default/db")
	ss := h.slices()
	if len(ss) != 1 || len(ss[0].Endpoints) != 2 {
		t.Fatalf("slices = %s, want both pods in one", describeAll(ss))
	}
	if _, ok := ss[0].GetMetadata().GetLabels()[LabelHeadless]; !ok {
		t.Errorf("labels = %v, want %s", ss[0].GetMetadata().GetLabels(), LabelHeadless)
	}
	if len(ss[0].Ports) != 0 {
		t.Errorf("ports = %v, want none for a headless Service without ports", ss[0].Ports)
	}
	for name, ep := range endpointsByPod(ss) {
		if ep.GetHostname() != name {
			t.Errorf("%s: hostname %q", name, ep.GetHostname())
		}
	}
}

func TestServiceWithoutSelectorIsLeftAlone(t *testing.T) {
	svc := testService("ext", func(s *corev1.Service) { s.Spec.Selector = nil })
	mine := &discoveryv1.EndpointSlice{
		Metadata:    &metav1.ObjectMeta{Name: "ext-1", Namespace: "default", Labels: map[string]string{LabelServiceName: "ext"}},
		AddressType: "IPv4",
		Endpoints:   []*discoveryv1.Endpoint{{Addresses: []string{"192.0.2.1"}}},
	}
	h := newHarness(t, svc, mine, testPod("ext", 0))
	h.cs.ClearActions()
	h.sync("default/ext")
	if w := h.writes(); len(w) != 0 {
		t.Errorf("writes = %v, want none", w)
	}
	if ss := h.slices(); len(ss) != 1 || !proto.Equal(ss[0].Endpoints[0], mine.Endpoints[0]) {
		t.Errorf("slices = %s, want the user's slice untouched", describeAll(ss))
	}
}

func TestDeletedServiceIsForgotten(t *testing.T) {
	h := newHarness(t, append(objects(testPods("web", 2)), testService("web"))...)
	h.sync("default/web")
	h.settle()
	if _, err := client.For[*corev1.Service](h.cs.Client, "default").Delete(h.ctx, "web", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.settle()
	h.cs.ClearActions()
	h.sync("default/web")
	// The slices are the garbage collector's (owner reference); the
	// controller only drops its state.
	if w := h.writes(); len(w) != 0 {
		t.Errorf("writes = %v, want none", w)
	}
	if got := testutil.ToFloat64(h.c.metrics.desired); got != 0 {
		t.Errorf("endpoints_desired = %v after the Service went, want 0", got)
	}
	if got := testutil.ToFloat64(h.c.metrics.numSlices); got != 0 {
		t.Errorf("num_endpoint_slices = %v after the Service went, want 0", got)
	}
}

func TestRunFollowsPods(t *testing.T) {
	cs := fake.NewClientset(testNode("node-1", "zone-a"), testService("web"), testPod("web", 0))
	defer cs.Close()
	cc, _ := controllertest.Context(cs, controllers.Options{})
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "endpointslice" {
		t.Errorf("Name() = %q", c.Name())
	}
	controllertest.Run(t, cc, c)
	kind, _ := scheme.ForResource("discovery.k8s.io", "endpointslices")
	podsInSlices := func() string {
		var ss []*discoveryv1.EndpointSlice
		for _, o := range cs.Tracker().List(kind, "default") {
			ss = append(ss, o.(*discoveryv1.EndpointSlice))
		}
		var names []string
		for n := range endpointsByPod(ss) {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Sprint(names)
	}
	controllertest.Eventually(t, func() (bool, string) {
		return podsInSlices() == "[web-0]", "slices hold " + podsInSlices()
	})
	// A new pod joins once it runs: the apiserver creates it Pending,
	// without an IP, and the kubelet reports it started and ready.
	pods := client.For[*corev1.Pod](cs.Client, "default")
	want := testPod("web", 1)
	created, err := pods.Create(context.Background(), want)
	if err != nil {
		t.Fatal(err)
	}
	created.Status = testPod("web", 1).Status
	if _, err := pods.UpdateStatus(context.Background(), created); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		return podsInSlices() == "[web-0 web-1]", "slices hold " + podsInSlices() + " after web-1 started"
	})
}
