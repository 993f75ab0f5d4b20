package pods

import (
	"context"
	"log/slog"
	"sync"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/informers"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
)

// statusManager writes pod statuses through the status subresource, only
// when they changed, as upstream's status manager: against the newest pod
// the lister has, re-reading it on a conflict.
type statusManager struct {
	client *client.Client
	pods   informers.Lister[*corev1.Pod]
	log    *slog.Logger

	mu      sync.Mutex
	written map[string]*corev1.PodStatus // by pod UID
}

func cloneStatus(s *corev1.PodStatus) *corev1.PodStatus {
	return proto.Clone(s).(*corev1.PodStatus)
}

// last is the status this kubelet last wrote for uid, nil if none: newer
// than the lister's until the watch brings the write back.
func (s *statusManager) last(uid string) *corev1.PodStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written[uid]
}

func (s *statusManager) forget(uid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.written, uid)
}

func (s *statusManager) write(ctx context.Context, pod *corev1.Pod, st *corev1.PodStatus) error {
	uid := pod.GetMetadata().GetUid()
	if last := s.last(uid); last != nil && proto.Equal(last, st) {
		return nil
	}
	latest := pod
	if p, err := s.pods.Get(pod.GetMetadata().GetNamespace(), pod.GetMetadata().GetName()); err == nil && p.GetMetadata().GetUid() == uid {
		latest = p
	}
	if proto.Equal(latest.GetStatus(), st) {
		s.remember(uid, st)
		return nil
	}
	pods := client.For[*corev1.Pod](s.client, pod.GetMetadata().GetNamespace())
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		p := proto.Clone(latest).(*corev1.Pod)
		p.Status = cloneStatus(st)
		if _, err = pods.UpdateStatus(ctx, p); err == nil {
			s.remember(uid, st)
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
			if fresh.GetMetadata().GetUid() != uid {
				return nil // replaced by a pod of the same name
			}
			latest = fresh
		default:
			return err
		}
	}
	return err
}

func (s *statusManager) remember(uid string, st *corev1.PodStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.written[uid] = cloneStatus(st)
}
