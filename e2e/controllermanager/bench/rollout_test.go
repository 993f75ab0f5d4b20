package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/client"
	"skiff.dev/client/informer"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// statusWriter plays the kubelets: every pod of a namespace is marked
// Running and Ready, with an IP, as soon as it is stored. Its own writes are
// counted, to be told apart from the controller-manager's.
type statusWriter struct {
	writes atomic.Int64
	ips    atomic.Int64
}

func startStatusWriter(b *testing.B, c *client.Client, ns string, workers int) *statusWriter {
	b.Helper()
	w := &statusWriter{}
	pods := client.For[*corev1.Pod](c, ns)
	todo := make(chan *corev1.Pod, 4096)
	var marked sync.Map // uid → struct{}: one write per pod
	enqueue := func(o scheme.Object) {
		p := o.(*corev1.Pod)
		if p.GetMetadata().GetDeletionTimestamp() != nil || ready(p) {
			return
		}
		if _, dup := marked.LoadOrStore(p.GetMetadata().GetUid(), struct{}{}); !dup {
			todo <- p
		}
	}
	inf := informer.New(c.Resource(podKind, ns), informer.Options{})
	inf.AddHandler(informer.Handler{OnAdd: enqueue, OnUpdate: func(_, cur scheme.Object) { enqueue(cur) }})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); inf.Run(ctx) }()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case p := <-todo:
					w.markReady(ctx, pods, p)
				}
			}
		}()
	}
	b.Cleanup(func() { cancel(); wg.Wait() })
	return w
}

// markReady writes the status a kubelet writes once the containers run and
// the readiness probe passes; a conflict is retried on a fresh read, a pod
// gone meanwhile is dropped.
func (w *statusWriter) markReady(ctx context.Context, pods *client.Typed[*corev1.Pod], p *corev1.Pod) {
	n := w.ips.Add(1)
	ip := fmt.Sprintf("10.244.%d.%d", n/250, n%250+1)
	for attempt := 0; attempt < 5 && ctx.Err() == nil; attempt++ {
		next := proto.Clone(p).(*corev1.Pod)
		now := metav1.Now()
		next.Status = &corev1.PodStatus{Phase: "Running", PodIP: ip, PodIPs: []*corev1.PodIP{{Ip: ip}}, HostIP: "127.0.0.1",
			StartTime: now, Conditions: []*corev1.PodCondition{
				{Type: "Ready", Status: "True", LastTransitionTime: now},
				{Type: "ContainersReady", Status: "True", LastTransitionTime: now}}}
		w.writes.Add(1)
		_, err := pods.UpdateStatus(ctx, next)
		if !apierrors.IsConflict(err) {
			return
		}
		if p, err = pods.Get(ctx, p.GetMetadata().GetName()); err != nil {
			return
		}
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

// rolledOut says whether the Deployment runs its current template
// everywhere: status current and complete, the new ReplicaSet at full size
// and available, every old one scaled to and at zero.
func rolledOut(ctx context.Context, c *client.Client, ns, name string, replicas int32, marker string) (bool, string) {
	d, err := client.For[*appsv1.Deployment](c, ns).Get(ctx, name)
	if err != nil {
		return false, err.Error()
	}
	st := d.GetStatus()
	state := fmt.Sprintf("generation %d observed %d, replicas %d updated %d available %d",
		d.GetMetadata().GetGeneration(), st.GetObservedGeneration(), st.GetReplicas(), st.GetUpdatedReplicas(), st.GetAvailableReplicas())
	if st.GetObservedGeneration() < d.GetMetadata().GetGeneration() || st.GetReplicas() != replicas ||
		st.GetUpdatedReplicas() != replicas || st.GetAvailableReplicas() != replicas {
		return false, state
	}
	rss, err := client.For[*appsv1.ReplicaSet](c, ns).List(ctx, client.ListOptions{})
	if err != nil {
		return false, err.Error()
	}
	current := 0
	for _, rs := range rss.Items {
		isNew := rs.GetSpec().GetTemplate().GetMetadata().GetAnnotations()[markerAnnotation] == marker
		want := int32(0)
		if isNew {
			want = replicas
			current++
		}
		if rs.GetSpec().GetReplicas() != want || rs.GetStatus().GetReplicas() != want ||
			(isNew && rs.GetStatus().GetAvailableReplicas() != want) {
			return false, fmt.Sprintf("%s; ReplicaSet %s has %d of %d replicas, %d available", state, rs.GetMetadata().GetName(),
				rs.GetStatus().GetReplicas(), rs.GetSpec().GetReplicas(), rs.GetStatus().GetAvailableReplicas())
		}
	}
	return current == 1, fmt.Sprintf("%s; %d ReplicaSets with the current template", state, current)
}

// markerAnnotation is what the template change sets, as `kubectl rollout
// restart` does.
const markerAnnotation = "kubectl.kubernetes.io/restartedAt"

// BenchmarkRollingUpdate1000 rolls a 1,000-replica Deployment (maxSurge and
// maxUnavailable 25%) whose pods a stand-in kubelet marks Ready as they
// appear, from one template to the next, and prints the time the rollout
// took (rollout-s, pods-replaced/s) and the API writes the
// controller-manager issued per replaced pod (pod creates and deletes,
// ReplicaSet scales and status, Deployment status, events), from the
// apiserver's apiserver_request_total less the writes this benchmark made.
func BenchmarkRollingUpdate1000(b *testing.B) {
	const replicas, rollouts = 1000, 3
	s := apitest.Start(b)
	c := client.New(s.Conn)
	if !registered(b, c, "deployment") {
		b.Skip("deployment controller not registered yet")
	}
	enabled, _ := manager(b, s, c, "*")
	b.Logf("controller-manager runs %s", enabled)
	ctx := context.Background()
	b.StopTimer()
	const ns = "rollout"
	createNamespace(b, c, ns)
	w := startStatusWriter(b, c, ns, 16)
	deploys := client.For[*appsv1.Deployment](c, ns)
	d := deployment(ns, "web", replicas)
	d.Spec.Template.Metadata.Annotations = map[string]string{markerAnnotation: "v0"}
	start := time.Now()
	if _, err := deploys.Create(ctx, d); err != nil {
		b.Fatal(err)
	}
	poll(b, "first rollout", 20*time.Millisecond, 3*time.Minute, func() (bool, string) {
		return rolledOut(ctx, c, ns, "web", replicas, "v0")
	})
	b.Logf("%d replicas available %s after the Deployment was created", replicas, time.Since(start).Round(time.Millisecond))

	// Several rollouts, one after the other, each from a fully available
	// Deployment: the VM's noise moves a single one by half.
	var took time.Duration
	var cmWrites float64
	for i := range b.N * rollouts {
		marker := fmt.Sprintf("v%d", i+1)
		before, statusBefore := writes(b, s), w.writes.Load()
		b.StartTimer()
		start := time.Now()
		mine := 0
		for {
			cur, err := deploys.Get(ctx, "web")
			if err != nil {
				b.Fatal(err)
			}
			cur.Spec.Template.Metadata.Annotations[markerAnnotation] = marker
			mine++
			if _, err = deploys.Update(ctx, cur); err == nil {
				break
			}
			if !apierrors.IsConflict(err) || mine > 10 {
				b.Fatal(err)
			}
		}
		poll(b, "rollout to "+marker, 10*time.Millisecond, 3*time.Minute, func() (bool, string) {
			return rolledOut(ctx, c, ns, "web", replicas, marker)
		})
		elapsed := time.Since(start)
		b.StopTimer()
		by := since(before, writes(b, s))
		theirs := w.writes.Load() - statusBefore
		cm := total(by) - float64(theirs) - float64(mine)
		took += elapsed
		cmWrites += cm
		b.Logf("rollout %d of %d pods in %s: %.2f controller-manager writes per replaced pod; all writes (%d stand-in kubelet, %d benchmark): %s",
			i, replicas, elapsed.Round(time.Millisecond), cm/replicas, theirs, mine, format(by))
	}
	pods := float64(b.N * rollouts * replicas)
	b.ReportMetric(took.Seconds()/float64(b.N*rollouts), "rollout-s")
	b.ReportMetric(pods/took.Seconds(), "pods-replaced/s")
	b.ReportMetric(cmWrites/pods, "cm-writes/replaced-pod")
}
