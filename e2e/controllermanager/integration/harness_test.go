// Package integration runs skiff-controller-manager's controllers against a
// real in-process apiserver on an embedded etcd, with no kubelet: where a
// test needs running pods it plays the kubelet by writing pod status, as
// upstream's integration tests do.
package integration

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/apitest"
	apiapp "skiff.dev/apiserver/app"
	"skiff.dev/client"
	"skiff.dev/controller-manager/app"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

type env struct {
	t   *testing.T
	api *apitest.Server
	c   *client.Client
	// stop ends the controller-manager setup started.
	stop func()
}

// setup starts an apiserver and the named controllers (canonical names or
// upstream's aliases) until the test ends.
func setup(t *testing.T, controllers []string, opts app.ControllerOptions) *env {
	t.Helper()
	return setupWith(t, nil, controllers, opts)
}

// setupWith is setup with the apiserver's options changed by mutate.
func setupWith(t *testing.T, mutate func(*apiapp.Options), controllers []string, opts app.ControllerOptions) *env {
	t.Helper()
	var s *apitest.Server
	if mutate != nil {
		s = apitest.Start(t, mutate)
	} else {
		s = apitest.Start(t)
	}
	e := &env{t: t, api: s, c: client.New(s.Conn)}
	e.stop = setupOn(t, e, controllers, opts)
	return e
}

// setupOn starts another controller-manager on e's apiserver and returns
// what stops it (also run when the test ends).
func setupOn(t *testing.T, e *env, controllers []string, opts app.ControllerOptions) (stop func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.Default()
	}
	m, err := app.New(app.Config{Client: e.c, Controllers: controllers, Options: opts, Registerer: prometheus.NewRegistry(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller-manager: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// eventually polls cond for up to 30 seconds.
func (e *env) eventually(what string, cond func() (bool, error)) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("%s: not after 30s (last error: %v)", what, last)
}

// markRunning plays the scheduler and the kubelet: the pod is bound to node
// (if it is not yet), Running, with an IP and Ready as given.
func (e *env) markRunning(p *corev1.Pod, node, ip string, ready bool) *corev1.Pod {
	e.t.Helper()
	pods := client.For[*corev1.Pod](e.c, p.Metadata.Namespace)
	if p.GetSpec().GetNodeName() == "" {
		err := e.c.Bind(e.ctx(), &corev1.Binding{Metadata: &metav1.ObjectMeta{Namespace: p.Metadata.Namespace, Name: p.Metadata.Name},
			Target: &corev1.ObjectReference{Kind: "Node", Name: node}})
		if err != nil && !strings.Contains(err.Error(), "already") {
			e.t.Fatalf("bind %s: %v", p.Metadata.Name, err)
		}
	}
	for attempt := 0; ; attempt++ {
		cur, err := pods.Get(e.ctx(), p.Metadata.Name)
		if err != nil {
			e.t.Fatal(err)
		}
		next := proto.Clone(cur).(*corev1.Pod)
		status := "False"
		if ready {
			status = "True"
		}
		now := metav1.Now()
		next.Status = &corev1.PodStatus{Phase: "Running", PodIP: ip, PodIPs: []*corev1.PodIP{{Ip: ip}}, HostIP: "127.0.0.1",
			StartTime: now,
			Conditions: []*corev1.PodCondition{{Type: "Ready", Status: status, LastTransitionTime: now},
				{Type: "ContainersReady", Status: status, LastTransitionTime: now}}}
		out, err := pods.UpdateStatus(e.ctx(), next)
		if err == nil {
			return out
		}
		if attempt > 5 {
			e.t.Fatalf("status of %s: %v", p.Metadata.Name, err)
		}
	}
}
