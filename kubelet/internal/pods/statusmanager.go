package pods

import (
	"context"
	"log/slog"
	"sync"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/informers"
	"skiff.dev/kubelet/internal/staticpods"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
)

// statusManager writes pod statuses through the status subresource, only
// when they changed, as upstream's status manager: against the newest pod
// the lister has, re-reading it on a conflict. A static pod's status goes
// to its mirror pod (upstream's TranslatePodUID).
type statusManager struct {
	client *client.Client
	pods   informers.Lister[*corev1.Pod]
	log    *slog.Logger
	// static reports a static pod's UID: its status goes to its mirror.
	static func(uid string) bool

	mu sync.Mutex
	// latest is the newest status computed per pod UID, written or not
	// (upstream's status cache): a static pod's, when no mirror pod is
	// there to hold it, is known only here.
	latest  map[string]*corev1.PodStatus
	written map[string]written // by pod UID
}

// written is a status written and the UID of the API pod it went to: a
// static pod's mirror may be replaced, and the new one needs it too.
type written struct {
	target string
	status *corev1.PodStatus
}

func cloneStatus(s *corev1.PodStatus) *corev1.PodStatus {
	return proto.Clone(s).(*corev1.PodStatus)
}

// last is the status this kubelet last computed for uid, nil if none:
// newer than the lister's until the watch brings the write back.
func (s *statusManager) last(uid string) *corev1.PodStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest[uid]
}

func (s *statusManager) forget(uid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.written, uid)
	delete(s.latest, uid)
}

// target is the API pod that holds pod's status, as the lister has it: the
// pod itself (pod if the lister lacks it), or a static pod's mirror; false
// for a static pod whose mirror is not there (yet: its creation wakes the
// worker, which writes then).
func (s *statusManager) target(pod *corev1.Pod) (*corev1.Pod, bool) {
	md := pod.GetMetadata()
	p, err := s.pods.Get(md.GetNamespace(), md.GetName())
	if s.static != nil && s.static(md.GetUid()) {
		if err != nil || !staticpods.IsMirrorPodOf(p, pod) || p.GetMetadata().GetDeletionTimestamp() != nil {
			return nil, false
		}
		return p, true
	}
	if err == nil && p.GetMetadata().GetUid() == md.GetUid() {
		return p, true
	}
	return pod, true
}

func (s *statusManager) write(ctx context.Context, pod *corev1.Pod, st *corev1.PodStatus) error {
	uid := pod.GetMetadata().GetUid()
	latest, ok := s.target(pod)
	if ok {
		st = keepTerminalPhase(latest.GetStatus(), st)
	}
	s.mu.Lock()
	if prev := s.latest[uid]; prev != nil {
		st = keepTerminalPhase(prev, st)
	}
	s.latest[uid] = cloneStatus(st)
	last, had := s.written[uid]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	target := latest.GetMetadata().GetUid()
	if had && last.target == target && proto.Equal(last.status, st) {
		return nil
	}
	if proto.Equal(latest.GetStatus(), st) {
		s.remember(uid, target, st)
		return nil
	}
	pods := client.For[*corev1.Pod](s.client, pod.GetMetadata().GetNamespace())
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		p := proto.Clone(latest).(*corev1.Pod)
		p.Status = cloneStatus(st)
		if _, err = pods.UpdateStatus(ctx, p); err == nil {
			s.remember(uid, target, st)
			return nil
		}
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case apierrors.IsConflict(err):
			fresh, gerr := pods.Get(ctx, pod.GetMetadata().GetName())
			if gerr != nil {
				return gerr
			}
			if fresh.GetMetadata().GetUid() != target {
				return nil // replaced by a pod of the same name
			}
			latest = fresh
			st = keepTerminalPhase(latest.GetStatus(), st)
		default:
			return err
		}
	}
	return err
}

func (s *statusManager) remember(uid, target string, st *corev1.PodStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.written[uid] = written{target: target, status: cloneStatus(st)}
}

// keepTerminalPhase is upstream's rule that a pod never leaves a terminal
// phase, nor moves from one to the other: an evicted pod whose containers
// then exit 0 on SIGTERM stays Failed, with the reason it was given.
func keepTerminalPhase(old, st *corev1.PodStatus) *corev1.PodStatus {
	ph := old.GetPhase()
	if (ph != "Failed" && ph != "Succeeded") || st.GetPhase() == ph {
		return st
	}
	st = cloneStatus(st)
	st.Phase, st.Reason, st.Message = ph, old.GetReason(), old.GetMessage()
	return st
}
