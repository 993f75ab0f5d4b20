package kuberuntime

import (
	"context"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/client-go/util/flowcontrol"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"skiff.dev/client/record"
	"skiff.dev/kubelet/internal/cri"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func testPod() *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "default", Uid: "uid-1", Labels: map[string]string{"app": "web"}},
		Spec: &corev1.PodSpec{
			RestartPolicy: "Always",
			InitContainers: []*corev1.Container{
				{Name: "init-a", Image: "busybox:1.35", ImagePullPolicy: "IfNotPresent"},
				{Name: "init-b", Image: "busybox:1.35", ImagePullPolicy: "IfNotPresent"},
			},
			Containers: []*corev1.Container{
				{Name: "app", Image: "agnhost:2.53", ImagePullPolicy: "IfNotPresent",
					Ports: []*corev1.ContainerPort{{ContainerPort: 8080, HostPort: 18080, Protocol: "TCP"}}},
				{Name: "sidecar", Image: "busybox:1.35", ImagePullPolicy: "IfNotPresent"},
			},
		},
	}
}

type env struct {
	f     *cri.Fake
	m     *Manager
	clock *clocktesting.FakeClock
	rec   *record.FakeRecorder
}

func newEnv(t *testing.T, images ...string) *env {
	f := cri.NewFake()
	f.SetFakeImages(images)
	clock := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	rec := record.NewFakeRecorder(1000)
	m := New(Options{
		Runtime: f, Recorder: rec, PodLogsDir: t.TempDir(), Now: clock.Now,
		CrashBackoff: flowcontrol.NewFakeBackOff(10*time.Second, 300*time.Second, clock),
		ImageBackoff: flowcontrol.NewFakeBackOff(10*time.Second, 300*time.Second, clock),
		CgroupParent: func(*corev1.Pod) string { return "/kubepods/besteffort/poduid-1" },
	})
	return &env{f, m, clock, rec}
}

func (e *env) sync(t *testing.T, pod *corev1.Pod) SyncResult {
	t.Helper()
	st, err := e.m.Inspect(context.Background(), pod.GetMetadata().GetUid())
	if err != nil {
		t.Fatal(err)
	}
	return e.m.SyncPod(context.Background(), pod, st, nil)
}

// exit makes the newest attempt of name exit with code at the fake clock's now.
func (e *env) exit(t *testing.T, name string, code int32) {
	t.Helper()
	e.f.FakeRuntimeService.Lock()
	defer e.f.FakeRuntimeService.Unlock()
	var newest *runtimeapi.ContainerStatus
	for _, c := range e.f.FakeRuntimeService.Containers {
		if c.Metadata.Name == name && (newest == nil || c.Metadata.Attempt > newest.Metadata.Attempt) {
			newest = &c.ContainerStatus
		}
	}
	if newest == nil {
		t.Fatalf("no container %s", name)
	}
	newest.State = runtimeapi.ContainerState_CONTAINER_EXITED
	newest.ExitCode = code
	newest.FinishedAt = e.clock.Now().UnixNano()
}

func (e *env) states() map[string]string {
	e.f.FakeRuntimeService.Lock()
	defer e.f.FakeRuntimeService.Unlock()
	out := map[string]string{}
	for _, c := range e.f.FakeRuntimeService.Containers {
		out[c.Metadata.Name+"#"+string(rune('0'+c.Metadata.Attempt))] = c.State.String()
	}
	return out
}

func TestSandboxThenInitContainersInOrderThenContainers(t *testing.T) {
	e := newEnv(t, "busybox:1.35", "agnhost:2.53")
	pod := testPod()

	e.sync(t, pod)
	if got, want := e.states(), map[string]string{"init-a#0": "CONTAINER_RUNNING"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after the first sync: %v, want only init-a running", got)
	}
	// The sandbox's config.
	e.f.FakeRuntimeService.Lock()
	var sb *runtimeapi.PodSandboxStatus
	for _, s := range e.f.FakeRuntimeService.Sandboxes {
		sb = &s.PodSandboxStatus
	}
	e.f.FakeRuntimeService.Unlock()
	if sb.Metadata.Uid != "uid-1" || sb.Metadata.Attempt != 0 || sb.Labels[LabelPodUID] != "uid-1" || sb.Labels["app"] != "web" || sb.Labels[LabelPodNamespace] != "default" {
		t.Errorf("sandbox metadata %v labels %v", sb.Metadata, sb.Labels)
	}
	cfg, _ := e.m.SandboxConfig(pod, 0)
	if cfg.Hostname != "web" || !strings.HasSuffix(cfg.LogDirectory, "/default_web_uid-1") || cfg.Linux.CgroupParent != "/kubepods/besteffort/poduid-1" ||
		len(cfg.PortMappings) != 1 || cfg.PortMappings[0].HostPort != 18080 || cfg.Linux.SecurityContext.NamespaceOptions.Network != runtimeapi.NamespaceMode_POD {
		t.Errorf("sandbox config: %v", cfg)
	}

	e.sync(t, pod) // init-a still running: nothing new
	if got := e.states(); len(got) != 1 {
		t.Fatalf("a second sync while init-a runs started more: %v", got)
	}
	e.exit(t, "init-a", 0)
	e.sync(t, pod)
	if got, want := e.states(), map[string]string{"init-a#0": "CONTAINER_EXITED", "init-b#0": "CONTAINER_RUNNING"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after init-a completed: %v, want %v", got, want)
	}
	e.exit(t, "init-b", 0)
	res := e.sync(t, pod)
	want := map[string]string{"init-a#0": "CONTAINER_EXITED", "init-b#0": "CONTAINER_EXITED", "app#0": "CONTAINER_RUNNING", "sidecar#0": "CONTAINER_RUNNING"}
	if got := e.states(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after both init containers completed: %v, want %v", got, want)
	}
	if res.Err != nil || len(res.Waiting) != 0 {
		t.Errorf("result %v waiting %v", res.Err, res.Waiting)
	}
	// The container's config as the runtime got it.
	st, _ := e.m.Inspect(context.Background(), "uid-1")
	app := st.Container("app")
	if app.Labels[LabelContainerName] != "app" || app.Labels[LabelPodUID] != "uid-1" ||
		app.Annotations[AnnotationContainerHash] != HashContainer(pod.Spec.Containers[0]) || app.Annotations[AnnotationContainerRestartCount] != "0" {
		t.Errorf("app labels %v annotations %v", app.Labels, app.Annotations)
	}
	if len(st.Sandboxes) != 1 {
		t.Errorf("%d sandboxes, want 1", len(st.Sandboxes))
	}
}

func TestInitContainerFailureUnderNeverFailsThePod(t *testing.T) {
	e := newEnv(t, "busybox:1.35", "agnhost:2.53")
	pod := testPod()
	pod.Spec.RestartPolicy = "Never"
	e.sync(t, pod)
	e.exit(t, "init-a", 1)
	e.sync(t, pod)
	got := e.states()
	if _, ok := got["init-b#0"]; ok || got["init-a#0"] != "CONTAINER_EXITED" || len(got) != 1 {
		t.Errorf("after init-a failed under Never: %v, want nothing else started", got)
	}
}

func TestSidecarStartedBeforeNextInitAndKept(t *testing.T) {
	e := newEnv(t, "busybox:1.35", "agnhost:2.53")
	pod := testPod()
	pod.Spec.InitContainers[0].RestartPolicy = proto.String("Always") // init-a is a sidecar
	e.sync(t, pod)
	e.sync(t, pod) // init-a running (no startup probe): init-b starts
	if got := e.states(); got["init-a#0"] != "CONTAINER_RUNNING" || got["init-b#0"] != "CONTAINER_RUNNING" {
		t.Fatalf("sidecar then next init: %v", got)
	}
	e.exit(t, "init-b", 0)
	e.sync(t, pod)
	got := e.states()
	if got["init-a#0"] != "CONTAINER_RUNNING" || got["app#0"] != "CONTAINER_RUNNING" || got["sidecar#0"] != "CONTAINER_RUNNING" {
		t.Fatalf("sidecar kept running with the containers: %v", got)
	}
	e.exit(t, "init-a", 1)
	e.sync(t, pod)
	if got := e.states(); got["init-a#1"] != "CONTAINER_RUNNING" {
		t.Errorf("an exited sidecar was not restarted: %v", got)
	}
}

func TestImagePullPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		present bool
		pulls   int
		waiting string
	}{
		{"IfNotPresent", true, 0, ""},
		{"IfNotPresent", false, 1, ""},
		{"Always", true, 1, ""},
		{"Never", false, 0, ReasonErrImageNeverPull},
		{"Never", true, 0, ""},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			var imgs []string
			if tc.present {
				imgs = []string{"agnhost:2.53"}
			}
			e := newEnv(t, imgs...)
			pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Namespace: "default", Uid: "u"},
				Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app", Image: "agnhost:2.53", ImagePullPolicy: tc.policy}}}}
			res := e.sync(t, pod)
			pulls := 0
			e.f.FakeImageService.Lock()
			for _, c := range e.f.FakeImageService.Called {
				if c == "PullImage" {
					pulls++
				}
			}
			e.f.FakeImageService.Unlock()
			if pulls != tc.pulls {
				t.Errorf("present=%v: %d pulls, want %d", tc.present, pulls, tc.pulls)
			}
			if got := res.Waiting["app"].Reason; got != tc.waiting {
				t.Errorf("waiting %q, want %q", got, tc.waiting)
			}
		})
	}
}

func TestImagePullFailureBacksOff(t *testing.T) {
	e := newEnv(t)
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Namespace: "default", Uid: "u"},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app", Image: "reg.local/app:1", ImagePullPolicy: "IfNotPresent"}}}}
	e.f.FakeImageService.InjectError("PullImage", errStr("not found"))
	if res := e.sync(t, pod); res.Waiting["app"].Reason != ReasonErrImagePull {
		t.Fatalf("first failed pull: waiting %v, want ErrImagePull", res.Waiting)
	}
	res := e.sync(t, pod)
	if res.Waiting["app"].Reason != ReasonImagePullBackOff || res.RetryAfter <= 0 {
		t.Fatalf("pull right after a failure: waiting %v retry %v, want ImagePullBackOff", res.Waiting, res.RetryAfter)
	}
	e.clock.Step(11 * time.Second)
	if res := e.sync(t, pod); len(res.Waiting) != 0 {
		t.Fatalf("after the back-off: waiting %v, want the container started", res.Waiting)
	}
}

type errStr string

func (e errStr) Error() string { return string(e) }

func TestCrashingContainerRestartsWithGrowingBackoff(t *testing.T) {
	e := newEnv(t, "agnhost:2.53")
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Namespace: "default", Uid: "u"},
		Spec: &corev1.PodSpec{RestartPolicy: "Always", Containers: []*corev1.Container{{Name: "app", Image: "agnhost:2.53", ImagePullPolicy: "IfNotPresent"}}}}
	e.sync(t, pod)
	attempt := func() int {
		st, _ := e.m.Inspect(context.Background(), "u")
		c := st.Container("app")
		if c.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
			return -1
		}
		return int(c.Metadata.Attempt)
	}
	// First crash: restarted at once (upstream's first back-off entry).
	e.exit(t, "app", 1)
	e.sync(t, pod)
	if a := attempt(); a != 1 {
		t.Fatalf("after the first crash: attempt %d running, want 1", a)
	}
	for i, delay := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second} {
		e.exit(t, "app", 1)
		res := e.sync(t, pod)
		w := res.Waiting["app"]
		if w.Reason != ReasonCrashLoopBackOff || !strings.Contains(w.Message, "back-off "+delay.String()) {
			t.Fatalf("crash %d: waiting %v, want CrashLoopBackOff back-off %v", i+2, w, delay)
		}
		if res.RetryAfter != delay {
			t.Errorf("crash %d: retry after %v, want %v", i+2, res.RetryAfter, delay)
		}
		e.clock.Step(delay - time.Second)
		if res := e.sync(t, pod); res.Waiting["app"].Reason != ReasonCrashLoopBackOff {
			t.Fatalf("crash %d: restarted before its %v back-off", i+2, delay)
		}
		e.clock.Step(time.Second)
		e.sync(t, pod)
		if a := attempt(); a != i+2 {
			t.Fatalf("crash %d: attempt %d running after the back-off, want %d", i+2, a, i+2)
		}
	}
	st, _ := e.m.Inspect(context.Background(), "u")
	if n := len(st.Containers); n != 2 {
		t.Errorf("%d containers kept, want 2 (current and previous)", n)
	}
	found := false
	for len(e.rec.Events) > 0 {
		if ev := <-e.rec.Events; strings.HasPrefix(ev, "Warning BackOff Back-off restarting failed container app in pod p_default(u)") {
			found = true
		}
	}
	if !found {
		t.Error("no BackOff event")
	}
}

func TestOnFailureAndNever(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		code    int32
		restart bool
	}{
		{"OnFailure", 1, true}, {"OnFailure", 0, false}, {"Never", 1, false}, {"Always", 0, true},
	} {
		e := newEnv(t, "agnhost:2.53")
		pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Namespace: "default", Uid: "u"},
			Spec: &corev1.PodSpec{RestartPolicy: tc.policy, Containers: []*corev1.Container{{Name: "app", Image: "agnhost:2.53", ImagePullPolicy: "IfNotPresent"}}}}
		e.sync(t, pod)
		e.exit(t, "app", tc.code)
		res := e.sync(t, pod)
		_, restarted := e.states()["app#1"]
		if restarted != tc.restart {
			t.Errorf("%s exit %d: restarted %v, want %v", tc.policy, tc.code, restarted, tc.restart)
		}
		if !tc.restart && !res.Actions.KillPod {
			t.Errorf("%s exit %d: the finished pod's sandbox is not stopped", tc.policy, tc.code)
		}
	}
}

func TestSpecChangeAndLivenessRestart(t *testing.T) {
	e := newEnv(t, "agnhost:2.53", "agnhost:2.54")
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Namespace: "default", Uid: "u"},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app", Image: "agnhost:2.53", ImagePullPolicy: "IfNotPresent"}}}}
	e.sync(t, pod)
	pod.Spec.Containers[0].Image = "agnhost:2.54"
	res := e.sync(t, pod)
	if len(res.Actions.ContainersToKill) != 1 {
		t.Fatalf("image change: kill %v", res.Actions.ContainersToKill)
	}
	for _, k := range res.Actions.ContainersToKill {
		if k.Message != "Container app definition changed, will be restarted" {
			t.Errorf("kill message %q", k.Message)
		}
	}
	if got := e.states(); got["app#0"] != "CONTAINER_EXITED" || got["app#1"] != "CONTAINER_RUNNING" {
		t.Errorf("after the image change: %v", got)
	}
	st, _ := e.m.Inspect(context.Background(), "u")
	id := st.Container("app").Id
	a := ComputeActions(pod, st, fakeProbes{failed: id})
	if k, ok := a.ContainersToKill[id]; !ok || k.Message != "Container app failed liveness probe, will be restarted" || len(a.ContainersToStart) != 1 {
		t.Errorf("liveness failure: %+v", a)
	}
}

type fakeProbes struct{ failed string }

func (f fakeProbes) LivenessFailed(id string) bool { return id == f.failed }
func (f fakeProbes) Started(string) bool           { return true }

func TestPullSecretsAuth(t *testing.T) {
	e := newEnv(t)
	cfg := `{"auths":{"https://reg.local:5000/v2/":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("alice:s3cret")) + `"},"other.io":{"username":"bob","password":"x"}}}`
	e.m.o.Secret = func(ns, name string) (*corev1.Secret, error) {
		if ns != "default" || name != "regcred" {
			t.Errorf("secret %s/%s asked for", ns, name)
		}
		return &corev1.Secret{Type: "kubernetes.io/dockerconfigjson", Data: map[string][]byte{".dockerconfigjson": []byte(cfg)}}, nil
	}
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Namespace: "default", Uid: "u"},
		Spec: &corev1.PodSpec{ImagePullSecrets: []*corev1.LocalObjectReference{{Name: "regcred"}}}}
	auths := e.m.pullAuths(pod, "reg.local:5000/team/app:1")
	if len(auths) != 1 || auths[0].Username != "alice" || auths[0].Password != "s3cret" {
		t.Fatalf("auths for reg.local:5000 = %v, want alice", auths)
	}
	if a := e.m.pullAuths(pod, "busybox:1.35"); len(a) != 0 {
		t.Errorf("auths for Docker Hub = %v, want none", a)
	}
}

func TestKillPodGracePeriod(t *testing.T) {
	e := newEnv(t, "agnhost:2.53")
	grace := int64(7)
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Namespace: "default", Uid: "u"},
		Spec: &corev1.PodSpec{TerminationGracePeriodSeconds: &grace, Containers: []*corev1.Container{{Name: "app", Image: "agnhost:2.53", ImagePullPolicy: "IfNotPresent",
			Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "sleep 1"}}}}}}}}
	e.sync(t, pod)
	st, _ := e.m.Inspect(context.Background(), "u")
	e.f.FakeRuntimeService.Lock()
	e.f.FakeRuntimeService.Called = nil
	e.f.FakeRuntimeService.Unlock()
	if err := e.m.KillPod(context.Background(), pod, st, nil); err != nil {
		t.Fatal(err)
	}
	calls := strings.Join(e.f.FakeRuntimeService.GetCalls(), ",")
	if !strings.Contains(calls, "ExecSync,StopContainer") || !strings.HasSuffix(calls, "StopPodSandbox") {
		t.Errorf("calls %s: want the preStop exec, then StopContainer, then StopPodSandbox", calls)
	}
}
