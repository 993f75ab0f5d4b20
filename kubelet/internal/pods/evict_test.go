package pods

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/status"
	corev1 "skiff.dev/proto/api/core/v1"
)

// stubborn is a runtime whose containers ignore SIGTERM: a stop only ends
// them when its grace period runs out (here, at most 5 s).
type stubborn struct {
	*cri.Fake
	mu    sync.Mutex
	stops []int64
	// sandboxErr fails every StopPodSandbox, as the second teardown of a
	// sandbox's network does.
	sandboxErr error
}

func (r *stubborn) StopPodSandbox(ctx context.Context, id string) error {
	r.mu.Lock()
	err := r.sandboxErr
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return r.Fake.StopPodSandbox(ctx, id)
}

func (r *stubborn) StopContainer(ctx context.Context, id string, timeout int64) error {
	r.mu.Lock()
	r.stops = append(r.stops, timeout)
	r.mu.Unlock()
	if timeout > 0 {
		select {
		case <-time.After(min(time.Duration(timeout)*time.Second, 5*time.Second)):
		case <-ctx.Done():
		}
	}
	return r.Fake.StopContainer(ctx, id, 0)
}

func (r *stubborn) running() int {
	r.FakeRuntimeService.Lock()
	defer r.FakeRuntimeService.Unlock()
	n := 0
	for _, c := range r.FakeRuntimeService.Containers {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			n++
		}
	}
	return n
}

// startStubborn is start's harness over a stubborn runtime, with
// status.Compute.
func startStubborn(t *testing.T, objs ...*corev1.Pod) (*Manager, *stubborn, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset()
	for _, p := range objs {
		if err := cs.Tracker().Add(p); err != nil {
			t.Fatal(err)
		}
	}
	f := informers.NewFactory(cs.Client, informers.Options{})
	pods := informers.For[*corev1.Pod](f)
	rt := &stubborn{Fake: cri.NewFake()}
	rt.SetFakeImages([]string{"agnhost:2.53"})
	m, err := New(Config{Client: &client.Client{API: cs.Client.API}, NodeName: "node-1", Runtime: rt, Pods: pods.Lister(),
		HasSynced: pods.Informer().HasSynced, Recorder: record.NewFakeRecorder(1000), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Status: status.Compute, RelistPeriod: 20 * time.Millisecond, ResyncPeriod: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	reg := pods.Informer().AddHandler(m.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	f.Start(ctx)
	if !informers.WaitForCacheSync(ctx, reg) {
		t.Fatal("informer never synced")
	}
	t.Cleanup(func() {
		cancel()
		<-done
		f.Shutdown()
		cs.Close()
	})
	return m, rt, cs
}

// The grace period given is the one the containers get, not the pod's own
// (kuberuntime gives every container at least 2 s).
func TestEvictKillsWithTheGracePeriodGiven(t *testing.T) {
	m, rt, cs := startStubborn(t, pod("web", "uid-1", 30))
	eventually(t, "pod Running", func() bool {
		p, err := client.For[*corev1.Pod](cs.Client, "default").Get(context.Background(), "web")
		return err == nil && p.GetStatus().GetPhase() == "Running" && rt.running() == 1
	})
	zero := int64(0)
	start := time.Now()
	if err := m.Evict(context.Background(), "uid-1", "Evicted", "m", &zero); err != nil {
		t.Fatal(err)
	}
	if n := rt.running(); n != 0 {
		t.Errorf("%d containers running after Evict returned", n)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Evict took %s: the containers had their own grace period", d)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if !slices.ContainsFunc(rt.stops, func(s int64) bool { return s <= 2 }) {
		t.Errorf("StopContainer timeouts %v, want the eviction's (2 s at least)", rt.stops)
	}
}

// An evicted pod: Failed with the reason and message, a DisruptionTarget
// condition and terminated containers, killed with the grace period
// given, a Warning event; it stays in the API and its containers are not
// started again.
func TestEvict(t *testing.T) {
	h := startWith(t, status.Compute, pod("web", "uid-1", 30))
	eventually(t, "pod Running", func() bool {
		p, err := h.get(t, "web")
		return err == nil && p.GetStatus().GetPhase() == "Running"
	})
	const msg = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "
	zero := int64(0)
	if err := h.m.Evict(context.Background(), "uid-1", "Evicted", msg, &zero); err != nil {
		t.Fatal(err)
	}
	p, err := h.get(t, "web")
	if err != nil {
		t.Fatal(err)
	}
	st := p.GetStatus()
	if st.GetPhase() != "Failed" || st.GetReason() != "Evicted" || st.GetMessage() != msg {
		t.Errorf("status phase %q reason %q message %q", st.GetPhase(), st.GetReason(), st.GetMessage())
	}
	var disruption bool
	for _, c := range st.GetConditions() {
		if c.GetType() == "DisruptionTarget" {
			disruption = c.GetStatus() == "True" && c.GetReason() == "TerminationByKubelet" && c.GetMessage() == msg
		}
	}
	if !disruption {
		t.Errorf("no DisruptionTarget condition: %v", st.GetConditions())
	}
	if cs := st.GetContainerStatuses(); len(cs) != 1 || cs[0].GetState().GetTerminated() == nil {
		t.Errorf("container statuses %v, want web terminated", cs)
	}
	found := false
	for len(h.rec.Events) > 0 {
		if ev := <-h.rec.Events; ev == "Warning Evicted "+msg {
			found = true
		}
	}
	if !found {
		t.Error("no Evicted event")
	}

	// Many resyncs and relists later: still Failed, nothing restarted,
	// nothing deleted.
	time.Sleep(300 * time.Millisecond)
	h.rt.FakeRuntimeService.Lock()
	var states []string
	for _, c := range h.rt.FakeRuntimeService.Containers {
		states = append(states, c.State.String())
	}
	var readySandboxes int
	for _, sb := range h.rt.FakeRuntimeService.Sandboxes {
		if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			readySandboxes++
		}
	}
	h.rt.FakeRuntimeService.Unlock()
	if len(states) != 1 || states[0] != runtimeapi.ContainerState_CONTAINER_EXITED.String() {
		t.Errorf("containers after the eviction: %v, want the one exited", states)
	}
	if readySandboxes != 0 {
		t.Errorf("%d sandboxes still ready", readySandboxes)
	}
	if p, err := h.get(t, "web"); err != nil || p.GetStatus().GetPhase() != "Failed" || p.GetStatus().GetReason() != "Evicted" {
		t.Errorf("pod after resyncs: %v, %v", p.GetStatus(), err)
	}
	h.api.mu.Lock()
	defer h.api.mu.Unlock()
	if len(h.api.deletes) != 0 {
		t.Errorf("the kubelet deleted the evicted pod: %v", h.api.deletes)
	}
}

// Static pods are never evicted; unknown ones cannot be.
func TestEvictRefuses(t *testing.T) {
	h := startWith(t, status.Compute, pod("web", "uid-1", 30))
	h.m.mu.Lock()
	h.m.static["uid-static"] = pod("static", "uid-static", 30)
	h.m.mu.Unlock()
	zero := int64(0)
	if err := h.m.Evict(context.Background(), "uid-static", "Evicted", "m", &zero); err == nil || !strings.Contains(err.Error(), "static pod") {
		t.Errorf("evicting a static pod: %v", err)
	}
	if err := h.m.Evict(context.Background(), "uid-nope", "Evicted", "m", &zero); err == nil || !strings.Contains(err.Error(), "no pod with UID uid-nope") {
		t.Errorf("evicting an unknown pod: %v", err)
	}
}

// A sandbox that will not stop (its network torn down already by the
// worker's own stop) does not fail an eviction whose containers are dead.
func TestEvictToleratesASandboxStopFailure(t *testing.T) {
	m, rt, cs := startStubborn(t, pod("web", "uid-1", 1))
	eventually(t, "pod Running", func() bool {
		p, err := client.For[*corev1.Pod](cs.Client, "default").Get(context.Background(), "web")
		return err == nil && p.GetStatus().GetPhase() == "Running" && rt.running() == 1
	})
	rt.mu.Lock()
	rt.sandboxErr = errors.New(`failed to destroy network for sandbox: plugin type="bridge" failed (delete): failed to delete "eth0": no such device`)
	rt.mu.Unlock()
	zero := int64(0)
	if err := m.Evict(context.Background(), "uid-1", "Evicted", "m", &zero); err != nil {
		t.Fatalf("Evict: %v", err)
	}
	if n := rt.running(); n != 0 {
		t.Errorf("%d containers running", n)
	}
	eventually(t, "the final status, container terminated", func() bool {
		p, err := client.For[*corev1.Pod](cs.Client, "default").Get(context.Background(), "web")
		cs := p.GetStatus().GetContainerStatuses()
		return err == nil && p.GetStatus().GetReason() == "Evicted" && len(cs) == 1 && cs[0].GetState().GetTerminated() != nil
	})
}
