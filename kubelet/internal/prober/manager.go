// Package prober runs the containers' liveness, readiness and startup probes,
// as upstream's pkg/kubelet/prober: one worker per probe of each container,
// results kept per container ID, readiness changes announced so the pod's
// status is recomputed, liveness and startup failures handed to the pod
// worker to restart the container.
//
// The pod worker calls AddPod for each version of a pod it sees,
// UpdateContainer whenever a container's runtime ID changes (or it stops:
// ID ""), reads Liveness to restart containers and Updates to recompute
// status, and RemovePod once the pod is gone.
package prober

import (
	"context"
	"net/http"
	"sync"
	"time"

	"skiff.dev/client/record"
	corev1 "skiff.dev/proto/api/core/v1"
)

// Exec runs cmd in the container (CRI ExecSync) and reports its output and
// exit code; an error wrapping context.DeadlineExceeded (or a gRPC
// DeadlineExceeded) means the command timed out.
type Exec func(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (stdout, stderr []byte, exitCode int32, err error)

// LivenessFailure asks for a container to be restarted: its liveness or
// startup probe failed failureThreshold times in a row. It is delivered once
// per run of failures; probing resumes when the container has a new ID.
type LivenessFailure struct {
	PodUID      string
	Container   string
	ContainerID string
	// Probe is "Liveness" or "Startup".
	Probe string
	// Message is upstream's text for the Killing event:
	// "Container c failed liveness probe, will be restarted".
	Message string
	// GracePeriodSeconds is the probe's terminationGracePeriodSeconds; nil
	// means the pod's.
	GracePeriodSeconds *int64
}

// UserAgent is sent by HTTP probes unless the probe sets its own, as
// upstream's "kube-probe/<major>.<minor>".
const UserAgent = "kube-probe/1.37"

type probeType int

const (
	liveness probeType = iota
	readiness
	startup
)

func (t probeType) String() string {
	switch t {
	case liveness:
		return "Liveness"
	case readiness:
		return "Readiness"
	default:
		return "Startup"
	}
}

// result is a worker's current verdict (upstream's results.Result).
type result int

const (
	unknown result = iota
	success
	failure
)

// initial is upstream's initialValue: a container is not ready until a
// readiness probe succeeds, alive until a liveness probe fails, and not
// started until a startup probe decides.
func (t probeType) initial() result {
	switch t {
	case liveness:
		return success
	case readiness:
		return failure
	default:
		return unknown
	}
}

type key struct {
	uid       string
	container string
	probe     probeType
}

// containerState is what UpdateContainer reported: an empty id means the
// container is not running.
type containerState struct {
	id        string
	startedAt time.Time
	podIP     string
}

type podState struct {
	pod        *corev1.Pod
	containers map[string]*containerState
}

// Manager runs the probe workers of the node's pods.
type Manager struct {
	exec      Exec
	recorder  record.Recorder
	now       func() time.Time
	transport *http.Transport

	// unit is one "second" of periodSeconds and initialDelaySeconds; tests
	// shrink it so that probes tick in milliseconds.
	unit time.Duration

	mu      sync.Mutex
	pods    map[string]*podState
	workers map[key]*worker
	wg      sync.WaitGroup

	liveness chan LivenessFailure
	updates  chan string

	// Readiness changes wait here, one entry per pod, for the dispatcher:
	// a worker never blocks on a pod worker that is slow to read Updates.
	pmu     sync.Mutex
	pending map[string]bool
	order   []string
	signal  chan struct{}
	done    chan struct{}
	close   sync.Once
}

// New returns a manager; exec runs exec probes, recorder gets the Unhealthy
// events, now is the clock (time.Now when nil).
func New(exec Exec, recorder record.Recorder, now func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	m := &Manager{
		exec:      exec,
		recorder:  recorder,
		now:       now,
		transport: newTransport(),
		unit:      time.Second,
		pods:      map[string]*podState{},
		workers:   map[key]*worker{},
		liveness:  make(chan LivenessFailure, 20),
		updates:   make(chan string, 20),
		pending:   map[string]bool{},
		signal:    make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	m.wg.Add(1)
	go m.dispatch()
	return m
}

// announce queues podUID for Updates; a pod already queued is not queued
// twice.
func (m *Manager) announce(podUID string) {
	m.pmu.Lock()
	if !m.pending[podUID] {
		m.pending[podUID] = true
		m.order = append(m.order, podUID)
	}
	m.pmu.Unlock()
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

func (m *Manager) dispatch() {
	defer m.wg.Done()
	for {
		select {
		case <-m.done:
			return
		case <-m.signal:
		}
		for {
			m.pmu.Lock()
			if len(m.order) == 0 {
				m.pmu.Unlock()
				break
			}
			uid := m.order[0]
			m.order = m.order[1:]
			delete(m.pending, uid)
			m.pmu.Unlock()
			select {
			case m.updates <- uid:
			case <-m.done:
				return
			}
		}
	}
}

// probedContainers are the containers upstream probes: regular containers
// and sidecars (init containers with restartPolicy Always).
func probedContainers(pod *corev1.Pod) []*corev1.Container {
	var cs []*corev1.Container
	for _, c := range pod.GetSpec().GetInitContainers() {
		if c.RestartPolicy != nil && *c.RestartPolicy == "Always" {
			cs = append(cs, c)
		}
	}
	return append(cs, pod.GetSpec().GetContainers()...)
}

// AddPod starts a worker for each probe of each container of pod. It may be
// called again with the pod's newer versions: the deletion timestamp stops
// liveness and startup probing, as upstream's graceful shutdown.
func (m *Manager) AddPod(pod *corev1.Pod) {
	uid := pod.GetMetadata().GetUid()
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.pods[uid]
	if ps == nil {
		ps = &podState{containers: map[string]*containerState{}}
		m.pods[uid] = ps
	}
	ps.pod = pod
	for _, c := range probedContainers(pod) {
		for t, spec := range map[probeType]*corev1.Probe{liveness: c.LivenessProbe, readiness: c.ReadinessProbe, startup: c.StartupProbe} {
			if spec == nil {
				continue
			}
			k := key{uid, c.Name, t}
			if w := m.workers[k]; w != nil {
				w.spec, w.container = spec, c
				w.kick()
				continue
			}
			w := newWorker(m, k, c, spec)
			m.workers[k] = w
			m.wg.Add(1)
			go w.run()
		}
	}
}

// UpdateContainer tells the workers which container instance to probe: its
// ID ("" when the container is not running), when it started (for
// initialDelaySeconds) and the pod's IP (for httpGet, tcpSocket and grpc
// probes without a host). A new ID resets the container's results.
func (m *Manager) UpdateContainer(podUID, container, containerID string, startedAt time.Time, podIP string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.pods[podUID]
	if ps == nil {
		return
	}
	cs := ps.containers[container]
	if cs == nil {
		cs = &containerState{}
		ps.containers[container] = cs
	}
	changed := cs.id != containerID || !cs.startedAt.Equal(startedAt)
	cs.id, cs.startedAt, cs.podIP = containerID, startedAt, podIP
	if changed {
		// Probe a new container now rather than a period later, as
		// upstream's manual trigger does, so readiness is not late.
		for _, t := range []probeType{liveness, readiness, startup} {
			if w := m.workers[key{podUID, container, t}]; w != nil {
				w.kick()
			}
		}
	}
}

// RemovePod stops the pod's workers and forgets its results.
func (m *Manager) RemovePod(podUID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pods, podUID)
	for k, w := range m.workers {
		if k.uid == podUID {
			w.stop()
			delete(m.workers, k)
		}
	}
}

// Close stops every worker and waits for them.
func (m *Manager) Close() {
	m.close.Do(func() { close(m.done) })
	m.mu.Lock()
	for k, w := range m.workers {
		w.stop()
		delete(m.workers, k)
	}
	m.pods = map[string]*podState{}
	m.mu.Unlock()
	m.wg.Wait()
	m.transport.CloseIdleConnections()
}

// Started reports whether the container has started as upstream sets
// containerStatuses[].started: true without a startup probe, else once it
// succeeded for the current container ID. It is false for a container
// reported not running; a pod the manager does not know has no probes.
func (m *Manager) Started(podUID, container string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.startedLocked(podUID, container)
}

func (m *Manager) startedLocked(podUID, container string) bool {
	ps := m.pods[podUID]
	if ps == nil {
		return true
	}
	cs := ps.containers[container]
	if cs != nil && cs.id == "" {
		return false
	}
	w := m.workers[key{podUID, container, startup}]
	if w == nil {
		return true
	}
	return cs != nil && w.containerID == cs.id && w.result == success
}

// Ready reports the container's readiness: started, and, with a readiness
// probe, that probe's last verdict for the current container ID (false
// until its first success).
func (m *Manager) Ready(podUID, container string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.startedLocked(podUID, container) {
		return false
	}
	w := m.workers[key{podUID, container, readiness}]
	if w == nil {
		return true
	}
	cs := m.pods[podUID].containers[container]
	return cs != nil && w.containerID == cs.id && w.result == success
}

// Liveness delivers the containers to restart.
func (m *Manager) Liveness() <-chan LivenessFailure { return m.liveness }

// Updates delivers the UIDs of pods whose readiness or startup changed.
func (m *Manager) Updates() <-chan string { return m.updates }
