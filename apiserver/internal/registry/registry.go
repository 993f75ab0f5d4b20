// Package registry is the apiserver's generic store of objects, the analogue of
// upstream's generic REST registry: for every kind it assigns keys, sets the
// server-owned metadata, defaults, admits, validates, encodes and writes to
// etcd with optimistic concurrency, and serves reads and watches from the
// kind's watch cache.
//
// Values in etcd are the object's protobuf encoding without
// metadata.resourceVersion: the resourceVersion is the key's ModRevision, set
// on every read. Objects handed to clients are "raw" encodings: the stored
// bytes followed by a tiny metadata{resourceVersion} message, which protobuf's
// merge semantics fold into the object — so serving an object never
// re-marshals it.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/storage"
	"skiff.dev/apiserver/internal/validation"
	"skiff.dev/apiserver/internal/watchcache"
	"skiff.dev/client/component"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
	"skiff.dev/proto/selection"
)

// MaxObjectSize is etcd's default request limit; upstream refuses larger objects.
const MaxObjectSize = 1536 * 1024

// Config wires a Registry.
type Config struct {
	Store *storage.Store
	// Admission runs on every write; nil admits everything.
	Admission *admission.Chain
	Logger    *slog.Logger
	// Registerer receives the watch cache and object-count metrics.
	Registerer prometheus.Registerer
	// Tokens serves serviceaccounts/token; nil answers NotFound.
	Tokens *TokenIssuer
	// Now is the clock (tests); defaults to time.Now.
	Now func() time.Time
	// SideKeys are the kinds that write keys of their own with their
	// objects (Services: cluster IPs and node ports).
	SideKeys map[*scheme.Kind]SideKeys
	// Validation is the cluster's configuration validation depends on.
	Validation validation.Options
}

// Registry serves every kind of the scheme.
type Registry struct {
	cfg       Config
	resources map[*scheme.Kind]*resource
	objects   *prometheus.GaugeVec
}

type resource struct {
	reg    *Registry
	kind   *scheme.Kind
	prefix string // "pods/"
	cache  *watchcache.Cache
	// metaField is the wire number of "metadata" in the kind's message.
	metaField protowire.Number
	typeURL   string
	hasSpec   bool
	recent    recentWrites
	side      SideKeys // nil for most kinds
}

// New builds the registry; call Start to fill the caches.
func New(cfg Config) *Registry {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Registry{cfg: cfg, resources: map[*scheme.Kind]*resource{}}
	r.objects = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "apiserver_storage_objects",
		Help: "Number of stored objects at the time of last check split by kind.",
	}, []string{"resource"})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.objects)
	}
	for _, k := range scheme.All() {
		md := k.New().ProtoReflect().Descriptor()
		res := &resource{
			reg:       r,
			kind:      k,
			prefix:    k.Resource + "/",
			metaField: md.Fields().ByName("metadata").Number(),
			typeURL:   "type.googleapis.com/" + string(md.FullName()),
			hasSpec:   md.Fields().ByName("spec") != nil,
			side:      cfg.SideKeys[k],
		}
		res.cache = watchcache.New(watchcache.Config{
			Resource:   k.Resource,
			Source:     &source{store: cfg.Store, prefix: res.prefix, listed: res.recent.reset},
			Decode:     res.decodeForCache,
			Registerer: cfg.Registerer,
			Logger:     cfg.Logger.With("resource", k.GroupResource()),
		})
		r.resources[k] = res
	}
	cfg.Admission.Initialize(r)
	return r
}

// Start runs every watch cache and the object counter until ctx ends or
// one of them fails.
func (r *Registry) Start(ctx context.Context) error {
	g, _ := component.NewGroup(ctx)
	for _, res := range r.resources {
		g.Go("watch cache "+res.kind.GroupResource(), res.cache.Start)
	}
	g.Go("object counter", func(ctx context.Context) error {
		r.countObjects(ctx)
		return nil
	})
	return g.Wait()
}

// WaitReady blocks until every cache has listed once, then makes sure the
// default namespaces exist.
func (r *Registry) WaitReady(ctx context.Context) error {
	for _, res := range r.resources {
		select {
		case <-res.cache.Ready():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return r.ensureNamespaces(ctx)
}

func (r *Registry) countObjects(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		for _, res := range r.resources {
			if n, err := r.cfg.Store.Count(ctx, res.prefix); err == nil {
				r.objects.WithLabelValues(res.kind.GroupResource()).Set(float64(n))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Registry) res(k *scheme.Kind) *resource { return r.resources[k] }

// Cache is the kind's watch cache (metrics, tests).
func (r *Registry) Cache(k *scheme.Kind) *watchcache.Cache { return r.resources[k].cache }

// --- keys and encoding ---

func (res *resource) key(ns, name string) string {
	if res.kind.Namespaced {
		return ns + "/" + name
	}
	return name
}

// rvSuffix is a metadata{resourceVersion: rev} message under the kind's
// metadata field; appended to stored bytes it sets the resourceVersion.
func (res *resource) rvSuffix(rev int64) []byte {
	rv := strconv.FormatInt(rev, 10)
	var inner []byte
	inner = protowire.AppendTag(inner, 6, protowire.BytesType)
	inner = protowire.AppendString(inner, rv)
	var b []byte
	b = protowire.AppendTag(b, res.metaField, protowire.BytesType)
	b = protowire.AppendBytes(b, inner)
	return b
}

func (res *resource) raw(value []byte, rev int64) []byte {
	suffix := res.rvSuffix(rev)
	out := make([]byte, 0, len(value)+len(suffix))
	return append(append(out, value...), suffix...)
}

// Any wraps a cached object for the wire without re-encoding it.
func (res *resource) any(o *watchcache.Object) *anypb.Any {
	return &anypb.Any{TypeUrl: res.typeURL, Value: o.Raw}
}

// AnyAt wraps o with its resourceVersion replaced by rev (deletions are
// reported at the revision of the delete, as upstream does).
func (r *Registry) AnyAt(k *scheme.Kind, o *watchcache.Object, rev int64) *anypb.Any {
	res := r.res(k)
	if rev == o.Rev {
		return res.any(o)
	}
	return &anypb.Any{TypeUrl: res.typeURL, Value: append(append([]byte(nil), o.Raw...), res.rvSuffix(rev)...)}
}

// Any is o on the wire.
func (r *Registry) Any(k *scheme.Kind, o *watchcache.Object) *anypb.Any { return r.res(k).any(o) }

// Bookmark is an object of the kind that carries only a resourceVersion.
func (r *Registry) Bookmark(k *scheme.Kind, rev int64) *anypb.Any {
	res := r.res(k)
	return &anypb.Any{TypeUrl: res.typeURL, Value: res.rvSuffix(rev)}
}

var marshal = proto.MarshalOptions{Deterministic: true}

// encode is the stored form: the object without its resourceVersion.
func (res *resource) encode(obj scheme.Object) ([]byte, error) {
	m := obj.GetMetadata()
	rv := m.ResourceVersion
	m.ResourceVersion = ""
	b, err := marshal.Marshal(obj)
	m.ResourceVersion = rv
	if err != nil {
		return nil, apierrors.NewInternal(fmt.Errorf("encode %s: %w", res.kind.Kind, err))
	}
	if len(b) > MaxObjectSize {
		return nil, apierrors.NewTooLarge(fmt.Sprintf("Request entity too large: %s %q is %d bytes, limit is %d", res.kind.GroupResource(), m.Name, len(b), MaxObjectSize))
	}
	return b, nil
}

// decode builds the cached form of a stored value.
func (res *resource) decode(key string, value []byte, rev int64) (*watchcache.Object, error) {
	obj := res.kind.New()
	if err := proto.Unmarshal(value, obj); err != nil {
		return nil, fmt.Errorf("decode %s%s at %d: %w", res.prefix, key, rev, err)
	}
	m := obj.GetMetadata()
	m.ResourceVersion = strconv.FormatInt(rev, 10)
	o := &watchcache.Object{
		Key:       key,
		Namespace: m.Namespace,
		Rev:       rev,
		Msg:       obj,
		Raw:       res.raw(value, rev),
		Labels:    selection.Labels(obj),
		Fields:    selection.Fields(res.kind, obj),
	}
	if p, ok := obj.(*corev1.Pod); ok {
		o.NodeName = p.GetSpec().GetNodeName()
	}
	return o, nil
}

// storageError turns a storage error into the API's.
func (res *resource) storageError(err error, name string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrNotFound):
		return apierrors.NewNotFound(res.kind.GroupResource(), name)
	case errors.Is(err, storage.ErrExists):
		return apierrors.NewAlreadyExists(res.kind.GroupResource(), name)
	case errors.Is(err, storage.ErrConflict):
		return apierrors.NewConflict(res.kind.GroupResource(), name, apierrors.StaleMessage)
	case errors.Is(err, storage.ErrCompacted):
		return apierrors.NewExpired(fmt.Sprintf("The resourceVersion for the provided %s is too old.", res.kind.Resource))
	case errors.Is(err, storage.ErrTooLarge):
		return apierrors.NewTooLarge("Request entity too large: " + err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apierrors.New(apierrors.ReasonTimeout, err.Error(), nil)
	case errors.Is(err, storage.ErrUnavailable):
		return apierrors.NewUnavailable(err.Error())
	}
	return apierrors.NewInternal(err)
}
