package informers

import (
	"context"
	"net"
	"sort"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// fakeAPI is an in-memory apiserver for any kind, counting the List and
// Watch calls made for each resource: enough to show what a factory shares.
type fakeAPI struct {
	apipb.UnimplementedAPIServer

	mu      sync.Mutex
	rev     int64
	objs    map[string]map[string]scheme.Object // resource → key → object
	log     []logged
	changed chan struct{} // closed on every write
	lists   map[string]int
	watches map[string]int
}

type logged struct {
	rev      int64
	resource string
	ns       string
	ev       *apipb.WatchEvent
}

func newFakeAPI(objs ...scheme.Object) *fakeAPI {
	f := &fakeAPI{objs: map[string]map[string]scheme.Object{}, changed: make(chan struct{}),
		lists: map[string]int{}, watches: map[string]int{}}
	for _, o := range objs {
		f.put(o)
	}
	return f
}

func resourceOf(o scheme.Object) string {
	k, ok := scheme.ForMessage(o)
	if !ok {
		panic("not a kind")
	}
	return k.GroupResource()
}

func refName(r *apipb.Resource) string {
	if r.GetGroup() == "" {
		return r.GetResource()
	}
	return r.GetResource() + "." + r.GetGroup()
}

// put creates or replaces an object and returns the stored copy, which has
// its new resourceVersion.
func (f *fakeAPI) put(o scheme.Object) scheme.Object {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := resourceOf(o)
	if f.objs[res] == nil {
		f.objs[res] = map[string]scheme.Object{}
	}
	typ := "MODIFIED"
	if _, ok := f.objs[res][informer.Key(o)]; !ok {
		typ = "ADDED"
	}
	c := proto.Clone(o).(scheme.Object)
	f.objs[res][informer.Key(o)] = c
	f.record(typ, res, c)
	return c
}

func (f *fakeAPI) del(o scheme.Object) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := resourceOf(o)
	c := f.objs[res][informer.Key(o)]
	delete(f.objs[res], informer.Key(o))
	f.record("DELETED", res, proto.Clone(c).(scheme.Object))
}

// record logs an event at a new revision, stamping obj; callers hold f.mu.
func (f *fakeAPI) record(typ, res string, obj scheme.Object) {
	f.rev++
	obj.GetMetadata().ResourceVersion = strconv.FormatInt(f.rev, 10)
	a, _ := anypb.New(obj)
	f.log = append(f.log, logged{rev: f.rev, resource: res, ns: obj.GetMetadata().GetNamespace(),
		ev: &apipb.WatchEvent{Type: typ, Object: a, ResourceVersion: strconv.FormatInt(f.rev, 10)}})
	close(f.changed)
	f.changed = make(chan struct{})
}

// calls returns how often each resource was listed and watched.
func (f *fakeAPI) calls(res string) (lists, watches int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists[res], f.watches[res]
}

func (f *fakeAPI) start(t *testing.T) *client.Client {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	apipb.RegisterAPIServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///fake",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return client.New(conn)
}

func (f *fakeAPI) List(_ context.Context, req *apipb.ListRequest) (*apipb.ListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := refName(req.GetResource())
	f.lists[res]++
	keys := make([]string, 0, len(f.objs[res]))
	for k, o := range f.objs[res] {
		if req.GetNamespace() == "" || o.GetMetadata().GetNamespace() == req.GetNamespace() {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	resp := &apipb.ListResponse{ResourceVersion: strconv.FormatInt(f.rev, 10)}
	for _, k := range keys {
		a, _ := anypb.New(f.objs[res][k])
		resp.Items = append(resp.Items, a)
	}
	return resp, nil
}

func (f *fakeAPI) Watch(req *apipb.WatchRequest, stream grpc.ServerStreamingServer[apipb.WatchEvent]) error {
	sent, err := strconv.ParseInt(req.GetResourceVersion(), 10, 64)
	if err != nil {
		return apierrors.NewBadRequest("resourceVersion " + req.GetResourceVersion())
	}
	res := refName(req.GetResource())
	f.mu.Lock()
	f.watches[res]++
	f.mu.Unlock()
	for {
		f.mu.Lock()
		var out []*apipb.WatchEvent
		for _, l := range f.log {
			if l.rev > sent && l.resource == res && (req.GetNamespace() == "" || l.ns == req.GetNamespace()) {
				out = append(out, l.ev)
			}
		}
		sent = f.rev
		changed := f.changed
		f.mu.Unlock()
		for _, ev := range out {
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}
