package registry

import (
	"context"
	"fmt"
	"strconv"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"skiff.dev/apiserver/internal/defaults"
	"skiff.dev/apiserver/internal/validation"
	"skiff.dev/apiserver/internal/watchcache"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// Update replaces an object. With metadata.resourceVersion set, the write
// happens only if the object is still at that version (else Conflict); without
// it, the update applies to whatever is current.
func (r *Registry) Update(ctx context.Context, k *scheme.Kind, ns string, obj scheme.Object, dryRun bool) (*watchcache.Object, error) {
	return r.update(ctx, k, ns, obj, false, dryRun)
}

// UpdateStatus replaces only the status of an object; everything else in obj
// is ignored, as upstream's status subresource does.
func (r *Registry) UpdateStatus(ctx context.Context, k *scheme.Kind, ns string, obj scheme.Object, dryRun bool) (*watchcache.Object, error) {
	if !k.HasStatus() {
		return nil, apierrors.NewNotFound(k.GroupResource()+"/status", obj.GetMetadata().GetName())
	}
	return r.update(ctx, k, ns, obj, true, dryRun)
}

func (r *Registry) update(ctx context.Context, k *scheme.Kind, ns string, obj scheme.Object, status, dryRun bool) (*watchcache.Object, error) {
	res := r.res(k)
	m := obj.GetMetadata()
	if err := res.checkNamespace(ns, m); err != nil {
		return nil, err
	}
	if m.Name == "" {
		return nil, res.invalid(m, field.Required(field.NewPath("metadata", "name"), "name is required"))
	}
	var want int64
	if m.ResourceVersion != "" {
		v, err := strconv.ParseInt(m.ResourceVersion, 10, 64)
		if err != nil || v <= 0 {
			return nil, res.invalid(m, field.Invalid(field.NewPath("metadata", "resourceVersion"), m.ResourceVersion, "must be a positive integer"))
		}
		want = v
	}
	key := res.key(m.Namespace, m.Name)
	old, err := res.current(ctx, key, want)
	if err != nil {
		return nil, res.storageError(err, m.Name)
	}
	if want != 0 && old.Rev != want {
		return nil, apierrors.NewConflict(k.GroupResource(), m.Name, apierrors.StaleMessage)
	}
	oldObj := old.Msg.(scheme.Object)
	var next scheme.Object
	if status {
		next = proto.Clone(oldObj).(scheme.Object)
		codec.Normalize(obj)
		copyField(next, obj, "status")
	} else {
		next = obj
		res.prepareForUpdate(next, oldObj)
	}
	if r.cfg.Admit != nil {
		if err := r.cfg.Admit.Admit(ctx, Attributes{Op: OpUpdate, Kind: k, Object: next, Old: oldObj, DryRun: dryRun}); err != nil {
			return nil, err
		}
	}
	var errs field.ErrorList
	if status {
		errs = validation.ValidateStatusUpdate(next, oldObj)
	} else {
		errs = validation.ValidateUpdate(next, oldObj)
	}
	if len(errs) > 0 {
		return nil, res.invalid(m, errs...)
	}
	return r.write(ctx, res, key, next, old, dryRun)
}

// write stores next over old, or deletes it when it is being deleted and its
// last finalizer is gone. An unchanged object is not written, as upstream.
func (r *Registry) write(ctx context.Context, res *resource, key string, next scheme.Object, old *watchcache.Object, dryRun bool) (*watchcache.Object, error) {
	nm := next.GetMetadata()
	if nm.DeletionTimestamp != nil && len(nm.Finalizers) == 0 && !namespaceFinalizing(next) {
		if dryRun {
			return &watchcache.Object{Key: key, Namespace: nm.Namespace, Rev: old.Rev, Msg: next}, nil
		}
		rev, _, err := r.cfg.Store.Delete(ctx, res.prefix+key, old.Rev)
		if err != nil {
			return nil, res.storageError(err, nm.Name)
		}
		nm.ResourceVersion = strconv.FormatInt(rev, 10)
		value, _ := res.encode(next)
		return &watchcache.Object{Key: key, Namespace: nm.Namespace, Rev: rev, Msg: next, Raw: res.raw(value, rev)}, nil
	}
	value, err := res.encode(next)
	if err != nil {
		return nil, err
	}
	if oldValue := old.Raw[:len(old.Raw)-len(res.rvSuffix(old.Rev))]; string(oldValue) == string(value) || dryRun {
		nm.ResourceVersion = strconv.FormatInt(old.Rev, 10)
		return &watchcache.Object{Key: key, Namespace: nm.Namespace, Rev: old.Rev, Msg: next, Raw: res.raw(value, old.Rev)}, nil
	}
	rev, _, err := r.cfg.Store.Update(ctx, res.prefix+key, value, old.Rev)
	if err != nil {
		return nil, res.storageError(err, nm.Name)
	}
	nm.ResourceVersion = strconv.FormatInt(rev, 10)
	o := &watchcache.Object{Key: key, Namespace: nm.Namespace, Rev: rev, Msg: next, Raw: res.raw(value, rev)}
	res.recent.offer(res.kind, o)
	return o, nil
}

// current is the stored object: from the cache when it holds exactly the
// version the caller expects (the write's precondition guards the rest),
// else from etcd.
func (res *resource) current(ctx context.Context, key string, want int64) (*watchcache.Object, error) {
	if want != 0 {
		if o, ok := res.cache.Get(key); ok && o.Rev == want {
			return o, nil
		}
	}
	kv, err := res.reg.cfg.Store.Get(ctx, res.prefix+key, 0)
	if err != nil {
		return nil, err
	}
	return res.decode(key, kv.Value, kv.Rev)
}

// latest reads the object from etcd, with API errors.
func (res *resource) latest(ctx context.Context, key, name string) (*watchcache.Object, error) {
	kv, err := res.reg.cfg.Store.Get(ctx, res.prefix+key, 0)
	if err != nil {
		return nil, res.storageError(err, name)
	}
	o, err := res.decode(key, kv.Value, kv.Rev)
	if err != nil {
		return nil, apierrors.NewInternal(err)
	}
	return o, nil
}

// prepareForUpdate keeps what clients may not change through Update: identity,
// creation, deletion state and status; and moves generation on spec changes.
func (res *resource) prepareForUpdate(next, old scheme.Object) {
	nm, om := next.GetMetadata(), old.GetMetadata()
	nm.Uid = om.Uid
	nm.CreationTimestamp = om.CreationTimestamp
	nm.DeletionTimestamp = om.DeletionTimestamp
	nm.DeletionGracePeriodSeconds = om.DeletionGracePeriodSeconds
	nm.SelfLink = ""
	if res.kind.HasStatus() {
		copyField(next, old, "status")
	}
	if s, ok := next.(*corev1.Secret); ok {
		foldStringData(s)
	}
	if ns, ok := next.(*corev1.Namespace); ok {
		namespaceNameLabel(ns)
	}
	// Compare specs as stored: defaulted and normalized.
	defaults.Apply(next)
	codec.Normalize(next)
	nm.Generation = om.Generation
	if res.hasSpec && !fieldEqual(next, old, "spec") {
		nm.Generation = om.Generation + 1
	}
}

func copyField(dst, src proto.Message, name protoreflect.Name) {
	d, s := dst.ProtoReflect(), src.ProtoReflect()
	fd := d.Descriptor().Fields().ByName(name)
	if fd == nil {
		return
	}
	if s.Has(fd) {
		d.Set(fd, protoreflect.ValueOfMessage(proto.Clone(s.Get(fd).Message().Interface()).ProtoReflect()))
	} else {
		d.Clear(fd)
	}
}

func fieldEqual(a, b proto.Message, name protoreflect.Name) bool {
	ar, br := a.ProtoReflect(), b.ProtoReflect()
	fd := ar.Descriptor().Fields().ByName(name)
	if fd == nil {
		return true
	}
	return proto.Equal(ar.Get(fd).Message().Interface(), br.Get(fd).Message().Interface())
}

// Patch applies a JSON merge patch or JSON patch to the current object and
// updates it, retrying on conflicts unless the patch pins a resourceVersion.
func (r *Registry) Patch(ctx context.Context, k *scheme.Kind, ns, name, patchType string, patch []byte, subresource string, dryRun bool) (*watchcache.Object, error) {
	res := r.res(k)
	if !k.Namespaced {
		ns = ""
	} else if ns == "" {
		ns = "default"
	}
	status := false
	switch subresource {
	case "":
	case "status":
		status = true
	default:
		return nil, apierrors.NewNotFound(k.GroupResource()+"/"+subresource, name)
	}
	key := res.key(ns, name)
	for attempt := 0; ; attempt++ {
		cur, err := res.latest(ctx, key, name)
		if err != nil {
			return nil, err
		}
		doc, err := codec.MarshalJSON(cur.Msg)
		if err != nil {
			return nil, apierrors.NewInternal(err)
		}
		var patched []byte
		switch patchType {
		case "", "merge", "application/merge-patch+json":
			patched, err = jsonpatch.MergePatch(doc, patch)
		case "json", "application/json-patch+json":
			var p jsonpatch.Patch
			p, err = jsonpatch.DecodePatch(patch)
			if err == nil {
				patched, err = p.Apply(doc)
			}
		default:
			return nil, apierrors.NewBadRequest(fmt.Sprintf("patch type %q is not supported: use merge or json", patchType))
		}
		if err != nil {
			return nil, apierrors.NewBadRequest("the patch could not be applied: " + err.Error())
		}
		next := k.New()
		if err := codec.DecodeInto(patched, next, codec.Options{Strict: true}); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		m := next.GetMetadata()
		if m.Name != name || (k.Namespaced && m.Namespace != ns) {
			return nil, res.invalid(m, field.Invalid(field.NewPath("metadata", "name"), m.Name, "field is immutable"))
		}
		pinned := m.ResourceVersion != cur.Msg.(scheme.Object).GetMetadata().ResourceVersion
		o, err := r.update(ctx, k, ns, next, status, dryRun)
		if err != nil && apierrors.IsConflict(err) && !pinned && attempt < 5 {
			continue
		}
		return o, err
	}
}

// namespaceFinalizing: a namespace stays until its spec finalizers are gone too.
func namespaceFinalizing(obj scheme.Object) bool {
	ns, ok := obj.(*corev1.Namespace)
	return ok && len(ns.GetSpec().GetFinalizers()) > 0
}
