package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critesting "k8s.io/cri-api/pkg/apis/testing"

	"skiff.dev/kubelet/internal/cri"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

const mi = 1 << 20

// base is the fixtures' epoch: the CRI's timestamps and the node's clock
// count from it.
var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	t     *testing.T
	rt    *cri.Fake
	proc  string
	clock time.Time
	p     *Provider
	// onSleep runs when the provider waits for a second sample, standing
	// for the time passing meanwhile.
	onSleep func()
	sleeps  int
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, rt: cri.NewFake(), proc: t.TempDir(), clock: base}
	f.writeProc(1000)
	f.rt.SetFakeSandboxes([]*critesting.FakePodSandbox{
		sandbox("s1", "web", "default", "uid-web", runtimeapi.PodSandboxState_SANDBOX_READY),
		sandbox("s-old", "gone", "default", "uid-gone", runtimeapi.PodSandboxState_SANDBOX_NOTREADY),
	})
	f.rt.SetFakeContainers([]*critesting.FakeContainer{
		container("c-app", "s1", "app", runtimeapi.ContainerState_CONTAINER_RUNNING),
		container("c-side", "s1", "side", runtimeapi.ContainerState_CONTAINER_RUNNING),
		container("c-exited", "s1", "app", runtimeapi.ContainerState_CONTAINER_EXITED),
		container("c-gone", "s-old", "gone", runtimeapi.ContainerState_CONTAINER_RUNNING),
	})
	started := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "default", Uid: "uid-web"},
		Status: &corev1.PodStatus{StartTime: metav1.NewTime(base.Add(-time.Hour))}}
	f.p = New(f.rt, func() []*corev1.Pod { return []*corev1.Pod{started} }, "node-1")
	f.p.ProcRoot = f.proc
	f.p.now = func() time.Time { return f.clock }
	f.p.sleep = func(context.Context, time.Duration) error {
		f.sleeps++
		if f.onSleep != nil {
			f.onSleep()
		}
		return nil
	}
	return f
}

func sandbox(id, name, ns, uid string, state runtimeapi.PodSandboxState) *critesting.FakePodSandbox {
	return &critesting.FakePodSandbox{PodSandboxStatus: runtimeapi.PodSandboxStatus{Id: id, State: state,
		CreatedAt: base.Add(-2 * time.Hour).UnixNano(),
		Metadata:  &runtimeapi.PodSandboxMetadata{Name: name, Namespace: ns, Uid: uid}}}
}

func container(id, sandbox, name string, state runtimeapi.ContainerState) *critesting.FakeContainer {
	return &critesting.FakeContainer{SandboxID: sandbox, ContainerStatus: runtimeapi.ContainerStatus{Id: id, State: state,
		CreatedAt: base.Add(-30 * time.Minute).UnixNano(), Metadata: &runtimeapi.ContainerMetadata{Name: name}}}
}

// writeProc writes /proc/stat with busy ticks of CPU time (10 ms each)
// and a fixed /proc/meminfo.
func (f *fixture) writeProc(busy int) {
	f.t.Helper()
	// user nice system idle iowait irq softirq steal guest guest_nice:
	// idle and iowait do not count.
	stat := fmt.Sprintf("cpu  %d 0 0 5000 7000 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\nbtime 1700000000\n", busy)
	meminfo := "MemTotal:        4096000 kB\nMemFree:         1024000 kB\nInactive(file):   512000 kB\nAnonPages:        256000 kB\n"
	for name, content := range map[string]string{"stat": stat, "meminfo": meminfo} {
		if err := os.WriteFile(filepath.Join(f.proc, name), []byte(content), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
}

// setStats sets each container's cumulative CPU seconds and working set
// (MiB) as sampled at at.
func (f *fixture) setStats(at time.Time, cpuSeconds map[string]float64, wsMiB map[string]uint64) {
	var out []*runtimeapi.ContainerStats
	for id, secs := range cpuSeconds {
		out = append(out, &runtimeapi.ContainerStats{
			Attributes: &runtimeapi.ContainerAttributes{Id: id},
			Cpu: &runtimeapi.CpuUsage{Timestamp: at.UnixNano(),
				UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: uint64(secs * 1e9)}},
			Memory: &runtimeapi.MemoryUsage{Timestamp: at.UnixNano(),
				WorkingSetBytes: &runtimeapi.UInt64Value{Value: wsMiB[id] * mi}},
			WritableLayer: &runtimeapi.FilesystemUsage{Timestamp: at.UnixNano(), UsedBytes: &runtimeapi.UInt64Value{Value: 4096}},
		})
	}
	f.rt.SetFakeContainerStats(out)
}

func (f *fixture) summary() *Summary {
	f.t.Helper()
	s, err := f.p.Summary(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func val(p *uint64) string {
	if p == nil {
		return "<nil>"
	}
	return fmt.Sprint(*p)
}

func TestNanoCoresFromTwoSamples(t *testing.T) {
	f := newFixture(t)
	idle := map[string]uint64{"c-app": 10, "c-side": 20, "c-exited": 99, "c-gone": 99}
	f.setStats(base, map[string]float64{"c-app": 1, "c-side": 0.5, "c-exited": 7, "c-gone": 7}, idle)
	// While the provider waits: 2 s pass; app used 1 s of CPU (half a
	// core), side 0.2 s (a tenth), the node 150 ticks (0.75 of a core).
	f.onSleep = func() {
		f.clock = base.Add(2 * time.Second)
		f.writeProc(1150)
		f.setStats(base.Add(2*time.Second), map[string]float64{"c-app": 2, "c-side": 0.7, "c-exited": 7, "c-gone": 7}, idle)
	}
	s := f.summary()
	if f.sleeps != 1 {
		t.Fatalf("the first summary waited %d times for a second sample, want 1", f.sleeps)
	}
	if got := val(s.Node.CPU.UsageNanoCores); got != "750000000" {
		t.Errorf("node usageNanoCores = %s, want 750000000", got)
	}
	if got := val(s.Node.CPU.UsageCoreNanoSeconds); got != "11500000000" {
		t.Errorf("node usageCoreNanoSeconds = %s, want 11500000000", got)
	}
	if len(s.Pods) != 1 {
		t.Fatalf("pods = %+v, want only the ready sandbox's", s.Pods)
	}
	pod := s.Pods[0]
	if pod.PodRef != (PodReference{Name: "web", Namespace: "default", UID: "uid-web"}) {
		t.Errorf("podRef = %+v", pod.PodRef)
	}
	if !pod.StartTime.Equal(base.Add(-time.Hour)) {
		t.Errorf("pod startTime = %v, want the pod's status.startTime", pod.StartTime)
	}
	var names []string
	for _, c := range pod.Containers {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "app,side" {
		t.Fatalf("containers = %v, want the running app and side", names)
	}
	app, side := pod.Containers[0], pod.Containers[1]
	if got := val(app.CPU.UsageNanoCores); got != "500000000" {
		t.Errorf("app usageNanoCores = %s, want 500000000", got)
	}
	if got := val(side.CPU.UsageNanoCores); got != "100000000" {
		t.Errorf("side usageNanoCores = %s, want 100000000", got)
	}
	if got := val(app.Memory.WorkingSetBytes); got != fmt.Sprint(10*mi) {
		t.Errorf("app workingSetBytes = %s", got)
	}
	// Without the pod's cgroup from the runtime, the pod is its containers.
	if got := val(pod.CPU.UsageNanoCores); got != "600000000" {
		t.Errorf("pod usageNanoCores = %s, want 600000000", got)
	}
	if got := val(pod.Memory.WorkingSetBytes); got != fmt.Sprint(30*mi) {
		t.Errorf("pod workingSetBytes = %s, want 30Mi", got)
	}
	if !app.StartTime.Equal(base.Add(-30 * time.Minute)) {
		t.Errorf("container startTime = %v", app.StartTime)
	}
	if got := val(app.Rootfs.UsedBytes); got != "4096" {
		t.Errorf("rootfs usedBytes = %s", got)
	}

	// Half a second later: too short a window, the last rate stands and
	// nobody waits.
	f.onSleep = nil
	f.setStats(base.Add(2500*time.Millisecond), map[string]float64{"c-app": 2.5, "c-side": 0.7}, idle)
	s = f.summary()
	if f.sleeps != 1 {
		t.Errorf("a summary with previous samples waited")
	}
	if got := val(s.Pods[0].Containers[0].CPU.UsageNanoCores); got != "500000000" {
		t.Errorf("app usageNanoCores within the window = %s, want the last rate 500000000", got)
	}
	// Four seconds after the last window: app used 3.2 s more (0.8 core).
	f.setStats(base.Add(6*time.Second), map[string]float64{"c-app": 5.2, "c-side": 0.7}, idle)
	s = f.summary()
	if got := val(s.Pods[0].Containers[0].CPU.UsageNanoCores); got != "800000000" {
		t.Errorf("app usageNanoCores = %s, want 800000000", got)
	}
	if got := val(s.Pods[0].Containers[1].CPU.UsageNanoCores); got != "0" {
		t.Errorf("idle side usageNanoCores = %s, want 0", got)
	}
}

func TestNewContainerWaitsForItsSecondSample(t *testing.T) {
	f := newFixture(t)
	ws := map[string]uint64{"c-app": 1, "c-side": 1}
	f.setStats(base, map[string]float64{"c-app": 1, "c-side": 1}, ws)
	f.onSleep = func() {
		f.clock = f.clock.Add(time.Second)
		f.setStats(base.Add(time.Second), map[string]float64{"c-app": 1.5, "c-side": 1}, ws)
	}
	f.summary()
	// A container starts in the pod: only it lacks a sample, and the
	// summary waits for one rather than leave its rate out.
	f.rt.SetFakeContainers([]*critesting.FakeContainer{
		container("c-app", "s1", "app", runtimeapi.ContainerState_CONTAINER_RUNNING),
		container("c-side", "s1", "side", runtimeapi.ContainerState_CONTAINER_RUNNING),
		container("c-new", "s1", "new", runtimeapi.ContainerState_CONTAINER_RUNNING),
	})
	f.setStats(base.Add(3*time.Second), map[string]float64{"c-app": 2, "c-side": 1, "c-new": 0}, ws)
	f.onSleep = func() {
		f.clock = f.clock.Add(time.Second)
		f.setStats(base.Add(4*time.Second), map[string]float64{"c-app": 2, "c-side": 1, "c-new": 0.25}, ws)
	}
	s := f.summary()
	if f.sleeps != 2 {
		t.Errorf("sleeps = %d, want a second wait for the new container", f.sleeps)
	}
	for _, c := range s.Pods[0].Containers {
		if c.Name == "new" && val(c.CPU.UsageNanoCores) != "250000000" {
			t.Errorf("new container usageNanoCores = %s, want 250000000", val(c.CPU.UsageNanoCores))
		}
	}
}

func TestPodFromSandboxStats(t *testing.T) {
	f := newFixture(t)
	ws := map[string]uint64{"c-app": 10, "c-side": 20}
	f.setStats(base, map[string]float64{"c-app": 1, "c-side": 1}, ws)
	sandboxStats := func(at time.Time, cpuSeconds float64) {
		f.rt.SetFakePodSandboxStats([]*runtimeapi.PodSandboxStats{{
			Attributes: &runtimeapi.PodSandboxAttributes{Id: "s1"},
			Linux: &runtimeapi.LinuxPodSandboxStats{
				Cpu: &runtimeapi.CpuUsage{Timestamp: at.UnixNano(), UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: uint64(cpuSeconds * 1e9)}},
				Memory: &runtimeapi.MemoryUsage{Timestamp: at.UnixNano(),
					WorkingSetBytes: &runtimeapi.UInt64Value{Value: 31 * mi}},
				Network: &runtimeapi.NetworkUsage{Timestamp: at.UnixNano(), DefaultInterface: &runtimeapi.NetworkInterfaceUsage{
					Name: "eth0", RxBytes: &runtimeapi.UInt64Value{Value: 1000}, TxBytes: &runtimeapi.UInt64Value{Value: 2000}}},
				Process: &runtimeapi.ProcessUsage{ProcessCount: &runtimeapi.UInt64Value{Value: 3}},
			},
		}})
	}
	sandboxStats(base, 3)
	f.onSleep = func() {
		f.setStats(base.Add(time.Second), map[string]float64{"c-app": 1.1, "c-side": 1.1}, ws)
		sandboxStats(base.Add(time.Second), 3.3)
	}
	pod := f.summary().Pods[0]
	// The pod's cgroup, pause container included, rather than the sum.
	if got := val(pod.Memory.WorkingSetBytes); got != fmt.Sprint(31*mi) {
		t.Errorf("pod workingSetBytes = %s, want the sandbox's 31Mi", got)
	}
	if got := val(pod.CPU.UsageNanoCores); got != "300000000" {
		t.Errorf("pod usageNanoCores = %s, want the sandbox's 300000000", got)
	}
	if pod.Network == nil || pod.Network.Name != "eth0" || val(pod.Network.RxBytes) != "1000" {
		t.Errorf("pod network = %+v", pod.Network)
	}
	if pod.ProcessStats == nil || val(pod.ProcessStats.ProcessCount) != "3" {
		t.Errorf("pod process_stats = %+v", pod.ProcessStats)
	}
}

func TestRuntimeWithoutSandboxStatsIsNotAskedAgain(t *testing.T) {
	f := newFixture(t)
	f.setStats(base, map[string]float64{"c-app": 1, "c-side": 1}, map[string]uint64{"c-app": 1, "c-side": 2})
	f.p.MinWindow = time.Nanosecond
	f.rt.FakeRuntimeService.InjectError("ListPodSandboxStats", status.Error(codes.Unimplemented, "unknown method ListPodSandboxStats"))
	f.summary()
	s := f.summary()
	if got := val(s.Pods[0].Memory.WorkingSetBytes); got != fmt.Sprint(3*mi) {
		t.Errorf("pod workingSetBytes = %s, want the containers' 3Mi", got)
	}
	n := 0
	for _, c := range f.rt.GetCalls() {
		if c == "ListPodSandboxStats" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("ListPodSandboxStats called %d times, want once", n)
	}
}

func TestRuntimeErrorFailsTheSummary(t *testing.T) {
	f := newFixture(t)
	f.rt.FakeRuntimeService.InjectError("ListContainerStats", status.Error(codes.Unavailable, "containerd is restarting"))
	if _, err := f.p.Summary(context.Background()); err == nil || !strings.Contains(err.Error(), "containerd is restarting") {
		t.Errorf("Summary = %v, want the runtime's error", err)
	}
}

// The JSON is upstream's v1alpha1 Summary, field for field.
func TestSummaryJSONShape(t *testing.T) {
	n := func(v uint64) *uint64 { return &v }
	at := NewTime(time.Date(2025, 3, 1, 12, 0, 0, 500, time.UTC))
	s := &Summary{
		Node: NodeStats{NodeName: "node-1", StartTime: at,
			CPU:     &CPUStats{Time: at, UsageNanoCores: n(1), UsageCoreNanoSeconds: n(2)},
			Memory:  &MemoryStats{Time: at, AvailableBytes: n(3), UsageBytes: n(4), WorkingSetBytes: n(5), RSSBytes: n(6)},
			Fs:      &FsStats{Time: at, CapacityBytes: n(7)},
			Runtime: &RuntimeStats{ImageFs: &FsStats{Time: at, UsedBytes: n(8)}}},
		Pods: []PodStats{{PodRef: PodReference{Name: "web", Namespace: "default", UID: "u"}, StartTime: at,
			Containers: []ContainerStats{{Name: "app", StartTime: at, CPU: &CPUStats{Time: at, UsageNanoCores: n(9)},
				Memory: &MemoryStats{Time: at, WorkingSetBytes: n(10)}, Rootfs: &FsStats{Time: at, UsedBytes: n(11)},
				Logs: &FsStats{Time: at, UsedBytes: n(12)}}},
			Network: &NetworkStats{Time: at, InterfaceStats: InterfaceStats{Name: "eth0", RxBytes: n(13)}}}},
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	const ts = `"2025-03-01T12:00:00Z"`
	want := `{"node":{"nodeName":"node-1","startTime":` + ts +
		`,"cpu":{"time":` + ts + `,"usageNanoCores":1,"usageCoreNanoSeconds":2}` +
		`,"memory":{"time":` + ts + `,"availableBytes":3,"usageBytes":4,"workingSetBytes":5,"rssBytes":6}` +
		`,"fs":{"time":` + ts + `,"capacityBytes":7},"runtime":{"imageFs":{"time":` + ts + `,"usedBytes":8}}}` +
		`,"pods":[{"podRef":{"name":"web","namespace":"default","uid":"u"},"startTime":` + ts +
		`,"containers":[{"name":"app","startTime":` + ts + `,"cpu":{"time":` + ts + `,"usageNanoCores":9}` +
		`,"memory":{"time":` + ts + `,"workingSetBytes":10},"rootfs":{"time":` + ts + `,"usedBytes":11}` +
		`,"logs":{"time":` + ts + `,"usedBytes":12}}]` +
		`,"network":{"time":` + ts + `,"name":"eth0","rxBytes":13}}]}`
	if string(b) != want {
		t.Errorf("JSON:\n got %s\nwant %s", b, want)
	}
	var back Summary
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Node.StartTime.Equal(at.Truncate(time.Second)) || val(back.Pods[0].Containers[0].Memory.WorkingSetBytes) != "10" {
		t.Errorf("round trip: %+v", back)
	}
}

func TestNodeFiguresFromProc(t *testing.T) {
	f := newFixture(t)
	logs := t.TempDir()
	f.p.WithDirs(t.TempDir(), logs)
	// app's log files, this run's and the last one's, where the kubelet
	// has the runtime write them.
	dir := filepath.Join(logs, "default_web_uid-web", "app")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{"0.log": 100, "1.log": 23} {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.setStats(base, map[string]float64{"c-app": 1, "c-side": 1}, map[string]uint64{"c-app": 1, "c-side": 1})
	f.p.MinWindow = time.Nanosecond
	s := f.summary()
	if app := s.Pods[0].Containers[0]; app.Logs == nil || val(app.Logs.UsedBytes) != "123" || val(app.Logs.InodesUsed) != "2" {
		t.Errorf("app logs = %+v, want 123 bytes in 2 files", app.Logs)
	}
	if side := s.Pods[0].Containers[1]; side.Logs != nil {
		t.Errorf("side, with no log directory, has logs %+v", side.Logs)
	}
	m := s.Node.Memory
	// total 4096000 kB, free 1024000: usage 3072000 kB, less 512000 inactive file.
	if val(m.UsageBytes) != fmt.Sprint(3072000*1024) || val(m.WorkingSetBytes) != fmt.Sprint(2560000*1024) ||
		val(m.AvailableBytes) != fmt.Sprint(1536000*1024) || val(m.RSSBytes) != fmt.Sprint(256000*1024) {
		t.Errorf("node memory = usage %s workingSet %s available %s rss %s", val(m.UsageBytes), val(m.WorkingSetBytes), val(m.AvailableBytes), val(m.RSSBytes))
	}
	if !s.Node.StartTime.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("node startTime = %v, want btime", s.Node.StartTime)
	}
	if s.Node.Fs == nil || s.Node.Fs.CapacityBytes == nil || *s.Node.Fs.CapacityBytes == 0 {
		t.Errorf("node fs = %+v, want the root dir's filesystem", s.Node.Fs)
	}
}

func TestResourceMetrics(t *testing.T) {
	f := newFixture(t)
	f.setStats(base, map[string]float64{"c-app": 1.5, "c-side": 0.25}, map[string]uint64{"c-app": 10, "c-side": 20})
	srv := httptest.NewServer(f.p.ResourceMetricsHandler())
	defer srv.Close()
	get := func() string {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	out := get()
	ms := base.UnixMilli()
	// The text format writes values as Go's shortest %g.
	g := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	for _, want := range []string{
		"# TYPE container_cpu_usage_seconds_total counter",
		fmt.Sprintf(`container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"} 1.5 %d`, ms),
		fmt.Sprintf(`container_memory_working_set_bytes{container="side",namespace="default",pod="web"} %s %d`, g(20*mi), ms),
		fmt.Sprintf(`container_start_time_seconds{container="app",namespace="default",pod="web"} %s`, g(float64(base.Add(-30*time.Minute).Unix()))),
		fmt.Sprintf(`pod_cpu_usage_seconds_total{namespace="default",pod="web"} 1.75 %d`, ms),
		fmt.Sprintf(`pod_memory_working_set_bytes{namespace="default",pod="web"} %s %d`, g(30*mi), ms),
		fmt.Sprintf("node_cpu_usage_seconds_total 10 %d", ms),
		fmt.Sprintf("node_memory_working_set_bytes %s %d", g(2560000*1024), ms),
		"\nscrape_error 0\n",
		"\nresource_scrape_error 0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("/metrics/resource lacks %q:\n%s", want, out)
		}
	}
	if f.sleeps != 0 {
		t.Errorf("a scrape waited for a second sample")
	}
	f.rt.FakeRuntimeService.InjectError("ListPodSandbox", status.Error(codes.Unavailable, "down"))
	if out := get(); !strings.Contains(out, "\nscrape_error 1\n") || strings.Contains(out, "container_cpu") {
		t.Errorf("a failed scrape:\n%s", out)
	}
}
