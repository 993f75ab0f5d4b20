package nodelifecycle

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

var testOptions = controllers.Options{
	NodeMonitorGracePeriod:    40 * time.Second,
	NodeMonitorPeriod:         5 * time.Second,
	NodeStartupGracePeriod:    time.Minute,
	NodeEvictionRate:          0.1,
	SecondaryNodeEvictionRate: 0.01,
	LargeClusterSizeThreshold: 50,
	UnhealthyZoneThreshold:    0.55,
}

func microTimeOf(t time.Time) *metav1.MicroTime {
	return &metav1.MicroTime{Seconds: t.Unix(), Nanos: int32(t.Nanosecond())}
}

// newNode is a node the kubelet reported Ready at t0, in zone (none if "").
func newNode(name, zone string) *corev1.Node {
	n := &corev1.Node{
		Metadata: &metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour))},
		Spec:     &corev1.NodeSpec{},
		Status:   &corev1.NodeStatus{Conditions: kubeletConditions(condTrue, t0)},
	}
	if zone != "" {
		n.Metadata.Labels = map[string]string{labelTopologyZone: zone}
	}
	return n
}

func kubeletConditions(ready string, at time.Time) []*corev1.NodeCondition {
	var out []*corev1.NodeCondition
	for _, typ := range []string{"MemoryPressure", "DiskPressure", "PIDPressure", "Ready"} {
		status, reason := condFalse, "KubeletHasNo"+typ
		if typ == "Ready" {
			status, reason = ready, "KubeletReady"
		}
		out = append(out, &corev1.NodeCondition{Type: typ, Status: status, Reason: reason,
			LastHeartbeatTime: metav1.NewTime(at), LastTransitionTime: metav1.NewTime(at)})
	}
	return out
}

func newLease(node string, renewed time.Time) *coordinationv1.Lease {
	return &coordinationv1.Lease{Metadata: &metav1.ObjectMeta{Name: node, Namespace: nodeLeaseNamespace},
		Spec: &coordinationv1.LeaseSpec{HolderIdentity: &node, RenewTime: microTimeOf(renewed)}}
}

func newPod(name, node string, tols ...*corev1.Toleration) *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:     &corev1.PodSpec{NodeName: node, Tolerations: tols, Containers: []*corev1.Container{{Name: "c", Image: "busybox"}}},
		Status: &corev1.PodStatus{Phase: "Running", Conditions: []*corev1.PodCondition{
			{Type: "Ready", Status: condTrue, Reason: "", LastTransitionTime: metav1.NewTime(t0)}}},
	}
}

func tolerate(key string, seconds *int64) *corev1.Toleration {
	return &corev1.Toleration{Key: key, Operator: "Exists", Effect: effectNoExecute, TolerationSeconds: seconds}
}

func seconds(s int64) *int64 { return &s }

// harness drives the controller's loops by hand, one pass at a time on a
// fake clock, and waits after each for the informers to see its writes:
// what Run does on tickers, in a fixed order.
type harness struct {
	t     *testing.T
	ctx   context.Context
	cs    *fake.Clientset
	clock *fakeClock
	c     *Controller
	rec   *record.FakeRecorder
	reg   *prometheus.Registry
	// alive are the nodes whose kubelet renews its lease every tick.
	alive []string
}

func newHarness(t *testing.T, opts controllers.Options, objs ...scheme.Object) *harness {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	cc, rec := controllertest.Context(cs, opts)
	clock := &fakeClock{t: t0}
	cc.Now = clock.Now
	ctrl, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	c := ctrl.(*Controller)
	ctx, cancel := context.WithCancel(context.Background())
	cc.Informers.Start(ctx)
	t.Cleanup(func() {
		cancel()
		cc.Informers.Shutdown()
	})
	if !informers.WaitForCacheSync(ctx, c.synced...) {
		t.Fatal("caches did not sync")
	}
	return &harness{t: t, ctx: ctx, cs: cs, clock: clock, c: c, rec: rec, reg: cc.Registerer.(*prometheus.Registry)}
}

func kindOf(m scheme.Object) *scheme.Kind {
	k, _ := scheme.ForMessage(m)
	return k
}

// settle waits until the caches hold what the tracker holds.
func (h *harness) settle() {
	h.t.Helper()
	controllertest.Eventually(h.t, func() (bool, string) {
		for _, o := range h.cs.Tracker().List(kindOf(&corev1.Node{}), "") {
			n, err := h.c.nodes.Get("", o.GetMetadata().GetName())
			if err != nil || n.GetMetadata().GetResourceVersion() != o.GetMetadata().GetResourceVersion() {
				return false, "node cache behind: " + o.GetMetadata().GetName()
			}
		}
		for _, o := range h.cs.Tracker().List(kindOf(&corev1.Pod{}), "") {
			p, err := h.c.pods.Get(o.GetMetadata().GetNamespace(), o.GetMetadata().GetName())
			if err != nil || p.GetMetadata().GetResourceVersion() != o.GetMetadata().GetResourceVersion() {
				return false, "pod cache behind: " + o.GetMetadata().GetName()
			}
		}
		for _, o := range h.cs.Tracker().List(kindOf(&coordinationv1.Lease{}), "") {
			l, err := h.c.leases.Get(o.GetMetadata().GetNamespace(), o.GetMetadata().GetName())
			if err != nil || l.GetMetadata().GetResourceVersion() != o.GetMetadata().GetResourceVersion() {
				return false, "lease cache behind: " + o.GetMetadata().GetName()
			}
		}
		return true, ""
	})
}

// tick moves the clock one monitor period on, has the live kubelets renew
// their leases, and makes a pass.
func (h *harness) tick() {
	h.t.Helper()
	h.clock.Step(h.c.monitorPeriod)
	h.renew(h.alive...)
	h.pass()
}

// pass runs every loop once: health, the zone queues, each node's
// NoSchedule pass, each node's evictions.
func (h *harness) pass() {
	h.t.Helper()
	if err := h.c.monitorNodeHealth(h.ctx); err != nil {
		h.t.Fatal(err)
	}
	h.settle()
	h.c.doNoExecuteTaintingPass(h.ctx)
	h.settle()
	for _, n := range h.c.nodes.List(nil) {
		if err := h.c.doNoScheduleTaintingPass(h.ctx, n.GetMetadata().GetName()); err != nil {
			h.t.Fatal(err)
		}
	}
	h.settle()
	for _, n := range h.c.nodes.List(nil) {
		if err := h.c.eviction.sync(h.ctx, n.GetMetadata().GetName()); err != nil {
			h.t.Fatal(err)
		}
	}
	h.settle()
}

// elapsed is the fake time since t0.
func (h *harness) elapsed() time.Duration { return h.clock.Now().Sub(t0) }

// renew is the kubelet renewing its node's lease now.
func (h *harness) renew(names ...string) {
	h.t.Helper()
	for _, name := range names {
		leases := client.For[*coordinationv1.Lease](h.cs.Client, nodeLeaseNamespace)
		l, err := leases.Get(h.ctx, name)
		if err != nil {
			h.t.Fatal(err)
		}
		l.Spec.RenewTime = microTimeOf(h.clock.Now())
		if _, err := leases.Update(h.ctx, l); err != nil {
			h.t.Fatal(err)
		}
	}
	h.settle()
}

// postStatus is the kubelet posting its node's Ready status now.
func (h *harness) postStatus(name, ready string) {
	h.t.Helper()
	nodes := client.For[*corev1.Node](h.cs.Client, "")
	n, err := nodes.Get(h.ctx, name)
	if err != nil {
		h.t.Fatal(err)
	}
	n.Status.Conditions = kubeletConditions(ready, h.clock.Now())
	if _, err := nodes.UpdateStatus(h.ctx, n); err != nil {
		h.t.Fatal(err)
	}
	h.settle()
}

func (h *harness) node(name string) *corev1.Node {
	h.t.Helper()
	o, err := h.cs.Tracker().Get(kindOf(&corev1.Node{}), "", name)
	if err != nil {
		h.t.Fatal(err)
	}
	return o.(*corev1.Node)
}

func (h *harness) pod(name string) *corev1.Pod {
	h.t.Helper()
	o, err := h.cs.Tracker().Get(kindOf(&corev1.Pod{}), "default", name)
	if err != nil {
		h.t.Fatal(err)
	}
	return o.(*corev1.Pod)
}

// taints lists a node's taints as key:effect, sorted.
func (h *harness) taints(name string) string {
	var out []string
	for _, t := range h.node(name).GetSpec().GetTaints() {
		out = append(out, t.GetKey()+":"+t.GetEffect())
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func (h *harness) taint(name, key, effect string) *corev1.Taint {
	for _, t := range h.node(name).GetSpec().GetTaints() {
		if t.GetKey() == key && t.GetEffect() == effect {
			return t
		}
	}
	return nil
}

func (h *harness) deleting(pod string) bool {
	return h.pod(pod).GetMetadata().GetDeletionTimestamp() != nil
}

// events drains the events recorded so far.
func (h *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-h.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func podReady(p *corev1.Pod) string {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus()
		}
	}
	return ""
}

const (
	unreachableNoExecute = taintNodeUnreachable + ":" + effectNoExecute
	unreachableBoth      = taintNodeUnreachable + ":" + effectNoExecute + "," + taintNodeUnreachable + ":" + effectNoSchedule
	notReadyBoth         = taintNodeNotReady + ":" + effectNoExecute + "," + taintNodeNotReady + ":" + effectNoSchedule
)

// A node whose lease stops: Unknown after the grace period and not
// before, its pods not Ready, then tainted unreachable; its pods go at
// once, after their tolerationSeconds, or never.
func TestSilentNodeIsTaintedAndItsPodsEvicted(t *testing.T) {
	h := newHarness(t, testOptions,
		newNode("silent", ""), newNode("alive", ""), newLease("silent", t0), newLease("alive", t0),
		newPod("plain", "silent"),
		newPod("tolerates-30s", "silent", tolerate(taintNodeUnreachable, seconds(30))),
		newPod("tolerates-forever", "silent", tolerate(taintNodeUnreachable, nil)),
		newPod("elsewhere", "alive"))
	h.alive = []string{"alive"}
	h.pass() // the controller starts at t0

	// Until the grace period has passed, nothing happens.
	for h.elapsed() < 40*time.Second {
		h.tick()
		if got := readyCondition(h.node("silent").GetStatus()).GetStatus(); got != condTrue {
			t.Fatalf("at %v, before the 40 s grace period: silent node is Ready=%s", h.elapsed(), got)
		}
		if got := h.taints("silent"); got != "" {
			t.Fatalf("at %v: silent node tainted %s before its grace period", h.elapsed(), got)
		}
	}
	h.events()

	h.tick() // 45 s
	n := h.node("silent")
	for _, typ := range unknownConditions {
		c := nodeCondition(n.GetStatus(), typ)
		if c.GetStatus() != condUnknown || c.GetReason() != reasonStatusUnknown || c.GetMessage() != "Kubelet stopped posting node status." {
			t.Errorf("%s = %s/%s/%q, want Unknown/NodeStatusUnknown/\"Kubelet stopped posting node status.\"", typ, c.GetStatus(), c.GetReason(), c.GetMessage())
		}
	}
	if got := readyCondition(h.node("alive").GetStatus()).GetStatus(); got != condTrue {
		t.Errorf("the node renewing its lease is Ready=%s", got)
	}
	for _, p := range []string{"plain", "tolerates-30s", "tolerates-forever"} {
		if got := podReady(h.pod(p)); got != condFalse {
			t.Errorf("pod %s on the silent node: Ready=%s, want False", p, got)
		}
	}
	if got := podReady(h.pod("elsewhere")); got != condTrue {
		t.Errorf("pod on the live node: Ready=%s, want True", got)
	}
	evs := h.events()
	if !slices.Contains(evs, "Normal NodeNotReady Node silent status is now: NodeNotReady") ||
		!slices.Contains(evs, "Warning NodeNotReady Node is not ready") {
		t.Errorf("events = %q, want the node's NodeNotReady and its pods'", evs)
	}

	// The NoExecute taint follows a pass later, through the zone's queue.
	for h.taint("silent", taintNodeUnreachable, effectNoExecute) == nil {
		if h.elapsed() > 60*time.Second {
			t.Fatalf("no unreachable NoExecute taint at %v; taints %s", h.elapsed(), h.taints("silent"))
		}
		h.tick()
	}
	tainted := h.clock.Now()
	if got := h.taints("silent"); got != unreachableBoth {
		t.Errorf("taints = %s, want %s", got, unreachableBoth)
	}
	if got := h.taint("silent", taintNodeUnreachable, effectNoExecute).GetTimeAdded().AsTime(); !got.Equal(tainted) {
		t.Errorf("timeAdded = %v, want %v", got, tainted)
	}
	if !h.deleting("plain") {
		t.Error("the pod that tolerates nothing was not deleted at once")
	}
	if c := h.pod("plain").GetStatus().GetConditions(); c[len(c)-1].GetType() != "DisruptionTarget" || c[len(c)-1].GetReason() != "DeletionByTaintManager" {
		t.Errorf("the deleted pod's conditions = %v, want DisruptionTarget DeletionByTaintManager last", c)
	}
	if evs := h.events(); !slices.Contains(evs, "Normal TaintManagerEviction Marking for deletion Pod default/plain") {
		t.Errorf("events = %q, want the eviction of default/plain", evs)
	}

	for h.clock.Now().Before(tainted.Add(30 * time.Second)) {
		if h.deleting("tolerates-30s") {
			t.Fatalf("the pod tolerating 30 s was deleted %v after the taint", h.clock.Now().Sub(tainted))
		}
		h.tick()
	}
	if !h.deleting("tolerates-30s") {
		t.Errorf("the pod tolerating 30 s is still there %v after the taint", h.clock.Now().Sub(tainted))
	}
	for range 60 { // five more minutes
		h.tick()
	}
	if h.deleting("tolerates-forever") || h.deleting("elsewhere") {
		t.Error("a pod tolerating forever, or on a live node, was deleted")
	}
	if got := testutil.ToFloat64(h.c.metrics.podDeletions); got != 2 {
		t.Errorf("taint_eviction_controller_pod_deletions_total = %v, want 2", got)
	}
	if got := testutil.ToFloat64(h.c.metrics.evictionsTotal.WithLabelValues("")); got != 1 {
		t.Errorf("node_collector_evictions_total{zone=\"\"} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.c.metrics.unhealthyNodes.WithLabelValues("")); got != 1 {
		t.Errorf("node_collector_unhealthy_nodes_in_zone = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.c.metrics.zoneHealth.WithLabelValues("")); got != 50 {
		t.Errorf("node_collector_zone_health = %v, want 50", got)
	}
}

// The kubelet saying NotReady gives the not-ready taints; falling silent
// after that swaps them for unreachable at once; Ready=True takes them off.
func TestNotReadyNodeTaints(t *testing.T) {
	h := newHarness(t, testOptions, newNode("sick", ""), newNode("well", ""), newLease("sick", t0), newLease("well", t0),
		newPod("tolerates-1m", "sick", tolerate(taintNodeNotReady, seconds(60)), tolerate(taintNodeUnreachable, seconds(60))))
	h.alive = []string{"sick", "well"}
	h.pass()

	h.postStatus("sick", condFalse)
	h.tick()
	if got := h.taints("sick"); got != notReadyBoth {
		t.Fatalf("taints of a NotReady node = %q, want %s", got, notReadyBoth)
	}
	if got := podReady(h.pod("tolerates-1m")); got != condTrue {
		t.Errorf("pod Ready=%s: the kubelet, not the controller, reports pods of a node it says is NotReady", got)
	}
	notReadyAdded := h.taint("sick", taintNodeNotReady, effectNoExecute).GetTimeAdded().AsTime()

	// Silent now: Unknown after the grace period, and then the swap is
	// immediate, not queued.
	h.alive = []string{"well"}
	for readyCondition(h.node("sick").GetStatus()).GetStatus() != condUnknown {
		if h.elapsed() > 2*time.Minute {
			t.Fatal("the silent node never became Unknown")
		}
		h.tick()
	}
	// The NoSchedule taint follows the condition at once; the NoExecute
	// one, by the status the pass observed, a pass later.
	if got, want := h.taints("sick"), taintNodeNotReady+":"+effectNoExecute+","+taintNodeUnreachable+":"+effectNoSchedule; got != want {
		t.Fatalf("taints in the pass that found the node silent = %q, want %s", got, want)
	}
	h.tick()
	if got := h.taints("sick"); got != unreachableBoth {
		t.Fatalf("taints of the now unreachable node = %q, want %s", got, unreachableBoth)
	}
	// The pod tolerated not-ready for a minute from when that was added;
	// unreachable's own minute starts later, and the earlier pending
	// deletion stands.
	for h.clock.Now().Before(notReadyAdded.Add(time.Minute)) {
		if h.deleting("tolerates-1m") {
			t.Fatalf("pod deleted %v after the first taint, want 1m", h.clock.Now().Sub(notReadyAdded))
		}
		h.tick()
	}
	if !h.deleting("tolerates-1m") {
		t.Errorf("pod still there %v after the first taint", h.clock.Now().Sub(notReadyAdded))
	}

	h.postStatus("sick", condTrue)
	h.alive = []string{"sick", "well"}
	h.tick()
	if got := h.taints("sick"); got != "" {
		t.Errorf("taints of a node Ready again = %q, want none", got)
	}
}

// A silent node whose lease is renewed again loses its taints, though its
// Unknown conditions stay until its kubelet posts status; a pod tolerating
// the taint for a while stays, its deletion cancelled.
func TestRenewedLeaseRemovesTaints(t *testing.T) {
	h := newHarness(t, testOptions, newNode("flaky", ""), newNode("alive", ""), newLease("flaky", t0), newLease("alive", t0),
		newPod("tolerates-5m", "flaky", tolerate(taintNodeUnreachable, seconds(300))))
	h.alive = []string{"alive"}
	h.pass()
	for h.taints("flaky") != unreachableBoth {
		if h.elapsed() > 2*time.Minute {
			t.Fatalf("the silent node is tainted %q, want %s", h.taints("flaky"), unreachableBoth)
		}
		h.tick()
	}
	h.events()

	h.alive = []string{"alive", "flaky"}
	h.tick()
	if got := h.taints("flaky"); got != "" {
		t.Errorf("taints after the lease was renewed = %q, want none", got)
	}
	if got := readyCondition(h.node("flaky").GetStatus()); got.GetStatus() != condUnknown || got.GetReason() != reasonStatusUnknown {
		t.Errorf("Ready = %s/%s, want the Unknown written before: only the kubelet knows better", got.GetStatus(), got.GetReason())
	}
	if evs := h.events(); !slices.Contains(evs, "Normal TaintManagerEviction Cancelling deletion of Pod default/tolerates-5m") {
		t.Errorf("events = %q, want the pending deletion cancelled", evs)
	}
	for range 70 { // past the 300 s toleration
		h.tick()
	}
	if h.deleting("tolerates-5m") || h.taints("flaky") != "" {
		t.Errorf("with its lease renewed: pod deleting=%v, taints %q", h.deleting("tolerates-5m"), h.taints("flaky"))
	}

	// Silent again: tainted again.
	h.alive = []string{"alive"}
	for range 12 {
		h.tick()
	}
	if got := h.taints("flaky"); got != unreachableBoth {
		t.Errorf("taints of the node silent again = %q, want %s", got, unreachableBoth)
	}
}

// A node that never reported gets Unknown conditions saying so after the
// startup grace period.
func TestNodeNeverReported(t *testing.T) {
	fresh := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "new", CreationTimestamp: metav1.NewTime(t0)}}
	h := newHarness(t, testOptions, fresh, newNode("alive", ""), newLease("alive", t0))
	h.alive = []string{"alive"}
	h.pass()
	for h.elapsed() < time.Minute {
		h.tick()
		if c := h.node("new").GetStatus().GetConditions(); len(c) != 0 {
			t.Fatalf("at %v, within the startup grace period: conditions %v", h.elapsed(), c)
		}
	}
	h.tick()
	for _, typ := range unknownConditions {
		c := nodeCondition(h.node("new").GetStatus(), typ)
		if c.GetStatus() != condUnknown || c.GetReason() != reasonStatusNeverUpdated || c.GetMessage() != "Kubelet never posted node status." {
			t.Errorf("%s = %s/%s/%q, want Unknown/NodeStatusNeverUpdated", typ, c.GetStatus(), c.GetReason(), c.GetMessage())
		}
	}
}

// The NoSchedule taints follow the conditions and spec.unschedulable, at
// once and both ways, and leave other taints alone.
func TestNoScheduleTaints(t *testing.T) {
	n := newNode("n", "")
	n.Spec.Unschedulable = true
	n.Spec.Taints = []*corev1.Taint{{Key: "example.com/gpu", Effect: effectNoSchedule}, {Key: taintNodePIDPressure, Effect: effectNoSchedule}}
	nodeCondition(n.Status, "MemoryPressure").Status = condTrue
	n.Status.Conditions = append(n.Status.Conditions, &corev1.NodeCondition{Type: "NetworkUnavailable", Status: condTrue})
	h := newHarness(t, testOptions, n)
	if err := h.c.doNoScheduleTaintingPass(h.ctx, "n"); err != nil {
		t.Fatal(err)
	}
	want := "example.com/gpu:NoSchedule,node.kubernetes.io/memory-pressure:NoSchedule," +
		"node.kubernetes.io/network-unavailable:NoSchedule,node.kubernetes.io/unschedulable:NoSchedule"
	if got := h.taints("n"); got != want {
		t.Errorf("taints = %s\nwant %s", got, want)
	}
	if h.taint("n", taintNodeMemoryPressure, effectNoSchedule).GetTimeAdded().IsZero() {
		t.Error("an added taint has no timeAdded")
	}
	h.settle()
	h.cs.ClearActions()
	if err := h.c.doNoScheduleTaintingPass(h.ctx, "n"); err != nil {
		t.Fatal(err)
	}
	for _, a := range h.cs.Actions() {
		if a.Verb == "update" {
			t.Errorf("a second pass wrote %s %s: nothing changed", a.Resource, a.Name)
		}
	}
}

// Two nodes of a zone of five going down are tainted one per 1/rate
// seconds; three of four (partial disruption of a small zone) not at all.
func TestTaintingIsRateLimited(t *testing.T) {
	objs := []scheme.Object{}
	for i := range 5 {
		name := fmt.Sprintf("n%d", i)
		objs = append(objs, newNode(name, "a"), newLease(name, t0))
	}
	h := newHarness(t, testOptions, objs...)
	h.alive = []string{"n2", "n3", "n4"}
	h.pass()
	var first time.Time
	for h.taint("n0", taintNodeUnreachable, effectNoExecute) == nil && h.taint("n1", taintNodeUnreachable, effectNoExecute) == nil {
		if h.elapsed() > 2*time.Minute {
			t.Fatal("neither silent node was tainted")
		}
		h.tick()
	}
	first = h.clock.Now()
	if h.taint("n0", taintNodeUnreachable, effectNoExecute) != nil && h.taint("n1", taintNodeUnreachable, effectNoExecute) != nil {
		t.Fatal("both silent nodes were tainted at once at 0.1 nodes/s")
	}
	h.tick()
	if h.taint("n0", taintNodeUnreachable, effectNoExecute) != nil && h.taint("n1", taintNodeUnreachable, effectNoExecute) != nil {
		t.Fatalf("the second node was tainted %v after the first, want 10 s", h.clock.Now().Sub(first))
	}
	h.tick()
	if h.taint("n0", taintNodeUnreachable, effectNoExecute) == nil || h.taint("n1", taintNodeUnreachable, effectNoExecute) == nil {
		t.Fatalf("the second node is not tainted %v after the first", h.clock.Now().Sub(first))
	}
	if got := testutil.ToFloat64(h.c.metrics.zoneSize.WithLabelValues(":\x00:a")); got != 5 {
		t.Errorf("node_collector_zone_size = %v, want 5", got)
	}

	// Partial disruption of a small zone stops tainting.
	objs = objs[:0]
	for i := range 4 {
		name := fmt.Sprintf("m%d", i)
		objs = append(objs, newNode(name, "b"), newLease(name, t0))
	}
	h = newHarness(t, testOptions, objs...)
	h.alive = []string{"m3"}
	h.pass()
	for range 30 {
		h.tick()
	}
	if got := readyCondition(h.node("m0").GetStatus()).GetStatus(); got != condUnknown {
		t.Fatalf("m0 is Ready=%s after 150 s of silence", got)
	}
	for _, n := range []string{"m0", "m1", "m2"} {
		if h.taint(n, taintNodeUnreachable, effectNoExecute) != nil {
			t.Errorf("%s tainted NoExecute in a partially disrupted zone of 4 nodes", n)
		}
	}
	if got := h.c.zoneStates[":\x00:b"]; got != statePartialDisruption {
		t.Errorf("zone state = %s, want PartialDisruption", got)
	}
}

// When every zone is fully disrupted, nothing is tainted NoExecute (the
// control plane is the likelier fault) and no pod is evicted; a zone fully
// down beside a healthy one is tainted as usual.
func TestFullDisruption(t *testing.T) {
	h := newHarness(t, testOptions, newNode("a1", "a"), newNode("a2", "a"), newNode("b1", "b"),
		newLease("a1", t0), newLease("a2", t0), newLease("b1", t0), newPod("web", "a1"))
	h.pass()
	for range 30 {
		h.tick()
	}
	for _, n := range []string{"a1", "a2", "b1"} {
		if got := readyCondition(h.node(n).GetStatus()).GetStatus(); got != condUnknown {
			t.Fatalf("%s is Ready=%s after 150 s of silence", n, got)
		}
		if h.taint(n, taintNodeUnreachable, effectNoExecute) != nil {
			t.Errorf("%s tainted NoExecute with every zone disrupted", n)
		}
	}
	if h.deleting("web") {
		t.Error("a pod was evicted with every zone disrupted")
	}

	// Zone b comes back: zone a alone is down, and its nodes are tainted.
	h.postStatus("b1", condTrue)
	h.alive = []string{"b1"}
	for range 6 {
		h.tick()
	}
	if got := h.taints("a1") + " " + h.taints("a2"); got != unreachableBoth+" "+unreachableBoth {
		t.Errorf("taints of zone a beside a healthy zone = %s, want %s on both", got, unreachableBoth)
	}
	if !h.deleting("web") {
		t.Error("the pod of the tainted node was not evicted")
	}
}

// The whole controller through Run: a node silent past its grace period
// is tainted and its pod evicted; back, it is untainted.
func TestRun(t *testing.T) {
	cs := fake.NewClientset(newNode("silent", ""), newNode("alive", ""), newLease("silent", t0), newLease("alive", t0),
		newPod("web", "silent"))
	defer cs.Close()
	opts := testOptions
	opts.NodeMonitorPeriod = 10 * time.Millisecond
	cc, _ := controllertest.Context(cs, opts)
	clock := &fakeClock{t: t0}
	cc.Now = clock.Now
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "nodelifecycle" {
		t.Errorf("Name() = %q", c.Name())
	}
	controllertest.Run(t, cc, c)
	ctx := context.Background()
	renew := func(name string) {
		leases := client.For[*coordinationv1.Lease](cs.Client, nodeLeaseNamespace)
		l, err := leases.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		l.Spec.RenewTime = microTimeOf(clock.Now())
		if _, err := leases.Update(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	get := func(name string) *corev1.Node {
		o, err := cs.Tracker().Get(kindOf(&corev1.Node{}), "", name)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*corev1.Node)
	}
	// Only "alive" renews its lease; the clock moves a second per poll.
	controllertest.Eventually(t, func() (bool, string) {
		clock.Step(time.Second)
		renew("alive")
		return hasTaint(get("silent"), unreachableTaint), "silent node not tainted unreachable"
	})
	controllertest.Eventually(t, func() (bool, string) {
		o, err := cs.Tracker().Get(kindOf(&corev1.Pod{}), "default", "web")
		return err == nil && o.GetMetadata().GetDeletionTimestamp() != nil, "pod on the silent node not deleted"
	})
	if hasTaint(get("alive"), unreachableTaint) {
		t.Error("the live node was tainted")
	}
	controllertest.Eventually(t, func() (bool, string) {
		clock.Step(time.Second)
		renew("alive")
		renew("silent")
		return len(get("silent").GetSpec().GetTaints()) == 0, "taints stayed after the lease was renewed"
	})
}
