// Package eviction is the kubelet's eviction manager
// (pkg/kubelet/eviction): every monitoring interval it measures the node's
// memory, disks and process table against the --eviction-hard and
// --eviction-soft thresholds, says which of MemoryPressure, DiskPressure
// and PIDPressure the node is under (for its status and for admission),
// and, when a hard threshold is crossed or a soft one has been for its
// grace period, first reclaims what the node holds for itself (unused
// images) and then, if that was not enough, evicts one pod per interval,
// chosen as upstream ranks them.
//
// A condition stays true until its signals have been fine for the whole
// --eviction-pressure-transition-period, so that a node does not flap
// between accepting and refusing pods. Static and critical pods are never
// evicted.
package eviction

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"skiff.dev/client/record"
	"skiff.dev/kubelet/internal/admission"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Reason is an evicted pod's status reason and its event's.
const Reason = admission.Evicted

// ReasonThresholdMet is the node's event when the manager starts
// reclaiming (upstream's "EvictionThresholdMet").
const ReasonThresholdMet = "EvictionThresholdMet"

// ImageGC removes every image no container uses
// (kubelet/internal/imagegc.Manager).
type ImageGC interface {
	DeleteUnusedImages(ctx context.Context) error
}

// ContainerGC removes the containers that will not run again.
type ContainerGC interface {
	DeleteAllUnusedContainers(ctx context.Context) error
}

// Config wires a Manager.
type Config struct {
	Thresholds []Threshold
	// PressureTransitionPeriod is how long a condition stays true after
	// its signals were last seen under a threshold; zero clears it at once.
	PressureTransitionPeriod time.Duration
	// MaxPodGracePeriodSeconds bounds the grace period of pods evicted
	// for a soft threshold; negative leaves it to the pod. Hard
	// thresholds give none.
	MaxPodGracePeriodSeconds int64
	// MonitoringInterval is how often the signals are measured
	// (DefaultMonitoringInterval if 0).
	MonitoringInterval time.Duration

	Provider Provider
	// ActivePods are the pods the kubelet runs (terminal ones are skipped).
	ActivePods func() []*corev1.Pod
	// Evict stops pod for good: status Failed with reason and message,
	// its containers killed within grace seconds.
	Evict func(ctx context.Context, pod *corev1.Pod, reason, message string, grace *int64) error
	// ImageGC and ContainerGC reclaim disk before any pod is evicted;
	// nil ones are skipped.
	ImageGC     ImageGC
	ContainerGC ContainerGC

	NodeName string
	Recorder record.Recorder
	// Registerer receives kubelet_evictions and
	// kubelet_eviction_stats_age_seconds; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Clock      clock.WithTicker
}

// Manager is the eviction manager.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	clock   clock.WithTicker
	nodeRef *corev1.Node

	evictions *prometheus.CounterVec
	statsAge  *prometheus.HistogramVec

	mu sync.RWMutex
	// conditions are the node conditions reported now, the transition
	// period included.
	conditions []string
	// conditionsLastObservedAt is when each condition's signals were last
	// seen under a threshold.
	conditionsLastObservedAt map[string]time.Time
	// thresholdsFirstObservedAt is when each threshold met (by key) was
	// first seen met, for the grace periods.
	thresholdsFirstObservedAt map[string]time.Time
	// thresholdsMet are those met past their grace period, kept met
	// until their minimum reclaim is back.
	thresholdsMet []Threshold
	// unmeasured are the signals of thresholds last found without an
	// observation, logged when that changes.
	unmeasured []Signal
}

// New returns a Manager; Run starts it.
func New(cfg Config) (*Manager, error) {
	if cfg.Provider == nil || cfg.ActivePods == nil || cfg.Evict == nil {
		return nil, errors.New("eviction: Provider, ActivePods and Evict are required")
	}
	if cfg.MonitoringInterval <= 0 {
		cfg.MonitoringInterval = DefaultMonitoringInterval
	}
	if cfg.Recorder == nil {
		cfg.Recorder = &record.FakeRecorder{}
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, clock: cfg.Clock,
		nodeRef:                   &corev1.Node{Metadata: &metav1.ObjectMeta{Name: cfg.NodeName, Uid: cfg.NodeName}},
		conditionsLastObservedAt:  map[string]time.Time{},
		thresholdsFirstObservedAt: map[string]time.Time{},
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kubelet_evictions",
			Help: "Cumulative number of pod evictions by eviction signal"}, []string{"eviction_signal"}),
		statsAge: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kubelet_eviction_stats_age_seconds",
			Help:    "Time between when stats are collected, and when pod is evicted based on those stats by eviction signal",
			Buckets: prometheus.DefBuckets}, []string{"eviction_signal"}),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.clock == nil {
		m.clock = clock.RealClock{}
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{m.evictions, m.statsAge} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// Pressure says which conditions the node is under now (upstream's
// IsUnderMemoryPressure, IsUnderDiskPressure, IsUnderPIDPressure).
func (m *Manager) Pressure() (memory, disk, pid bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Contains(m.conditions, ConditionMemoryPressure), slices.Contains(m.conditions, ConditionDiskPressure),
		slices.Contains(m.conditions, ConditionPIDPressure)
}

// Run measures and acts every monitoring interval until ctx ends. With no
// threshold there is nothing to watch.
func (m *Manager) Run(ctx context.Context) error {
	if len(m.cfg.Thresholds) == 0 {
		<-ctx.Done()
		return nil
	}
	m.log.Info("Eviction manager: starting control loop", "thresholds", fmt.Sprint(m.cfg.Thresholds), "interval", m.cfg.MonitoringInterval)
	t := m.clock.NewTicker(m.cfg.MonitoringInterval)
	defer t.Stop()
	for {
		if _, err := m.synchronize(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("Eviction manager: failed to synchronize", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// synchronize is one pass of upstream's control loop; it returns the pod
// it evicted, if any.
func (m *Manager) synchronize(ctx context.Context) (*corev1.Pod, error) {
	node, err := m.cfg.Provider.Node(ctx)
	if err != nil {
		return nil, fmt.Errorf("measuring the node: %w", err)
	}
	obs := node.Signals
	m.logUnmeasured(obs, node.Unmeasured)
	m.mu.RLock()
	previouslyMet := m.thresholdsMet
	firstObserved := m.thresholdsFirstObservedAt
	lastObserved := m.conditionsLastObservedAt
	m.mu.RUnlock()

	// Met now, grace periods aside; and those met before that have not
	// got their minimum reclaim back.
	met := thresholdsMet(m.cfg.Thresholds, obs, false, m.log)
	met = mergeThresholds(met, thresholdsMet(previouslyMet, obs, true, m.log))

	now := m.clock.Now()
	firstObserved = thresholdsFirstObservedAt(met, firstObserved, now)
	lastObserved = conditionsLastObservedAt(nodeConditions(met), lastObserved, now)
	conditions := conditionsObservedSince(lastObserved, m.cfg.PressureTransitionPeriod, now)
	actionable := thresholdsMetGracePeriod(met, firstObserved, now)
	slices.SortStableFunc(actionable, func(a, b Threshold) int {
		return slices.Index(signals, a.Signal) - slices.Index(signals, b.Signal)
	})

	m.mu.Lock()
	if !slices.Equal(conditions, m.conditions) {
		m.log.Info("Eviction manager: node conditions", "conditions", conditions)
	}
	m.conditions = conditions
	m.thresholdsFirstObservedAt = firstObserved
	m.conditionsLastObservedAt = lastObserved
	m.thresholdsMet = actionable
	m.mu.Unlock()

	if len(actionable) == 0 {
		return nil, nil
	}
	toReclaim := actionable[0]
	res := signalToResource[toReclaim.Signal]
	m.log.Info("Eviction manager: attempting to reclaim", "resourceName", res)
	m.cfg.Recorder.Eventf(m.nodeRef, record.Warning, ReasonThresholdMet, "Attempting to reclaim %s", res)

	if m.reclaimNodeLevelResources(ctx, toReclaim.Signal, node.DedicatedImageFs) {
		m.log.Info("Eviction manager: able to reduce resource pressure without evicting pods.", "resourceName", res)
		return nil, nil
	}
	m.log.Info("Eviction manager: must evict pod(s) to reclaim", "resourceName", res)

	var active []*corev1.Pod
	for _, p := range m.cfg.ActivePods() {
		if ph := p.GetStatus().GetPhase(); ph != "Succeeded" && ph != "Failed" {
			active = append(active, p)
		}
	}
	if len(active) == 0 {
		m.log.Error("Eviction manager: eviction thresholds have been met, but no pods are active to evict")
		return nil, nil
	}
	podStats, err := m.cfg.Provider.Pods(ctx, active)
	if err != nil {
		// Ranking without figures would pick any pod: wait for the next
		// pass rather than evict blindly.
		return nil, fmt.Errorf("measuring the pods: %w", err)
	}
	stats := statsOf(podStats)
	rankFunc(toReclaim.Signal, node.DedicatedImageFs)(active, stats)
	names := make([]string, len(active))
	for i, p := range active {
		names[i] = p.GetMetadata().GetNamespace() + "/" + p.GetMetadata().GetName()
	}
	m.log.Info("Eviction manager: pods ranked for eviction", "pods", names)

	for _, t := range actionable {
		if o, ok := obs[t.Signal]; ok && !o.Time.IsZero() {
			m.statsAge.WithLabelValues(string(t.Signal)).Observe(m.clock.Since(o.Time).Seconds())
		}
	}
	// One pod per interval: the next measurement says whether that was
	// enough.
	for _, pod := range active {
		if admission.IsCritical(pod) {
			m.log.Error("Eviction manager: cannot evict a critical pod", "pod", podName(pod))
			continue
		}
		grace := m.gracePeriod(pod, toReclaim)
		msg := evictionMessage(res, pod, stats, actionable, obs)
		m.log.Info("Evicting pod", "pod", podName(pod), "podUID", pod.GetMetadata().GetUid(), "message", msg, "gracePeriod", grace)
		if err := m.cfg.Evict(ctx, pod, Reason, msg, &grace); err != nil {
			m.log.Error("Eviction manager: pod failed to evict", "pod", podName(pod), "err", err)
			continue
		}
		m.log.Info("Eviction manager: pod is evicted successfully", "pod", podName(pod))
		m.evictions.WithLabelValues(string(toReclaim.Signal)).Inc()
		return pod, nil
	}
	m.log.Info("Eviction manager: unable to evict any pods from the node")
	return nil, nil
}

// logUnmeasured says once which thresholds cannot be judged, and why:
// a signal that is not measured never reports pressure.
func (m *Manager) logUnmeasured(obs Observations, why error) {
	var missing []Signal
	for _, t := range m.cfg.Thresholds {
		if _, ok := obs[t.Signal]; !ok && !slices.Contains(missing, t.Signal) {
			missing = append(missing, t.Signal)
		}
	}
	m.mu.Lock()
	changed := !slices.Equal(missing, m.unmeasured)
	m.unmeasured = missing
	m.mu.Unlock()
	if changed && len(missing) > 0 {
		m.log.Info("Eviction manager: no observation found for eviction signals", "signals", missing, "err", why)
	}
}

// gracePeriod is none for a hard threshold; for a soft one, the pod's own
// bounded by MaxPodGracePeriodSeconds.
func (m *Manager) gracePeriod(pod *corev1.Pod, t Threshold) int64 {
	if t.hard() {
		return 0
	}
	own := int64(30)
	if g := pod.GetSpec().TerminationGracePeriodSeconds; g != nil {
		own = *g
	}
	if m.cfg.MaxPodGracePeriodSeconds < 0 {
		return own
	}
	return min(own, m.cfg.MaxPodGracePeriodSeconds)
}

// reclaimNodeLevelResources is upstream's: for disk, dead containers and
// unused images go first; true when every threshold (minimum reclaims
// included) is then satisfied and no pod need go. Without a dedicated image
// filesystem the node's and the images' disk are one.
func (m *Manager) reclaimNodeLevelResources(ctx context.Context, signal Signal, dedicatedImageFs bool) bool {
	var funcs []func(context.Context) error
	disk := signal == SignalImageFsAvailable || signal == SignalImageFsInodesFree ||
		(!dedicatedImageFs && (signal == SignalNodeFsAvailable || signal == SignalNodeFsInodesFree))
	if disk {
		if m.cfg.ContainerGC != nil {
			funcs = append(funcs, m.cfg.ContainerGC.DeleteAllUnusedContainers)
		}
		if m.cfg.ImageGC != nil {
			funcs = append(funcs, m.cfg.ImageGC.DeleteUnusedImages)
		}
	}
	if len(funcs) == 0 {
		return false
	}
	for _, f := range funcs {
		if err := f(ctx); err != nil {
			m.log.Info("Eviction manager: unexpected error when attempting to reduce resource pressure", "resourceName", signalToResource[signal], "err", err)
		}
	}
	node, err := m.cfg.Provider.Node(ctx)
	if err != nil {
		m.log.Error("Eviction manager: failed to get summary stats after resource reclaim", "err", err)
		return false
	}
	return len(thresholdsMet(m.cfg.Thresholds, node.Signals, true, m.log)) == 0
}

func podName(p *corev1.Pod) string {
	return p.GetMetadata().GetNamespace() + "/" + p.GetMetadata().GetName()
}

// thresholdsMet are the thresholds whose signal is below them, or, with
// enforceMinReclaim, below them plus their minimum reclaim.
func thresholdsMet(thresholds []Threshold, obs Observations, enforceMinReclaim bool, log *slog.Logger) []Threshold {
	var out []Threshold
	for _, t := range thresholds {
		o, ok := obs[t.Signal]
		if !ok {
			log.Debug("Eviction manager: no observation found for eviction signal", "signal", t.Signal)
			continue
		}
		q := t.Value.quantity(o.Capacity)
		if enforceMinReclaim && t.MinReclaim != nil {
			q.Add(*t.MinReclaim.quantity(o.Capacity))
		}
		if q.Value() > o.Available {
			out = append(out, t)
		}
	}
	return out
}

func mergeThresholds(a, b []Threshold) []Threshold {
	out := slices.Clone(a)
	for _, t := range b {
		if !slices.ContainsFunc(out, func(o Threshold) bool { return o.key() == t.key() }) {
			out = append(out, t)
		}
	}
	return out
}

// thresholdsFirstObservedAt keeps when each threshold met was first seen
// met; one no longer met is forgotten, so its grace period starts over.
func thresholdsFirstObservedAt(met []Threshold, last map[string]time.Time, now time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for _, t := range met {
		at, ok := last[t.key()]
		if !ok {
			at = now
		}
		out[t.key()] = at
	}
	return out
}

func thresholdsMetGracePeriod(met []Threshold, firstObserved map[string]time.Time, now time.Time) []Threshold {
	var out []Threshold
	for _, t := range met {
		if now.Sub(firstObserved[t.key()]) >= t.GracePeriod {
			out = append(out, t)
		}
	}
	return out
}

// nodeConditions are the conditions of the thresholds met, in
// MemoryPressure, DiskPressure, PIDPressure order.
func nodeConditions(met []Threshold) []string {
	var out []string
	for _, c := range []string{ConditionMemoryPressure, ConditionDiskPressure, ConditionPIDPressure} {
		if slices.ContainsFunc(met, func(t Threshold) bool { return signalToCondition[t.Signal] == c }) {
			out = append(out, c)
		}
	}
	return out
}

// conditionsLastObservedAt stamps the conditions seen now and keeps the
// others' last time.
func conditionsLastObservedAt(conditions []string, last map[string]time.Time, now time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for k, v := range last {
		out[k] = v
	}
	for _, c := range conditions {
		out[c] = now
	}
	return out
}

// conditionsObservedSince are the conditions seen within the transition
// period, in their usual order.
func conditionsObservedSince(last map[string]time.Time, period time.Duration, now time.Time) []string {
	var out []string
	for _, c := range []string{ConditionMemoryPressure, ConditionDiskPressure, ConditionPIDPressure} {
		if at, ok := last[c]; ok && (now.Sub(at) < period || at.Equal(now)) {
			out = append(out, c)
		}
	}
	return out
}
