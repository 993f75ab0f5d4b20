package pods

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client/record"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Upstream's DisruptionTarget pod condition, which tells controllers (Jobs'
// pod failure policies) that the kubelet, not the workload, ended the pod.
const (
	conditionDisruptionTarget  = "DisruptionTarget"
	reasonTerminationByKubelet = "TerminationByKubelet"
)

// evictStatusWait bounds how long Evict waits for the pod's informer to
// bring back the Failed status it wrote; evictStatusAttempts how often it
// writes it again meanwhile.
const (
	evictStatusWait     = 2 * time.Second
	evictStatusAttempts = 5
)

// Evict stops the pod uid for good, as upstream's eviction of a pod: a
// Warning event of reason with message, the pod's status Failed with them
// (and a DisruptionTarget condition), then its containers killed within
// grace seconds (the pod's own if nil). The pod stays in the API, Failed,
// for its owner to replace. Static pods are never evicted.
//
// The status goes first and Evict waits for the informer to show it: the
// worker reads the phase from there, and a worker that still saw the pod
// running would start the killed containers again.
func (m *Manager) Evict(ctx context.Context, uid, reason, message string, grace *int64) error {
	if m.isStatic(uid) {
		return fmt.Errorf("pod %s is a static pod, which is never evicted", uid)
	}
	pod := m.apiPod(uid)
	if pod == nil {
		return fmt.Errorf("no pod with UID %s on this node", uid)
	}
	md := pod.GetMetadata()
	log := m.log.With("pod", md.GetNamespace()+"/"+md.GetName(), "uid", uid)
	m.cfg.Recorder.Event(pod, record.Warning, reason, message)
	if err := m.markFailed(ctx, pod, reason, message); err != nil {
		return fmt.Errorf("writing the evicted status: %w", err)
	}
	st, err := m.rt.Inspect(ctx, uid)
	if err != nil {
		m.wake(uid, nil) // the worker stops what it finds, with the pod's own grace
		return fmt.Errorf("inspecting the evicted pod: %w", err)
	}
	if err := m.rt.KillPod(ctx, pod, st, grace); err != nil {
		// The worker, seeing the pod Failed, stops it too: the second
		// teardown of the sandbox's network fails ("no such device")
		// once the first is done. Only containers left running matter.
		if after, ierr := m.rt.Inspect(ctx, uid); ierr != nil || len(after.Running()) > 0 {
			m.wake(uid, nil)
			return fmt.Errorf("stopping the evicted pod: %w", err)
		}
		log.Info("stopping the evicted pod", "err", err)
	}
	if m.cfg.Prober != nil {
		m.cfg.Prober.RemovePod(uid)
	}
	// The final status, containers terminated, as the worker writes it
	// for a pod it stopped.
	w := &worker{m: m, uid: uid, ns: md.GetNamespace(), name: md.GetName()}
	w.writeStatus(ctx, pod, nil, true)
	if last := m.status.last(uid); last.GetPhase() != "Failed" || last.GetReason() != reason {
		// Containers that exited 0 on SIGTERM make the computed phase
		// Succeeded; an evicted pod failed.
		if err := m.status.write(ctx, pod, evictedStatus(last, reason, message)); err != nil {
			log.Info("writing the evicted status", "err", err)
		}
	}
	m.wake(uid, nil)
	log.Info("pod evicted", "reason", reason, "message", message)
	return nil
}

// apiPod is the API pod of uid as the lister has it.
func (m *Manager) apiPod(uid string) *corev1.Pod {
	for _, p := range m.cfg.Pods.List(nil) {
		if p.GetMetadata().GetUid() == uid {
			return p
		}
	}
	return nil
}

// markFailed writes the evicted status until the informer has it: a worker
// sync in flight may write its own computed status over it once, and
// computes every later one from this (a terminal phase then stays).
func (m *Manager) markFailed(ctx context.Context, pod *corev1.Pod, reason, message string) error {
	uid := pod.GetMetadata().GetUid()
	for range evictStatusAttempts {
		base := m.status.last(uid)
		if base == nil {
			base = pod.GetStatus()
		}
		if err := m.status.write(ctx, pod, evictedStatus(base, reason, message)); err != nil {
			return err
		}
		seen, err := m.waitFailed(ctx, pod)
		if err != nil || seen {
			return err
		}
	}
	return errors.New("the informer never showed the pod Failed")
}

// waitFailed waits for the lister to show the pod Failed; an error says
// the pod is gone or ctx ended.
func (m *Manager) waitFailed(ctx context.Context, pod *corev1.Pod) (bool, error) {
	md := pod.GetMetadata()
	deadline := time.Now().Add(evictStatusWait)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		p, err := m.cfg.Pods.Get(md.GetNamespace(), md.GetName())
		if err != nil || p.GetMetadata().GetUid() != md.GetUid() {
			return false, errors.New("the pod is gone from the API")
		}
		if p.GetStatus().GetPhase() == "Failed" {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-t.C:
		}
	}
}

// evictedStatus is base as an evicted pod's: Failed with reason and
// message, and the DisruptionTarget condition.
func evictedStatus(base *corev1.PodStatus, reason, message string) *corev1.PodStatus {
	st := &corev1.PodStatus{}
	if base != nil {
		st = proto.Clone(base).(*corev1.PodStatus)
	}
	st.Phase, st.Reason, st.Message = "Failed", reason, message
	cond := &corev1.PodCondition{Type: conditionDisruptionTarget, Status: "True", Reason: reasonTerminationByKubelet,
		Message: message, LastTransitionTime: metav1.NewTime(time.Now())}
	for i, c := range st.Conditions {
		if c.GetType() == conditionDisruptionTarget {
			if c.GetStatus() == "True" {
				cond.LastTransitionTime = c.GetLastTransitionTime()
			}
			st.Conditions[i] = cond
			return st
		}
	}
	st.Conditions = append(st.Conditions, cond)
	return st
}
