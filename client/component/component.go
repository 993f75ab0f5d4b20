// Package component holds what every Skiff binary needs: a signal-aware
// context, a slog logger, the plain-HTTP metrics and health endpoint, and a
// group that runs long-lived parts where the first to fail stops the rest.
package component

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// SignalContext is cancelled on SIGINT or SIGTERM; a second signal exits(1)
// at once, for the operator whose graceful shutdown hangs. The returned
// cancel also stops listening for signals.
func SignalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			cancel()
		case <-done:
			return
		}
		select {
		case <-ch:
			os.Exit(1)
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(ch)
			close(done)
			cancel()
		})
	}
}

// NewLogger builds the logger: format text or json; verbosity 0 is info,
// 1 and more is debug.
func NewLogger(w io.Writer, format string, verbosity int) (*slog.Logger, error) {
	level := slog.LevelInfo
	if verbosity > 0 {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// NewRegistry is a component's metrics registry: its own collectors go on
// it beside the Go runtime's and the process's, as upstream's components
// export them.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Server serves /metrics, /healthz, /livez, /readyz and, with Profiling,
// /debug/pprof/ on plain HTTP.
type Server struct {
	Addr     string
	Registry *prometheus.Registry
	// Gatherer, if set, is what /metrics serves instead of Registry (a
	// process that merges several registries: hollow nodes).
	Gatherer prometheus.Gatherer
	// Profiling serves /debug/pprof/ (upstream's --profiling). The endpoint
	// has no authentication, so anyone who reaches it could profile the
	// process or read its command line.
	Profiling bool
	// Ready checks must all pass for /readyz to answer 200.
	Ready map[string]func(context.Context) error
	// Health checks must all pass for /healthz to answer 200 (upstream's
	// controller-manager has one per controller).
	Health map[string]func(context.Context) error
	Logger *slog.Logger

	mu sync.Mutex
	ln net.Listener // bound early by Listen, else by Start
}

// Handler is the endpoint's mux.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	switch {
	case s.Gatherer != nil:
		mux.Handle("/metrics", promhttp.HandlerFor(s.Gatherer, promhttp.HandlerOpts{}))
	case s.Registry != nil:
		mux.Handle("/metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{Registry: s.Registry}))
	}
	ok := func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { checks(w, r, "healthz", s.Health) })
	mux.HandleFunc("/livez", ok)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { checks(w, r, "readyz", s.Ready) })
	if s.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// checks answers as upstream's healthz handlers: "ok", or every check as
// "[+]name ok" / "[-]name failed: why" when one fails.
func checks(w http.ResponseWriter, r *http.Request, endpoint string, set map[string]func(context.Context) error) {
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	var lines []string
	failed := false
	for _, n := range names {
		if err := set[n](r.Context()); err != nil {
			failed = true
			lines = append(lines, fmt.Sprintf("[-]%s failed: %v", n, err))
		} else {
			lines = append(lines, fmt.Sprintf("[+]%s ok", n))
		}
	}
	if failed {
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, strings.Join(lines, "\n")+"\n"+endpoint+" check failed\n")
		return
	}
	io.WriteString(w, "ok")
}

// Listen binds Addr now, so a caller that asked for port 0 learns the port
// before Start; Start then serves on this listener.
func (s *Server) Listen() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		l, err := net.Listen("tcp", s.Addr)
		if err != nil {
			return nil, fmt.Errorf("metrics server: %w", err)
		}
		s.ln = l
	}
	return s.ln.Addr(), nil
}

// Start listens on Addr (unless Listen already did) and serves until ctx
// ends.
func (s *Server) Start(ctx context.Context) error {
	if _, err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	l := s.ln
	s.mu.Unlock()
	return s.Serve(ctx, l)
}

// Serve serves on l until ctx ends, then shuts down within five seconds.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	if s.Logger != nil {
		s.Logger.Info("serving metrics and health", "address", l.Addr().String())
	}
	return ServeUntil(ctx, srv, l, 5*time.Second)
}

// ServeUntil runs srv on l (with TLS when srv.TLSConfig is set) until ctx
// ends, then gives open requests grace to finish before it cuts them: the
// one way every Skiff HTTP server stops.
func ServeUntil(ctx context.Context, srv *http.Server, l net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(l, "", "")
			return
		}
		errc <- srv.Serve(l)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		// Streams (a followed log, an exec) do not end by themselves.
		srv.Close()
	}
	return nil
}

// Group runs functions; the first to return cancels the others' context.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// NewGroup returns a group and the context its functions run with.
func NewGroup(ctx context.Context) (*Group, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &Group{ctx: ctx, cancel: cancel}, ctx
}

// Go runs fn in the group.
func (g *Group) Go(name string, fn func(ctx context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := fn(g.ctx)
		// A function that merely reports the cancellation another member
		// caused is not the failure worth returning.
		stopped := g.ctx.Err() != nil && errors.Is(err, context.Canceled)
		if err != nil && !stopped {
			g.mu.Lock()
			if g.err == nil {
				g.err = fmt.Errorf("%s: %w", name, err)
			}
			g.mu.Unlock()
		}
		g.cancel()
	}()
}

// Wait waits for every function and returns the first error.
func (g *Group) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}
