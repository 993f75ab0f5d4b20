package metricsapi

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	metricsv1beta1 "skiff.dev/proto/api/metrics/v1beta1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/selection"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// exposition is a kubelet's /metrics/resource at t: cpu is cumulative
// core-seconds.
func exposition(t time.Time, nodeCPU float64, pods map[string]float64) string {
	ms := t.UnixMilli()
	var b strings.Builder
	b.WriteString("# HELP node_cpu_usage_seconds_total Cumulative cpu time consumed by the node in core-seconds\n")
	b.WriteString("# TYPE node_cpu_usage_seconds_total counter\n")
	fmt.Fprintf(&b, "node_cpu_usage_seconds_total %g %d\n", nodeCPU, ms)
	fmt.Fprintf(&b, "node_memory_working_set_bytes %d %d\n", 2<<30, ms)
	for pod, cpu := range pods {
		fmt.Fprintf(&b, "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=%q} %g %d\n", pod, cpu, ms)
		fmt.Fprintf(&b, "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=%q} %d %d\n", pod, 10<<20, ms)
		fmt.Fprintf(&b, "container_start_time_seconds{container=\"app\",namespace=\"default\",pod=%q} %d %d\n", pod, t0.Unix()-100, ms)
	}
	b.WriteString("scrape_error 0\n")
	return b.String()
}

func TestDecodeReadsResourceMetrics(t *testing.T) {
	b, err := Decode(strings.NewReader(exposition(t0, 12.5, map[string]float64{"web-0": 1.25})), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if b.Node == nil || b.Node.CPU != 12_500_000_000 || b.Node.Memory != 2<<30 || !b.Node.Time.Equal(t0) {
		t.Fatalf("node sample = %+v, want 12.5 core-seconds, 2Gi at %v", b.Node, t0)
	}
	s, ok := b.Pods[PodRef{"default", "web-0"}]["app"]
	if !ok || s.CPU != 1_250_000_000 || s.Memory != 10<<20 || s.StartTime.Unix() != t0.Unix()-100 {
		t.Fatalf("container sample = %+v (found %v)", s, ok)
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	if _, err := Decode(strings.NewReader("container_cpu_usage_seconds_total{pod=\"x 1\n"), time.Now()); err == nil {
		t.Fatal("an unterminated label decoded without error")
	}
}

func TestCPURateFromTwoScrapes(t *testing.T) {
	st := newStore()
	round := func(at time.Time, nodeCPU, podCPU float64) {
		b, err := Decode(strings.NewReader(exposition(at, nodeCPU, map[string]float64{"web-0": podCPU})), at)
		if err != nil {
			t.Fatal(err)
		}
		st.Store(map[string]*Batch{"n1": b})
	}
	round(t0, 100, 10)
	if _, ok := st.Node("n1"); ok {
		t.Fatal("node has usage after one sample")
	}
	if _, _, ok := st.Pod(PodRef{"default", "web-0"}); ok {
		t.Fatal("pod has usage after one sample")
	}
	// 15 s later: the node used 3 core-seconds (200m), the pod 0.0015 (100µ cores = 100000n).
	round(t0.Add(15*time.Second), 103, 10.0015)
	u, ok := st.Node("n1")
	if !ok {
		t.Fatal("node has no usage after two samples")
	}
	rl := u.ResourceList()
	if got := rl["cpu"].GetString_(); got != "200m" {
		t.Errorf("node cpu = %s, want 200m", got)
	}
	if got := rl["memory"].GetString_(); got != "2Gi" {
		t.Errorf("node memory = %s, want 2Gi", got)
	}
	if u.Window != 15*time.Second || !u.Timestamp.Equal(t0.Add(15*time.Second)) {
		t.Errorf("window %v at %v, want 15s at the second sample", u.Window, u.Timestamp)
	}
	ctrs, _, ok := st.Pod(PodRef{"default", "web-0"})
	if !ok || len(ctrs) != 1 {
		t.Fatalf("pod usage %v, %v", ctrs, ok)
	}
	if got := ctrs[0].ResourceList()["cpu"].GetString_(); got != "100u" && got != "100000n" {
		t.Errorf("container cpu = %s, want 100000n", got)
	}
	if got := ctrs[0].ResourceList()["memory"].GetString_(); got != "10Mi" {
		t.Errorf("container memory = %s, want 10Mi", got)
	}
	// A counter that goes back (the node rebooted) is no base for a rate.
	round(t0.Add(30*time.Second), 1, 10.003)
	if _, ok := st.Node("n1"); ok {
		t.Error("node kept usage across a counter reset")
	}
	// A node that does not answer loses its metrics.
	st.Store(map[string]*Batch{})
	if _, _, ok := st.Pod(PodRef{"default", "web-0"}); ok {
		t.Error("pod kept usage after its node stopped answering")
	}
}

// fakeScraper answers each node with the next scripted exposition.
type fakeScraper struct{ bodies map[string][]string }

func (f *fakeScraper) Scrape(_ context.Context, n *corev1.Node) (*Batch, error) {
	name := n.GetMetadata().GetName()
	q := f.bodies[name]
	if len(q) == 0 {
		return nil, fmt.Errorf("node %s: connection refused", name)
	}
	f.bodies[name] = q[1:]
	return Decode(strings.NewReader(q[0]), time.Now())
}

type fakeObjects struct {
	nodes []*corev1.Node
	pods  []*corev1.Pod
}

func (f *fakeObjects) Nodes(_ context.Context, ls, _ string) ([]*corev1.Node, error) {
	sel, err := selection.ParseLabels(ls)
	if err != nil {
		return nil, err
	}
	var out []*corev1.Node
	for _, n := range f.nodes {
		if sel.Matches(selection.Labels(n)) {
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *fakeObjects) Node(_ context.Context, name string) (*corev1.Node, error) {
	for _, n := range f.nodes {
		if n.GetMetadata().GetName() == name {
			return n, nil
		}
	}
	return nil, apierrors.NewNotFound("nodes", name)
}

func (f *fakeObjects) Pods(_ context.Context, ns, ls, _ string) ([]*corev1.Pod, error) {
	sel, err := selection.ParseLabels(ls)
	if err != nil {
		return nil, err
	}
	var out []*corev1.Pod
	for _, p := range f.pods {
		if (ns == "" || p.GetMetadata().GetNamespace() == ns) && sel.Matches(selection.Labels(p)) {
			out = append(out, p)
		}
	}
	return out, nil
}

func (f *fakeObjects) Pod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	for _, p := range f.pods {
		if p.GetMetadata().GetNamespace() == ns && p.GetMetadata().GetName() == name {
			return p, nil
		}
	}
	return nil, apierrors.NewNotFound("pods", name)
}

func node(name string, ready bool, labels map[string]string) *corev1.Node {
	st := "False"
	if ready {
		st = "True"
	}
	return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: name, Labels: labels},
		Status: &corev1.NodeStatus{Conditions: []*corev1.NodeCondition{{Type: "Ready", Status: st}}}}
}

func pod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app"}}}}
}

func TestGetAndListOverAFakeScraper(t *testing.T) {
	ctx := context.Background()
	objs := &fakeObjects{
		nodes: []*corev1.Node{node("n1", true, map[string]string{"zone": "a"}), node("n2", true, map[string]string{"zone": "b"}), node("down", false, nil)},
		pods:  []*corev1.Pod{pod("web-0", map[string]string{"app": "web"}), pod("web-1", map[string]string{"app": "web"}), pod("db-0", map[string]string{"app": "db"})},
	}
	sc := &fakeScraper{bodies: map[string][]string{
		"n1": {exposition(t0, 10, map[string]float64{"web-0": 1, "db-0": 1}), exposition(t0.Add(10*time.Second), 11, map[string]float64{"web-0": 3, "db-0": 1.5})},
		// n2 reports web-1 only in its second scrape: one sample, no metrics.
		"n2": {exposition(t0, 20, nil), exposition(t0.Add(10*time.Second), 25, map[string]float64{"web-1": 1})},
		// down is not Ready: never scraped (a scrape would consume this).
		"down": {exposition(t0, 1, nil)},
	}}
	s := New(Config{Objects: objs, Scraper: sc, Resolution: time.Second})

	if _, err := s.Get(ctx, podMetricsKind, "default", "web-0"); apierrors.ReasonOf(err) != apierrors.ReasonNotFound {
		t.Fatalf("get before any scrape: %v, want NotFound", err)
	}
	s.ScrapeOnce(ctx)
	s.ScrapeOnce(ctx)
	if len(sc.bodies["down"]) != 1 {
		t.Error("a NotReady node was scraped")
	}

	o, err := s.Get(ctx, podMetricsKind, "default", "web-0")
	if err != nil {
		t.Fatal(err)
	}
	pm := o.(*metricsv1beta1.PodMetrics)
	if got := pm.GetContainers()[0].GetUsage()["cpu"].GetString_(); got != "200m" {
		t.Errorf("web-0 cpu = %s, want 200m (2 core-seconds over 10s)", got)
	}
	if pm.GetMetadata().GetLabels()["app"] != "web" || pm.GetWindow().GetDuration() != int64(10*time.Second) {
		t.Errorf("web-0 metrics carry labels %v and window %v", pm.GetMetadata().GetLabels(), time.Duration(pm.GetWindow().GetDuration()))
	}
	if _, err := s.Get(ctx, podMetricsKind, "default", "web-1"); apierrors.ReasonOf(err) != apierrors.ReasonNotFound ||
		!strings.Contains(err.Error(), `podmetrics.metrics.k8s.io "default/web-1" not found`) {
		t.Errorf("get of a pod with one sample: %v, want podmetrics.metrics.k8s.io \"default/web-1\" not found", err)
	}
	if _, err := s.Get(ctx, podMetricsKind, "default", "nope"); apierrors.ReasonOf(err) != apierrors.ReasonNotFound {
		t.Errorf("get of a missing pod: %v, want NotFound", err)
	}

	list, err := s.List(ctx, podMetricsKind, "default", "app=web", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].GetMetadata().GetName() != "web-0" {
		t.Errorf("list app=web = %v, want only web-0 (web-1 has one sample)", names(list))
	}
	list, _ = s.List(ctx, podMetricsKind, "", "", "")
	if got := names(list); got != "db-0,web-0" {
		t.Errorf("list all pods = %s, want db-0,web-0", got)
	}

	nl, err := s.List(ctx, nodeMetricsKind, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(nl); got != "n1,n2" {
		t.Errorf("node metrics = %s, want n1,n2", got)
	}
	nl, _ = s.List(ctx, nodeMetricsKind, "", "zone=b", "")
	if got := names(nl); got != "n2" {
		t.Errorf("node metrics zone=b = %s, want n2", got)
	}
	no, err := s.Get(ctx, nodeMetricsKind, "", "n2")
	if err != nil {
		t.Fatal(err)
	}
	if got := no.(*metricsv1beta1.NodeMetrics).GetUsage()["cpu"].GetString_(); got != "500m" {
		t.Errorf("n2 cpu = %s, want 500m", got)
	}
	if _, err := s.Get(ctx, nodeMetricsKind, "", "down"); apierrors.ReasonOf(err) != apierrors.ReasonNotFound {
		t.Errorf("get of an unscraped node: %v, want NotFound", err)
	}

	// n1 stops answering: its pods and itself drop out on the next round.
	s.ScrapeOnce(ctx)
	if _, err := s.Get(ctx, podMetricsKind, "default", "web-0"); apierrors.ReasonOf(err) != apierrors.ReasonNotFound {
		t.Errorf("get after the node stopped answering: %v, want NotFound", err)
	}
}

func names[T interface{ GetMetadata() *metav1.ObjectMeta }](l []T) string {
	var out []string
	for _, o := range l {
		out = append(out, o.GetMetadata().GetName())
	}
	return strings.Join(out, ",")
}
