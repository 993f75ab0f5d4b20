package imagegc

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critesting "k8s.io/cri-api/pkg/apis/testing"
	testingclock "k8s.io/utils/clock/testing"

	"skiff.dev/client/record"
	"skiff.dev/kubelet/internal/cri"
)

const (
	mountpoint = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"
	pause      = "skiff.local/pause:3.10"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeRuntime is cri-api's fakes with the removals in order, and an image
// filesystem whose free space is what the images leave of its capacity.
type fakeRuntime struct {
	*cri.Fake
	mu       sync.Mutex
	removed  []string
	capacity uint64
	other    uint64 // bytes used by something other than images
}

func newFakeRuntime(images []*runtimeapi.Image, containers []*critesting.FakeContainer) *fakeRuntime {
	f := &fakeRuntime{Fake: cri.NewFake(), capacity: 1000}
	f.FakeImageService.Lock()
	for _, img := range images {
		f.FakeImageService.Images[img.Id] = img
	}
	f.FakeImageService.Unlock()
	f.SetFakeContainers(containers)
	f.SetFakeFilesystemUsage([]*runtimeapi.FilesystemUsage{{FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: mountpoint}}})
	return f
}

func (f *fakeRuntime) RemoveImage(ctx context.Context, spec *runtimeapi.ImageSpec) error {
	if err := f.Fake.RemoveImage(ctx, spec); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, spec.Image)
	return nil
}

func (f *fakeRuntime) Removed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.removed)
}

func (f *fakeRuntime) statfs(path string) (FsStats, error) {
	if path != mountpoint {
		return FsStats{}, errors.New("statfs of the wrong path " + path)
	}
	used := f.other
	imgs, _ := f.FakeImageService.ListImages(context.Background(), nil)
	for _, img := range imgs {
		used += img.Size
	}
	return FsStats{Capacity: f.capacity, Available: f.capacity - min(used, f.capacity)}, nil
}

func image(id string, size uint64, tags ...string) *runtimeapi.Image {
	return &runtimeapi.Image{Id: id, Size: size, RepoTags: tags}
}

func container(id, imageRef string, state runtimeapi.ContainerState) *critesting.FakeContainer {
	return &critesting.FakeContainer{ContainerStatus: runtimeapi.ContainerStatus{
		Id: id, ImageRef: imageRef, Image: &runtimeapi.ImageSpec{Image: imageRef}, State: state}}
}

type env struct {
	rt    *fakeRuntime
	clock *testingclock.FakeClock
	rec   *record.FakeRecorder
	m     *Manager
}

func newEnv(t *testing.T, rt *fakeRuntime, mutate func(*Config)) *env {
	t.Helper()
	e := &env{rt: rt, clock: testingclock.NewFakeClock(t0), rec: &record.FakeRecorder{Events: make(chan string, 10)}}
	cfg := Config{
		Runtime: rt, HighThresholdPercent: DefaultHighThresholdPercent, LowThresholdPercent: DefaultLowThresholdPercent,
		MinAge: DefaultMinAge, SandboxImage: pause, NodeName: "node-1",
		Recorder: e.rec, Clock: e.clock, Statfs: rt.statfs, Registerer: prometheus.NewRegistry(),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

func (e *env) events() []string {
	var out []string
	for {
		select {
		case ev := <-e.rec.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func TestGarbageCollect(t *testing.T) {
	old := t0.Add(-time.Hour)
	running, exited := runtimeapi.ContainerState_CONTAINER_RUNNING, runtimeapi.ContainerState_CONTAINER_EXITED
	pinned := image("sha256:pinned", 100, "skiff.local/keep:1")
	pinned.Pinned = true
	tests := []struct {
		name       string
		images     []*runtimeapi.Image
		containers []*critesting.FakeContainer
		// records, when set, is what earlier passes saw; else this is the
		// first pass since the start.
		records     map[string]imageRecord
		other       uint64
		removeErr   error
		wantRemoved []string
		wantEvents  []string
		wantErr     string
	}{{
		name:   "below the high threshold nothing is removed",
		images: []*runtimeapi.Image{image("sha256:a", 300), image("sha256:b", 100)},
		other:  440, // 84%
	}, {
		name:        "at the high threshold unused images go until the low one, least recently used first",
		images:      []*runtimeapi.Image{image("sha256:a", 100), image("sha256:b", 100), image("sha256:c", 100)},
		other:       550, // 85%; 50 bytes to free for 80%
		records:     map[string]imageRecord{"sha256:a": {firstDetected: old, lastUsed: old.Add(2 * time.Minute)}, "sha256:b": {firstDetected: old, lastUsed: old.Add(time.Minute)}, "sha256:c": {firstDetected: old, lastUsed: old.Add(3 * time.Minute)}},
		wantRemoved: []string{"sha256:b"},
	}, {
		name:        "a never used image goes before used ones, the first detected first",
		images:      []*runtimeapi.Image{image("sha256:a", 100), image("sha256:b", 100), image("sha256:c", 100)},
		other:       650, // 95%: 150 to free
		records:     map[string]imageRecord{"sha256:a": {firstDetected: old, lastUsed: old.Add(time.Minute)}, "sha256:b": {firstDetected: old.Add(time.Minute)}, "sha256:c": {firstDetected: old}},
		wantRemoved: []string{"sha256:c", "sha256:b"},
	}, {
		name: "images of containers of any state, the sandbox image and pinned images stay",
		images: []*runtimeapi.Image{image("sha256:run", 200, "skiff.local/agnhost:2.53"), image("sha256:exit", 200, "skiff.local/busybox:1.35"),
			image("sha256:pause", 100, pause), pinned, image("sha256:free", 100, "skiff.local/old:1")},
		containers:  []*critesting.FakeContainer{container("c1", "sha256:run", running), container("c2", "skiff.local/busybox:1.35", exited)},
		other:       300, // 100%: 200 to free, only 100 eligible
		wantRemoved: []string{"sha256:free"},
		wantEvents: []string{"Warning FreeDiskSpaceFailed Failed to garbage collect required amount of images. " +
			"Attempted to free 200 bytes, but only found 100 bytes eligible to free."},
		wantErr: "Attempted to free 200 bytes",
	}, {
		name:        "the first pass after a start takes what it finds for old",
		images:      []*runtimeapi.Image{image("sha256:a", 100)},
		other:       800,
		wantRemoved: []string{"sha256:a"},
	}, {
		name:        "images detected less than the minimum age ago stay",
		images:      []*runtimeapi.Image{image("sha256:old", 100), image("sha256:new", 100)},
		other:       750, // 95%: 150 to free
		records:     map[string]imageRecord{"sha256:old": {firstDetected: old}, "sha256:new": {firstDetected: t0.Add(-time.Minute)}},
		wantRemoved: []string{"sha256:old"},
		wantEvents: []string{"Warning FreeDiskSpaceFailed Failed to garbage collect required amount of images. " +
			"Attempted to free 150 bytes, but only found 100 bytes eligible to free."},
		wantErr: "only found 100 bytes",
	}, {
		name:        "an image newly seen on a later pass is young",
		images:      []*runtimeapi.Image{image("sha256:old", 100), image("sha256:pulled", 100)},
		other:       750,
		records:     map[string]imageRecord{"sha256:old": {firstDetected: old}},
		wantRemoved: []string{"sha256:old"},
		wantErr:     "only found 100 bytes",
		wantEvents: []string{"Warning FreeDiskSpaceFailed Failed to garbage collect required amount of images. " +
			"Attempted to free 150 bytes, but only found 100 bytes eligible to free."},
	}, {
		name:        "a failed removal is reported and the next image is tried",
		images:      []*runtimeapi.Image{image("sha256:a", 100), image("sha256:b", 100)},
		other:       750,
		records:     map[string]imageRecord{"sha256:a": {firstDetected: old}, "sha256:b": {firstDetected: old.Add(time.Second)}},
		removeErr:   errors.New("image is in use by a container"),
		wantRemoved: []string{"sha256:b"},
		wantErr:     "wanted to free 150 bytes, but freed 100 bytes space with errors in image deletion: image is in use by a container",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newFakeRuntime(tt.images, tt.containers)
			rt.other = tt.other
			if tt.removeErr != nil {
				rt.FakeImageService.InjectError("RemoveImage", tt.removeErr)
			}
			e := newEnv(t, rt, nil)
			if tt.records != nil {
				e.m.initialized = true
				for id, r := range tt.records {
					e.m.records[id] = &r
				}
			}
			err := e.m.GarbageCollect(context.Background(), t0.Add(-time.Hour))
			if tt.wantErr == "" && err != nil {
				t.Fatalf("GarbageCollect: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("GarbageCollect: %v, want an error with %q", err, tt.wantErr)
			}
			if got := rt.Removed(); !slices.Equal(got, tt.wantRemoved) {
				t.Errorf("removed %q, want %q", got, tt.wantRemoved)
			}
			if got := e.events(); !slices.Equal(got, tt.wantEvents) {
				t.Errorf("events %q, want %q", got, tt.wantEvents)
			}
			if got := testutil.ToFloat64(e.m.removed.WithLabelValues("space")); got != float64(len(tt.wantRemoved)) {
				t.Errorf(`kubelet_image_garbage_collected_total{reason="space"} = %v, want %d`, got, len(tt.wantRemoved))
			}
		})
	}
}

// TestLastUsedFollowsContainers runs passes as time goes by: the image a
// container used most recently is the last to go.
func TestLastUsedFollowsContainers(t *testing.T) {
	running := runtimeapi.ContainerState_CONTAINER_RUNNING
	rt := newFakeRuntime([]*runtimeapi.Image{image("sha256:a", 100), image("sha256:b", 100), image("sha256:c", 100)}, nil)
	rt.other = 100 // 40%: no removal while usage is low
	e := newEnv(t, rt, nil)
	ctx := context.Background()
	pass := func(containers ...*critesting.FakeContainer) {
		t.Helper()
		rt.SetFakeContainers(containers)
		if err := e.m.GarbageCollect(ctx, t0); err != nil {
			t.Fatal(err)
		}
		e.clock.Step(Period)
	}
	pass(container("1", "sha256:b", running))
	pass(container("2", "sha256:a", running))
	pass(container("3", "sha256:c", running))
	if got := rt.Removed(); len(got) != 0 {
		t.Fatalf("removed %q below the threshold", got)
	}
	rt.other = 600 // 90%: 100 to free; c is in use, b was used before a
	pass(container("3", "sha256:c", running))
	rt.other = 700 // 90% again after b went: a next
	pass(container("3", "sha256:c", running))
	if got, want := rt.Removed(), []string{"sha256:b", "sha256:a"}; !slices.Equal(got, want) {
		t.Errorf("removed %q, want %q", got, want)
	}
}

func TestMaxAge(t *testing.T) {
	rt := newFakeRuntime([]*runtimeapi.Image{image("sha256:stale", 100), image("sha256:recent", 100)}, nil)
	e := newEnv(t, rt, func(c *Config) { c.MaxAge = time.Hour })
	e.m.initialized = true
	e.m.records["sha256:stale"] = &imageRecord{firstDetected: t0.Add(-3 * time.Hour), lastUsed: t0.Add(-2 * time.Hour)}
	e.m.records["sha256:recent"] = &imageRecord{firstDetected: t0.Add(-3 * time.Hour), lastUsed: t0.Add(-30 * time.Minute)}
	ctx := context.Background()
	// Within MaxAge of the start nothing is old: its use may not have been seen.
	if err := e.m.GarbageCollect(ctx, t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := rt.Removed(); len(got) != 0 {
		t.Fatalf("removed %q within MaxAge of the start", got)
	}
	if err := e.m.GarbageCollect(ctx, t0.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, want := rt.Removed(), []string{"sha256:stale"}; !slices.Equal(got, want) {
		t.Errorf("removed %q, want %q", got, want)
	}
	if got := testutil.ToFloat64(e.m.removed.WithLabelValues("age")); got != 1 {
		t.Errorf(`kubelet_image_garbage_collected_total{reason="age"} = %v, want 1`, got)
	}
}

func TestImageFilesystemErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("zero capacity", func(t *testing.T) {
		rt := newFakeRuntime(nil, nil)
		rt.capacity = 0
		e := newEnv(t, rt, nil)
		if err := e.m.GarbageCollect(ctx, t0); err == nil || err.Error() != "invalid capacity 0 on image filesystem" {
			t.Fatalf("GarbageCollect: %v", err)
		}
		if got, want := e.events(), []string{"Warning InvalidDiskCapacity invalid capacity 0 on image filesystem"}; !slices.Equal(got, want) {
			t.Errorf("events %q, want %q", got, want)
		}
	})
	t.Run("no filesystem reported", func(t *testing.T) {
		rt := newFakeRuntime(nil, nil)
		rt.SetFakeFilesystemUsage(nil)
		e := newEnv(t, rt, nil)
		if err := e.m.GarbageCollect(ctx, t0); err == nil || err.Error() != "imageFs information is unavailable" {
			t.Fatalf("GarbageCollect: %v", err)
		}
	})
}

// TestRepeatedFailureIsAnEvent: one failure is logged, the second in a
// row is an ImageGCFailed event, as upstream.
func TestRepeatedFailureIsAnEvent(t *testing.T) {
	rt := newFakeRuntime(nil, nil)
	e := newEnv(t, rt, nil)
	ctx := context.Background()
	rt.FakeImageService.InjectError("ImageFsInfo", errors.New("rpc error: unavailable"))
	rt.FakeImageService.InjectError("ImageFsInfo", errors.New("rpc error: unavailable"))
	failed := e.m.pass(ctx, t0, false)
	if got := e.events(); !failed || len(got) != 0 {
		t.Fatalf("first failure: failed %v, events %q; want failed and no event", failed, got)
	}
	failed = e.m.pass(ctx, t0, failed)
	if got, want := e.events(), []string{"Warning ImageGCFailed failed to get imageFs info: rpc error: unavailable"}; !failed || !slices.Equal(got, want) {
		t.Fatalf("second failure: failed %v, events %q; want %q", failed, got, want)
	}
	if failed = e.m.pass(ctx, t0, failed); failed {
		t.Fatal("a pass that succeeds reports a failure")
	}
}

func TestRunCollectsEveryPeriod(t *testing.T) {
	rt := newFakeRuntime([]*runtimeapi.Image{image("sha256:a", 100), image("sha256:b", 100)}, nil)
	rt.other = 800 // 100%
	e := newEnv(t, rt, nil)
	e.m.initialized = true
	e.m.records["sha256:a"] = &imageRecord{firstDetected: t0.Add(-time.Hour)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.m.Run(ctx) }()
	waitRemoved(t, rt, 1) // at once
	// b was first seen by that pass: young until MinAge has passed.
	e.clock.Step(Period)
	waitRemoved(t, rt, 2)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitRemoved(t *testing.T, rt *fakeRuntime, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(rt.Removed()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("removed %q, want %d images", rt.Removed(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRunDisabledAt100(t *testing.T) {
	rt := newFakeRuntime([]*runtimeapi.Image{image("sha256:a", 100)}, nil)
	rt.other = 900
	e := newEnv(t, rt, func(c *Config) { c.HighThresholdPercent = 100 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if calls := rt.FakeImageService.Called; len(calls) != 0 {
		t.Errorf("a disabled collector called the runtime: %q", calls)
	}
}

func TestNewValidates(t *testing.T) {
	rt := newFakeRuntime(nil, nil)
	for _, tt := range []struct {
		high, low int
		want      string
	}{
		{101, 80, "invalid HighThresholdPercent 101, must be in range [0-100]"},
		{85, -1, "invalid LowThresholdPercent -1, must be in range [0-100]"},
		{80, 85, "LowThresholdPercent 85 can not be higher than HighThresholdPercent 80"},
	} {
		_, err := New(Config{Runtime: rt, HighThresholdPercent: tt.high, LowThresholdPercent: tt.low})
		if err == nil || err.Error() != tt.want {
			t.Errorf("New(high %d, low %d): %v, want %q", tt.high, tt.low, err, tt.want)
		}
	}
}
