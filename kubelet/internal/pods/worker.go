package pods

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client"
	"skiff.dev/client/record"
	"skiff.dev/kubelet/internal/kuberuntime"
	"skiff.dev/kubelet/internal/status"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// worker syncs one pod UID, one sync at a time.
type worker struct {
	m        *Manager
	uid      string
	ns, name string
	wakeCh   chan struct{}
	mu       sync.Mutex
	pod      *corev1.Pod // newest known state, from the informer
	static   bool        // a static pod: its status goes to its mirror pod
	admitted bool
	probing  bool
	terminal bool // containers stopped for good (completed, failed, rejected)
	cgroup   bool // the pod's cgroup was made (Config.Cgroups)
	waiting  map[string]kuberuntime.Waiting
	retry    *time.Timer
}

// newWorker is called with m.mu held.
func newWorker(m *Manager, pod *corev1.Pod) *worker {
	md := pod.GetMetadata()
	// Static by where the pod came from, not by its annotations, which an
	// API pod may carry too.
	_, static := m.static[md.GetUid()]
	return &worker{m: m, uid: md.GetUid(), ns: md.GetNamespace(), name: md.GetName(), pod: pod,
		static: static, wakeCh: make(chan struct{}, 1)}
}

func (w *worker) setPod(p *corev1.Pod) {
	w.mu.Lock()
	w.pod = p
	w.mu.Unlock()
}

func (w *worker) kick() {
	select {
	case w.wakeCh <- struct{}{}:
	default:
	}
}

func (w *worker) run(ctx context.Context) {
	defer w.m.removeWorker(w.uid)
	defer func() {
		if w.retry != nil {
			w.retry.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wakeCh:
		}
		if done := w.sync(ctx); done {
			return
		}
	}
}

// current is the pod as the lister (or for a static pod, the static set)
// has it now, or the last state known if it lost it; gone says the pod's
// source no longer has this UID.
func (w *worker) current() (pod *corev1.Pod, gone bool) {
	if w.static {
		if p, ok := w.m.staticPod(w.uid); ok {
			return p, false
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.pod, true
	}
	p, err := w.m.cfg.Pods.Get(w.ns, w.name)
	if err == nil && p.GetMetadata().GetUid() == w.uid {
		return p, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, true
}

// sync runs one pass; it returns true when the pod is finished with.
func (w *worker) sync(ctx context.Context) bool {
	m := w.m
	pod, gone := w.current()
	log := m.log.With("pod", w.ns+"/"+w.name, "uid", w.uid)
	if gone && w.static {
		log.Info("static pod removed from its source; stopping it")
		return w.terminate(ctx, pod, false)
	}
	if gone {
		log.Info("pod deleted from the API while running; stopping it")
		w.terminate(ctx, pod, false)
		return true
	}
	if w.static {
		if m.previousRunning(w) {
			log.Debug("waiting for the previous version of the static pod to stop")
			return false
		}
		w.reconcileMirror(ctx, pod)
	}
	if pod.GetMetadata().GetDeletionTimestamp() != nil {
		return w.terminate(ctx, pod, true)
	}
	phase := pod.GetStatus().GetPhase()
	if w.static {
		// A static pod's object is as its manifest says; its status is
		// the kubelet's own.
		phase = m.status.last(w.uid).GetPhase()
	}
	if w.terminal || phase == "Succeeded" || phase == "Failed" {
		// Upstream keeps a finished pod's dead containers for logs but
		// never restarts them; its sandbox is stopped.
		if !w.terminal {
			if st, err := m.rt.Inspect(ctx, w.uid); err == nil {
				_ = m.rt.KillPod(ctx, pod, st, nil)
			}
			w.terminal = true
			// Upstream's terminated pods keep no cgroup, only their dead
			// containers.
			w.removeCgroup()
		}
		if last := m.status.last(w.uid); w.static && last != nil {
			// To a mirror pod that came (back) after the pod finished.
			if err := m.status.write(ctx, pod, last); err != nil {
				log.Info("writing the status of a finished static pod", "err", err)
			}
		}
		return false
	}
	if !w.admitted {
		if m.cfg.Admit != nil {
			if ok, reason, msg := m.cfg.Admit(pod); !ok {
				log.Info("pod rejected", "reason", reason, "message", msg)
				m.cfg.Recorder.Event(pod, record.Warning, reason, msg)
				st := clonePodStatus(pod)
				st.Phase, st.Reason, st.Message = "Failed", reason, msg
				if err := m.status.write(ctx, pod, st); err != nil {
					log.Info("writing the status of a rejected pod", "err", err)
					w.kick()
					return false
				}
				w.terminal = true
				return false
			}
		}
		w.admitted = true
	}
	if m.cfg.Prober != nil && !w.probing {
		m.cfg.Prober.AddPod(pod)
		w.probing = true
	}

	if c := m.cfg.Cgroups; c != nil {
		if !w.cgroup {
			// As upstream's syncPod: the Burstable tier counts the pod
			// before the pod's cgroup exists.
			m.updateQoS("")
		}
		// Every sync, as upstream's: two stats while the cgroup exists, and
		// one that failed or vanished is made before the runtime would make
		// it without limits.
		if err := c.EnsurePod(pod); err != nil {
			m.cfg.Recorder.Eventf(pod, record.Warning, "FailedCreatePodContainer", "unable to ensure pod container exists: %v", err)
			w.writeStatus(ctx, pod, w.waitingAll(pod, kuberuntime.ReasonContainerCreating), false)
			w.retryIn(2 * time.Second)
			return false
		}
		w.cgroup = true
	}
	if m.cfg.Volumes != nil {
		if err := m.cfg.Volumes.Setup(ctx, pod); err != nil {
			m.cfg.Recorder.Eventf(pod, record.Warning, "FailedMount", "Unable to attach or mount volumes: %v", err)
			w.writeStatus(ctx, pod, w.waitingAll(pod, kuberuntime.ReasonContainerCreating), false)
			w.retryIn(2 * time.Second)
			return false
		}
	}

	st, err := m.rt.Inspect(ctx, w.uid)
	if err != nil {
		log.Info("inspecting the pod in the runtime", "err", err)
		w.retryIn(time.Second)
		return false
	}
	res := m.rt.SyncPod(ctx, pod, st, probes{m, w.uid})
	if res.Err != nil {
		log.Info("syncing the pod", "err", res.Err)
	}
	w.waiting = res.Waiting
	m.forgetLiveness(res.Actions.ContainersToKill)

	if after, err := m.rt.Inspect(ctx, w.uid); err == nil {
		st = after
	}
	w.updateProber(pod, st)
	w.writeStatus(ctx, pod, w.waiting, false)
	switch {
	case res.RetryAfter > 0:
		w.retryIn(res.RetryAfter)
	case res.Err != nil:
		w.retryIn(time.Second)
	}
	return false
}

func (w *worker) waitingAll(pod *corev1.Pod, reason string) map[string]kuberuntime.Waiting {
	out := map[string]kuberuntime.Waiting{}
	for _, c := range append(append([]*corev1.Container(nil), pod.GetSpec().GetInitContainers()...), pod.GetSpec().GetContainers()...) {
		out[c.GetName()] = kuberuntime.Waiting{Reason: reason}
	}
	return out
}

// retryIn wakes the worker after d (back-off expiry, transient errors).
func (w *worker) retryIn(d time.Duration) {
	if w.retry != nil {
		w.retry.Stop()
	}
	w.retry = time.AfterFunc(d, w.kick)
}

func (m *Manager) forgetLiveness(killed map[string]kuberuntime.Kill) {
	if len(killed) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range killed {
		delete(m.liveness, id)
	}
}

func (w *worker) updateProber(pod *corev1.Pod, st *kuberuntime.PodStatus) {
	if w.m.cfg.Prober == nil {
		return
	}
	ip := ""
	if len(st.IPs) > 0 {
		ip = st.IPs[0]
	}
	seen := map[string]bool{}
	for _, c := range st.Containers { // newest first
		name := c.GetMetadata().GetName()
		if seen[name] {
			continue
		}
		seen[name] = true
		if c.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			w.m.cfg.Prober.UpdateContainer(w.uid, name, c.GetId(), time.Unix(0, c.GetStartedAt()), ip)
		}
	}
}

// writeStatus computes the pod's status from the runtime and writes it if
// it changed.
func (w *worker) writeStatus(ctx context.Context, pod *corev1.Pod, waiting map[string]kuberuntime.Waiting, terminal bool) {
	m := w.m
	st, err := m.rt.Inspect(ctx, w.uid)
	if err != nil {
		st = &kuberuntime.PodStatus{UID: w.uid}
	}
	// Our last write is newer than the lister's copy until the watch
	// brings it back: compute from it, so transition times stay put.
	if last := m.status.last(w.uid); last != nil {
		p := proto.Clone(pod).(*corev1.Pod)
		p.Status = last
		pod = p
	}
	in := status.Input{
		Pod:      pod,
		Runtime:  status.Runtime{SandboxReady: st.SandboxReady(), SandboxCreated: len(st.Sandboxes) > 0, PodIPs: st.IPs, Containers: st.Containers},
		Waiting:  map[string]status.Waiting{},
		HostIPs:  m.cfg.HostIPs,
		Now:      m.cfg.Now(),
		Terminal: terminal,
	}
	for k, v := range waiting {
		in.Waiting[k] = status.Waiting{Reason: v.Reason, Message: v.Message}
	}
	if p := m.cfg.Prober; p != nil {
		in.Ready = func(c string) bool { return p.Ready(w.uid, c) }
		in.Started = func(c string) bool { return p.Started(w.uid, c) }
	}
	ps := m.cfg.Status(in)
	if ps == nil {
		return
	}
	if err := m.status.write(ctx, pod, ps); err != nil {
		m.log.Info("writing pod status", "pod", w.ns+"/"+w.name, "err", err)
		w.retryIn(time.Second)
	}
}

// terminate stops the pod: preStop hooks and SIGTERM within the grace
// period, the sandbox, the volumes; then, if the API still has it, writes
// its final status and deletes it for good.
func (w *worker) terminate(ctx context.Context, pod *corev1.Pod, inAPI bool) bool {
	m := w.m
	log := m.log.With("pod", w.ns+"/"+w.name, "uid", w.uid)
	st, err := m.rt.Inspect(ctx, w.uid)
	if err != nil {
		log.Info("inspecting a terminating pod", "err", err)
		w.retryIn(time.Second)
		return false
	}
	if err := m.rt.KillPod(ctx, pod, st, nil); err != nil {
		log.Info("stopping a terminating pod", "err", err)
		w.retryIn(time.Second)
		return false
	}
	if m.cfg.Prober != nil {
		m.cfg.Prober.RemovePod(w.uid)
	}
	if inAPI {
		// The final status, as upstream's status manager writes before the
		// pod may go: containers terminated, phase from their exits.
		w.writeStatus(ctx, pod, nil, true)
	}
	if st, err := m.rt.Inspect(ctx, w.uid); err == nil {
		if err := m.rt.RemovePod(ctx, st); err != nil {
			log.Info("removing a terminated pod's containers", "err", err)
		}
	}
	if m.cfg.Volumes != nil {
		if err := m.cfg.Volumes.Teardown(w.uid); err != nil {
			log.Info("tearing down volumes", "err", err)
			w.retryIn(2 * time.Second)
			return false
		}
	}
	w.removeCgroup()
	m.pleg.Cache().Delete(w.uid)
	m.status.forget(w.uid)
	m.finish(w.uid)
	if w.static {
		w.deleteMirror(ctx, pod)
	}
	if !inAPI {
		return true
	}
	zero := int64(0)
	uid := w.uid
	_, err = client.For[*corev1.Pod](m.cfg.Client, w.ns).Delete(ctx, w.name, client.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &apipb.Preconditions{Uid: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		log.Info("deleting a terminated pod", "err", err)
		w.retryIn(time.Second)
		return false
	}
	log.Info("pod terminated and deleted")
	return true
}

func clonePodStatus(pod *corev1.Pod) *corev1.PodStatus {
	if s := pod.GetStatus(); s != nil {
		return cloneStatus(s)
	}
	return &corev1.PodStatus{}
}

// removeCgroup removes the pod's cgroup, killing what is left in it, once
// its sandbox is gone, and gives its shares back to the Burstable tier. A
// failure is retried by the housekeeping (Manager.cleanupCgroups).
func (w *worker) removeCgroup() {
	c := w.m.cfg.Cgroups
	if c == nil {
		return
	}
	if err := c.RemovePod(w.uid); err != nil {
		w.m.log.Info("Failed to remove the pod cgroup", "pod", w.ns+"/"+w.name, "uid", w.uid, "err", err)
	}
	w.cgroup = false
	w.m.updateQoS(w.uid)
}
