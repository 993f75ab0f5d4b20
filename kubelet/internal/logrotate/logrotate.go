// Package logrotate rotates the log files the runtime writes for running
// containers, as upstream's container log manager
// (pkg/kubelet/logs/container_log_manager.go): a log that reached the
// maximum size is renamed <log>.<timestamp>, the runtime is asked to
// reopen the log at its path, older rotated files are gzipped, and the
// oldest removed so that at most MaxFiles remain, the current one
// included.
package logrotate

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"
)

// The kubelet's flag defaults.
const (
	// DefaultMaxSize is --container-log-max-size: a quantity; a log this
	// large is rotated.
	DefaultMaxSize = "10Mi"
	// DefaultMaxFiles is --container-log-max-files: the files a
	// container's log may span, the current one included.
	DefaultMaxFiles = 5
	// DefaultMonitorInterval is --container-log-monitor-interval: how
	// often the logs are checked.
	DefaultMonitorInterval = 10 * time.Second
)

const (
	// timestampFormat is upstream's suffix of a rotated log.
	timestampFormat = "20060102-150405"
	compressSuffix  = ".gz"
	tmpSuffix       = ".tmp"
)

// Runtime is what the rotation asks of the CRI runtime.
type Runtime interface {
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
	ContainerStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.ContainerStatusResponse, error)
	ReopenContainerLog(ctx context.Context, id string) error
}

// Config configures a Manager.
type Config struct {
	Runtime Runtime
	// MaxSize is --container-log-max-size, a quantity ("10Mi"); a
	// negative one disables the rotation, as upstream.
	MaxSize string
	// MaxFiles is --container-log-max-files; it must be more than 1.
	MaxFiles int
	// Interval is how often the logs are checked (DefaultMonitorInterval
	// if zero).
	Interval time.Duration
	Logger   *slog.Logger
	// Clock is the real clock if nil.
	Clock clock.WithTicker
}

// Validate checks the flags' values as upstream's NewContainerLogManager
// does, for the kubelet to refuse them before it connects anywhere.
func Validate(maxSize string, maxFiles int) error {
	_, err := parse(maxSize, maxFiles)
	return err
}

func parse(maxSize string, maxFiles int) (int64, error) {
	if maxFiles <= 1 {
		return 0, fmt.Errorf("invalid MaxFiles %d, must be > 1", maxFiles)
	}
	q, err := resource.ParseQuantity(maxSize)
	if err != nil {
		return 0, fmt.Errorf("failed to parse container log max size %q: %w", maxSize, err)
	}
	return q.Value(), nil
}

// Manager rotates the containers' logs.
type Manager struct {
	cfg     Config
	maxSize int64
	log     *slog.Logger
	clock   clock.WithTicker
	// mu keeps a rotation and a Clean of the same files apart.
	mu sync.Mutex
}

// New checks cfg and returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Runtime == nil {
		return nil, errors.New("logrotate: a runtime is required")
	}
	maxSize, err := parse(cfg.MaxSize, cfg.MaxFiles)
	if err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultMonitorInterval
	}
	m := &Manager{cfg: cfg, maxSize: maxSize, log: cfg.Logger, clock: cfg.Clock}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.clock == nil {
		m.clock = clock.RealClock{}
	}
	return m, nil
}

// Run rotates at once and then every Interval until ctx ends; a negative
// MaxSize does nothing.
func (m *Manager) Run(ctx context.Context) error {
	if m.maxSize < 0 {
		<-ctx.Done()
		return nil
	}
	t := m.clock.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		if err := m.RotateLogs(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("Failed to rotate container logs", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// RotateLogs checks the log of every running container once: the others
// write nothing more, and an empty newest log of theirs would hide what
// they wrote.
func (m *Manager) RotateLogs(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	containers, err := m.cfg.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{})
	if err != nil {
		return fmt.Errorf("failed to list containers: %w", err)
	}
	for _, c := range containers {
		if c.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		m.processContainer(ctx, c.GetId())
	}
	return nil
}

// processContainer rotates one container's log if it is too large; a
// failure is logged and the next container tried.
func (m *Manager) processContainer(ctx context.Context, id string) {
	resp, err := m.cfg.Runtime.ContainerStatus(ctx, id, false)
	if err != nil {
		m.log.Error("Failed to get container status", "containerID", id, "err", err)
		return
	}
	path := resp.GetStatus().GetLogPath()
	if path == "" {
		return // the container was created without a log
	}
	info, err := os.Stat(path)
	if err != nil {
		if !os.IsNotExist(err) {
			m.log.Error("Failed to stat container log", "containerID", id, "path", path, "err", err)
			return
		}
		// A rotation whose reopen failed, and whose rename back failed
		// too, leaves no log at path: the reopen creates it again.
		if err := m.cfg.Runtime.ReopenContainerLog(ctx, id); err != nil {
			m.log.Error("Container log doesn't exist, reopen container log failed", "containerID", id, "path", path, "err", err)
			return
		}
		if info, err = os.Stat(path); err != nil {
			m.log.Error("Failed to stat container log after reopen", "containerID", id, "path", path, "err", err)
			return
		}
	}
	if info.Size() < m.maxSize {
		return
	}
	if err := m.rotateLog(ctx, id, path); err != nil {
		m.log.Error("Failed to rotate log for container", "containerID", id, "path", path, "err", err)
	}
}

// rotatedLogs is the files of an earlier rotation of log: <log>.<anything>.
func rotatedLogs(log string) ([]string, error) {
	dir, base := filepath.Split(log)
	entries, err := os.ReadDir(filepath.Clean(dir))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), base+".") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

func (m *Manager) rotateLog(ctx context.Context, id, log string) error {
	logs, err := rotatedLogs(log)
	if err != nil {
		return fmt.Errorf("failed to list the rotated logs of %q: %w", log, err)
	}
	if logs, err = cleanupUnusedLogs(logs); err != nil {
		return fmt.Errorf("failed to cleanup logs: %w", err)
	}
	if logs, err = m.removeExcessLogs(logs); err != nil {
		return fmt.Errorf("failed to remove excess logs: %w", err)
	}
	// The newest rotated file is left uncompressed until the next
	// rotation: a reader (kubectl logs -f, a log shipper) may still be
	// finishing it.
	for _, l := range logs {
		if strings.HasSuffix(l, compressSuffix) {
			continue
		}
		if err := compressLog(l); err != nil {
			return fmt.Errorf("failed to compress log %q: %w", l, err)
		}
	}
	if err := m.rotateLatestLog(ctx, id, log); err != nil {
		return fmt.Errorf("failed to rotate log %q: %w", log, err)
	}
	return nil
}

// cleanupUnusedLogs removes what an interrupted rotation left: temporary
// files, and rotated files whose compressed copy is complete.
func cleanupUnusedLogs(logs []string) ([]string, error) {
	var inuse []string
	for _, l := range logs {
		if isInUse(l, logs) {
			inuse = append(inuse, l)
			continue
		}
		if err := os.Remove(l); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("failed to remove unused log %q: %w", l, err)
		}
	}
	return inuse, nil
}

func isInUse(l string, logs []string) bool {
	if strings.HasSuffix(l, tmpSuffix) {
		return false
	}
	if strings.HasSuffix(l, compressSuffix) {
		return true
	}
	return !slices.Contains(logs, l+compressSuffix)
}

// removeExcessLogs removes the oldest rotated files so that, with the one
// about to be rotated and the new one the runtime opens, MaxFiles remain.
// The timestamps sort as the names do.
func (m *Manager) removeExcessLogs(logs []string) ([]string, error) {
	slices.Sort(logs)
	keep := max(m.cfg.MaxFiles-2, 0)
	i := 0
	for ; i < len(logs)-keep; i++ {
		if err := os.Remove(logs[i]); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("failed to remove old log %q: %w", logs[i], err)
		}
	}
	return logs[i:], nil
}

// compressLog replaces log with log.gz, written to a temporary file first
// so that a crash never leaves a truncated .gz that looks complete.
func compressLog(log string) (err error) {
	r, err := os.Open(log)
	if err != nil {
		return fmt.Errorf("failed to open log %q: %w", log, err)
	}
	defer r.Close()
	tmp := log + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("failed to create temporary log %q: %w", tmp, err)
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(tmp)
		}
	}()
	w := gzip.NewWriter(f)
	if _, err := io.Copy(w, r); err != nil {
		return fmt.Errorf("failed to compress %q to %q: %w", log, tmp, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("failed to compress %q to %q: %w", log, tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("failed to write %q: %w", tmp, err)
	}
	if err := os.Rename(tmp, log+compressSuffix); err != nil {
		return fmt.Errorf("failed to rename %q to %q: %w", tmp, log+compressSuffix, err)
	}
	if err := os.Remove(log); err != nil {
		return fmt.Errorf("failed to remove log %q after compress: %w", log, err)
	}
	return nil
}

// rotateLatestLog renames the current log and has the runtime open a new
// one at its path. If the runtime cannot, the log is renamed back to be
// rotated on a later pass: the runtime still writes to the renamed file.
func (m *Manager) rotateLatestLog(ctx context.Context, id, log string) error {
	rotated := log + "." + m.clock.Now().Format(timestampFormat)
	if err := os.Rename(log, rotated); err != nil {
		return fmt.Errorf("failed to rotate log %q to %q: %w", log, rotated, err)
	}
	if err := m.cfg.Runtime.ReopenContainerLog(ctx, id); err != nil {
		if rerr := os.Rename(rotated, log); rerr != nil {
			// The log is lost to readers of its path until the next pass
			// has the runtime reopen it.
			m.log.Error("Failed to rename rotated log", "rotatedLog", rotated, "newLog", log, "containerID", id, "err", rerr)
		}
		return fmt.Errorf("failed to reopen container log %q: %w", id, err)
	}
	return nil
}

// Clean removes a container's log and its rotated files, before the
// container is removed (upstream's kuberuntime removeContainerLog).
func (m *Manager) Clean(ctx context.Context, containerID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	resp, err := m.cfg.Runtime.ContainerStatus(ctx, containerID, false)
	if err != nil {
		return fmt.Errorf("failed to get container status %q: %w", containerID, err)
	}
	log := resp.GetStatus().GetLogPath()
	if log == "" {
		return nil
	}
	logs, err := rotatedLogs(log)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("failed to list the logs of container %q: %w", containerID, err)
	}
	for _, l := range append(logs, log) {
		if err := os.Remove(l); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("failed to remove container %q log %q: %w", containerID, l, err)
		}
	}
	return nil
}
