// Package fake is an in-memory Skiff apiserver for controller unit tests.
//
// NewClientset serves every kind of skiff.dev/proto/scheme from memory over an
// in-process gRPC connection (bufconn) and hands back a real *client.Client,
// so typed clients, informers and listers run unchanged and a controller's
// tests finish in milliseconds without etcd:
//
//	cs := fake.NewClientset(pod, rs)
//	defer cs.Close()
//	ctrl := replicaset.New(cs.Client, ...)
//
// It keeps the metadata semantics controllers depend on as the real apiserver
// does: generateName, uid, one resourceVersion counter, creationTimestamp,
// generation, optimistic concurrency, the status subresource, merge/JSON/
// strategic patches, delete preconditions, propagation finalizers, finalizers
// and graceful pod deletion, label and field selectors, and watches resumed
// from a resourceVersion. Every request is recorded as an Action, and reactors
// can answer a request instead of the tracker (to inject an error).
//
// As on the apiserver, Create drops the status of kinds with a status
// subresource (a Node's excepted) and starts a Pod Pending and a Namespace
// Active; seed fixtures that need a status with NewClientset or
// Tracker().Add, which store objects as given.
//
// It is not an apiserver: it does no validation, no defaulting, no admission,
// no authentication or authorization, no PodDisruptionBudget checks on
// eviction, and no garbage collection of dependents.
package fake

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"skiff.dev/client"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// Action is one request the clientset received, as client-go's testing.Action.
type Action struct {
	// Verb is "create", "get", "list", "update", "patch", "delete", "watch",
	// "bind" or "evict" (UpdateStatus is "update" with Subresource "status").
	Verb string
	// Resource is the plural resource name ("pods").
	Resource string
	// Subresource is "status", "binding", "eviction" or "".
	Subresource string
	Namespace   string
	Name        string
	// Object is the request's object (create, update, bind, evict), nil otherwise.
	Object scheme.Object
	// PatchType and Patch are a patch request's ("merge", "json", "strategic").
	PatchType string
	Patch     []byte
}

// ReactionFunc answers a request in place of the tracker when it returns
// handled; ret (may be nil) is the response object, err the response error.
type ReactionFunc func(a Action) (handled bool, ret scheme.Object, err error)

type reactor struct {
	verb, resource string
	fn             ReactionFunc
}

// Clientset is a fake apiserver with a real client connected to it.
type Clientset struct {
	// Client talks to the fake; use it with client.For, informers.NewFactory…
	Client *client.Client

	tracker *Tracker
	srv     *grpc.Server
	conn    *grpc.ClientConn

	closeOnce sync.Once

	mu       sync.Mutex
	actions  []Action
	reactors []reactor
}

const maxMessage = 512 << 20

// NewClientset starts a fake apiserver holding objs (added as Tracker().Add
// does) and connects a client to it. Close stops it.
func NewClientset(objs ...scheme.Object) *Clientset {
	cs := &Clientset{tracker: newTracker()}
	for _, o := range objs {
		if err := cs.tracker.Add(o); err != nil {
			panic("fake.NewClientset: " + err.Error())
		}
	}
	lis := bufconn.Listen(1 << 20)
	// Lists of many objects are larger than gRPC's default 4 MiB limit.
	cs.srv = grpc.NewServer(grpc.MaxSendMsgSize(maxMessage), grpc.MaxRecvMsgSize(maxMessage))
	apipb.RegisterAPIServer(cs.srv, &server{cs: cs})
	go cs.srv.Serve(lis) //nolint:errcheck // ends with Stop
	conn, err := grpc.NewClient("passthrough:///fake",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
	if err != nil {
		panic("fake.NewClientset: " + err.Error())
	}
	cs.conn = conn
	cs.Client = client.New(conn)
	return cs
}

// Close ends every watch and stops the server; calls after the first do
// nothing.
func (cs *Clientset) Close() {
	cs.closeOnce.Do(func() {
		cs.tracker.close()
		cs.srv.Stop()
		cs.conn.Close()
	})
}

// Tracker is the clientset's object store.
func (cs *Clientset) Tracker() *Tracker { return cs.tracker }

// Actions returns a copy of the requests received so far, in order.
func (cs *Clientset) Actions() []Action {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]Action(nil), cs.actions...)
}

// ClearActions forgets the requests recorded so far.
func (cs *Clientset) ClearActions() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.actions = nil
}

// PrependReactor puts fn before every reactor added so far, for requests
// matching verb and resource ("*" matches any).
func (cs *Clientset) PrependReactor(verb, resource string, fn ReactionFunc) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.reactors = append([]reactor{{verb: verb, resource: resource, fn: fn}}, cs.reactors...)
}
