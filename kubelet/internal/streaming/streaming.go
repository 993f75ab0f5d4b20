// Package streaming serves the kubelet's exec, attach and portForward
// endpoints the way upstream's kubelet does with a CRI runtime that runs
// its own stream server (containerd's): it resolves the pod and container,
// asks the runtime for a one-time stream URL (CRI Exec, Attach,
// PortForward) and proxies the client's upgraded connection to that URL
// unchanged, upstream's "redirect-container-streaming=false" proxy mode.
// The protocol spoken on the connection (websocket "v4.channel.k8s.io", or
// SPDY) is therefore whatever the runtime's stream server accepts.
package streaming

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/kuberuntime"
	corev1 "skiff.dev/proto/api/core/v1"
)

// Query parameters of exec and attach requests (upstream's
// api.ExecStdinParam and friends) and of portForward.
const (
	paramCommand = "command"
	paramStdin   = "input"
	paramStdout  = "output"
	paramStderr  = "error"
	paramTTY     = "tty"
	paramPort    = "port"
)

// runtimeTimeout bounds the CRI call that hands out a stream URL; the
// stream itself is bounded only by its connection.
const runtimeTimeout = 30 * time.Second

// Handler serves /exec/{namespace}/{pod}/{container},
// /attach/{namespace}/{pod}/{container} and /portForward/{namespace}/{pod}
// (upstream also accepts a pod UID before the container: so do we). pods
// finds a pod the kubelet runs.
func Handler(rt cri.Runtime, pods func(ns, name string) (*corev1.Pod, bool), log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{rt: rt, pods: pods, log: log}
	mux := http.NewServeMux()
	for _, p := range []string{
		"/exec/{namespace}/{pod}/{container}", "/exec/{namespace}/{pod}/{uid}/{container}",
		"/attach/{namespace}/{pod}/{container}", "/attach/{namespace}/{pod}/{uid}/{container}",
	} {
		mux.HandleFunc(p, h.remoteCommand)
	}
	mux.HandleFunc("/portForward/{namespace}/{pod}", h.portForward)
	mux.HandleFunc("/portForward/{namespace}/{pod}/{uid}", h.portForward)
	return mux
}

type handler struct {
	rt   cri.Runtime
	pods func(ns, name string) (*corev1.Pod, bool)
	log  *slog.Logger
}

// options are upstream's remotecommand.NewOptions: "1" turns a stream on.
type options struct {
	stdin, stdout, stderr, tty bool
}

func newOptions(q url.Values) (options, error) {
	o := options{
		stdin: q.Get(paramStdin) == "1", stdout: q.Get(paramStdout) == "1",
		stderr: q.Get(paramStderr) == "1", tty: q.Get(paramTTY) == "1",
	}
	if o.tty && o.stderr {
		// A terminal has one output stream: upstream drops stderr rather
		// than failing the request.
		o.stderr = false
	}
	if !o.stdin && !o.stdout && !o.stderr {
		return o, errors.New("you must specify at least 1 of stdin, stdout, stderr")
	}
	return o, nil
}

// pod finds the request's pod, answering 404 itself when there is none or
// when the request names another incarnation of it by UID.
func (h *handler) pod(w http.ResponseWriter, r *http.Request) (*corev1.Pod, bool) {
	pod, ok := h.pods(r.PathValue("namespace"), r.PathValue("pod"))
	if ok {
		if uid := r.PathValue("uid"); uid != "" && uid != pod.GetMetadata().GetUid() {
			ok = false
		}
	}
	if !ok {
		http.Error(w, "pod does not exist", http.StatusNotFound)
	}
	return pod, ok
}

func (h *handler) remoteCommand(w http.ResponseWriter, r *http.Request) {
	exec := strings.HasPrefix(r.URL.Path, "/exec/")
	q := r.URL.Query()
	opts, err := newOptions(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := q[paramCommand]
	if exec && len(cmd) == 0 {
		http.Error(w, "you must specify at least one command for the container", http.StatusBadRequest)
		return
	}
	pod, ok := h.pod(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), runtimeTimeout)
	defer cancel()
	name := r.PathValue("container")
	id, err := h.runningContainer(ctx, pod, name)
	if err != nil {
		writeError(w, err)
		return
	}
	var streamURL string
	if exec {
		var resp *runtimeapi.ExecResponse
		resp, err = h.rt.Exec(ctx, &runtimeapi.ExecRequest{
			ContainerId: id, Cmd: cmd, Tty: opts.tty,
			Stdin: opts.stdin, Stdout: opts.stdout, Stderr: opts.stderr,
		})
		streamURL = resp.GetUrl()
	} else {
		var resp *runtimeapi.AttachResponse
		resp, err = h.rt.Attach(ctx, &runtimeapi.AttachRequest{
			ContainerId: id, Tty: opts.tty,
			Stdin: opts.stdin, Stdout: opts.stdout, Stderr: opts.stderr,
		})
		streamURL = resp.GetUrl()
	}
	if err != nil {
		writeError(w, fmt.Errorf("unable to upgrade connection: %w", err))
		return
	}
	h.proxy(w, r, streamURL)
}

func (h *handler) portForward(w http.ResponseWriter, r *http.Request) {
	ports, err := parsePorts(r.URL.Query()[paramPort])
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pod, ok := h.pod(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), runtimeTimeout)
	defer cancel()
	sandbox, err := h.readySandbox(ctx, pod)
	if err != nil {
		writeError(w, err)
		return
	}
	resp, err := h.rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: sandbox, Port: ports})
	if err != nil {
		writeError(w, fmt.Errorf("unable to upgrade connection: %w", err))
		return
	}
	h.proxy(w, r, resp.GetUrl())
}

// parsePorts is upstream's portforward.NewV4Options: every port query
// value, each a comma-separated list. The CRI request carries the ports, so
// a websocket needs them; SPDY clients name theirs per stream, and may give
// none here.
func parsePorts(values []string) ([]int32, error) {
	var ports []int32
	for _, v := range values {
		if v == "" {
			return nil, fmt.Errorf("query parameter %q cannot be empty", paramPort)
		}
		for _, p := range strings.Split(v, ",") {
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil {
				return nil, fmt.Errorf("unable to parse %q as a port: %v", v, err)
			}
			if n < 1 {
				return nil, fmt.Errorf("port %q must be > 0", v)
			}
			ports = append(ports, int32(n))
		}
	}
	return ports, nil
}

// statusError is an error with the HTTP status to answer it with.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var se *statusError
	if errors.As(err, &se) {
		code = se.code
	}
	http.Error(w, err.Error(), code)
}

// runningContainer is the ID of the pod's running container called name,
// the newest if a restart left two behind.
func (h *handler) runningContainer(ctx context.Context, pod *corev1.Pod, name string) (string, error) {
	if name == "" {
		return "", &statusError{http.StatusBadRequest, errors.New("a container name must be specified")}
	}
	cs, err := h.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
		LabelSelector: map[string]string{
			kuberuntime.LabelPodUID:        pod.GetMetadata().GetUid(),
			kuberuntime.LabelContainerName: name,
		},
	})
	if err != nil {
		return "", fmt.Errorf("listing containers: %w", err)
	}
	var best *runtimeapi.Container
	for _, c := range cs {
		if best == nil || c.GetCreatedAt() > best.GetCreatedAt() {
			best = c
		}
	}
	if best == nil {
		if !hasContainer(pod, name) {
			return "", &statusError{http.StatusNotFound, fmt.Errorf("container not found (%q)", name)}
		}
		return "", &statusError{http.StatusBadRequest, fmt.Errorf("container %q in pod %q is not running", name, pod.GetMetadata().GetName())}
	}
	return best.GetId(), nil
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, c := range pod.GetSpec().GetContainers() {
		if c.GetName() == name {
			return true
		}
	}
	for _, c := range pod.GetSpec().GetInitContainers() {
		if c.GetName() == name {
			return true
		}
	}
	for _, c := range pod.GetSpec().GetEphemeralContainers() {
		if c.GetEphemeralContainerCommon().GetName() == name {
			return true
		}
	}
	return false
}

// readySandbox is the ID of the pod's ready sandbox.
func (h *handler) readySandbox(ctx context.Context, pod *corev1.Pod) (string, error) {
	sbs, err := h.rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{kuberuntime.LabelPodUID: pod.GetMetadata().GetUid()},
	})
	if err != nil {
		return "", fmt.Errorf("listing pod sandboxes: %w", err)
	}
	var best *runtimeapi.PodSandbox
	for _, s := range sbs {
		if best == nil || s.GetCreatedAt() > best.GetCreatedAt() {
			best = s
		}
	}
	if best == nil {
		return "", &statusError{http.StatusNotFound, fmt.Errorf("pod %q has no running sandbox", pod.GetMetadata().GetName())}
	}
	return best.GetId(), nil
}

// proxy hands the request to the runtime's stream server at target: the
// upgrade handshake and then every byte both ways pass through, so the
// runtime and the client negotiate the subprotocol between themselves.
func (h *handler) proxy(w http.ResponseWriter, r *http.Request, target string) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		http.Error(w, fmt.Sprintf("the runtime returned a bad stream URL %q", target), http.StatusInternalServerError)
		return
	}
	if u.Scheme == "" {
		u.Scheme = "http"
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = u
			pr.Out.Host = u.Host
			// The token in the path is the authorization: the client's
			// own credentials stay with the kubelet.
			pr.Out.Header.Del("Authorization")
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			h.log.Info("stream proxy failed", "path", r.URL.Path, "err", err)
			http.Error(w, fmt.Sprintf("error proxying to the runtime's stream server: %v", err), http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelInfo),
	}
	rp.ServeHTTP(w, r)
}
