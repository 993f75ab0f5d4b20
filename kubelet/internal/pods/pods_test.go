package pods

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/kuberuntime"
	"skiff.dev/kubelet/internal/status"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apipb"
)

// runtime records StopContainer's timeouts, which the fake forgets.
type runtime struct {
	*cri.Fake
	mu    sync.Mutex
	stops []int64
}

func (r *runtime) StopContainer(ctx context.Context, id string, timeout int64) error {
	r.mu.Lock()
	r.stops = append(r.stops, timeout)
	r.mu.Unlock()
	return r.Fake.StopContainer(ctx, id, timeout)
}

// api records delete requests, whose options the fake's actions omit.
type api struct {
	apipb.APIClient
	mu      sync.Mutex
	deletes []*apipb.DeleteRequest
}

func (a *api) Delete(ctx context.Context, in *apipb.DeleteRequest, opts ...grpc.CallOption) (*anypb.Any, error) {
	a.mu.Lock()
	a.deletes = append(a.deletes, proto.Clone(in).(*apipb.DeleteRequest))
	a.mu.Unlock()
	return a.APIClient.Delete(ctx, in, opts...)
}

type harness struct {
	cs     *fake.Clientset
	api    *api
	rt     *runtime
	m      *Manager
	rec    *record.FakeRecorder
	cancel context.CancelFunc
}

// simpleStatus is a stand-in for status.Compute: phase Running once every
// container runs, with the running count.
func simpleStatus(in status.Input) *corev1.PodStatus {
	running := 0
	for _, c := range in.Runtime.Containers {
		if c.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			running++
		}
	}
	phase := "Pending"
	if running == len(in.Pod.GetSpec().GetContainers()) && running > 0 {
		phase = "Running"
	}
	if in.Terminal {
		phase = "Succeeded"
	}
	return &corev1.PodStatus{Phase: phase, Message: fmt.Sprintf("%d running", running), PodIP: strings.Join(in.Runtime.PodIPs, ",")}
}

func start(t *testing.T, objs ...*corev1.Pod) *harness {
	t.Helper()
	return startWith(t, simpleStatus, objs...)
}

func startWith(t *testing.T, statusFn func(status.Input) *corev1.PodStatus, objs ...*corev1.Pod) *harness {
	t.Helper()
	cs := fake.NewClientset()
	for _, p := range objs {
		if err := cs.Tracker().Add(p); err != nil {
			t.Fatal(err)
		}
	}
	a := &api{APIClient: cs.Client.API}
	c := &client.Client{API: a}
	f := informers.NewFactory(cs.Client, informers.Options{})
	pods := informers.For[*corev1.Pod](f)
	rt := &runtime{Fake: cri.NewFake()}
	rt.SetFakeImages([]string{"agnhost:2.53"})
	rec := record.NewFakeRecorder(10000)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.Default()
	}
	m, err := New(Config{
		Client: c, NodeName: "node-1", Runtime: rt, Pods: pods.Lister(), HasSynced: pods.Informer().HasSynced,
		Recorder: rec, Logger: log, Status: statusFn, RelistPeriod: 20 * time.Millisecond, ResyncPeriod: 50 * time.Millisecond,
	})
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
	return &harness{cs, a, rt, m, rec, cancel}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func pod(name, uid string, grace int64) *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: uid},
		Spec: &corev1.PodSpec{NodeName: "node-1", RestartPolicy: "Always", TerminationGracePeriodSeconds: &grace,
			Containers: []*corev1.Container{{Name: "app", Image: "agnhost:2.53", ImagePullPolicy: "IfNotPresent"}}},
		Status: &corev1.PodStatus{Phase: "Pending"},
	}
}

func (h *harness) get(t *testing.T, name string) (*corev1.Pod, error) {
	return client.For[*corev1.Pod](h.cs.Client, "default").Get(context.Background(), name)
}

func (h *harness) statusUpdates() int {
	n := 0
	for _, a := range h.cs.Actions() {
		if a.Verb == "update" && a.Subresource == "status" {
			n++
		}
	}
	return n
}

func TestPodRunsAndStatusIsWrittenOnlyOnChange(t *testing.T) {
	h := start(t, pod("web", "uid-1", 30))
	eventually(t, "pod Running", func() bool {
		p, err := h.get(t, "web")
		return err == nil && p.GetStatus().GetPhase() == "Running"
	})
	p, _ := h.get(t, "web")
	if p.Status.PodIP != "192.168.192.168" || p.Status.Message != "1 running" {
		t.Errorf("status %v", p.Status)
	}
	n := h.statusUpdates()
	// Many resyncs and relists later, nothing changed: nothing written.
	time.Sleep(300 * time.Millisecond)
	if m := h.statusUpdates(); m != n {
		t.Errorf("%d status updates after the pod settled, want 0 more (had %d)", m-n, n)
	}
	if n > 3 {
		t.Errorf("%d status updates to get one pod Running", n)
	}
	// A container dies: the PLEG notices, it restarts, the status changes.
	h.rt.FakeRuntimeService.Lock()
	for _, c := range h.rt.FakeRuntimeService.Containers {
		c.State = runtimeapi.ContainerState_CONTAINER_EXITED
		c.ExitCode = 1
		c.FinishedAt = time.Now().UnixNano()
	}
	h.rt.FakeRuntimeService.Unlock()
	eventually(t, "container restarted", func() bool {
		st, _ := kuberuntime.Inspect(context.Background(), h.rt, "uid-1", time.Now())
		c := st.Container("app")
		return c.GetMetadata().GetAttempt() == 1 && c.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING
	})
}

func TestDeletedPodIsStoppedWithItsGracePeriodThenDeleted(t *testing.T) {
	h := start(t, pod("web", "uid-1", 30))
	eventually(t, "pod Running", func() bool {
		p, err := h.get(t, "web")
		return err == nil && p.GetStatus().GetPhase() == "Running"
	})
	grace := int64(5)
	if _, err := client.For[*corev1.Pod](h.cs.Client, "default").Delete(context.Background(), "web", client.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	// The final status write may already remove the pod (the registry
	// deletes a deleting object on any write): wait for the kubelet's
	// delete too.
	eventually(t, "pod gone from the API and deleted by the kubelet", func() bool {
		_, err := h.get(t, "web")
		h.api.mu.Lock()
		defer h.api.mu.Unlock()
		return err != nil && len(h.api.deletes) > 0
	})
	h.rt.mu.Lock()
	stops := append([]int64(nil), h.rt.stops...)
	h.rt.mu.Unlock()
	if len(stops) == 0 || stops[0] < 4 || stops[0] > 5 {
		t.Errorf("StopContainer timeouts %v, want the deletion's 5 s", stops)
	}
	h.api.mu.Lock()
	dels := h.api.deletes
	h.api.mu.Unlock()
	if len(dels) != 1 || dels[0].GetGracePeriodSeconds() != 0 || dels[0].GracePeriodSeconds == nil || dels[0].GetPreconditions().GetUid() != "uid-1" {
		t.Fatalf("kubelet deletes %v, want one with grace 0 and the UID precondition", dels)
	}
	eventually(t, "sandbox and containers removed", func() bool {
		h.rt.FakeRuntimeService.Lock()
		defer h.rt.FakeRuntimeService.Unlock()
		return len(h.rt.FakeRuntimeService.Sandboxes) == 0 && len(h.rt.FakeRuntimeService.Containers) == 0
	})
	found := false
	for len(h.rec.Events) > 0 {
		if ev := <-h.rec.Events; ev == "Normal Killing Stopping container app" {
			found = true
		}
	}
	if !found {
		t.Error("no Killing event")
	}
}

func TestPodRemovedFromAPIWhileRunningIsStopped(t *testing.T) {
	h := start(t, pod("web", "uid-1", 30))
	eventually(t, "pod Running", func() bool {
		p, err := h.get(t, "web")
		return err == nil && p.GetStatus().GetPhase() == "Running"
	})
	zero := int64(0)
	client.For[*corev1.Pod](h.cs.Client, "default").Delete(context.Background(), "web", client.DeleteOptions{GracePeriodSeconds: &zero})
	eventually(t, "runtime pod removed", func() bool {
		h.rt.FakeRuntimeService.Lock()
		defer h.rt.FakeRuntimeService.Unlock()
		return len(h.rt.FakeRuntimeService.Sandboxes) == 0
	})
	h.api.mu.Lock()
	defer h.api.mu.Unlock()
	if len(h.api.deletes) != 0 {
		t.Errorf("kubelet deleted a pod the API no longer had: %v", h.api.deletes)
	}
}

func TestOrphanedSandboxesAreCleaned(t *testing.T) {
	cs := fake.NewClientset()
	defer cs.Close()
	rt := &runtime{Fake: cri.NewFake()}
	// A previous kubelet's pod, no longer in the API.
	old := kuberuntime.New(kuberuntime.Options{Runtime: rt})
	cfg, _ := old.SandboxConfig(pod("gone", "uid-old", 30), 0)
	if _, err := rt.RunPodSandbox(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	f := informers.NewFactory(cs.Client, informers.Options{})
	pods := informers.For[*corev1.Pod](f)
	m, err := New(Config{Client: cs.Client, NodeName: "node-1", Runtime: rt, Pods: pods.Lister(), HasSynced: pods.Informer().HasSynced,
		Status: simpleStatus, ResyncPeriod: 20 * time.Millisecond, RelistPeriod: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := pods.Informer().AddHandler(m.Handler())
	go m.Run(ctx)
	f.Start(ctx)
	informers.WaitForCacheSync(ctx, reg)
	eventually(t, "orphaned sandbox removed", func() bool {
		rt.FakeRuntimeService.Lock()
		defer rt.FakeRuntimeService.Unlock()
		return len(rt.FakeRuntimeService.Sandboxes) == 0
	})
}

func TestWithStatusCompute(t *testing.T) {
	h := startWith(t, status.Compute, pod("web", "uid-1", 30))
	eventually(t, "pod Running with a Ready condition, as status.Compute reports it", func() bool {
		p, err := h.get(t, "web")
		if err != nil || p.GetStatus().GetPhase() != "Running" || len(p.GetStatus().GetContainerStatuses()) != 1 {
			return false
		}
		return p.Status.ContainerStatuses[0].GetState().GetRunning() != nil
	})
	n := h.statusUpdates()
	time.Sleep(200 * time.Millisecond)
	if m := h.statusUpdates(); m != n {
		t.Errorf("%d status updates after the pod settled under status.Compute", m-n)
	}
}
