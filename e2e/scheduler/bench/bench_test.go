// Package bench is skiff-scheduler's scheduler_perf: Node objects and pods
// created through a real in-process apiserver on embedded etcd, no kubelets,
// and the throughput of pods bound per second, printed next to raw etcd
// writes measured in the same run.
package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/client"
	"skiff.dev/client/informer"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
	"skiff.dev/scheduler/app"
)

func q(s string) *metav1.Quantity { return &metav1.Quantity{String_: s} }

func node(i int) *corev1.Node {
	return &corev1.Node{
		Metadata: &metav1.ObjectMeta{Name: fmt.Sprintf("node-%05d", i), Labels: map[string]string{
			"kubernetes.io/hostname": fmt.Sprintf("node-%05d", i), "topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", i%3)}},
		Status: &corev1.NodeStatus{
			Allocatable: map[string]*metav1.Quantity{"cpu": q("4"), "memory": q("32Gi"), "pods": q("110")},
			Capacity:    map[string]*metav1.Quantity{"cpu": q("4"), "memory": q("32Gi"), "pods": q("110")},
			Conditions:  []*corev1.NodeCondition{{Type: "Ready", Status: "True"}},
		},
	}
}

func pod(prefix string, i int, mutate func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("%s-%05d", prefix, i), Labels: map[string]string{"app": prefix}},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "pause", Image: "registry.local/pause:3.10",
			Resources: &corev1.ResourceRequirements{Requests: map[string]*metav1.Quantity{"cpu": q("100m"), "memory": q("500Mi")}}}}},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

// parallel runs fn(i) for i in [0,n) on at most c goroutines and returns
// the first error.
func parallel(n, c int, fn func(i int) error) error {
	var g errgroup.Group
	g.SetLimit(c)
	for i := range n {
		g.Go(func() error { return fn(i) })
	}
	return g.Wait()
}

// rawEtcdPuts is the limit: single-key create transactions per second at
// concurrency 64 on the same etcd.
func rawEtcdPuts(b *testing.B, s *apitest.Server) float64 {
	cli := s.EtcdClient()
	const n = 20000
	val := strings.Repeat("x", 900)
	start := time.Now()
	if err := parallel(n, 64, func(i int) error {
		k := fmt.Sprintf("/bench/raw/%d", i)
		_, err := cli.Txn(context.Background()).If(clientv3.Compare(clientv3.ModRevision(k), "=", 0)).Then(clientv3.OpPut(k, val)).Commit()
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return n / time.Since(start).Seconds()
}

func run(b *testing.B, nodes, pods int, mutate func(*corev1.Pod)) {
	s := apitest.Start(b)
	c := client.New(s.Conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	limit := rawEtcdPuts(b, s)
	if err := parallel(nodes, 32, func(i int) error {
		_, err := client.For[*corev1.Node](c, "").Create(ctx, node(i))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	sched, err := app.New(app.Config{Client: c, Registerer: reg, Parallelism: 4})
	if err != nil {
		b.Fatal(err)
	}
	go sched.Run(ctx)

	podKind, _ := scheme.ForResource("", "pods")
	var bound atomic.Int64
	watch := informer.New(c.Resource(podKind, "default"), informer.Options{})
	watch.AddHandler(informer.Handler{OnUpdate: func(old, cur scheme.Object) {
		if old.(*corev1.Pod).GetSpec().GetNodeName() == "" && cur.(*corev1.Pod).GetSpec().GetNodeName() != "" {
			bound.Add(1)
		}
	}})
	go watch.Run(ctx)
	watch.WaitForSync(ctx)

	b.ResetTimer()
	start := time.Now()
	go parallel(pods, 16, func(i int) error {
		_, err := client.For[*corev1.Pod](c, "default").Create(ctx, pod("p", i, mutate))
		return err
	})
	// Completion is polled finely; throughput is sampled once a second.
	var samples []float64
	last, lastT := int64(0), start
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	deadline := time.Now().Add(5 * time.Minute)
	for bound.Load() < int64(pods) {
		if time.Now().After(deadline) {
			b.Fatalf("bound %d of %d pods in 5 minutes", bound.Load(), pods)
		}
		now := <-poll.C
		if now.Sub(lastT) >= time.Second {
			n := bound.Load()
			samples = append(samples, float64(n-last)/now.Sub(lastT).Seconds())
			last, lastT = n, now
		}
	}
	if n := bound.Load(); n > last {
		samples = append(samples, float64(n-last)/time.Since(lastT).Seconds())
	}
	elapsed := time.Since(start)
	b.StopTimer()
	sort.Float64s(samples)
	pct := func(p float64) float64 {
		if len(samples) == 0 {
			return 0
		}
		return samples[min(len(samples)-1, int(p*float64(len(samples))))]
	}
	avg := float64(pods) / elapsed.Seconds()
	b.ReportMetric(avg, "pods/s")
	b.ReportMetric(pct(0.5), "p50-pods/s")
	b.ReportMetric(pct(0.9), "p90-pods/s")
	b.ReportMetric(pct(0.99), "p99-pods/s")
	b.ReportMetric(limit, "etcd-puts/s@c64")
	b.ReportMetric(attemptMillis(reg), "attempt-ms")
}

// attemptMillis is the mean scheduling attempt latency.
func attemptMillis(reg *prometheus.Registry) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "scheduler_scheduling_attempt_duration_seconds" {
			continue
		}
		var sum float64
		var n uint64
		for _, m := range mf.GetMetric() {
			sum += m.GetHistogram().GetSampleSum()
			n += m.GetHistogram().GetSampleCount()
		}
		if n > 0 {
			return 1000 * sum / float64(n)
		}
	}
	return 0
}

func BenchmarkSchedulingBasic500Nodes1000Pods(b *testing.B) { run(b, 500, 1000, nil) }

func BenchmarkSchedulingBasic5000Nodes10000Pods(b *testing.B) { run(b, 5000, 10000, nil) }

func BenchmarkSchedulingNodeAffinity500Nodes1000Pods(b *testing.B) {
	run(b, 500, 1000, func(p *corev1.Pod) {
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []*corev1.NodeSelectorTerm{{MatchExpressions: []*corev1.NodeSelectorRequirement{{Key: "topology.kubernetes.io/zone", Operator: "In", Values: []string{"zone-0", "zone-1"}}}}},
		}}}
	})
}

// BenchmarkSchedulingPodAffinity500Nodes1000Pods: every pod requires a pod of
// its group in its zone (upstream's SchedulingPodAffinity shape).
func BenchmarkSchedulingPodAffinity500Nodes1000Pods(b *testing.B) {
	run(b, 500, 1000, func(p *corev1.Pod) {
		p.Metadata.Labels = map[string]string{"color": "blue"}
		p.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"color": "blue"}}, TopologyKey: "topology.kubernetes.io/zone"}}}}
	})
}

// BenchmarkSchedulingPodAntiAffinity500Nodes400Pods: no two pods of the group
// on one node.
func BenchmarkSchedulingPodAntiAffinity500Nodes400Pods(b *testing.B) {
	run(b, 500, 400, func(p *corev1.Pod) {
		p.Metadata.Labels = map[string]string{"color": "green"}
		p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"color": "green"}}, TopologyKey: "kubernetes.io/hostname"}}}}
	})
}

// BenchmarkSchedulingTopologySpreading500Nodes1000Pods: spread across zones, maxSkew 1.
func BenchmarkSchedulingTopologySpreading500Nodes1000Pods(b *testing.B) {
	run(b, 500, 1000, func(p *corev1.Pod) {
		p.Spec.TopologySpreadConstraints = []*corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone",
			WhenUnsatisfiable: "DoNotSchedule", LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "p"}}}}
	})
}
