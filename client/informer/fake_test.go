package informer

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
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// fakeAPI is an in-memory apiserver for ConfigMaps in "default": a revision
// counter, an event log that compaction can expire, and switches to take the
// server down (ending every watch with Unavailable) or expire live watches.
type fakeAPI struct {
	apipb.UnimplementedAPIServer

	mu        sync.Mutex
	rev       int64
	objs      map[string]*corev1.ConfigMap
	log       []logged
	compacted int64
	down      bool
	// replay makes a resumed watch start this many revisions early, as a
	// careless server might.
	replay int64
	// hold keeps open watches from sending until it is lifted.
	hold    bool
	changed chan struct{} // closed on every write and every endWatches
	endGen  int           // bumped to end every open watch with endErr
	endErr  error
	lists   int
	watches chan string // the resourceVersion of every Watch call
}

type logged struct {
	rev int64
	ev  *apipb.WatchEvent
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{objs: map[string]*corev1.ConfigMap{}, changed: make(chan struct{}),
		watches: make(chan string, 1000)}
}

// start serves f over an in-memory connection and returns a client for
// ConfigMaps in "default".
func (f *fakeAPI) start(t *testing.T) *client.Dynamic {
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
	k, _ := scheme.ForResource("", "configmaps")
	return client.New(conn).Resource(k, "default")
}

func packAt(cm *corev1.ConfigMap, rev int64) *anypb.Any {
	c := proto.Clone(cm).(*corev1.ConfigMap)
	c.Metadata.ResourceVersion = strconv.FormatInt(rev, 10)
	a, _ := anypb.New(c)
	return a
}

// record appends an event at a new revision; callers hold f.mu.
func (f *fakeAPI) record(typ string, cm *corev1.ConfigMap) int64 {
	f.rev++
	f.log = append(f.log, logged{rev: f.rev, ev: &apipb.WatchEvent{Type: typ, Object: packAt(cm, f.rev),
		ResourceVersion: strconv.FormatInt(f.rev, 10)}})
	close(f.changed)
	f.changed = make(chan struct{})
	return f.rev
}

// put creates or modifies a ConfigMap and returns its new resourceVersion.
func (f *fakeAPI) put(name string, labels map[string]string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	typ := "MODIFIED"
	if f.objs[name] == nil {
		typ = "ADDED"
	}
	cm := &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels}}
	rev := f.record(typ, cm)
	cm.Metadata.ResourceVersion = strconv.FormatInt(rev, 10)
	f.objs[name] = cm
	return cm.Metadata.ResourceVersion
}

func (f *fakeAPI) del(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	cm := f.objs[name]
	delete(f.objs, name)
	return strconv.FormatInt(f.record("DELETED", cm), 10)
}

// bookmark moves the revision on (a write to another kind) and tells
// watchers so with a BOOKMARK carrying only the resourceVersion.
func (f *fakeAPI) bookmark() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strconv.FormatInt(f.record("BOOKMARK", &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{}}), 10)
}

// compact forgets every event so far: older resourceVersions are Expired.
func (f *fakeAPI) compact() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.compacted = f.rev
}

// endWatches ends every open watch with err.
func (f *fakeAPI) endWatches(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endErr = err
	f.endGen++
	close(f.changed)
	f.changed = make(chan struct{})
}

// setDown takes the server down (every call Unavailable, open watches
// ended) or brings it back.
func (f *fakeAPI) setDown(down bool) {
	if down {
		f.mu.Lock()
		f.down = true
		f.mu.Unlock()
		f.endWatches(apierrors.NewUnavailable("apiserver is shutting down"))
		return
	}
	f.mu.Lock()
	f.down = false
	f.mu.Unlock()
}

func (f *fakeAPI) setHold(hold bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = hold
}

func (f *fakeAPI) listCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists
}

func (f *fakeAPI) List(_ context.Context, req *apipb.ListRequest) (*apipb.ListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, apierrors.NewUnavailable("etcd is unreachable")
	}
	f.lists++
	names := make([]string, 0, len(f.objs))
	for n := range f.objs {
		names = append(names, n)
	}
	sort.Strings(names)
	resp := &apipb.ListResponse{ResourceVersion: strconv.FormatInt(f.rev, 10)}
	for _, n := range names {
		a, _ := anypb.New(f.objs[n])
		resp.Items = append(resp.Items, a)
	}
	return resp, nil
}

func (f *fakeAPI) Watch(req *apipb.WatchRequest, stream grpc.ServerStreamingServer[apipb.WatchEvent]) error {
	f.watches <- req.GetResourceVersion()
	from, err := strconv.ParseInt(req.GetResourceVersion(), 10, 64)
	if err != nil {
		return apierrors.NewBadRequest("resourceVersion " + req.GetResourceVersion())
	}
	f.mu.Lock()
	if f.down {
		f.mu.Unlock()
		return apierrors.NewUnavailable("etcd is unreachable")
	}
	if from < f.compacted {
		f.mu.Unlock()
		return apierrors.NewExpired("too old resource version: " + req.GetResourceVersion())
	}
	sent := from - f.replay
	gen := f.endGen
	f.mu.Unlock()
	for {
		f.mu.Lock()
		if f.endGen != gen {
			err := f.endErr
			f.mu.Unlock()
			return err
		}
		var out []*apipb.WatchEvent
		if !f.hold {
			for _, l := range f.log {
				if l.rev > sent && (l.ev.Type != "BOOKMARK" || req.GetAllowBookmarks()) {
					out = append(out, l.ev)
				}
			}
			sent = f.rev
		}
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
