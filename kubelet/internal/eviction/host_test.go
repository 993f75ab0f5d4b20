package eviction

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/kubelet/internal/stats"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

type imageFs string

func (m imageFs) ImageFsInfo(context.Context) (*runtimeapi.ImageFsInfoResponse, error) {
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{
		{FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: string(m)}}}}, nil
}

// A fake /proc and /sys/fs/cgroup: 8 GiB of memory, the root cgroup using
// 3 GiB of which 1 GiB inactive page cache; 32768 PIDs, 700 tasks.
func fakeHost(t *testing.T) *Host {
	t.Helper()
	proc, cg, root := t.TempDir(), t.TempDir(), t.TempDir()
	write(t, filepath.Join(proc, "meminfo"), "MemTotal:        8388608 kB\nMemFree:         1000000 kB\nMemAvailable:    6291456 kB\n")
	write(t, filepath.Join(proc, "sys/kernel/pid_max"), "32768\n")
	write(t, filepath.Join(proc, "sys/kernel/threads-max"), "190000\n")
	write(t, filepath.Join(proc, "loadavg"), "0.10 0.20 0.30 2/700 12345\n")
	write(t, filepath.Join(cg, "memory/memory.usage_in_bytes"), "3221225472\n")
	write(t, filepath.Join(cg, "memory/memory.stat"), "cache 100\ninactive_file 4096\ntotal_cache 2000000000\ntotal_inactive_file 1073741824\n")
	return &Host{RootDir: root, Runtime: imageFs(root), CgroupRoot: cg, ProcRoot: proc, Now: func() time.Time { return t0 }}
}

func TestHostSignals(t *testing.T) {
	h := fakeHost(t)
	n, err := h.Node(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Working set 3Gi - 1Gi (total_inactive_file, the hierarchy's, not
	// the root's own inactive_file): 6Gi of 8Gi available.
	if m := n.Signals[SignalMemoryAvailable]; m.Available != 6*gi || m.Capacity != 8*gi || !m.Time.Equal(t0) {
		t.Errorf("memory.available %+v, want 6Gi of 8Gi", m)
	}
	if p := n.Signals[SignalPIDAvailable]; p.Available != 32768-700 || p.Capacity != 32768 {
		t.Errorf("pid.available %+v, want 32068 of 32768", p)
	}
	for _, s := range []Signal{SignalNodeFsAvailable, SignalNodeFsInodesFree, SignalImageFsAvailable, SignalImageFsInodesFree} {
		o, ok := n.Signals[s]
		if !ok || o.Capacity <= 0 || o.Available <= 0 || o.Available > o.Capacity {
			t.Errorf("%s: %+v", s, o)
		}
	}
	if n.DedicatedImageFs {
		t.Error("the image filesystem is the root directory's, not dedicated")
	}
	if fs, err := os.MkdirTemp("/dev/shm", "imagefs-"); err == nil {
		defer os.RemoveAll(fs)
		h.Runtime = imageFs(fs)
		if n, err := h.Node(context.Background()); err != nil || !n.DedicatedImageFs {
			t.Errorf("an image filesystem on /dev/shm: dedicated %v, %v", n != nil && n.DedicatedImageFs, err)
		}
	}
}

// Without the cgroup v1 memory controller, MemAvailable stands in; the
// lowest task limit counts.
func TestHostFallbacks(t *testing.T) {
	h := fakeHost(t)
	h.CgroupRoot = t.TempDir()
	write(t, filepath.Join(h.ProcRoot, "sys/kernel/threads-max"), "1000\n")
	h.Runtime = imageFs(filepath.Join(h.RootDir, "missing"))
	n, err := h.Node(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m := n.Signals[SignalMemoryAvailable]; m.Available != 6*gi || m.Capacity != 8*gi {
		t.Errorf("memory.available %+v, want MemAvailable's 6Gi of 8Gi", m)
	}
	if p := n.Signals[SignalPIDAvailable]; p.Available != 300 || p.Capacity != 1000 {
		t.Errorf("pid.available %+v, want 300 of threads-max's 1000", p)
	}
	if _, ok := n.Signals[SignalImageFsAvailable]; ok {
		t.Error("an image filesystem that cannot be measured has an observation")
	}
}

type summary stats.Summary

func (s *summary) Summary(context.Context) (*stats.Summary, error) { return (*stats.Summary)(s), nil }

func TestHostPods(t *testing.T) {
	h := fakeHost(t)
	ws, rootfs, logs, procs := uint64(200<<20), uint64(3<<20), uint64(1<<20), uint64(7)
	h.Stats = &summary{Pods: []stats.PodStats{{PodRef: stats.PodReference{Name: "web", Namespace: "default", UID: "uid-web"},
		Memory: &stats.MemoryStats{WorkingSetBytes: &ws}, ProcessStats: &stats.ProcessStats{ProcessCount: &procs},
		Containers: []stats.ContainerStats{{Name: "web", Memory: &stats.MemoryStats{WorkingSetBytes: &ws},
			Rootfs: &stats.FsStats{UsedBytes: &rootfs}, Logs: &stats.FsStats{UsedBytes: &logs}}}}}}
	vols := filepath.Join(h.RootDir, "pods/uid-web/volumes/kubernetes.io~empty-dir")
	write(t, filepath.Join(vols, "data/a"), string(make([]byte, 64<<10)))
	write(t, filepath.Join(vols, "data/sub/b"), string(make([]byte, 64<<10)))
	write(t, filepath.Join(vols, "mem/c"), string(make([]byte, 1<<20)))
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "default", Uid: "uid-web"}, Spec: &corev1.PodSpec{Volumes: []*corev1.Volume{
		{Name: "data", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "mem", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: "Memory"}}},
	}}}
	got, err := h.Pods(context.Background(), []*corev1.Pod{pod})
	if err != nil {
		t.Fatal(err)
	}
	ps, ok := got["uid-web"]
	if !ok || *ps.Memory != ws || *ps.Processes != 7 || len(ps.Containers) != 1 || *ps.Containers[0].Rootfs.Bytes != rootfs || *ps.Containers[0].Logs.Bytes != logs {
		t.Fatalf("pod stats %+v", ps)
	}
	// data: the directory, sub and two files of 64KiB; the memory-backed
	// volume does not count.
	if ps.Volumes.Bytes == nil || *ps.Volumes.Bytes < 128<<10 || *ps.Volumes.Bytes >= 1<<20 || *ps.Volumes.Inodes != 4 {
		t.Errorf("volumes %d bytes, %d inodes; want 128KiB and more (blocks), less than the memory volume's 1MiB; 4 inodes",
			*ps.Volumes.Bytes, *ps.Volumes.Inodes)
	}
}
