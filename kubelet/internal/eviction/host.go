package eviction

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/kubelet/internal/stats"
	corev1 "skiff.dev/proto/api/core/v1"
)

// ImageFsRuntime is what the host provider asks the CRI runtime: where its
// image filesystem is.
type ImageFsRuntime interface {
	ImageFsInfo(ctx context.Context) (*runtimeapi.ImageFsInfoResponse, error)
}

// Summarizer gives the pods' usage as the Summary API has it
// (kubelet/internal/stats.Provider).
type Summarizer interface {
	Summary(ctx context.Context) (*stats.Summary, error)
}

// Host measures this machine: the root memory cgroup, statfs of the
// kubelet's root directory and of the runtime's image filesystem, the
// process table, and the pods through the runtime's stats.
type Host struct {
	// RootDir is the kubelet's --root-dir: nodefs, and where the pods'
	// emptyDir volumes are.
	RootDir string
	Runtime ImageFsRuntime
	// Stats gives the pods' containers' usage; nil leaves pods without
	// figures.
	Stats Summarizer
	// CgroupRoot ("/sys/fs/cgroup") and ProcRoot ("/proc") are where the
	// kernel's figures are read.
	CgroupRoot, ProcRoot string
	Now                  func() time.Time
}

// NewHost is a Host of the real /sys and /proc.
func NewHost(rootDir string, rt ImageFsRuntime, summary Summarizer) *Host {
	return &Host{RootDir: rootDir, Runtime: rt, Stats: summary, CgroupRoot: "/sys/fs/cgroup", ProcRoot: "/proc", Now: time.Now}
}

var _ Provider = (*Host)(nil)

// Node measures every signal it can; one it cannot read is left out (and
// so meets no threshold) rather than failing the others.
func (h *Host) Node(ctx context.Context) (*NodeStats, error) {
	now := h.Now()
	out := &NodeStats{Signals: Observations{}}
	var errs []error
	if o, err := h.memory(now); err == nil {
		out.Signals[SignalMemoryAvailable] = o
	} else {
		errs = append(errs, fmt.Errorf("memory: %w", err))
	}
	var rootDev uint64
	if space, inodes, dev, err := fsObservations(h.RootDir, now); err == nil {
		out.Signals[SignalNodeFsAvailable] = space
		if inodes != nil {
			out.Signals[SignalNodeFsInodesFree] = *inodes
		}
		rootDev = dev
	} else {
		errs = append(errs, fmt.Errorf("nodefs: %w", err))
	}
	if mp, err := h.imageFsMountpoint(ctx); err == nil {
		if space, inodes, dev, err := fsObservations(mp, now); err == nil {
			out.Signals[SignalImageFsAvailable] = space
			if inodes != nil {
				out.Signals[SignalImageFsInodesFree] = *inodes
			}
			out.DedicatedImageFs = rootDev != 0 && dev != rootDev
		} else {
			errs = append(errs, fmt.Errorf("imagefs: %w", err))
		}
	} else {
		errs = append(errs, fmt.Errorf("imagefs: %w", err))
	}
	if o, err := h.pids(now); err == nil {
		out.Signals[SignalPIDAvailable] = o
	} else {
		errs = append(errs, fmt.Errorf("pid: %w", err))
	}
	if len(out.Signals) == 0 {
		return nil, errors.Join(errs...)
	}
	out.Unmeasured = errors.Join(errs...)
	return out, nil
}

// memory is upstream's memory.available: the machine's memory less the
// root cgroup's working set (its usage less the inactive file pages the
// kernel reclaims first), as cadvisor reports it on cgroup v1.
func (h *Host) memory(now time.Time) (Observation, error) {
	info, err := readKV(filepath.Join(h.ProcRoot, "meminfo"), ":")
	if err != nil {
		return Observation{}, err
	}
	total, ok := info["MemTotal"]
	if !ok {
		return Observation{}, errors.New("meminfo has no MemTotal")
	}
	total *= 1024
	dir := filepath.Join(h.CgroupRoot, "memory")
	usage, uerr := readUint(filepath.Join(dir, "memory.usage_in_bytes"))
	st, serr := readKV(filepath.Join(dir, "memory.stat"), " ")
	if uerr != nil || serr != nil {
		// No cgroup v1 memory controller (a cgroup v2 host, whose root
		// cgroup has no usage file): the kernel's own estimate of what
		// can be had without swapping stands in for capacity less the
		// working set.
		avail, ok := info["MemAvailable"]
		if !ok {
			return Observation{}, fmt.Errorf("no root memory cgroup (%v) and no MemAvailable", uerr)
		}
		return Observation{Available: int64(min(avail*1024, total)), Capacity: int64(total), Time: now}, nil
	}
	ws := usage - min(st["total_inactive_file"], usage)
	return Observation{Available: int64(total) - int64(ws), Capacity: int64(total), Time: now}, nil
}

// pids is upstream's pid.available: the system's task limit (the lower of
// pid_max and threads-max) less the tasks there are (loadavg's total, the
// figure sysinfo(2) gives).
func (h *Host) pids(now time.Time) (Observation, error) {
	limit := int64(-1)
	for _, f := range []string{"sys/kernel/pid_max", "sys/kernel/threads-max"} {
		n, err := readUint(filepath.Join(h.ProcRoot, f))
		if err != nil {
			return Observation{}, err
		}
		if limit < 0 || int64(n) < limit {
			limit = int64(n)
		}
	}
	b, err := os.ReadFile(filepath.Join(h.ProcRoot, "loadavg"))
	if err != nil {
		return Observation{}, err
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return Observation{}, fmt.Errorf("loadavg %q: no task count", b)
	}
	_, total, _ := strings.Cut(f[3], "/")
	tasks, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return Observation{}, fmt.Errorf("loadavg %q: %w", b, err)
	}
	return Observation{Available: limit - tasks, Capacity: limit, Time: now}, nil
}

// imageFsMountpoint is where the runtime keeps its images: the CRI says
// where, statfs says how full.
func (h *Host) imageFsMountpoint(ctx context.Context) (string, error) {
	if h.Runtime == nil {
		return "", errors.New("no runtime")
	}
	resp, err := h.Runtime.ImageFsInfo(ctx)
	if err != nil {
		return "", err
	}
	for _, u := range resp.GetImageFilesystems() {
		if mp := u.GetFsId().GetMountpoint(); mp != "" {
			return mp, nil
		}
	}
	return "", errors.New("the runtime reports no image filesystem")
}

// fsObservations are a filesystem's bytes and inodes, as cadvisor counts
// them: what unprivileged users may still write (the root reserve is no
// pod's), and its device.
func fsObservations(path string, now time.Time) (space Observation, inodes *Observation, dev uint64, err error) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(path, &s); err != nil {
		return Observation{}, nil, 0, err
	}
	bs := int64(s.Bsize)
	space = Observation{Available: int64(s.Bavail) * bs, Capacity: int64(s.Blocks) * bs, Time: now}
	if s.Files > 0 {
		inodes = &Observation{Available: int64(s.Ffree), Capacity: int64(s.Files), Time: now}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err == nil {
		dev = uint64(st.Dev)
	}
	return space, inodes, dev, nil
}

// Pods are the running pods' usage from the runtime's stats, and their
// emptyDir volumes measured on disk (upstream's volume stats, which the
// runtime does not report).
func (h *Host) Pods(ctx context.Context, pods []*corev1.Pod) (map[string]PodStats, error) {
	out := map[string]PodStats{}
	if h.Stats != nil {
		sum, err := h.Stats.Summary(ctx)
		if err != nil {
			return nil, err
		}
		for _, p := range sum.Pods {
			ps := PodStats{Memory: workingSet(p.Memory)}
			if p.ProcessStats != nil {
				ps.Processes = p.ProcessStats.ProcessCount
			}
			for _, c := range p.Containers {
				ps.Containers = append(ps.Containers, ContainerStats{Name: c.Name, Memory: workingSet(c.Memory),
					Rootfs: fsUsage(c.Rootfs), Logs: fsUsage(c.Logs)})
			}
			out[p.PodRef.UID] = ps
		}
	}
	for _, pod := range pods {
		uid := pod.GetMetadata().GetUid()
		ps, ok := out[uid]
		if !ok {
			continue
		}
		ps.Volumes = h.volumeUsage(pod)
		out[uid] = ps
	}
	return out, nil
}

func workingSet(m *stats.MemoryStats) *uint64 {
	if m == nil {
		return nil
	}
	return m.WorkingSetBytes
}

func fsUsage(f *stats.FsStats) FsUsage {
	if f == nil {
		return FsUsage{}
	}
	return FsUsage{Bytes: f.UsedBytes, Inodes: f.InodesUsed}
}

// volumeUsage is what the pod's emptyDir volumes on disk hold, as du
// counts it (allocated blocks, every inode). Memory-backed ones are
// memory, not disk.
func (h *Host) volumeUsage(pod *corev1.Pod) FsUsage {
	var used, inodes uint64
	measured := false
	base := filepath.Join(h.RootDir, "pods", pod.GetMetadata().GetUid(), "volumes", "kubernetes.io~empty-dir")
	for _, v := range pod.GetSpec().GetVolumes() {
		ed := v.GetVolumeSource().GetEmptyDir()
		if ed == nil || ed.GetMedium() != "" {
			continue
		}
		root := filepath.Join(base, v.GetName())
		err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return nil
			}
			inodes++
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				used += uint64(st.Blocks) * 512
			}
			return nil
		})
		if err == nil {
			measured = true
		}
	}
	if !measured {
		return FsUsage{}
	}
	return FsUsage{Bytes: &used, Inodes: &inodes}
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// readKV reads "key<sep> value [unit]" lines (meminfo, memory.stat).
func readKV(path, sep string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
			out[strings.TrimSpace(k)] = n
		}
	}
	return out, nil
}
