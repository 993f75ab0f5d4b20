// Package bench measures skiff-controller-manager against a real in-process
// apiserver on embedded etcd, with no kubelet and no scheduler: how fast the
// ReplicaSet and Deployment controllers turn one object into thousands of
// pods, next to the apiserver's own pod Create throughput measured in the
// same run; what a rolling update of 1,000 pods costs in time and in API
// writes per replaced pod; and the memory the controller-manager holds idle
// and with 10,000 pods cached. Run with `make bench`; every figure is printed
// with b.ReportMetric, with a log line saying what was measured.
//
// The memory benchmarks also run the built binary (bin/skiff-controller-manager,
// from `make build`; SKIFF_BIN_DIR names another directory) and skip that
// part, naming the missing file, when it is absent.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/client"
	"skiff.dev/client/config"
	"skiff.dev/controller-manager/app"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

var (
	podKind, _ = scheme.ForMessage(&corev1.Pod{})
	rsKind, _  = scheme.ForMessage(&appsv1.ReplicaSet{})
)

func q(s string) *metav1.Quantity { return &metav1.Quantity{String_: s} }

func ptr[T any](v T) *T { return &v }

// template is a web server's pod template, the size of a typical one.
func template(app string) *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{
		Metadata: &metav1.ObjectMeta{Labels: map[string]string{"app": app, "tier": "frontend"}},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{
			Name: "web", Image: "registry.local/nginx:1.27",
			Ports: []*corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: "TCP"}},
			Env:   []*corev1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}},
			Resources: &corev1.ResourceRequirements{Requests: map[string]*metav1.Quantity{
				"cpu": q("100m"), "memory": q("128Mi")}},
		}}},
	}
}

func selector(app string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

func replicaSet(ns, name string, replicas int32) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{
		Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:     &appsv1.ReplicaSetSpec{Replicas: ptr(replicas), Selector: selector(name), Template: template(name)},
	}
}

func deployment(ns, name string, replicas int32) *appsv1.Deployment {
	quarter := &metav1.IntOrString{Type: 1, StrVal: "25%"}
	return &appsv1.Deployment{
		Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: &appsv1.DeploymentSpec{Replicas: ptr(replicas), Selector: selector(name), Template: template(name),
			Strategy: &appsv1.DeploymentStrategy{Type: "RollingUpdate",
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: quarter, MaxUnavailable: quarter}}},
	}
}

func createNamespace(b *testing.B, c *client.Client, name string) {
	b.Helper()
	if _, err := client.For[*corev1.Namespace](c, "").Create(context.Background(),
		&corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: name}}); err != nil {
		b.Fatal(err)
	}
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

// poll calls cond every interval until it is true; past the deadline it
// fails the benchmark with what cond last said.
func poll(b *testing.B, what string, interval, timeout time.Duration, cond func() (bool, string)) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: not after %s (%s)", what, timeout, state)
		}
		<-t.C
	}
}

func logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// registered says whether the controller-manager has a controller by this
// name or alias: building a manager calls no API, and one whose selection
// names a controller Skiff lacks enables nothing.
func registered(b *testing.B, c *client.Client, name string) bool {
	b.Helper()
	m, err := app.New(app.Config{Client: c, Controllers: []string{name}, Registerer: prometheus.NewRegistry(), Logger: logger()})
	if err != nil {
		b.Fatal(err)
	}
	return len(m.Enabled()) == 1
}

// manager runs an embedded controller-manager with the given controllers
// ("*" for the default set) until the returned stop is called, which waits
// for it to return; it returns the canonical names of those that run. A
// controller failing fails the benchmark.
func manager(b *testing.B, s *apitest.Server, c *client.Client, controllers ...string) (enabled string, stop func()) {
	b.Helper()
	m, err := app.New(app.Config{Client: c, Controllers: controllers, Options: defaults(b, s),
		Registerer: prometheus.NewRegistry(), Logger: logger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				b.Errorf("controller-manager: %v", err)
			}
		})
	}
	b.Cleanup(stop)
	return strings.Join(m.Enabled(), ","), stop
}

// defaults are the binary's flag defaults, with the admin kubeconfig's CA
// as the root CA, as the binary takes it when given no --root-ca-file.
func defaults(b *testing.B, s *apitest.Server) app.ControllerOptions {
	b.Helper()
	kc, err := config.Load(s.AdminConfig())
	if err != nil {
		b.Fatal(err)
	}
	r, err := kc.Resolve("")
	if err != nil {
		b.Fatal(err)
	}
	return app.NewOptions().ControllerOptions(r.CA)
}

// writeVerbs are the verbs of apiserver_request_total that change state.
var writeVerbs = []string{"create", "update", "patch", "delete"}

// writes reads the apiserver's write requests so far, by "verb resource[/subresource]".
func writes(b *testing.B, s *apitest.Server) map[string]float64 {
	b.Helper()
	mfs, err := s.Server.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "apiserver_request_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if !slices.Contains(writeVerbs, l["verb"]) {
				continue
			}
			k := l["verb"] + " " + l["resource"]
			if l["subresource"] != "" {
				k += "/" + l["subresource"]
			}
			out[k] += m.GetCounter().GetValue()
		}
	}
	return out
}

// since is after minus before, without the zero entries.
func since(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if n := v - before[k]; n != 0 {
			d[k] = n
		}
	}
	return d
}

func total(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

func format(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%.0f", k, m[k])
	}
	return strings.Join(parts, " ")
}

// sentinel creates a one-replica ReplicaSet (or Deployment) and waits for
// its pod: proof that the controller's informers synced and it works, so
// what is measured next is not a cache's first list. alive, if not nil, is
// checked on every poll (a process that exited fails at once).
func sentinel(b *testing.B, c *client.Client, ns, name string, viaDeployment bool, alive func() error) {
	b.Helper()
	ctx := context.Background()
	var err error
	if viaDeployment {
		_, err = client.For[*appsv1.Deployment](c, ns).Create(ctx, deployment(ns, name, 1))
	} else {
		_, err = client.For[*appsv1.ReplicaSet](c, ns).Create(ctx, replicaSet(ns, name, 1))
	}
	if err != nil {
		b.Fatal(err)
	}
	poll(b, "pod of sentinel "+ns+"/"+name, 20*time.Millisecond, 2*time.Minute, func() (bool, string) {
		if alive != nil {
			if err := alive(); err != nil {
				b.Fatal(err)
			}
		}
		l, err := client.For[*corev1.Pod](c, ns).List(ctx, client.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err.Error()
		}
		return len(l.Items) > 0, "no pod yet"
	})
}
