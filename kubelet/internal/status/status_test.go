package status

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

var (
	t0  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now = t0.Add(time.Hour)
)

// cri is one runtime container attempt.
func cri(name string, attempt uint32, state runtimeapi.ContainerState, exit int32, reason string, created time.Duration) *runtimeapi.ContainerStatus {
	cs := &runtimeapi.ContainerStatus{
		Id:        name + "-" + string(rune('0'+attempt)),
		Metadata:  &runtimeapi.ContainerMetadata{Name: name, Attempt: attempt},
		State:     state,
		CreatedAt: t0.Add(created).UnixNano(),
		ImageRef:  "sha256:abc",
		ExitCode:  exit,
		Reason:    reason,
	}
	if state != runtimeapi.ContainerState_CONTAINER_CREATED {
		cs.StartedAt = t0.Add(created + time.Second).UnixNano()
	}
	if state == runtimeapi.ContainerState_CONTAINER_EXITED {
		cs.FinishedAt = t0.Add(created + 2*time.Second).UnixNano()
	}
	return cs
}

const (
	running = runtimeapi.ContainerState_CONTAINER_RUNNING
	exited  = runtimeapi.ContainerState_CONTAINER_EXITED
	created = runtimeapi.ContainerState_CONTAINER_CREATED
	unknown = runtimeapi.ContainerState_CONTAINER_UNKNOWN
)

func newPod(policy string, init []*corev1.Container, names ...string) *corev1.Pod {
	p := phasePod(policy, init, names...)
	for _, c := range p.Spec.Containers {
		c.Image = "skiff.local/agnhost:2.53"
	}
	for _, c := range p.Spec.InitContainers {
		c.Image = "skiff.local/busybox:1.35"
	}
	return p
}

func sandbox() Runtime {
	return Runtime{SandboxReady: true, SandboxCreated: true, PodIPs: []string{"10.244.1.5"}}
}

func withContainers(rt Runtime, cs ...*runtimeapi.ContainerStatus) Runtime {
	rt.Containers = cs
	return rt
}

func cond(s *corev1.PodStatus, t string) *corev1.PodCondition {
	return findCondition(s.GetConditions(), t)
}

func condString(c *corev1.PodCondition) string {
	if c == nil {
		return "<none>"
	}
	out := c.Status
	if c.Reason != "" {
		out += " " + c.Reason
	}
	if c.Message != "" {
		out += " " + c.Message
	}
	return out
}

func stateString(st *corev1.ContainerState) string {
	switch {
	case st.GetRunning() != nil:
		return "running"
	case st.GetTerminated() != nil:
		return "terminated:" + st.GetTerminated().GetReason()
	case st.GetWaiting() != nil:
		return "waiting:" + st.GetWaiting().GetReason()
	}
	return "none"
}

func TestCompute(t *testing.T) {
	type want struct {
		phase       string
		initialized string
		ready       string
		containers  string // "name=state,..." app then init
		restarts    string // app restarts "name=n,..."
	}
	ic := []*corev1.Container{{Name: "init"}}
	cases := []struct {
		name    string
		pod     *corev1.Pod
		rt      Runtime
		waiting map[string]Waiting
		ready   func(string) bool
		want    want
	}{
		{"nothing yet", newPod("Always", nil, "b", "a"), Runtime{}, nil, nil,
			want{Pending, "True", "False ContainersNotReady containers with unready status: [b a]", "a=waiting:ContainerCreating,b=waiting:ContainerCreating", "a=0,b=0"}},
		{"pulling an image", newPod("Always", nil, "a"), sandbox(), map[string]Waiting{"a": {"ErrImagePull", "pull failed"}}, nil,
			want{Pending, "True", "False ContainersNotReady containers with unready status: [a]", "a=waiting:ErrImagePull", "a=0"}},
		{"running", newPod("Always", nil, "a", "b"), withContainers(sandbox(), cri("a", 0, running, 0, "", 0), cri("b", 0, running, 0, "", 0)), nil, nil,
			want{Running, "True", "True", "a=running,b=running", "a=0,b=0"}},
		{"running, one not ready", newPod("Always", nil, "a", "b"), withContainers(sandbox(), cri("a", 0, running, 0, "", 0), cri("b", 0, running, 0, "", 0)), nil,
			func(c string) bool { return c != "b" },
			want{Running, "True", "False ContainersNotReady containers with unready status: [b]", "a=running,b=running", "a=0,b=0"}},
		{"created, not started", newPod("Always", nil, "a"), withContainers(sandbox(), cri("a", 0, created, 0, "", 0)), nil, nil,
			want{Pending, "True", "False ContainersNotReady containers with unready status: [a]", "a=waiting:", "a=0"}},
		{"crash loop", newPod("Always", nil, "a"),
			withContainers(sandbox(), cri("a", 2, exited, 1, "Error", 2*time.Minute), cri("a", 1, exited, 1, "Error", time.Minute)),
			map[string]Waiting{"a": {"CrashLoopBackOff", "back-off 20s restarting failed container=a pod=p_ns(u1)"}}, nil,
			want{Running, "True", "False ContainersNotReady containers with unready status: [a]", "a=waiting:CrashLoopBackOff", "a=2"}},
		{"restarted and running", newPod("Always", nil, "a"),
			withContainers(sandbox(), cri("a", 1, running, 0, "", 2*time.Minute), cri("a", 0, exited, 137, "OOMKilled", time.Minute)), nil, nil,
			want{Running, "True", "True", "a=running", "a=1"}},
		{"never: completed", newPod("Never", nil, "a"), withContainers(sandbox(), cri("a", 0, exited, 0, "Completed", 0)),
			map[string]Waiting{"a": {"CrashLoopBackOff", "ignored: Never does not restart"}}, nil,
			want{Succeeded, "True PodCompleted", "False PodCompleted", "a=terminated:Completed", "a=0"}},
		{"never: failed", newPod("Never", nil, "a"), withContainers(sandbox(), cri("a", 0, exited, 2, "Error", 0)), nil, nil,
			want{Failed, "True", "False PodFailed", "a=terminated:Error", "a=0"}},
		{"never: oom killed", newPod("Never", nil, "a"), withContainers(sandbox(), cri("a", 0, exited, 137, "OOMKilled", 0)), nil, nil,
			want{Failed, "True", "False PodFailed", "a=terminated:OOMKilled", "a=0"}},
		{"onfailure: completed is not restarted", newPod("OnFailure", nil, "a"), withContainers(sandbox(), cri("a", 0, exited, 0, "", 0)),
			map[string]Waiting{"a": {"CrashLoopBackOff", ""}}, nil,
			want{Succeeded, "True PodCompleted", "False PodCompleted", "a=terminated:Completed", "a=0"}},
		{"init running", newPod("Always", ic, "a"), withContainers(sandbox(), cri("init", 0, running, 0, "", 0)), nil, nil,
			want{Pending, "False ContainersNotInitialized containers with incomplete status: [init]", "False ContainersNotReady containers with unready status: [a]", "a=waiting:PodInitializing,init=running", "a=0"}},
		{"init not started", newPod("Always", ic, "a"), sandbox(), nil, nil,
			want{Pending, "False ContainersNotInitialized containers with incomplete status: [init]", "False ContainersNotReady containers with unready status: [a]", "a=waiting:PodInitializing,init=waiting:PodInitializing", "a=0"}},
		{"init crash loop", newPod("Always", ic, "a"), withContainers(sandbox(), cri("init", 1, exited, 1, "Error", 0)),
			map[string]Waiting{"init": {"CrashLoopBackOff", "back-off"}}, nil,
			want{Pending, "False ContainersNotInitialized containers with incomplete status: [init]", "False ContainersNotReady containers with unready status: [a]", "a=waiting:PodInitializing,init=waiting:CrashLoopBackOff", "a=0"}},
		{"init failed, never", newPod("Never", ic, "a"), withContainers(sandbox(), cri("init", 0, exited, 1, "Error", 0)), nil, nil,
			want{Failed, "False ContainersNotInitialized containers with incomplete status: [init]", "False PodFailed", "a=waiting:PodInitializing,init=terminated:Error", "a=0"}},
		{"init done, app running", newPod("Always", ic, "a"), withContainers(sandbox(), cri("init", 0, exited, 0, "Completed", 0), cri("a", 0, running, 0, "", time.Minute)), nil, nil,
			want{Running, "True", "True", "a=running,init=terminated:Completed", "a=0"}},
		{"init record gone, app running", newPod("Always", ic, "a"), withContainers(sandbox(), cri("a", 0, running, 0, "", time.Minute)), nil, nil,
			want{Running, "True", "True", "a=running,init=terminated:Completed", "a=0"}},
		{"sidecar started, app running", newPod("Always", []*corev1.Container{sidecar("proxy")}, "a"),
			withContainers(sandbox(), cri("proxy", 0, running, 0, "", 0), cri("a", 0, running, 0, "", time.Minute)), nil, nil,
			want{Running, "True", "True", "a=running,proxy=running", "a=0"}},
		{"sidecar not ready", newPod("Always", []*corev1.Container{sidecar("proxy")}, "a"),
			withContainers(sandbox(), cri("proxy", 0, running, 0, "", 0), cri("a", 0, running, 0, "", time.Minute)), nil,
			func(c string) bool { return c != "proxy" },
			want{Running, "True", "False ContainersNotReady containers with unready status: [proxy]", "a=running,proxy=running", "a=0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := Compute(Input{Pod: tc.pod, Runtime: tc.rt, Waiting: tc.waiting, Ready: tc.ready, HostIPs: []string{"192.168.1.10"}, Now: now})
			if s.Phase != tc.want.phase {
				t.Errorf("phase = %s, want %s", s.Phase, tc.want.phase)
			}
			if got := condString(cond(s, Initialized)); got != tc.want.initialized {
				t.Errorf("Initialized = %q, want %q", got, tc.want.initialized)
			}
			if got := condString(cond(s, Ready)); got != tc.want.ready {
				t.Errorf("Ready = %q, want %q", got, tc.want.ready)
			}
			if got, want := condString(cond(s, ContainersReady)), tc.want.ready; got != want {
				t.Errorf("ContainersReady = %q, want %q", got, want)
			}
			var states, restarts []string
			for _, st := range append(append([]*corev1.ContainerStatus{}, s.ContainerStatuses...), s.InitContainerStatuses...) {
				states = append(states, st.Name+"="+stateString(st.State))
			}
			for _, st := range s.ContainerStatuses {
				restarts = append(restarts, st.Name+"="+string(rune('0'+st.RestartCount)))
			}
			if got := strings.Join(states, ","); got != tc.want.containers {
				t.Errorf("container states = %s, want %s", got, tc.want.containers)
			}
			if got := strings.Join(restarts, ","); got != tc.want.restarts {
				t.Errorf("restarts = %s, want %s", got, tc.want.restarts)
			}
		})
	}
}

func TestContainerStatusDetails(t *testing.T) {
	pod := newPod("Always", nil, "a")
	cur := cri("a", 3, running, 0, "", 10*time.Minute)
	prev := cri("a", 2, exited, 137, "OOMKilled", 5*time.Minute)
	prev.Message = "killed"
	older := cri("a", 1, exited, 1, "Error", time.Minute)
	s := Compute(Input{Pod: pod, Runtime: withContainers(sandbox(), older, cur, prev), Now: now})
	st := s.ContainerStatuses[0]
	if st.ContainerID != "containerd://a-3" || st.ImageID != "sha256:abc" || st.Image != "skiff.local/agnhost:2.53" {
		t.Errorf("ids = %q %q %q", st.ContainerID, st.ImageID, st.Image)
	}
	if st.RestartCount != 3 || !st.Ready || !st.GetStarted() {
		t.Errorf("restartCount %d ready %v started %v, want 3 true true", st.RestartCount, st.Ready, st.GetStarted())
	}
	if got := st.State.GetRunning().GetStartedAt().AsTime(); !got.Equal(t0.Add(10*time.Minute + time.Second)) {
		t.Errorf("startedAt = %v", got)
	}
	lt := st.GetLastState().GetTerminated()
	if lt == nil || lt.ExitCode != 137 || lt.Reason != "OOMKilled" || lt.Message != "killed" || lt.ContainerID != "containerd://a-2" {
		t.Fatalf("lastState = %v, want the previous attempt, OOMKilled", st.GetLastState())
	}
	if !lt.StartedAt.AsTime().Equal(t0.Add(5*time.Minute+time.Second)) || !lt.FinishedAt.AsTime().Equal(t0.Add(5*time.Minute+2*time.Second)) {
		t.Errorf("lastState times = %v %v", lt.StartedAt.AsTime(), lt.FinishedAt.AsTime())
	}
	if s.QosClass != "BestEffort" || s.PodIP != "10.244.1.5" {
		t.Errorf("qos %s podIP %s", s.QosClass, s.PodIP)
	}
}

func TestStartedAndReadyFollowProbes(t *testing.T) {
	pod := newPod("Always", nil, "a")
	rt := withContainers(sandbox(), cri("a", 0, running, 0, "", 0))
	s := Compute(Input{Pod: pod, Runtime: rt, Now: now,
		Started: func(string) bool { return false }, Ready: func(string) bool { return true }})
	st := s.ContainerStatuses[0]
	if st.Started == nil || *st.Started || st.Ready {
		t.Errorf("before the startup probe passes: started %v ready %v, want false false", st.GetStarted(), st.Ready)
	}
	// A stopped container is neither started nor ready whatever the probes say.
	s = Compute(Input{Pod: pod, Runtime: withContainers(sandbox(), cri("a", 0, exited, 1, "Error", 0)), Now: now})
	if st := s.ContainerStatuses[0]; st.Started == nil || *st.Started || st.Ready {
		t.Errorf("exited: started %v ready %v", st.GetStarted(), st.Ready)
	}
}

func TestWaitingReasonKeepsLastTermination(t *testing.T) {
	pod := newPod("Always", nil, "a")
	rt := withContainers(sandbox(), cri("a", 4, exited, 1, "Error", 0))
	s := Compute(Input{Pod: pod, Runtime: rt, Now: now, Waiting: map[string]Waiting{"a": {"CrashLoopBackOff", "back-off 1m20s restarting failed container=a pod=p_ns(u1)"}}})
	st := s.ContainerStatuses[0]
	if w := st.State.GetWaiting(); w == nil || w.Reason != "CrashLoopBackOff" || !strings.Contains(w.Message, "1m20s") {
		t.Fatalf("state = %v", st.State)
	}
	if lt := st.GetLastState().GetTerminated(); lt == nil || lt.ExitCode != 1 || lt.Reason != "Error" {
		t.Errorf("lastState = %v, want the exit that led to the back-off", st.LastState)
	}
	if st.RestartCount != 4 {
		t.Errorf("restartCount = %d, want 4", st.RestartCount)
	}
}

func TestTransitionTimesKept(t *testing.T) {
	pod := newPod("Always", nil, "a")
	rt := withContainers(sandbox(), cri("a", 0, running, 0, "", 0))
	first := Compute(Input{Pod: pod, Runtime: rt, Now: now})
	for _, c := range first.Conditions {
		if !c.LastTransitionTime.AsTime().Equal(now) {
			t.Errorf("%s transition = %v, want now", c.Type, c.LastTransitionTime.AsTime())
		}
	}
	pod.Status = first
	later := now.Add(time.Minute)
	// Same state a minute on: every time stays, startTime too.
	second := Compute(Input{Pod: pod, Runtime: rt, Now: later})
	for _, c := range second.Conditions {
		if !c.LastTransitionTime.AsTime().Equal(now) {
			t.Errorf("%s transition moved to %v with no change", c.Type, c.LastTransitionTime.AsTime())
		}
	}
	if !second.StartTime.AsTime().Equal(now) {
		t.Errorf("startTime = %v, want the first one", second.StartTime.AsTime())
	}
	// Readiness lost: Ready and ContainersReady move, the rest stay.
	pod.Status = second
	third := Compute(Input{Pod: pod, Runtime: rt, Now: later, Ready: func(string) bool { return false }})
	for _, c := range third.Conditions {
		moved := !c.LastTransitionTime.AsTime().Equal(now)
		wantMoved := c.Type == Ready || c.Type == ContainersReady
		if moved != wantMoved {
			t.Errorf("%s transition moved=%v, want %v", c.Type, moved, wantMoved)
		}
	}
}

func TestConditionsOrderAndScheduledTime(t *testing.T) {
	pod := newPod("Always", nil, "a")
	scheduled := metav1.NewTime(t0)
	pod.Status = &corev1.PodStatus{Phase: Pending, Conditions: []*corev1.PodCondition{
		{Type: PodScheduled, Status: "True", LastTransitionTime: scheduled},
		{Type: "DisruptionTarget", Status: "True", Reason: "EvictionByEvictionAPI"},
	}}
	s := Compute(Input{Pod: pod, Runtime: sandbox(), Now: now})
	var order []string
	for _, c := range s.Conditions {
		order = append(order, c.Type)
	}
	if got := strings.Join(order, ","); got != "DisruptionTarget,PodReadyToStartContainers,Initialized,Ready,ContainersReady,PodScheduled" {
		t.Errorf("conditions = %s", got)
	}
	if got := cond(s, PodScheduled).LastTransitionTime.AsTime(); !got.Equal(t0) {
		t.Errorf("PodScheduled transition = %v, want the scheduler's", got)
	}
	if cond(s, PodReadyToStartContainers).Status != "True" {
		t.Errorf("PodReadyToStartContainers = %v with a ready sandbox and an IP", cond(s, PodReadyToStartContainers))
	}
	s = Compute(Input{Pod: pod, Runtime: Runtime{SandboxCreated: true}, Now: now})
	if cond(s, PodReadyToStartContainers).Status != "False" {
		t.Errorf("PodReadyToStartContainers = %v with no ready sandbox", cond(s, PodReadyToStartContainers))
	}
}

func TestReadinessGates(t *testing.T) {
	pod := newPod("Always", nil, "a")
	pod.Spec.ReadinessGates = []*corev1.PodReadinessGate{{ConditionType: "example.com/lb"}}
	rt := withContainers(sandbox(), cri("a", 0, running, 0, "", 0))
	s := Compute(Input{Pod: pod, Runtime: rt, Now: now})
	if got := condString(cond(s, Ready)); got != `False ReadinessGatesNotReady corresponding condition of pod readiness gate "example.com/lb" does not exist.` {
		t.Errorf("Ready = %s", got)
	}
	if cond(s, ContainersReady).Status != "True" {
		t.Errorf("ContainersReady = %v", cond(s, ContainersReady))
	}
	pod.Status = &corev1.PodStatus{Conditions: []*corev1.PodCondition{{Type: "example.com/lb", Status: "True"}}}
	if s := Compute(Input{Pod: pod, Runtime: rt, Now: now}); cond(s, Ready).Status != "True" {
		t.Errorf("Ready = %v with the gate True", cond(s, Ready))
	}
}

func TestTerminalPhaseSticks(t *testing.T) {
	pod := newPod("Always", nil, "a")
	pod.Status = &corev1.PodStatus{Phase: Failed, Reason: "OutOfcpu", Message: "Node didn't have enough resource: cpu, requested: 1000, used: 0, capacity: 500"}
	s := Compute(Input{Pod: pod, Runtime: Runtime{}, Now: now})
	if s.Phase != Failed || s.Reason != "OutOfcpu" || !strings.HasPrefix(s.Message, "Node didn't") {
		t.Errorf("phase %s reason %s message %q, want the Failed status kept", s.Phase, s.Reason, s.Message)
	}
}

func TestTerminalDeletedPod(t *testing.T) {
	pod := newPod("Always", nil, "a")
	pod.Metadata.DeletionTimestamp = metav1.NewTime(now)
	rt := Runtime{Containers: []*runtimeapi.ContainerStatus{cri("a", 0, exited, 143, "Error", 0)}}
	s := Compute(Input{Pod: pod, Runtime: rt, Now: now, Terminal: true, Waiting: map[string]Waiting{"a": {"CrashLoopBackOff", ""}}})
	if s.Phase != Failed {
		t.Errorf("phase = %s, want Failed for a deleted pod whose container exited 143", s.Phase)
	}
	if got := stateString(s.ContainerStatuses[0].State); got != "terminated:Error" {
		t.Errorf("state = %s: a deleted pod's container is not to be restarted", got)
	}
	rt.Containers[0] = cri("a", 0, exited, 0, "Completed", 0)
	if s := Compute(Input{Pod: pod, Runtime: rt, Now: now, Terminal: true}); s.Phase != Succeeded {
		t.Errorf("phase = %s, want Succeeded", s.Phase)
	}
}

func TestContainerGoneAfterRunning(t *testing.T) {
	pod := newPod("Always", nil, "a")
	pod.Status = Compute(Input{Pod: pod, Runtime: withContainers(sandbox(), cri("a", 0, running, 0, "", 0)), Now: now})
	s := Compute(Input{Pod: pod, Runtime: sandbox(), Now: now})
	st := s.ContainerStatuses[0]
	if lt := st.GetLastState().GetTerminated(); lt == nil || lt.Reason != ContainerStatusUnknown || lt.ExitCode != 137 {
		t.Fatalf("lastState = %v, want ContainerStatusUnknown 137", st.LastState)
	}
	if st.RestartCount != 1 {
		t.Errorf("restartCount = %d, want 1", st.RestartCount)
	}
	if s.Phase != Running {
		t.Errorf("phase = %s, want Running (the container ran; it does not go back to Pending)", s.Phase)
	}
	// The runtime answering "unknown" for a container that was running.
	s = Compute(Input{Pod: pod, Runtime: withContainers(sandbox(), cri("a", 0, unknown, 0, "", 0)), Now: now})
	if got := stateString(s.ContainerStatuses[0].State); got != "terminated:ContainerStatusUnknown" {
		t.Errorf("state = %s", got)
	}
}

func TestPodIPs(t *testing.T) {
	cases := []struct {
		ips, host []string
		want      string
	}{
		{[]string{"10.0.0.1"}, nil, "10.0.0.1"},
		{[]string{"fd00::1", "10.0.0.1"}, []string{"192.168.1.1"}, "10.0.0.1,fd00::1"},
		{[]string{"10.0.0.1", "fd00::1"}, []string{"2001:db8::1"}, "fd00::1,10.0.0.1"},
		{[]string{"10.0.0.1", "10.0.0.2"}, nil, "10.0.0.1"},
		{[]string{"bogus", "::ffff:10.0.0.3"}, nil, "10.0.0.3"},
	}
	for _, tc := range cases {
		if got := strings.Join(sortPodIPs(tc.ips, tc.host), ","); got != tc.want {
			t.Errorf("sortPodIPs(%v, %v) = %s, want %s", tc.ips, tc.host, got, tc.want)
		}
	}
}

func TestHostNetworkPodGetsHostIPs(t *testing.T) {
	pod := newPod("Always", nil, "a")
	pod.Spec.HostNetwork = true
	s := Compute(Input{Pod: pod, Runtime: Runtime{SandboxReady: true}, HostIPs: []string{"192.168.1.10"}, Now: now})
	if s.PodIP != "192.168.1.10" || len(s.PodIPs) != 1 || s.HostIP != "192.168.1.10" || len(s.HostIPs) != 1 {
		t.Errorf("podIP %s podIPs %v hostIP %s", s.PodIP, s.PodIPs, s.HostIP)
	}
	if cond(s, PodReadyToStartContainers).Status != "True" {
		t.Errorf("a host-network pod needs no IP of its own to be ready to start")
	}
}

func TestRestartCountFromAnnotation(t *testing.T) {
	cs := cri("a", 1, running, 0, "", 0)
	cs.Annotations = map[string]string{"io.kubernetes.container.restartCount": "7"}
	s := Compute(Input{Pod: newPod("Always", nil, "a"), Runtime: withContainers(sandbox(), cs), Now: now})
	if s.ContainerStatuses[0].RestartCount != 7 {
		t.Errorf("restartCount = %d, want 7 from the annotation", s.ContainerStatuses[0].RestartCount)
	}
}

func TestComputeLeavesInputAlone(t *testing.T) {
	pod := newPod("Always", []*corev1.Container{{Name: "init"}}, "a")
	rt := withContainers(sandbox(), cri("init", 0, exited, 0, "Completed", 0), cri("a", 1, exited, 1, "Error", time.Minute), cri("a", 0, exited, 1, "Error", 0))
	pod.Status = Compute(Input{Pod: pod, Runtime: rt, Now: now})
	before := proto.Clone(pod).(*corev1.Pod)
	s := Compute(Input{Pod: pod, Runtime: rt, Now: now.Add(time.Minute), Waiting: map[string]Waiting{"a": {"CrashLoopBackOff", "x"}}})
	if !proto.Equal(before, pod) {
		t.Error("Compute changed its input pod")
	}
	if proto.Equal(s, pod.Status) {
		t.Error("the waiting reason did not change the status")
	}
}
