// Package nodestatus is the kubelet's side of its Node: registration,
// the Node's status and its Lease heartbeat (upstream's
// kubelet_node_status.go, pkg/kubelet/nodestatus setters and the node
// lease controller).
//
// Every --node-status-update-frequency the status is computed from the
// machine and the runtime; it is written (UpdateStatus) only when it
// differs from the Node as last seen, conditions' heartbeat times aside, or
// when --node-status-report-frequency has passed since the last write. The
// Lease in kube-node-lease is renewed every quarter of its duration. So an
// idle node writes its Lease and little else.
package nodestatus

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/resource"
	cri "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/client/record"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Runtime is what the node's status reads of the CRI runtime; a
// kubelet/internal/cri.Runtime is one.
type Runtime interface {
	Version(ctx context.Context, apiVersion string) (*runtimeapi.VersionResponse, error)
	Status(ctx context.Context, verbose bool) (*runtimeapi.StatusResponse, error)
	ListImages(ctx context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error)
}

// A CRI runtime and image service together are a Runtime.
var _ Runtime = (interface {
	cri.RuntimeService
	cri.ImageManagerService
})(nil)

// Config wires a Manager.
type Config struct {
	Client   *client.Client
	NodeName string
	// NodeIPs are --node-ip; empty means HostIP().
	NodeIPs []string
	Runtime Runtime
	// SystemReserved and KubeReserved are subtracted from capacity.
	SystemReserved, KubeReserved map[string]*metav1.Quantity
	MaxPods                      int   // --max-pods (110 if 0)
	KubeletPort                  int32 // --port, the daemon endpoint (10250 if 0)
	RootDir                      string

	LeaseDuration         time.Duration // --node-lease-duration-seconds (40 s if 0)
	StatusUpdateFrequency time.Duration // --node-status-update-frequency (10 s if 0)
	StatusReportFrequency time.Duration // --node-status-report-frequency (5 min if 0)

	// Machine reads the host (ReadMachine(RootDir) if nil); read once.
	Machine func() (*Machine, error)
	// Pressure says which of memory, disk and PIDs the eviction manager
	// finds the node short of, for the MemoryPressure, DiskPressure and
	// PIDPressure conditions; nil is never (hollow nodes).
	Pressure func() (memory, disk, pid bool)
	// EvictionReserved is what the hard eviction thresholds take from
	// allocatable for a capacity; nil is upstream's default thresholds'
	// share (memory.available<100Mi, nodefs.available<10%).
	EvictionReserved func(capacity map[string]resource.Quantity) map[string]resource.Quantity
	// OnNode is called with the Node whenever this manager learns a newer
	// one (for its podCIDRs); it must not block or modify the node.
	OnNode   func(*corev1.Node)
	Recorder record.Recorder
	Logger   *slog.Logger
	// Clock times heartbeats and loops (the real clock if nil).
	Clock clock.WithTicker
}

// Manager registers the node and keeps its status and Lease fresh.
type Manager struct {
	cfg                          Config
	log                          *slog.Logger
	clock                        clock.WithTicker
	nodes                        *client.Typed[*corev1.Node]
	systemReserved, kubeReserved map[string]resource.Quantity
	informer                     *informer.Informer

	mu         sync.Mutex
	machine    *Machine
	node       *corev1.Node // newest known
	lastReport time.Time    // last status write
	lease      *coordinationv1.Lease
	// local is the Node as this kubelet computes it before it has one
	// from the API (upstream's initialNode): static pods are admitted
	// against it while the apiserver is unreachable.
	local      *corev1.Node
	known      chan struct{} // closed once local is set
	registered chan struct{}
}

// New returns a Manager; Run starts it.
func New(cfg Config) (*Manager, error) {
	if cfg.MaxPods == 0 {
		cfg.MaxPods = 110
	}
	if cfg.KubeletPort == 0 {
		cfg.KubeletPort = 10250
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = 40 * time.Second
	}
	if cfg.StatusUpdateFrequency == 0 {
		cfg.StatusUpdateFrequency = 10 * time.Second
	}
	if cfg.StatusReportFrequency == 0 {
		cfg.StatusReportFrequency = 5 * time.Minute
	}
	if cfg.Machine == nil {
		cfg.Machine = func() (*Machine, error) { return ReadMachine(cfg.RootDir) }
	}
	if cfg.Recorder == nil {
		cfg.Recorder = &record.FakeRecorder{}
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, nodes: client.For[*corev1.Node](cfg.Client, ""),
		known: make(chan struct{}), registered: make(chan struct{})}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.clock == nil {
		m.clock = clock.RealClock{}
	}
	var err error
	if m.systemReserved, err = fromProto(cfg.SystemReserved); err != nil {
		return nil, fmt.Errorf("system reserved: %w", err)
	}
	if m.kubeReserved, err = fromProto(cfg.KubeReserved); err != nil {
		return nil, fmt.Errorf("kube reserved: %w", err)
	}
	nodeKind, _ := scheme.ForMessage(&corev1.Node{})
	m.informer = informer.New(cfg.Client.Resource(nodeKind, ""), informer.Options{
		FieldSelector: "metadata.name=" + cfg.NodeName, Logger: m.log})
	m.informer.AddHandler(informer.Handler{
		OnAdd:    func(o scheme.Object) { m.observe(o.(*corev1.Node)) },
		OnUpdate: func(_, o scheme.Object) { m.observe(o.(*corev1.Node)) },
	})
	return m, nil
}

// Node returns the newest Node this manager wrote or saw, nil before
// registration. Callers must not modify it.
func (m *Manager) Node() *corev1.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.node
}

// Registered is closed once the node is registered.
func (m *Manager) Registered() <-chan struct{} { return m.registered }

// Known is closed once NodeAnyway has a Node to return: the machine and
// the runtime have been read, registered or not.
func (m *Manager) Known() <-chan struct{} { return m.known }

// NodeAnyway is upstream's getNodeAnyWay: the Node from the API when there
// is one, else the one computed locally at start, so that pods (static
// pods above all) are admitted without an apiserver. Nil before Known.
// Callers must not modify it.
func (m *Manager) NodeAnyway() *corev1.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.node != nil {
		return m.node
	}
	return m.local
}

// observe keeps n if it is newer than what is known.
func (m *Manager) observe(n *corev1.Node) {
	m.mu.Lock()
	if !newer(n, m.node) {
		m.mu.Unlock()
		return
	}
	m.node = n
	m.mu.Unlock()
	if m.cfg.OnNode != nil {
		m.cfg.OnNode(n)
	}
}

// newer compares resourceVersions, which Skiff's apiserver takes from
// etcd's revision: numbers that only grow.
func newer(a, b *corev1.Node) bool {
	if b == nil {
		return true
	}
	ra, errA := strconv.ParseUint(a.GetMetadata().GetResourceVersion(), 10, 64)
	rb, errB := strconv.ParseUint(b.GetMetadata().GetResourceVersion(), 10, 64)
	if errA != nil || errB != nil {
		return true
	}
	return ra > rb
}

// Run registers the node, then renews its Lease and updates its status
// until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	if err := m.loadMachine(); err != nil {
		return err
	}
	m.computeLocal(ctx)

	// Upstream's registration backoff: 100 ms doubling to 7 s.
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 7*time.Second) {
		err := m.register(ctx)
		if err == nil {
			break
		}
		m.log.Error("Unable to register node with API server", "node", m.cfg.NodeName, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-m.clock.After(delay):
		}
	}
	m.log.Info("Successfully registered node", "node", m.cfg.NodeName)
	close(m.registered)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := m.informer.Run(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("Node informer ended", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		m.every(ctx, m.cfg.LeaseDuration/4, func() {
			if err := m.renewLease(ctx); err != nil && ctx.Err() == nil {
				m.log.Error("Failed to update lease", "node", m.cfg.NodeName, "err", err)
			}
		})
	}()
	m.every(ctx, m.cfg.StatusUpdateFrequency, func() {
		if _, err := m.syncStatus(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("Unable to update node status", "node", m.cfg.NodeName, "err", err)
		}
	})
	wg.Wait()
	return nil
}

func (m *Manager) loadMachine() error {
	machine, err := m.cfg.Machine()
	if err != nil {
		return fmt.Errorf("reading the machine: %w", err)
	}
	m.mu.Lock()
	m.machine = machine
	m.mu.Unlock()
	return nil
}

// every runs fn now and then every period until ctx ends.
func (m *Manager) every(ctx context.Context, period time.Duration, fn func()) {
	t := m.clock.NewTicker(period)
	defer t.Stop()
	for {
		fn()
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// observeNode reads what the status is computed from. A runtime that does not
// answer makes the node NotReady rather than stopping the heartbeat.
func (m *Manager) observeNode(ctx context.Context) observed {
	m.mu.Lock()
	o := observed{machine: m.machine, now: m.clock.Now()}
	m.mu.Unlock()
	o.addresses = m.cfg.NodeIPs
	if len(o.addresses) == 0 {
		if ip, err := HostIP(); err == nil {
			o.addresses = []string{ip}
		} else {
			m.log.Error("Failed to find the node's address", "err", err)
		}
	}
	var err error
	if o.version, err = m.cfg.Runtime.Version(ctx, "v1"); err != nil {
		m.log.Error("Container runtime version check failed", "err", err)
	}
	st, err := m.cfg.Runtime.Status(ctx, false)
	o.runtimeErr = runtimeError(st, err)
	if o.images, err = m.cfg.Runtime.ListImages(ctx, nil); err != nil {
		m.log.Error("Failed to list images", "err", err)
	}
	return o
}

// computeLocal computes the local Node the first time it is called and
// returns it.
func (m *Manager) computeLocal(ctx context.Context) *corev1.Node {
	m.mu.Lock()
	local := m.local
	m.mu.Unlock()
	if local != nil {
		return local
	}
	local = m.initialNode(m.observeNode(ctx))
	m.mu.Lock()
	m.local = local
	m.mu.Unlock()
	close(m.known)
	return local
}

// initialNode is upstream's initialNode: labels, the attach/detach
// annotation and a full status.
func (m *Manager) initialNode(o observed) *corev1.Node {
	n := &corev1.Node{
		Metadata: &metav1.ObjectMeta{Name: m.cfg.NodeName, Labels: defaultLabels(m.cfg.NodeName),
			Annotations: map[string]string{annotationCMAD: "true"}},
		Spec: &corev1.NodeSpec{},
	}
	m.setStatus(n, o)
	return n
}

// register is upstream's tryRegisterWithAPIServer: create the Node, or
// when it exists reconcile the labels the kubelet owns on it.
func (m *Manager) register(ctx context.Context) error {
	o := m.observeNode(ctx)
	// From the local Node, so its conditions keep the transitions (and
	// the events) they had when it was computed.
	initial := proto.Clone(m.computeLocal(ctx)).(*corev1.Node)
	m.setStatus(initial, o)
	n, err := m.nodes.Create(ctx, initial)
	if err == nil {
		m.mu.Lock()
		m.lastReport = o.now
		m.mu.Unlock()
		m.observe(n)
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	existing, err := m.nodes.Get(ctx, m.cfg.NodeName)
	if err != nil {
		return err
	}
	updated := proto.Clone(existing).(*corev1.Node)
	md := updated.GetMetadata()
	changed := false
	if md.Labels == nil {
		md.Labels = map[string]string{}
	}
	for k, v := range defaultLabels(m.cfg.NodeName) {
		if md.Labels[k] != v {
			md.Labels[k], changed = v, true
		}
	}
	if md.Annotations[annotationCMAD] != "true" {
		if md.Annotations == nil {
			md.Annotations = map[string]string{}
		}
		md.Annotations[annotationCMAD], changed = "true", true
	}
	if changed {
		if existing, err = m.nodes.Update(ctx, updated); err != nil {
			return err
		}
	}
	m.observe(existing)
	return nil
}

// syncStatus computes the status and writes it when it changed or the
// report frequency passed; it says whether it wrote. Conflicts are retried
// against a fresh read, up to upstream's nodeStatusUpdateRetry (5) times.
func (m *Manager) syncStatus(ctx context.Context) (bool, error) {
	o := m.observeNode(ctx)
	var err error
	for range 5 {
		var wrote bool
		if wrote, err = m.tryUpdateStatus(ctx, o); err == nil {
			return wrote, nil
		}
		if !apierrors.IsConflict(err) {
			return false, err
		}
		fresh, gerr := m.nodes.Get(ctx, m.cfg.NodeName)
		if gerr != nil {
			return false, gerr
		}
		m.observe(fresh)
	}
	return false, err
}

func (m *Manager) tryUpdateStatus(ctx context.Context, o observed) (bool, error) {
	m.mu.Lock()
	base, last := m.node, m.lastReport
	m.mu.Unlock()
	if base == nil {
		return false, fmt.Errorf("node %q is not registered", m.cfg.NodeName)
	}
	n := proto.Clone(base).(*corev1.Node)
	m.setStatus(n, o)
	if !statusChanged(base.GetStatus(), n.GetStatus()) && o.now.Before(last.Add(m.cfg.StatusReportFrequency)) {
		return false, nil
	}
	written, err := m.nodes.UpdateStatus(ctx, n)
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	m.lastReport = o.now
	m.mu.Unlock()
	m.observe(written)
	return true, nil
}

func (m *Manager) event(node *corev1.Node, eventtype, reason, message string) {
	m.cfg.Recorder.Event(node, eventtype, reason, message)
}
