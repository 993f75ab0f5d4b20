// Package server is the apiserver's gRPC front: it authenticates every
// request by its client certificate, finds the kind, hands the request to the
// registry, turns results into the wire form and counts everything with
// upstream's metric names.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"k8s.io/apimachinery/pkg/fields"

	"skiff.dev/apiserver/internal/authorizer"
	"skiff.dev/apiserver/internal/kubeletclient"
	"skiff.dev/apiserver/internal/registry"
	"skiff.dev/apiserver/internal/request"
	"skiff.dev/apiserver/internal/watchcache"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// Version is what Discovery reports as the server's version.
const Version = "v1.37.0-skiff"

// Service implements apipb.APIServer over a registry.
type Service struct {
	apipb.UnimplementedAPIServer
	reg      *registry.Registry
	authz    authorizer.Authorizer
	log      *slog.Logger
	stopping chan struct{}
	authn    *Authentication
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// kubelets reach the pods' nodes for their streams and NodeProxy.
	kubelets *kubeletclient.Client
	// metrics answers the read-only kinds (metrics.k8s.io); nil serves none.
	metrics Metrics
}

// Metrics computes the read-only kinds on get and list (metricsapi.Server).
type Metrics interface {
	Get(ctx context.Context, k *scheme.Kind, ns, name string) (scheme.Object, error)
	List(ctx context.Context, k *scheme.Kind, ns, labelSelector, fieldSelector string) ([]scheme.Object, error)
}

// SetMetrics serves metrics.k8s.io from m; call it before serving.
func (s *Service) SetMetrics(m Metrics) { s.metrics = m }

// NewService builds the API service; authz nil allows every authenticated
// request (upstream's AlwaysAllow, until RBAC lands).
func NewService(reg *registry.Registry, authz authorizer.Authorizer, log *slog.Logger, r prometheus.Registerer) *Service {
	if authz == nil {
		authz = authorizer.AlwaysAllow
	}
	s := &Service{
		reg: reg, authz: authz, log: log, stopping: make(chan struct{}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apiserver_request_total",
			Help: "Counter of apiserver requests broken out for each verb, group, resource and response code.",
		}, []string{"verb", "group", "resource", "subresource", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "apiserver_request_duration_seconds",
			Help:    "Response latency distribution in seconds for each verb, group, resource and subresource.",
			Buckets: []float64{0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60},
		}, []string{"verb", "group", "resource", "subresource"}),
	}
	if r != nil {
		r.MustRegister(s.requests, s.latency)
	}
	return s
}

// SetAuthentication gives TokenReview the authenticator requests pass.
func (s *Service) SetAuthentication(a *Authentication) { s.authn = a }

// Stop ends every open watch, so a graceful stop does not wait on them.
func (s *Service) Stop() { close(s.stopping) }

// ServerOptions are the gRPC server's codec, interceptors and limits: panics
// are recovered outermost, so a bug in any later step costs one request.
// authn nil authenticates by client certificate only.
func ServerOptions(log *slog.Logger, reg prometheus.Registerer, authn *Authentication) []grpc.ServerOption {
	recoverUnary, recoverStream := Recovery(log, reg)
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.ChainUnaryInterceptor(recoverUnary, unaryDecodeErrors, authn.unary),
		grpc.ChainStreamInterceptor(recoverStream, streamDecodeErrors, authn.stream),
		grpc.MaxRecvMsgSize(8 << 20),
		grpc.MaxSendMsgSize(512 << 20),
	}
}

// httpCode is the HTTP status upstream would have answered, so dashboards
// built on upstream's apiserver_request_total{code} keep working.
func httpCode(verb string, err error) string {
	if err == nil {
		if verb == "create" {
			return "201"
		}
		return "200"
	}
	switch apierrors.ReasonOf(err) {
	case apierrors.ReasonNotFound:
		return "404"
	case apierrors.ReasonAlreadyExists, apierrors.ReasonConflict:
		return "409"
	case apierrors.ReasonInvalid:
		return "422"
	case apierrors.ReasonBadRequest:
		return "400"
	case apierrors.ReasonForbidden:
		return "403"
	case apierrors.ReasonUnauthorized:
		return "401"
	case apierrors.ReasonExpired:
		return "410"
	case apierrors.ReasonTooLarge:
		return "413"
	case apierrors.ReasonTooManyReqs:
		return "429"
	case apierrors.ReasonUnsupported:
		return "415"
	case apierrors.ReasonUnavailable:
		return "503"
	case apierrors.ReasonTimeout:
		return "504"
	}
	return "500"
}

type call struct {
	s           *Service
	verb        string
	kind        *scheme.Kind
	subresource string
	start       time.Time
}

// begin finds the request's kind and starts its metrics.
func (s *Service) begin(verb string, ref *apipb.Resource, subresource string) (*call, error) {
	c := &call{s: s, verb: verb, subresource: subresource, start: time.Now()}
	k, err := scheme.ForRef(ref)
	if err != nil {
		c.done(apierrors.NewNotFound("resource", ref.GetResource()))
		return nil, apierrors.New(apierrors.ReasonNotFound, fmt.Sprintf("the server could not find the requested resource (%s)", resourceName(ref)), nil)
	}
	c.kind = k
	if k.CreateOnly && verb != "create" {
		// upstream's 405; the API has no reason for it, gRPC has a code.
		err := status.Error(codes.Unimplemented, fmt.Sprintf("the server does not allow this method on the requested resource (%s %s)", verb, k.GroupResource()))
		return nil, c.done(err)
	}
	if k.ReadOnly && (s.metrics == nil || (verb != "get" && verb != "list")) {
		if s.metrics == nil {
			c.done(apierrors.NewNotFound("resource", ref.GetResource()))
			return nil, apierrors.New(apierrors.ReasonNotFound, fmt.Sprintf("the server could not find the requested resource (%s)", resourceName(ref)), nil)
		}
		err := status.Error(codes.Unimplemented, fmt.Sprintf("the server does not allow this method on the requested resource (%s %s)", verb, k.GroupResource()))
		return nil, c.done(err)
	}
	return c, nil
}

// authorize asks the authorizer whether the request's user may do the
// call's verb on the object in ns named name ("" for lists, watches and
// creates). ns is as the request gave it; for one object of a namespaced
// kind "" means "default", as in the registry.
func (c *call) authorize(ctx context.Context, ns, name string) error {
	k := c.kind
	switch {
	case !k.Namespaced:
		ns = ""
	case ns == "" && c.verb != "list" && c.verb != "watch":
		ns = "default"
	}
	u, _ := request.UserFrom(ctx)
	err := authorizer.Check(ctx, c.s.authz, authorizer.Attributes{
		User: u, Verb: c.verb, APIGroup: k.Group, APIVersion: k.Version, Resource: k.Resource,
		Subresource: c.subresource, Namespace: ns, Name: name,
	})
	if err != nil {
		return c.done(err)
	}
	return nil
}

// selectedName is the one name a field selector pins, as upstream's
// request info reads metadata.name=x for RBAC's resourceNames.
func selectedName(fieldSelector string) string {
	sel, err := fields.ParseSelector(fieldSelector)
	if err != nil {
		return ""
	}
	name, _ := sel.RequiresExactMatch("metadata.name")
	return name
}

func resourceName(r *apipb.Resource) string {
	if r.GetGroup() == "" {
		return r.GetResource()
	}
	return r.GetResource() + "." + r.GetGroup()
}

// done records the request and returns err unchanged.
func (c *call) done(err error) error {
	group, res := "", "unknown"
	if c.kind != nil {
		group, res = c.kind.Group, c.kind.Resource
	}
	c.s.requests.WithLabelValues(c.verb, group, res, c.subresource, httpCode(c.verb, err)).Inc()
	if c.verb != "watch" {
		c.s.latency.WithLabelValues(c.verb, group, res, c.subresource).Observe(time.Since(c.start).Seconds())
	}
	return err
}

// object decodes a request's Any into the kind's message. The Any must name
// exactly the kind's message, and fields the message does not have are
// dropped, as upstream drops unknown fields.
func object(k *scheme.Kind, a *anypb.Any) (scheme.Object, error) {
	if a == nil {
		return nil, apierrors.NewBadRequest("object is required")
	}
	if want := k.FullName(); a.GetTypeUrl() == "" || a.MessageName() != want {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the object's type URL %q does not name %s, the message of %s", a.GetTypeUrl(), want, k.GroupResource()))
	}
	obj := k.New()
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(a.GetValue(), obj); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("cannot decode %s: %v", k.Kind, err))
	}
	// Unmarshal resets the message, metadata included.
	scheme.Meta(obj)
	return obj, nil
}

func (s *Service) Create(ctx context.Context, req *apipb.CreateRequest) (*anypb.Any, error) {
	c, err := s.begin("create", req.GetResource(), "")
	if err != nil {
		return nil, err
	}
	obj, err := object(c.kind, req.GetObject())
	if err != nil {
		return nil, c.done(err)
	}
	ns := req.GetNamespace()
	if ns == "" {
		ns = obj.GetMetadata().GetNamespace()
	}
	if err := c.authorize(ctx, ns, ""); err != nil {
		return nil, err
	}
	if c.kind.CreateOnly {
		out, err := s.createOnly(ctx, obj)
		if err != nil {
			return nil, c.done(err)
		}
		c.done(nil)
		return anypb.New(out)
	}
	o, err := s.reg.Create(ctx, c.kind, req.GetNamespace(), obj, req.GetDryRun())
	return s.reply(c, o, err)
}

func (s *Service) reply(c *call, o *watchcache.Object, err error) (*anypb.Any, error) {
	if err != nil {
		return nil, c.done(err)
	}
	c.done(nil)
	if o.Raw == nil {
		return anypb.New(o.Msg)
	}
	return s.reg.Any(c.kind, o), nil
}

func (s *Service) Get(ctx context.Context, req *apipb.GetRequest) (*anypb.Any, error) {
	c, err := s.begin("get", req.GetResource(), "")
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, req.GetNamespace(), req.GetName()); err != nil {
		return nil, err
	}
	if c.kind.ReadOnly {
		obj, err := s.metrics.Get(ctx, c.kind, req.GetNamespace(), req.GetName())
		if err != nil {
			return nil, c.done(err)
		}
		c.done(nil)
		return anypb.New(obj)
	}
	o, err := s.reg.Get(ctx, c.kind, req.GetNamespace(), req.GetName(), req.GetResourceVersion())
	return s.reply(c, o, err)
}

func (s *Service) List(ctx context.Context, req *apipb.ListRequest) (*apipb.ListResponse, error) {
	c, err := s.begin("list", req.GetResource(), "")
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, req.GetNamespace(), selectedName(req.GetFieldSelector())); err != nil {
		return nil, err
	}
	if c.kind.ReadOnly {
		items, err := s.metrics.List(ctx, c.kind, req.GetNamespace(), req.GetLabelSelector(), req.GetFieldSelector())
		if err != nil {
			return nil, c.done(err)
		}
		resp := &apipb.ListResponse{Items: make([]*anypb.Any, 0, len(items))}
		for _, it := range items {
			a, err := anypb.New(it)
			if err != nil {
				return nil, c.done(apierrors.NewInternal(err))
			}
			resp.Items = append(resp.Items, a)
		}
		return resp, c.done(nil)
	}
	lr, err := s.reg.List(ctx, c.kind, req.GetNamespace(), registry.ListOptions{
		LabelSelector: req.GetLabelSelector(), FieldSelector: req.GetFieldSelector(),
		Limit: req.GetLimit(), Continue: req.GetContinue(),
		ResourceVersion: req.GetResourceVersion(), ResourceVersionMatch: req.GetResourceVersionMatch(),
	})
	if err != nil {
		return nil, c.done(err)
	}
	resp := &apipb.ListResponse{
		Items:              make([]*anypb.Any, len(lr.Items)),
		ResourceVersion:    strconv.FormatInt(lr.Rev, 10),
		Continue:           lr.Continue,
		RemainingItemCount: lr.Remaining,
	}
	for i, o := range lr.Items {
		resp.Items[i] = s.reg.Any(c.kind, o)
	}
	return resp, c.done(nil)
}

func (s *Service) Update(ctx context.Context, req *apipb.UpdateRequest) (*anypb.Any, error) {
	return s.update(ctx, req, "")
}

func (s *Service) UpdateStatus(ctx context.Context, req *apipb.UpdateRequest) (*anypb.Any, error) {
	return s.update(ctx, req, "status")
}

func (s *Service) update(ctx context.Context, req *apipb.UpdateRequest, sub string) (*anypb.Any, error) {
	c, err := s.begin("update", req.GetResource(), sub)
	if err != nil {
		return nil, err
	}
	obj, err := object(c.kind, req.GetObject())
	if err != nil {
		return nil, c.done(err)
	}
	ns := req.GetNamespace()
	if ns == "" {
		ns = obj.GetMetadata().GetNamespace()
	}
	if err := c.authorize(ctx, ns, obj.GetMetadata().GetName()); err != nil {
		return nil, err
	}
	var o *watchcache.Object
	if sub == "status" {
		o, err = s.reg.UpdateStatus(ctx, c.kind, req.GetNamespace(), obj, req.GetDryRun())
	} else {
		o, err = s.reg.Update(ctx, c.kind, req.GetNamespace(), obj, req.GetDryRun())
	}
	return s.reply(c, o, err)
}

func (s *Service) Patch(ctx context.Context, req *apipb.PatchRequest) (*anypb.Any, error) {
	c, err := s.begin("patch", req.GetResource(), req.GetSubresource())
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, req.GetNamespace(), req.GetName()); err != nil {
		return nil, err
	}
	o, err := s.reg.Patch(ctx, c.kind, req.GetNamespace(), req.GetName(), req.GetPatchType(), req.GetPatch(), req.GetSubresource(), req.GetDryRun())
	return s.reply(c, o, err)
}

func (s *Service) Delete(ctx context.Context, req *apipb.DeleteRequest) (*anypb.Any, error) {
	c, err := s.begin("delete", req.GetResource(), "")
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, req.GetNamespace(), req.GetName()); err != nil {
		return nil, err
	}
	o, err := s.reg.Delete(ctx, c.kind, req.GetNamespace(), req.GetName(), registry.DeleteOptions{
		Preconditions: req.GetPreconditions(), GracePeriodSeconds: req.GracePeriodSeconds,
		PropagationPolicy: req.GetPropagationPolicy(), DryRun: req.GetDryRun(),
	})
	return s.reply(c, o, err)
}

func (s *Service) Bind(ctx context.Context, req *apipb.BindRequest) (*anypb.Any, error) {
	b := req.GetBinding()
	c, err := s.begin("create", &apipb.Resource{Version: "v1", Resource: "pods"}, "binding")
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, b.GetMetadata().GetNamespace(), b.GetMetadata().GetName()); err != nil {
		return nil, err
	}
	o, err := s.reg.Bind(ctx, b)
	return s.reply(c, o, err)
}

func (s *Service) Evict(ctx context.Context, req *apipb.EvictRequest) (*anypb.Any, error) {
	e := req.GetEviction()
	c, err := s.begin("create", &apipb.Resource{Version: "v1", Resource: "pods"}, "eviction")
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, e.GetMetadata().GetNamespace(), e.GetMetadata().GetName()); err != nil {
		return nil, err
	}
	o, err := s.reg.Evict(ctx, e)
	return s.reply(c, o, err)
}

// CreateToken is serviceaccounts/token.
func (s *Service) CreateToken(ctx context.Context, req *apipb.CreateTokenRequest) (*anypb.Any, error) {
	c, err := s.begin("create", &apipb.Resource{Version: "v1", Resource: "serviceaccounts"}, "token")
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, req.GetNamespace(), req.GetName()); err != nil {
		return nil, err
	}
	tr, err := s.reg.CreateToken(ctx, req.GetNamespace(), req.GetName(), req.GetTokenRequest(), req.GetDryRun())
	if err != nil {
		return nil, c.done(err)
	}
	c.done(nil)
	return anypb.New(tr)
}

func (s *Service) Discovery(ctx context.Context, _ *apipb.DiscoveryRequest) (*apipb.DiscoveryResponse, error) {
	resp := &apipb.DiscoveryResponse{ServerVersion: Version}
	kinds := append(append([]*scheme.Kind(nil), scheme.All()...), scheme.CreateOnly()...)
	if s.metrics != nil {
		kinds = append(kinds, scheme.ReadOnly()...)
	}
	for _, k := range kinds {
		resp.Resources = append(resp.Resources, &apipb.APIResource{
			Group: k.Group, Version: k.Version, Kind: k.Kind, Resource: k.Resource, Singular: k.Singular,
			ShortNames: k.ShortNames, Namespaced: k.Namespaced, Verbs: k.Verbs(),
			Subresources: k.Subresources, Categories: k.Categories,
		})
	}
	return resp, nil
}

// Watch streams events until the client goes away, the watch cache ends the
// watcher (a slow reader, Expired) or the server shuts down.
func (s *Service) Watch(req *apipb.WatchRequest, stream grpc.ServerStreamingServer[apipb.WatchEvent]) error {
	ctx := stream.Context()
	c, err := s.begin("watch", req.GetResource(), "")
	if err != nil {
		return err
	}
	if err := c.authorize(ctx, req.GetNamespace(), selectedName(req.GetFieldSelector())); err != nil {
		return err
	}
	w, err := s.reg.Watch(ctx, c.kind, req.GetNamespace(), registry.WatchOptions{
		LabelSelector: req.GetLabelSelector(), FieldSelector: req.GetFieldSelector(),
		ResourceVersion: req.GetResourceVersion(), AllowBookmarks: req.GetAllowBookmarks(),
	})
	if err != nil {
		return c.done(err)
	}
	c.done(nil)
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return apierrors.NewUnavailable("apiserver is shutting down")
		case ev, ok := <-w.Events():
			if !ok {
				switch err := w.Err(); {
				case err == nil:
					return nil
				case errors.Is(err, watchcache.ErrExpired):
					return apierrors.NewExpired(err.Error())
				default:
					// The client re-watches from the last revision it saw.
					return apierrors.NewUnavailable("watch ended: " + err.Error())
				}
			}
			out := &apipb.WatchEvent{ResourceVersion: strconv.FormatInt(ev.Rev, 10)}
			switch ev.Type {
			case watchcache.Added:
				out.Type, out.Object = "ADDED", s.reg.AnyAt(c.kind, ev.Object, ev.Rev)
			case watchcache.Modified:
				out.Type, out.Object = "MODIFIED", s.reg.AnyAt(c.kind, ev.Object, ev.Rev)
			case watchcache.Deleted:
				out.Type, out.Object = "DELETED", s.reg.AnyAt(c.kind, ev.Object, ev.Rev)
			case watchcache.Bookmark:
				out.Type, out.Object = "BOOKMARK", s.reg.Bookmark(c.kind, ev.Rev)
			}
			if err := stream.Send(out); err != nil {
				return err
			}
		}
	}
}

func (s *Service) History(ctx context.Context, req *apipb.HistoryRequest) (*apipb.HistoryResponse, error) {
	c, err := s.begin("get", req.GetResource(), "history")
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, req.GetNamespace(), req.GetName()); err != nil {
		return nil, err
	}
	items, compacted, err := s.reg.History(ctx, c.kind, req.GetNamespace(), req.GetName(), req.GetLimit())
	if err != nil {
		return nil, c.done(err)
	}
	resp := &apipb.HistoryResponse{CompactedRevision: compacted}
	for _, it := range items {
		resp.Items = append(resp.Items, &apipb.HistoryItem{
			Object: s.reg.Any(c.kind, it.Object), ResourceVersion: strconv.FormatInt(it.Object.Rev, 10), Deleted: it.Deleted,
		})
	}
	return resp, c.done(nil)
}
