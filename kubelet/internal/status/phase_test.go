package status

import (
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// API-level container statuses, as upstream's getPhase tests build them.
func runningState(name string) *corev1.ContainerStatus {
	return &corev1.ContainerStatus{Name: name, State: &corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}
func startedState(name string) *corev1.ContainerStatus {
	st := runningState(name)
	t := true
	st.Started = &t
	return st
}
func stoppedState(name string) *corev1.ContainerStatus {
	return &corev1.ContainerStatus{Name: name, State: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}}
}
func succeededState(name string) *corev1.ContainerStatus {
	return &corev1.ContainerStatus{Name: name, State: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}}
}
func failedState(name string) *corev1.ContainerStatus {
	return &corev1.ContainerStatus{Name: name, State: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}}
}
func waitingState(name string) *corev1.ContainerStatus {
	return &corev1.ContainerStatus{Name: name, State: &corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{}}}
}
func waitingStateWithLastTermination(name string, exit int32) *corev1.ContainerStatus {
	return &corev1.ContainerStatus{Name: name,
		State:     &corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{}},
		LastState: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit}}}
}

func phasePod(policy string, init []*corev1.Container, names ...string) *corev1.Pod {
	p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Namespace: "ns", Uid: "u1"}, Spec: &corev1.PodSpec{RestartPolicy: policy, InitContainers: init}}
	for _, n := range names {
		p.Spec.Containers = append(p.Spec.Containers, &corev1.Container{Name: n})
	}
	return p
}

func sidecar(name string) *corev1.Container {
	always := "Always"
	return &corev1.Container{Name: name, RestartPolicy: &always}
}

func TestPhase(t *testing.T) {
	ic := []*corev1.Container{{Name: "init"}}
	sc := []*corev1.Container{sidecar("sidecar")}
	cases := []struct {
		name        string
		pod         *corev1.Pod
		statuses    []*corev1.ContainerStatus
		terminal    bool
		initialized bool
		want        string
	}{
		// RestartPolicy Always (upstream TestPodPhaseWithRestartAlways).
		{"always: no statuses", phasePod("Always", nil, "a", "b"), nil, false, false, Pending},
		{"always: all running", phasePod("Always", nil, "a", "b"), []*corev1.ContainerStatus{runningState("a"), runningState("b")}, false, false, Running},
		{"always: all stopped", phasePod("Always", nil, "a", "b"), []*corev1.ContainerStatus{stoppedState("a"), stoppedState("b")}, false, false, Running},
		{"always: all stopped, terminal, succeeded", phasePod("Always", nil, "a", "b"), []*corev1.ContainerStatus{succeededState("a"), succeededState("b")}, true, false, Succeeded},
		{"always: all stopped, terminal, one failed", phasePod("Always", nil, "a", "b"), []*corev1.ContainerStatus{succeededState("a"), failedState("b")}, true, false, Failed},
		{"always: mixed running and stopped", phasePod("Always", nil, "a", "b"), []*corev1.ContainerStatus{runningState("a"), stoppedState("b")}, false, false, Running},
		{"always: one not reported", phasePod("Always", nil, "a", "b"), []*corev1.ContainerStatus{runningState("a")}, false, false, Pending},
		{"always: one waiting to start", phasePod("Always", nil, "a", "b"), []*corev1.ContainerStatus{runningState("a"), waitingState("b")}, false, false, Pending},
		{"always: crash-looping container", phasePod("Always", nil, "a", "b"), []*corev1.ContainerStatus{runningState("a"), waitingStateWithLastTermination("b", 1)}, false, false, Running},
		// RestartPolicy Never (TestPodPhaseWithRestartNever).
		{"never: all running", phasePod("Never", nil, "a", "b"), []*corev1.ContainerStatus{runningState("a"), runningState("b")}, false, false, Running},
		{"never: all succeeded", phasePod("Never", nil, "a", "b"), []*corev1.ContainerStatus{succeededState("a"), succeededState("b")}, false, false, Succeeded},
		{"never: one failed", phasePod("Never", nil, "a", "b"), []*corev1.ContainerStatus{succeededState("a"), failedState("b")}, false, false, Failed},
		{"never: running and succeeded", phasePod("Never", nil, "a", "b"), []*corev1.ContainerStatus{runningState("a"), succeededState("b")}, false, false, Running},
		{"never: one waiting", phasePod("Never", nil, "a", "b"), []*corev1.ContainerStatus{runningState("a"), waitingState("b")}, false, false, Pending},
		// RestartPolicy OnFailure (TestPodPhaseWithRestartOnFailure).
		{"onfailure: all succeeded", phasePod("OnFailure", nil, "a", "b"), []*corev1.ContainerStatus{succeededState("a"), succeededState("b")}, false, false, Succeeded},
		{"onfailure: one failed, restarting", phasePod("OnFailure", nil, "a", "b"), []*corev1.ContainerStatus{succeededState("a"), failedState("b")}, false, false, Running},
		{"onfailure: one failed, terminal", phasePod("OnFailure", nil, "a", "b"), []*corev1.ContainerStatus{succeededState("a"), failedState("b")}, true, false, Failed},
		{"onfailure: backing off", phasePod("OnFailure", nil, "a"), []*corev1.ContainerStatus{waitingStateWithLastTermination("a", 1)}, false, false, Running},
		// Init containers (TestPodPhaseWithRestartAlwaysInitContainers...).
		{"init: running", phasePod("Always", ic, "a"), []*corev1.ContainerStatus{runningState("init"), waitingState("a")}, false, false, Pending},
		{"init: not reported", phasePod("Always", ic, "a"), nil, false, false, Pending},
		{"init: succeeded, app running", phasePod("Always", ic, "a"), []*corev1.ContainerStatus{succeededState("init"), runningState("a")}, false, false, Running},
		{"init: failed, never", phasePod("Never", ic, "a"), []*corev1.ContainerStatus{failedState("init"), waitingState("a")}, false, false, Failed},
		{"init: failed, always, backing off", phasePod("Always", ic, "a"), []*corev1.ContainerStatus{waitingStateWithLastTermination("init", 1), waitingState("a")}, false, false, Pending},
		{"init: failed before, never", phasePod("Never", ic, "a"), []*corev1.ContainerStatus{waitingStateWithLastTermination("init", 1), waitingState("a")}, false, false, Failed},
		{"init: failed, onfailure", phasePod("OnFailure", ic, "a"), []*corev1.ContainerStatus{failedState("init"), waitingState("a")}, false, false, Pending},
		// Sidecars (restartable init containers).
		{"sidecar: running, not started", phasePod("Always", sc, "a"), []*corev1.ContainerStatus{runningState("sidecar"), waitingState("a")}, false, false, Pending},
		{"sidecar: started, app waiting", phasePod("Always", sc, "a"), []*corev1.ContainerStatus{startedState("sidecar"), waitingState("a")}, false, false, Pending},
		{"sidecar: started, app running", phasePod("Always", sc, "a"), []*corev1.ContainerStatus{startedState("sidecar"), runningState("a")}, false, true, Running},
		{"sidecar: restarting after init", phasePod("Always", sc, "a"), []*corev1.ContainerStatus{runningState("sidecar"), runningState("a")}, false, true, Running},
		{"sidecar: restarting before init", phasePod("Always", sc, "a"), []*corev1.ContainerStatus{runningState("sidecar"), waitingState("a")}, false, false, Pending},
		{"sidecar: crash-looping, app running", phasePod("Always", sc, "a"), []*corev1.ContainerStatus{waitingStateWithLastTermination("sidecar", 1), runningState("a")}, false, true, Running},
		{"sidecar: running, app succeeded, never", phasePod("Never", sc, "a"), []*corev1.ContainerStatus{startedState("sidecar"), succeededState("a")}, false, true, Running},
		{"sidecar: stopped, app succeeded, never", phasePod("Never", sc, "a"), []*corev1.ContainerStatus{stoppedState("sidecar"), succeededState("a")}, false, false, Succeeded},
		{"sidecar: stopped, app failed, never", phasePod("Never", sc, "a"), []*corev1.ContainerStatus{stoppedState("sidecar"), failedState("a")}, false, false, Failed},
		{"sidecar: not reported", phasePod("Always", sc, "a"), []*corev1.ContainerStatus{runningState("a")}, false, true, Pending},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := phase(tc.pod, tc.statuses, tc.terminal, tc.initialized); got != tc.want {
				t.Errorf("phase = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestPhaseStaticPodNotTerminal(t *testing.T) {
	p := phasePod("Always", nil, "a")
	p.Metadata.Annotations = map[string]string{"kubernetes.io/config.source": "file"}
	if got := phase(p, []*corev1.ContainerStatus{succeededState("a")}, true, false); got != Running {
		t.Errorf("static pod phase = %s, want Running (upstream gives static pods no terminal phase)", got)
	}
}
