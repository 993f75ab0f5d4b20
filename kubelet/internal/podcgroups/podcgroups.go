// Package podcgroups is the kubelet's cgroup hierarchy with the cgroupfs
// driver, as upstream's container manager (pkg/kubelet/cm) lays it out:
//
//	<root>/kubepods                 node allocatable: memory limit, cpu shares
//	<root>/kubepods/pod<uid>        Guaranteed pods
//	<root>/kubepods/burstable       shares of its pods' cpu requests
//	<root>/kubepods/burstable/pod<uid>
//	<root>/kubepods/besteffort      2 shares
//	<root>/kubepods/besteffort/pod<uid>
//
// Each pod's cgroup is made with the pod's limits (PodResources) before its
// sandbox, so the runtime creates the containers' cgroups beneath it, and is
// removed, after killing what is left in it, once the pod is gone. The
// files are written by github.com/opencontainers/cgroups, upstream's library:
// its fs manager on cgroup v1 (every mounted controller, and the v2
// hierarchy too in hybrid mode), fs2 on the unified hierarchy.
package podcgroups

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/resource"

	"skiff.dev/kubelet/internal/qos"
	corev1 "skiff.dev/proto/api/core/v1"
)

// Config is a Manager's settings.
type Config struct {
	// Root is --cgroup-root, the parent of kubepods.
	Root string
	// PodPidsLimit is --pod-max-pids: each pod's pids limit; 0 or less
	// is none.
	PodPidsLimit int64
	Logger       *slog.Logger
	// Registerer receives kubelet_cgroup_manager_duration_seconds (none
	// if nil).
	Registerer prometheus.Registerer

	// newCgroup builds the library's manager of one cgroup (manager.New if
	// nil); tests point it at a fake cgroupfs.
	newCgroup func(*cgroups.Cgroup) (cgroups.Manager, error)
}

// Manager keeps the QoS and pod cgroups. Its methods may be called from
// many goroutines.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	v2       bool
	duration *prometheus.HistogramVec

	mu sync.Mutex
	// kubepods is what EnsureQoS holds the kubepods cgroup to, applied
	// again by every UpdateQoS: lowering a memory limit under the current
	// usage fails until pods leave or are evicted (upstream retries too).
	kubepods map[string]resource.Quantity
}

// New returns a Manager; nothing is written before EnsureQoS.
func New(cfg Config) (*Manager, error) {
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if !path.IsAbs(cfg.Root) {
		return nil, fmt.Errorf("podcgroups: the cgroup root %q is not absolute", cfg.Root)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, v2: cgroups.IsCgroup2UnifiedMode()}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.cfg.newCgroup == nil {
		m.cfg.newCgroup = manager.New
	}
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kubelet_cgroup_manager_duration_seconds",
		Help:    "Duration in seconds for cgroup manager operations. Broken down by method.",
		Buckets: prometheus.DefBuckets,
	}, []string{"operation_type"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(m.duration); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Manager) kubepodsPath() string { return path.Join(m.cfg.Root, "kubepods") }

func (m *Manager) qosPaths() []string {
	k := m.kubepodsPath()
	return []string{k, path.Join(k, "burstable"), path.Join(k, "besteffort")}
}

// PodCgroup is the pod's cgroup, its sandbox's CgroupParent.
func (m *Manager) PodCgroup(pod *corev1.Pod) string { return qos.PodCgroupParent(m.cfg.Root, pod) }

// EnsureQoS creates kubepods with limits (node allocatable when enforced,
// else capacity: the kernel's default 1024 shares would starve the pods
// beside system daemons), burstable and besteffort (2 shares), as
// upstream's container manager does at start. Burstable's shares follow
// its pods from the first UpdateQoS on.
func (m *Manager) EnsureQoS(kubepods map[string]resource.Quantity) error {
	if kubepods == nil {
		return errors.New("podcgroups: the node's capacity is not known yet")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kubepods = kubepods
	qp := m.qosPaths()
	if err := m.apply("create", qp[0], nodeResources(kubepods)); err != nil {
		if !m.exists(qp[0]) {
			return fmt.Errorf("creating the node allocatable cgroup %s: %w", qp[0], err)
		}
		// Pods of an earlier run may use more than a lowered limit: they
		// keep running, and every UpdateQoS tries again.
		m.log.Error("Failed to update Node Allocatable Limits", "cgroup", qp[0], "err", err)
	}
	if err := m.apply("create", qp[1], &cgroups.Resources{}); err != nil {
		return fmt.Errorf("creating the Burstable QoS cgroup %s: %w", qp[1], err)
	}
	if err := m.apply("create", qp[2], &cgroups.Resources{CpuShares: qos.MinShares}); err != nil {
		return fmt.Errorf("creating the BestEffort QoS cgroup %s: %w", qp[2], err)
	}
	return nil
}

// UpdateQoS is upstream's UpdateCgroups over the node's active pods (not
// terminated): burstable gets the shares of its pods' cpu requests,
// besteffort 2, and kubepods its limits again. Missing cgroups are made.
func (m *Manager) UpdateQoS(active []*corev1.Pod) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.kubepods == nil {
		return errors.New("podcgroups: UpdateQoS before EnsureQoS")
	}
	qp := m.qosPaths()
	return errors.Join(
		m.apply("update", qp[0], nodeResources(m.kubepods)),
		m.apply("update", qp[1], &cgroups.Resources{CpuShares: burstableShares(active)}),
		m.apply("update", qp[2], &cgroups.Resources{CpuShares: qos.MinShares}),
	)
}

// EnsurePod creates the pod's cgroup with PodResources unless it exists:
// upstream's podContainerManager.EnsureExists. The limits of an existing
// cgroup are left alone, as a pod's resources do not change.
func (m *Manager) EnsurePod(pod *corev1.Pod) error {
	p := m.PodCgroup(pod)
	if m.exists(p) {
		return nil
	}
	if err := m.apply("create", p, PodResources(pod, m.cfg.PodPidsLimit)); err != nil {
		return fmt.Errorf("creating the pod cgroup %s: %w", p, err)
	}
	return nil
}

// RemovePod kills whatever is left in the pod's cgroup (in whichever QoS
// tier it is) and removes it: upstream's podContainerManager.Destroy.
func (m *Manager) RemovePod(uid string) error {
	var errs []error
	for _, parent := range m.qosPaths() {
		p := path.Join(parent, "pod"+uid)
		if !m.existsAnywhere(p) {
			continue
		}
		if err := m.destroy(p); err != nil {
			errs = append(errs, fmt.Errorf("removing the pod cgroup %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// CleanupOrphans removes the pod cgroups under kubepods whose pod the
// kubelet no longer knows (upstream's cleanupOrphanedPodCgroups, at
// housekeeping): pods deleted while it was down, or whose removal failed.
// known is asked after the cgroups are listed, so a pod started meanwhile is
// known by then.
func (m *Manager) CleanupOrphans(known func(uid string) bool) error {
	uids, err := m.podUIDs()
	if err != nil {
		return err
	}
	var errs []error
	for _, uid := range uids {
		if known(uid) {
			continue
		}
		m.log.Info("Orphaned pod found, removing pod cgroups", "podUID", uid)
		errs = append(errs, m.RemovePod(uid))
	}
	return errors.Join(errs...)
}

// podUIDs lists the pod<uid> cgroups of every QoS tier in every hierarchy
// (a pod cgroup half removed still counts).
func (m *Manager) podUIDs() ([]string, error) {
	seen := map[string]bool{}
	var uids []string
	for _, parent := range m.qosPaths() {
		c, err := m.cgroup(parent, &cgroups.Resources{})
		if err != nil {
			return nil, err
		}
		for _, dir := range c.GetPaths() {
			entries, err := os.ReadDir(dir)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("listing pod cgroups: %w", err)
			}
			for _, e := range entries {
				uid, ok := strings.CutPrefix(e.Name(), "pod")
				if e.IsDir() && ok && uid != "" && !seen[uid] {
					seen[uid] = true
					uids = append(uids, uid)
				}
			}
		}
	}
	return uids, nil
}

// cgroup is the library's manager of the cgroup at p. Devices are left to
// the runtime, and no freeze is needed to set these limits, as upstream.
func (m *Manager) cgroup(p string, r *cgroups.Resources) (cgroups.Manager, error) {
	r.SkipDevices, r.SkipFreezeOnSet = true, true
	if m.v2 && r.CpuShares != 0 {
		// fs2 leaves the conversion to its callers.
		r.CpuWeight = cgroups.ConvertCPUSharesToCgroupV2Value(r.CpuShares)
		r.CpuShares = 0
	}
	return m.cfg.newCgroup(&cgroups.Cgroup{Path: p, Resources: r})
}

// apply creates the cgroup at p in every hierarchy unless it is there
// (Apply(-1) joins no process) and sets r on it, as upstream's
// cgroupManager.Create; op names it in the duration metric.
func (m *Manager) apply(op, p string, r *cgroups.Resources) error {
	defer m.observe(op, time.Now())
	c, err := m.cgroup(p, r)
	if err != nil {
		return err
	}
	if err := c.Apply(-1); err != nil {
		return err
	}
	return c.Set(r)
}

// exists says the cgroup is in the hierarchies that carry limits; the
// devices one is the runtime's to make.
func (m *Manager) exists(p string) bool {
	c, err := m.cgroup(p, &cgroups.Resources{})
	if err != nil {
		return false
	}
	for _, sub := range []string{"cpu", "memory"} {
		if d := c.Path(sub); d == "" || !cgroups.PathExists(d) {
			return false
		}
	}
	return true
}

func (m *Manager) existsAnywhere(p string) bool {
	c, err := m.cgroup(p, &cgroups.Resources{})
	if err != nil {
		return false
	}
	for _, d := range c.GetPaths() {
		if cgroups.PathExists(d) {
			return true
		}
	}
	return false
}

// destroy SIGKILLs every process left in the cgroup and its children, a few
// rounds as processes may still be forking, then removes it in every
// hierarchy (the library retries while the last ones exit).
func (m *Manager) destroy(p string) error {
	defer m.observe("destroy", time.Now())
	c, err := m.cgroup(p, &cgroups.Resources{})
	if err != nil {
		return err
	}
	for range 5 {
		pids := allPids(c)
		if len(pids) == 0 {
			break
		}
		m.log.Info("Killing processes left in a pod cgroup", "cgroup", p, "pids", len(pids))
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("killing pid %d: %w", pid, err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c.Destroy()
}

// allPids is every process under the cgroup in any hierarchy: the library's
// own GetAllPids reads the devices hierarchy alone, which the pod's cgroup
// may lack.
func allPids(c cgroups.Manager) []int {
	seen := map[int]bool{}
	var out []int
	for _, d := range c.GetPaths() {
		pids, err := cgroups.GetAllPids(d)
		if err != nil {
			continue
		}
		for _, pid := range pids {
			if !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

func (m *Manager) observe(op string, start time.Time) {
	m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}
