// Package imagegc removes the images no container uses when the image
// filesystem fills up, as upstream's image garbage collector
// (pkg/kubelet/images/image_gc_manager.go): every five minutes, when the
// image filesystem's usage reaches the high threshold, it deletes unused
// images, least recently used first, until usage is back at the low
// threshold.
package imagegc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/sets"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"skiff.dev/client/record"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// The kubelet's flag defaults.
const (
	// DefaultHighThresholdPercent is --image-gc-high-threshold: the usage
	// of the image filesystem at and above which images are collected.
	DefaultHighThresholdPercent = 85
	// DefaultLowThresholdPercent is --image-gc-low-threshold: the usage a
	// collection brings the image filesystem back to.
	DefaultLowThresholdPercent = 80
	// DefaultMinAge is --image-minimum-gc-age: an image detected more
	// recently is kept, since it may have just been pulled for a container
	// about to start.
	DefaultMinAge = 2 * time.Minute
	// DefaultMaxAge is --image-maximum-gc-age: zero collects no image for
	// its age alone.
	DefaultMaxAge = time.Duration(0)
)

// Period is upstream's ImageGCPeriod: how often a collection runs.
const Period = 5 * time.Minute

// Upstream's event reasons (pkg/kubelet/events).
const (
	ReasonImageGCFailed       = "ImageGCFailed"
	ReasonFreeDiskSpaceFailed = "FreeDiskSpaceFailed"
	ReasonInvalidDiskCapacity = "InvalidDiskCapacity"
)

// The values of kubelet_image_garbage_collected_total's reason label.
const (
	reasonSpace = "space"
	reasonAge   = "age"
)

// Runtime is what the collector asks of the CRI runtime.
type Runtime interface {
	ListImages(ctx context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error)
	RemoveImage(ctx context.Context, image *runtimeapi.ImageSpec) error
	ImageFsInfo(ctx context.Context) (*runtimeapi.ImageFsInfoResponse, error)
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
}

// FsStats is the size of a filesystem, as statfs reports it.
type FsStats struct {
	// Capacity is the filesystem's size in bytes.
	Capacity uint64
	// Available is what unprivileged users may still write, in bytes.
	Available uint64
}

// Config configures a Manager.
type Config struct {
	Runtime Runtime
	// HighThresholdPercent and LowThresholdPercent are the flags'
	// values; there is no default for zero (see the Default constants):
	// 0 is a valid threshold. A high threshold of 100 disables the
	// collector, as upstream.
	HighThresholdPercent int
	LowThresholdPercent  int
	// MinAge keeps images detected more recently; MaxAge, if positive,
	// also collects images unused for longer, whatever the usage.
	MinAge time.Duration
	MaxAge time.Duration
	// SandboxImage (--pod-infra-container-image) is never collected: no
	// container lists it, and containerd 1.6 does not pin it.
	SandboxImage string
	// NodeName is the object of the events.
	NodeName string
	Recorder record.Recorder
	// Registerer receives kubelet_image_garbage_collected_total; nil
	// registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Clock is the real clock if nil.
	Clock clock.WithTicker
	// Statfs measures the filesystem mounted at path (the image
	// filesystem's mountpoint the runtime reports); unix.Statfs if nil.
	Statfs func(path string) (FsStats, error)
}

// imageRecord is what the collector remembers of an image between passes.
type imageRecord struct {
	firstDetected time.Time
	lastUsed      time.Time // zero if never seen in use
	size          uint64
	pinned        bool
}

// Manager is the image garbage collector.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	clock   clock.WithTicker
	statfs  func(string) (FsStats, error)
	nodeRef *corev1.Node
	removed *prometheus.CounterVec

	mu          sync.Mutex // one pass at a time; guards the fields below
	records     map[string]*imageRecord
	initialized bool
}

// Validate checks the flags' values as upstream's NewImageGCManager does,
// for the kubelet to refuse them before it connects anywhere.
func Validate(highThresholdPercent, lowThresholdPercent int, minAge, maxAge time.Duration) error {
	if highThresholdPercent < 0 || highThresholdPercent > 100 {
		return fmt.Errorf("invalid HighThresholdPercent %d, must be in range [0-100]", highThresholdPercent)
	}
	if lowThresholdPercent < 0 || lowThresholdPercent > 100 {
		return fmt.Errorf("invalid LowThresholdPercent %d, must be in range [0-100]", lowThresholdPercent)
	}
	if lowThresholdPercent > highThresholdPercent {
		return fmt.Errorf("LowThresholdPercent %d can not be higher than HighThresholdPercent %d", lowThresholdPercent, highThresholdPercent)
	}
	if minAge < 0 || maxAge < 0 {
		return fmt.Errorf("invalid image GC ages: minimum %v and maximum %v must not be negative", minAge, maxAge)
	}
	if maxAge > 0 && maxAge < minAge {
		return fmt.Errorf("invalid image GC ages: maximum %v must be at least the minimum %v", maxAge, minAge)
	}
	return nil
}

// New checks cfg's thresholds (Validate) and returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Runtime == nil {
		return nil, errors.New("imagegc: a runtime is required")
	}
	if err := Validate(cfg.HighThresholdPercent, cfg.LowThresholdPercent, cfg.MinAge, cfg.MaxAge); err != nil {
		return nil, err
	}
	m := &Manager{
		cfg: cfg, log: cfg.Logger, clock: cfg.Clock, statfs: cfg.Statfs,
		nodeRef: &corev1.Node{Metadata: &metav1.ObjectMeta{Name: cfg.NodeName, Uid: cfg.NodeName}},
		records: map[string]*imageRecord{},
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubelet_image_garbage_collected_total",
			Help: "Total number of images garbage collected by the kubelet, whether through disk usage or image age.",
		}, []string{"reason"}),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.clock == nil {
		m.clock = clock.RealClock{}
	}
	if m.statfs == nil {
		m.statfs = statfs
	}
	if m.cfg.Recorder == nil {
		m.cfg.Recorder = &record.FakeRecorder{}
	}
	m.removed.WithLabelValues(reasonSpace)
	m.removed.WithLabelValues(reasonAge)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(m.removed); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Run collects every Period, the first time at once, until ctx ends. A
// failure is an ImageGCFailed event only when the one before failed too:
// the first pass after a start may fail while the runtime settles.
func (m *Manager) Run(ctx context.Context) error {
	if m.cfg.HighThresholdPercent == 100 {
		m.log.Info("ImageGCHighThresholdPercent is set 100, Disable image GC")
		<-ctx.Done()
		return nil
	}
	began := m.clock.Now()
	t := m.clock.NewTicker(Period)
	defer t.Stop()
	prevFailed := false
	for {
		prevFailed = m.pass(ctx, began, prevFailed)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// pass is one collection with Run's reporting; it returns whether it failed.
func (m *Manager) pass(ctx context.Context, began time.Time, prevFailed bool) bool {
	err := m.GarbageCollect(ctx, began)
	if err == nil {
		return false
	}
	if ctx.Err() != nil {
		return prevFailed
	}
	if prevFailed {
		m.log.Error("Image garbage collection failed multiple times in a row", "err", err)
		m.cfg.Recorder.Event(m.nodeRef, record.Warning, ReasonImageGCFailed, err.Error())
	} else {
		m.log.Error("Image garbage collection failed once. Stats initialization may not have completed yet", "err", err)
	}
	return true
}

// evictionInfo is an image that may be collected.
type evictionInfo struct {
	id string
	imageRecord
}

// GarbageCollect is one collection: images unused for longer than MaxAge
// (when set, and once MaxAge has passed since began, the kubelet's
// start), then, if the image filesystem's usage is at or above the high
// threshold, unused images in eviction order until it is at the low one.
func (m *Manager) GarbageCollect(ctx context.Context, began time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	freeTime := m.clock.Now()
	images, err := m.imagesInEvictionOrder(ctx, freeTime)
	if err != nil {
		return err
	}
	if images, err = m.freeOldImages(ctx, images, freeTime, began); err != nil {
		return err
	}

	fs, err := m.imageFsStats(ctx)
	if err != nil {
		return err
	}
	capacity, available := int64(fs.Capacity), int64(fs.Available)
	if available > capacity {
		m.log.Info("Availability is larger than capacity", "available", available, "capacity", capacity)
		available = capacity
	}
	if capacity == 0 {
		err := errors.New("invalid capacity 0 on image filesystem")
		m.cfg.Recorder.Event(m.nodeRef, record.Warning, ReasonInvalidDiskCapacity, err.Error())
		return err
	}
	usagePercent := 100 - int(available*100/capacity)
	if usagePercent < m.cfg.HighThresholdPercent {
		return nil
	}
	amountToFree := capacity*int64(100-m.cfg.LowThresholdPercent)/100 - available
	m.log.Info("Disk usage on image filesystem is over the high threshold, trying to free bytes down to the low threshold",
		"usage", usagePercent, "highThreshold", m.cfg.HighThresholdPercent, "amountToFree", amountToFree, "lowThreshold", m.cfg.LowThresholdPercent)
	freed, err := m.freeSpace(ctx, amountToFree, freeTime, images)
	if err != nil {
		return err
	}
	if freed < amountToFree {
		//lint:ignore ST1005 upstream's message, which users see as the event's
		err := fmt.Errorf("Failed to garbage collect required amount of images. Attempted to free %d bytes, but only found %d bytes eligible to free.", amountToFree, freed)
		m.cfg.Recorder.Event(m.nodeRef, record.Warning, ReasonFreeDiskSpaceFailed, err.Error())
		return err
	}
	return nil
}

// DeleteUnusedImages removes every image that may be collected, whatever
// the usage: what the eviction manager asks under disk pressure.
func (m *Manager) DeleteUnusedImages(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	freeTime := m.clock.Now()
	images, err := m.imagesInEvictionOrder(ctx, freeTime)
	if err != nil {
		return err
	}
	_, err = m.freeSpace(ctx, 1<<62, freeTime, images)
	return err
}

// imageFsStats measures the first image filesystem the runtime reports:
// the runtime knows where its images are, the host knows how full that
// filesystem is (upstream's CRI stats provider does the same with cadvisor).
func (m *Manager) imageFsStats(ctx context.Context) (FsStats, error) {
	resp, err := m.cfg.Runtime.ImageFsInfo(ctx)
	if err != nil {
		return FsStats{}, fmt.Errorf("failed to get imageFs info: %w", err)
	}
	for _, fs := range resp.GetImageFilesystems() {
		mp := fs.GetFsId().GetMountpoint()
		if mp == "" {
			continue
		}
		st, err := m.statfs(mp)
		if err != nil {
			return FsStats{}, fmt.Errorf("failed to get the size of the image filesystem at %q: %w", mp, err)
		}
		return st, nil
	}
	return FsStats{}, errors.New("imageFs information is unavailable")
}

// detectImages refreshes the records from the runtime's images and
// containers, and returns the images some container (of any state: an
// exited one may restart) uses.
func (m *Manager) detectImages(ctx context.Context, detectTime time.Time) (sets.Set[string], error) {
	images, err := m.cfg.Runtime.ListImages(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to list images: %w", err)
	}
	containers, err := m.cfg.Runtime.ListContainers(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to list containers: %w", err)
	}
	// A container names its image by ID (containerd's ImageRef) or by the
	// reference it was created with; an image answers to either.
	refs := sets.New[string]()
	for _, c := range containers {
		refs.Insert(c.GetImageRef(), c.GetImage().GetImage(), c.GetImage().GetUserSpecifiedImage())
	}
	refs.Delete("")
	if m.cfg.SandboxImage != "" {
		refs.Insert(m.cfg.SandboxImage)
	}

	// The first detection after a start dates what it finds in the
	// distant past: those images were there before the kubelet, and are
	// not freshly pulled.
	if !m.initialized {
		detectTime = time.Time{}
	}
	now := m.clock.Now()
	inUse := sets.New[string]()
	current := sets.New[string]()
	for _, img := range images {
		id := img.GetId()
		current.Insert(id)
		r, ok := m.records[id]
		if !ok {
			r = &imageRecord{firstDetected: detectTime}
			m.records[id] = r
		}
		if used(img, refs) {
			inUse.Insert(id)
			r.lastUsed = now
		}
		r.size = img.GetSize()
		r.pinned = img.GetPinned()
	}
	for id := range m.records {
		if !current.Has(id) {
			delete(m.records, id)
		}
	}
	m.initialized = true
	return inUse, nil
}

func used(img *runtimeapi.Image, refs sets.Set[string]) bool {
	if refs.Has(img.GetId()) {
		return true
	}
	for _, r := range [][]string{img.GetRepoTags(), img.GetRepoDigests()} {
		if refs.HasAny(r...) {
			return true
		}
	}
	return false
}

// imagesInEvictionOrder is the images that may be collected, neither in
// use nor pinned, least recently used first, then first detected first.
func (m *Manager) imagesInEvictionOrder(ctx context.Context, freeTime time.Time) ([]evictionInfo, error) {
	inUse, err := m.detectImages(ctx, freeTime)
	if err != nil {
		return nil, err
	}
	var out []evictionInfo
	for id, r := range m.records {
		if inUse.Has(id) || r.pinned {
			continue
		}
		out = append(out, evictionInfo{id: id, imageRecord: *r})
	}
	slices.SortFunc(out, func(a, b evictionInfo) int {
		if c := a.lastUsed.Compare(b.lastUsed); c != 0 {
			return c
		}
		if c := a.firstDetected.Compare(b.firstDetected); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	return out, nil
}

// freeOldImages removes the images unused for longer than MaxAge and
// returns the others. It waits MaxAge after the start, so that an image
// whose use the kubelet has not yet seen is not taken for unused.
func (m *Manager) freeOldImages(ctx context.Context, images []evictionInfo, freeTime, began time.Time) ([]evictionInfo, error) {
	if m.cfg.MaxAge == 0 || freeTime.Sub(began) <= m.cfg.MaxAge {
		return images, nil
	}
	var errs []error
	var remaining []evictionInfo
	for _, img := range images {
		if freeTime.Sub(img.lastUsed) > m.cfg.MaxAge {
			if err := m.freeImage(ctx, img, reasonAge); err != nil {
				errs = append(errs, err)
				remaining = append(remaining, img)
			}
			continue
		}
		remaining = append(remaining, img)
	}
	if len(errs) > 0 {
		return remaining, fmt.Errorf("wanted to free images older than %v, encountered errors in image deletion: %v", m.cfg.MaxAge, utilerrors.NewAggregate(errs))
	}
	return remaining, nil
}

// freeSpace removes images in order, skipping those too young, until
// bytesToFree are freed; it goes on past a failed removal.
func (m *Manager) freeSpace(ctx context.Context, bytesToFree int64, freeTime time.Time, images []evictionInfo) (int64, error) {
	var errs []error
	var freed int64
	for _, img := range images {
		if !img.lastUsed.Before(freeTime) {
			continue // in use during this pass
		}
		// A young image may have just been pulled for a container about
		// to be created.
		if freeTime.Sub(img.firstDetected) < m.cfg.MinAge {
			continue
		}
		if err := m.freeImage(ctx, img, reasonSpace); err != nil {
			errs = append(errs, err)
			continue
		}
		freed += int64(img.size)
		if freed >= bytesToFree {
			break
		}
	}
	if len(errs) > 0 {
		return freed, fmt.Errorf("wanted to free %d bytes, but freed %d bytes space with errors in image deletion: %v", bytesToFree, freed, utilerrors.NewAggregate(errs))
	}
	return freed, nil
}

func (m *Manager) freeImage(ctx context.Context, img evictionInfo, reason string) error {
	m.log.Info("Removing image to free bytes", "imageID", img.id, "size", img.size, "reason", reason)
	if err := m.cfg.Runtime.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: img.id}); err != nil {
		return err
	}
	delete(m.records, img.id)
	m.removed.WithLabelValues(reason).Inc()
	return nil
}
