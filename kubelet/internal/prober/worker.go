package prober

import (
	"context"
	"fmt"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
)

// worker probes one container with one probe every periodSeconds, as
// upstream's prober worker.
type worker struct {
	m   *Manager
	key key

	ctx     context.Context
	cancel  context.CancelFunc
	trigger chan struct{}

	// Guarded by m.mu.
	spec        *corev1.Probe
	container   *corev1.Container
	containerID string // the container instance result belongs to
	result      result

	// Only the worker's goroutine touches these.
	lastResult result
	resultRun  int
	onHold     bool // a liveness or startup failure was delivered: wait for a new container
	delay      *time.Timer
}

func newWorker(m *Manager, k key, c *corev1.Container, spec *corev1.Probe) *worker {
	ctx, cancel := context.WithCancel(context.Background())
	return &worker{m: m, key: k, ctx: ctx, cancel: cancel, trigger: make(chan struct{}, 1), spec: spec, container: c, result: k.probe.initial()}
}

func (w *worker) stop() { w.cancel() }

// kick makes the worker probe now rather than at its next tick.
func (w *worker) kick() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

func (w *worker) run() {
	defer w.m.wg.Done()
	defer func() {
		if w.delay != nil {
			w.delay.Stop()
		}
	}()
	w.m.mu.Lock()
	period := time.Duration(orDefault(w.spec.PeriodSeconds, 10)) * w.m.unit
	w.m.mu.Unlock()
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	for w.doProbe() {
		select {
		case <-w.ctx.Done():
			return
		case <-ticker.C:
		case <-w.trigger:
		}
	}
	// Finished (the pod is being deleted): keep the last result until
	// RemovePod.
	<-w.ctx.Done()
}

func orDefault(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

// doProbe probes once and records the outcome; false ends the worker.
func (w *worker) doProbe() bool {
	m := w.m
	// Announced after the lock is released, whichever way this returns.
	notify := false
	defer func() {
		if notify {
			w.announce()
		}
	}()
	m.mu.Lock()
	ps := m.pods[w.key.uid]
	if ps == nil || w.ctx.Err() != nil {
		m.mu.Unlock()
		return false
	}
	pod, c, spec := ps.pod, w.container, w.spec
	cs := ps.containers[w.key.container]
	if cs == nil || cs.id == "" {
		// Not running (yet, or any more): the last instance failed, as
		// upstream. Only readiness and startup are announced; a liveness
		// verdict about a dead container restarts nothing.
		notify = w.containerID != "" && w.result != failure && w.key.probe != liveness
		if w.containerID != "" {
			w.result = failure
		}
		m.mu.Unlock()
		return true
	}
	if w.containerID != cs.id {
		w.containerID, w.result = cs.id, w.key.probe.initial()
		w.onHold, w.lastResult, w.resultRun = false, unknown, 0
		notify = w.key.probe != liveness
	}
	if w.onHold {
		m.mu.Unlock()
		return true
	}
	if pod.GetMetadata().GetDeletionTimestamp() != nil && w.key.probe != readiness {
		// Graceful shutdown: no restarts while the pod terminates.
		w.result = success
		m.mu.Unlock()
		return false
	}
	if since, delay := m.now().Sub(cs.startedAt), time.Duration(spec.InitialDelaySeconds)*m.unit; since < delay {
		m.mu.Unlock()
		w.wakeAfter(delay - since)
		return true
	}
	started := m.startedLocked(w.key.uid, w.key.container)
	if started == (w.key.probe == startup) {
		// Startup probes stop once the container started; the others wait
		// for it.
		m.mu.Unlock()
		return true
	}
	id, podIP := cs.id, cs.podIP
	m.mu.Unlock()

	res, err := m.probe(w.ctx, w.key.probe, pod, c, spec, id, podIP)
	if err != nil || w.ctx.Err() != nil {
		// An error is no verdict: keep the last result, as upstream.
		return true
	}
	if res == w.lastResult {
		w.resultRun++
	} else {
		w.lastResult, w.resultRun = res, 1
	}
	if (res == failure && w.resultRun < int(orDefault(spec.FailureThreshold, 3))) ||
		(res == success && w.resultRun < int(orDefault(spec.SuccessThreshold, 1))) {
		return true
	}
	m.mu.Lock()
	if w.containerID != id {
		m.mu.Unlock()
		return true
	}
	if w.key.probe != readiness && ps.pod.GetMetadata().GetDeletionTimestamp() != nil {
		// The pod began terminating while this probe ran: drop a verdict
		// that could restart its container.
		w.result = success
		m.mu.Unlock()
		return false
	}
	changed := w.result != res
	w.result = res
	m.mu.Unlock()
	notify = notify || (changed && w.key.probe != liveness)

	if (w.key.probe == liveness || w.key.probe == startup) && res == failure {
		// Delivered once; the pod worker restarts the container and a new
		// ID resumes probing.
		w.onHold, w.resultRun = true, 0
		w.deliver(LivenessFailure{
			PodUID:             w.key.uid,
			Container:          w.key.container,
			ContainerID:        id,
			Probe:              w.key.probe.String(),
			Message:            fmt.Sprintf("Container %s failed %s probe, will be restarted", w.key.container, lower(w.key.probe)),
			GracePeriodSeconds: spec.TerminationGracePeriodSeconds,
		})
		return true
	}
	if changed && w.key.probe == startup && res == success {
		m.kickContainer(w.key.uid, w.key.container)
	}
	return true
}

func lower(t probeType) string {
	switch t {
	case liveness:
		return "liveness"
	case readiness:
		return "readiness"
	default:
		return "startup"
	}
}

// wakeAfter probes again when initialDelaySeconds is over rather than at
// the next tick.
func (w *worker) wakeAfter(d time.Duration) {
	if w.delay != nil {
		w.delay.Stop()
	}
	w.delay = time.AfterFunc(d, w.kick)
}

// kickContainer lets the container's liveness and readiness workers probe
// as soon as its startup probe succeeded.
func (m *Manager) kickContainer(uid, container string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range []probeType{liveness, readiness} {
		if w := m.workers[key{uid, container, t}]; w != nil {
			w.kick()
		}
	}
}

// announce tells the pod worker that readiness or startup changed.
func (w *worker) announce() { w.m.announce(w.key.uid) }

// deliver blocks, as upstream's results channel, until the pod worker takes
// the failure or the worker stops: a restart must not be lost.
func (w *worker) deliver(f LivenessFailure) {
	select {
	case w.m.liveness <- f:
	case <-w.ctx.Done():
	}
}
