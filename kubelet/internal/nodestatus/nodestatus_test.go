package nodestatus

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/record"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

type fakeRuntime struct {
	*critest.FakeRuntimeService
	*critest.FakeImageService
}

func newRuntime() fakeRuntime {
	r := fakeRuntime{critest.NewFakeRuntimeService(), critest.NewFakeImageService()}
	r.setReady(true, "", "")
	return r
}

func (r fakeRuntime) setReady(ready bool, reason, message string) {
	r.FakeRuntimeService.Lock()
	defer r.FakeRuntimeService.Unlock()
	r.FakeStatus = &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: ready, Reason: reason, Message: message},
		{Type: runtimeapi.NetworkReady, Status: true},
	}}
}

func (r fakeRuntime) setImages(imgs ...*runtimeapi.Image) {
	r.FakeImageService.Lock()
	defer r.FakeImageService.Unlock()
	r.Images = map[string]*runtimeapi.Image{}
	for _, i := range imgs {
		r.Images[i.Id] = i
	}
}

type fixture struct {
	cs     *fake.Clientset
	rt     fakeRuntime
	clock  *clocktesting.FakeClock
	events *record.FakeRecorder
	m      *Manager
}

func newFixture(t *testing.T, objs ...*corev1.Node) *fixture {
	t.Helper()
	f := &fixture{rt: newRuntime(), clock: clocktesting.NewFakeClock(t0), events: record.NewFakeRecorder(100)}
	for _, o := range objs {
		f.cs = fake.NewClientset(o)
	}
	if f.cs == nil {
		f.cs = fake.NewClientset()
	}
	t.Cleanup(f.cs.Close)
	var err error
	f.m, err = New(Config{
		Client: f.cs.Client, NodeName: "node-1", NodeIPs: []string{"10.0.0.5"}, Runtime: f.rt,
		SystemReserved: map[string]*metav1.Quantity{"cpu": {String_: "100m"}, "memory": {String_: "100Mi"}},
		KubeReserved:   map[string]*metav1.Quantity{"cpu": {String_: "100m"}, "memory": {String_: "200Mi"}},
		Machine: func() (*Machine, error) {
			return &Machine{NumCores: 4, MemoryBytes: 8 << 30, EphemeralStorageBytes: 100 << 30,
				HugePages: map[string]int64{"hugepages-2Mi": 0, "hugepages-1Gi": 0},
				MachineID: "mid", SystemUUID: "uuid", BootID: "boot", KernelVersion: "6.1.0-test", OSImage: "Debian GNU/Linux 12 (bookworm)"}, nil
		},
		Recorder: f.events, Clock: f.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.m.loadMachine(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) node(t *testing.T) *corev1.Node {
	t.Helper()
	n, err := client.For[*corev1.Node](f.cs.Client, "").Get(context.Background(), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writes are the requests that changed something, as "verb resource/subresource".
func (f *fixture) writes() []string {
	var out []string
	for _, a := range f.cs.Actions() {
		switch a.Verb {
		case "create", "update", "patch", "delete":
			out = append(out, strings.TrimSuffix(a.Verb+" "+a.Resource+"/"+a.Subresource, "/"))
		}
	}
	return out
}

func quantityStrings(in map[string]*metav1.Quantity) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		out[k] = v.GetString_()
	}
	return out
}

func conditionsOf(n *corev1.Node) []string {
	var out []string
	for _, c := range n.GetStatus().GetConditions() {
		out = append(out, fmt.Sprintf("%s=%s %s %q", c.Type, c.Status, c.Reason, c.Message))
	}
	return out
}

// A new node registers with what `kubectl describe node` shows upstream.
func TestRegisterCreates(t *testing.T) {
	f := newFixture(t)
	f.rt.setImages(&runtimeapi.Image{Id: "sha256:p", RepoTags: []string{"skiff.local/pause:3.10"}, RepoDigests: []string{"skiff.local/pause@sha256:p"}, Size: 300_000})
	if err := f.m.register(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := f.node(t)
	md := n.GetMetadata()
	wantLabels := map[string]string{"kubernetes.io/hostname": "node-1", "kubernetes.io/os": "linux", "kubernetes.io/arch": runtime.GOARCH,
		"beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": runtime.GOARCH}
	for k, v := range wantLabels {
		if md.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, md.Labels[k], v)
		}
	}
	if md.Annotations["volumes.kubernetes.io/controller-managed-attach-detach"] != "true" {
		t.Errorf("annotations %v", md.Annotations)
	}
	st := n.GetStatus()
	var addrs []string
	for _, a := range st.Addresses {
		addrs = append(addrs, a.Type+"="+a.Address)
	}
	if want := []string{"InternalIP=10.0.0.5", "Hostname=node-1"}; !slices.Equal(addrs, want) {
		t.Errorf("addresses %v, want %v", addrs, want)
	}
	if got, want := fmt.Sprint(quantityStrings(st.Capacity)), fmt.Sprint(map[string]string{"cpu": "4", "memory": "8Gi", "pods": "110",
		"ephemeral-storage": "100Gi", "hugepages-2Mi": "0", "hugepages-1Gi": "0"}); got != want {
		t.Errorf("capacity %s, want %s", got, want)
	}
	// 8Gi - 100Mi system - 200Mi kube - 100Mi eviction; 100Gi less nodefs.available 10%.
	if got, want := fmt.Sprint(quantityStrings(st.Allocatable)), fmt.Sprint(map[string]string{"cpu": "3800m", "memory": "7792Mi", "pods": "110",
		"ephemeral-storage": "90Gi", "hugepages-2Mi": "0", "hugepages-1Gi": "0"}); got != want {
		t.Errorf("allocatable %s, want %s", got, want)
	}
	ni := st.NodeInfo
	if ni.MachineID != "mid" || ni.SystemUUID != "uuid" || ni.BootID != "boot" || ni.KernelVersion != "6.1.0-test" ||
		ni.OsImage != "Debian GNU/Linux 12 (bookworm)" || ni.ContainerRuntimeVersion != "fakeRuntime://0.1.0" ||
		ni.KubeletVersion != KubeletVersion || ni.OperatingSystem != "linux" || ni.Architecture != runtime.GOARCH {
		t.Errorf("nodeInfo %v", ni)
	}
	if st.DaemonEndpoints.GetKubeletEndpoint().GetPort() != 10250 {
		t.Errorf("daemonEndpoints %v", st.DaemonEndpoints)
	}
	if len(st.Images) != 1 || !slices.Equal(st.Images[0].Names, []string{"skiff.local/pause@sha256:p", "skiff.local/pause:3.10"}) || st.Images[0].SizeBytes != 300_000 {
		t.Errorf("images %v", st.Images)
	}
	want := []string{
		`MemoryPressure=False KubeletHasSufficientMemory "kubelet has sufficient memory available"`,
		`DiskPressure=False KubeletHasNoDiskPressure "kubelet has no disk pressure"`,
		`PIDPressure=False KubeletHasSufficientPID "kubelet has sufficient PID available"`,
		`Ready=True KubeletReady "kubelet is posting ready status"`,
	}
	if got := conditionsOf(n); !slices.Equal(got, want) {
		t.Errorf("conditions\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range st.Conditions {
		if !c.LastHeartbeatTime.AsTime().Equal(t0) || !c.LastTransitionTime.AsTime().Equal(t0) {
			t.Errorf("%s: heartbeat %v transition %v, want %v", c.Type, c.LastHeartbeatTime.AsTime(), c.LastTransitionTime.AsTime(), t0)
		}
	}
	if w := f.writes(); !slices.Equal(w, []string{"create nodes"}) {
		t.Errorf("writes %v", w)
	}
}

// A node that exists (a restarted kubelet) gets back the labels the kubelet
// owns; others' labels stay.
func TestRegisterReconcilesExisting(t *testing.T) {
	f := newFixture(t, &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "node-1",
		Labels: map[string]string{"kubernetes.io/arch": "s390x", "team": "a"}}})
	if err := f.m.register(context.Background()); err != nil {
		t.Fatal(err)
	}
	l := f.node(t).GetMetadata().GetLabels()
	if l["kubernetes.io/arch"] != runtime.GOARCH || l["team"] != "a" || l["kubernetes.io/hostname"] != "node-1" {
		t.Errorf("labels %v", l)
	}
	if w := f.writes(); !slices.Equal(w, []string{"create nodes", "update nodes"}) {
		t.Errorf("writes %v", w)
	}
	// The status loop then writes the status the existing node lacked.
	if wrote, err := f.m.syncStatus(context.Background()); err != nil || !wrote {
		t.Fatalf("syncStatus = %v, %v", wrote, err)
	}
	if c := conditionsOf(f.node(t)); len(c) != 4 {
		t.Errorf("conditions %v", c)
	}
}

func TestAllocatable(t *testing.T) {
	c := capacity(&Machine{NumCores: 1, MemoryBytes: 1 << 30, EphemeralStorageBytes: 10 << 30,
		HugePages: map[string]int64{"hugepages-2Mi": 256 << 20}}, 10)
	sys, err := ParseResourceList("cpu=2,memory=100Mi,ephemeral-storage=1Gi")
	if err != nil {
		t.Fatal(err)
	}
	a := quantities(allocatable(c, sys, nil, defaultEvictionReserved(c)))
	// cpu never negative; memory less reserved, eviction and huge pages.
	got := quantityStrings(a)
	want := map[string]string{"cpu": "0", "memory": "568Mi", "pods": "10", "ephemeral-storage": "8Gi", "hugepages-2Mi": "256Mi"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("allocatable %v, want %v", got, want)
	}
}

func TestParseResourceList(t *testing.T) {
	for in, want := range map[string]string{
		"cpu=100m,memory=100Mi": "map[cpu:100m memory:100Mi]",
		"":                      "map[]",
	} {
		l, err := ParseResourceList(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		got := map[string]string{}
		for k, v := range l {
			got[k] = v.String()
		}
		if fmt.Sprint(got) != want {
			t.Errorf("%q = %v, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"cpu":         "not name=quantity",
		"cpu=lots":    `cpu="lots"`,
		"gpu=1":       "not a reservable resource",
		"memory=-1Mi": "must not be negative",
	} {
		if _, err := ParseResourceList(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want %q", in, err, want)
		}
	}
}

// Status is written when it changes, or after the report frequency with
// fresh heartbeats; in between an unchanged status costs no write.
func TestStatusWrittenOnChangeOrReportFrequency(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.m.register(ctx); err != nil {
		t.Fatal(err)
	}
	sync := func(step time.Duration) bool {
		t.Helper()
		f.clock.Step(step)
		wrote, err := f.m.syncStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return wrote
	}
	for i := range 5 {
		if sync(10 * time.Second) {
			t.Fatalf("tick %d wrote an unchanged status", i)
		}
	}
	f.rt.setImages(&runtimeapi.Image{Id: "sha256:a", RepoTags: []string{"skiff.local/agnhost:2.53"}, Size: 1000})
	if !sync(10 * time.Second) { // t0+60s
		t.Fatal("a new image was not written")
	}
	if imgs := f.node(t).GetStatus().GetImages(); len(imgs) != 1 {
		t.Fatalf("images %v", imgs)
	}
	if sync(4*time.Minute + 50*time.Second) { // 4m50s after the last write
		t.Fatal("wrote before the report frequency")
	}
	if !sync(10 * time.Second) {
		t.Fatal("no write at the report frequency")
	}
	for _, c := range f.node(t).GetStatus().GetConditions() {
		if !c.LastHeartbeatTime.AsTime().Equal(t0.Add(6*time.Minute)) || !c.LastTransitionTime.AsTime().Equal(t0) {
			t.Errorf("%s: heartbeat %v, transition %v", c.Type, c.LastHeartbeatTime.AsTime(), c.LastTransitionTime.AsTime())
		}
	}
	if w := f.writes(); !slices.Equal(w, []string{"create nodes", "update nodes/status", "update nodes/status"}) {
		t.Errorf("writes %v", w)
	}
}

// A runtime that says it is not ready makes the node NotReady with its
// reason, and ready again when it recovers; each transition is timed.
func TestNotReadyWhenRuntimeIsNot(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.m.register(ctx); err != nil {
		t.Fatal(err)
	}
	ready := func() *corev1.NodeCondition {
		return findCondition(f.node(t).GetStatus(), "Ready")
	}
	f.rt.setReady(false, "ContainerdNotReady", "shim gone")
	f.clock.Step(10 * time.Second)
	if wrote, err := f.m.syncStatus(ctx); err != nil || !wrote {
		t.Fatalf("syncStatus = %v, %v", wrote, err)
	}
	c := ready()
	if c.Status != "False" || c.Reason != "KubeletNotReady" ||
		c.Message != "container runtime not ready: RuntimeReady=false reason:ContainerdNotReady message:shim gone" ||
		!c.LastTransitionTime.AsTime().Equal(t0.Add(10*time.Second)) {
		t.Errorf("Ready %v", c)
	}
	f.rt.FakeRuntimeService.InjectError("Status", errors.New("connection refused"))
	f.clock.Step(10 * time.Second)
	if _, err := f.m.syncStatus(ctx); err != nil {
		t.Fatal(err)
	}
	if c := ready(); c.Message != "container runtime is down" || !c.LastTransitionTime.AsTime().Equal(t0.Add(10*time.Second)) {
		t.Errorf("Ready %v", c)
	}
	f.rt.setReady(true, "", "")
	f.clock.Step(10 * time.Second)
	if _, err := f.m.syncStatus(ctx); err != nil {
		t.Fatal(err)
	}
	if c := ready(); c.Status != "True" || c.Reason != "KubeletReady" || !c.LastTransitionTime.AsTime().Equal(t0.Add(30*time.Second)) {
		t.Errorf("Ready %v", c)
	}
	var evs []string
	for len(f.events.Events) > 0 {
		evs = append(evs, <-f.events.Events)
	}
	if !slices.Contains(evs, "Normal NodeNotReady Node node-1 status is now: NodeNotReady") ||
		!slices.Contains(evs, "Normal NodeReady Node node-1 status is now: NodeReady") {
		t.Errorf("events %v", evs)
	}
}

// Another writer's change (the node lifecycle controller setting Ready
// Unknown) is seen and put right on the next tick.
func TestStatusRewrittenAfterOthersChange(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.m.register(ctx); err != nil {
		t.Fatal(err)
	}
	n := f.node(t)
	findCondition(n.Status, "Ready").Status = "Unknown"
	n, err := client.For[*corev1.Node](f.cs.Client, "").UpdateStatus(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	f.m.observe(n)
	if wrote, err := f.m.syncStatus(ctx); err != nil || !wrote {
		t.Fatalf("syncStatus = %v, %v", wrote, err)
	}
	if c := findCondition(f.node(t).GetStatus(), "Ready"); c.Status != "True" {
		t.Errorf("Ready %v", c)
	}
}

// A stale copy conflicts; the write is retried against a fresh read.
func TestStatusConflictRetried(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.m.register(ctx); err != nil {
		t.Fatal(err)
	}
	n := f.node(t)
	n.Metadata.Labels["x"] = "y"
	if _, err := client.For[*corev1.Node](f.cs.Client, "").Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	f.rt.setReady(false, "r", "m")
	if wrote, err := f.m.syncStatus(ctx); err != nil || !wrote {
		t.Fatalf("syncStatus = %v, %v", wrote, err)
	}
	got := f.node(t)
	if findCondition(got.Status, "Ready").Status != "False" || got.Metadata.Labels["x"] != "y" {
		t.Errorf("node %v", got)
	}
}

// Run renews the Lease every quarter of its duration, owned by the Node,
// and an idle node writes nothing else.
func TestRunLeaseCadence(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	leases := client.For[*coordinationv1.Lease](f.cs.Client, LeaseNamespace)
	renewals := func() []time.Duration {
		var out []time.Duration
		for _, a := range f.cs.Actions() {
			if a.Resource == "leases" && (a.Verb == "create" || a.Verb == "update") {
				l := a.Object.(*coordinationv1.Lease)
				out = append(out, time.Unix(l.Spec.RenewTime.Seconds, int64(l.Spec.RenewTime.Nanos)).Sub(t0))
			}
		}
		return out
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; writes %v, renewals %v", what, f.writes(), renewals())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("the lease and both tickers", func() bool { return len(renewals()) == 1 && f.clock.Waiters() == 2 })
	l, err := leases.Get(ctx, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	uid := f.node(t).GetMetadata().GetUid()
	if l.Spec.GetHolderIdentity() != "node-1" || l.Spec.GetLeaseDurationSeconds() != 40 || len(l.Metadata.OwnerReferences) != 1 ||
		l.Metadata.OwnerReferences[0].Kind != "Node" || l.Metadata.OwnerReferences[0].Uid != uid || l.Metadata.OwnerReferences[0].ApiVersion != "v1" {
		t.Errorf("lease %v", l)
	}
	f.clock.Step(9 * time.Second)
	f.clock.Step(1 * time.Second)
	waitFor("the first renewal", func() bool { return len(renewals()) == 2 })
	for i := 2; i <= 6; i++ {
		f.clock.Step(10 * time.Second)
		waitFor(fmt.Sprintf("renewal %d", i), func() bool { return len(renewals()) == i+1 })
	}
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 30 * time.Second, 40 * time.Second, 50 * time.Second, 60 * time.Second}
	if got := renewals(); !slices.Equal(got, want) {
		t.Errorf("renewals at %v, want %v", got, want)
	}
	want2 := []string{"create nodes", "create leases"}
	for range 6 {
		want2 = append(want2, "update leases")
	}
	if w := f.writes(); !slices.Equal(w, want2) {
		t.Errorf("writes %v, want %v", w, want2)
	}
}

// The pressure conditions follow the eviction manager with upstream's
// reasons, messages and events, the transition time moving only when the
// status does.
func TestPressureConditions(t *testing.T) {
	f := newFixture(t)
	var memory, disk, pid bool
	f.m.cfg.Pressure = func() (bool, bool, bool) { return memory, disk, pid }
	if err := f.m.register(context.Background()); err != nil {
		t.Fatal(err)
	}
	drain := func() []string {
		var out []string
		for len(f.events.Events) > 0 {
			out = append(out, <-f.events.Events)
		}
		return out
	}
	drain()
	memory, disk, pid = true, true, true
	f.clock.Step(10 * time.Second)
	if wrote, err := f.m.syncStatus(context.Background()); err != nil || !wrote {
		t.Fatalf("syncStatus = %v, %v", wrote, err)
	}
	want := []string{
		`MemoryPressure=True KubeletHasInsufficientMemory "kubelet has insufficient memory available"`,
		`DiskPressure=True KubeletHasDiskPressure "kubelet has disk pressure"`,
		`PIDPressure=True KubeletHasInsufficientPID "kubelet has insufficient PID available"`,
		`Ready=True KubeletReady "kubelet is posting ready status"`,
	}
	n := f.node(t)
	if got := conditionsOf(n); !slices.Equal(got, want) {
		t.Errorf("conditions\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range n.GetStatus().GetConditions() {
		if c.Type != "Ready" && !c.LastTransitionTime.AsTime().Equal(t0.Add(10*time.Second)) {
			t.Errorf("%s: transition %v, want %v", c.Type, c.LastTransitionTime.AsTime(), t0.Add(10*time.Second))
		}
	}
	wantEvents := []string{
		"Normal NodeHasInsufficientMemory Node node-1 status is now: NodeHasInsufficientMemory",
		"Normal NodeHasDiskPressure Node node-1 status is now: NodeHasDiskPressure",
		"Normal NodeHasInsufficientPID Node node-1 status is now: NodeHasInsufficientPID",
	}
	if got := drain(); !slices.Equal(got, wantEvents) {
		t.Errorf("events %v, want %v", got, wantEvents)
	}
	// Still under pressure: nothing new to say.
	f.clock.Step(10 * time.Second)
	if _, err := f.m.syncStatus(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := drain(); len(got) != 0 {
		t.Errorf("events while the pressure lasts: %v", got)
	}
	disk = false
	f.clock.Step(10 * time.Second)
	if _, err := f.m.syncStatus(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := conditionsOf(f.node(t))[1]; got != `DiskPressure=False KubeletHasNoDiskPressure "kubelet has no disk pressure"` {
		t.Errorf("DiskPressure after the pressure: %s", got)
	}
	if got := drain(); !slices.Equal(got, []string{"Normal NodeHasNoDiskPressure Node node-1 status is now: NodeHasNoDiskPressure"}) {
		t.Errorf("events %v", got)
	}
}

// Allocatable reserves what the configured hard thresholds say.
func TestEvictionReserved(t *testing.T) {
	f := newFixture(t)
	f.m.cfg.EvictionReserved = func(c map[string]resource.Quantity) map[string]resource.Quantity {
		es := c["ephemeral-storage"]
		return map[string]resource.Quantity{"ephemeral-storage": *resource.NewQuantity(es.Value()/2, resource.BinarySI)}
	}
	if err := f.m.register(context.Background()); err != nil {
		t.Fatal(err)
	}
	// No memory threshold: 8Gi less 100Mi system and 200Mi kube only.
	a := quantityStrings(f.node(t).GetStatus().GetAllocatable())
	if a["memory"] != "7892Mi" || a["ephemeral-storage"] != "50Gi" {
		t.Errorf("allocatable %v", a)
	}
}
