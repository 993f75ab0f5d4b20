package controller

import (
	"testing"

	"google.golang.org/protobuf/proto"

	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func rsKind(t testing.TB) *scheme.Kind {
	k, ok := scheme.ForResource("apps", "replicasets")
	if !ok {
		t.Fatal("no replicasets kind")
	}
	return k
}

func TestNewControllerRef(t *testing.T) {
	rs := &appsv1.ReplicaSet{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web", Uid: "rs-uid"}}
	got := NewControllerRef(rs, rsKind(t))
	yes := true
	want := &metav1.OwnerReference{ApiVersion: "apps/v1", Kind: "ReplicaSet", Name: "web", Uid: "rs-uid", Controller: &yes, BlockOwnerDeletion: &yes}
	if !proto.Equal(got, want) {
		t.Errorf("NewControllerRef = %v, want %v", got, want)
	}
}

func TestGetControllerOfAndIsControlledBy(t *testing.T) {
	yes, no := true, false
	rs := &appsv1.ReplicaSet{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web", Uid: "rs-uid"}}
	recreated := &appsv1.ReplicaSet{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web", Uid: "other-uid"}}
	owned := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web-1", OwnerReferences: []*metav1.OwnerReference{
		{ApiVersion: "v1", Kind: "ConfigMap", Name: "cm", Uid: "cm-uid", Controller: &no},
		{ApiVersion: "apps/v1", Kind: "ReplicaSet", Name: "web", Uid: "rs-uid", Controller: &yes},
	}}}
	orphan := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web-2", OwnerReferences: []*metav1.OwnerReference{
		{ApiVersion: "apps/v1", Kind: "ReplicaSet", Name: "web", Uid: "rs-uid"},
	}}}

	ref := GetControllerOf(owned)
	if ref.GetUid() != "rs-uid" {
		t.Fatalf("GetControllerOf = %v, want the ReplicaSet's reference", ref)
	}
	ref.Name = "changed"
	if owned.Metadata.OwnerReferences[1].Name != "web" {
		t.Error("GetControllerOf returned the object's own reference, not a copy")
	}
	if ref := GetControllerOf(orphan); ref != nil {
		t.Errorf("GetControllerOf(non-controller refs only) = %v, want nil", ref)
	}

	if !IsControlledBy(owned, rs) {
		t.Error("IsControlledBy(owned, rs) = false")
	}
	if IsControlledBy(owned, recreated) {
		t.Error("IsControlledBy matched an owner of the same name but another UID")
	}
	if IsControlledBy(orphan, rs) {
		t.Error("IsControlledBy matched a reference that is not the controller")
	}
}
