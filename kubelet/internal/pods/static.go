package pods

import (
	"context"

	"google.golang.org/protobuf/proto"

	"skiff.dev/kubelet/internal/staticpods"
	corev1 "skiff.dev/proto/api/core/v1"
)

// setStatic replaces the static pods with a new set: workers start for new
// UIDs, and those whose UID left the set (the file removed or edited, an
// edit being a new UID) stop their pods.
func (m *Manager) setStatic(pods []*corev1.Pod) {
	next := make(map[string]*corev1.Pod, len(pods))
	for _, p := range pods {
		next[p.GetMetadata().GetUid()] = p
	}
	m.mu.Lock()
	var gone []string
	for uid := range m.static {
		if _, ok := next[uid]; !ok {
			gone = append(gone, uid)
		}
	}
	for uid := range next {
		if _, ok := m.static[uid]; !ok {
			// A manifest put back as it was has its old UID again: run
			// it again (upstream's restartRequested).
			delete(m.finished, uid)
		}
	}
	m.static = next
	m.staticSeen = true
	m.mu.Unlock()
	for _, uid := range gone {
		m.wake(uid, nil)
	}
	for uid, p := range next {
		m.wake(uid, p)
	}
}

func (m *Manager) staticPod(uid string) (*corev1.Pod, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.static[uid]
	return p, ok
}

// isStatic reports a static pod's UID, in the set or still stopping.
func (m *Manager) isStatic(uid string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.static[uid]; ok {
		return true
	}
	w := m.workers[uid]
	return w != nil && w.static
}

// staticNamed is the static pod of that namespace and name; m.mu held.
func (m *Manager) staticNamed(namespace, name string) *corev1.Pod {
	for _, p := range m.static {
		if md := p.GetMetadata(); md.GetNamespace() == namespace && md.GetName() == name {
			return p
		}
	}
	return nil
}

// mirrorChanged wakes the worker of the static pod a mirror pod reflects,
// which recreates the mirror if it was deleted. A mirror pod of no static
// pod is deleted at the next resync.
func (m *Manager) mirrorChanged(mirror *corev1.Pod) {
	m.mu.Lock()
	p := m.staticNamed(mirror.GetMetadata().GetNamespace(), mirror.GetMetadata().GetName())
	m.mu.Unlock()
	if p != nil {
		m.wake(p.GetMetadata().GetUid(), nil)
	}
}

// previousRunning reports whether a worker of another UID with w's name
// still runs: an edited static pod's previous version, which must stop
// before the new one starts (upstream's pod workers do the same, for
// host ports and volumes the two would share).
func (m *Manager) previousRunning(w *worker) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for uid, o := range m.workers {
		if uid != w.uid && o.ns == w.ns && o.name == w.name {
			return true
		}
	}
	return false
}

// Pods are the node's pods as its kubelet runs them (upstream's pod
// manager's GetPods): the API's less mirror pods, and the static pods with
// their latest status. Admission counts these, and the kubelet's API
// serves them.
func (m *Manager) Pods() []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range m.cfg.Pods.List(nil) {
		if !staticpods.IsMirrorPod(p) {
			out = append(out, p)
		}
	}
	m.mu.Lock()
	static := make([]*corev1.Pod, 0, len(m.static))
	for _, p := range m.static {
		static = append(static, p)
	}
	m.mu.Unlock()
	for _, p := range static {
		out = append(out, m.withStatus(p))
	}
	return out
}

// Pod is one of Pods by namespace and name: for a mirror pod's name, the
// static pod it reflects, whose containers are the ones that run.
func (m *Manager) Pod(namespace, name string) (*corev1.Pod, bool) {
	m.mu.Lock()
	p := m.staticNamed(namespace, name)
	m.mu.Unlock()
	if p != nil {
		return m.withStatus(p), true
	}
	p, err := m.cfg.Pods.Get(namespace, name)
	if err != nil || staticpods.IsMirrorPod(p) {
		return nil, false
	}
	return p, true
}

// withStatus is a static pod with the status last written to its mirror.
func (m *Manager) withStatus(p *corev1.Pod) *corev1.Pod {
	st := m.status.last(p.GetMetadata().GetUid())
	if st == nil {
		return p
	}
	c := proto.Clone(p).(*corev1.Pod)
	c.Status = st
	return c
}

// reconcileMirror keeps the static pod's mirror in the API as upstream's
// tryReconcileMirrorPods: one being deleted or of an older hash is deleted
// for good, and a missing one created. Failures wait for the next resync:
// the static pod runs whether or not the API is there.
func (w *worker) reconcileMirror(ctx context.Context, pod *corev1.Pod) {
	m := w.m
	log := m.log.With("pod", w.ns+"/"+w.name, "uid", w.uid)
	mirror, err := m.cfg.Pods.Get(w.ns, w.name)
	if err != nil {
		mirror = nil
	}
	if mirror != nil && !staticpods.IsMirrorPod(mirror) {
		log.Info("an API pod has the static pod's name; no mirror pod for it")
		return
	}
	deleted := false
	if mirror != nil && (mirror.GetMetadata().GetDeletionTimestamp() != nil || !staticpods.IsMirrorPodOf(mirror, pod)) {
		ok, err := m.mirrors.Delete(ctx, w.ns, w.name, mirror.GetMetadata().GetUid())
		if err != nil {
			log.Info("deleting an outdated mirror pod", "err", err)
			return
		}
		if ok {
			log.Info("deleted the mirror pod as it did not match the static pod")
		}
		deleted = ok
	}
	if mirror == nil || deleted {
		if err := m.mirrors.Create(ctx, pod); err != nil {
			log.Info("creating the mirror pod", "err", err)
			return
		}
		log.Info("created the mirror pod of a static pod")
	}
}

// deleteMirror deletes the mirror of a static pod that stopped for good,
// if it is still this version's.
func (w *worker) deleteMirror(ctx context.Context, pod *corev1.Pod) {
	mirror, err := w.m.cfg.Pods.Get(w.ns, w.name)
	if err != nil || !staticpods.IsMirrorPodOf(mirror, pod) {
		return
	}
	if _, err := w.m.mirrors.Delete(ctx, w.ns, w.name, mirror.GetMetadata().GetUid()); err != nil {
		w.m.log.Info("deleting the mirror pod of a stopped static pod", "pod", w.ns+"/"+w.name, "err", err)
	}
}

// cleanupMirrors deletes mirror pods no static pod (running or stopping)
// has the name of, as upstream's deleteOrphanedMirrorPods: their manifest
// went while the kubelet was down, or deleting one failed.
func (m *Manager) cleanupMirrors(ctx context.Context) {
	m.mu.Lock()
	seen := m.staticSeen
	m.mu.Unlock()
	if !seen {
		return
	}
	for _, p := range m.cfg.Pods.List(nil) {
		md := p.GetMetadata()
		if !staticpods.IsMirrorPod(p) || (m.cfg.NodeName != "" && p.GetSpec().GetNodeName() != m.cfg.NodeName) {
			continue
		}
		m.mu.Lock()
		owned := m.staticNamed(md.GetNamespace(), md.GetName()) != nil
		for _, w := range m.workers {
			owned = owned || (w.static && w.ns == md.GetNamespace() && w.name == md.GetName())
		}
		m.mu.Unlock()
		if owned {
			continue
		}
		if ok, err := m.mirrors.Delete(ctx, md.GetNamespace(), md.GetName(), md.GetUid()); err != nil {
			m.log.Info("deleting an orphaned mirror pod", "pod", md.GetNamespace()+"/"+md.GetName(), "err", err)
		} else if ok {
			m.log.Info("deleted an orphaned mirror pod", "pod", md.GetNamespace()+"/"+md.GetName())
		}
	}
}
