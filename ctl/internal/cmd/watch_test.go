package cmd

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

func mustKind(t *testing.T, resource string) *scheme.Kind {
	t.Helper()
	k, ok := scheme.ForResource("", resource)
	if !ok {
		t.Fatalf("no kind %s", resource)
	}
	return k
}

// fakeAPI serves List and Watch from a script, so that what a real
// apiserver rarely does on cue (a compacted revision) can be tested.
type fakeAPI struct {
	apipb.APIClient // only List and Watch are called
	t               *testing.T
	lists           []*apipb.ListResponse
	watches         []fakeWatch
	watchRVs        []string // the resourceVersion of each Watch call
}

// fakeWatch is one watch stream: its events, then err (nil: it stays open
// and calls atEnd, the test's Ctrl-C).
type fakeWatch struct {
	events []*apipb.WatchEvent
	err    error
	atEnd  func()
}

func (f *fakeAPI) List(ctx context.Context, in *apipb.ListRequest, _ ...grpc.CallOption) (*apipb.ListResponse, error) {
	if len(f.lists) == 0 {
		f.t.Fatal("unexpected List")
	}
	l := f.lists[0]
	f.lists = f.lists[1:]
	return l, nil
}

func (f *fakeAPI) Watch(ctx context.Context, in *apipb.WatchRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[apipb.WatchEvent], error) {
	if !in.GetAllowBookmarks() {
		f.t.Error("watch without bookmarks")
	}
	f.watchRVs = append(f.watchRVs, in.GetResourceVersion())
	if len(f.watches) == 0 {
		f.t.Fatal("unexpected Watch")
	}
	w := f.watches[0]
	f.watches = f.watches[1:]
	return &fakeStream{ctx: ctx, w: w}, nil
}

type fakeStream struct {
	grpc.ClientStream
	ctx context.Context
	w   fakeWatch
}

func (s *fakeStream) Recv() (*apipb.WatchEvent, error) {
	if len(s.w.events) > 0 {
		ev := s.w.events[0]
		s.w.events = s.w.events[1:]
		return ev, nil
	}
	if s.w.err != nil {
		return nil, s.w.err
	}
	if s.w.atEnd != nil {
		s.w.atEnd()
	}
	<-s.ctx.Done()
	return nil, io.EOF
}

func fakeCM(t *testing.T, name, rv string) *anypb.Any {
	t.Helper()
	a, err := anypb.New(&corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", ResourceVersion: rv}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestGetWatchResumesAndRelists: a watch that ends Unavailable resumes after
// the last revision seen (a bookmark's included); one that ends Expired
// relists and prints what changed meanwhile (new and changed objects, and
// the last state of deleted ones), then watches from the new list.
func TestGetWatchResumesAndRelists(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := func(typ, name, rv string) *apipb.WatchEvent {
		return &apipb.WatchEvent{Type: typ, ResourceVersion: rv, Object: fakeCM(t, name, rv)}
	}
	api := &fakeAPI{t: t,
		lists: []*apipb.ListResponse{
			{ResourceVersion: "10", Items: []*anypb.Any{fakeCM(t, "a", "5"), fakeCM(t, "b", "6")}},
			{ResourceVersion: "21", Items: []*anypb.Any{fakeCM(t, "a", "11"), fakeCM(t, "c", "20")}},
		},
		watches: []fakeWatch{
			{events: []*apipb.WatchEvent{ev("MODIFIED", "a", "11"), {Type: "BOOKMARK", ResourceVersion: "12", Object: fakeCM(t, "", "12")}},
				err: status.Error(codes.Unavailable, "error reading from server: EOF")},
			{err: apierrors.NewExpired("too old resource version: 12 (30)")},
			{events: []*apipb.WatchEvent{ev("ADDED", "d", "22")}, atEnd: cancel},
		},
	}
	var out, errOut strings.Builder
	o := &Options{streams: Streams{Out: &out, Err: &errOut}}
	d := (&client.Client{API: api}).Resource(mustKind(t, "configmaps"), "default")
	if err := o.watch(ctx, &getOptions{watch: true, output: "name"}, d, target{kind: d.Kind()}); err != nil {
		t.Fatalf("watch: %v (%s)", err, errOut.String())
	}
	if want := []string{"10", "12", "21"}; !slices.Equal(api.watchRVs, want) {
		t.Errorf("watched from %q, want %q", api.watchRVs, want)
	}
	want := "configmap/a\nconfigmap/b\n" + // the list
		"configmap/a\n" + // the first watch
		"configmap/c\nconfigmap/b\n" + // the relist: c is new, b is gone, a is as last seen
		"configmap/d\n"
	if out.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", out.String(), want)
	}
}
