package fake

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// serverVersion is what Discovery reports.
const serverVersion = "v1.37.0-skiff-fake"

// server is the gRPC face of a Clientset: it records each request as an
// Action, lets the reactors answer it, and otherwise asks the tracker.
type server struct {
	apipb.UnimplementedAPIServer
	cs *Clientset
}

func kindOf(ref *apipb.Resource) (*scheme.Kind, error) {
	k, err := scheme.ForRef(ref)
	if err != nil {
		return nil, apierrors.New(apierrors.ReasonNotFound, "the server could not find the requested resource: "+err.Error(), nil)
	}
	return k, nil
}

// decode unpacks a request's object, which must be of the request's kind.
func decode(k *scheme.Kind, a *anypb.Any) (scheme.Object, error) {
	if a == nil {
		return nil, apierrors.NewBadRequest("object is required")
	}
	if want := k.FullName(); a.MessageName() != want {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the object's type URL %q does not name %s, the message of %s", a.GetTypeUrl(), want, k.GroupResource()))
	}
	obj := k.New()
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(a.GetValue(), obj); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("cannot decode %s: %v", k.Kind, err))
	}
	scheme.Meta(obj)
	return obj, nil
}

func pack(o scheme.Object, err error) (*anypb.Any, error) {
	if err != nil {
		return nil, err
	}
	a, err := anypb.New(o)
	if err != nil {
		return nil, apierrors.NewInternal(err)
	}
	return a, nil
}

// react records a and offers it to the reactors; handled means one
// answered with ret (nil: see answer) or err.
func (s *server) react(a Action) (handled bool, ret scheme.Object, err error) {
	cs := s.cs
	cs.mu.Lock()
	cs.actions = append(cs.actions, a)
	reactors := slices.Clone(cs.reactors)
	cs.mu.Unlock()
	for _, r := range reactors {
		if !r.matches(a) {
			continue
		}
		// The reactor may keep or change its copy.
		if handled, ret, err := r.fn(a.copy()); handled {
			return true, ret, err
		}
	}
	return false, nil, nil
}

func (r reactor) matches(a Action) bool {
	if r.verb != "*" && r.verb != a.Verb {
		return false
	}
	return r.resource == "*" || r.resource == a.Resource ||
		(a.Subresource != "" && r.resource == a.Resource+"/"+a.Subresource)
}

// copy gives the action its own object, so neither the tracker's changes
// nor a test's reach the other.
func (a Action) copy() Action {
	if a.Object != nil {
		a.Object = clone(a.Object)
	}
	a.Patch = slices.Clone(a.Patch)
	return a
}

// answer is a reactor's reply: its error, its object, or when it gave
// neither, the request's object (an empty one named as the request).
func answer(k *scheme.Kind, a Action, ret scheme.Object, err error) (*anypb.Any, error) {
	if err != nil {
		return nil, err
	}
	if ret == nil {
		ret = a.Object
	}
	if ret == nil {
		ret = k.New()
		ret.GetMetadata().Name, ret.GetMetadata().Namespace = a.Name, a.Namespace
	}
	return pack(ret, nil)
}

func (s *server) tracker() *Tracker { return s.cs.tracker }

func (s *server) Create(_ context.Context, req *apipb.CreateRequest) (*anypb.Any, error) {
	k, err := kindOf(req.GetResource())
	if err != nil {
		return nil, err
	}
	obj, err := decode(k, req.GetObject())
	if err != nil {
		return nil, err
	}
	ns := req.GetNamespace()
	if ns == "" {
		ns = obj.GetMetadata().GetNamespace()
	}
	a := Action{Verb: "create", Resource: k.Resource, Namespace: requestNamespace(k, ns), Name: obj.GetMetadata().GetName(), Object: clone(obj)}
	if handled, ret, err := s.react(a); handled {
		return answer(k, a, ret, err)
	}
	return pack(s.tracker().create(k, req.GetNamespace(), obj, req.GetDryRun()))
}

func (s *server) Get(_ context.Context, req *apipb.GetRequest) (*anypb.Any, error) {
	k, err := kindOf(req.GetResource())
	if err != nil {
		return nil, err
	}
	a := Action{Verb: "get", Resource: k.Resource, Namespace: requestNamespace(k, req.GetNamespace()), Name: req.GetName()}
	if handled, ret, err := s.react(a); handled {
		return answer(k, a, ret, err)
	}
	return pack(s.tracker().get(k, req.GetNamespace(), req.GetName(), req.GetResourceVersion()))
}

func (s *server) List(_ context.Context, req *apipb.ListRequest) (*apipb.ListResponse, error) {
	k, err := kindOf(req.GetResource())
	if err != nil {
		return nil, err
	}
	ns := req.GetNamespace()
	if !k.Namespaced {
		ns = ""
	}
	a := Action{Verb: "list", Resource: k.Resource, Namespace: ns}
	f, err := newFilter(k, ns, req.GetLabelSelector(), req.GetFieldSelector())
	if handled, _, rerr := s.react(a); handled {
		if rerr != nil {
			return nil, rerr
		}
		return &apipb.ListResponse{ResourceVersion: strconv.FormatInt(s.tracker().currentRev(), 10)}, nil
	}
	if err != nil {
		return nil, err
	}
	l, err := s.tracker().list(k, f, req.GetLimit(), req.GetContinue())
	if err != nil {
		return nil, err
	}
	resp := &apipb.ListResponse{ResourceVersion: strconv.FormatInt(l.rev, 10), Continue: l.next, RemainingItemCount: l.remaining}
	for _, o := range l.items {
		a, err := pack(o, nil)
		if err != nil {
			return nil, err
		}
		resp.Items = append(resp.Items, a)
	}
	return resp, nil
}

func (s *server) Update(_ context.Context, req *apipb.UpdateRequest) (*anypb.Any, error) {
	return s.update(req, false)
}

func (s *server) UpdateStatus(_ context.Context, req *apipb.UpdateRequest) (*anypb.Any, error) {
	return s.update(req, true)
}

func (s *server) update(req *apipb.UpdateRequest, status bool) (*anypb.Any, error) {
	k, err := kindOf(req.GetResource())
	if err != nil {
		return nil, err
	}
	obj, err := decode(k, req.GetObject())
	if err != nil {
		return nil, err
	}
	ns := req.GetNamespace()
	if ns == "" {
		ns = obj.GetMetadata().GetNamespace()
	}
	a := Action{Verb: "update", Resource: k.Resource, Namespace: requestNamespace(k, ns), Name: obj.GetMetadata().GetName(), Object: clone(obj)}
	if status {
		a.Subresource = "status"
	}
	if handled, ret, err := s.react(a); handled {
		return answer(k, a, ret, err)
	}
	return pack(s.tracker().update(k, req.GetNamespace(), obj, status, req.GetDryRun()))
}

func (s *server) Patch(_ context.Context, req *apipb.PatchRequest) (*anypb.Any, error) {
	k, err := kindOf(req.GetResource())
	if err != nil {
		return nil, err
	}
	a := Action{Verb: "patch", Resource: k.Resource, Subresource: req.GetSubresource(), Namespace: requestNamespace(k, req.GetNamespace()),
		Name: req.GetName(), PatchType: req.GetPatchType(), Patch: slices.Clone(req.GetPatch())}
	if handled, ret, err := s.react(a); handled {
		return answer(k, a, ret, err)
	}
	return pack(s.tracker().patch(k, req.GetNamespace(), req.GetName(), req.GetPatchType(), req.GetPatch(), req.GetSubresource(), req.GetDryRun()))
}

func (s *server) Delete(_ context.Context, req *apipb.DeleteRequest) (*anypb.Any, error) {
	k, err := kindOf(req.GetResource())
	if err != nil {
		return nil, err
	}
	a := Action{Verb: "delete", Resource: k.Resource, Namespace: requestNamespace(k, req.GetNamespace()), Name: req.GetName()}
	if handled, ret, err := s.react(a); handled {
		return answer(k, a, ret, err)
	}
	return pack(s.tracker().delete(k, req.GetNamespace(), req.GetName(), deleteOptions{
		preconditions: req.GetPreconditions(), grace: req.GracePeriodSeconds,
		policy: req.GetPropagationPolicy(), dryRun: req.GetDryRun(),
	}))
}

func (s *server) Bind(_ context.Context, req *apipb.BindRequest) (*anypb.Any, error) {
	b := req.GetBinding()
	a := Action{Verb: "bind", Resource: "pods", Subresource: "binding", Namespace: requestNamespace(podKind, b.GetMetadata().GetNamespace()),
		Name: b.GetMetadata().GetName(), Object: clone(b)}
	if handled, ret, err := s.react(a); handled {
		return answer(podKind, a, ret, err)
	}
	return pack(s.tracker().bind(b))
}

func (s *server) Evict(_ context.Context, req *apipb.EvictRequest) (*anypb.Any, error) {
	e := req.GetEviction()
	a := Action{Verb: "evict", Resource: "pods", Subresource: "eviction", Namespace: requestNamespace(podKind, e.GetMetadata().GetNamespace()),
		Name: e.GetMetadata().GetName(), Object: clone(e)}
	if handled, ret, err := s.react(a); handled {
		return answer(podKind, a, ret, err)
	}
	return pack(s.tracker().evict(e))
}

func (s *server) History(_ context.Context, req *apipb.HistoryRequest) (*apipb.HistoryResponse, error) {
	k, err := kindOf(req.GetResource())
	if err != nil {
		return nil, err
	}
	items, compacted, err := s.tracker().history(k, req.GetNamespace(), req.GetName(), req.GetLimit())
	if err != nil {
		return nil, err
	}
	resp := &apipb.HistoryResponse{CompactedRevision: compacted}
	for _, it := range items {
		a, err := pack(it.obj, nil)
		if err != nil {
			return nil, err
		}
		resp.Items = append(resp.Items, &apipb.HistoryItem{Object: a, ResourceVersion: it.obj.GetMetadata().GetResourceVersion(), Deleted: it.deleted})
	}
	return resp, nil
}

func (s *server) Discovery(context.Context, *apipb.DiscoveryRequest) (*apipb.DiscoveryResponse, error) {
	resp := &apipb.DiscoveryResponse{ServerVersion: serverVersion}
	for _, k := range scheme.All() {
		resp.Resources = append(resp.Resources, &apipb.APIResource{
			Group: k.Group, Version: k.Version, Kind: k.Kind, Resource: k.Resource, Singular: k.Singular,
			ShortNames: k.ShortNames, Namespaced: k.Namespaced,
			Verbs:        []string{"create", "delete", "get", "list", "patch", "update", "watch"},
			Subresources: k.Subresources, Categories: k.Categories,
		})
	}
	return resp, nil
}

func (s *server) Watch(req *apipb.WatchRequest, stream grpc.ServerStreamingServer[apipb.WatchEvent]) error {
	k, err := kindOf(req.GetResource())
	if err != nil {
		return err
	}
	ns := req.GetNamespace()
	if !k.Namespaced {
		ns = ""
	}
	a := Action{Verb: "watch", Resource: k.Resource, Namespace: ns}
	f, err := newFilter(k, ns, req.GetLabelSelector(), req.GetFieldSelector())
	if handled, _, rerr := s.react(a); handled {
		if rerr != nil {
			return rerr
		}
		// A watch a reactor took over delivers nothing until it ends.
		<-stream.Context().Done()
		return nil
	}
	if err != nil {
		return err
	}
	return s.tracker().watch(stream.Context(), k, f, req.GetResourceVersion(), req.GetAllowBookmarks(),
		func(typ string, obj scheme.Object, rev int64) error {
			a, err := anypb.New(obj)
			if err != nil {
				return apierrors.NewInternal(err)
			}
			return stream.Send(&apipb.WatchEvent{Type: typ, Object: a, ResourceVersion: strconv.FormatInt(rev, 10)})
		})
}
