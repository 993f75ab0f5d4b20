package client

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// fakeAPI keeps objects by "namespace/name" and answers watches with a
// script of events followed by an error.
type fakeAPI struct {
	apipb.UnimplementedAPIServer
	mu       sync.Mutex
	objs     map[string]*anypb.Any
	lastNS   string
	script   []*apipb.WatchEvent
	scriptEr error
	hold     bool // keep the watch open after the script
}

func (f *fakeAPI) Create(_ context.Context, req *apipb.CreateRequest) (*anypb.Any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastNS = req.GetNamespace()
	m, err := req.GetObject().UnmarshalNew()
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	o := m.(interface{ GetMetadata() *metav1.ObjectMeta })
	o.GetMetadata().Namespace = req.GetNamespace()
	o.GetMetadata().ResourceVersion = "7"
	k := req.GetNamespace() + "/" + o.GetMetadata().GetName()
	if f.objs[k] != nil {
		return nil, apierrors.NewAlreadyExists(req.GetResource().GetResource(), o.GetMetadata().GetName())
	}
	a, _ := anypb.New(m)
	f.objs[k] = a
	return a, nil
}

func (f *fakeAPI) Get(_ context.Context, req *apipb.GetRequest) (*anypb.Any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastNS = req.GetNamespace()
	a, ok := f.objs[req.GetNamespace()+"/"+req.GetName()]
	if !ok {
		return nil, apierrors.NewNotFound(req.GetResource().GetResource(), req.GetName())
	}
	return a, nil
}

func (f *fakeAPI) List(_ context.Context, req *apipb.ListRequest) (*apipb.ListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &apipb.ListResponse{ResourceVersion: "9"}
	for _, a := range f.objs {
		resp.Items = append(resp.Items, a)
	}
	return resp, nil
}

func (f *fakeAPI) Watch(_ *apipb.WatchRequest, stream grpc.ServerStreamingServer[apipb.WatchEvent]) error {
	for _, ev := range f.script {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	if f.hold {
		<-stream.Context().Done()
		return nil
	}
	return f.scriptEr
}

func start(t *testing.T, f *fakeAPI) *Client {
	t.Helper()
	if f.objs == nil {
		f.objs = map[string]*anypb.Any{}
	}
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
	return New(conn)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func pack(t *testing.T, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTypedRoundTrip(t *testing.T) {
	f := &fakeAPI{}
	c := start(t, f)
	pods := For[*corev1.Pod](c, "default")
	created, err := pods.Create(ctxT(t), &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web-0"}})
	if err != nil {
		t.Fatal(err)
	}
	if created.Metadata.GetResourceVersion() != "7" {
		t.Errorf("created resourceVersion %q, want the server's 7", created.Metadata.GetResourceVersion())
	}
	got, err := pods.Get(ctxT(t), "web-0")
	if err != nil || got.Metadata.GetName() != "web-0" || got.Metadata.GetNamespace() != "default" {
		t.Fatalf("Get = %v, %v", got, err)
	}
	l, err := pods.List(ctxT(t), ListOptions{})
	if err != nil || len(l.Items) != 1 || l.ResourceVersion != "9" {
		t.Fatalf("List = %+v, %v", l, err)
	}

	tests := []struct {
		name string
		call func() error
		is   func(error) bool
	}{
		{"missing object is NotFound", func() error { _, err := pods.Get(ctxT(t), "nope"); return err }, apierrors.IsNotFound},
		{"second create is AlreadyExists", func() error {
			_, err := pods.Create(ctxT(t), &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web-0"}})
			return err
		}, apierrors.IsAlreadyExists},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !tc.is(err) {
				t.Errorf("err = %v", err)
			}
		})
	}
}

func TestClusterScopedKindsIgnoreNamespace(t *testing.T) {
	f := &fakeAPI{}
	c := start(t, f)
	if _, err := For[*corev1.Node](c, "default").Create(ctxT(t), &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if f.lastNS != "" {
		t.Errorf("a Node was sent with namespace %q", f.lastNS)
	}
	if _, err := For[*corev1.Node](c, "kube-system").Get(ctxT(t), "n1"); err != nil {
		t.Errorf("Get n1 from another namespace: %v", err)
	}
}

func TestAnswerOfAnotherKindIsAnError(t *testing.T) {
	f := &fakeAPI{}
	c := start(t, f)
	f.objs["default/x"] = pack(t, &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: "x"}})
	if _, err := For[*corev1.Pod](c, "default").Get(ctxT(t), "x"); err == nil {
		t.Error("a ConfigMap decoded as a Pod")
	}
}

func TestWatch(t *testing.T) {
	pod := func(name, rv string) *anypb.Any {
		return pack(t, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: name, ResourceVersion: rv}})
	}
	script := []*apipb.WatchEvent{
		{Type: "ADDED", Object: pod("a", "3"), ResourceVersion: "3"},
		{Type: "BOOKMARK", ResourceVersion: "5"}, // no object at all
		{Type: "BOOKMARK", Object: pod("", "6"), ResourceVersion: "6"},
		{Type: "DELETED", Object: pod("a", "8"), ResourceVersion: "8"},
	}
	f := &fakeAPI{script: script, scriptEr: apierrors.NewExpired("too old resource version: 2")}
	c := start(t, f)
	w, err := For[*corev1.Pod](c, "default").Watch(ctxT(t), ListOptions{ResourceVersion: "2", AllowBookmarks: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for ev := range w.Events() {
		got = append(got, string(ev.Type)+" "+ev.Object.Metadata.GetName()+"@"+ev.Object.Metadata.GetResourceVersion())
	}
	want := []string{"ADDED a@3", "BOOKMARK @5", "BOOKMARK @6", "DELETED a@8"}
	if len(got) != len(want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %q, want %q", i, got[i], want[i])
		}
	}
	if !apierrors.IsExpired(w.Err()) {
		t.Errorf("Err = %v, want Expired", w.Err())
	}
}

func TestWatchStopEndsWithoutError(t *testing.T) {
	f := &fakeAPI{hold: true}
	c := start(t, f)
	w, err := For[*corev1.Pod](c, "default").Watch(ctxT(t), ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.Stop()
	for range w.Events() {
	}
	if err := w.Err(); err != nil {
		t.Errorf("Err after Stop = %v, want nil", err)
	}
}
