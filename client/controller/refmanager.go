package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// RefManager claims objects for one owner, as upstream's
// BaseControllerRefManager and PodControllerRefManager: it adopts orphans
// that match the owner's selector and releases owned objects that no longer
// do. Make one per sync of the owner: the adoption check runs at most once.
type RefManager struct {
	c         *client.Client
	owner     scheme.Object
	ownerKind *scheme.Kind
	selector  labels.Selector

	canAdoptFunc func(ctx context.Context) error
	canAdoptOnce sync.Once
	canAdoptErr  error
}

// NewRefManager returns the manager of owner (of ownerKind) claiming objects
// by selector. canAdopt runs once, just before the first adoption, and any
// error it returns refuses every adoption: the owner is seen through a cache
// and may be gone or being deleted by now. When nil, it is upstream's check:
// a fresh Get of the owner, which must have the same UID and not be deleting
// (see RecheckDeletionTimestamp).
func NewRefManager(c *client.Client, owner scheme.Object, ownerKind *scheme.Kind, selector labels.Selector, canAdopt func(ctx context.Context) error) *RefManager {
	m := &RefManager{c: c, owner: owner, ownerKind: ownerKind, selector: selector, canAdoptFunc: canAdopt}
	if canAdopt == nil {
		m.canAdoptFunc = RecheckDeletionTimestamp(m.freshOwner)
	}
	return m
}

// freshOwner reads the owner from the apiserver, not the cache, and refuses
// one recreated under the same name.
func (m *RefManager) freshOwner(ctx context.Context) (scheme.Object, error) {
	om := m.owner.GetMetadata()
	fresh, err := m.c.Resource(m.ownerKind, om.GetNamespace()).Get(ctx, om.GetName())
	if err != nil {
		return nil, err
	}
	if uid := fresh.GetMetadata().GetUid(); uid != om.GetUid() {
		return nil, fmt.Errorf("original %s %s is gone: got uid %s, wanted %s", m.ownerKind.Kind, KeyFunc(m.owner), uid, om.GetUid())
	}
	return fresh, nil
}

// RecheckDeletionTimestamp is upstream's canAdopt check: it gets the object
// afresh and refuses when that fails or the object is being deleted.
func RecheckDeletionTimestamp(getObject func(ctx context.Context) (scheme.Object, error)) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		obj, err := getObject(ctx)
		if err != nil {
			return fmt.Errorf("can't recheck DeletionTimestamp: %w", err)
		}
		if dt := obj.GetMetadata().GetDeletionTimestamp(); dt != nil {
			return fmt.Errorf("%s has just been deleted at %s", KeyFunc(obj), dt.AsTime())
		}
		return nil
	}
}

// CanAdopt runs the adoption check, once per RefManager.
func (m *RefManager) CanAdopt(ctx context.Context) error {
	m.canAdoptOnce.Do(func() { m.canAdoptErr = m.canAdoptFunc(ctx) })
	return m.canAdoptErr
}

// ClaimObjects returns the objects of kind, among objs, that the owner
// controls once the claim is done: those it already owned and still matches,
// and the orphans it adopted. Objects controlled by another owner are left
// alone. Only objects passing every filter (after the selector) match. The
// error joins every failed adoption or release (apierrors' Is functions see
// through it); the objects it names are not in the result, and the owner's
// sync should be retried.
func (m *RefManager) ClaimObjects(ctx context.Context, objs []scheme.Object, kind *scheme.Kind, filters ...func(scheme.Object) bool) ([]scheme.Object, error) {
	var claimed []scheme.Object
	var errs []error
	for _, obj := range objs {
		ok, err := m.claim(ctx, obj, kind, filters)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			claimed = append(claimed, obj)
		}
	}
	return claimed, errors.Join(errs...)
}

// Claim is ClaimObjects for typed objects, the kind being T's.
func Claim[T scheme.Object](ctx context.Context, m *RefManager, objs []T, filters ...func(T) bool) ([]T, error) {
	var zero T
	kind, ok := scheme.ForName(zero.ProtoReflect().Descriptor().FullName())
	if !ok {
		panic(fmt.Sprintf("controller.Claim: %T is not a kind of skiff.dev/proto/scheme", zero))
	}
	fs := make([]func(scheme.Object) bool, len(filters))
	for i, f := range filters {
		fs[i] = func(o scheme.Object) bool { return f(o.(T)) }
	}
	in := make([]scheme.Object, len(objs))
	for i, o := range objs {
		in[i] = o
	}
	got, err := m.ClaimObjects(ctx, in, kind, fs...)
	claimed := make([]T, len(got))
	for i, o := range got {
		claimed[i] = o.(T)
	}
	return claimed, err
}

// claim is upstream's ClaimObject: whether obj is the owner's after the call.
func (m *RefManager) claim(ctx context.Context, obj scheme.Object, kind *scheme.Kind, filters []func(scheme.Object) bool) (bool, error) {
	om := m.owner.GetMetadata()
	ownerDeleting := om.GetDeletionTimestamp() != nil
	if ref := metav1.GetControllerOf(obj.GetMetadata()); ref != nil {
		if ref.GetUid() != om.GetUid() {
			return false, nil
		}
		if m.matches(obj, filters) {
			return true, nil
		}
		// An owner being deleted keeps its objects so that the garbage
		// collector deletes them with it.
		if ownerDeleting {
			return false, nil
		}
		return false, m.release(ctx, obj, kind)
	}
	meta := obj.GetMetadata()
	switch {
	case ownerDeleting, !m.matches(obj, filters), meta.GetDeletionTimestamp() != nil:
		return false, nil
	case om.GetNamespace() != "" && om.GetNamespace() != meta.GetNamespace():
		return false, nil
	}
	if err := m.adopt(ctx, obj, kind); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		// Someone else claimed it first, it changed since the cache saw it,
		// or a transient error: the owner's next sync sees it afresh.
		return false, err
	}
	return true, nil
}

func (m *RefManager) matches(obj scheme.Object, filters []func(scheme.Object) bool) bool {
	if !m.selector.Matches(labels.Set(obj.GetMetadata().GetLabels())) {
		return false
	}
	for _, f := range filters {
		if !f(obj) {
			return false
		}
	}
	return true
}

func (m *RefManager) adopt(ctx context.Context, obj scheme.Object, kind *scheme.Kind) error {
	meta := obj.GetMetadata()
	if err := m.CanAdopt(ctx); err != nil {
		return fmt.Errorf("can't adopt %s %s (%s): %w", kind.Kind, KeyFunc(obj), meta.GetUid(), err)
	}
	refs := append(slices.Clone(meta.GetOwnerReferences()), NewControllerRef(m.owner, m.ownerKind))
	return m.patchOwnerRefs(ctx, obj, kind, refs)
}

func (m *RefManager) release(ctx context.Context, obj scheme.Object, kind *scheme.Kind) error {
	uid := m.owner.GetMetadata().GetUid()
	var refs []*metav1.OwnerReference
	for _, r := range obj.GetMetadata().GetOwnerReferences() {
		if r.GetUid() != uid {
			refs = append(refs, r)
		}
	}
	err := m.patchOwnerRefs(ctx, obj, kind, refs)
	if err == nil || apierrors.IsNotFound(err) {
		return nil
	}
	if apierrors.IsConflict(err) {
		// Upstream ignores a release that finds the object recreated or
		// already released; ours learns which only by reading it again.
		meta := obj.GetMetadata()
		fresh, gerr := m.c.Resource(kind, meta.GetNamespace()).Get(ctx, meta.GetName())
		if apierrors.IsNotFound(gerr) {
			return nil
		}
		if gerr == nil && (fresh.GetMetadata().GetUid() != meta.GetUid() || !hasOwner(fresh, uid)) {
			return nil
		}
	}
	return err
}

func hasOwner(obj scheme.Object, uid string) bool {
	for _, r := range obj.GetMetadata().GetOwnerReferences() {
		if r.GetUid() == uid {
			return true
		}
	}
	return false
}

// ownerRefsPatch is the merge patch that sets an object's owner references.
// Upstream sends a strategic merge patch with the object's UID as its
// precondition; our apiserver keeps the stored UID whatever a patch says, so
// the precondition that binds is the resourceVersion the claim decided on:
// an object changed or recreated since then fails with Conflict instead of
// having its references clobbered, and of two owners adopting the same
// orphan only the first wins. The UID stays in the patch as upstream's.
type ownerRefsPatch struct {
	Metadata struct {
		OwnerReferences []ownerRefJSON `json:"ownerReferences"`
		UID             string         `json:"uid"`
		ResourceVersion string         `json:"resourceVersion,omitempty"`
	} `json:"metadata"`
}

// ownerRefJSON is an owner reference in upstream's JSON shape.
type ownerRefJSON struct {
	APIVersion         string `json:"apiVersion"`
	Kind               string `json:"kind"`
	Name               string `json:"name"`
	UID                string `json:"uid"`
	Controller         *bool  `json:"controller,omitempty"`
	BlockOwnerDeletion *bool  `json:"blockOwnerDeletion,omitempty"`
}

func (m *RefManager) patchOwnerRefs(ctx context.Context, obj scheme.Object, kind *scheme.Kind, refs []*metav1.OwnerReference) error {
	meta := obj.GetMetadata()
	var p ownerRefsPatch
	p.Metadata.OwnerReferences = make([]ownerRefJSON, len(refs))
	for i, r := range refs {
		p.Metadata.OwnerReferences[i] = ownerRefJSON{APIVersion: r.GetApiVersion(), Kind: r.GetKind(), Name: r.GetName(),
			UID: r.GetUid(), Controller: r.Controller, BlockOwnerDeletion: r.BlockOwnerDeletion}
	}
	p.Metadata.UID = meta.GetUid()
	p.Metadata.ResourceVersion = meta.GetResourceVersion()
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = m.c.Resource(kind, meta.GetNamespace()).Patch(ctx, meta.GetName(), "merge", data, "", false)
	return err
}
