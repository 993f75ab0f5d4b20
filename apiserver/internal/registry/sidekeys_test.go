package registry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/internal/storage"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// slots are side keys for ConfigMaps: data["slot"] names one, "" draws the
// next free one from 1.
type slots struct {
	retries int
}

func slotKey(n int) string { return "ranges/slots/" + strconv.Itoa(n) }

func (s *slots) Prepare(obj, old scheme.Object) {}

func (s *slots) Reserve(_ context.Context, obj, old scheme.Object, dryRun bool) (*SideWrite, error) {
	cm := obj.(*corev1.ConfigMap)
	want := cm.Data["slot"]
	had := ""
	if old != nil {
		had = old.(*corev1.ConfigMap).Data["slot"]
	}
	sw := &SideWrite{}
	drawn := false
	if want == "" {
		cm.Data["slot"], drawn = "1", true
		want = "1"
	}
	if want != had {
		n, _ := strconv.Atoi(want)
		sw.Put = []string{slotKey(n)}
		if had != "" {
			n, _ := strconv.Atoi(had)
			sw.Release = []string{slotKey(n)}
		}
	}
	sw.Retry = func(_ context.Context, key string) error {
		s.retries++
		if !drawn {
			return apierrors.NewInvalid("ConfigMap", cm.Metadata.Name, nil)
		}
		n, _ := strconv.Atoi(cm.Data["slot"])
		cm.Data["slot"] = strconv.Itoa(n + 1)
		sw.Put = []string{slotKey(n + 1)}
		return nil
	}
	return sw, nil
}

func (s *slots) Release(obj scheme.Object) []string {
	n, _ := strconv.Atoi(obj.(*corev1.ConfigMap).Data["slot"])
	return []string{slotKey(n)}
}

func (s *slots) Owner(obj scheme.Object) []byte { return []byte(obj.GetMetadata().GetName()) }

func slotOwners(t *testing.T, r *Registry) map[string]string {
	t.Helper()
	kvs, _, _, err := r.cfg.Store.List(context.Background(), "ranges/", "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range kvs {
		out[kv.Key] = string(kv.Value)
	}
	return out
}

func TestSideKeysAreWrittenWithTheirObject(t *testing.T) {
	fake := &slots{}
	r := newRegistryWith(t, Config{SideKeys: map[*scheme.Kind]SideKeys{cmKind: fake}})
	ctx := context.Background()
	want := func(m map[string]string) {
		t.Helper()
		if got := slotOwners(t, r); fmt.Sprint(got) != fmt.Sprint(m) {
			t.Fatalf("side keys %v, want %v", got, m)
		}
	}
	a, err := r.Create(ctx, cmKind, "default", configMap("a", map[string]string{}), false)
	if err != nil {
		t.Fatal(err)
	}
	want(map[string]string{slotKey(1): "a"})

	// A drawn key found taken is drawn again, not the client's error.
	b, err := r.Create(ctx, cmKind, "default", configMap("b", map[string]string{}), false)
	if err != nil || b.Msg.(*corev1.ConfigMap).Data["slot"] != "2" || fake.retries != 1 {
		t.Fatalf("b: %v, slot %v, retries %d", err, b, fake.retries)
	}
	// A taken name is AlreadyExists whatever its side keys: the object's
	// own key is the first guard, and the chooser is not asked again.
	_, err = r.Create(ctx, cmKind, "default", configMap("a", map[string]string{"slot": "1"}), false)
	if !apierrors.IsAlreadyExists(err) || fake.retries != 1 {
		t.Fatalf("create a again: %v (retries %d)", err, fake.retries)
	}
	want(map[string]string{slotKey(1): "a", slotKey(2): "b"})
	// A requested key found taken is the request's error, and nothing is written.
	_, err = r.Create(ctx, cmKind, "default", configMap("c", map[string]string{"slot": "2"}), false)
	if !apierrors.IsInvalid(err) {
		t.Fatalf("c: %v", err)
	}
	if _, err := r.Get(ctx, cmKind, "default", "c", ""); !apierrors.IsNotFound(err) {
		t.Fatalf("c stored: %v", err)
	}

	// An update moves the key: the new one put, the old one released.
	cm := proto.Clone(a.Msg).(*corev1.ConfigMap)
	cm.Data["slot"] = "7"
	moved, err := r.Update(ctx, cmKind, "default", cm, false)
	if err != nil {
		t.Fatal(err)
	}
	want(map[string]string{slotKey(7): "a", slotKey(2): "b"})
	// A stale update is a Conflict, though its side key is free.
	stale := proto.Clone(a.Msg).(*corev1.ConfigMap)
	stale.Data["slot"] = "8"
	if _, err := r.Update(ctx, cmKind, "default", stale, false); !apierrors.IsConflict(err) {
		t.Fatalf("stale update: %v", err)
	}
	want(map[string]string{slotKey(7): "a", slotKey(2): "b"})
	// Released only while it holds the owner's value: b's key, written over
	// by hand, is not b's to delete.
	if _, _, err := r.cfg.Store.Update(ctx, slotKey(2), []byte("someone"), slotRev(t, r, 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Delete(ctx, cmKind, "default", "b", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Delete(ctx, cmKind, "default", "a", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want(map[string]string{slotKey(2): "someone"})
	_ = moved
}

func slotRev(t *testing.T, r *Registry, n int) int64 {
	kv, err := r.cfg.Store.Get(context.Background(), slotKey(n), 0)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return kv.Rev
}
