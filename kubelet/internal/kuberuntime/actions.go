package kuberuntime

import (
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	corev1 "skiff.dev/proto/api/core/v1"
)

// Kill is a running container to stop, and why.
type Kill struct {
	Name    string
	Message string
	// Reason is the event's reason ("Killing").
	Reason string
}

// Actions is what SyncPod must do, as upstream's podActions.
type Actions struct {
	// KillPod stops every container and the sandbox first.
	KillPod bool
	// CreateSandbox makes a new sandbox with Attempt.
	CreateSandbox bool
	SandboxID     string
	Attempt       uint32
	// InitContainersToStart and ContainersToStart index the pod's spec.
	InitContainersToStart []int
	ContainersToStart     []int
	// ContainersToKill is keyed by container ID.
	ContainersToKill map[string]Kill
}

// Probes tells ComputeActions what the probers saw; nil means no probes.
type Probes interface {
	// LivenessFailed reports a running container whose liveness (or
	// startup) probe failed: it is restarted.
	LivenessFailed(containerID string) bool
	// Started reports whether the startup probe (if any) succeeded.
	Started(container string) bool
}

func isRestartable(c *corev1.Container) bool { return c.GetRestartPolicy() == "Always" }

func exited(cs *runtimeapi.ContainerStatus) bool {
	return cs.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED ||
		cs.GetState() == runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

func running(cs *runtimeapi.ContainerStatus) bool {
	return cs.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING
}

// shouldRestart applies the pod's restartPolicy to an exited container.
func shouldRestart(pod *corev1.Pod, cs *runtimeapi.ContainerStatus) bool {
	switch pod.GetSpec().GetRestartPolicy() {
	case "Never":
		return false
	case "OnFailure":
		return cs.GetExitCode() != 0
	}
	return true
}

// sandboxChanged reports whether the pod needs a new sandbox, and the
// attempt number and ID of the sandbox it has, as upstream's
// podSandboxChanged: none, none ready, several, or the network namespace or
// address no longer match the spec.
func sandboxChanged(pod *corev1.Pod, st *PodStatus) (changed bool, attempt uint32, id string) {
	if st == nil || len(st.Sandboxes) == 0 {
		return true, 0, ""
	}
	sb := st.Sandboxes[0]
	ready := 0
	for _, s := range st.Sandboxes {
		if s.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready++
		}
	}
	next := sb.GetMetadata().GetAttempt() + 1
	if ready > 1 || sb.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		return true, next, sb.GetId()
	}
	want := runtimeapi.NamespaceMode_POD
	if pod.GetSpec().GetHostNetwork() {
		want = runtimeapi.NamespaceMode_NODE
	}
	if sb.GetLinux().GetNamespaces().GetOptions().GetNetwork() != want {
		return true, next, sb.GetId()
	}
	if !pod.GetSpec().GetHostNetwork() && sb.GetNetwork().GetIp() == "" {
		return true, next, sb.GetId()
	}
	return false, sb.GetMetadata().GetAttempt(), sb.GetId()
}

func containerSucceeded(c *corev1.Container, st *PodStatus) bool {
	cs := st.Container(c.GetName())
	return cs != nil && exited(cs) && cs.GetExitCode() == 0
}

func anyRegularContainerCreated(pod *corev1.Pod, st *PodStatus) bool {
	for _, c := range pod.GetSpec().GetContainers() {
		if st.Container(c.GetName()) != nil {
			return true
		}
	}
	return false
}

// ComputeActions decides what SyncPod does for pod given the runtime's
// state, as upstream's computePodActions with sidecar containers.
func ComputeActions(pod *corev1.Pod, st *PodStatus, probes Probes) Actions {
	changed, attempt, id := sandboxChanged(pod, st)
	a := Actions{KillPod: changed, CreateSandbox: changed, SandboxID: id, Attempt: attempt, ContainersToKill: map[string]Kill{}}
	spec := pod.GetSpec()

	if changed {
		// A pod that ran to completion under Never or OnFailure keeps its
		// dead sandbox: nothing runs again.
		if spec.GetRestartPolicy() == "Never" && attempt != 0 && len(st.Containers) != 0 {
			a.CreateSandbox = false
			return a
		}
		var start []int
		for i, c := range spec.GetContainers() {
			if spec.GetRestartPolicy() == "OnFailure" && containerSucceeded(c, st) {
				continue
			}
			if spec.GetRestartPolicy() == "Never" && st.Container(c.GetName()) != nil {
				continue
			}
			start = append(start, i)
		}
		if anyRegularContainerCreated(pod, st) || len(spec.GetInitContainers()) == 0 {
			if len(start) == 0 {
				// Everything completed: no new sandbox for nothing.
				a.CreateSandbox = false
				return a
			}
			a.ContainersToStart = start
			return a
		}
		a.InitContainersToStart = []int{0}
		return a
	}

	started := func(c *corev1.Container, cs *runtimeapi.ContainerStatus) bool {
		if !running(cs) {
			return false
		}
		return c.GetStartupProbe() == nil || probes == nil || probes.Started(c.GetName())
	}
	livenessFailed := func(cs *runtimeapi.ContainerStatus) bool {
		return probes != nil && running(cs) && probes.LivenessFailed(cs.GetId())
	}

	// Init containers in order; sidecars are started and kept running.
	initialized := anyRegularContainerCreated(pod, st)
	if !initialized {
		initialized = true
	initLoop:
		for i, c := range spec.GetInitContainers() {
			cs := st.Container(c.GetName())
			if isRestartable(c) {
				switch {
				case cs == nil:
					a.InitContainersToStart = append(a.InitContainersToStart, i)
					initialized = false
					break initLoop
				case exited(cs):
					a.InitContainersToStart = append(a.InitContainersToStart, i)
					initialized = false
					break initLoop
				case livenessFailed(cs):
					a.ContainersToKill[cs.GetId()] = Kill{Name: c.GetName(), Reason: "Killing", Message: fmt.Sprintf("Init container %s failed liveness probe", c.GetName())}
					a.InitContainersToStart = append(a.InitContainersToStart, i)
					initialized = false
					break initLoop
				case !started(c, cs):
					initialized = false
					break initLoop
				}
				continue
			}
			switch {
			case cs == nil:
				a.InitContainersToStart = append(a.InitContainersToStart, i)
				initialized = false
				break initLoop
			case exited(cs) && cs.GetExitCode() == 0:
				continue
			case exited(cs):
				if spec.GetRestartPolicy() == "Never" {
					// The pod failed: upstream kills it and keeps it dead.
					a.KillPod = true
					return a
				}
				a.InitContainersToStart = append(a.InitContainersToStart, i)
				initialized = false
				break initLoop
			default: // running or created: wait for it
				initialized = false
				break initLoop
			}
		}
		if !initialized {
			return a
		}
	} else {
		// Once initialized, a sidecar that exits is restarted alongside the
		// regular containers.
		for i, c := range spec.GetInitContainers() {
			if !isRestartable(c) {
				continue
			}
			cs := st.Container(c.GetName())
			if cs == nil || exited(cs) {
				a.InitContainersToStart = append(a.InitContainersToStart, i)
			} else if livenessFailed(cs) {
				a.ContainersToKill[cs.GetId()] = Kill{Name: c.GetName(), Reason: "Killing", Message: fmt.Sprintf("Init container %s failed liveness probe", c.GetName())}
				a.InitContainersToStart = append(a.InitContainersToStart, i)
			}
		}
	}

	keep := 0
	for i, c := range spec.GetContainers() {
		cs := st.Container(c.GetName())
		if cs == nil || !running(cs) {
			if cs == nil || cs.GetState() == runtimeapi.ContainerState_CONTAINER_CREATED || shouldRestart(pod, cs) {
				a.ContainersToStart = append(a.ContainersToStart, i)
			}
			continue
		}
		var why string
		switch {
		case cs.GetAnnotations()[AnnotationContainerHash] != HashContainer(c):
			why = fmt.Sprintf("Container %s definition changed", c.GetName())
		case livenessFailed(cs):
			why = fmt.Sprintf("Container %s failed liveness probe", c.GetName())
		default:
			keep++
			continue
		}
		if spec.GetRestartPolicy() != "Never" {
			why += ", will be restarted"
			a.ContainersToStart = append(a.ContainersToStart, i)
		}
		a.ContainersToKill[cs.GetId()] = Kill{Name: c.GetName(), Reason: "Killing", Message: why}
	}
	// Nothing runs or will run: the pod is done and its sandbox (and
	// sidecars) are stopped, as upstream.
	if keep == 0 && len(a.ContainersToStart) == 0 {
		a.KillPod = true
		a.InitContainersToStart = nil
	}
	return a
}
