// Package stats is the kubelet's view of what its node and pods use: the
// Summary API (/stats/summary) and the resource metrics (/metrics/resource)
// that `top` and metrics-server read. It is upstream's CRI stats provider
// without cadvisor: the runtime reports each container's cumulative CPU
// time and working set (ListContainerStats), and the pod's cgroup where it
// can (ListPodSandboxStats); the node's figures come from /proc. A rate
// such as usageNanoCores needs two samples, so the provider keeps the
// previous sample of each container, pod and the node, as upstream's
// cpuUsageCache does.
package stats

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/kuberuntime"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// DefaultMinWindow is the shortest interval a rate is computed over: a
// shorter one (two scrapes a few milliseconds apart) measures noise.
const DefaultMinWindow = time.Second

// Provider computes summaries. It is safe for concurrent use.
type Provider struct {
	rt       cri.Runtime
	pods     func() []*corev1.Pod
	nodeName string

	// ProcRoot is where /proc is read ("/proc").
	ProcRoot string
	// RootDir is the kubelet's --root-dir: its filesystem is the node's
	// fs. Empty leaves fs out.
	RootDir string
	// PodLogsDir is --pod-logs-dir: the containers' logs figures are
	// the size of their files there. Empty leaves logs out.
	PodLogsDir string
	// MinWindow is the shortest interval usageNanoCores is computed over;
	// a summary asked for before there is a previous sample waits this
	// long for a second one (DefaultMinWindow).
	MinWindow time.Duration

	now   func() time.Time
	sleep func(context.Context, time.Duration) error

	mu sync.Mutex
	// cpu is the previous sample and last rate, by container ID,
	// "sandbox/"+sandbox ID and "node".
	cpu map[string]*cpuRecord
	// noSandboxStats is set once the runtime answered ListPodSandboxStats
	// with Unimplemented: pods are then the sum of their containers.
	noSandboxStats bool
}

type cpuSample struct {
	ts    int64 // unix nanoseconds
	usage uint64
}

type cpuRecord struct {
	base      cpuSample
	nanoCores *uint64
}

// New is a provider of nodeName's figures, its pods' from rt; pods is the
// kubelet's pods (their status.startTime is the pods' start).
func New(rt cri.Runtime, pods func() []*corev1.Pod, nodeName string) *Provider {
	if pods == nil {
		pods = func() []*corev1.Pod { return nil }
	}
	return &Provider{rt: rt, pods: pods, nodeName: nodeName, ProcRoot: "/proc", MinWindow: DefaultMinWindow,
		now: time.Now, sleep: sleepCtx, cpu: map[string]*cpuRecord{}}
}

// WithDirs sets RootDir and PodLogsDir and returns p, for a provider
// built in one expression; call it before the first summary.
func (p *Provider) WithDirs(rootDir, podLogsDir string) *Provider {
	p.RootDir, p.PodLogsDir = rootDir, podLogsDir
	return p
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Summary is the node's and its running pods' usage now. The first call
// (and the first after a container starts) takes two samples MinWindow
// apart, so usageNanoCores is always there for what is running.
func (p *Provider) Summary(ctx context.Context) (*Summary, error) {
	return p.summary(ctx, true)
}

func (p *Provider) summary(ctx context.Context, prime bool) (*Summary, error) {
	snap, err := p.collect(ctx)
	if err != nil {
		return nil, err
	}
	if prime && p.observeNew(snap) {
		if err := p.sleep(ctx, p.minWindow()); err != nil {
			return nil, err
		}
		if snap, err = p.collect(ctx); err != nil {
			return nil, err
		}
	}
	return p.build(ctx, snap), nil
}

func (p *Provider) minWindow() time.Duration {
	if p.MinWindow <= 0 {
		return DefaultMinWindow
	}
	return p.MinWindow
}

// snapshot is one sample of everything a summary is made of.
type snapshot struct {
	at         time.Time
	proc       procStat
	mem        memInfo
	sandboxes  map[string]*runtimeapi.PodSandbox // ready ones, by ID
	containers map[string]*runtimeapi.Container  // running ones, by ID
	cstats     []*runtimeapi.ContainerStats      // of the running containers
	pstats     map[string]*runtimeapi.PodSandboxStats
}

func (p *Provider) collect(ctx context.Context) (*snapshot, error) {
	s := &snapshot{at: p.now(), containers: map[string]*runtimeapi.Container{},
		sandboxes: map[string]*runtimeapi.PodSandbox{}, pstats: map[string]*runtimeapi.PodSandboxStats{}}
	var err error
	if s.proc, err = readProcStat(p.ProcRoot); err != nil {
		return nil, fmt.Errorf("node cpu: %w", err)
	}
	if s.mem, err = readMemInfo(p.ProcRoot); err != nil {
		return nil, fmt.Errorf("node memory: %w", err)
	}
	sbs, err := p.rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
	if err != nil {
		return nil, fmt.Errorf("listing pod sandboxes: %w", err)
	}
	// A pod has one ready sandbox but for a moment while it is replaced:
	// the newest is the pod's.
	newest := map[string]*runtimeapi.PodSandbox{}
	for _, sb := range sbs {
		uid := sb.GetMetadata().GetUid()
		if cur, ok := newest[uid]; !ok || sb.GetCreatedAt() > cur.GetCreatedAt() {
			newest[uid] = sb
		}
	}
	for _, sb := range newest {
		s.sandboxes[sb.GetId()] = sb
	}
	ctrs, err := p.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range ctrs {
		if _, ok := s.sandboxes[c.GetPodSandboxId()]; ok {
			s.containers[c.GetId()] = c
		}
	}
	cstats, err := p.rt.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{})
	if err != nil {
		return nil, fmt.Errorf("listing container stats: %w", err)
	}
	// Exited containers have stats too; only running ones are used.
	for _, st := range cstats {
		if _, ok := s.containers[st.GetAttributes().GetId()]; ok {
			s.cstats = append(s.cstats, st)
		}
	}
	p.mu.Lock()
	askSandboxes := !p.noSandboxStats
	p.mu.Unlock()
	if askSandboxes {
		pstats, err := p.rt.ListPodSandboxStats(ctx, &runtimeapi.PodSandboxStatsFilter{})
		switch {
		case status.Code(err) == codes.Unimplemented:
			p.mu.Lock()
			p.noSandboxStats = true
			p.mu.Unlock()
		case err == nil:
			for _, ps := range pstats {
				if id := ps.GetAttributes().GetId(); s.sandboxes[id] != nil && ps.GetLinux() != nil {
					s.pstats[id] = ps
				}
			}
		}
		// Any other error (a sandbox torn down mid-call) leaves this
		// sample's pods to the sum of their containers.
	}
	return s, nil
}

// samples are the snapshot's CPU counters by rate key.
func (s *snapshot) samples() map[string]cpuSample {
	out := map[string]cpuSample{"node": {ts: s.at.UnixNano(), usage: s.proc.cpuNanos}}
	for _, st := range s.cstats {
		if c := st.GetCpu(); c.GetUsageCoreNanoSeconds() != nil {
			out[st.GetAttributes().GetId()] = cpuSample{ts: c.GetTimestamp(), usage: c.GetUsageCoreNanoSeconds().GetValue()}
		}
	}
	for id, ps := range s.pstats {
		if c := ps.GetLinux().GetCpu(); c.GetUsageCoreNanoSeconds() != nil {
			out["sandbox/"+id] = cpuSample{ts: c.GetTimestamp(), usage: c.GetUsageCoreNanoSeconds().GetValue()}
		}
	}
	return out
}

// observeNew keeps the snapshot's samples that have no previous one and
// says whether a rate lacks a window: a key never sampled, or sampled too
// recently (by /metrics/resource, say) to have a rate yet.
func (p *Provider) observeNew(s *snapshot) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	fresh := false
	for k, smp := range s.samples() {
		r, ok := p.cpu[k]
		switch {
		case !ok:
			p.cpu[k] = &cpuRecord{base: smp}
			fresh = true
		case r.nanoCores == nil && smp.ts-r.base.ts < int64(p.minWindow()):
			fresh = true
		}
	}
	return fresh
}

// rates updates the previous samples with the snapshot's and returns the
// rate of each key that has one. The first rate comes from any two
// samples; later ones only from a window of at least MinWindow, so that
// scrapes close together repeat the last rate rather than measure noise.
// Keys no longer sampled (a container gone) are forgotten.
func (p *Provider) rates(s *snapshot) map[string]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	smps := s.samples()
	out := map[string]uint64{}
	for k, cur := range smps {
		r, ok := p.cpu[k]
		if !ok {
			p.cpu[k] = &cpuRecord{base: cur}
			continue
		}
		d := cur.ts - r.base.ts
		switch {
		case d < 0 || cur.usage < r.base.usage:
			// A counter that went back (the node's CPUs went offline, the
			// clock stepped): start again.
			*r = cpuRecord{base: cur}
		case d > 0 && (r.nanoCores == nil || d >= int64(p.minWindow())):
			v := uint64(float64(cur.usage-r.base.usage) / float64(d) * float64(time.Second))
			r.base, r.nanoCores = cur, &v
		}
		if r.nanoCores != nil {
			out[k] = *r.nanoCores
		}
	}
	for k := range p.cpu {
		if _, ok := smps[k]; !ok {
			delete(p.cpu, k)
		}
	}
	return out
}

func (p *Provider) build(ctx context.Context, s *snapshot) *Summary {
	rates := p.rates(s)
	at := s.at
	sum := &Summary{Node: NodeStats{NodeName: p.nodeName, StartTime: NewTime(s.proc.boot)}}

	node := &sum.Node
	nodeCPU := s.proc.cpuNanos
	node.CPU = &CPUStats{Time: NewTime(at), UsageCoreNanoSeconds: &nodeCPU}
	if v, ok := rates["node"]; ok {
		node.CPU.UsageNanoCores = &v
	}
	node.Memory = nodeMemory(s.mem, at)
	if p.RootDir != "" {
		if fs, err := statFs(p.RootDir, at); err == nil {
			node.Fs = fs
		}
	}
	imageFs := p.imageFs(ctx, at)
	if imageFs != nil {
		node.Runtime = &RuntimeStats{ImageFs: imageFs, ContainerFs: imageFs}
	}
	node.Rlimit = rlimit(p.ProcRoot, at)

	starts := map[string]time.Time{}
	for _, pod := range p.pods() {
		if t := pod.GetStatus().GetStartTime(); !t.IsZero() {
			starts[pod.GetMetadata().GetUid()] = t.AsTime()
		}
	}
	pods := map[string]*PodStats{}
	for id, sb := range s.sandboxes {
		md := sb.GetMetadata()
		start, ok := starts[md.GetUid()]
		if !ok {
			start = time.Unix(0, sb.GetCreatedAt())
		}
		pods[id] = &PodStats{PodRef: PodReference{Name: md.GetName(), Namespace: md.GetNamespace(), UID: md.GetUid()},
			StartTime: NewTime(start), Containers: []ContainerStats{}}
	}
	for _, st := range s.cstats {
		id := st.GetAttributes().GetId()
		ctr := s.containers[id]
		ps := pods[ctr.GetPodSandboxId()]
		cs := ContainerStats{Name: ctr.GetMetadata().GetName(), StartTime: NewTime(time.Unix(0, ctr.GetCreatedAt()))}
		cs.CPU = cpuStats(st.GetCpu(), rates, id)
		cs.Memory = memoryStats(st.GetMemory())
		if wl := st.GetWritableLayer(); wl != nil {
			cs.Rootfs = layerFs(wl, imageFs)
		}
		if p.PodLogsDir != "" {
			cs.Logs = p.logsFs(&ps.PodRef, cs.Name, imageFs, at)
		}
		ps.Containers = append(ps.Containers, cs)
	}
	for id, ps := range pods {
		sort.Slice(ps.Containers, func(i, j int) bool { return ps.Containers[i].Name < ps.Containers[j].Name })
		if sbs := s.pstats[id]; sbs != nil {
			l := sbs.GetLinux()
			ps.CPU = cpuStats(l.GetCpu(), rates, "sandbox/"+id)
			ps.Memory = memoryStats(l.GetMemory())
			ps.Network = networkStats(l.GetNetwork())
			if n := l.GetProcess().GetProcessCount(); n != nil {
				v := n.GetValue()
				ps.ProcessStats = &ProcessStats{ProcessCount: &v}
			}
		}
		if ps.CPU == nil && ps.Memory == nil {
			ps.CPU, ps.Memory = sumContainers(ps.Containers)
		}
		sum.Pods = append(sum.Pods, *ps)
	}
	sort.Slice(sum.Pods, func(i, j int) bool {
		a, b := sum.Pods[i].PodRef, sum.Pods[j].PodRef
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	if sum.Pods == nil {
		sum.Pods = []PodStats{}
	}
	return sum
}

func u64(v *runtimeapi.UInt64Value) *uint64 {
	if v == nil {
		return nil
	}
	x := v.GetValue()
	return &x
}

func cpuStats(c *runtimeapi.CpuUsage, rates map[string]uint64, key string) *CPUStats {
	if c == nil {
		return nil
	}
	out := &CPUStats{Time: NewTime(time.Unix(0, c.GetTimestamp())), UsageCoreNanoSeconds: u64(c.GetUsageCoreNanoSeconds())}
	if v, ok := rates[key]; ok {
		out.UsageNanoCores = &v
	} else {
		// Until there are two samples, the runtime's own rate, if it
		// computes one.
		out.UsageNanoCores = u64(c.GetUsageNanoCores())
	}
	return out
}

func memoryStats(m *runtimeapi.MemoryUsage) *MemoryStats {
	if m == nil {
		return nil
	}
	return &MemoryStats{Time: NewTime(time.Unix(0, m.GetTimestamp())),
		WorkingSetBytes: u64(m.GetWorkingSetBytes()), AvailableBytes: u64(m.GetAvailableBytes()),
		UsageBytes: u64(m.GetUsageBytes()), RSSBytes: u64(m.GetRssBytes()),
		PageFaults: u64(m.GetPageFaults()), MajorPageFaults: u64(m.GetMajorPageFaults())}
}

func networkStats(n *runtimeapi.NetworkUsage) *NetworkStats {
	if n == nil || n.GetDefaultInterface() == nil {
		return nil
	}
	iface := func(i *runtimeapi.NetworkInterfaceUsage) InterfaceStats {
		return InterfaceStats{Name: i.GetName(), RxBytes: u64(i.GetRxBytes()), RxErrors: u64(i.GetRxErrors()),
			TxBytes: u64(i.GetTxBytes()), TxErrors: u64(i.GetTxErrors())}
	}
	out := &NetworkStats{Time: NewTime(time.Unix(0, n.GetTimestamp())), InterfaceStats: iface(n.GetDefaultInterface())}
	for _, i := range n.GetInterfaces() {
		out.Interfaces = append(out.Interfaces, iface(i))
	}
	return out
}

// sumContainers is a pod's CPU and memory when the runtime does not
// report its cgroup: its containers' added up (the pause container's few
// hundred kilobytes are missing). A rate is only summed when every
// container has one.
func sumContainers(cs []ContainerStats) (*CPUStats, *MemoryStats) {
	if len(cs) == 0 {
		return nil, nil
	}
	cpu, mem := &CPUStats{}, &MemoryStats{}
	var usage, nano, ws, used, rss uint64
	haveUsage, haveNano, haveWS, haveUsed, haveRSS := true, true, true, true, true
	add := func(sum *uint64, have *bool, v *uint64) {
		if v == nil {
			*have = false
			return
		}
		*sum += *v
	}
	for _, c := range cs {
		if c.CPU == nil {
			haveUsage, haveNano = false, false
		} else {
			if c.CPU.Time.After(cpu.Time.Time) {
				cpu.Time = c.CPU.Time
			}
			add(&usage, &haveUsage, c.CPU.UsageCoreNanoSeconds)
			add(&nano, &haveNano, c.CPU.UsageNanoCores)
		}
		if c.Memory == nil {
			haveWS, haveUsed, haveRSS = false, false, false
		} else {
			if c.Memory.Time.After(mem.Time.Time) {
				mem.Time = c.Memory.Time
			}
			add(&ws, &haveWS, c.Memory.WorkingSetBytes)
			add(&used, &haveUsed, c.Memory.UsageBytes)
			add(&rss, &haveRSS, c.Memory.RSSBytes)
		}
	}
	pick := func(v uint64, have bool) *uint64 {
		if !have {
			return nil
		}
		return &v
	}
	cpu.UsageCoreNanoSeconds, cpu.UsageNanoCores = pick(usage, haveUsage), pick(nano, haveNano)
	mem.WorkingSetBytes, mem.UsageBytes, mem.RSSBytes = pick(ws, haveWS), pick(used, haveUsed), pick(rss, haveRSS)
	if cpu.UsageCoreNanoSeconds == nil && cpu.UsageNanoCores == nil {
		cpu = nil
	}
	if mem.WorkingSetBytes == nil && mem.UsageBytes == nil && mem.RSSBytes == nil {
		mem = nil
	}
	return cpu, mem
}

// imageFs is the runtime's image filesystem: the runtime's usage, and
// the capacity of the filesystem it lives on.
func (p *Provider) imageFs(ctx context.Context, at time.Time) *FsStats {
	resp, err := p.rt.ImageFsInfo(ctx)
	if err != nil || len(resp.GetImageFilesystems()) == 0 {
		return nil
	}
	u := resp.GetImageFilesystems()[0]
	fs := &FsStats{Time: NewTime(at)}
	if mp := u.GetFsId().GetMountpoint(); mp != "" {
		if dev, err := statFs(mp, at); err == nil {
			fs = dev
		}
	}
	fs.UsedBytes, fs.InodesUsed = u64(u.GetUsedBytes()), u64(u.GetInodesUsed())
	return fs
}

// layerFs is a container's writable layer on the image filesystem.
func layerFs(wl *runtimeapi.FilesystemUsage, imageFs *FsStats) *FsStats {
	fs := &FsStats{Time: NewTime(time.Unix(0, wl.GetTimestamp())), UsedBytes: u64(wl.GetUsedBytes()), InodesUsed: u64(wl.GetInodesUsed())}
	if imageFs != nil {
		fs.CapacityBytes, fs.AvailableBytes = imageFs.CapacityBytes, imageFs.AvailableBytes
		fs.Inodes, fs.InodesFree = imageFs.Inodes, imageFs.InodesFree
	}
	return fs
}

// logsFs is the size of a container's log files (every restart's, as
// they all count against the pod's ephemeral storage).
func (p *Provider) logsFs(ref *PodReference, container string, imageFs *FsStats, at time.Time) *FsStats {
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name, Uid: ref.UID}}
	dir := filepath.Join(kuberuntime.PodLogDir(p.PodLogsDir, pod), container)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var used, inodes uint64
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			used += uint64(info.Size())
			inodes++
		}
	}
	fs := &FsStats{Time: NewTime(at), UsedBytes: &used, InodesUsed: &inodes}
	if imageFs != nil {
		fs.CapacityBytes, fs.AvailableBytes = imageFs.CapacityBytes, imageFs.AvailableBytes
	}
	return fs
}

// OnlyCPUAndMemory is the summary cut to CPU and memory, as upstream's
// /stats/summary?only_cpu_and_memory=true answers metrics-server.
func (s *Summary) OnlyCPUAndMemory() *Summary {
	out := &Summary{Node: NodeStats{NodeName: s.Node.NodeName, StartTime: s.Node.StartTime, CPU: s.Node.CPU, Memory: s.Node.Memory},
		Pods: make([]PodStats, 0, len(s.Pods))}
	for _, p := range s.Pods {
		ps := PodStats{PodRef: p.PodRef, StartTime: p.StartTime, CPU: p.CPU, Memory: p.Memory, Containers: make([]ContainerStats, 0, len(p.Containers))}
		for _, c := range p.Containers {
			ps.Containers = append(ps.Containers, ContainerStats{Name: c.Name, StartTime: c.StartTime, CPU: c.CPU, Memory: c.Memory})
		}
		out.Pods = append(out.Pods, ps)
	}
	return out
}
