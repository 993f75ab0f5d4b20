package fake

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/validation/field"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/deletion"
	"skiff.dev/proto/patches"
	"skiff.dev/proto/scheme"
)

// randomSuffix is upstream's generateName suffix.
func randomSuffix() string { return rand.String(5) }

// objectNamespace reconciles a request's namespace with its object's, as
// the apiserver does: an empty one is filled in, a different one refused.
func objectNamespace(k *scheme.Kind, ns string, m *metav1.ObjectMeta) error {
	switch {
	case !k.Namespaced:
		m.Namespace = ""
	case m.Namespace == "" && ns == "":
		m.Namespace = "default"
	case m.Namespace == "":
		m.Namespace = ns
	case ns != "" && ns != m.Namespace:
		return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	return nil
}

func (t *Tracker) create(k *scheme.Kind, ns string, obj scheme.Object, dryRun bool) (scheme.Object, error) {
	m := scheme.Meta(obj)
	if err := objectNamespace(k, ns, m); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.store(k)
	if m.Name == "" && m.GenerateName != "" {
		// Retry a clash, as upstream's RetryGenerateName does.
		for range 8 {
			m.Name = m.GenerateName + randomSuffix()
			if _, taken := s.objs[objectKey(m.Namespace, m.Name)]; !taken {
				break
			}
		}
	}
	if m.Name == "" {
		return nil, apierrors.NewInvalid(kindGroup(k), "", field.ErrorList{
			field.Required(field.NewPath("metadata", "name"), "name or generateName is required")})
	}
	if _, ok := s.objs[objectKey(m.Namespace, m.Name)]; ok {
		return nil, apierrors.NewAlreadyExists(k.GroupResource(), m.Name)
	}
	m.Uid = uuid.NewString()
	m.ResourceVersion = ""
	m.CreationTimestamp = metav1.NewTime(t.now())
	m.DeletionTimestamp = nil
	m.DeletionGracePeriodSeconds = nil
	m.Generation = 0
	if hasSpec(k) {
		m.Generation = 1
	}
	// Status is the server's (and its controllers') to write, except a
	// node's, which the kubelet registers with.
	if k.HasStatus() && k.Kind != "Node" {
		clearField(obj, "status")
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		o.Status = &corev1.PodStatus{Phase: "Pending"}
	case *corev1.Namespace:
		o.Status = &corev1.NamespaceStatus{Phase: "Active"}
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		m.Labels["kubernetes.io/metadata.name"] = m.Name
	}
	codec.Normalize(obj)
	if dryRun {
		return clone(obj), nil
	}
	return t.put(k, obj), nil
}

func (t *Tracker) get(k *scheme.Kind, ns, name, rv string) (scheme.Object, error) {
	key := objectKey(requestNamespace(k, ns), name)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.store(k)
	if rv == "" || rv == "0" {
		o, ok := s.objs[key]
		if !ok {
			return nil, apierrors.NewNotFound(k.GroupResource(), name)
		}
		return clone(o), nil
	}
	at, err := parseRV(rv)
	if err != nil {
		return nil, err
	}
	if at > t.rev {
		return nil, apierrors.NewTooLargeResourceVersion(at, t.rev)
	}
	for i := len(s.log) - 1; i >= 0; i-- {
		ch := s.log[i]
		if ch.key != key || ch.rev > at {
			continue
		}
		if ch.typ == deleted {
			break
		}
		return clone(ch.obj), nil
	}
	if at < s.compacted {
		return nil, apierrors.NewExpired(fmt.Sprintf("The resourceVersion for the provided get is too old: %d", at))
	}
	return nil, apierrors.NewNotFound(k.GroupResource(), name)
}

type listResult struct {
	items     []scheme.Object
	rev       int64
	next      string
	remaining *int64
}

// list serves one page; a continue token is the last key served, so pages
// are not one snapshot as etcd's are, which no controller test can tell.
func (t *Tracker) list(k *scheme.Kind, f *filter, limit int64, cont string) (*listResult, error) {
	if limit < 0 {
		return nil, apierrors.NewBadRequest("limit: Invalid value: must be a non-negative integer")
	}
	after := ""
	if cont != "" {
		b, err := base64.RawURLEncoding.DecodeString(cont)
		if err != nil || len(b) == 0 {
			return nil, apierrors.NewBadRequest("continue: Invalid value: the continue token is not valid")
		}
		after = string(b)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := &listResult{rev: t.rev}
	var rest int64
	for _, o := range t.sorted(k) {
		m := o.GetMetadata()
		if key := objectKey(m.Namespace, m.Name); (after != "" && key <= after) || !f.matches(o) {
			continue
		}
		if limit > 0 && int64(len(out.items)) == limit {
			rest++
			continue
		}
		out.items = append(out.items, clone(o))
	}
	if rest > 0 {
		m := out.items[len(out.items)-1].GetMetadata()
		out.next = base64.RawURLEncoding.EncodeToString([]byte(objectKey(m.Namespace, m.Name)))
		out.remaining = &rest
	}
	return out, nil
}

// update replaces an object (status: only its status). want is the
// resourceVersion it must still be at ("": whatever is current).
func (t *Tracker) update(k *scheme.Kind, ns string, obj scheme.Object, status, dryRun bool) (scheme.Object, error) {
	m := scheme.Meta(obj)
	if status && !k.HasStatus() {
		return nil, apierrors.NewNotFound(k.GroupResource()+"/status", m.GetName())
	}
	if err := objectNamespace(k, ns, m); err != nil {
		return nil, err
	}
	if m.Name == "" {
		return nil, apierrors.NewInvalid(kindGroup(k), "", field.ErrorList{
			field.Required(field.NewPath("metadata", "name"), "name is required")})
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.updateLocked(k, obj, m.ResourceVersion, status, dryRun)
}

func (t *Tracker) updateLocked(k *scheme.Kind, obj scheme.Object, want string, status, dryRun bool) (scheme.Object, error) {
	m := obj.GetMetadata()
	key := objectKey(m.Namespace, m.Name)
	old, ok := t.store(k).objs[key]
	if !ok {
		return nil, apierrors.NewNotFound(k.GroupResource(), m.Name)
	}
	om := old.GetMetadata()
	if want != "" {
		if v, err := strconv.ParseInt(want, 10, 64); err != nil || v <= 0 {
			return nil, apierrors.NewInvalid(kindGroup(k), m.Name, field.ErrorList{
				field.Invalid(field.NewPath("metadata", "resourceVersion"), want, "must be a positive integer")})
		}
		if want != om.ResourceVersion {
			return nil, apierrors.NewConflict(k.GroupResource(), m.Name, apierrors.StaleMessage)
		}
	}
	var next scheme.Object
	if status {
		next = clone(old)
		copyField(next, obj, "status")
		codec.Normalize(next)
	} else {
		next = obj
		nm := next.GetMetadata()
		nm.Uid = om.Uid
		nm.CreationTimestamp = om.CreationTimestamp
		nm.DeletionTimestamp = om.DeletionTimestamp
		nm.DeletionGracePeriodSeconds = om.DeletionGracePeriodSeconds
		if k.HasStatus() {
			copyField(next, old, "status")
		}
		if ns, ok := next.(*corev1.Namespace); ok {
			if nm.Labels == nil {
				nm.Labels = map[string]string{}
			}
			nm.Labels["kubernetes.io/metadata.name"] = ns.GetMetadata().GetName()
		}
		codec.Normalize(next)
		nm.Generation = om.Generation
		if hasSpec(k) && !sameBeyondMeta(next, old) {
			nm.Generation++
		}
	}
	return t.write(k, key, next, old, dryRun), nil
}

// write stores next over old, or deletes the object when it is being
// deleted and its last finalizer is gone. An unchanged object is not
// written, as upstream. Callers hold mu.
func (t *Tracker) write(k *scheme.Kind, key string, next, old scheme.Object, dryRun bool) scheme.Object {
	nm := next.GetMetadata()
	nm.ResourceVersion = old.GetMetadata().GetResourceVersion()
	if deletion.DuringUpdate(next, old) {
		if dryRun {
			return clone(next)
		}
		return t.remove(k, key, next)
	}
	if dryRun || equalObjects(next, old) {
		return clone(next)
	}
	return t.put(k, next)
}

func equalObjects(a, b scheme.Object) bool { return proto.Equal(a, b) }

func (t *Tracker) patch(k *scheme.Kind, ns, name, patchType string, patch []byte, subresource string, dryRun bool) (scheme.Object, error) {
	ns = requestNamespace(k, ns)
	if name == "" {
		return nil, apierrors.NewBadRequest("resource name may not be empty")
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
	t.mu.Lock()
	defer t.mu.Unlock()
	cur, ok := t.store(k).objs[objectKey(ns, name)]
	if !ok {
		return nil, apierrors.NewNotFound(k.GroupResource(), name)
	}
	doc, err := codec.MarshalJSON(cur)
	if err != nil {
		return nil, apierrors.NewInternal(err)
	}
	patched, err := apply(doc)
	if err != nil {
		return nil, apierrors.NewBadRequest("the patch could not be applied: " + err.Error())
	}
	next := k.New()
	if err := codec.DecodeInto(patched, next, codec.Options{Strict: true}); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	m := scheme.Meta(next)
	switch {
	case m.Name != name:
		return nil, apierrors.NewInvalid(kindGroup(k), name, field.ErrorList{
			field.Invalid(field.NewPath("metadata", "name"), m.Name, "field is immutable")})
	case k.Namespaced && m.Namespace != "" && m.Namespace != ns:
		return nil, apierrors.NewInvalid(kindGroup(k), name, field.ErrorList{
			field.Invalid(field.NewPath("metadata", "namespace"), m.Namespace, "field is immutable")})
	}
	m.Namespace = ns
	// A patch that sets metadata.resourceVersion makes it a precondition,
	// as upstream; one that leaves it alone applies to the current state.
	return t.updateLocked(k, next, m.ResourceVersion, status, dryRun)
}

// patcher checks a patch once and returns what applies it to a document.
type deleteOptions struct {
	preconditions *apipb.Preconditions
	grace         *int64
	policy        string
	dryRun        bool
}

func (t *Tracker) delete(k *scheme.Kind, ns, name string, o deleteOptions) (scheme.Object, error) {
	if name == "" {
		return nil, apierrors.NewBadRequest("resource name may not be empty")
	}
	switch o.policy {
	case "", "Orphan", "Background", "Foreground":
	default:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("propagationPolicy: Unsupported value: %q: supported values: \"Orphan\", \"Background\", \"Foreground\"", o.policy))
	}
	if o.grace != nil && *o.grace < 0 {
		return nil, apierrors.NewBadRequest("gracePeriodSeconds: Invalid value: must be greater than or equal to 0")
	}
	key := objectKey(requestNamespace(k, ns), name)
	t.mu.Lock()
	defer t.mu.Unlock()
	cur, ok := t.store(k).objs[key]
	if !ok {
		return nil, apierrors.NewNotFound(k.GroupResource(), name)
	}
	m := cur.GetMetadata()
	if p := o.preconditions; p != nil {
		if p.Uid != nil && *p.Uid != m.Uid {
			return nil, apierrors.NewConflict(k.GroupResource(), name,
				fmt.Sprintf("Precondition failed: UID in precondition: %s, UID in object meta: %s", *p.Uid, m.Uid))
		}
		if p.ResourceVersion != nil && *p.ResourceVersion != m.ResourceVersion {
			return nil, apierrors.NewConflict(k.GroupResource(), name,
				fmt.Sprintf("Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s", *p.ResourceVersion, m.ResourceVersion))
		}
	}
	next := clone(cur)
	nm := next.GetMetadata()
	now := t.now()
	nm.Finalizers = deletion.Propagate(nm.Finalizers, o.policy)
	graceful := false
	switch obj := next.(type) {
	case *corev1.Namespace:
		// The namespace controller empties it, then drops the spec finalizer.
		if obj.Status == nil {
			obj.Status = &corev1.NamespaceStatus{}
		}
		obj.Status.Phase = "Terminating"
		graceful = len(obj.GetSpec().GetFinalizers()) > 0
	case *corev1.Pod:
		// A pod a node runs gets its grace period: the kubelet stops it,
		// then deletes it for good with grace 0.
		if g := deletion.PodGrace(obj, o.grace); g > 0 {
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
		if o.dryRun || equalObjects(next, cur) {
			return next, nil
		}
		return t.put(k, next), nil
	}
	if o.dryRun {
		return next, nil
	}
	return t.remove(k, key, cur), nil
}

// bind sets a pod's spec.nodeName once, as the pods/binding subresource.
func (t *Tracker) bind(b *corev1.Binding) (scheme.Object, error) {
	m := b.GetMetadata()
	name, node := m.GetName(), b.GetTarget().GetName()
	if name == "" || node == "" {
		var errs field.ErrorList
		if name == "" {
			errs = append(errs, field.Required(field.NewPath("metadata", "name"), ""))
		}
		if node == "" {
			errs = append(errs, field.Required(field.NewPath("target", "name"), ""))
		}
		return nil, apierrors.NewInvalid("Binding", name, errs)
	}
	key := objectKey(requestNamespace(podKind, m.GetNamespace()), name)
	t.mu.Lock()
	defer t.mu.Unlock()
	cur, ok := t.store(podKind).objs[key]
	if !ok {
		return nil, apierrors.NewNotFound("pods", name)
	}
	pod := clone(cur).(*corev1.Pod)
	if uid := m.GetUid(); uid != "" && uid != pod.Metadata.Uid {
		return nil, apierrors.NewConflict("pods/binding", name, fmt.Sprintf("Precondition failed: UID in precondition: %s, UID in object meta: %s", uid, pod.Metadata.Uid))
	}
	if pod.Metadata.DeletionTimestamp != nil {
		return nil, apierrors.NewConflict("pods/binding", name, "pod is being deleted, cannot be assigned to a host")
	}
	if n := pod.GetSpec().GetNodeName(); n != "" {
		return nil, apierrors.NewConflict("pods/binding", name, fmt.Sprintf("pod %s is already assigned to node %q", name, n))
	}
	if pod.Spec == nil {
		pod.Spec = &corev1.PodSpec{}
	}
	pod.Spec.NodeName = node
	for k, v := range m.GetAnnotations() {
		if pod.Metadata.Annotations == nil {
			pod.Metadata.Annotations = map[string]string{}
		}
		pod.Metadata.Annotations[k] = v
	}
	if pod.Status == nil {
		pod.Status = &corev1.PodStatus{}
	}
	scheduled := &corev1.PodCondition{Type: "PodScheduled", Status: "True", LastTransitionTime: metav1.NewTime(t.now())}
	if i := slices.IndexFunc(pod.Status.Conditions, func(c *corev1.PodCondition) bool { return c.Type == "PodScheduled" }); i >= 0 {
		pod.Status.Conditions[i] = scheduled
	} else {
		pod.Status.Conditions = append(pod.Status.Conditions, scheduled)
	}
	return t.write(podKind, key, pod, cur, false), nil
}

// evict deletes a pod as the pods/eviction subresource does, without
// consulting PodDisruptionBudgets.
func (t *Tracker) evict(e *policyv1.Eviction) (scheme.Object, error) {
	m := e.GetMetadata()
	if m.GetName() == "" {
		return nil, apierrors.NewInvalid("Eviction.policy", "", field.ErrorList{
			field.Required(field.NewPath("metadata", "name"), "the name of the pod to evict")})
	}
	var o deleteOptions
	if d := e.GetDeleteOptions(); d != nil {
		o.grace = d.GracePeriodSeconds
		o.policy = d.GetPropagationPolicy()
		o.dryRun = len(d.GetDryRun()) > 0
		if p := d.GetPreconditions(); p != nil {
			o.preconditions = &apipb.Preconditions{Uid: p.Uid, ResourceVersion: p.ResourceVersion}
		}
	}
	return t.delete(podKind, m.GetNamespace(), m.GetName(), o)
}

type historyItem struct {
	obj     scheme.Object
	deleted bool
}

// history lists the object's writes the log still holds, newest first.
func (t *Tracker) history(k *scheme.Kind, ns, name string, limit int64) ([]historyItem, int64, error) {
	key := objectKey(requestNamespace(k, ns), name)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.store(k)
	var out []historyItem
	for i := len(s.log) - 1; i >= 0 && (limit <= 0 || int64(len(out)) < limit); i-- {
		if ch := s.log[i]; ch.key == key {
			out = append(out, historyItem{obj: clone(ch.obj), deleted: ch.typ == deleted})
		}
	}
	if len(out) == 0 {
		return nil, s.compacted, apierrors.NewNotFound(k.GroupResource(), name)
	}
	return out, s.compacted, nil
}

// bookmarkInterval is how often an idle watch that allows bookmarks is
// told the current resourceVersion.
var bookmarkInterval = time.Second

// watch streams the kind's changes that f selects, strictly after rv ("" or
// "0": ADDED for every current object first), until ctx ends or the
// tracker closes. send gets each event's type, object and revision.
func (t *Tracker) watch(ctx context.Context, k *scheme.Kind, f *filter, rv string, bookmarks bool,
	send func(typ string, obj scheme.Object, rev int64) error) error {
	t.mu.Lock()
	s := t.store(k)
	var initial []scheme.Object
	var sent int64
	switch rv {
	case "", "0":
		for _, o := range t.sorted(k) {
			if f.matches(o) {
				initial = append(initial, o)
			}
		}
		sent = t.rev
	default:
		from, err := parseRV(rv)
		if err != nil {
			t.mu.Unlock()
			return err
		}
		if from < s.compacted {
			t.mu.Unlock()
			return apierrors.NewExpired(fmt.Sprintf("too old resource version: %d (%d)", from, s.compacted))
		}
		sent = from
	}
	t.mu.Unlock()
	delivered := int64(0)
	for _, o := range initial {
		rev, _ := strconv.ParseInt(o.GetMetadata().GetResourceVersion(), 10, 64)
		if err := send(added, o, rev); err != nil {
			return err
		}
	}
	var tick <-chan time.Time
	if bookmarks {
		tk := time.NewTicker(bookmarkInterval)
		defer tk.Stop()
		tick = tk.C
	}
	wantBookmark := false
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return apierrors.NewUnavailable("the fake apiserver is shutting down")
		}
		if sent < s.compacted {
			t.mu.Unlock()
			return apierrors.NewExpired(fmt.Sprintf("too old resource version: %d (%d)", sent, s.compacted))
		}
		i := sort.Search(len(s.log), func(i int) bool { return s.log[i].rev > sent })
		batch := s.log[i:len(s.log):len(s.log)]
		// Every change of the kind up to t.rev is in the log, so the watch
		// is current to t.rev once it has gone through the batch.
		sent = max(sent, t.rev)
		changed := t.changed
		t.mu.Unlock()
		for _, ch := range batch {
			if typ, obj, ok := transition(f, ch); ok {
				if err := send(typ, obj, ch.rev); err != nil {
					return err
				}
				delivered = ch.rev
			}
		}
		if wantBookmark && delivered < sent {
			bm := k.New()
			bm.GetMetadata().ResourceVersion = strconv.FormatInt(sent, 10)
			if err := send(bookmark, bm, sent); err != nil {
				return err
			}
			delivered = sent
		}
		wantBookmark = false
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick:
			wantBookmark = true
		}
	}
}

// transition is what a change means to one watch: an object entering its
// selection is ADDED, leaving it DELETED, staying in it MODIFIED.
func transition(f *filter, ch change) (string, scheme.Object, bool) {
	now := ch.typ != deleted && f.matches(ch.obj)
	before := ch.prev != nil && f.matches(ch.prev)
	switch {
	case now && before:
		return modified, ch.obj, true
	case now:
		return added, ch.obj, true
	case before:
		return deleted, ch.obj, true
	}
	return "", nil, false
}

var podKind, _ = scheme.ForResource("", "pods")
