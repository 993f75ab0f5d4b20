package fake

import (
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// logLimit is how many changes of each kind stay replayable: a watch or a
// GetAt further back is Expired, as after etcd's compaction, and an
// informer relists.
const logLimit = 10000

const (
	added    = "ADDED"
	modified = "MODIFIED"
	deleted  = "DELETED"
	bookmark = "BOOKMARK"
)

// change is one write in a kind's log. Its objects are never modified once
// logged, so watchers read them without the lock.
type change struct {
	typ string
	key string
	// obj is the object at rev; for a deletion, its last state.
	obj scheme.Object
	// prev is the object before the change, nil when it was created.
	prev scheme.Object
	rev  int64
}

type kindStore struct {
	objs map[string]scheme.Object // by key; never modified once stored
	log  []change
	// compacted: changes at or before it have left the log.
	compacted int64
}

// Tracker holds the fake's objects, one resourceVersion counter for every
// kind (as etcd's revision), and a log of recent changes for watches.
type Tracker struct {
	mu      sync.Mutex
	now     func() time.Time
	rev     int64
	kinds   map[*scheme.Kind]*kindStore
	changed chan struct{} // closed and replaced on every write
	closed  bool
}

func newTracker() *Tracker {
	return &Tracker{now: time.Now, kinds: map[*scheme.Kind]*kindStore{}, changed: make(chan struct{})}
}

func (t *Tracker) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		t.broadcast()
	}
}

func (t *Tracker) broadcast() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// Add stores a copy of obj as it is (status included, nothing defaulted),
// replacing an object of the same name, and tells watchers. It fills a
// missing name from generateName, uid, creationTimestamp, generation (1 for
// kinds with a spec) and namespace ("default"). A resourceVersion is kept
// when it is a number above every one given so far, else the next of the
// counter. Add records no Action and runs no reactor.
func (t *Tracker) Add(obj scheme.Object) error {
	k, ok := scheme.ForMessage(obj)
	if !ok {
		return fmt.Errorf("fake: %T is not a kind of skiff.dev/proto/scheme", obj)
	}
	o := proto.Clone(obj).(scheme.Object)
	m := scheme.Meta(o)
	if m.Name == "" && m.GenerateName != "" {
		m.Name = m.GenerateName + randomSuffix()
	}
	if m.Name == "" {
		return fmt.Errorf("fake: a %s needs a name", k.Kind)
	}
	m.Namespace = requestNamespace(k, m.Namespace)
	if m.Uid == "" {
		m.Uid = uuid.NewString()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if m.CreationTimestamp == nil {
		m.CreationTimestamp = metav1.NewTime(t.now())
	}
	if m.Generation == 0 && hasSpec(k) {
		m.Generation = 1
	}
	if v, err := strconv.ParseInt(m.ResourceVersion, 10, 64); err == nil && v > t.rev {
		t.rev = v - 1
	}
	codec.Normalize(o)
	t.put(k, o)
	return nil
}

// Get returns a copy of the stored object, or apierrors NotFound. ns is
// ignored for cluster-scoped kinds.
func (t *Tracker) Get(kind *scheme.Kind, ns, name string) (scheme.Object, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.store(kind).objs[objectKey(requestNamespace(kind, ns), name)]
	if !ok {
		return nil, apierrors.NewNotFound(kind.GroupResource(), name)
	}
	return clone(o), nil
}

// List returns copies of the kind's objects in ns ("" for every namespace),
// in namespace and name order.
func (t *Tracker) List(kind *scheme.Kind, ns string) []scheme.Object {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !kind.Namespaced {
		ns = ""
	}
	var out []scheme.Object
	for _, o := range t.sorted(kind) {
		if ns == "" || o.GetMetadata().GetNamespace() == ns {
			out = append(out, clone(o))
		}
	}
	return out
}

// store is the kind's store; callers hold mu.
func (t *Tracker) store(k *scheme.Kind) *kindStore {
	s := t.kinds[k]
	if s == nil {
		s = &kindStore{objs: map[string]scheme.Object{}}
		t.kinds[k] = s
	}
	return s
}

// sorted lists the kind's stored objects in key order, as etcd does;
// callers hold mu and must not modify them.
func (t *Tracker) sorted(k *scheme.Kind) []scheme.Object {
	s := t.store(k)
	keys := make([]string, 0, len(s.objs))
	for key := range s.objs {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	out := make([]scheme.Object, len(keys))
	for i, key := range keys {
		out[i] = s.objs[key]
	}
	return out
}

// put stores obj (which the tracker owns from now on) at the next revision
// and returns a copy for the caller. Callers hold mu.
func (t *Tracker) put(k *scheme.Kind, obj scheme.Object) scheme.Object {
	s := t.store(k)
	m := obj.GetMetadata()
	key := objectKey(m.Namespace, m.Name)
	prev := s.objs[key]
	t.rev++
	m.ResourceVersion = strconv.FormatInt(t.rev, 10)
	typ := modified
	if prev == nil {
		typ = added
	}
	s.objs[key] = obj
	t.record(s, change{typ: typ, key: key, obj: obj, prev: prev, rev: t.rev})
	return clone(obj)
}

// remove deletes the object under key at the next revision. Watchers get
// its stored state; the caller gets last (the state the deleting write
// left it in) at that revision. Callers hold mu.
func (t *Tracker) remove(k *scheme.Kind, key string, last scheme.Object) scheme.Object {
	s := t.store(k)
	prev := s.objs[key]
	t.rev++
	rv := strconv.FormatInt(t.rev, 10)
	gone := clone(prev)
	gone.GetMetadata().ResourceVersion = rv
	delete(s.objs, key)
	t.record(s, change{typ: deleted, key: key, obj: gone, prev: prev, rev: t.rev})
	out := clone(last)
	out.GetMetadata().ResourceVersion = rv
	return out
}

func (t *Tracker) record(s *kindStore, ch change) {
	s.log = append(s.log, ch)
	// Trim in batches, so a busy kind does not copy its log on every write.
	if len(s.log) > logLimit+logLimit/4 {
		drop := len(s.log) - logLimit
		s.compacted = s.log[drop-1].rev
		s.log = append([]change(nil), s.log[drop:]...)
	}
	t.broadcast()
}

func clone(o scheme.Object) scheme.Object { return proto.Clone(o).(scheme.Object) }

func objectKey(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// requestNamespace is the namespace a request for one object acts in, with
// upstream's default.
func requestNamespace(k *scheme.Kind, ns string) string {
	switch {
	case !k.Namespaced:
		return ""
	case ns == "":
		return "default"
	}
	return ns
}

// hasSpec: generation is kept only for kinds with a spec, as upstream.
func hasSpec(k *scheme.Kind) bool {
	return k.New().ProtoReflect().Descriptor().Fields().ByName("spec") != nil
}

// sameBeyondMeta reports whether a and b agree on everything but metadata
// and status: what moves generation.
func sameBeyondMeta(a, b scheme.Object) bool {
	ar, br := a.ProtoReflect(), b.ProtoReflect()
	fields := ar.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Name() == "metadata" || fd.Name() == "status" {
			continue
		}
		if ar.Has(fd) != br.Has(fd) || (ar.Has(fd) && !ar.Get(fd).Equal(br.Get(fd))) {
			return false
		}
	}
	return true
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

func clearField(m proto.Message, name protoreflect.Name) {
	r := m.ProtoReflect()
	if fd := r.Descriptor().Fields().ByName(name); fd != nil {
		r.Clear(fd)
	}
}

func parseRV(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("invalid resource version %q: must be a non-negative integer", s))
	}
	return v, nil
}

// kindGroup is how upstream names a kind in Invalid errors: "Deployment.apps".
func kindGroup(k *scheme.Kind) string {
	if k.Group == "" {
		return k.Kind
	}
	return k.Kind + "." + k.Group
}

func (t *Tracker) currentRev() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rev
}
