package eviction

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"skiff.dev/client/record"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

var discard = slog.New(slog.DiscardHandler)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

const (
	mi = int64(1 << 20)
	gi = int64(1 << 30)
)

// fakeProvider hands out the figures a test sets.
type fakeProvider struct {
	mu        sync.Mutex
	node      NodeStats
	pods      map[string]PodStats
	nodeCalls int
	podsErr   error
	now       func() time.Time
}

func (f *fakeProvider) Node(context.Context) (*NodeStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodeCalls++
	n := NodeStats{Signals: Observations{}, DedicatedImageFs: f.node.DedicatedImageFs}
	for k, v := range f.node.Signals {
		v.Time = f.now()
		n.Signals[k] = v
	}
	return &n, nil
}

func (f *fakeProvider) Pods(context.Context, []*corev1.Pod) (map[string]PodStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pods, f.podsErr
}

func (f *fakeProvider) set(s Signal, available, capacity int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.node.Signals == nil {
		f.node.Signals = Observations{}
	}
	f.node.Signals[s] = Observation{Available: available, Capacity: capacity}
}

type eviction struct {
	pod     string
	reason  string
	message string
	grace   int64
}

// node is the pods and what the manager did to them.
type node struct {
	mu      sync.Mutex
	pods    []*corev1.Pod
	evicted []eviction
	fail    map[string]bool // pods whose eviction fails
}

func (n *node) active() []*corev1.Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.pods)
}

func (n *node) evict(_ context.Context, pod *corev1.Pod, reason, message string, grace *int64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	name := pod.GetMetadata().GetName()
	if n.fail[name] {
		return errors.New("cannot")
	}
	n.evicted = append(n.evicted, eviction{name, reason, message, *grace})
	for _, p := range n.pods {
		if p.GetMetadata().GetName() == name {
			p.Status.Phase = "Failed"
		}
	}
	return nil
}

func (n *node) evictions() []eviction {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.evicted)
}

type fixture struct {
	m      *Manager
	p      *fakeProvider
	n      *node
	clock  *clocktesting.FakeClock
	events *record.FakeRecorder
	reg    *prometheus.Registry
}

func newFixture(t *testing.T, cfg Config, pods ...*corev1.Pod) *fixture {
	t.Helper()
	f := &fixture{p: &fakeProvider{pods: map[string]PodStats{}}, n: &node{pods: pods, fail: map[string]bool{}},
		clock: clocktesting.NewFakeClock(t0), events: record.NewFakeRecorder(100), reg: prometheus.NewRegistry()}
	f.p.now = f.clock.Now
	cfg.Provider, cfg.ActivePods, cfg.Evict = f.p, f.n.active, f.n.evict
	cfg.Clock, cfg.Recorder, cfg.Registerer, cfg.NodeName = f.clock, f.events, f.reg, "node-1"
	if testing.Verbose() {
		cfg.Logger = slog.Default()
	}
	var err error
	if f.m, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) sync(t *testing.T) *corev1.Pod {
	t.Helper()
	p, err := f.m.synchronize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func thresholds(t *testing.T, hard, soft, grace, reclaim string) []Threshold {
	t.Helper()
	h, err := ParseStatements(hard)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseStatements(soft)
	if err != nil {
		t.Fatal(err)
	}
	g, err := ParseGracePeriods(grace)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseMinimumReclaims(reclaim)
	if err != nil {
		t.Fatal(err)
	}
	th, err := Thresholds(h, s, g, r)
	if err != nil {
		t.Fatal(err)
	}
	return th
}

// newPod is a one-container pod ("web") of priority prio requesting
// memory (empty: nothing).
func newPod(name string, prio int32, memory string) *corev1.Pod {
	c := &corev1.Container{Name: "web", Image: "agnhost"}
	if memory != "" {
		c.Resources = &corev1.ResourceRequirements{Requests: map[string]*metav1.Quantity{"memory": {String_: memory}}}
	}
	grace := int64(30)
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name},
		Spec:   &corev1.PodSpec{Priority: &prio, Containers: []*corev1.Container{c}, TerminationGracePeriodSeconds: &grace},
		Status: &corev1.PodStatus{Phase: "Running"}}
}

func u(v int64) *uint64 { x := uint64(v); return &x }

func memoryStats(ws int64) PodStats {
	return PodStats{Memory: u(ws), Containers: []ContainerStats{{Name: "web", Memory: u(ws)}}}
}

func names(ps []*corev1.Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.GetMetadata().GetName())
	}
	return out
}

func TestRankMemoryPressure(t *testing.T) {
	pods := []*corev1.Pod{
		newPod("within-request", 0, "500Mi"),
		newPod("high-priority-over", 1000, ""),
		newPod("over-by-100", 0, "100Mi"),
		newPod("over-by-300", 0, ""),
		newPod("no-stats", 5000, "1Gi"),
	}
	stats := statsOf(map[string]PodStats{
		"uid-within-request":     memoryStats(300 * mi),
		"uid-high-priority-over": memoryStats(900 * mi),
		"uid-over-by-100":        memoryStats(200 * mi),
		"uid-over-by-300":        memoryStats(300 * mi),
	})
	rankMemoryPressure(pods, stats)
	// No figures first; then those over their request, low priority
	// before high, the furthest over first; the pod within its request last.
	want := []string{"no-stats", "over-by-300", "over-by-100", "high-priority-over", "within-request"}
	if got := names(pods); !slices.Equal(got, want) {
		t.Errorf("ranked %v, want %v", got, want)
	}
}

func TestRankDiskPressure(t *testing.T) {
	disk := func(rootfs, logs, volumes int64) PodStats {
		return PodStats{Containers: []ContainerStats{{Name: "web", Rootfs: FsUsage{Bytes: u(rootfs), Inodes: u(1)}, Logs: FsUsage{Bytes: u(logs)}}},
			Volumes: FsUsage{Bytes: u(volumes), Inodes: u(volumes / mi)}}
	}
	stats := statsOf(map[string]PodStats{
		"uid-big-rootfs": disk(800*mi, 1*mi, 0),
		"uid-big-volume": disk(10*mi, 1*mi, 500*mi),
		"uid-small":      disk(1*mi, 1*mi, 1*mi),
	})
	for _, tc := range []struct {
		signal    Signal
		dedicated bool
		want      []string
	}{
		// One filesystem: everything counts.
		{SignalNodeFsAvailable, false, []string{"big-rootfs", "big-volume", "small"}},
		// A dedicated image filesystem: nodefs holds logs and volumes,
		// imagefs the writable layers.
		{SignalNodeFsAvailable, true, []string{"big-volume", "small", "big-rootfs"}},
		{SignalImageFsAvailable, true, []string{"big-rootfs", "big-volume", "small"}},
		{SignalNodeFsInodesFree, true, []string{"big-volume", "small", "big-rootfs"}},
	} {
		pods := []*corev1.Pod{newPod("small", 0, ""), newPod("big-volume", 0, ""), newPod("big-rootfs", 0, "")}
		rankFunc(tc.signal, tc.dedicated)(pods, stats)
		if got := names(pods); !slices.Equal(got, tc.want) {
			t.Errorf("%s (dedicated imagefs %v): ranked %v, want %v", tc.signal, tc.dedicated, got, tc.want)
		}
	}
}

func TestRankPIDPressure(t *testing.T) {
	pods := []*corev1.Pod{newPod("few", 0, ""), newPod("many-important", 100, ""), newPod("many", 0, "")}
	stats := statsOf(map[string]PodStats{
		"uid-few": {Processes: u(3)}, "uid-many-important": {Processes: u(900)}, "uid-many": {Processes: u(500)},
	})
	rankPIDPressure(pods, stats)
	if got, want := names(pods), []string{"many", "few", "many-important"}; !slices.Equal(got, want) {
		t.Errorf("ranked %v, want %v", got, want)
	}
}

// Memory pressure: the node reports it, pods go one per pass in upstream's
// order (critical and static pods never), and the condition stays for the
// transition period after the memory is back.
func TestMemoryPressureEvictsInOrderAndConditionHoldsForTransitionPeriod(t *testing.T) {
	critical := newPod("critical", 2000000000, "")
	static := newPod("static", 0, "")
	static.Metadata.Annotations = map[string]string{"kubernetes.io/config.source": "file"}
	f := newFixture(t, Config{Thresholds: thresholds(t, "memory.available<100Mi", "", "", ""),
		PressureTransitionPeriod: 5 * time.Minute, MaxPodGracePeriodSeconds: 10},
		newPod("guaranteed-ish", 0, "1Gi"), critical, static, newPod("web", 0, ""), newPod("batch", 1000, ""))
	f.p.pods = map[string]PodStats{
		"uid-guaranteed-ish": memoryStats(512 * mi),
		"uid-critical":       memoryStats(4 * gi),
		"uid-static":         memoryStats(3 * gi),
		"uid-web":            memoryStats(200 * mi),
		"uid-batch":          memoryStats(2 * gi),
	}
	f.p.set(SignalMemoryAvailable, 4*gi, 8*gi)
	f.p.set(SignalNodeFsAvailable, 50*gi, 100*gi)
	if p := f.sync(t); p != nil {
		t.Fatalf("evicted %s with memory to spare", p.GetMetadata().GetName())
	}
	if mem, disk, pid := f.m.Pressure(); mem || disk || pid {
		t.Fatalf("pressure %v %v %v with memory to spare", mem, disk, pid)
	}

	f.p.set(SignalMemoryAvailable, 50*mi, 8*gi)
	f.clock.Step(10 * time.Second)
	p := f.sync(t)
	if mem, disk, _ := f.m.Pressure(); !mem || disk {
		t.Errorf("pressure memory %v disk %v, want memory only", mem, disk)
	}
	// Over their requests: critical (never), static (never), web (200Mi,
	// priority 0) before batch (priority 1000).
	if p == nil || p.GetMetadata().GetName() != "web" {
		t.Fatalf("evicted %v, want web", p)
	}
	want := eviction{"web", "Evicted",
		"The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. Container web was using 200Mi, request is 0, has larger consumption of memory. ", 0}
	if got := f.n.evictions(); len(got) != 1 || got[0] != want {
		t.Errorf("evictions %+v, want %+v", got, want)
	}
	if got := <-f.events.Events; got != "Warning EvictionThresholdMet Attempting to reclaim memory" {
		t.Errorf("event %q", got)
	}
	if v := testutil.ToFloat64(f.m.evictions.WithLabelValues("memory.available")); v != 1 {
		t.Errorf("kubelet_evictions{eviction_signal=memory.available} = %v", v)
	}
	if n := testutil.CollectAndCount(f.m.statsAge, "kubelet_eviction_stats_age_seconds"); n != 1 {
		t.Errorf("kubelet_eviction_stats_age_seconds has %d series", n)
	}

	// Still short: one more pod per pass, the next in line.
	f.clock.Step(10 * time.Second)
	if p := f.sync(t); p == nil || p.GetMetadata().GetName() != "batch" {
		t.Fatalf("second eviction %v, want batch", p)
	}
	f.clock.Step(10 * time.Second)
	if p := f.sync(t); p == nil || p.GetMetadata().GetName() != "guaranteed-ish" {
		t.Fatalf("third eviction %v, want guaranteed-ish (within its request, last)", p)
	}
	f.clock.Step(10 * time.Second)
	if p := f.sync(t); p != nil {
		t.Fatalf("evicted %s, a critical or static pod", p.GetMetadata().GetName())
	}

	// The memory is back: no eviction, but the condition holds for the
	// transition period from the last time it was seen short.
	lastShort := f.clock.Now()
	f.p.set(SignalMemoryAvailable, 4*gi, 8*gi)
	for f.clock.Since(lastShort) < 5*time.Minute {
		f.clock.Step(10 * time.Second)
		if p := f.sync(t); p != nil {
			t.Fatalf("evicted %s after the memory came back", p.GetMetadata().GetName())
		}
		mem, _, _ := f.m.Pressure()
		if held := f.clock.Since(lastShort) < 5*time.Minute; mem != held {
			t.Fatalf("%s after the memory came back: MemoryPressure %v, want %v", f.clock.Since(lastShort), mem, held)
		}
	}
	if len(f.n.evictions()) != 3 {
		t.Errorf("evictions %+v", f.n.evictions())
	}
}

// A soft threshold reports pressure at once but evicts only once crossed
// for its whole grace period, with the pod's grace bounded by
// --eviction-max-pod-grace-period.
func TestSoftThresholdWaitsForItsGracePeriod(t *testing.T) {
	f := newFixture(t, Config{Thresholds: thresholds(t, "", "memory.available<1Gi", "memory.available=1m", ""),
		PressureTransitionPeriod: time.Minute, MaxPodGracePeriodSeconds: 10}, newPod("web", 0, ""))
	f.p.pods = map[string]PodStats{"uid-web": memoryStats(200 * mi)}
	f.p.set(SignalMemoryAvailable, 512*mi, 8*gi)
	for range 6 {
		if p := f.sync(t); p != nil {
			t.Fatalf("evicted at %s, before the grace period", f.clock.Since(t0))
		}
		if mem, _, _ := f.m.Pressure(); !mem {
			t.Fatal("no MemoryPressure while a soft threshold is crossed")
		}
		f.clock.Step(10 * time.Second)
	}
	if p := f.sync(t); p == nil {
		t.Fatalf("nothing evicted %s after the soft threshold was crossed", f.clock.Since(t0))
	}
	if got := f.n.evictions(); len(got) != 1 || got[0].grace != 10 {
		t.Errorf("evictions %+v, want grace min(30, 10)", got)
	}

	// Crossed again after a pause: the grace period starts over.
	f.p.set(SignalMemoryAvailable, 4*gi, 8*gi)
	f.clock.Step(10 * time.Second)
	f.sync(t)
	f.n.mu.Lock()
	f.n.pods = append(f.n.pods, newPod("next", 0, ""))
	f.n.mu.Unlock()
	f.p.pods["uid-next"] = memoryStats(200 * mi)
	f.p.set(SignalMemoryAvailable, 512*mi, 8*gi)
	f.clock.Step(10 * time.Second)
	if p := f.sync(t); p != nil {
		t.Fatal("evicted at once when the soft threshold was crossed again")
	}
}

// The pod's own grace period when it is the shorter, or when the maximum
// is negative.
func TestGracePeriod(t *testing.T) {
	soft := Threshold{Signal: SignalMemoryAvailable, GracePeriod: time.Minute}
	hard := Threshold{Signal: SignalMemoryAvailable}
	short := newPod("short", 0, "")
	g := int64(5)
	short.Spec.TerminationGracePeriodSeconds = &g
	for _, tc := range []struct {
		max  int64
		pod  *corev1.Pod
		t    Threshold
		want int64
	}{
		{10, newPod("p", 0, ""), hard, 0},
		{10, newPod("p", 0, ""), soft, 10},
		{10, short, soft, 5},
		{0, newPod("p", 0, ""), soft, 0},
		{-1, newPod("p", 0, ""), soft, 30},
	} {
		m := &Manager{cfg: Config{MaxPodGracePeriodSeconds: tc.max}}
		if got := m.gracePeriod(tc.pod, tc.t); got != tc.want {
			t.Errorf("max %d, pod %s, %s: grace %d, want %d", tc.max, tc.pod.Metadata.Name, tc.t, got, tc.want)
		}
	}
}

type fakeImageGC struct {
	calls int
	free  func()
}

func (g *fakeImageGC) DeleteUnusedImages(context.Context) error {
	g.calls++
	if g.free != nil {
		g.free()
	}
	return nil
}

// Disk pressure is first met by collecting images; a pod goes only when
// that was not enough (to the threshold plus its minimum reclaim).
func TestDiskPressureReclaimsImagesFirst(t *testing.T) {
	for _, tc := range []struct {
		name       string
		freedTo    int64 // nodefs available after the image collection
		dedicated  bool
		wantGC     bool
		wantEvict  bool
		wantReason string
	}{
		{name: "images free enough", freedTo: 30 * gi, wantGC: true},
		{name: "images free too little for the minimum reclaim", freedTo: 11 * gi, wantGC: true, wantEvict: true},
		// With an image filesystem of its own, images free nothing on nodefs.
		{name: "dedicated image filesystem", freedTo: 30 * gi, dedicated: true, wantEvict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{Thresholds: thresholds(t, "nodefs.available<10%", "", "", "nodefs.available=2Gi"),
				PressureTransitionPeriod: time.Minute}, newPod("web", 0, ""))
			f.p.node.DedicatedImageFs = tc.dedicated
			f.p.pods = map[string]PodStats{"uid-web": {Containers: []ContainerStats{{Name: "web",
				Rootfs: FsUsage{Bytes: u(3 * gi)}, Logs: FsUsage{Bytes: u(gi)}}}, Volumes: FsUsage{Bytes: u(gi)}}}
			f.p.set(SignalNodeFsAvailable, 5*gi, 100*gi)
			gc := &fakeImageGC{free: func() { f.p.set(SignalNodeFsAvailable, tc.freedTo, 100*gi) }}
			f.m.cfg.ImageGC = gc
			p := f.sync(t)
			if (gc.calls > 0) != tc.wantGC {
				t.Errorf("image collections %d, want any: %v", gc.calls, tc.wantGC)
			}
			if (p != nil) != tc.wantEvict {
				t.Fatalf("evicted %v, want an eviction: %v", p, tc.wantEvict)
			}
			if _, disk, _ := f.m.Pressure(); !disk {
				t.Error("no DiskPressure")
			}
			if !tc.wantEvict {
				return
			}
			msg := f.n.evictions()[0].message
			if tc.dedicated {
				// Logs are on nodefs, the writable layer is not: upstream
				// names the container only when it has both figures.
				if want := "The node was low on resource: ephemeral-storage. Threshold quantity: 10Gi, available: 5Gi. Container web was using 4Gi, request is 0, has larger consumption of ephemeral-storage. "; msg != want {
					t.Errorf("message %q, want %q", msg, want)
				}
			}
		})
	}
}

// A pod whose eviction fails leaves its place to the next; pods without
// figures wait for the next pass.
func TestEvictionFailuresAndMissingStats(t *testing.T) {
	f := newFixture(t, Config{Thresholds: thresholds(t, "pid.available<1k", "", "", "")}, newPod("stuck", 0, ""), newPod("next", 0, ""))
	f.n.fail["stuck"] = true
	f.p.pods = map[string]PodStats{"uid-stuck": {Processes: u(500)}, "uid-next": {Processes: u(10)}}
	f.p.set(SignalPIDAvailable, 100, 32768)
	if p := f.sync(t); p == nil || p.GetMetadata().GetName() != "next" {
		t.Fatalf("evicted %v, want next after stuck failed", p)
	}
	if _, _, pid := f.m.Pressure(); !pid {
		t.Error("no PIDPressure")
	}
	if got := f.n.evictions()[0].message; got != "The node was low on resource: pids. Threshold quantity: 1k, available: 100. " {
		t.Errorf("message %q", got)
	}
	f.p.podsErr = errors.New("runtime down")
	f.n.pods = append(f.n.pods, newPod("third", 0, ""))
	if _, err := f.m.synchronize(context.Background()); err == nil || !strings.Contains(err.Error(), "runtime down") {
		t.Errorf("synchronize without pod figures = %v, want the error", err)
	}
	if len(f.n.evictions()) != 1 {
		t.Errorf("evicted without figures: %+v", f.n.evictions())
	}
}

// Run measures every interval of its clock.
func TestRunMeasuresEveryInterval(t *testing.T) {
	f := newFixture(t, Config{Thresholds: thresholds(t, DefaultHard, "", "", ""), MonitoringInterval: 10 * time.Second})
	f.p.set(SignalMemoryAvailable, 4*gi, 8*gi)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.m.Run(ctx) }()
	calls := func() int {
		f.p.mu.Lock()
		defer f.p.mu.Unlock()
		return f.p.nodeCalls
	}
	waitFor(t, func() bool { return calls() == 1 && f.clock.HasWaiters() })
	f.clock.Step(10 * time.Second)
	waitFor(t, func() bool { return calls() == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}
