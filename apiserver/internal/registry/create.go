package registry

import (
	"context"
	"crypto/rand"
	"math/big"
	"strconv"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/request"
	"skiff.dev/apiserver/internal/validation"
	"skiff.dev/apiserver/internal/watchcache"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/defaults"
	"skiff.dev/proto/scheme"
)

// Create stores a new object in namespace ns (ignored for cluster-scoped kinds).
func (r *Registry) Create(ctx context.Context, k *scheme.Kind, ns string, obj scheme.Object, dryRun bool) (*watchcache.Object, error) {
	res := r.res(k)
	// A request may carry no metadata at all; it then names nothing, which
	// validation reports below.
	m := scheme.Meta(obj)
	if err := res.checkNamespace(ns, m); err != nil {
		return nil, err
	}
	generated := m.Name == "" && m.GenerateName != ""
	if generated {
		m.Name = m.GenerateName + nameSuffix()
	}
	if m.Name == "" {
		return nil, res.invalid(m, field.Required(field.NewPath("metadata", "name"), "name or generateName is required"))
	}
	res.prepareForCreate(obj, r.cfg.Now())
	if res.side != nil {
		res.side.Prepare(obj, nil)
	}
	defaults.Apply(obj)
	codec.Normalize(obj)
	a := admission.NewAttributes(admission.Create, k, "", m.Namespace, m.Name, userOf(ctx), obj, nil, dryRun)
	if err := r.cfg.Admission.Admit(ctx, a); err != nil {
		return nil, err
	}
	if errs := validation.ValidateCreate(obj, r.cfg.Validation); len(errs) > 0 {
		return nil, res.invalid(m, errs...)
	}
	sw, err := res.reserve(ctx, obj, nil, dryRun)
	if err != nil {
		return nil, err
	}
	if err := r.cfg.Admission.Validate(ctx, a); err != nil {
		return nil, err
	}
	// Names and side keys are retried apart: a taken generated name is
	// bounded by upstream's count, a taken side key by its chooser.
	for names, sides := 0, 0; ; {
		value, err := res.encode(obj)
		if err != nil {
			return nil, err
		}
		key := res.key(m.Namespace, m.Name)
		if dryRun {
			if _, ok := res.cache.Get(key); ok {
				return nil, apierrors.NewAlreadyExists(k.GroupResource(), m.Name)
			}
			return &watchcache.Object{Key: key, Namespace: m.Namespace, Msg: obj, Raw: value}, nil
		}
		rev, err := res.storeCreate(ctx, key, value, obj, sw)
		if err != nil {
			if again, serr := res.retrySide(ctx, err, key, sw, sides); serr != nil {
				return nil, serr
			} else if again {
				sides++
				continue
			}
			err = res.storageError(err, m.Name)
			// A generated name that is taken is the server's choice, not the
			// client's mistake: pick another, as upstream has since 1.32
			// (27^5 suffixes collide about once in three 3,000-pod
			// ReplicaSets).
			if generated && apierrors.IsAlreadyExists(err) && names < maxGenerateNameRetries {
				names++
				m.Name = m.GenerateName + nameSuffix()
				continue
			}
			return nil, err
		}
		sw.committed()
		return r.created(res, obj, key, value, rev), nil
	}
}

// maxGenerateNameRetries is upstream's bound on fresh names for one create.
const maxGenerateNameRetries = 7

// created is what a successful Create returns, and offers it to readers of
// the recent writes.
func (r *Registry) created(res *resource, obj scheme.Object, key string, value []byte, rev int64) *watchcache.Object {
	m := obj.GetMetadata()
	m.ResourceVersion = strconv.FormatInt(rev, 10)
	o := &watchcache.Object{Key: key, Namespace: m.Namespace, Rev: rev, Msg: obj, Raw: res.raw(value, rev)}
	res.recent.offer(res.kind, o)
	return o
}

// userOf is the request's user; the apiserver's own writes (default
// namespaces) carry none.
func userOf(ctx context.Context) request.User {
	u, _ := request.UserFrom(ctx)
	return u
}

// checkNamespace reconciles the request's namespace with the object's, as
// upstream: an empty one is filled in, a different one is refused.
func (res *resource) checkNamespace(ns string, m *metav1.ObjectMeta) error {
	if !res.kind.Namespaced {
		m.Namespace = ""
		return nil
	}
	switch {
	case m.Namespace == "" && ns == "":
		m.Namespace = "default"
	case m.Namespace == "":
		m.Namespace = ns
	case ns != "" && ns != m.Namespace:
		return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	return nil
}

func (res *resource) invalid(m *metav1.ObjectMeta, errs ...*field.Error) error {
	kg := res.kind.Kind
	if res.kind.Group != "" {
		kg += "." + res.kind.Group
	}
	return apierrors.NewInvalid(kg, m.Name, errs)
}

// Namespace reads a namespace for admission: from the cache, or from etcd
// when the cache has not yet seen one created a moment ago.
func (r *Registry) Namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	res := r.res(namespaceKind)
	if o, ok := res.cache.Get(name); ok {
		return o.Msg.(*corev1.Namespace), nil
	}
	o, err := res.latest(ctx, name, name)
	if err != nil {
		return nil, err
	}
	return o.Msg.(*corev1.Namespace), nil
}

const suffixAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// nameSuffix is randomSuffix; tests replace it to force a collision.
var nameSuffix = randomSuffix

// randomSuffix is upstream's generateName suffix: five characters without
// vowels, so no words are spelled by accident.
func randomSuffix() string {
	b := make([]byte, 5)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(suffixAlphabet))))
		if err != nil {
			n = big.NewInt(int64(i))
		}
		b[i] = suffixAlphabet[n.Int64()]
	}
	return string(b)
}

// prepareForCreate sets what the server owns on a new object.
func (res *resource) prepareForCreate(obj scheme.Object, now time.Time) {
	m := obj.GetMetadata()
	m.Uid = uuid.NewString()
	m.ResourceVersion = ""
	m.SelfLink = ""
	m.CreationTimestamp = metav1.NewTime(now)
	m.DeletionTimestamp = nil
	m.DeletionGracePeriodSeconds = nil
	m.Generation = 0
	if res.hasSpec {
		m.Generation = 1
	}
	if res.kind.HasStatus() && res.kind.Kind != "Node" {
		clearField(obj, "status")
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		o.Status = &corev1.PodStatus{Phase: "Pending", QosClass: qosClass(o.GetSpec())}
	case *corev1.Namespace:
		o.Status = &corev1.NamespaceStatus{Phase: "Active"}
		namespaceNameLabel(o)
	case *corev1.PersistentVolume:
		o.Status = &corev1.PersistentVolumeStatus{Phase: "Pending"}
	case *corev1.PersistentVolumeClaim:
		o.Status = &corev1.PersistentVolumeClaimStatus{Phase: "Pending"}
	case *corev1.Secret:
		foldStringData(o)
	case *batchv1.Job:
		jobSelector(o)
	}
}

// jobSelector is upstream's generated Job selector: unless the user manages
// it (manualSelector), the Job selects its pods by its own uid, and the
// template carries the labels that select it.
func jobSelector(j *batchv1.Job) {
	s := j.GetSpec()
	if s == nil || s.GetManualSelector() {
		return
	}
	uid, name := j.Metadata.Uid, j.Metadata.Name
	s.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"batch.kubernetes.io/controller-uid": uid}}
	if s.Template == nil {
		s.Template = &corev1.PodTemplateSpec{}
	}
	if s.Template.Metadata == nil {
		s.Template.Metadata = &metav1.ObjectMeta{}
	}
	if s.Template.Metadata.Labels == nil {
		s.Template.Metadata.Labels = map[string]string{}
	}
	l := s.Template.Metadata.Labels
	l["batch.kubernetes.io/controller-uid"] = uid
	l["controller-uid"] = uid
	l["batch.kubernetes.io/job-name"] = name
	l["job-name"] = name
}

// foldStringData moves stringData into data, as upstream does on every write.
func foldStringData(s *corev1.Secret) {
	if len(s.StringData) == 0 {
		return
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
}

// clearField resets a top-level field ("status") to its empty value.
func clearField(obj proto.Message, name protoreflect.Name) {
	m := obj.ProtoReflect()
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil {
		return
	}
	m.Clear(fd)
}

// qosClass is upstream's GetPodQOS: Guaranteed when every container limits cpu
// and memory and requests equal limits, BestEffort when nothing is requested or
// limited, Burstable otherwise.
func qosClass(spec *corev1.PodSpec) string {
	requests := map[string]apiresource.Quantity{}
	limits := map[string]apiresource.Quantity{}
	guaranteed := true
	any := false
	add := func(dst map[string]apiresource.Quantity, name string, q *metav1.Quantity) {
		v, err := apiresource.ParseQuantity(q.GetString_())
		if err != nil || v.IsZero() {
			return
		}
		any = true
		cur := dst[name]
		cur.Add(v)
		dst[name] = cur
	}
	all := append(append([]*corev1.Container{}, spec.GetContainers()...), spec.GetInitContainers()...)
	for _, c := range all {
		res := c.GetResources()
		for n, q := range res.GetRequests() {
			if n == "cpu" || n == "memory" {
				add(requests, n, q)
			}
		}
		seen := 0
		for n, q := range res.GetLimits() {
			if n == "cpu" || n == "memory" {
				add(limits, n, q)
				seen++
			}
		}
		if seen < 2 {
			guaranteed = false
		}
	}
	if !any {
		return "BestEffort"
	}
	if guaranteed {
		for n, l := range limits {
			if r, ok := requests[n]; ok && r.Cmp(l) != 0 {
				guaranteed = false
			}
		}
	}
	if guaranteed && len(limits) == 2 {
		return "Guaranteed"
	}
	return "Burstable"
}

// namespaceNameLabel is upstream's immutable kubernetes.io/metadata.name
// label, which lets selectors pick namespaces by name.
func namespaceNameLabel(ns *corev1.Namespace) {
	m := ns.GetMetadata()
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	m.Labels["kubernetes.io/metadata.name"] = m.Name
}
