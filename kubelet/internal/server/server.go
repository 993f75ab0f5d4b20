// Package server is the kubelet's HTTPS API on --port (10250): the
// containers' logs, the node's pods, metrics and health, and the exec,
// attach and port-forward streams, at upstream's paths. The apiserver
// reaches it with its kubelet client certificate, checked against
// --client-ca-file.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client/component"
	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/kuberuntime"
	"skiff.dev/kubelet/internal/logs"
	"skiff.dev/kubelet/internal/stats"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/codec"
)

// Config is the server's flags' values and what it serves from.
type Config struct {
	// Addr is host:port to listen on (":10250").
	Addr string
	// CertFile and KeyFile serve TLS (--tls-cert-file,
	// --tls-private-key-file); empty generates a self-signed pair in
	// CertDir for Hosts.
	CertFile, KeyFile string
	CertDir           string
	Hosts             []string
	// ClientCAFile, when set, requires clients to present a certificate
	// it signed (--client-ca-file).
	ClientCAFile string

	Runtime cri.Runtime
	// Pod finds one of the node's pods; Pods lists them.
	Pod  func(namespace, name string) (*corev1.Pod, bool)
	Pods func() []*corev1.Pod
	// PodLogsDir is where the runtime writes logs (--pod-logs-dir), for
	// containers whose log path the runtime does not report.
	PodLogsDir string

	Registry *prometheus.Registry
	Health   map[string]func(context.Context) error
	// Streaming serves /exec/, /attach/ and /portForward/; nil answers
	// 501 there.
	Streaming http.Handler
	// Stats serves /stats/summary and /metrics/resource; nil answers 501
	// there.
	Stats  *stats.Provider
	Logger *slog.Logger
	// Now is the clock of sinceSeconds (time.Now if nil).
	Now func() time.Time
}

// Server is the kubelet's API server.
type Server struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg; Run serves it.
func New(cfg Config) (*Server, error) {
	if cfg.Runtime == nil || cfg.Pod == nil || cfg.Pods == nil {
		return nil, errors.New("kubelet server: a runtime and the pods are required")
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("--tls-cert-file and --tls-private-key-file: give both or neither")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Handler is the API's routes, without TLS (tests serve it as they like).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	health := (&component.Server{Registry: s.cfg.Registry, Health: s.cfg.Health}).Handler()
	mux.Handle("GET /healthz", health)
	if s.cfg.Registry != nil {
		mux.Handle("GET /metrics", health)
	}
	mux.HandleFunc("GET /pods", s.pods)
	mux.HandleFunc("GET /pods/", s.pods)
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", s.containerLogs)
	mux.HandleFunc("/containerLogs/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "missing container name: want /containerLogs/{namespace}/{pod}/{container}", http.StatusBadRequest)
	})
	if st := s.cfg.Stats; st != nil {
		mux.HandleFunc("GET /stats/summary", s.statsSummary)
		mux.Handle("GET /metrics/resource", st.ResourceMetricsHandler())
	} else {
		unavailable := func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "stats are not available on this kubelet", http.StatusNotImplemented)
		}
		mux.HandleFunc("GET /stats/summary", unavailable)
		mux.HandleFunc("GET /metrics/resource", unavailable)
	}
	streams := s.cfg.Streaming
	if streams == nil {
		streams = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "streaming is not available on this kubelet", http.StatusNotImplemented)
		})
	}
	for _, p := range []string{"/exec/", "/attach/", "/portForward/"} {
		mux.Handle(p, streams)
	}
	return mux
}

// Run listens on Addr with TLS and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	certFile, keyFile := s.cfg.CertFile, s.cfg.KeyFile
	if certFile == "" {
		var err error
		if certFile, keyFile, err = EnsureSelfSigned(s.cfg.CertDir, s.cfg.Hosts); err != nil {
			return fmt.Errorf("kubelet serving certificate: %w", err)
		}
	}
	tlsCfg, err := serverTLS(certFile, keyFile, s.cfg.ClientCAFile)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("kubelet server: %w", err)
	}
	return s.Serve(ctx, l, tlsCfg)
}

// Serve serves on l with tlsCfg until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener, tlsCfg *tls.Config) error {
	srv := &http.Server{Handler: s.Handler(), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.log.Info("Starting the kubelet server", "address", l.Addr().String(), "clientCA", s.cfg.ClientCAFile != "")
	// Streams (a followed log, an exec) get a moment, then are cut.
	return component.ServeUntil(ctx, srv, l, 2*time.Second)
}

// pods is the node's pods as a v1 PodList, as upstream's /pods.
func (s *Server) pods(w http.ResponseWriter, _ *http.Request) {
	pods := s.cfg.Pods()
	sort.Slice(pods, func(i, j int) bool {
		a, b := pods[i].GetMetadata(), pods[j].GetMetadata()
		return a.GetNamespace()+"/"+a.GetName() < b.GetNamespace()+"/"+b.GetName()
	})
	items := make([]json.RawMessage, 0, len(pods))
	for _, p := range pods {
		b, err := codec.MarshalJSON(p)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		items = append(items, b)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		Kind       string            `json:"kind"`
		APIVersion string            `json:"apiVersion"`
		Metadata   struct{}          `json:"metadata"`
		Items      []json.RawMessage `json:"items"`
	}{Kind: "PodList", APIVersion: "v1", Items: items})
}

// statsSummary is upstream's /stats/summary: the Summary API's JSON, cut
// to CPU and memory with ?only_cpu_and_memory=true.
func (s *Server) statsSummary(w http.ResponseWriter, r *http.Request) {
	only := false
	if v := r.URL.Query().Get("only_cpu_and_memory"); v != "" {
		var err error
		if only, err = strconv.ParseBool(v); err != nil {
			http.Error(w, fmt.Sprintf("only_cpu_and_memory: %q is not a boolean", v), http.StatusBadRequest)
			return
		}
	}
	sum, err := s.cfg.Stats.Summary(r.Context())
	if err != nil {
		s.log.Debug("Computing the stats summary", "err", err)
		http.Error(w, "Internal Error: failed to get summary stats: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if only {
		sum = sum.OnlyCPUAndMemory()
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(sum)
}

// containerLogs is upstream's GET /containerLogs/{namespace}/{pod}/{container}
// with PodLogOptions in the query.
func (s *Server) containerLogs(w http.ResponseWriter, r *http.Request) {
	ns, name, ctrName := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	q, err := parseLogQuery(r, s.cfg.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pod, ok := s.cfg.Pod(ns, name)
	if !ok {
		http.Error(w, fmt.Sprintf("pod %q does not exist", name), http.StatusNotFound)
		return
	}
	if !hasContainer(pod, ctrName) {
		http.Error(w, fmt.Sprintf("container %q not found in pod %q", ctrName, name), http.StatusNotFound)
		return
	}
	id, err := logContainerID(pod, ctrName, q.previous)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	path := s.logPath(r.Context(), pod, ctrName, id, q.previous)
	running := func(ctx context.Context) bool {
		st, err := s.cfg.Runtime.ContainerStatus(ctx, id, false)
		return err == nil && st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	out := &flushWriter{w: w}
	out.flush = q.opts.Follow
	if err := logs.Read(r.Context(), path, q.opts, running, out, out); err != nil {
		if !out.wrote {
			// Nothing sent yet: the status still says it failed.
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		s.log.Debug("Reading container logs", "pod", ns+"/"+name, "container", ctrName, "err", err)
	}
}

type logQuery struct {
	opts     logs.Options
	previous bool
}

// parseLogQuery reads PodLogOptions from the query as upstream's
// conversion does; bad values name the parameter.
func parseLogQuery(r *http.Request, now time.Time) (logQuery, error) {
	q := r.URL.Query()
	out := logQuery{opts: logs.AllOptions()}
	boolean := func(k string) (bool, error) {
		v := q.Get(k)
		if v == "" {
			return false, nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("%s: %q is not a boolean", k, v)
		}
		return b, nil
	}
	integer := func(k string) (int64, bool, error) {
		v := q.Get(k)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("%s: %q is not an integer", k, v)
		}
		return n, true, nil
	}
	var err error
	if out.opts.Follow, err = boolean("follow"); err != nil {
		return out, err
	}
	if out.previous, err = boolean("previous"); err != nil {
		return out, err
	}
	if out.opts.Timestamps, err = boolean("timestamps"); err != nil {
		return out, err
	}
	if n, ok, err := integer("tailLines"); err != nil {
		return out, err
	} else if ok {
		if n < 0 {
			return out, fmt.Errorf("tailLines: must be greater than or equal to 0")
		}
		out.opts.Tail = n
	}
	if n, ok, err := integer("limitBytes"); err != nil {
		return out, err
	} else if ok {
		if n < 1 {
			return out, fmt.Errorf("limitBytes: must be greater than 0")
		}
		out.opts.Bytes = n
	}
	secs, hasSecs, err := integer("sinceSeconds")
	if err != nil {
		return out, err
	}
	if hasSecs {
		if secs < 1 {
			return out, fmt.Errorf("sinceSeconds: must be greater than 0")
		}
		out.opts.Since = now.Add(-time.Duration(secs) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		if hasSecs {
			return out, errors.New("at most one of sinceTime or sinceSeconds may be specified")
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return out, fmt.Errorf("sinceTime: %q is not an RFC 3339 time", v)
		}
		out.opts.Since = t
	}
	return out, nil
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

func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	st := pod.GetStatus()
	for _, list := range [][]*corev1.ContainerStatus{st.GetContainerStatuses(), st.GetInitContainerStatuses(), st.GetEphemeralContainerStatuses()} {
		for _, cs := range list {
			if cs.GetName() == name {
				return cs
			}
		}
	}
	return nil
}

// logContainerID is the runtime's ID of the container whose log to read,
// with upstream's validateContainerLogStatus's answers when there is none.
func logContainerID(pod *corev1.Pod, name string, previous bool) (string, error) {
	podName := pod.GetMetadata().GetName()
	cs := containerStatus(pod, name)
	if cs == nil {
		return "", fmt.Errorf("container %q in pod %q is not available", name, podName)
	}
	state, last := cs.GetState(), cs.GetLastState()
	var id string
	switch {
	case previous:
		if last.GetTerminated().GetContainerID() == "" {
			return "", fmt.Errorf("previous terminated container %q in pod %q not found", name, podName)
		}
		id = last.GetTerminated().GetContainerID()
	case state.GetRunning() != nil:
		id = cs.GetContainerID()
	case state.GetTerminated() != nil:
		id = state.GetTerminated().GetContainerID()
		if id == "" {
			id = last.GetTerminated().GetContainerID()
		}
		if id == "" {
			return "", fmt.Errorf("container %q in pod %q is terminated", name, podName)
		}
	case last.GetTerminated() != nil:
		if id = last.GetTerminated().GetContainerID(); id == "" {
			return "", fmt.Errorf("container %q in pod %q is terminated", name, podName)
		}
	case state.GetWaiting() != nil:
		switch reason := state.GetWaiting().GetReason(); reason {
		case "ErrImagePull":
			return "", fmt.Errorf("container %q in pod %q is waiting to start: image can't be pulled", name, podName)
		case "ImagePullBackOff":
			return "", fmt.Errorf("container %q in pod %q is waiting to start: trying and failing to pull image", name, podName)
		default:
			return "", fmt.Errorf("container %q in pod %q is waiting to start: %s", name, podName, reason)
		}
	}
	if id == "" {
		id = cs.GetContainerID()
	}
	if id == "" {
		return "", fmt.Errorf("container %q in pod %q is not available", name, podName)
	}
	// "containerd://<id>": the runtime knows the part after the scheme.
	if _, after, ok := strings.Cut(id, "://"); ok {
		id = after
	}
	return id, nil
}

// logPath is the runtime's log path of container id, else where the
// kubelet asked it to write: <pod-logs-dir>/<ns>_<name>_<uid>/<container>/<restartCount>.log.
func (s *Server) logPath(ctx context.Context, pod *corev1.Pod, name, id string, previous bool) string {
	if st, err := s.cfg.Runtime.ContainerStatus(ctx, id, false); err == nil && st.GetStatus().GetLogPath() != "" {
		return st.GetStatus().GetLogPath()
	}
	n := int(containerStatus(pod, name).GetRestartCount())
	if previous {
		n--
	}
	return filepath.Join(kuberuntime.PodLogDir(s.cfg.PodLogsDir, pod), kuberuntime.ContainerLogPath(name, max(n, 0)))
}

// flushWriter sends each write at once when following, so a followed log
// arrives line by line.
type flushWriter struct {
	w     http.ResponseWriter
	flush bool
	wrote bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	f.wrote = f.wrote || n > 0
	if f.flush {
		http.NewResponseController(f.w).Flush()
	}
	return n, err
}
