// Package pods runs the node's pods: a worker goroutine per pod UID woken
// by the pod's informer events, the PLEG, probe results, a periodic resync
// and back-off expiry, as upstream's pod workers; each sync admits the pod,
// sets up its volumes, drives the runtime (kuberuntime) and writes the
// computed status only when it changed. Deleted pods are stopped within
// their grace period and then deleted for good (grace 0, UID precondition).
// Static pods (kubelet/internal/staticpods) run through the same workers,
// their status written to the mirror pods the workers keep in the API;
// mirror pods themselves are never run.
package pods

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/flowcontrol"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/kuberuntime"
	"skiff.dev/kubelet/internal/pleg"
	"skiff.dev/kubelet/internal/prober"
	"skiff.dev/kubelet/internal/staticpods"
	"skiff.dev/kubelet/internal/status"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/scheme"
)

// Volumes is what the pod workers need of the volume manager.
type Volumes interface {
	Setup(ctx context.Context, pod *corev1.Pod) error
	Mounts(pod *corev1.Pod, c *corev1.Container) ([]*runtimeapi.Mount, error)
	Teardown(podUID string) error
}

// Prober is what the pod workers need of the prober manager.
type Prober interface {
	AddPod(pod *corev1.Pod)
	UpdateContainer(podUID, container, containerID string, startedAt time.Time, podIP string)
	RemovePod(podUID string)
	Ready(podUID, container string) bool
	Started(podUID, container string) bool
	Liveness() <-chan prober.LivenessFailure
	Updates() <-chan string
}

// Cgroups is what the pod workers need of the pod cgroup manager
// (kubelet/internal/podcgroups).
type Cgroups interface {
	EnsurePod(pod *corev1.Pod) error
	RemovePod(uid string) error
	UpdateQoS(active []*corev1.Pod) error
	CleanupOrphans(known func(uid string) bool) error
}

// Config is the pod workers' collaborators. Hooks left nil do nothing.
type Config struct {
	Client   *client.Client
	NodeName string
	Runtime  cri.Runtime
	// Pods lists the node's pods (field selector spec.nodeName).
	Pods informers.Lister[*corev1.Pod]
	// HasSynced reports the pod informer's first list is in; until then
	// no sandbox is treated as orphaned. Nil means synced. Additive.
	HasSynced  func() bool
	Recorder   record.Recorder
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	RootDir    string
	PodLogsDir string
	// SandboxImage is containerd's (its sandbox_image setting); kept for
	// the image garbage collector not to remove it.
	SandboxImage string
	CgroupRoot   string

	Env          func(pod *corev1.Pod, c *corev1.Container) ([]*runtimeapi.KeyValue, error)
	Command      func(c *corev1.Container, env []*runtimeapi.KeyValue) (cmd, args []string)
	Volumes      Volumes
	DNS          func(pod *corev1.Pod) (*runtimeapi.DNSConfig, error)
	Hosts        func(pod *corev1.Pod, podIPs []string) []byte
	Status       func(in status.Input) *corev1.PodStatus
	Resources    func(pod *corev1.Pod, c *corev1.Container) *runtimeapi.LinuxContainerResources
	CgroupParent func(pod *corev1.Pod) string
	Admit        func(pod *corev1.Pod) (ok bool, reason, message string)
	Prober       Prober
	Now          func() time.Time

	// Additive to the contract.
	// Secret reads imagePullSecrets (nil: pulls are anonymous).
	Secret func(namespace, name string) (*corev1.Secret, error)
	// HostIPs are the node's addresses for status.hostIPs.
	HostIPs []string
	// CrashBackoff and ImageBackoff default to upstream's 10 s → 5 min.
	CrashBackoff, ImageBackoff kuberuntime.Backoff
	// RelistPeriod (1 s) and ResyncPeriod (10 s) are upstream's.
	RelistPeriod, ResyncPeriod time.Duration

	// Static carries the static pods (staticpods.Source.Updates), each
	// value the whole set replacing the last; nil if there is no such
	// source. They run as API pods do, but are never deleted through the
	// API and their status goes to their mirror pods, which the workers
	// keep in step.
	Static <-chan []*corev1.Pod
	// Node is the registered Node (nil before), whose UID mirror pods'
	// owner reference names; nil reads it through Client.
	Node func() *corev1.Node
	// Cgroups makes each pod's cgroup before its sandbox and removes it
	// once the pod is gone, and keeps the QoS tiers' shares in step with
	// the pods; nil manages no cgroups (hollow nodes).
	Cgroups Cgroups
}

// Manager is the node's pod workers.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	rt     *kuberuntime.Manager
	pleg   *pleg.PLEG
	status *statusManager

	mu      sync.Mutex
	workers map[string]*worker
	// liveness holds container IDs whose liveness probe failed.
	liveness map[string]bool
	// finished holds UIDs terminated for good: late informer events about
	// them start no worker.
	finished map[string]time.Time
	// static holds the static pods by UID, the newest set of Static.
	static map[string]*corev1.Pod
	// staticSeen says the first set is in: until then neither mirror pods
	// nor sandboxes of static pods are orphans.
	staticSeen bool
	mirrors    *staticpods.Mirrors
	ctx        context.Context
	wg         sync.WaitGroup
}

// New checks cfg and returns a Manager; Run starts it.
func New(cfg Config) (*Manager, error) {
	if cfg.Client == nil || cfg.Runtime == nil || cfg.Pods == nil {
		return nil, errors.New("pods: Client, Runtime and Pods are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Recorder == nil {
		cfg.Recorder = &record.FakeRecorder{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Status == nil {
		cfg.Status = status.Compute
	}
	if cfg.RelistPeriod <= 0 {
		cfg.RelistPeriod = time.Second
	}
	if cfg.ResyncPeriod <= 0 {
		cfg.ResyncPeriod = 10 * time.Second
	}
	if cfg.CrashBackoff == nil {
		cfg.CrashBackoff = flowcontrol.NewBackOff(10*time.Second, 300*time.Second)
	}
	o := kuberuntime.Options{
		Runtime: cfg.Runtime, Recorder: cfg.Recorder, Logger: cfg.Logger,
		PodLogsDir: cfg.PodLogsDir, RootDir: cfg.RootDir,
		Env: cfg.Env, Command: cfg.Command, DNS: cfg.DNS, Hosts: cfg.Hosts,
		Resources: cfg.Resources, CgroupParent: cfg.CgroupParent, Secret: cfg.Secret,
		CrashBackoff: cfg.CrashBackoff, ImageBackoff: cfg.ImageBackoff, Now: cfg.Now,
	}
	if cfg.Volumes != nil {
		o.Mounts = cfg.Volumes.Mounts
	}
	m := &Manager{
		cfg:      cfg,
		log:      cfg.Logger,
		rt:       kuberuntime.New(o),
		pleg:     pleg.New(cfg.Runtime, cfg.RelistPeriod, cfg.Logger),
		workers:  map[string]*worker{},
		liveness: map[string]bool{},
		finished: map[string]time.Time{},
		static:   map[string]*corev1.Pod{},
		// Without a static source every mirror pod is an orphan.
		staticSeen: cfg.Static == nil,
		mirrors:    &staticpods.Mirrors{Client: cfg.Client, NodeName: cfg.NodeName, Node: cfg.Node},
	}
	m.status = &statusManager{client: cfg.Client, pods: cfg.Pods, log: cfg.Logger, latest: map[string]*corev1.PodStatus{}, written: map[string]written{},
		static: m.isStatic}
	return m, nil
}

// Cache is the PLEG's runtime status per pod UID (for /pods and stats).
func (m *Manager) Cache() *pleg.Cache { return m.pleg.Cache() }

// Healthy reports whether the PLEG relists (upstream's PLEG health check).
func (m *Manager) Healthy() bool { return m.pleg.Healthy() }

// Handler is for the node's pod informer.
func (m *Manager) Handler() informer.Handler {
	return informer.Handler{
		OnAdd:    func(obj scheme.Object) { m.podChanged(obj) },
		OnUpdate: func(_, obj scheme.Object) { m.podChanged(obj) },
		OnDelete: func(obj scheme.Object) { m.podChanged(obj) },
	}
}

func (m *Manager) podChanged(obj scheme.Object) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if n := pod.GetSpec().GetNodeName(); n != "" && m.cfg.NodeName != "" && n != m.cfg.NodeName {
		return
	}
	if staticpods.IsMirrorPod(pod) {
		m.mirrorChanged(pod)
		return
	}
	m.wake(pod.GetMetadata().GetUid(), pod)
}

// wake starts the pod's worker if needed and asks it to sync; pod, when
// not nil, is the newest state known for it.
func (m *Manager) wake(uid string, pod *corev1.Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.workers[uid]
	if w == nil {
		if _, done := m.finished[uid]; pod == nil || m.ctx == nil || done {
			return
		}
		w = newWorker(m, pod)
		m.workers[uid] = w
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			w.run(m.ctx)
		}()
	} else if pod != nil {
		w.setPod(pod)
	}
	w.kick()
}

// finish marks uid terminated; entries older than an hour are dropped.
func (m *Manager) finish(uid string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for u, t := range m.finished {
		if now.Sub(t) > time.Hour {
			delete(m.finished, u)
		}
	}
	m.finished[uid] = now
}

func (m *Manager) removeWorker(uid string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.workers[uid]
	delete(m.workers, uid)
	if w == nil || !w.static {
		return
	}
	// A newer version of this static pod waits for this one to be gone.
	for _, o := range m.workers {
		if o.ns == w.ns && o.name == w.name {
			o.kick()
		}
	}
}

// Run drives the workers until ctx ends, then waits for them.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	go m.pleg.Run(ctx)

	var liveness <-chan prober.LivenessFailure
	var updates <-chan string
	if m.cfg.Prober != nil {
		liveness, updates = m.cfg.Prober.Liveness(), m.cfg.Prober.Updates()
	}
	// Static pods already read and pods the lister already holds start at
	// once, not at the first resync.
	select {
	case pods := <-m.cfg.Static:
		m.setStatic(pods)
	default:
	}
	m.resync(ctx)
	t := time.NewTicker(m.cfg.ResyncPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.wg.Wait()
			return nil
		case e := <-m.pleg.Events():
			m.wake(e.ID, nil)
		case f, ok := <-liveness:
			if !ok {
				liveness = nil
				continue
			}
			m.mu.Lock()
			m.liveness[f.ContainerID] = true
			m.mu.Unlock()
			m.wake(f.PodUID, nil)
		case uid, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			m.wake(uid, nil)
		case pods := <-m.cfg.Static:
			m.setStatic(pods)
		case <-t.C:
			m.resync(ctx)
		}
	}
}

// resync wakes every pod and cleans up runtime pods nobody owns (left by
// a previous kubelet, or deleted while this one was down), as upstream's
// HandlePodCleanups.
func (m *Manager) resync(ctx context.Context) {
	for _, p := range m.cfg.Pods.List(nil) {
		if n := p.GetSpec().GetNodeName(); m.cfg.NodeName != "" && n != m.cfg.NodeName {
			continue
		}
		if staticpods.IsMirrorPod(p) {
			continue
		}
		m.wake(p.GetMetadata().GetUid(), p)
	}
	m.mu.Lock()
	for _, w := range m.workers {
		w.kick()
	}
	m.mu.Unlock()
	if m.cfg.HasSynced != nil && !m.cfg.HasSynced() {
		return
	}
	m.updateQoS("")
	m.cleanupOrphans(ctx)
	m.cleanupCgroups(ctx)
	m.cleanupMirrors(ctx)
}

// activePods are the node's pods that may have containers running
// (upstream's GetActivePods) but the one being removed, if any.
func (m *Manager) activePods(except string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range m.Pods() {
		if n := p.GetSpec().GetNodeName(); m.cfg.NodeName != "" && n != "" && n != m.cfg.NodeName {
			continue
		}
		ph := p.GetStatus().GetPhase()
		if p.GetMetadata().GetUid() == except || ph == "Succeeded" || ph == "Failed" {
			continue
		}
		out = append(out, p)
	}
	return out
}

// updateQoS is upstream's UpdateQOSCgroups: at every resync, and as pods
// start and go.
func (m *Manager) updateQoS(except string) {
	if m.cfg.Cgroups == nil {
		return
	}
	if err := m.cfg.Cgroups.UpdateQoS(m.activePods(except)); err != nil {
		m.log.Info("Failed to update the QoS cgroups", "err", err)
	}
}

// cleanupCgroups removes the cgroups of pods that are neither a worker's
// nor static nor still in the runtime (cleanupOrphans stops those first):
// upstream's cleanupOrphanedPodCgroups.
func (m *Manager) cleanupCgroups(ctx context.Context) {
	if m.cfg.Cgroups == nil {
		return
	}
	m.mu.Lock()
	staticSeen := m.staticSeen
	m.mu.Unlock()
	if !staticSeen {
		return
	}
	sandboxes, err := m.cfg.Runtime.ListPodSandbox(ctx, nil)
	if err != nil {
		m.log.Info("listing sandboxes for cgroup clean-up", "err", err)
		return
	}
	inRuntime := map[string]bool{}
	for _, sb := range sandboxes {
		inRuntime[sb.GetLabels()[kuberuntime.LabelPodUID]] = true
	}
	known := func(uid string) bool {
		if inRuntime[uid] {
			return true
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		_, working := m.workers[uid]
		_, static := m.static[uid]
		return working || static
	}
	if err := m.cfg.Cgroups.CleanupOrphans(known); err != nil {
		m.log.Info("cleaning up orphaned pod cgroups", "err", err)
	}
}

func (m *Manager) cleanupOrphans(ctx context.Context) {
	sandboxes, err := m.cfg.Runtime.ListPodSandbox(ctx, nil)
	if err != nil {
		m.log.Info("listing sandboxes for clean-up", "err", err)
		return
	}
	known := map[string]bool{}
	for _, p := range m.cfg.Pods.List(nil) {
		known[p.GetMetadata().GetUid()] = true
	}
	m.mu.Lock()
	staticSeen := m.staticSeen
	for uid := range m.static {
		known[uid] = true
	}
	m.mu.Unlock()
	if !staticSeen {
		return
	}
	seen := map[string]bool{}
	for _, sb := range sandboxes {
		uid := sb.GetLabels()[kuberuntime.LabelPodUID]
		if uid == "" || known[uid] || seen[uid] {
			continue
		}
		seen[uid] = true
		m.mu.Lock()
		_, busy := m.workers[uid]
		m.mu.Unlock()
		if busy {
			continue
		}
		st, err := m.rt.Inspect(ctx, uid)
		if err != nil {
			continue
		}
		m.log.Info("stopping an orphaned pod", "uid", uid, "pod", st.Namespace+"/"+st.Name)
		grace := int64(2)
		if err := m.rt.KillPod(ctx, nil, st, &grace); err != nil {
			m.log.Info("stopping an orphaned pod", "uid", uid, "err", err)
			continue
		}
		if st, err = m.rt.Inspect(ctx, uid); err == nil {
			_ = m.rt.RemovePod(ctx, st)
		}
		if m.cfg.Volumes != nil {
			_ = m.cfg.Volumes.Teardown(uid)
		}
	}
}

// probes adapts the prober to kuberuntime for one pod.
type probes struct {
	m   *Manager
	uid string
}

func (p probes) LivenessFailed(id string) bool {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	return p.m.liveness[id]
}

func (p probes) Started(name string) bool {
	if p.m.cfg.Prober == nil {
		return true
	}
	return p.m.cfg.Prober.Started(p.uid, name)
}
