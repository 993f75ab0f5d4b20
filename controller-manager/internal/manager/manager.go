// Package manager builds the controllers --controllers selects over one
// shared informer factory and one event broadcaster, and runs them: what
// kube-controller-manager's app package does once it leads.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/client"
	"skiff.dev/client/component"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers"
)

// Constructor builds one controller; it registers informers and handlers
// but calls no API until Run. A controller its own options turn off
// returns nil and no error.
type Constructor func(controllers.Context) (controllers.Controller, error)

// Config is what a manager is built from.
type Config struct {
	Client *client.Client
	// Controllers is --controllers; empty means "*".
	Controllers []string
	Options     controllers.Options
	Registerer  prometheus.Registerer
	Logger      *slog.Logger
	Now         func() time.Time
	// Informers may be shared with the rest of an embedding process; nil
	// builds the manager's own.
	Informers *informers.Factory
}

// Manager runs the selected controllers.
type Manager struct {
	cfg         Config
	selection   Selection
	ctrls       []controllers.Controller
	names       []string // of ctrls, canonical
	informers   *informers.Factory
	broadcaster *record.Broadcaster

	mu     sync.Mutex
	failed map[string]error // controllers whose Run returned
}

// New resolves the selection and builds every selected controller.
func New(cfg Config) (*Manager, error) {
	if cfg.Client == nil {
		return nil, errors.New("controller-manager: a client is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	flag := cfg.Controllers
	if len(flag) == 0 {
		flag = []string{"*"}
	}
	sel, err := Select(flag, Available())
	if err != nil {
		return nil, err
	}
	f := cfg.Informers
	if f == nil {
		f = informers.NewFactory(cfg.Client, informers.Options{Logger: cfg.Logger})
	}
	b := record.NewBroadcaster(cfg.Client, record.Options{Logger: cfg.Logger, Registerer: cfg.Registerer})
	m := &Manager{cfg: cfg, selection: sel, informers: f, broadcaster: b, failed: map[string]error{}}
	opts := cfg.Options
	for _, name := range sel.Enabled {
		cc := controllers.Context{
			Client: cfg.Client, Informers: f, Registerer: cfg.Registerer, Options: &opts, Now: cfg.Now,
			Logger:   cfg.Logger.With("controller", name),
			Recorder: func(component string) record.Recorder { return b.NewRecorder(component) },
		}
		c, err := registry[name](cc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if c == nil {
			// Off by its own flags (nodeipam without --allocate-node-cidrs).
			cfg.Logger.Info("controller is disabled by its configuration", "controller", name)
			continue
		}
		m.ctrls = append(m.ctrls, c)
		m.names = append(m.names, name)
	}
	return m, nil
}

// Enabled are the canonical names of the controllers that run.
func (m *Manager) Enabled() []string { return slices.Clone(m.names) }

// Run starts the informers and every controller, and returns when ctx ends
// or when a controller stops on its own, which upstream never expects: the
// process then exits and its service manager restarts it.
func (m *Manager) Run(ctx context.Context) error {
	log := m.cfg.Logger
	for _, n := range m.selection.Unavailable {
		log.Warn("controller requested by --controllers is not part of Skiff yet; skipping", "controller", n)
	}
	log.Info("starting controllers", "controllers", m.names)
	g, gctx := component.NewGroup(ctx)
	g.Go("events", m.broadcaster.Run)
	for i, c := range m.ctrls {
		name := m.names[i]
		g.Go(name, func(ctx context.Context) error {
			err := c.Run(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("stopped unexpectedly")
			}
			m.mu.Lock()
			m.failed[name] = err
			m.mu.Unlock()
			return err
		})
	}
	// Every constructor has asked for its informers by now; one Start runs
	// one list+watch per kind for all of them.
	m.informers.Start(gctx)
	return g.Wait()
}

// HealthChecks are /healthz's checks: one per controller, failing when the
// controller stopped or says it is unwell.
func (m *Manager) HealthChecks() map[string]func(context.Context) error {
	checks := map[string]func(context.Context) error{}
	for i, c := range m.ctrls {
		name := m.names[i]
		checks[name] = func(context.Context) error {
			m.mu.Lock()
			err := m.failed[name]
			m.mu.Unlock()
			if err != nil {
				return err
			}
			if h, ok := c.(controllers.HealthChecker); ok {
				return h.HealthCheck()
			}
			return nil
		}
	}
	return checks
}
