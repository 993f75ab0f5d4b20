// Package client is Skiff's client-go: a typed and a dynamic client over the
// generic gRPC API. Objects are the generated messages of skiff.dev/proto/api;
// errors are gRPC statuses readable with skiff.dev/proto/apierrors.
//
//	pods := client.For[*corev1.Pod](c, "default")
//	p, err := pods.Get(ctx, "web-0")
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	authenticationv1 "skiff.dev/proto/api/authentication/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// Client talks to one apiserver.
type Client struct {
	API apipb.APIClient
}

// New wraps a connection (see skiff.dev/client/config for dialing).
func New(cc grpc.ClientConnInterface) *Client { return &Client{API: apipb.NewAPIClient(cc)} }

// ListOptions select and page a list or a watch.
type ListOptions struct {
	LabelSelector, FieldSelector string
	Limit                        int64
	Continue                     string
	ResourceVersion              string
	ResourceVersionMatch         string
	AllowBookmarks               bool
}

// DeleteOptions are upstream's.
type DeleteOptions struct {
	GracePeriodSeconds *int64
	PropagationPolicy  string
	Preconditions      *apipb.Preconditions
	DryRun             bool
}

// ObjectList is one page of a list.
type ObjectList struct {
	Items              []scheme.Object
	ResourceVersion    string
	Continue           string
	RemainingItemCount *int64
}

// EventType is a watch event's type.
type EventType string

const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	Bookmark EventType = "BOOKMARK"
)

// Event is one watch event; a Bookmark's object carries only a resourceVersion.
type Event struct {
	Type   EventType
	Object scheme.Object
}

// Watcher delivers a watch's events until Stop or an error.
type Watcher struct {
	ch     chan Event
	done   <-chan struct{} // closed by Stop (or the caller's context)
	cancel context.CancelFunc
	mu     sync.Mutex
	err    error
}

// Events closes when the watch ends; Err then says why (nil after Stop).
func (w *Watcher) Events() <-chan Event { return w.ch }

// Err is why the watch ended.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Stop ends the watch.
func (w *Watcher) Stop() { w.cancel() }

// Dynamic is a client for one kind, in one namespace (ignored for
// cluster-scoped kinds).
type Dynamic struct {
	c    *Client
	kind *scheme.Kind
	ns   string
}

// Resource is the dynamic client of a kind.
func (c *Client) Resource(k *scheme.Kind, namespace string) *Dynamic {
	if !k.Namespaced {
		namespace = ""
	}
	return &Dynamic{c: c, kind: k, ns: namespace}
}

// Kind is the client's kind.
func (d *Dynamic) Kind() *scheme.Kind { return d.kind }

// Decode unpacks an object the API returned.
func Decode(a *anypb.Any) (scheme.Object, error) {
	if a == nil {
		return nil, errors.New("empty object")
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, err
	}
	o, ok := m.(scheme.Object)
	if !ok {
		return nil, fmt.Errorf("%T is not an object", m)
	}
	return o, nil
}

// decodeInto unpacks into the client's kind without a registry lookup; an
// object of another kind is an error rather than a silent misreading.
func (d *Dynamic) decodeInto(a *anypb.Any) (scheme.Object, error) {
	if a.GetTypeUrl() != "" && a.MessageName() != d.kind.FullName() {
		return nil, fmt.Errorf("got a %s, want a %s", a.MessageName(), d.kind.FullName())
	}
	o := d.kind.New()
	if err := proto.Unmarshal(a.GetValue(), o); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", d.kind.FullName(), err)
	}
	return o, nil
}

// Get reads the newest state of an object.
func (d *Dynamic) Get(ctx context.Context, name string) (scheme.Object, error) {
	a, err := d.c.API.Get(ctx, &apipb.GetRequest{Resource: d.kind.Ref(), Namespace: d.ns, Name: name})
	if err != nil {
		return nil, err
	}
	return d.decodeInto(a)
}

// GetAt reads the object as it was at an etcd revision (before compaction).
func (d *Dynamic) GetAt(ctx context.Context, name, resourceVersion string) (scheme.Object, error) {
	a, err := d.c.API.Get(ctx, &apipb.GetRequest{Resource: d.kind.Ref(), Namespace: d.ns, Name: name, ResourceVersion: resourceVersion})
	if err != nil {
		return nil, err
	}
	return d.decodeInto(a)
}

// List reads one page (all, without a Limit) of the kind's objects.
func (d *Dynamic) List(ctx context.Context, o ListOptions) (*ObjectList, error) {
	resp, err := d.c.API.List(ctx, &apipb.ListRequest{
		Resource: d.kind.Ref(), Namespace: d.ns, LabelSelector: o.LabelSelector, FieldSelector: o.FieldSelector,
		Limit: o.Limit, Continue: o.Continue, ResourceVersion: o.ResourceVersion, ResourceVersionMatch: o.ResourceVersionMatch,
	})
	if err != nil {
		return nil, err
	}
	out := &ObjectList{Items: make([]scheme.Object, len(resp.Items)), ResourceVersion: resp.ResourceVersion,
		Continue: resp.Continue, RemainingItemCount: resp.RemainingItemCount}
	for i, a := range resp.Items {
		if out.Items[i], err = d.decodeInto(a); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (d *Dynamic) pack(obj scheme.Object) (*anypb.Any, error) { return anypb.New(obj) }

// Create stores a new object; dryRun validates and defaults without storing.
func (d *Dynamic) Create(ctx context.Context, obj scheme.Object, dryRun bool) (scheme.Object, error) {
	a, err := d.pack(obj)
	if err != nil {
		return nil, err
	}
	r, err := d.c.API.Create(ctx, &apipb.CreateRequest{Resource: d.kind.Ref(), Namespace: d.ns, Object: a, DryRun: dryRun})
	if err != nil {
		return nil, err
	}
	return d.decodeInto(r)
}

// Update replaces an object; a stale resourceVersion fails with Conflict.
func (d *Dynamic) Update(ctx context.Context, obj scheme.Object, dryRun bool) (scheme.Object, error) {
	a, err := d.pack(obj)
	if err != nil {
		return nil, err
	}
	r, err := d.c.API.Update(ctx, &apipb.UpdateRequest{Resource: d.kind.Ref(), Namespace: d.ns, Object: a, DryRun: dryRun})
	if err != nil {
		return nil, err
	}
	return d.decodeInto(r)
}

// UpdateStatus replaces only the status of an object.
func (d *Dynamic) UpdateStatus(ctx context.Context, obj scheme.Object) (scheme.Object, error) {
	a, err := d.pack(obj)
	if err != nil {
		return nil, err
	}
	r, err := d.c.API.UpdateStatus(ctx, &apipb.UpdateRequest{Resource: d.kind.Ref(), Namespace: d.ns, Object: a})
	if err != nil {
		return nil, err
	}
	return d.decodeInto(r)
}

// Patch applies a JSON merge patch ("merge") or JSON patch ("json").
func (d *Dynamic) Patch(ctx context.Context, name, patchType string, patch []byte, subresource string, dryRun bool) (scheme.Object, error) {
	r, err := d.c.API.Patch(ctx, &apipb.PatchRequest{Resource: d.kind.Ref(), Namespace: d.ns, Name: name,
		PatchType: patchType, Patch: patch, Subresource: subresource, DryRun: dryRun})
	if err != nil {
		return nil, err
	}
	return d.decodeInto(r)
}

// Delete deletes or marks for deletion; it returns the object's last state.
func (d *Dynamic) Delete(ctx context.Context, name string, o DeleteOptions) (scheme.Object, error) {
	r, err := d.c.API.Delete(ctx, &apipb.DeleteRequest{Resource: d.kind.Ref(), Namespace: d.ns, Name: name,
		Preconditions: o.Preconditions, GracePeriodSeconds: o.GracePeriodSeconds, PropagationPolicy: o.PropagationPolicy, DryRun: o.DryRun})
	if err != nil {
		return nil, err
	}
	return d.decodeInto(r)
}

// Watch streams events from o.ResourceVersion.
func (d *Dynamic) Watch(ctx context.Context, o ListOptions) (*Watcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := d.c.API.Watch(ctx, &apipb.WatchRequest{Resource: d.kind.Ref(), Namespace: d.ns,
		LabelSelector: o.LabelSelector, FieldSelector: o.FieldSelector, ResourceVersion: o.ResourceVersion, AllowBookmarks: o.AllowBookmarks})
	if err != nil {
		cancel()
		return nil, err
	}
	w := &Watcher{ch: make(chan Event, 64), done: ctx.Done(), cancel: cancel}
	go func() {
		defer close(w.ch)
		for {
			ev, err := stream.Recv()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, io.EOF) {
					w.fail(err)
				}
				return
			}
			obj, err := d.decodeInto(ev.GetObject())
			if err != nil {
				w.fail(fmt.Errorf("decoding %s event: %w", ev.GetType(), err))
				return
			}
			// The event's revision is authoritative: a bookmark may come
			// with no object at all, and resuming needs its revision.
			if m := scheme.Meta(obj); m.GetResourceVersion() == "" {
				m.ResourceVersion = ev.GetResourceVersion()
			}
			select {
			case w.ch <- Event{Type: EventType(ev.Type), Object: obj}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return w, nil
}

func (w *Watcher) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// Discovery lists the server's resources.
func (c *Client) Discovery(ctx context.Context) (*apipb.DiscoveryResponse, error) {
	return c.API.Discovery(ctx, &apipb.DiscoveryRequest{})
}

// Bind assigns a pod to a node through the binding subresource.
func (c *Client) Bind(ctx context.Context, b *corev1.Binding) error {
	_, err := c.API.Bind(ctx, &apipb.BindRequest{Binding: b})
	return err
}

// Evict deletes a pod through the eviction subresource, which honours
// PodDisruptionBudgets (TooManyRequests when one forbids it now).
func (c *Client) Evict(ctx context.Context, e *policyv1.Eviction) error {
	_, err := c.API.Evict(ctx, &apipb.EvictRequest{Eviction: e})
	return err
}

// CreateToken asks the serviceaccounts/token subresource for a token for
// service account namespace/name, as upstream's
// CoreV1().ServiceAccounts(ns).CreateToken; the answer carries the token
// and its expiry in status.
func (c *Client) CreateToken(ctx context.Context, namespace, name string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	a, err := c.API.CreateToken(ctx, &apipb.CreateTokenRequest{Namespace: namespace, Name: name, TokenRequest: tr})
	if err != nil {
		return nil, err
	}
	out := &authenticationv1.TokenRequest{}
	if err := a.UnmarshalTo(out); err != nil {
		return nil, fmt.Errorf("decode TokenRequest: %w", err)
	}
	return out, nil
}

// Revision is one past write of an object.
type Revision struct {
	Object          scheme.Object
	ResourceVersion string
	Deleted         bool
}

// History lists an object's past revisions still held in etcd, newest
// first, and the compacted revision before which history is gone.
func (d *Dynamic) History(ctx context.Context, name string, limit int64) ([]Revision, int64, error) {
	resp, err := d.c.API.History(ctx, &apipb.HistoryRequest{Resource: d.kind.Ref(), Namespace: d.ns, Name: name, Limit: limit})
	if err != nil {
		return nil, 0, err
	}
	out := make([]Revision, len(resp.Items))
	for i, it := range resp.Items {
		o, err := d.decodeInto(it.Object)
		if err != nil {
			return nil, 0, err
		}
		out[i] = Revision{Object: o, ResourceVersion: it.ResourceVersion, Deleted: it.Deleted}
	}
	return out, resp.CompactedRevision, nil
}
