// Package hollow measures the whole control plane at the scale of a
// cluster, as upstream's kubemark does: a real apiserver on embedded etcd,
// the scheduler and the controller-manager, and 100 hollow nodes (real
// kubelets over in-memory CRI runtimes, skiff.dev/kubelet/hollow), all in
// this process. Run with `make bench`.
package hollow

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/client"
	"skiff.dev/client/config"
	"skiff.dev/client/informer"
	cmapp "skiff.dev/controller-manager/app"
	hollownodes "skiff.dev/kubelet/hollow"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
	schedapp "skiff.dev/scheduler/app"
)

// The figure: 100 hollow nodes and 3,000 pods, in 30 Deployments
// of 100.
const (
	nodes       = 100
	deployments = 30
	replicas    = 100
	pods        = deployments * replicas
	namespace   = "hollow"
)

func logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func ptr[T any](v T) *T { return &v }

func q(s string) *metav1.Quantity { return &metav1.Quantity{String_: s} }

// connect is a connection of its own to s, as each component of a real
// cluster has; the hollow nodes share one, as kubemark's of one pod would.
func connect(b *testing.B, s *apitest.Server) (*grpc.ClientConn, *config.Resolved) {
	b.Helper()
	kc, err := config.Load(s.AdminConfig())
	if err != nil {
		b.Fatal(err)
	}
	r, err := kc.Resolve("")
	if err != nil {
		b.Fatal(err)
	}
	conn, err := r.Dial()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn, r
}

// start runs fn in the background until the benchmark ends, then waits for
// it; an error other than the end fails the benchmark.
func start(b *testing.B, what string, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			b.Errorf("%s: %v", what, err)
		}
	})
}

func deployment(name string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		Metadata: &metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: &appsv1.DeploymentSpec{
			Replicas: ptr(int32(replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: &corev1.PodTemplateSpec{
				Metadata: &metav1.ObjectMeta{Labels: labels},
				Spec: &corev1.PodSpec{Containers: []*corev1.Container{{
					Name: "web", Image: "skiff.local/agnhost:2.53", Args: []string{"netexec", "--http-port=8080"},
					Ports: []*corev1.ContainerPort{{ContainerPort: 8080, Protocol: "TCP"}},
					Resources: &corev1.ResourceRequirements{Requests: map[string]*metav1.Quantity{
						"cpu": q("50m"), "memory": q("64Mi")}},
				}}},
			},
		},
	}
}

// ready says whether a node is Ready and no longer tainted not-ready (the
// scheduler's view of a node it may use).
func ready(n *corev1.Node) bool {
	for _, t := range n.GetSpec().GetTaints() {
		if t.GetKey() == "node.kubernetes.io/not-ready" || t.GetKey() == "node.kubernetes.io/unreachable" {
			return false
		}
	}
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

// progress records, from a watch of the namespace's pods, when each pod was
// first seen created, bound and Running, and signals when all are Running.
type progress struct {
	mu                      sync.Mutex
	created, bound, running map[string]time.Time
	lastCreated, lastBound  time.Time
	lastRunning             time.Time
	allRunning              chan struct{}
}

func newProgress() *progress {
	return &progress{created: map[string]time.Time{}, bound: map[string]time.Time{}, running: map[string]time.Time{},
		allRunning: make(chan struct{})}
}

func (p *progress) see(o scheme.Object) {
	pod := o.(*corev1.Pod)
	now := time.Now()
	uid := pod.GetMetadata().GetUid()
	p.mu.Lock()
	defer p.mu.Unlock()
	mark := func(m map[string]time.Time, last *time.Time) {
		if _, ok := m[uid]; !ok {
			m[uid], *last = now, now
		}
	}
	mark(p.created, &p.lastCreated)
	if pod.GetSpec().GetNodeName() != "" {
		mark(p.bound, &p.lastBound)
	}
	if pod.GetStatus().GetPhase() == "Running" {
		mark(p.running, &p.lastRunning)
		if len(p.running) == pods {
			close(p.allRunning)
		}
	}
}

func (p *progress) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("%d pods created, %d bound, %d Running", len(p.created), len(p.bound), len(p.running))
}

// startCluster runs the apiserver, the scheduler, the controller-manager
// (every default controller) and n hollow nodes until the benchmark ends,
// and returns once every node is Ready and untainted.
func startCluster(b *testing.B, ctx context.Context, n int) (*client.Client, *hollownodes.Nodes) {
	s := apitest.Start(b)
	admin, r := connect(b, s)
	c := client.New(admin)

	schedConn, _ := connect(b, s)
	sched, err := schedapp.New(schedapp.Config{Client: client.New(schedConn), Registerer: prometheus.NewRegistry(), Logger: logger()})
	if err != nil {
		b.Fatal(err)
	}
	start(b, "scheduler", sched.Run)

	cmConn, _ := connect(b, s)
	opts := cmapp.NewOptions().ControllerOptions(r.CA)
	// 100 nodes of a /24 each need at least a /17.
	opts.AllocateNodeCIDRs, opts.ClusterCIDR, opts.NodeCIDRMaskSize = true, "10.128.0.0/9", 24
	cm, err := cmapp.New(cmapp.Config{Client: client.New(cmConn), Options: opts, Registerer: prometheus.NewRegistry(), Logger: logger()})
	if err != nil {
		b.Fatal(err)
	}
	start(b, "controller-manager", cm.Run)

	nodesConn, _ := connect(b, s)
	o := hollownodes.NewOptions()
	o.Nodes, o.RootDir = n, b.TempDir()
	hn, err := hollownodes.New(hollownodes.Config{Options: *o, Client: client.New(nodesConn), Logger: logger()})
	if err != nil {
		b.Fatal(err)
	}
	start(b, "hollow nodes", hn.Run)

	// Every node registered, given its podCIDR, Ready and untainted.
	registered := time.Now()
	nodeClient := client.For[*corev1.Node](c, "")
	for {
		l, err := nodeClient.List(ctx, client.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		ok := 0
		for _, nd := range l.Items {
			if ready(nd) {
				ok++
			}
		}
		if ok == n {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("%d of %d nodes Ready and untainted after %s", ok, n, time.Since(registered).Round(time.Second))
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Logf("%d hollow nodes Ready in %s", n, time.Since(registered).Round(100*time.Millisecond))
	return c, hn
}

// BenchmarkHollowNodes100Pods3000 prints the time from the creation of 30
// Deployments of 100 replicas to every one of their 3,000 pods Running on
// 100 hollow nodes, as a watch sees it, through the whole control plane
// (Deployment and ReplicaSet controllers, scheduler, kubelets' pod workers
// and status), and the pods per second that makes; with, as a breakdown,
// when the last pod was created and when the last was bound.
func BenchmarkHollowNodes100Pods3000(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, hn := startCluster(b, ctx, nodes)

	if _, err := client.For[*corev1.Namespace](c, "").Create(ctx, &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: namespace}}); err != nil {
		b.Fatal(err)
	}
	p := newProgress()
	podKind, _ := scheme.ForMessage(&corev1.Pod{})
	watch := informer.New(c.Resource(podKind, namespace), informer.Options{Logger: logger()})
	watch.AddHandler(informer.Handler{OnAdd: p.see, OnUpdate: func(_, o scheme.Object) { p.see(o) }})
	start(b, "pod watch", watch.Run)
	if !watch.WaitForSync(ctx) {
		b.Fatal("the pod watch did not sync")
	}

	b.ResetTimer()
	t0 := time.Now()
	var g errgroup.Group
	for i := range deployments {
		g.Go(func() error {
			_, err := client.For[*appsv1.Deployment](c, namespace).Create(ctx, deployment(fmt.Sprintf("web-%02d", i)))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	select {
	case <-p.allRunning:
	case <-ctx.Done():
		b.Fatalf("after %s: %s", time.Since(t0).Round(time.Second), p)
	}
	b.StopTimer()

	p.mu.Lock()
	elapsed := p.lastRunning.Sub(t0)
	created, bound := p.lastCreated.Sub(t0), p.lastBound.Sub(t0)
	p.mu.Unlock()
	b.ReportMetric(elapsed.Seconds(), "all-running-s")
	b.ReportMetric(pods/elapsed.Seconds(), "pods/s")
	b.ReportMetric(created.Seconds(), "all-created-s")
	b.ReportMetric(bound.Seconds(), "all-bound-s")
	b.Logf("%d Deployments of %d on %d hollow nodes: every pod created after %s, bound after %s, Running after %s (%.0f pods/s)",
		deployments, replicas, nodes, created.Round(time.Millisecond), bound.Round(time.Millisecond), elapsed.Round(time.Millisecond), pods/elapsed.Seconds())

	// What the nodes really run: every pod's sandbox, spread over them.
	var total, most int
	for _, n := range hn.Sandboxes() {
		total, most = total+n, max(most, n)
	}
	if total != pods {
		b.Errorf("the nodes run %d sandboxes, want %d", total, pods)
	}
	b.Logf("sandboxes: %d in all, at most %d on one node", total, most)
}
