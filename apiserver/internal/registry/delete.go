package registry

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/watchcache"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/deletion"
	"skiff.dev/proto/scheme"
)

// Finalizers the garbage collector acts on, recorded by Delete from the
// request's propagation policy, as upstream (the rules: proto/deletion).
const (
	FinalizerOrphan     = deletion.FinalizerOrphan
	FinalizerForeground = deletion.FinalizerForeground
	// FinalizerNamespace is the spec finalizer the namespace controller removes
	// once the namespace is empty.
	FinalizerNamespace = deletion.FinalizerNamespace
)

// DeleteOptions are a delete request's knobs.
type DeleteOptions struct {
	Preconditions      *apipb.Preconditions
	GracePeriodSeconds *int64
	PropagationPolicy  string // "", Orphan, Background, Foreground
	DryRun             bool
	// skipAdmission: the write was admitted as another request (an
	// eviction), as upstream's eviction deletes the pod.
	skipAdmission bool
}

// Delete removes an object, or marks it for deletion when finalizers (or a
// graceful pod termination) must run first. It returns the object as it was
// last stored: gone, or carrying its deletionTimestamp.
func (r *Registry) Delete(ctx context.Context, k *scheme.Kind, ns, name string, opts DeleteOptions) (*watchcache.Object, error) {
	res := r.res(k)
	_, key, err := res.requestKey(ns, name)
	if err != nil {
		return nil, err
	}
	switch opts.PropagationPolicy {
	case "", "Orphan", "Background", "Foreground":
	default:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("propagationPolicy: Unsupported value: %q: supported values: \"Orphan\", \"Background\", \"Foreground\"", opts.PropagationPolicy))
	}
	if g := opts.GracePeriodSeconds; g != nil && *g < 0 {
		return nil, apierrors.NewBadRequest("gracePeriodSeconds: Invalid value: must be greater than or equal to 0")
	}
	for attempt := 0; ; attempt++ {
		o, err := r.deleteOnce(ctx, res, key, name, opts)
		if err != nil && apierrors.IsConflict(err) && attempt < 5 && opts.Preconditions.GetResourceVersion() == "" {
			continue
		}
		return o, err
	}
}

func (r *Registry) deleteOnce(ctx context.Context, res *resource, key, name string, opts DeleteOptions) (*watchcache.Object, error) {
	cur, err := res.latest(ctx, key, name)
	if err != nil {
		return nil, err
	}
	obj := cur.Msg.(scheme.Object)
	m := obj.GetMetadata()
	if p := opts.Preconditions; p != nil {
		if p.Uid != nil && *p.Uid != m.Uid {
			return nil, apierrors.NewConflict(res.kind.GroupResource(), name,
				fmt.Sprintf("Precondition failed: UID in precondition: %s, UID in object meta: %s", *p.Uid, m.Uid))
		}
		if p.ResourceVersion != nil && *p.ResourceVersion != m.ResourceVersion {
			return nil, apierrors.NewConflict(res.kind.GroupResource(), name,
				fmt.Sprintf("Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s", *p.ResourceVersion, m.ResourceVersion))
		}
	}
	if !opts.skipAdmission {
		a := admission.NewAttributes(admission.Delete, res.kind, "", m.Namespace, m.Name, userOf(ctx), nil, obj, opts.DryRun)
		if err := r.cfg.Admission.Admit(ctx, a); err != nil {
			return nil, err
		}
		if err := r.cfg.Admission.Validate(ctx, a); err != nil {
			return nil, err
		}
	}
	next := proto.Clone(obj).(scheme.Object)
	nm := next.GetMetadata()
	now := r.cfg.Now()
	nm.Finalizers = deletion.Propagate(nm.Finalizers, opts.PropagationPolicy)
	graceful := false
	switch o := next.(type) {
	case *corev1.Namespace:
		// The namespace controller empties it, then drops the spec finalizer.
		if o.Status == nil {
			o.Status = &corev1.NamespaceStatus{}
		}
		o.Status.Phase = "Terminating"
		if len(o.GetSpec().GetFinalizers()) > 0 {
			graceful = true
		}
	case *corev1.Pod:
		// A pod running on a node is given its grace period: the kubelet
		// stops it and then deletes it for good with grace 0.
		if g := deletion.PodGrace(o, opts.GracePeriodSeconds); g > 0 {
			graceful = true
			if nm.DeletionGracePeriodSeconds == nil || *nm.DeletionGracePeriodSeconds > g {
				nm.DeletionTimestamp = metav1.NewTime(now.Add(time.Duration(g) * time.Second))
				nm.DeletionGracePeriodSeconds = &g
			}
		}
	}
	if len(nm.Finalizers) > 0 || graceful {
		if nm.DeletionTimestamp == nil {
			nm.DeletionTimestamp = metav1.NewTime(now)
			zero := int64(0)
			nm.DeletionGracePeriodSeconds = &zero
		}
		if opts.DryRun {
			return &watchcache.Object{Key: key, Namespace: nm.Namespace, Rev: cur.Rev, Msg: next}, nil
		}
		value, err := res.encode(next)
		if err != nil {
			return nil, err
		}
		if string(value) == string(cur.Raw[:len(cur.Raw)-len(res.rvSuffix(cur.Rev))]) {
			return cur, nil
		}
		rev, _, err := r.cfg.Store.Update(ctx, res.prefix+key, value, cur.Rev)
		if err != nil {
			return nil, res.storageError(err, name)
		}
		nm.ResourceVersion = strconv.FormatInt(rev, 10)
		return &watchcache.Object{Key: key, Namespace: nm.Namespace, Rev: rev, Msg: next, Raw: res.raw(value, rev)}, nil
	}
	if opts.DryRun {
		return cur, nil
	}
	rev, err := res.storeDelete(ctx, key, cur.Rev, obj)
	if err != nil {
		return nil, res.storageError(err, name)
	}
	return &watchcache.Object{Key: key, Namespace: cur.Namespace, Rev: rev, Msg: cur.Msg, Raw: cur.Raw}, nil
}
