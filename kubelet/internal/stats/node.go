package stats

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of /proc/stat's CPU times. Linux fixes it at 100 for
// userspace on every architecture we run on (sysconf(_SC_CLK_TCK)).
const userHZ = 100

// procStat is what the node's figures need of /proc/stat.
type procStat struct {
	// cpuNanos is the time all CPUs spent not idle: user, nice, system,
	// irq, softirq and steal (guest time is already in user), the figure
	// cadvisor's root cgroup reports as cpuacct usage.
	cpuNanos uint64
	boot     time.Time
}

func readProcStat(procRoot string) (procStat, error) {
	var st procStat
	b, err := os.ReadFile(filepath.Join(procRoot, "stat"))
	if err != nil {
		return st, err
	}
	found := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "cpu":
			// cpu user nice system idle iowait irq softirq steal guest guest_nice
			if len(f) < 8 {
				return st, fmt.Errorf("%s/stat: short cpu line %q", procRoot, sc.Text())
			}
			var ticks uint64
			for _, i := range []int{1, 2, 3, 6, 7} {
				n, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					return st, fmt.Errorf("%s/stat: cpu field %d: %w", procRoot, i, err)
				}
				ticks += n
			}
			if len(f) > 8 {
				if n, err := strconv.ParseUint(f[8], 10, 64); err == nil {
					ticks += n
				}
			}
			st.cpuNanos = ticks * (uint64(time.Second) / userHZ)
			found = true
		case "btime":
			if len(f) > 1 {
				if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					st.boot = time.Unix(n, 0)
				}
			}
		}
	}
	if !found {
		return st, fmt.Errorf("%s/stat: no cpu line", procRoot)
	}
	return st, nil
}

// memInfo is /proc/meminfo in bytes, by field.
type memInfo map[string]uint64

func readMemInfo(procRoot string) (memInfo, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, "meminfo"))
	if err != nil {
		return nil, err
	}
	m := memInfo{}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		m[k] = n
	}
	if _, ok := m["MemTotal"]; !ok {
		return nil, fmt.Errorf("%s/meminfo: no MemTotal", procRoot)
	}
	return m, nil
}

// nodeMemory is the node's memory as cadvisor's root cgroup reports it:
// usage is all memory in use, page cache included; the working set leaves
// out the inactive file pages the kernel reclaims first; available is what
// the eviction manager compares with its thresholds.
func nodeMemory(m memInfo, at time.Time) *MemoryStats {
	total := m["MemTotal"]
	usage := total - min(m["MemFree"], total)
	ws := usage - min(m["Inactive(file)"], usage)
	avail := total - ws
	rss := m["AnonPages"]
	return &MemoryStats{Time: NewTime(at), UsageBytes: &usage, WorkingSetBytes: &ws, AvailableBytes: &avail, RSSBytes: &rss}
}

// statFs is the filesystem holding path.
func statFs(path string, at time.Time) (*FsStats, error) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(path, &s); err != nil {
		return nil, err
	}
	bs := uint64(s.Bsize)
	capacity, avail, used := s.Blocks*bs, s.Bavail*bs, (s.Blocks-s.Bfree)*bs
	fs := &FsStats{Time: NewTime(at), CapacityBytes: &capacity, AvailableBytes: &avail, UsedBytes: &used}
	if s.Files > 0 {
		inodes, free, iused := s.Files, s.Ffree, s.Files-s.Ffree
		fs.Inodes, fs.InodesFree, fs.InodesUsed = &inodes, &free, &iused
	}
	return fs, nil
}

// rlimit is the node's process table: pid_max and the tasks running now.
func rlimit(procRoot string, at time.Time) *RlimitStats {
	r := &RlimitStats{Time: NewTime(at)}
	if b, err := os.ReadFile(filepath.Join(procRoot, "sys/kernel/pid_max")); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			r.MaxPID = &n
		}
	}
	// loadavg's fourth field is running/total scheduling entities, the
	// count sysinfo's procs (upstream's figure) gives.
	if b, err := os.ReadFile(filepath.Join(procRoot, "loadavg")); err == nil {
		if f := strings.Fields(string(b)); len(f) > 3 {
			if _, total, ok := strings.Cut(f[3], "/"); ok {
				if n, err := strconv.ParseInt(total, 10, 64); err == nil {
					r.NumOfRunningProcesses = &n
				}
			}
		}
	}
	if r.MaxPID == nil && r.NumOfRunningProcesses == nil {
		return nil
	}
	return r
}
