// Package admission runs the plugins every write passes after defaulting and
// before storage, in upstream's two phases: mutating plugins may change the
// object, then, after the kind's validation, validating plugins may only
// refuse it. Each plugin sees the operation, the user, the resource and
// subresource, the object and a private copy of the stored one.
package admission

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/internal/request"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/scheme"
)

// Operation is the kind of write.
type Operation string

const (
	Create Operation = "CREATE"
	Update Operation = "UPDATE"
	Delete Operation = "DELETE"
)

// Attributes describe one write.
type Attributes struct {
	Operation Operation
	// Kind is the resource addressed: pods for pods/binding and pods/eviction.
	Kind        *scheme.Kind
	Subresource string // "", status, binding, eviction
	Namespace   string
	Name        string
	User        request.User
	// Object is what will be stored, or the request's own object for a
	// subresource (the Binding, the Eviction); nil for Delete. Mutating
	// plugins may change it.
	Object scheme.Object
	DryRun bool

	old, oldCopy scheme.Object
}

// NewAttributes describes a write of obj over old (nil for creates).
func NewAttributes(op Operation, k *scheme.Kind, sub, ns, name string, u request.User, obj, old scheme.Object, dryRun bool) *Attributes {
	return &Attributes{Operation: op, Kind: k, Subresource: sub, Namespace: ns, Name: name, User: u, Object: obj, DryRun: dryRun, old: old}
}

// OldObject is the stored object as it was before this write (nil for
// creates): a private copy, since the stored one is shared with every reader
// of the watch cache.
func (a *Attributes) OldObject() scheme.Object {
	if a.old == nil {
		return nil
	}
	if a.oldCopy == nil {
		a.oldCopy = proto.Clone(a.old).(scheme.Object)
	}
	return a.oldCopy
}

// Plugin is one admission plugin.
type Plugin interface {
	Name() string
	Handles(Operation) bool
}

// Mutator is a plugin of the first phase.
type Mutator interface {
	Plugin
	Admit(ctx context.Context, a *Attributes) error
}

// Validator is a plugin of the second phase.
type Validator interface {
	Plugin
	Validate(ctx context.Context, a *Attributes) error
}

// NamespaceGetter reads a namespace, from memory when it can; an absent one
// is the API's NotFound.
type NamespaceGetter interface {
	Namespace(ctx context.Context, name string) (*corev1.Namespace, error)
}

// WantsNamespaces is a plugin that needs to read namespaces; the registry
// hands it its getter once built (upstream's plugin initializers).
type WantsNamespaces interface {
	SetNamespaceGetter(NamespaceGetter)
}

// Chain is the ordered list of plugins.
type Chain struct {
	plugins []Plugin
	latency *prometheus.HistogramVec
}

// NewChain orders plugins as given; metrics go to reg (may be nil).
func NewChain(reg prometheus.Registerer, plugins ...Plugin) *Chain {
	c := &Chain{plugins: plugins, latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "apiserver_admission_controller_admission_duration_seconds",
		Help:    "Admission controller latency histogram in seconds, identified by name and broken out for each operation and API resource and type (validate or admit).",
		Buckets: []float64{0.005, 0.025, 0.1, 0.5, 1.0, 2.5},
	}, []string{"name", "type", "operation", "rejected"})}
	if reg != nil {
		reg.MustRegister(c.latency)
	}
	return c
}

// Initialize gives every plugin that wants one the namespace getter.
func (c *Chain) Initialize(ns NamespaceGetter) {
	if c == nil {
		return
	}
	for _, p := range c.plugins {
		if w, ok := p.(WantsNamespaces); ok {
			w.SetNamespaceGetter(ns)
		}
	}
}

// Admit runs the mutating phase.
func (c *Chain) Admit(ctx context.Context, a *Attributes) error {
	if c == nil {
		return nil
	}
	for _, p := range c.plugins {
		if m, ok := p.(Mutator); ok && m.Handles(a.Operation) {
			if err := c.observe(p, "admit", a, func() error { return m.Admit(ctx, a) }); err != nil {
				return err
			}
		}
	}
	return nil
}

// Validate runs the validating phase.
func (c *Chain) Validate(ctx context.Context, a *Attributes) error {
	if c == nil {
		return nil
	}
	for _, p := range c.plugins {
		if v, ok := p.(Validator); ok && v.Handles(a.Operation) {
			if err := c.observe(p, "validate", a, func() error { return v.Validate(ctx, a) }); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Chain) observe(p Plugin, typ string, a *Attributes, fn func() error) error {
	start := time.Now()
	err := fn()
	c.latency.WithLabelValues(p.Name(), typ, string(a.Operation), strconv.FormatBool(err != nil)).Observe(time.Since(start).Seconds())
	return err
}
