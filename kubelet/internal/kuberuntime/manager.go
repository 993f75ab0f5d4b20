// Package kuberuntime turns a pod's spec and the runtime's state into CRI
// calls, as upstream's kuberuntime manager: computePodActions decides what
// to create, start and kill; SyncPod and KillPod do it.
package kuberuntime

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"k8s.io/client-go/util/flowcontrol"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client/record"
	"skiff.dev/kubelet/internal/cri"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/scheme"
)

// Backoff is the part of client-go's flowcontrol.Backoff the restart and
// image-pull back-offs need; keys are per pod and container (or image).
type Backoff interface {
	IsInBackOffSince(id string, eventTime time.Time) bool
	IsInBackOffSinceUpdate(id string, eventTime time.Time) bool
	Next(id string, eventTime time.Time)
	Get(id string) time.Duration
}

// Options are the manager's collaborators. Hooks left nil do nothing.
type Options struct {
	Runtime  cri.Runtime
	Recorder record.Recorder
	Logger   *slog.Logger
	// PodLogsDir holds <ns>_<name>_<uid>/<container>/<restart>.log.
	PodLogsDir string
	// RootDir is the kubelet's --root-dir: pods/<uid>/etc-hosts lives there.
	RootDir string
	// RuntimeHandler is passed to RunPodSandbox ("" is the default runc).
	RuntimeHandler string

	Env     func(pod *corev1.Pod, c *corev1.Container) ([]*runtimeapi.KeyValue, error)
	Command func(c *corev1.Container, env []*runtimeapi.KeyValue) (cmd, args []string)
	Mounts  func(pod *corev1.Pod, c *corev1.Container) ([]*runtimeapi.Mount, error)
	DNS     func(pod *corev1.Pod) (*runtimeapi.DNSConfig, error)
	// Hosts is the pod's /etc/hosts, written under RootDir and mounted.
	Hosts     func(pod *corev1.Pod, podIPs []string) []byte
	Resources func(pod *corev1.Pod, c *corev1.Container) *runtimeapi.LinuxContainerResources
	// CgroupParent is the pod's cgroup (cgroupfs path).
	CgroupParent func(pod *corev1.Pod) string
	// Secret reads image pull secrets.
	Secret func(namespace, name string) (*corev1.Secret, error)

	// CrashBackoff delays restarts of failed containers (default: 10 s
	// doubling to 5 min, forgotten after 10 min, as upstream).
	CrashBackoff Backoff
	// ImageBackoff delays pulls that failed (default as CrashBackoff).
	ImageBackoff Backoff
	// HTTPClient runs httpGet lifecycle hooks.
	HTTPClient *http.Client
	Now        func() time.Time
}

// Manager runs pods through the CRI.
type Manager struct {
	o Options
}

// New returns a Manager.
func New(o Options) *Manager {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Recorder == nil {
		o.Recorder = discard{}
	}
	if o.CrashBackoff == nil {
		o.CrashBackoff = flowcontrol.NewBackOff(10*time.Second, 300*time.Second)
	}
	if o.ImageBackoff == nil {
		o.ImageBackoff = flowcontrol.NewBackOff(10*time.Second, 300*time.Second)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Manager{o: o}
}

// Runtime is the CRI runtime the manager drives.
func (m *Manager) Runtime() cri.Runtime { return m.o.Runtime }

// Inspect is Inspect on the manager's runtime.
func (m *Manager) Inspect(ctx context.Context, uid string) (*PodStatus, error) {
	return Inspect(ctx, m.o.Runtime, uid, m.o.Now())
}

type discard struct{}

func (discard) Event(scheme.Object, string, string, string)          {}
func (discard) Eventf(scheme.Object, string, string, string, ...any) {}
