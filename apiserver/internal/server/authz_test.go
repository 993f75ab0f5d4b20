package server

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/apiserver/internal/authorizer"
	"skiff.dev/apiserver/internal/etcd"
	"skiff.dev/apiserver/internal/registry"
	"skiff.dev/apiserver/internal/request"
	"skiff.dev/apiserver/internal/storage"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// recordingAuthorizer allows everything and writes down what it was asked.
type recordingAuthorizer struct {
	mu    sync.Mutex
	asked []authorizer.Attributes
	deny  string // a verb to deny
}

func (z *recordingAuthorizer) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.asked = append(z.asked, a)
	if a.Verb == z.deny {
		return authorizer.DecisionDeny, "", nil
	}
	return authorizer.DecisionAllow, "", nil
}

func (z *recordingAuthorizer) take() []authorizer.Attributes {
	z.mu.Lock()
	defer z.mu.Unlock()
	out := z.asked
	z.asked = nil
	return out
}

func newService(t *testing.T, z authorizer.Authorizer) *Service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := etcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cli, err := etcd.Dial(ctx, []string{srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(registry.Config{Store: storage.New(cli, "/registry", nil)})
	done := make(chan error, 1)
	go func() { done <- reg.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		cli.Close()
		srv.Close()
	})
	if err := reg.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return NewService(reg, z, nil, nil)
}

// watchStream is the server side of a Watch the test reads nothing from:
// the call returns once its context ends.
type watchStream struct {
	apipb.API_WatchServer
	ctx context.Context
}

func (s watchStream) Context() context.Context   { return s.ctx }
func (watchStream) Send(*apipb.WatchEvent) error { return nil }
func (watchStream) SetHeader(metadata.MD) error  { return nil }
func (watchStream) SendHeader(metadata.MD) error { return nil }
func (watchStream) SetTrailer(metadata.MD)       {}
func (watchStream) RecvMsg(any) error            { return nil }
func (watchStream) SendMsg(any) error            { return nil }

func TestAuthorizerSeesEveryRequestsAttributes(t *testing.T) {
	z := &recordingAuthorizer{}
	s := newService(t, z)
	bob := request.User{Name: "bob", Groups: []string{"devs"}}
	ctx := request.WithUser(context.Background(), bob)
	pods, _ := scheme.ForResource("", "pods")
	nodes, _ := scheme.ForResource("", "nodes")
	any := func(m scheme.Object) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web"}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "x"}}}}
	wctx, stopWatch := context.WithCancel(ctx)
	stopWatch()

	type step struct {
		call func() error
		want authorizer.Attributes
	}
	steps := []step{
		{func() error {
			_, err := s.Create(ctx, &apipb.CreateRequest{Resource: pods.Ref(), Namespace: "team", Object: any(pod)})
			return err
		}, authorizer.Attributes{Verb: "create", Resource: "pods", APIVersion: "v1", Namespace: "team"}},
		{func() error {
			_, err := s.Get(ctx, &apipb.GetRequest{Resource: pods.Ref(), Name: "web"})
			return err
		}, authorizer.Attributes{Verb: "get", Resource: "pods", APIVersion: "v1", Namespace: "default", Name: "web"}},
		{func() error {
			_, err := s.List(ctx, &apipb.ListRequest{Resource: pods.Ref()})
			return err
		}, authorizer.Attributes{Verb: "list", Resource: "pods", APIVersion: "v1"}},
		{func() error {
			_, err := s.List(ctx, &apipb.ListRequest{Resource: nodes.Ref(), Namespace: "ignored", FieldSelector: "metadata.name=n1"})
			return err
		}, authorizer.Attributes{Verb: "list", Resource: "nodes", APIVersion: "v1", Name: "n1"}},
		{func() error {
			return s.Watch(&apipb.WatchRequest{Resource: pods.Ref(), Namespace: "team", FieldSelector: "metadata.name=web"}, watchStream{ctx: wctx})
		}, authorizer.Attributes{Verb: "watch", Resource: "pods", APIVersion: "v1", Namespace: "team", Name: "web"}},
		{func() error {
			p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "team"}}
			_, err := s.Update(ctx, &apipb.UpdateRequest{Resource: pods.Ref(), Object: any(p)})
			return err
		}, authorizer.Attributes{Verb: "update", Resource: "pods", APIVersion: "v1", Namespace: "team", Name: "web"}},
		{func() error {
			p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web"}}
			_, err := s.UpdateStatus(ctx, &apipb.UpdateRequest{Resource: pods.Ref(), Namespace: "team", Object: any(p)})
			return err
		}, authorizer.Attributes{Verb: "update", Resource: "pods", Subresource: "status", APIVersion: "v1", Namespace: "team", Name: "web"}},
		{func() error {
			_, err := s.Patch(ctx, &apipb.PatchRequest{Resource: pods.Ref(), Namespace: "team", Name: "web", Subresource: "status", Patch: []byte(`{}`)})
			return err
		}, authorizer.Attributes{Verb: "patch", Resource: "pods", Subresource: "status", APIVersion: "v1", Namespace: "team", Name: "web"}},
		{func() error {
			_, err := s.Bind(ctx, &apipb.BindRequest{Binding: &corev1.Binding{Metadata: &metav1.ObjectMeta{Namespace: "team", Name: "web"}, Target: &corev1.ObjectReference{Name: "n1"}}})
			return err
		}, authorizer.Attributes{Verb: "create", Resource: "pods", Subresource: "binding", APIVersion: "v1", Namespace: "team", Name: "web"}},
		{func() error {
			_, err := s.Evict(ctx, &apipb.EvictRequest{Eviction: &policyv1.Eviction{Metadata: &metav1.ObjectMeta{Namespace: "team", Name: "web"}}})
			return err
		}, authorizer.Attributes{Verb: "create", Resource: "pods", Subresource: "eviction", APIVersion: "v1", Namespace: "team", Name: "web"}},
		{func() error {
			_, err := s.History(ctx, &apipb.HistoryRequest{Resource: nodes.Ref(), Name: "n1"})
			return err
		}, authorizer.Attributes{Verb: "get", Resource: "nodes", Subresource: "history", APIVersion: "v1", Name: "n1"}},
		{func() error {
			_, err := s.Delete(ctx, &apipb.DeleteRequest{Resource: pods.Ref(), Namespace: "team", Name: "web"})
			return err
		}, authorizer.Attributes{Verb: "delete", Resource: "pods", APIVersion: "v1", Namespace: "team", Name: "web"}},
	}
	for i, st := range steps {
		_ = st.call() // the answers are other tests' business; the questions are this one's
		asked := z.take()
		st.want.User = bob
		if len(asked) != 1 {
			t.Errorf("step %d (%s): the authorizer was asked %d times", i, st.want.Verb, len(asked))
			continue
		}
		got := asked[0]
		if got.User.Name != bob.Name || len(got.User.Groups) != 1 {
			t.Errorf("step %d: user %+v", i, got.User)
		}
		got.User = bob
		if got.Verb != st.want.Verb || got.APIGroup != st.want.APIGroup || got.APIVersion != st.want.APIVersion ||
			got.Resource != st.want.Resource || got.Subresource != st.want.Subresource ||
			got.Namespace != st.want.Namespace || got.Name != st.want.Name {
			t.Errorf("step %d: asked %+v\nwant %+v", i, got, st.want)
		}
	}
}

func TestDeniedRequestsAreForbiddenAsUpstreamSays(t *testing.T) {
	z := &recordingAuthorizer{deny: "get"}
	s := newService(t, z)
	ctx := request.WithUser(context.Background(), request.User{Name: "bob"})
	secrets, _ := scheme.ForResource("", "secrets")
	_, err := s.Get(ctx, &apipb.GetRequest{Resource: secrets.Ref(), Namespace: "kube-system", Name: "token"})
	want := `secrets "token" is forbidden: User "bob" cannot get resource "secrets" in API group "" in the namespace "kube-system"`
	if !apierrors.IsForbidden(err) || !strings.Contains(apierrors.Message(err), want) {
		t.Fatalf("denied get: %v\nwant %s", err, want)
	}
	nodes, _ := scheme.ForResource("", "nodes")
	z.deny = "list"
	_, err = s.List(ctx, &apipb.ListRequest{Resource: nodes.Ref()})
	want = `nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope`
	if !apierrors.IsForbidden(err) || apierrors.Message(err) != want {
		t.Fatalf("denied list: %v\nwant %s", err, want)
	}
}
