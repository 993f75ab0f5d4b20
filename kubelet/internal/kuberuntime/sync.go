package kuberuntime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client/record"
	corev1 "skiff.dev/proto/api/core/v1"
)

// minGracePeriod is what a container gets to stop after its preStop hook
// used up the grace period, as upstream's minimumGracePeriodInSeconds.
const minGracePeriod = 2

// SyncResult is what one SyncPod did.
type SyncResult struct {
	// Waiting is why containers (by name) are not running after this sync.
	Waiting map[string]Waiting
	// Err is the first error; the pod is synced again later.
	Err error
	// Actions are what was decided.
	Actions Actions
	// RetryAfter, when not zero, is when a back-off ends and the pod
	// should be synced again.
	RetryAfter time.Duration
}

func (r *SyncResult) retry(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if r.RetryAfter == 0 || d < r.RetryAfter {
		r.RetryAfter = d
	}
}

func (r *SyncResult) fail(name string, err error) {
	var se *syncError
	if errors.As(err, &se) && se.retryAfter > 0 {
		r.retry(se.retryAfter)
	}
	if w, ok := waitingOf(err); ok && name != "" {
		r.Waiting[name] = w
	}
	if r.Err == nil {
		r.Err = err
	}
}

// SyncPod brings the runtime to pod's spec, given st, the runtime's state
// (Inspect), as upstream's SyncPod: kill what must go, create the sandbox,
// then start init containers in order and the containers.
func (m *Manager) SyncPod(ctx context.Context, pod *corev1.Pod, st *PodStatus, probes Probes) SyncResult {
	res := SyncResult{Waiting: map[string]Waiting{}}
	a := ComputeActions(pod, st, probes)
	res.Actions = a

	if a.KillPod {
		if err := m.KillPod(ctx, pod, st, nil); err != nil {
			res.fail("", err)
			return res
		}
		if !a.CreateSandbox {
			return res
		}
	} else {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for id, k := range a.ContainersToKill {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := m.killContainer(ctx, pod, specOf(pod, k.Name), id, k.Name, gracePeriod(pod, nil), k.Message, firstIP(st.IPs)); err != nil {
					mu.Lock()
					res.fail(k.Name, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if res.Err != nil {
			return res
		}
	}

	sandboxID := a.SandboxID
	cfg, err := m.SandboxConfig(pod, a.Attempt)
	if err != nil {
		m.o.Recorder.Eventf(pod, record.Warning, "FailedCreatePodSandBox", "Failed to create pod sandbox config: %v", err)
		m.waitAll(pod, &res, ReasonContainerCreating, "")
		res.fail("", err)
		return res
	}
	podIPs := st.IPs
	if a.CreateSandbox {
		if m.o.PodLogsDir != "" {
			if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
				m.o.Logger.Info("creating the pod log directory", "pod", FormatPod(pod), "err", err)
			}
		}
		sandboxID, err = m.o.Runtime.RunPodSandbox(ctx, cfg, m.o.RuntimeHandler)
		if err != nil {
			m.o.Recorder.Eventf(pod, record.Warning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
			m.waitAll(pod, &res, ReasonContainerCreating, "")
			res.fail("", err)
			return res
		}
		podIPs = nil
		if sst, err := m.o.Runtime.PodSandboxStatus(ctx, sandboxID, false); err == nil {
			if ip := sst.GetStatus().GetNetwork().GetIp(); ip != "" && !pod.GetSpec().GetHostNetwork() {
				podIPs = append(podIPs, ip)
				for _, x := range sst.GetStatus().GetNetwork().GetAdditionalIps() {
					podIPs = append(podIPs, x.GetIp())
				}
			}
		}
	}
	m.writeHosts(pod, podIPs)

	// After a new sandbox, the old attempts' containers are not this
	// sandbox's: restart counts continue from them, but nothing else does.
	spec := pod.GetSpec()
	for _, i := range a.InitContainersToStart {
		c := spec.GetInitContainers()[i]
		if err := m.startContainer(ctx, pod, c, st, sandboxID, cfg, podIPs); err != nil {
			res.fail(c.GetName(), err)
			if !isRestartable(c) {
				m.waitContainers(pod, &res, ReasonPodInitializing)
				return res
			}
		}
	}
	if len(a.InitContainersToStart) > 0 && len(a.ContainersToStart) == 0 {
		m.waitContainers(pod, &res, ReasonPodInitializing)
	}
	for _, i := range a.ContainersToStart {
		c := spec.GetContainers()[i]
		if err := m.startContainer(ctx, pod, c, st, sandboxID, cfg, podIPs); err != nil {
			res.fail(c.GetName(), err)
		}
	}
	m.removeOld(ctx, st)
	return res
}

func specOf(pod *corev1.Pod, name string) *corev1.Container {
	for _, c := range allContainers(pod) {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

// waitAll marks every container as waiting for reason (unless a more
// specific reason is already known).
func (m *Manager) waitAll(pod *corev1.Pod, res *SyncResult, reason, msg string) {
	for _, c := range allContainers(pod) {
		if _, ok := res.Waiting[c.GetName()]; !ok {
			res.Waiting[c.GetName()] = Waiting{reason, msg}
		}
	}
}

func (m *Manager) waitContainers(pod *corev1.Pod, res *SyncResult, reason string) {
	for _, c := range pod.GetSpec().GetContainers() {
		if _, ok := res.Waiting[c.GetName()]; !ok {
			res.Waiting[c.GetName()] = Waiting{Reason: reason}
		}
	}
}

// crashKey is upstream's getStableKey: the back-off of a container is
// forgotten when its spec changes.
func crashKey(pod *corev1.Pod, c *corev1.Container) string {
	md := pod.GetMetadata()
	return md.GetName() + "_" + md.GetNamespace() + "_" + md.GetUid() + "_" + c.GetName() + "_" + HashContainer(c)
}

func (m *Manager) startContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, st *PodStatus, sandboxID string, sandboxCfg *runtimeapi.PodSandboxConfig, podIPs []string) error {
	restartCount := 0
	if prev := st.Container(c.GetName()); prev != nil {
		restartCount = restartCountOf(prev.GetAnnotations()) + 1
		if exited(prev) {
			key := crashKey(pod, c)
			finished := time.Unix(0, prev.GetFinishedAt())
			if m.o.CrashBackoff.IsInBackOffSince(key, finished) {
				m.o.Recorder.Eventf(pod, record.Warning, "BackOff", "Back-off restarting failed container %s in pod %s", c.GetName(), FormatPod(pod))
				d := m.o.CrashBackoff.Get(key)
				return &syncError{Waiting{ReasonCrashLoopBackOff, fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", d, c.GetName(), FormatPod(pod))},
					finished.Add(d).Sub(m.o.Now())}
			}
			m.o.CrashBackoff.Next(key, finished)
		}
	}

	imageRef, err := m.EnsureImage(ctx, pod, c, sandboxCfg)
	if err != nil {
		w, _ := waitingOf(err)
		m.o.Recorder.Eventf(pod, record.Warning, "Failed", "Error: %s", w.Reason)
		return err
	}
	cfg, err := m.ContainerConfig(pod, c, imageRef, restartCount, podIPs)
	if err != nil {
		m.o.Recorder.Eventf(pod, record.Warning, "Failed", "Error: %v", err)
		return &syncError{Waiting: Waiting{ReasonCreateContainerConfigError, err.Error()}}
	}
	if m.o.Hosts != nil && m.o.RootDir != "" && !pod.GetSpec().GetHostNetwork() && !mountsPath(cfg.Mounts, "/etc/hosts") {
		cfg.Mounts = append(cfg.Mounts, &runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: m.hostsPath(pod)})
	}
	if m.o.PodLogsDir != "" {
		_ = os.MkdirAll(filepath.Join(sandboxCfg.GetLogDirectory(), c.GetName()), 0o755)
	}
	id, err := m.o.Runtime.CreateContainer(ctx, sandboxID, cfg, sandboxCfg)
	if err != nil {
		m.o.Recorder.Eventf(pod, record.Warning, "Failed", "Error: %v", err)
		return &syncError{Waiting: Waiting{ReasonCreateContainerError, err.Error()}}
	}
	m.o.Recorder.Eventf(pod, record.Normal, "Created", "Created container: %s", c.GetName())
	if err := m.o.Runtime.StartContainer(ctx, id); err != nil {
		m.o.Recorder.Eventf(pod, record.Warning, "Failed", "Error: %v", err)
		return &syncError{Waiting: Waiting{ReasonRunContainerError, err.Error()}}
	}
	m.o.Recorder.Eventf(pod, record.Normal, "Started", "Started container %s", c.GetName())

	if h := c.GetLifecycle().GetPostStart(); h != nil {
		ip := ""
		if len(podIPs) > 0 {
			ip = podIPs[0]
		}
		if msg, err := m.runHandler(ctx, pod, c, id, h, ip); err != nil {
			m.o.Recorder.Event(pod, record.Warning, "FailedPostStartHook", msg)
			_ = m.killContainer(ctx, pod, c, id, c.GetName(), gracePeriod(pod, nil), "FailedPostStartHook", ip)
			return &syncError{Waiting: Waiting{ReasonPostStartHookError, msg}}
		}
	}
	return nil
}

func mountsPath(ms []*runtimeapi.Mount, p string) bool {
	for _, m := range ms {
		if m.GetContainerPath() == p {
			return true
		}
	}
	return false
}

func (m *Manager) hostsPath(pod *corev1.Pod) string {
	return filepath.Join(m.o.RootDir, "pods", pod.GetMetadata().GetUid(), "etc-hosts")
}

// writeHosts writes the pod's /etc/hosts, mounted into each container, as
// upstream's kubelet-managed etc-hosts.
func (m *Manager) writeHosts(pod *corev1.Pod, podIPs []string) {
	if m.o.Hosts == nil || m.o.RootDir == "" || pod.GetSpec().GetHostNetwork() {
		return
	}
	p := m.hostsPath(pod)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		m.o.Logger.Info("writing etc-hosts", "pod", FormatPod(pod), "err", err)
		return
	}
	if err := os.WriteFile(p, m.o.Hosts(pod, podIPs), 0o644); err != nil {
		m.o.Logger.Info("writing etc-hosts", "pod", FormatPod(pod), "err", err)
	}
}

// gracePeriod is the pod's termination grace period: the deletion's, else
// the spec's, else 30 s; override wins.
func gracePeriod(pod *corev1.Pod, override *int64) int64 {
	switch {
	case override != nil:
		return *override
	case pod.GetMetadata().DeletionGracePeriodSeconds != nil:
		return *pod.GetMetadata().DeletionGracePeriodSeconds
	case pod.GetSpec().TerminationGracePeriodSeconds != nil:
		return *pod.GetSpec().TerminationGracePeriodSeconds
	}
	return 30
}

// killContainer runs c's preStop hook within the grace period, then stops
// the container with what is left of it (at least minGracePeriod): the
// runtime sends SIGTERM, then SIGKILL when it runs out.
func (m *Manager) killContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id, name string, grace int64, message, podIP string) error {
	if message == "" {
		message = fmt.Sprintf("Stopping container %s", name)
	}
	if h := c.GetLifecycle().GetPreStop(); h != nil && grace > 0 {
		start := time.Now()
		hctx, cancel := context.WithTimeout(ctx, time.Duration(grace)*time.Second)
		if sts, err := m.o.Runtime.ContainerStatus(ctx, id, false); err == nil && sts.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
			h = nil // nothing to run a hook in
		}
		if h != nil {
			if msg, err := m.runHandler(hctx, pod, c, id, h, podIP); err != nil {
				m.o.Recorder.Event(pod, record.Warning, "FailedPreStopHook", msg)
			}
		}
		cancel()
		grace -= int64(time.Since(start).Seconds())
	}
	if grace < minGracePeriod {
		grace = minGracePeriod
	}
	if pod != nil {
		m.o.Recorder.Event(pod, record.Normal, "Killing", message)
	}
	if err := m.o.Runtime.StopContainer(ctx, id, grace); err != nil && !isNotFound(err) {
		return fmt.Errorf("stopping container %s: %w", name, err)
	}
	return nil
}

func isNotFound(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "not found")
}

// KillPod stops every running container of the pod (regular containers
// together, then sidecars in reverse order, as upstream) within the grace
// period (the pod's unless override) and stops its sandboxes.
func (m *Manager) KillPod(ctx context.Context, pod *corev1.Pod, st *PodStatus, override *int64) error {
	if st == nil {
		return nil
	}
	grace := int64(30)
	if pod != nil {
		grace = gracePeriod(pod, override)
	} else if override != nil {
		grace = *override
	}
	deadline := time.Now().Add(time.Duration(grace) * time.Second)
	left := func() int64 {
		l := int64(time.Until(deadline).Seconds())
		if l < 0 {
			return 0
		}
		return l
	}
	sidecar := map[string]int{}
	for i, c := range pod.GetSpec().GetInitContainers() {
		if isRestartable(c) {
			sidecar[c.GetName()] = i
		}
	}
	var regular, sidecars []*runtimeapi.ContainerStatus
	for _, cs := range st.Running() {
		if _, ok := sidecar[cs.GetMetadata().GetName()]; ok {
			sidecars = append(sidecars, cs)
		} else {
			regular = append(regular, cs)
		}
	}
	var errs []error
	var mu sync.Mutex
	kill := func(cs []*runtimeapi.ContainerStatus) {
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := c.GetMetadata().GetName()
				var spec *corev1.Container
				if pod != nil {
					spec = specOf(pod, name)
				}
				if err := m.killContainer(ctx, pod, spec, c.GetId(), name, left(), "", firstIP(st.IPs)); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	kill(regular)
	sort.Slice(sidecars, func(i, j int) bool {
		return sidecar[sidecars[i].GetMetadata().GetName()] > sidecar[sidecars[j].GetMetadata().GetName()]
	})
	for _, s := range sidecars {
		kill([]*runtimeapi.ContainerStatus{s})
	}
	for _, sb := range st.Sandboxes {
		if sb.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		if err := m.o.Runtime.StopPodSandbox(ctx, sb.GetId()); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("stopping sandbox %s: %w", sb.GetId(), err))
		}
	}
	return errors.Join(errs...)
}

// RemovePod removes every container and sandbox of a stopped pod.
func (m *Manager) RemovePod(ctx context.Context, st *PodStatus) error {
	var errs []error
	for _, c := range st.Containers {
		if err := m.o.Runtime.RemoveContainer(ctx, c.GetId()); err != nil && !isNotFound(err) {
			errs = append(errs, err)
		}
	}
	for _, sb := range st.Sandboxes {
		if err := m.o.Runtime.RemovePodSandbox(ctx, sb.GetId()); err != nil && !isNotFound(err) {
			errs = append(errs, err)
		}
	}
	if m.o.RootDir != "" && st.UID != "" {
		_ = os.Remove(filepath.Join(m.o.RootDir, "pods", st.UID, "etc-hosts"))
	}
	return errors.Join(errs...)
}

// removeOld removes, per container name, every exited attempt but the
// newest (kept for logs --previous and the restart count), and sandboxes
// no container is left in, as upstream's container GC with
// maxPerPodContainer 1.
func (m *Manager) removeOld(ctx context.Context, st *PodStatus) {
	if st == nil {
		return
	}
	deadSeen := map[string]bool{}
	inUse := map[string]bool{}
	for _, c := range st.Containers { // newest first
		name := c.GetMetadata().GetName()
		if exited(c) {
			if deadSeen[name] {
				if err := m.o.Runtime.RemoveContainer(ctx, c.GetId()); err != nil {
					m.o.Logger.Info("removing an old container", "id", c.GetId(), "err", err)
				}
				continue
			}
			deadSeen[name] = true
		}
		inUse[st.SandboxOf[c.GetId()]] = true
	}
	for i, sb := range st.Sandboxes {
		if i == 0 || sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY || inUse[sb.GetId()] {
			continue
		}
		if err := m.o.Runtime.RemovePodSandbox(ctx, sb.GetId()); err != nil {
			m.o.Logger.Info("removing an old sandbox", "id", sb.GetId(), "err", err)
		}
	}
}

// runHandler runs a postStart or preStop handler and returns upstream's
// message when it fails.
func (m *Manager) runHandler(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string, h *corev1.LifecycleHandler, podIP string) (string, error) {
	hook := "PostStart"
	if c.GetLifecycle().GetPreStop() == h {
		hook = "PreStop"
	}
	switch {
	case h.GetExec() != nil:
		out, stderr, err := m.o.Runtime.ExecSync(ctx, id, h.GetExec().GetCommand(), 0)
		if err != nil {
			return fmt.Sprintf("Exec lifecycle hook (%v) for Container %q in Pod %q failed - error: %v, message: %q",
				h.GetExec().GetCommand(), c.GetName(), FormatPod(pod), err, string(out)+string(stderr)), err
		}
	case h.GetHttpGet() != nil:
		if err := m.httpHook(ctx, c, h.GetHttpGet(), podIP); err != nil {
			return fmt.Sprintf("HTTP lifecycle hook (%s) for Container %q in Pod %q failed - error: %v",
				h.GetHttpGet().GetPath(), c.GetName(), FormatPod(pod), err), err
		}
	case h.GetSleep() != nil:
		t := time.NewTimer(time.Duration(h.GetSleep().GetSeconds()) * time.Second)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	case h.GetTcpSocket() != nil:
		// Deprecated and never run, as upstream.
	default:
		err := fmt.Errorf("%s hook of container %q has no handler", hook, c.GetName())
		return err.Error(), err
	}
	return "", nil
}

func (m *Manager) httpHook(ctx context.Context, c *corev1.Container, g *corev1.HTTPGetAction, podIP string) error {
	host := g.GetHost()
	if host == "" {
		host = podIP
	}
	port := 80
	if p := g.GetPort(); p != nil {
		if p.GetType() == 1 {
			n, err := resolvePort(c, p.GetStrVal())
			if err != nil {
				return err
			}
			port = n
		} else {
			port = int(p.GetIntVal())
		}
	}
	scheme := strings.ToLower(g.GetScheme())
	if scheme == "" {
		scheme = "http"
	}
	path := g.GetPath()
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	url := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port)) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for _, hd := range g.GetHttpHeaders() {
		if strings.EqualFold(hd.GetName(), "Host") {
			req.Host = hd.GetValue()
			continue
		}
		req.Header.Add(hd.GetName(), hd.GetValue())
	}
	resp, err := m.o.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP lifecycle hook returned status %d", resp.StatusCode)
	}
	return nil
}

func resolvePort(c *corev1.Container, name string) (int, error) {
	for _, p := range c.GetPorts() {
		if p.GetName() == name {
			return int(p.GetContainerPort()), nil
		}
	}
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("couldn't find port: %s in container %s", name, c.GetName())
}

func firstIP(ips []string) string {
	if len(ips) == 0 {
		return ""
	}
	return ips[0]
}
