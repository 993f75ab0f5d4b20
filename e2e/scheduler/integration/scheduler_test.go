// Package integration runs skiff-scheduler against a real in-process
// apiserver with Node objects and no kubelets, as upstream's integration
// tests and scheduler_perf do.
package integration

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/client"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/scheduler/app"
)

func q(s string) *metav1.Quantity { return &metav1.Quantity{String_: s} }

func node(name, cpu, mem string, labels map[string]string, taints ...*corev1.Taint) *corev1.Node {
	return &corev1.Node{
		Metadata: &metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:     &corev1.NodeSpec{Taints: taints},
		Status: &corev1.NodeStatus{
			Allocatable: map[string]*metav1.Quantity{"cpu": q(cpu), "memory": q(mem), "pods": q("110")},
			Capacity:    map[string]*metav1.Quantity{"cpu": q(cpu), "memory": q(mem), "pods": q("110")},
			Conditions:  []*corev1.NodeCondition{{Type: "Ready", Status: "True"}},
		},
	}
}

func pod(name, cpu string) *corev1.Pod {
	c := &corev1.Container{Name: "c", Image: "registry.local/pause:3.10"}
	if cpu != "" {
		c.Resources = &corev1.ResourceRequirements{Requests: map[string]*metav1.Quantity{"cpu": q(cpu)}}
	}
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{c}}}
}

type env struct {
	t     *testing.T
	api   *apitest.Server
	c     *client.Client
	pods  *client.Typed[*corev1.Pod]
	nodes *client.Typed[*corev1.Node]
}

func setup(t *testing.T) *env {
	s := apitest.Start(t)
	c := client.New(s.Conn)
	return &env{t: t, api: s, c: c, pods: client.For[*corev1.Pod](c, "default"), nodes: client.For[*corev1.Node](c, "")}
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// startScheduler runs a scheduler until the test ends and returns the
// registry its metrics are on.
func (e *env) startScheduler(cfg app.Config) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	cfg.Client = e.c
	cfg.Registerer = reg
	s, err := app.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	e.t.Cleanup(func() { cancel(); <-done })
	return reg
}

// lease returns the scheduler's leader election Lease, nil while there is none.
func (e *env) lease() *coordinationv1.Lease {
	e.t.Helper()
	l, err := client.For[*coordinationv1.Lease](e.c, "kube-system").Get(e.ctx(), "kube-scheduler")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// waitLease waits for the Lease to satisfy ok and returns it.
func (e *env) waitLease(what string, ok func(*coordinationv1.Lease) bool) *coordinationv1.Lease {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		l := e.lease()
		if l != nil && ok(l) {
			return l
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("lease never %s: %v", what, l.GetSpec())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) createNodes(ns ...*corev1.Node) {
	for _, n := range ns {
		if _, err := e.nodes.Create(e.ctx(), n); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) createPods(ps ...*corev1.Pod) {
	for _, p := range ps {
		if _, err := e.pods.Create(e.ctx(), p); err != nil {
			e.t.Fatal(err)
		}
	}
}

// waitBound waits for the pod's node; "" waits for a FailedScheduling condition.
func (e *env) waitBound(name string) *corev1.Pod {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		p, err := e.pods.Get(e.ctx(), name)
		if err == nil && p.Spec.NodeName != "" {
			return p
		}
		time.Sleep(20 * time.Millisecond)
	}
	p, _ := e.pods.Get(e.ctx(), name)
	e.t.Fatalf("pod %s was not bound in 20s: %v", name, p.GetStatus())
	return nil
}

func (e *env) waitUnschedulable(name string) *corev1.Pod {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		p, err := e.pods.Get(e.ctx(), name)
		if err == nil {
			for _, c := range p.GetStatus().GetConditions() {
				if c.Type == "PodScheduled" && c.Status == "False" && p.Metadata.Annotations[app.DiagnosisAnnotation] != "" {
					return p
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("pod %s never reported Unschedulable", name)
	return nil
}

func TestResourceFitAndWhyPending(t *testing.T) {
	e := setup(t)
	e.createNodes(node("small", "1", "4Gi", nil), node("big", "4", "16Gi", nil))
	e.startScheduler(app.Config{})
	e.createPods(pod("fits-big", "2"), pod("too-big", "8"))
	if n := e.waitBound("fits-big").Spec.NodeName; n != "big" {
		t.Fatalf("2 cpu pod went to %s", n)
	}
	p := e.waitUnschedulable("too-big")
	var cond *corev1.PodCondition
	for _, c := range p.Status.Conditions {
		if c.Type == "PodScheduled" {
			cond = c
		}
	}
	if cond.Reason != "Unschedulable" || cond.Message != "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling." {
		t.Fatalf("condition: %v", cond)
	}
	if d := p.Metadata.Annotations[app.DiagnosisAnnotation]; !strings.Contains(d, `"small":"NodeResourcesFit: Insufficient cpu"`) {
		t.Fatalf("diagnosis: %s", d)
	}
	// A new node that fits moves the pod out of the unschedulable pool.
	e.createNodes(node("huge", "16", "64Gi", nil))
	if n := e.waitBound("too-big").Spec.NodeName; n != "huge" {
		t.Fatalf("8 cpu pod went to %s", n)
	}
	// Assumed pods count at once: three 1.5-cpu pods never overcommit "big".
	e.createPods(pod("a", "1500m"), pod("b", "1500m"), pod("c", "1500m"))
	count := map[string]int{}
	for _, n := range []string{"a", "b", "c"} {
		count[e.waitBound(n).Spec.NodeName]++
	}
	if count["big"] > 1 { // 2 cpu already used on big: only one more 1.5 fits
		t.Fatalf("big overcommitted: %v", count)
	}
}

func TestSelectorsTaintsAndAffinity(t *testing.T) {
	e := setup(t)
	e.createNodes(
		node("gpu", "8", "32Gi", map[string]string{"accel": "gpu", "cores": "8"}),
		node("batch", "8", "32Gi", map[string]string{"cores": "4"}, &corev1.Taint{Key: "dedicated", Value: "batch", Effect: "NoSchedule"}),
		node("plain", "8", "32Gi", map[string]string{"cores": "2"}),
	)
	e.startScheduler(app.Config{})
	sel := pod("wants-gpu", "")
	sel.Spec.NodeSelector = map[string]string{"accel": "gpu"}
	tol := pod("tolerates", "")
	tol.Spec.Tolerations = []*corev1.Toleration{{Key: "dedicated", Operator: "Equal", Value: "batch", Effect: "NoSchedule"}}
	tol.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []*corev1.NodeSelectorTerm{{MatchExpressions: []*corev1.NodeSelectorRequirement{{Key: "cores", Operator: "Gt", Values: []string{"3"}}, {Key: "accel", Operator: "DoesNotExist"}}}},
	}}}
	nowhere := pod("nowhere", "")
	nowhere.Spec.NodeSelector = map[string]string{"accel": "tpu"}
	e.createPods(sel, tol, nowhere)
	if n := e.waitBound("wants-gpu").Spec.NodeName; n != "gpu" {
		t.Fatalf("nodeSelector: %s", n)
	}
	if n := e.waitBound("tolerates").Spec.NodeName; n != "batch" {
		t.Fatalf("toleration + Gt affinity: %s", n)
	}
	p := e.waitUnschedulable("nowhere")
	msg := p.Status.Conditions[0].Message
	want := "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: batch}, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
	if msg != want {
		t.Fatalf("summary:\n got %s\nwant %s", msg, want)
	}
}

func TestLeaderFailoverNoDoubleBind(t *testing.T) {
	e := setup(t)
	e.createNodes(node("n1", "64", "256Gi", nil), node("n2", "64", "256Gi", nil))
	run := func(name string) (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		o := *app.NewOptions()
		o.Kubeconfig = e.api.AdminConfig()
		o.MetricsBindAddress = ""
		// A stopped leader releases the lease, so the standby takes over
		// within a RetryPeriod whatever the LeaseDuration; a long
		// RenewDeadline keeps a slow machine (or -race) from costing the
		// leader its lease mid-test, which is not the failover under test.
		o.LeaseDuration, o.RenewDeadline, o.RetryPeriod = 15*time.Second, 10*time.Second, 200*time.Millisecond
		o.LogFormat = "text"
		go func() { done <- app.Run(ctx, o) }()
		return cancel, done
	}
	stopA, doneA := run("a")
	// a must be the leader before b starts, or stopping a below would stop
	// the standby and no failover would be tested. Leading means holding
	// the Lease; it is the only replica yet, so the holder is a.
	a := e.waitLease("held", func(l *coordinationv1.Lease) bool { return l.GetSpec().GetHolderIdentity() != "" }).Spec.GetHolderIdentity()
	stopB, doneB := run("b")
	defer func() { stopB(); <-doneB }()
	for i := range 20 {
		e.createPods(pod(fmt.Sprintf("p%d", i), "100m"))
	}
	for i := range 20 {
		e.waitBound(fmt.Sprintf("p%d", i))
	}
	if l := e.lease(); l.GetSpec().GetHolderIdentity() != a {
		t.Fatalf("lease moved to %q while a led", l.GetSpec().GetHolderIdentity())
	}
	stopA() // the leader goes away; the standby takes over
	<-doneA
	// The standby, not a, binds the pods below: it holds the lease, taken
	// over from a (one transition).
	e.waitLease("taken over by the standby", func(l *coordinationv1.Lease) bool {
		h := l.GetSpec().GetHolderIdentity()
		return h != "" && h != a && l.GetSpec().GetLeaseTransitions() == 1
	})
	for i := 20; i < 40; i++ {
		e.createPods(pod(fmt.Sprintf("p%d", i), "100m"))
	}
	var mu sync.Mutex
	seen := map[string]string{}
	for i := range 40 {
		p := e.waitBound(fmt.Sprintf("p%d", i))
		mu.Lock()
		seen[p.Metadata.Name] = p.Spec.NodeName
		mu.Unlock()
	}
	if len(seen) != 40 {
		t.Fatalf("bound %d of 40", len(seen))
	}
	// Scheduled events: exactly one per pod (a second bind would be a Conflict and no event).
	evs, err := client.For[*corev1.Event](e.c, "default").List(e.ctx(), client.ListOptions{FieldSelector: "reason=Scheduled"})
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, ev := range evs.Items {
		per[ev.InvolvedObject.Name]++
	}
	for name, n := range per {
		if n != 1 {
			t.Errorf("%s has %d Scheduled events", name, n)
		}
	}
}

func zoneNodes(e *env) {
	for i := range 6 {
		e.createNodes(node(fmt.Sprintf("n%d", i), "8", "32Gi", map[string]string{
			"topology.kubernetes.io/zone": fmt.Sprintf("z%d", i%3), "kubernetes.io/hostname": fmt.Sprintf("n%d", i)}))
	}
}

func TestPodAntiAffinityAndAffinity(t *testing.T) {
	e := setup(t)
	zoneNodes(e)
	e.startScheduler(app.Config{})
	anti := func(name string) *corev1.Pod {
		p := pod(name, "")
		p.Metadata.Labels = map[string]string{"app": "db"}
		p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}, TopologyKey: "topology.kubernetes.io/zone"}}}}
		return p
	}
	zones := map[string]bool{}
	for i := range 3 {
		e.createPods(anti(fmt.Sprintf("db-%d", i)))
		p := e.waitBound(fmt.Sprintf("db-%d", i))
		n, _ := e.nodes.Get(e.ctx(), p.Spec.NodeName)
		zones[n.Metadata.Labels["topology.kubernetes.io/zone"]] = true
	}
	if len(zones) != 3 {
		t.Fatalf("anti-affinity put db pods in zones %v", zones)
	}
	e.createPods(anti("db-3"))
	if msg := e.waitUnschedulable("db-3").Status.Conditions[0].Message; !strings.HasPrefix(msg, "0/6 nodes are available: 6 node(s) didn't match pod anti-affinity rules.") {
		t.Fatalf("fourth db pod: %s", msg)
	}
	// A pod without anti-affinity of its own is kept off by theirs.
	plain := pod("app-db", "")
	plain.Metadata.Labels = map[string]string{"app": "db"}
	e.createPods(plain)
	if msg := e.waitUnschedulable("app-db").Status.Conditions[0].Message; !strings.HasPrefix(msg, "0/6 nodes are available: 6 node(s) didn't satisfy existing pods anti-affinity rules.") {
		t.Fatalf("pod matching existing anti-affinity: %s", msg)
	}
	// Required affinity: with db-0's zone.
	db0 := e.waitBound("db-0")
	n0, _ := e.nodes.Get(e.ctx(), db0.Spec.NodeName)
	near := pod("near-db", "")
	near.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{{
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}, TopologyKey: "kubernetes.io/hostname"}}}}
	e.createPods(near)
	got := e.waitBound("near-db").Spec.NodeName
	hosts := map[string]bool{}
	for i := range 3 {
		hosts[e.waitBound(fmt.Sprintf("db-%d", i)).Spec.NodeName] = true
	}
	if !hosts[got] {
		t.Fatalf("affinity pod on %s, db pods on %v", got, hosts)
	}
	_ = n0
}

func TestTopologySpreadAcrossZones(t *testing.T) {
	e := setup(t)
	zoneNodes(e)
	e.startScheduler(app.Config{})
	for i := range 9 {
		p := pod(fmt.Sprintf("web-%d", i), "")
		p.Metadata.Labels = map[string]string{"app": "web"}
		p.Spec.TopologySpreadConstraints = []*corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone",
			WhenUnsatisfiable: "DoNotSchedule", LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
		e.createPods(p)
		e.waitBound(p.Metadata.Name) // one at a time, so each sees the last
	}
	perZone := map[string]int{}
	for i := range 9 {
		p := e.waitBound(fmt.Sprintf("web-%d", i))
		n, _ := e.nodes.Get(e.ctx(), p.Spec.NodeName)
		perZone[n.Metadata.Labels["topology.kubernetes.io/zone"]]++
	}
	for z, n := range perZone {
		if n != 3 {
			t.Fatalf("zone %s has %d pods: %v", z, n, perZone)
		}
	}
}

func TestPreemptionByPriority(t *testing.T) {
	e := setup(t)
	e.createNodes(node("a", "2", "8Gi", nil), node("b", "2", "8Gi", nil))
	e.startScheduler(app.Config{})
	prio := func(p *corev1.Pod, v int32) *corev1.Pod { p.Spec.Priority = &v; return p }
	on := func(p *corev1.Pod, node string) *corev1.Pod { p.Spec.NodeName = node; return p }
	// a: two low (1 each), b: one low and one middle; placed by hand.
	e.createPods(on(prio(pod("low-a1", "1"), 1), "a"), on(prio(pod("low-a2", "1"), 1), "a"),
		on(prio(pod("low-b", "1"), 1), "b"), on(prio(pod("mid-b", "1"), 5), "b"))
	never := prio(pod("polite", "2"), 100)
	policy := "Never"
	never.Spec.PreemptionPolicy = &policy
	e.createPods(never)
	if msg := e.waitUnschedulable("polite").Status.Conditions[0].Message; !strings.HasSuffix(msg, "preemption: not eligible due to preemptionPolicy=Never.") {
		t.Fatalf("preemptionPolicy Never: %s", msg)
	}
	e.createPods(prio(pod("urgent", "2"), 100))
	// The node whose victims have the lowest top priority wins: "a".
	deadline := time.Now().Add(20 * time.Second)
	for {
		p, _ := e.pods.Get(e.ctx(), "urgent")
		if p.GetStatus().GetNominatedNodeName() == "a" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not nominated to a: %v", p.GetStatus())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, v := range []string{"low-a1", "low-a2"} {
		// Victims are deleted before the preemptor is nominated, as upstream.
		p, err := e.pods.Get(e.ctx(), v)
		if !apierrors.IsNotFound(err) && (err != nil || p.Metadata.DeletionTimestamp == nil) {
			t.Fatalf("victim %s not being deleted when the preemptor was nominated: %v", v, err)
		}
		zero := int64(0)
		e.pods.Delete(e.ctx(), v, client.DeleteOptions{GracePeriodSeconds: &zero}) // what the kubelet does
	}
	if n := e.waitBound("urgent").Spec.NodeName; n != "a" {
		t.Fatalf("preemptor bound to %s", n)
	}
	if p, _ := e.pods.Get(e.ctx(), "mid-b"); p.Metadata.DeletionTimestamp != nil {
		t.Fatal("a pod on the other node was evicted")
	}
}

func TestProfilesBySchedulerName(t *testing.T) {
	e := setup(t)
	e.createNodes(node("a", "4", "16Gi", nil), node("b", "4", "16Gi", nil))
	reg := e.startScheduler(app.Config{Profiles: []app.Profile{
		{SchedulerName: "default-scheduler"},
		{SchedulerName: "bin-packer", PluginConfig: []app.PluginConfig{{Name: "NodeResourcesFit",
			Args: map[string]any{"scoringStrategy": map[string]any{"type": "MostAllocated"}}}}},
	}})
	// MostAllocated packs: every pod lands on the node the first one chose.
	nodes := map[string]bool{}
	for i := range 4 {
		p := pod(fmt.Sprintf("packed-%d", i), "500m")
		p.Spec.SchedulerName = "bin-packer"
		e.createPods(p)
		nodes[e.waitBound(p.Metadata.Name).Spec.NodeName] = true
	}
	if len(nodes) != 1 {
		t.Fatalf("bin-packer spread pods over %v", nodes)
	}
	// Every pod so far is bound, so no attempt is pending: from here on the
	// count of attempts moves only for pods created below.
	before := attempts(t, reg)
	other := pod("not-ours", "")
	other.Spec.SchedulerName = "someone-else"
	e.createPods(other)
	// Rather than sleep and hope the scheduler has looked at not-ours by
	// then, schedule a marker created after it: the scheduler sees pods in
	// creation order and tries equal-priority pods first come first served,
	// so had it taken not-ours it would have tried it before the marker.
	// A try is counted as an attempt before the (asynchronous) binding.
	e.createPods(pod("marker", ""))
	e.waitBound("marker")
	got := attempts(t, reg)
	for profile, n := range before {
		if got[profile] -= n; got[profile] == 0 {
			delete(got, profile)
		}
	}
	if want := map[string]float64{"default-scheduler": 1}; !maps.Equal(got, want) {
		t.Errorf("scheduling attempts by profile since not-ours was created: %v, want %v (the marker's)", got, want)
	}
	if p, _ := e.pods.Get(e.ctx(), "not-ours"); p.Spec.NodeName != "" || len(p.GetStatus().GetConditions()) > 0 {
		t.Fatalf("a pod of another scheduler was touched: %v", p)
	}
}

// attempts sums scheduler_schedule_attempts_total on reg by profile.
func attempts(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "scheduler_schedule_attempts_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "profile" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}
