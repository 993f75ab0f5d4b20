// Package pluginmanager is upstream's kubelet plugin manager
// (pkg/kubelet/pluginmanager): it watches the plugin registry directory,
// <root-dir>/plugins_registry, for registration sockets; for each it calls
// the plugin's Registration service (k8s.io/kubelet's pluginregistration/v1:
// GetInfo, then NotifyRegistrationStatus), hands the plugin to the handler
// of its type (CSIPlugin: the CSI driver registry), and deregisters it when
// its socket goes or is replaced.
//
// Upstream keeps a desired and an actual state of the world and a reconciler
// that compares them every second; here the directory itself is the desired
// state, read again on every fsnotify event and every Resync, and the
// registered plugins are the actual state. A registration that failed is
// tried again with a backoff (1 s doubling to 1 min) while its socket stays;
// upstream relies on the plugin re-creating its socket instead.
package pluginmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Handler is what one plugin type's owner implements (upstream's
// cache.PluginHandler).
type Handler interface {
	ValidatePlugin(name, endpoint string, versions []string) error
	RegisterPlugin(ctx context.Context, name, endpoint string, versions []string) error
	DeRegisterPlugin(ctx context.Context, name, endpoint string)
}

// Config is a plugin manager's.
type Config struct {
	// Dir is the registry directory (made if missing).
	Dir string
	// Handlers by plugin type (registerapi.CSIPlugin, …).
	Handlers map[string]Handler
	// Resync is how often the directory is read again without an event
	// (default 5 s); it also paces the retries.
	Resync time.Duration
	// Timeout bounds each Registration call (default 10 s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Manager runs the watcher.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex
	registered map[string]*plugin  // by socket path
	failed     map[string]*failure // by socket path
}

// socketID tells a socket from one made again at the same path.
type socketID struct {
	ino   uint64
	mtime time.Time
}

type plugin struct {
	id       socketID
	typ      string
	name     string
	endpoint string
}

type failure struct {
	id      socketID
	next    time.Time
	backoff time.Duration
}

// Registration is one plugin the manager has registered.
type Registration struct {
	Socket, Type, Name, Endpoint string
}

// New returns a manager for cfg.
func New(cfg Config) *Manager {
	if cfg.Resync <= 0 {
		cfg.Resync = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: log, registered: map[string]*plugin{}, failed: map[string]*failure{}}
}

// Registered lists the registered plugins.
func (m *Manager) Registered() []Registration {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Registration
	for sock, p := range m.registered {
		out = append(out, Registration{Socket: sock, Type: p.typ, Name: p.name, Endpoint: p.endpoint})
	}
	return out
}

// Run watches the directory until ctx ends. Plugins stay registered when
// it returns, as upstream's (the kubelet is going away).
func (m *Manager) Run(ctx context.Context) error {
	if err := os.MkdirAll(m.cfg.Dir, 0o750); err != nil {
		return fmt.Errorf("plugin registry directory: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(m.cfg.Dir); err != nil {
		return fmt.Errorf("watching %s: %w", m.cfg.Dir, err)
	}
	m.log.Info("Watching the plugin registry", "dir", m.cfg.Dir)
	tick := time.NewTicker(m.cfg.Resync)
	defer tick.Stop()
	for {
		// A failed registration is retried when its backoff ends, not at
		// the next resync: a socket is bound before it listens, and a dial
		// in between fails.
		var retry <-chan time.Time
		if d, ok := m.reconcile(ctx); ok {
			retry = time.After(d)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-retry:
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("plugin registry watcher closed")
			}
			m.log.Debug("Plugin registry event", "event", ev.String())
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("plugin registry watcher closed")
			}
			m.log.Error("Watching the plugin registry", "err", err)
		case <-tick.C:
		}
	}
}

// sockets reads the directory: every socket not hidden (upstream skips
// names starting with a dot).
func (m *Manager) sockets() map[string]socketID {
	out := map[string]socketID{}
	ents, err := os.ReadDir(m.cfg.Dir)
	if err != nil {
		m.log.Error("Reading the plugin registry", "dir", m.cfg.Dir, "err", err)
		return nil
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || e.Type()&os.ModeSocket == 0 {
			continue
		}
		p := filepath.Join(m.cfg.Dir, e.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		id := socketID{mtime: fi.ModTime()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			id.ino = st.Ino
		}
		out[p] = id
	}
	return out
}

func (m *Manager) reconcile(ctx context.Context) (retry time.Duration, ok bool) {
	want := m.sockets()
	if want == nil {
		return 0, false
	}
	m.mu.Lock()
	var gone []string
	for sock, p := range m.registered {
		if id, ok := want[sock]; !ok || id != p.id {
			gone = append(gone, sock)
		}
	}
	m.mu.Unlock()
	for _, sock := range gone {
		m.deregister(ctx, sock)
	}
	now := time.Now()
	for sock, id := range want {
		m.mu.Lock()
		_, done := m.registered[sock]
		f := m.failed[sock]
		m.mu.Unlock()
		if done || (f != nil && f.id == id && now.Before(f.next)) {
			continue
		}
		if err := m.register(ctx, sock, id); err != nil {
			m.log.Error("Registering a plugin", "socket", sock, "err", err)
			m.mu.Lock()
			b := time.Second
			if f != nil && f.id == id {
				b = min(2*f.backoff, time.Minute)
			}
			m.failed[sock] = &failure{id: id, next: now.Add(b), backoff: b}
			m.mu.Unlock()
			continue
		}
		m.mu.Lock()
		delete(m.failed, sock)
		m.mu.Unlock()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for sock, f := range m.failed {
		if _, ok := want[sock]; !ok {
			delete(m.failed, sock)
			continue
		}
		if d := max(time.Until(f.next), 0); !ok || d < retry {
			retry, ok = d, true
		}
	}
	return retry, ok
}

func dial(sock string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return dialUnix(ctx, sock)
		}))
}

// register is upstream's operation executor's RegisterPlugin: GetInfo,
// validate and register with the type's handler, and tell the plugin how
// it went.
func (m *Manager) register(ctx context.Context, sock string, id socketID) error {
	conn, err := dial(sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	rc := registerapi.NewRegistrationClient(conn)
	cctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	info, err := rc.GetInfo(cctx, &registerapi.InfoRequest{})
	cancel()
	if err != nil {
		return fmt.Errorf("failed to get plugin info using RPC GetInfo at socket %s, err: %w", sock, err)
	}
	notify := func(regErr error) {
		st := &registerapi.RegistrationStatus{PluginRegistered: regErr == nil}
		if regErr != nil {
			st.Error = regErr.Error()
		}
		cctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		defer cancel()
		if _, err := rc.NotifyRegistrationStatus(cctx, st); err != nil {
			m.log.Info("NotifyRegistrationStatus", "socket", sock, "err", err)
		}
	}
	h, ok := m.cfg.Handlers[info.GetType()]
	if !ok {
		err := fmt.Errorf("no handler registered for plugin type: %s at socket %s", info.GetType(), sock)
		notify(err)
		return err
	}
	endpoint := info.GetEndpoint()
	if endpoint == "" {
		endpoint = sock
	}
	if err := h.ValidatePlugin(info.GetName(), endpoint, info.GetSupportedVersions()); err != nil {
		err = fmt.Errorf("RegisterPlugin error -- plugin validation failed with err: %w", err)
		notify(err)
		return err
	}
	if err := h.RegisterPlugin(ctx, info.GetName(), endpoint, info.GetSupportedVersions()); err != nil {
		err = fmt.Errorf("RegisterPlugin error -- plugin registration failed with err: %w", err)
		notify(err)
		return err
	}
	m.mu.Lock()
	m.registered[sock] = &plugin{id: id, typ: info.GetType(), name: info.GetName(), endpoint: endpoint}
	m.mu.Unlock()
	notify(nil)
	m.log.Info("Registered plugin", "type", info.GetType(), "name", info.GetName(), "socket", sock)
	return nil
}

func (m *Manager) deregister(ctx context.Context, sock string) {
	m.mu.Lock()
	p, ok := m.registered[sock]
	delete(m.registered, sock)
	m.mu.Unlock()
	if !ok {
		return
	}
	if h, ok := m.cfg.Handlers[p.typ]; ok {
		h.DeRegisterPlugin(ctx, p.name, p.endpoint)
	}
	m.log.Info("Deregistered plugin", "type", p.typ, "name", p.name, "socket", sock)
}
