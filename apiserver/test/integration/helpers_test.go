// Package integration tests skiff-apiserver end to end over gRPC, against an
// embedded etcd, as its clients see it.
package integration

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"skiff.dev/apiserver/apitest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func kindOf(t testing.TB, obj proto.Message) *scheme.Kind {
	k, ok := scheme.ForMessage(obj)
	if !ok {
		t.Fatalf("no kind for %T", obj)
	}
	return k
}

func pack(t testing.TB, obj proto.Message) *anypb.Any {
	a, err := anypb.New(obj)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func unpack[T proto.Message](t testing.TB, a *anypb.Any, into T) T {
	t.Helper()
	if err := proto.Unmarshal(a.GetValue(), into); err != nil {
		t.Fatal(err)
	}
	return into
}

// manifest decodes one YAML object as a user's file would hold it.
func manifest(t testing.TB, y string) scheme.Object {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := codec.DecodeObject(j, codec.Options{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

func create(ctx context.Context, api apipb.APIClient, obj scheme.Object) (*anypb.Any, error) {
	k, _ := scheme.ForMessage(obj)
	a, err := anypb.New(obj)
	if err != nil {
		return nil, err
	}
	return api.Create(ctx, &apipb.CreateRequest{Resource: k.Ref(), Namespace: obj.GetMetadata().GetNamespace(), Object: a})
}

func mustCreate[T scheme.Object](t testing.TB, s *apitest.Server, obj T) T {
	t.Helper()
	a, err := create(ctxT(t), s.API, obj)
	if err != nil {
		t.Fatalf("create %s: %v", obj.GetMetadata().GetName(), err)
	}
	return unpack(t, a, proto.Clone(obj).(T))
}

func get[T scheme.Object](t testing.TB, s *apitest.Server, zero T, ns, name string) (T, error) {
	k := kindOf(t, zero)
	a, err := s.API.Get(ctxT(t), &apipb.GetRequest{Resource: k.Ref(), Namespace: ns, Name: name})
	if err != nil {
		return zero, err
	}
	out := k.New().(T)
	return unpack(t, a, out), nil
}

func update(ctx context.Context, api apipb.APIClient, obj scheme.Object) (*anypb.Any, error) {
	k, _ := scheme.ForMessage(obj)
	a, err := anypb.New(obj)
	if err != nil {
		return nil, err
	}
	return api.Update(ctx, &apipb.UpdateRequest{Resource: k.Ref(), Namespace: obj.GetMetadata().GetNamespace(), Object: a})
}

func configMap(ns, name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}

func pod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "web"}},
		Spec:     &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "registry.local/pause:3.10"}}},
	}
}
