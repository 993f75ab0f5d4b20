package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client"
	"skiff.dev/client/component"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/kubelet/internal/cni"
	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/csi"
	"skiff.dev/kubelet/internal/eviction"
	"skiff.dev/kubelet/internal/imagegc"
	"skiff.dev/kubelet/internal/logrotate"
	"skiff.dev/kubelet/internal/nodestatus"
	"skiff.dev/kubelet/internal/pluginmanager"
	"skiff.dev/kubelet/internal/stats"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// Config is one kubelet: its flags' values and what Run connects to from
// them, so an embedder (hollow nodes, integration tests) brings its own
// client and runtime.
type Config struct {
	Options Options
	// NodeName is the node's name (Options.NodeName() if empty).
	NodeName string
	Client   *client.Client
	Runtime  cri.Runtime
	// Registry receives the kubelet's metrics (a new one if nil).
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// Machine fixes what the node reports of its host (hollow nodes);
	// nil reads the host.
	Machine func() (*nodestatus.Machine, error)
	// Importer loads --image-preload-dir's tarballs (ctr on the runtime's
	// socket if nil).
	Importer Importer
	// NoMounts keeps tmpfs volumes as plain directories (hollow nodes:
	// many in one process, without root, over a fake runtime).
	NoMounts bool
}

// Kubelet runs one node: its registration, status and Lease, its pods'
// informer and workers, events, and its CNI configuration.
type Kubelet struct {
	cfg         Config
	log         *slog.Logger
	nodeName    string
	broadcaster *record.Broadcaster
	recorder    record.Recorder
	imageGC     *imagegc.Manager
	logRotation *logrotate.Manager
	// eviction is nil on a node whose Machine the embedder fixes (hollow
	// nodes): the host's memory and disks are not that node's.
	eviction  *eviction.Manager
	status    *nodestatus.Manager
	pods      *informer.Informer
	podLister informers.Lister[*corev1.Pod]
	podCIDRs  chan []string
	workers   podWorkers // nil until the pods manager is wired (see pods.go)
	// csiPlugins are the node's CSI drivers, plugins the manager of the
	// plugin registry (nil on hollow nodes); see storage.go.
	csiPlugins *csi.Plugins
	plugins    *pluginmanager.Manager
}

// New builds a kubelet from cfg; Run runs it.
func New(cfg Config) (*Kubelet, error) {
	if cfg.Client == nil || cfg.Runtime == nil {
		return nil, fmt.Errorf("kubelet: a client and a runtime are required")
	}
	if err := cfg.Options.Validate(); err != nil {
		return nil, err
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	k := &Kubelet{cfg: cfg, log: cfg.Logger, nodeName: cfg.NodeName, podCIDRs: make(chan []string, 1)}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	if k.nodeName == "" {
		var err error
		if k.nodeName, err = cfg.Options.NodeName(); err != nil {
			return nil, err
		}
	}
	o := cfg.Options
	k.broadcaster = record.NewBroadcaster(cfg.Client, record.Options{Logger: k.log, Registerer: cfg.Registry, Host: k.nodeName})
	k.recorder = k.broadcaster.NewRecorder("kubelet")
	var err error
	if k.imageGC, err = imagegc.New(imagegc.Config{Runtime: cfg.Runtime,
		HighThresholdPercent: o.ImageGCHighThresholdPercent, LowThresholdPercent: o.ImageGCLowThresholdPercent,
		MinAge: o.ImageMinimumGCAge, MaxAge: o.ImageMaximumGCAge, SandboxImage: o.PodInfraContainerImage,
		NodeName: k.nodeName, Recorder: k.recorder, Registerer: cfg.Registry, Logger: k.log.With("component", "imagegc")}); err != nil {
		return nil, err
	}
	if k.logRotation, err = logrotate.New(logrotate.Config{Runtime: cfg.Runtime, MaxSize: o.ContainerLogMaxSize,
		MaxFiles: o.ContainerLogMaxFiles, Interval: o.ContainerLogMonitorInterval, Logger: k.log.With("component", "logrotate")}); err != nil {
		return nil, err
	}

	nodeName := prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubelet_node_name", Help: "The node's name. The count is always 1.",
		ConstLabels: prometheus.Labels{"node": k.nodeName}})
	nodeName.Set(1)
	if err := cfg.Registry.Register(nodeName); err != nil {
		return nil, err
	}

	thresholds, err := o.evictionThresholds()
	if err != nil {
		return nil, err
	}
	if cfg.Machine == nil {
		if k.eviction, err = k.newEviction(thresholds); err != nil {
			return nil, err
		}
	}
	k.status, err = nodestatus.New(nodestatus.Config{
		Client: cfg.Client, NodeName: k.nodeName, NodeIPs: o.NodeIPs, Runtime: cfg.Runtime,
		SystemReserved: reserved(o.SystemReserved), KubeReserved: reserved(o.KubeReserved),
		MaxPods: o.MaxPods, KubeletPort: o.Port, RootDir: o.RootDir,
		LeaseDuration:         secondsDuration(o.NodeLeaseDurationSeconds),
		StatusUpdateFrequency: o.NodeStatusUpdateFrequency, StatusReportFrequency: o.NodeStatusReportFrequency,
		Machine: cfg.Machine, OnNode: k.onNode, Recorder: k.recorder, Logger: k.log.With("component", "nodestatus"),
		Pressure: k.pressureFunc(),
		EvictionReserved: func(capacity map[string]resource.Quantity) map[string]resource.Quantity {
			return eviction.HardReserved(thresholds, capacity)
		},
	})
	if err != nil {
		return nil, err
	}

	// Only this node's pods: the shared factory lists every namespace
	// without a field selector, so this informer is made by hand.
	podKind, _ := scheme.ForMessage(&corev1.Pod{})
	k.pods = informer.New(cfg.Client.Resource(podKind, ""), informer.Options{
		FieldSelector: "spec.nodeName=" + k.nodeName, Logger: k.log.With("component", "pod-informer")})
	k.podLister = informers.NewLister[*corev1.Pod](k.pods)

	k.newStorage()
	if k.workers, err = newPodWorkers(k); err != nil {
		return nil, err
	}
	if k.workers != nil {
		k.pods.AddHandler(k.workers.Handler())
	}
	return k, nil
}

// HealthChecks are the kubelet's /healthz checks: the pod lifecycle
// event generator relists (upstream's PLEG health).
func (k *Kubelet) HealthChecks() map[string]func(context.Context) error {
	h, ok := k.workers.(interface{ Healthy() bool })
	if !ok {
		return nil
	}
	return map[string]func(context.Context) error{"pleg": func(context.Context) error {
		if !h.Healthy() {
			return errors.New("PLEG is not healthy: the runtime has not been relisted recently")
		}
		return nil
	}}
}

// Node is the node's latest known Node object (nil before registration).
func (k *Kubelet) Node() *corev1.Node { return k.status.Node() }

// Pods reads the node's pods from the informer's cache.
func (k *Kubelet) Pods() informers.Lister[*corev1.Pod] { return k.podLister }

// Run runs the kubelet until ctx ends or a part fails.
func (k *Kubelet) Run(ctx context.Context) error {
	k.log.Info("Starting kubelet", "node", k.nodeName)
	k.recorder.Event(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: k.nodeName, Uid: k.nodeName}}, record.Normal, "Starting", "Starting kubelet.")
	g, _ := component.NewGroup(ctx)
	g.Go("events", k.broadcaster.Run)
	g.Go("nodestatus", k.status.Run)
	if k.eviction != nil {
		g.Go("eviction", k.eviction.Run)
	}
	g.Go("cni", k.writeCNI)
	preloaded := make(chan struct{})
	g.Go("image-preload", func(ctx context.Context) error {
		if k.cfg.Options.ImagePreloadDir == "" {
			close(preloaded)
			<-ctx.Done()
			return nil
		}
		imp := k.cfg.Importer
		if imp == nil {
			sock, _ := socketPath(k.cfg.Options.ContainerRuntimeEndpoint)
			imp = CtrImporter(sock)
		}
		// A tarball that fails to import is logged, not fatal: pods of
		// other images still run, and pods of that one report their pull.
		if err := preloadImages(ctx, k.cfg.Options.ImagePreloadDir, k.cfg.Runtime, imp, k.log); err != nil {
			k.log.Error("Preloading images", "dir", k.cfg.Options.ImagePreloadDir, "err", err)
		}
		close(preloaded)
		<-ctx.Done()
		return nil
	})
	g.Go("logrotate", k.logRotation.Run)
	g.Go("imagegc", func(ctx context.Context) error {
		// Preloaded images must be in before the first pass judges them.
		select {
		case <-preloaded:
		case <-ctx.Done():
			return nil
		}
		return k.imageGC.Run(ctx)
	})
	g.Go("pod-informer", k.pods.Run)
	k.runStorage(g)
	if k.workers != nil {
		g.Go("pods", func(ctx context.Context) error {
			// Sandboxes need the pause image the preload brings, and
			// admission the Node's allocatable: the registered Node's, or
			// the one computed locally while the apiserver is away, so
			// static pods run without it.
			for _, ch := range []<-chan struct{}{preloaded, k.status.Known()} {
				select {
				case <-ch:
				case <-ctx.Done():
					return nil
				}
			}
			return k.workers.Run(ctx)
		})
	}
	return g.Wait()
}

// onNode hands the node's podCIDRs to the CNI writer, without blocking
// the status manager: only the newest value matters.
func (k *Kubelet) onNode(n *corev1.Node) {
	cidrs := n.GetSpec().GetPodCIDRs()
	if len(cidrs) == 0 && n.GetSpec().GetPodCIDR() != "" {
		cidrs = []string{n.GetSpec().GetPodCIDR()}
	}
	if len(cidrs) == 0 {
		return
	}
	select {
	case <-k.podCIDRs:
	default:
	}
	k.podCIDRs <- cidrs
}

// writeCNI writes the node's conflist for its podCIDRs whenever they are
// first known or change (upstream's updatePodCIDR, which hands them to the
// runtime; containerd 1.6 reads a conflist from its conf_dir instead). A
// failed write is retried every 10 s; meanwhile the node stays NotReady
// with the runtime's NetworkReady=false message.
func (k *Kubelet) writeCNI(ctx context.Context) error {
	var pending, written []string
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case pending = <-k.podCIDRs:
		case <-retry:
		}
		retry = nil
		if len(pending) == 0 || slices.Equal(pending, written) {
			continue
		}
		path, err := cni.Write(k.cfg.Options.CNIConfDir, cni.Options{
			PodCIDRs: pending, DataDir: filepath.Join(k.cfg.Options.RootDir, "cni", "networks"), BinDir: k.cfg.Options.CNIBinDir,
		})
		if err != nil {
			k.log.Error("Writing the CNI configuration", "podCIDRs", pending, "err", err)
			retry = time.After(10 * time.Second)
			continue
		}
		written = pending
		k.log.Info("Wrote the CNI configuration", "path", path, "podCIDRs", written)
		err = k.cfg.Runtime.UpdateRuntimeConfig(ctx, &runtimeapi.RuntimeConfig{
			NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: strings.Join(written, ",")}})
		if err != nil {
			k.log.Debug("UpdateRuntimeConfig", "err", err)
		}
	}
}

// newEviction is the eviction manager over this host: the root memory
// cgroup, statfs of --root-dir and of the runtime's image filesystem, the
// process table, the pods' usage from the runtime's stats; it reclaims
// images through the image collector and evicts through the pod workers.
func (k *Kubelet) newEviction(thresholds []eviction.Threshold) (*eviction.Manager, error) {
	o := k.cfg.Options
	summary := stats.New(k.cfg.Runtime, k.nodePods, k.nodeName).WithDirs(o.RootDir, o.PodLogsDir)
	return eviction.New(eviction.Config{
		Thresholds: thresholds, PressureTransitionPeriod: o.EvictionPressureTransitionPeriod,
		MaxPodGracePeriodSeconds: int64(o.EvictionMaxPodGracePeriod),
		Provider:                 eviction.NewHost(o.RootDir, k.cfg.Runtime, summary),
		ActivePods:               k.nodePods,
		Evict: func(ctx context.Context, pod *corev1.Pod, reason, message string, grace *int64) error {
			w, ok := k.workers.(*podParts)
			if !ok {
				return errors.New("no pod workers")
			}
			return w.Evict(ctx, pod.GetMetadata().GetUid(), reason, message, grace)
		},
		ImageGC:  k.imageGC,
		NodeName: k.nodeName, Recorder: k.recorder, Registerer: k.cfg.Registry,
		Logger: k.log.With("component", "eviction"),
	})
}

// pressureFunc is what the node's status and admission read of the
// eviction manager; nil without one.
func (k *Kubelet) pressureFunc() func() (memory, disk, pid bool) {
	if k.eviction == nil {
		return nil
	}
	return k.eviction.Pressure
}
