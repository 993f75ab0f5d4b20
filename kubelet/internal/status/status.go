// Package status computes a pod's API status from what the runtime reports,
// as the kubelet's generateAPIPodStatus does (pkg/kubelet/kubelet_pods.go,
// pkg/kubelet/status/generate.go, the prober manager's readiness and the
// status manager's transition times): phase, conditions, IPs, start time,
// QoS class and every container's state.
package status

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/kubelet/internal/qos"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Runtime is the runtime's view of one pod (from CRI PodSandboxStatus and
// ContainerStatus).
type Runtime struct {
	// SandboxReady says the pod's newest sandbox is ready.
	SandboxReady bool
	// SandboxCreated says the pod has a sandbox at all (ready or not).
	SandboxCreated bool
	// PodIPs are the sandbox's IPs, in the order the runtime gives them.
	PodIPs []string
	// Containers holds every attempt of every container still known to the
	// runtime; the newest per name counts (by CreatedAt, then Attempt).
	Containers []*runtimeapi.ContainerStatus
}

// Waiting is why a container is not running, as the sync loop last found
// it: ErrImagePull, ImagePullBackOff, CrashLoopBackOff,
// CreateContainerConfigError... (upstream's reasonCache).
type Waiting struct{ Reason, Message string }

// Input is everything Compute needs.
type Input struct {
	Pod     *corev1.Pod // spec and the last status written
	Runtime Runtime
	// Waiting maps a container name to why it is not running; it applies
	// only to a container that is to be (re)started.
	Waiting map[string]Waiting
	// Ready is the readiness probe result (true when there is no probe);
	// nil means ready.
	Ready func(container string) bool
	// Started is the startup probe result (true when there is no probe);
	// nil means started.
	Started func(container string) bool
	HostIPs []string
	Now     time.Time

	// Terminal says the pod worker has stopped the pod's containers for
	// good (deleted, evicted, past its deadline): no container restarts, so
	// the phase becomes Succeeded or Failed (upstream's podIsTerminal).
	// Additive to the contract.
	Terminal bool
	// RuntimeName prefixes container IDs ("containerd://<id>"); empty means
	// containerd. Additive to the contract.
	RuntimeName string
}

// Container state reasons the kubelet sets (kubelet_pods.go, kubecontainer).
const (
	PodInitializing         = "PodInitializing"
	ContainerCreating       = "ContainerCreating"
	ContainerStatusUnknown  = "ContainerStatusUnknown"
	Completed               = "Completed"
	Error                   = "Error"
	OOMKilled               = "OOMKilled"
	containerRestartCountAn = "io.kubernetes.container.restartCount"
)

// Condition reasons (pkg/kubelet/status/generate.go).
const (
	UnknownContainerStatuses = "UnknownContainerStatuses"
	PodCompleted             = "PodCompleted"
	PodFailed                = "PodFailed"
	ContainersNotReady       = "ContainersNotReady"
	ContainersNotInitialized = "ContainersNotInitialized"
	ReadinessGatesNotReady   = "ReadinessGatesNotReady"
)

// Pod condition types and phases.
const (
	PodScheduled              = "PodScheduled"
	PodReadyToStartContainers = "PodReadyToStartContainers"
	Initialized               = "Initialized"
	ContainersReady           = "ContainersReady"
	Ready                     = "Ready"

	Pending   = "Pending"
	Running   = "Running"
	Succeeded = "Succeeded"
	Failed    = "Failed"
)

// kubeletConditions are the condition types the kubelet owns
// (PodConditionByKubelet); the others in the old status are kept.
var kubeletConditions = map[string]bool{
	PodScheduled: true, Ready: true, Initialized: true, ContainersReady: true,
	PodReadyToStartContainers: true, "PodResizePending": true, "PodResizeInProgress": true,
}

// Compute is the pod's new status.
func Compute(in Input) *corev1.PodStatus {
	pod := in.Pod
	old := pod.GetStatus()
	if old == nil {
		old = &corev1.PodStatus{}
	}
	if in.RuntimeName == "" {
		in.RuntimeName = "containerd"
	}
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	spec := pod.GetSpec()
	byName := latestFirst(in.Runtime.Containers)

	s := &corev1.PodStatus{ObservedGeneration: pod.GetMetadata().GetGeneration()}
	for _, ip := range sortPodIPs(in.Runtime.PodIPs, in.HostIPs) {
		s.PodIPs = append(s.PodIPs, &corev1.PodIP{Ip: ip})
	}
	if len(s.PodIPs) > 0 {
		s.PodIP = s.PodIPs[0].Ip
	}
	s.QosClass = qos.Class(pod)

	hasInit := len(spec.GetInitContainers()) > 0
	s.ContainerStatuses = convertStatuses(&in, byName, old.GetContainerStatuses(), spec.GetContainers(), hasInit, false)
	s.InitContainerStatuses = convertStatuses(&in, byName, old.GetInitContainerStatuses(), spec.GetInitContainers(), hasInit, true)
	setProbeResults(&in, s)

	all := append(append([]*corev1.ContainerStatus{}, s.ContainerStatuses...), s.InitContainerStatuses...)
	s.Phase = phase(pod, all, in.Terminal, anyActiveRegularContainer(spec, byName))
	// A terminal phase, once written, stays.
	if s.Phase != Failed && s.Phase != Succeeded && (old.GetPhase() == Failed || old.GetPhase() == Succeeded) {
		s.Phase = old.GetPhase()
	}
	if s.Phase == old.GetPhase() {
		s.Reason, s.Message = old.GetReason(), old.GetMessage()
	}

	for _, c := range old.GetConditions() {
		if !kubeletConditions[c.GetType()] {
			s.Conditions = append(s.Conditions, proto.Clone(c).(*corev1.PodCondition))
		}
	}
	gen := pod.GetMetadata().GetGeneration()
	s.Conditions = append(s.Conditions, readyToStartCondition(pod, in.Runtime))
	initAndApp := append(append([]*corev1.ContainerStatus{}, s.InitContainerStatuses...), s.ContainerStatuses...)
	s.Conditions = append(s.Conditions, initializedCondition(pod, initAndApp, s.Phase))
	s.Conditions = append(s.Conditions, readyCondition(pod, s.Conditions, initAndApp, s.Phase))
	s.Conditions = append(s.Conditions, containersReadyCondition(pod, initAndApp, s.Phase))
	s.Conditions = append(s.Conditions, &corev1.PodCondition{Type: PodScheduled, Status: "True"})
	for _, c := range s.Conditions {
		if !kubeletConditions[c.Type] {
			continue
		}
		c.ObservedGeneration = gen
		c.LastTransitionTime = metav1.NewTime(now)
		if oc := findCondition(old.GetConditions(), c.Type); oc != nil && oc.GetStatus() == c.Status && oc.GetLastTransitionTime() != nil {
			c.LastTransitionTime = proto.Clone(oc.GetLastTransitionTime()).(*metav1.Time)
		}
	}

	if len(in.HostIPs) > 0 {
		s.HostIP = in.HostIPs[0]
		for _, ip := range in.HostIPs[:min(2, len(in.HostIPs))] {
			s.HostIPs = append(s.HostIPs, &corev1.HostIP{Ip: ip})
		}
		if spec.GetHostNetwork() && s.PodIP == "" {
			s.PodIP = in.HostIPs[0]
			for _, ip := range in.HostIPs[:min(2, len(in.HostIPs))] {
				s.PodIPs = append(s.PodIPs, &corev1.PodIP{Ip: ip})
			}
		}
	}
	if st := old.GetStartTime(); !st.IsZero() {
		s.StartTime = proto.Clone(st).(*metav1.Time)
	} else {
		s.StartTime = metav1.NewTime(now)
	}
	return s
}

// latestFirst groups the runtime's containers by name, newest first.
func latestFirst(cs []*runtimeapi.ContainerStatus) map[string][]*runtimeapi.ContainerStatus {
	out := map[string][]*runtimeapi.ContainerStatus{}
	for _, c := range cs {
		n := c.GetMetadata().GetName()
		out[n] = append(out[n], c)
	}
	for _, l := range out {
		sort.SliceStable(l, func(i, j int) bool {
			if l[i].GetCreatedAt() != l[j].GetCreatedAt() {
				return l[i].GetCreatedAt() > l[j].GetCreatedAt()
			}
			return l[i].GetMetadata().GetAttempt() > l[j].GetMetadata().GetAttempt()
		})
	}
	return out
}

func latest(byName map[string][]*runtimeapi.ContainerStatus, name string) *runtimeapi.ContainerStatus {
	if l := byName[name]; len(l) > 0 {
		return l[0]
	}
	return nil
}

// sortPodIPs is upstream's sortPodIPs: the first IP of the node's family
// (the first host IP's, IPv4 if none), then the first of the other.
func sortPodIPs(ips, hostIPs []string) []string {
	primary6 := false
	if len(hostIPs) > 0 {
		if a, err := netip.ParseAddr(hostIPs[0]); err == nil && a.Is6() && !a.Is4In6() {
			primary6 = true
		}
	}
	var out []string
	for _, want6 := range []bool{primary6, !primary6} {
		for _, s := range ips {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				continue
			}
			a = a.Unmap()
			if a.Is6() == want6 {
				out = append(out, a.String())
				break
			}
		}
	}
	return out
}

func isRestartableInit(c *corev1.Container) bool { return c.GetRestartPolicy() == "Always" }

// convertStatuses is upstream's convertToAPIContainerStatuses for one list
// of containers (app or init).
func convertStatuses(in *Input, byName map[string][]*runtimeapi.ContainerStatus, previous []*corev1.ContainerStatus, containers []*corev1.Container, hasInit, isInit bool) []*corev1.ContainerStatus {
	pod := in.Pod
	oldStatuses := map[string]*corev1.ContainerStatus{}
	for _, st := range previous {
		oldStatuses[st.GetName()] = st
	}
	defaultReason := ContainerCreating
	if hasInit {
		defaultReason = PodInitializing
	}
	isDefaultWaiting := func(st *corev1.ContainerStatus) bool {
		return st.GetState().GetWaiting() != nil && st.GetState().GetWaiting().GetReason() == defaultReason
	}

	statuses := map[string]*corev1.ContainerStatus{}
	for _, c := range containers {
		st := &corev1.ContainerStatus{
			Name:  c.GetName(),
			Image: c.GetImage(),
			State: &corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: defaultReason}},
		}
		if old, ok := oldStatuses[c.GetName()]; ok {
			if old.GetState().GetTerminated() != nil {
				st = proto.Clone(old).(*corev1.ContainerStatus)
			} else {
				st.RestartCount = old.GetRestartCount()
				if old.GetLastState() != nil {
					st.LastState = proto.Clone(old.GetLastState()).(*corev1.ContainerState)
				}
			}
		}
		statuses[c.GetName()] = st
	}

	// A container that was running and is gone from the runtime ended in a
	// way nobody saw: say so rather than fall back to Pending.
	for _, c := range containers {
		if len(byName[c.GetName()]) > 0 {
			continue
		}
		old, ok := oldStatuses[c.GetName()]
		if !ok || old.GetState().GetTerminated() != nil || old.GetState().GetRunning() == nil {
			continue
		}
		st := statuses[c.GetName()]
		if !isDefaultWaiting(st) || st.GetLastState().GetTerminated() != nil {
			continue
		}
		st.LastState = &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			Reason:   ContainerStatusUnknown,
			Message:  "The container could not be located when the pod was deleted.  The container used to be Running",
			ExitCode: 137,
		}}
		if pod.GetMetadata().GetDeletionTimestamp() == nil {
			st.RestartCount++
		}
	}

	// The newest attempt gives the state, the one before it the last state.
	for _, c := range containers {
		l := byName[c.GetName()]
		for i, cs := range l[:min(2, len(l))] {
			conv := convertOne(in, cs, oldStatuses[c.GetName()], c.GetImage())
			if i == 0 {
				statuses[c.GetName()] = conv
			} else {
				statuses[c.GetName()].LastState = conv.State
			}
		}
	}

	// Containers to be (re)started wait, for the reason the sync loop gave.
	for _, c := range containers {
		cur := latest(byName, c.GetName())
		if isInit {
			if cur != nil && cur.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && cur.GetExitCode() == 0 {
				continue
			}
			// Its record is gone but the app containers exist: it completed.
			if cur == nil && anyRegularContainerCreated(pod.GetSpec(), byName) && !isRestartableInit(c) && statuses[c.GetName()].GetState().GetWaiting() != nil {
				statuses[c.GetName()].State = &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					Reason:  Completed,
					Message: "Unable to get init container status from container runtime and pod has been initialized, treat it as exited normally",
				}}
				continue
			}
		}
		if !shouldRestart(c, pod, cur) {
			continue
		}
		w, ok := in.Waiting[c.GetName()]
		if !ok {
			continue
		}
		st := statuses[c.GetName()]
		if st.GetState().GetTerminated() != nil {
			st.LastState = st.State
		}
		st.State = &corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}}
	}

	out := make([]*corev1.ContainerStatus, 0, len(containers))
	for _, c := range containers {
		out = append(out, statuses[c.GetName()])
	}
	if !isInit {
		sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	}
	return out
}

// convertOne is one runtime container as an API status.
func convertOne(in *Input, cs *runtimeapi.ContainerStatus, old *corev1.ContainerStatus, image string) *corev1.ContainerStatus {
	cid := in.RuntimeName + "://" + cs.GetId()
	st := &corev1.ContainerStatus{
		Name:         cs.GetMetadata().GetName(),
		RestartCount: restartCount(cs),
		Image:        image,
		ImageID:      cs.GetImageRef(),
		ContainerID:  cid,
		State:        &corev1.ContainerState{},
	}
	if st.Image == "" {
		st.Image = cs.GetImage().GetImage()
	}
	switch cs.GetState() {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		st.State.Running = &corev1.ContainerStateRunning{StartedAt: nanoTime(cs.GetStartedAt())}
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		st.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode:    cs.GetExitCode(),
			Reason:      exitReason(cs),
			Message:     cs.GetMessage(),
			StartedAt:   nanoTime(cs.GetStartedAt()),
			FinishedAt:  nanoTime(cs.GetFinishedAt()),
			ContainerID: cid,
		}
	case runtimeapi.ContainerState_CONTAINER_UNKNOWN:
		if old.GetState().GetRunning() != nil {
			// It was running and now the runtime cannot say: it ended.
			st.State.Terminated = &corev1.ContainerStateTerminated{
				Reason:   ContainerStatusUnknown,
				Message:  "The container could not be located when the pod was terminated",
				ExitCode: 137,
			}
			st.RestartCount = old.GetRestartCount() + 1
			break
		}
		st.State.Waiting = &corev1.ContainerStateWaiting{}
	default:
		// Created but not started: waiting to run.
		st.State.Waiting = &corev1.ContainerStateWaiting{}
	}
	return st
}

// exitReason is the runtime's reason (containerd: Completed, Error,
// OOMKilled); runtimes that give none get containerd's by exit code.
func exitReason(cs *runtimeapi.ContainerStatus) string {
	if r := cs.GetReason(); r != "" {
		return r
	}
	if cs.GetExitCode() == 0 {
		return Completed
	}
	return Error
}

// restartCount is the attempt's restart count: the kubelet's annotation
// when present, else the CRI attempt.
func restartCount(cs *runtimeapi.ContainerStatus) int32 {
	if v, ok := cs.GetAnnotations()[containerRestartCountAn]; ok {
		if n, err := strconv.ParseInt(v, 10, 32); err == nil {
			return int32(n)
		}
	}
	return int32(cs.GetMetadata().GetAttempt())
}

// nanoTime is a CRI timestamp (ns since the epoch); nil when unset.
func nanoTime(ns int64) *metav1.Time {
	if ns == 0 {
		return nil
	}
	return metav1.NewTime(time.Unix(0, ns))
}

// shouldRestart is upstream's ShouldContainerBeRestarted.
func shouldRestart(c *corev1.Container, pod *corev1.Pod, cur *runtimeapi.ContainerStatus) bool {
	if pod.GetMetadata().GetDeletionTimestamp() != nil {
		return false
	}
	if cur == nil {
		return true
	}
	switch cur.GetState() {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return false
	case runtimeapi.ContainerState_CONTAINER_UNKNOWN, runtimeapi.ContainerState_CONTAINER_CREATED:
		return true
	}
	if isRestartableInit(c) {
		return true
	}
	switch pod.GetSpec().GetRestartPolicy() {
	case "Never":
		return false
	case "OnFailure":
		return cur.GetExitCode() != 0
	}
	return true
}

func anyRegularContainerCreated(spec *corev1.PodSpec, byName map[string][]*runtimeapi.ContainerStatus) bool {
	for _, c := range spec.GetContainers() {
		if cur := latest(byName, c.GetName()); cur != nil && cur.GetState() != runtimeapi.ContainerState_CONTAINER_UNKNOWN {
			return true
		}
	}
	return false
}

// anyActiveRegularContainer is HasAnyActiveRegularContainerStarted: an app
// container is created or running, so the pod got past initialization.
func anyActiveRegularContainer(spec *corev1.PodSpec, byName map[string][]*runtimeapi.ContainerStatus) bool {
	for _, c := range spec.GetContainers() {
		cur := latest(byName, c.GetName())
		if cur != nil && (cur.GetState() == runtimeapi.ContainerState_CONTAINER_CREATED || cur.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING) {
			return true
		}
	}
	return false
}

// setProbeResults is the prober manager's UpdatePodStatus: started when
// running and past its startup probe; ready when started, running and
// passing its readiness probe; a regular init container is ready once it
// exited 0.
func setProbeResults(in *Input, s *corev1.PodStatus) {
	ready := func(name string) bool { return in.Ready == nil || in.Ready(name) }
	started := func(name string) bool { return in.Started == nil || in.Started(name) }
	probe := func(st *corev1.ContainerStatus) {
		running := st.GetState().GetRunning() != nil
		ok := running && started(st.Name)
		st.Started = &ok
		st.Ready = ok && ready(st.Name)
	}
	for _, st := range s.ContainerStatuses {
		probe(st)
	}
	for i, st := range s.InitContainerStatuses {
		c := in.Pod.GetSpec().GetInitContainers()[i]
		if !isRestartableInit(c) {
			ok := st.GetState().GetRunning() != nil && started(st.Name)
			st.Started = &ok
			t := st.GetState().GetTerminated()
			st.Ready = t != nil && t.GetExitCode() == 0
			continue
		}
		probe(st)
	}
}

func statusOf(statuses []*corev1.ContainerStatus, name string) *corev1.ContainerStatus {
	for _, st := range statuses {
		if st.GetName() == name {
			return st
		}
	}
	return nil
}

func isStatic(pod *corev1.Pod) bool {
	src, ok := pod.GetMetadata().GetAnnotations()["kubernetes.io/config.source"]
	return ok && src != "api"
}

// phase is upstream's getPhase (without the alpha container restart rules).
func phase(pod *corev1.Pod, info []*corev1.ContainerStatus, terminal, initialized bool) string {
	spec := pod.GetSpec()
	pendingRestartableInit, pendingRegularInit, failedInit := 0, 0, 0
	for _, c := range spec.GetInitContainers() {
		if isRestartableInit(c) {
			continue
		}
		st := statusOf(info, c.GetName())
		switch {
		case st == nil:
			pendingRegularInit++
		case st.GetState().GetRunning() != nil:
			pendingRegularInit++
		case st.GetState().GetTerminated() != nil:
			if st.GetState().GetTerminated().GetExitCode() != 0 {
				failedInit++
			}
		case st.GetState().GetWaiting() != nil:
			if lt := st.GetLastState().GetTerminated(); lt != nil {
				if lt.GetExitCode() != 0 {
					failedInit++
				}
			} else {
				pendingRegularInit++
			}
		default:
			pendingRegularInit++
		}
	}

	unknown, running, waiting, stopped, succeeded := 0, 0, 0, 0, 0
	for _, c := range spec.GetInitContainers() {
		if !isRestartableInit(c) {
			continue
		}
		st := statusOf(info, c.GetName())
		switch {
		case st == nil:
			unknown++
		case st.GetState().GetRunning() != nil:
			if !st.GetStarted() {
				pendingRestartableInit++
			}
			running++
		case st.GetState().GetTerminated() != nil:
			// A stopped sidecar does not decide the phase.
		case st.GetState().GetWaiting() != nil:
			if st.GetLastState().GetTerminated() == nil {
				pendingRestartableInit++
				waiting++
			}
		default:
			pendingRestartableInit++
			unknown++
		}
	}
	for _, c := range spec.GetContainers() {
		st := statusOf(info, c.GetName())
		switch {
		case st == nil:
			unknown++
		case st.GetState().GetRunning() != nil:
			running++
		case st.GetState().GetTerminated() != nil:
			stopped++
			if st.GetState().GetTerminated().GetExitCode() == 0 {
				succeeded++
			}
		case st.GetState().GetWaiting() != nil:
			if st.GetLastState().GetTerminated() != nil {
				stopped++
			} else {
				waiting++
			}
		default:
			unknown++
		}
	}

	if failedInit > 0 && spec.GetRestartPolicy() == "Never" {
		return Failed
	}
	switch {
	case pendingRegularInit > 0 || (pendingRestartableInit > 0 && !initialized):
		return Pending
	case waiting > 0:
		return Pending
	case running > 0 && unknown == 0:
		return Running
	case running == 0 && stopped > 0 && unknown == 0:
		if terminal && !isStatic(pod) {
			if stopped == succeeded {
				return Succeeded
			}
			return Failed
		}
		switch spec.GetRestartPolicy() {
		case "Always", "":
			return Running
		}
		if stopped == succeeded {
			return Succeeded
		}
		if spec.GetRestartPolicy() == "Never" {
			return Failed
		}
		return Running
	default:
		return Pending
	}
}

func findCondition(cs []*corev1.PodCondition, t string) *corev1.PodCondition {
	for _, c := range cs {
		if c.GetType() == t {
			return c
		}
	}
	return nil
}

// readyToStartCondition: True once the pod has a ready sandbox with its
// network set up (an IP, unless on the host's network), i.e. no new sandbox
// is needed (upstream's PodSandboxChanged).
func readyToStartCondition(pod *corev1.Pod, rt Runtime) *corev1.PodCondition {
	ok := rt.SandboxReady && (pod.GetSpec().GetHostNetwork() || len(rt.PodIPs) > 0)
	return &corev1.PodCondition{Type: PodReadyToStartContainers, Status: boolStatus(ok)}
}

func boolStatus(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// names prints a list of names as Go's %s of a []string: "[a b]".
func names(l []string) string { return fmt.Sprintf("%s", l) }

func initializedCondition(pod *corev1.Pod, statuses []*corev1.ContainerStatus, phase string) *corev1.PodCondition {
	var unknown, incomplete []string
	for _, c := range pod.GetSpec().GetInitContainers() {
		st := statusOf(statuses, c.GetName())
		if st == nil {
			unknown = append(unknown, c.GetName())
			continue
		}
		if isRestartableInit(c) {
			if !st.GetStarted() {
				incomplete = append(incomplete, c.GetName())
			}
		} else if !st.GetReady() {
			incomplete = append(incomplete, c.GetName())
		}
	}
	if phase == Succeeded && len(unknown) == 0 {
		return &corev1.PodCondition{Type: Initialized, Status: "True", Reason: PodCompleted}
	}
	if anyRegularContainerStarted(pod.GetSpec(), statuses) {
		return &corev1.PodCondition{Type: Initialized, Status: "True"}
	}
	var msgs []string
	if len(unknown) > 0 {
		msgs = append(msgs, "containers with unknown status: "+names(unknown))
	}
	if len(incomplete) > 0 {
		msgs = append(msgs, "containers with incomplete status: "+names(incomplete))
	}
	if len(msgs) > 0 {
		return &corev1.PodCondition{Type: Initialized, Status: "False", Reason: ContainersNotInitialized, Message: strings.Join(msgs, ", ")}
	}
	return &corev1.PodCondition{Type: Initialized, Status: "True"}
}

// anyRegularContainerStarted is HasAnyRegularContainerStarted: an app
// container is running or has run.
func anyRegularContainerStarted(spec *corev1.PodSpec, statuses []*corev1.ContainerStatus) bool {
	for _, c := range spec.GetContainers() {
		st := statusOf(statuses, c.GetName())
		if st != nil && (st.GetState().GetRunning() != nil || st.GetState().GetTerminated() != nil) {
			return true
		}
	}
	return false
}

func containersReadyCondition(pod *corev1.Pod, statuses []*corev1.ContainerStatus, phase string) *corev1.PodCondition {
	var unknown, unready []string
	check := func(c *corev1.Container) {
		st := statusOf(statuses, c.GetName())
		switch {
		case st == nil:
			unknown = append(unknown, c.GetName())
		case !st.GetReady():
			unready = append(unready, c.GetName())
		}
	}
	for _, c := range pod.GetSpec().GetInitContainers() {
		if isRestartableInit(c) {
			check(c)
		}
	}
	for _, c := range pod.GetSpec().GetContainers() {
		check(c)
	}
	if (phase == Succeeded && len(unknown) == 0) || phase == Failed {
		reason := PodCompleted
		if phase == Failed {
			reason = PodFailed
		}
		return &corev1.PodCondition{Type: ContainersReady, Status: "False", Reason: reason}
	}
	var msgs []string
	if len(unknown) > 0 {
		msgs = append(msgs, "containers with unknown status: "+names(unknown))
	}
	if len(unready) > 0 {
		msgs = append(msgs, "containers with unready status: "+names(unready))
	}
	if len(msgs) > 0 {
		return &corev1.PodCondition{Type: ContainersReady, Status: "False", Reason: ContainersNotReady, Message: strings.Join(msgs, ", ")}
	}
	return &corev1.PodCondition{Type: ContainersReady, Status: "True"}
}

// readyCondition is ContainersReady, further held back by readiness gates
// whose conditions (set by others) are not True.
func readyCondition(pod *corev1.Pod, conditions []*corev1.PodCondition, statuses []*corev1.ContainerStatus, phase string) *corev1.PodCondition {
	cr := containersReadyCondition(pod, statuses, phase)
	if cr.Status != "True" {
		return &corev1.PodCondition{Type: Ready, Status: cr.Status, Reason: cr.Reason, Message: cr.Message}
	}
	var msgs []string
	for _, rg := range pod.GetSpec().GetReadinessGates() {
		c := findCondition(conditions, rg.GetConditionType())
		if c == nil {
			msgs = append(msgs, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", rg.GetConditionType()))
		} else if c.GetStatus() != "True" {
			msgs = append(msgs, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %v", rg.GetConditionType(), c.GetStatus()))
		}
	}
	if len(msgs) > 0 {
		return &corev1.PodCondition{Type: Ready, Status: "False", Reason: ReadinessGatesNotReady, Message: strings.Join(msgs, ", ")}
	}
	return &corev1.PodCondition{Type: Ready, Status: "True"}
}
