package registry

import (
	"context"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/validation"
	"skiff.dev/apiserver/internal/watchcache"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/defaults"
	"skiff.dev/proto/deletion"
	"skiff.dev/proto/patches"
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
	m := scheme.Meta(obj)
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
	if want != 0 {
		return r.updateOnce(ctx, res, key, obj, want, status, dryRun)
	}
	// No resourceVersion means "whatever is current": a conflict only says
	// that someone wrote in between, so read again and retry, as upstream's
	// GuaranteedUpdate does, until the write lands or the request ends.
	for {
		o, err := r.updateOnce(ctx, res, key, proto.Clone(obj).(scheme.Object), 0, status, dryRun)
		if err == nil || !apierrors.IsConflict(err) || ctx.Err() != nil {
			return o, err
		}
	}
}

// updateOnce writes obj over the stored object at revision want (0: the
// current one), failing with Conflict when the stored one moved.
func (r *Registry) updateOnce(ctx context.Context, res *resource, key string, obj scheme.Object, want int64, status, dryRun bool) (*watchcache.Object, error) {
	k, m := res.kind, obj.GetMetadata()
	old, err := res.current(ctx, key, want)
	if err != nil {
		return nil, res.storageError(err, m.Name)
	}
	if want != 0 && old.Rev != want {
		return nil, apierrors.NewConflict(k.GroupResource(), m.Name, apierrors.StaleMessage)
	}
	oldObj := old.Msg.(scheme.Object)
	var next scheme.Object
	sub := ""
	if status {
		sub = "status"
		next = proto.Clone(oldObj).(scheme.Object)
		codec.Normalize(obj)
		copyField(next, obj, "status")
	} else {
		next = obj
		res.prepareForUpdate(next, oldObj)
	}
	a := admission.NewAttributes(admission.Update, k, sub, m.Namespace, m.Name, userOf(ctx), next, oldObj, dryRun)
	if err := r.cfg.Admission.Admit(ctx, a); err != nil {
		return nil, err
	}
	var errs field.ErrorList
	var sw *SideWrite
	if status {
		errs = validation.ValidateStatusUpdate(next, oldObj)
	} else {
		errs = validation.ValidateUpdate(next, oldObj, r.cfg.Validation)
	}
	if len(errs) > 0 {
		return nil, res.invalid(m, errs...)
	}
	if !status {
		var err error
		if sw, err = res.reserve(ctx, next, oldObj, dryRun); err != nil {
			return nil, err
		}
	}
	if err := r.cfg.Admission.Validate(ctx, a); err != nil {
		return nil, err
	}
	return r.write(ctx, res, key, next, old, dryRun, sw)
}

// write stores next over old, with the side keys sw puts and releases, or
// deletes it when it is being deleted and its last finalizer is gone. An
// unchanged object is not written, as upstream.
func (r *Registry) write(ctx context.Context, res *resource, key string, next scheme.Object, old *watchcache.Object, dryRun bool, sw *SideWrite) (*watchcache.Object, error) {
	nm := next.GetMetadata()
	if deletion.DuringUpdate(next, old.Msg.(scheme.Object)) {
		if dryRun {
			return &watchcache.Object{Key: key, Namespace: nm.Namespace, Rev: old.Rev, Msg: next}, nil
		}
		rev, err := res.storeDelete(ctx, key, old.Rev, old.Msg.(scheme.Object))
		if err != nil {
			return nil, res.storageError(err, nm.Name)
		}
		nm.ResourceVersion = strconv.FormatInt(rev, 10)
		value, _ := res.encode(next)
		return &watchcache.Object{Key: key, Namespace: nm.Namespace, Rev: rev, Msg: next, Raw: res.raw(value, rev)}, nil
	}
	var value []byte
	var rev int64
	for attempt := 0; ; attempt++ {
		var err error
		if value, err = res.encode(next); err != nil {
			return nil, err
		}
		if oldValue := old.Raw[:len(old.Raw)-len(res.rvSuffix(old.Rev))]; string(oldValue) == string(value) || dryRun {
			nm.ResourceVersion = strconv.FormatInt(old.Rev, 10)
			return &watchcache.Object{Key: key, Namespace: nm.Namespace, Rev: old.Rev, Msg: next, Raw: res.raw(value, old.Rev)}, nil
		}
		rev, err = res.storeUpdate(ctx, key, value, old.Rev, next, sw)
		if err == nil {
			sw.committed()
			break
		}
		if again, serr := res.retrySide(ctx, err, key, sw, attempt); serr != nil {
			return nil, serr
		} else if !again {
			return nil, res.storageError(err, nm.Name)
		}
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
	if res.side != nil {
		res.side.Prepare(next, old)
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

// Patch applies a JSON merge patch, a JSON patch or a strategic merge patch
// to the current object and updates it. Unless the patch itself pins a
// resourceVersion, a conflict means someone wrote in between: the patch is
// applied again to the new state, as upstream's patcher does.
func (r *Registry) Patch(ctx context.Context, k *scheme.Kind, ns, name, patchType string, patch []byte, subresource string, dryRun bool) (*watchcache.Object, error) {
	res := r.res(k)
	ns, key, err := res.requestKey(ns, name)
	if err != nil {
		return nil, err
	}
	status := false
	switch subresource {
	case "":
	case "status":
		if !k.HasStatus() {
			return nil, apierrors.NewNotFound(k.GroupResource()+"/status", name)
		}
		status = true
	default:
		return nil, apierrors.NewNotFound(k.GroupResource()+"/"+subresource, name)
	}
	apply, err := patches.Patcher(k, patchType, patch)
	if err != nil {
		return nil, err
	}
	for {
		cur, err := res.latest(ctx, key, name)
		if err != nil {
			return nil, err
		}
		doc, err := codec.MarshalJSON(cur.Msg)
		if err != nil {
			return nil, apierrors.NewInternal(err)
		}
		patched, err := apply(doc)
		if err != nil {
			return nil, err
		}
		next := k.New()
		if err := codec.DecodeInto(patched, next, codec.Options{Strict: true}); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		m := scheme.Meta(next)
		switch {
		case m.Name == "":
			return nil, res.invalid(m, field.Required(field.NewPath("metadata", "name"), "name is required"))
		case m.Name != name:
			return nil, res.invalid(m, field.Invalid(field.NewPath("metadata", "name"), m.Name, "field is immutable"))
		case k.Namespaced && m.Namespace != "" && m.Namespace != ns:
			return nil, res.invalid(m, field.Invalid(field.NewPath("metadata", "namespace"), m.Namespace, "field is immutable"))
		}
		m.Namespace = ns
		want := cur.Rev
		pinned := m.ResourceVersion != cur.Msg.(scheme.Object).GetMetadata().ResourceVersion
		if pinned {
			v, err := strconv.ParseInt(m.ResourceVersion, 10, 64)
			if err != nil || v <= 0 {
				return nil, res.invalid(m, field.Invalid(field.NewPath("metadata", "resourceVersion"), m.ResourceVersion, "must be a positive integer"))
			}
			want = v
		}
		o, err := r.updateOnce(ctx, res, key, next, want, status, dryRun)
		if err != nil && apierrors.IsConflict(err) && !pinned && ctx.Err() == nil {
			continue
		}
		return o, err
	}
}
