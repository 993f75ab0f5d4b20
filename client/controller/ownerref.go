package controller

import (
	"google.golang.org/protobuf/proto"

	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// GetControllerOf returns a copy of obj's controlling owner reference, or nil.
// A copy, as upstream's: objects from listers are shared.
func GetControllerOf(obj scheme.Object) *metav1.OwnerReference {
	ref := metav1.GetControllerOf(obj.GetMetadata())
	if ref == nil {
		return nil
	}
	return proto.Clone(ref).(*metav1.OwnerReference)
}

// IsControlledBy tells whether owner, by UID, is obj's controller.
func IsControlledBy(obj, owner scheme.Object) bool {
	ref := metav1.GetControllerOf(obj.GetMetadata())
	return ref != nil && ref.GetUid() == owner.GetMetadata().GetUid()
}

// NewControllerRef is the reference an owner of kind puts on the objects it
// creates: controller, and blocking the owner's foreground deletion.
func NewControllerRef(owner scheme.Object, kind *scheme.Kind) *metav1.OwnerReference {
	return metav1.NewControllerRef(owner, kind.APIVersion(), kind.Kind)
}
