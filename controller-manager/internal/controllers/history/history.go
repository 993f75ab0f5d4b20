// Package history is upstream's pkg/controller/history: the
// ControllerRevisions a DaemonSet or a StatefulSet keeps of its pod
// template, how they are named and hashed, compared, sorted and numbered, and
// their creation with hash-collision handling. Both controllers store a
// revision's data as upstream does: the JSON patch
// {"spec":{"template":{…,"$patch":"replace"}}} that brings the owner back to
// that template, which is also what `skiffctl rollout undo` applies.
package history

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"sort"
	"strconv"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/rand"

	"skiff.dev/client"
	"skiff.dev/client/informers"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// ControllerRevisionHashLabel is upstream's label on revisions and on the
// pods made from them.
const ControllerRevisionHashLabel = "controller-revision-hash"

// maxNameLength is upstream's cap on a revision name's prefix, so that
// "<prefix>-<hash>" stays a valid DNS subdomain.
const maxPrefixLength = 223

// ControllerRevisionName is "<prefix>-<hash>", the prefix cut to 223
// characters.
func ControllerRevisionName(prefix, hash string) string {
	if len(prefix) > maxPrefixLength {
		prefix = prefix[:maxPrefixLength]
	}
	return prefix + "-" + hash
}

// HashControllerRevision is upstream's: fnv32 of the revision's data and,
// when given, the decimal collision count, safe-encoded.
func HashControllerRevision(rev *appsv1.ControllerRevision, probe *int32) string {
	h := fnv.New32()
	h.Write(rev.GetData().GetRaw())
	if probe != nil {
		h.Write([]byte(strconv.FormatInt(int64(*probe), 10)))
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// TemplatePatch is a revision's data for a pod template:
// {"spec":{"template":{…,"$patch":"replace"}}}, upstream's getPatch.
func TemplatePatch(t *corev1.PodTemplateSpec) ([]byte, error) {
	if t == nil {
		t = &corev1.PodTemplateSpec{}
	}
	raw, err := codec.MarshalFields(t)
	if err != nil {
		return nil, err
	}
	var tmpl map[string]any
	if err := json.Unmarshal(raw, &tmpl); err != nil {
		return nil, err
	}
	if tmpl == nil {
		tmpl = map[string]any{}
	}
	tmpl["$patch"] = "replace"
	// encoding/json sorts map keys: the same template is the same bytes.
	return json.Marshal(map[string]any{"spec": map[string]any{"template": tmpl}})
}

// TemplateFromPatch reads back the template TemplatePatch wrote.
func TemplateFromPatch(raw []byte) (*corev1.PodTemplateSpec, error) {
	var doc struct {
		Spec struct {
			Template map[string]any `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("revision data: %w", err)
	}
	if doc.Spec.Template == nil {
		return nil, fmt.Errorf("revision data has no spec.template")
	}
	delete(doc.Spec.Template, "$patch")
	b, err := json.Marshal(doc.Spec.Template)
	if err != nil {
		return nil, err
	}
	out := &corev1.PodTemplateSpec{}
	if err := codec.DecodeInto(b, out, codec.Options{}); err != nil {
		return nil, fmt.Errorf("revision template: %w", err)
	}
	return out, nil
}

// NewControllerRevision is upstream's: a revision of parent holding data,
// labelled with the template's labels and its hash, named
// "<parent>-<hash>", controlled by parent.
func NewControllerRevision(parent scheme.Object, parentKind *scheme.Kind, templateLabels map[string]string,
	data []byte, revision int64, collisionCount *int32) *appsv1.ControllerRevision {
	l := maps.Clone(templateLabels)
	if l == nil {
		l = map[string]string{}
	}
	m := parent.GetMetadata()
	cr := &appsv1.ControllerRevision{
		Metadata: &metav1.ObjectMeta{
			Namespace:       m.GetNamespace(),
			Labels:          l,
			OwnerReferences: []*metav1.OwnerReference{metav1.NewControllerRef(parent, parentKind.APIVersion(), parentKind.Kind)},
		},
		Data:     &metav1.RawExtension{Raw: data},
		Revision: revision,
	}
	hash := HashControllerRevision(cr, collisionCount)
	cr.Metadata.Name = ControllerRevisionName(m.GetName(), hash)
	cr.Metadata.Labels[ControllerRevisionHashLabel] = hash
	return cr
}

// EqualRevision is upstream's: same hash label (when both have one) and the
// same data.
func EqualRevision(a, b *appsv1.ControllerRevision) bool {
	if a == nil || b == nil {
		return a == b
	}
	ha, oka := a.GetMetadata().GetLabels()[ControllerRevisionHashLabel]
	hb, okb := b.GetMetadata().GetLabels()[ControllerRevisionHashLabel]
	if oka && okb && ha != hb {
		return false
	}
	return bytes.Equal(a.GetData().GetRaw(), b.GetData().GetRaw())
}

// FindEqualRevisions are the revisions equal to needle.
func FindEqualRevisions(revs []*appsv1.ControllerRevision, needle *appsv1.ControllerRevision) []*appsv1.ControllerRevision {
	var out []*appsv1.ControllerRevision
	for _, r := range revs {
		if EqualRevision(r, needle) {
			out = append(out, r)
		}
	}
	return out
}

// SortControllerRevisions orders revisions by number, then creation time,
// then name, oldest first, as upstream.
func SortControllerRevisions(revs []*appsv1.ControllerRevision) {
	sort.SliceStable(revs, func(i, j int) bool {
		a, b := revs[i], revs[j]
		if a.GetRevision() != b.GetRevision() {
			return a.GetRevision() < b.GetRevision()
		}
		ta, tb := a.GetMetadata().GetCreationTimestamp().AsTime(), b.GetMetadata().GetCreationTimestamp().AsTime()
		if !ta.Equal(tb) {
			return ta.Before(tb)
		}
		return a.GetMetadata().GetName() < b.GetMetadata().GetName()
	})
}

// MaxRevision is the highest revision number (0 for none).
func MaxRevision(revs []*appsv1.ControllerRevision) int64 {
	var m int64
	for _, r := range revs {
		m = max(m, r.GetRevision())
	}
	return m
}

// NextRevision is one above the highest revision number.
func NextRevision(revs []*appsv1.ControllerRevision) int64 { return MaxRevision(revs) + 1 }

// History reads revisions from the shared informer and writes them through
// the client: upstream's realHistory.
type History struct {
	c      *client.Client
	lister informers.Lister[*appsv1.ControllerRevision]
}

// New is a History over the process's ControllerRevision informer.
func New(c *client.Client, lister informers.Lister[*appsv1.ControllerRevision]) *History {
	return &History{c: c, lister: lister}
}

func (h *History) api(ns string) *client.Typed[*appsv1.ControllerRevision] {
	return client.For[*appsv1.ControllerRevision](h.c, ns)
}

// List is upstream's ListControllerRevisions: the cached revisions of
// parent's namespace that selector matches and that parent controls or no
// one does (candidates for adoption). The objects are the cache's.
func (h *History) List(parent scheme.Object, selector labels.Selector) []*appsv1.ControllerRevision {
	var out []*appsv1.ControllerRevision
	uid := parent.GetMetadata().GetUid()
	for _, r := range h.lister.Namespace(parent.GetMetadata().GetNamespace()).List(selector) {
		ref := metav1.GetControllerOf(r.GetMetadata())
		if ref == nil || ref.GetUid() == uid {
			out = append(out, r)
		}
	}
	return out
}

// Create is upstream's CreateControllerRevision: the revision named by its
// hash under *collisionCount; a name taken by a revision with other data
// bumps *collisionCount and tries again, one taken by the same data is that
// revision.
func (h *History) Create(ctx context.Context, parent scheme.Object, rev *appsv1.ControllerRevision, collisionCount *int32) (*appsv1.ControllerRevision, error) {
	if collisionCount == nil {
		return nil, fmt.Errorf("collisionCount should not be nil")
	}
	ns := parent.GetMetadata().GetNamespace()
	for range 1000 {
		clone := proto.Clone(rev).(*appsv1.ControllerRevision)
		hash := HashControllerRevision(rev, collisionCount)
		clone.Metadata.Name = ControllerRevisionName(parent.GetMetadata().GetName(), hash)
		if clone.Metadata.Labels == nil {
			clone.Metadata.Labels = map[string]string{}
		}
		clone.Metadata.Labels[ControllerRevisionHashLabel] = hash
		clone.Metadata.Namespace = ns
		created, err := h.api(ns).Create(ctx, clone)
		if apierrors.IsAlreadyExists(err) {
			exists, err := h.api(ns).Get(ctx, clone.Metadata.Name)
			if err != nil {
				return nil, err
			}
			if bytes.Equal(exists.GetData().GetRaw(), clone.GetData().GetRaw()) {
				return exists, nil
			}
			*collisionCount++
			continue
		}
		return created, err
	}
	return nil, fmt.Errorf("no free name for a revision of %s", parent.GetMetadata().GetName())
}

// UpdateRevision gives rev the number revision (upstream's
// UpdateControllerRevision), retrying on a conflict with a fresh read.
func (h *History) UpdateRevision(ctx context.Context, rev *appsv1.ControllerRevision, revision int64) (*appsv1.ControllerRevision, error) {
	cur := proto.Clone(rev).(*appsv1.ControllerRevision)
	for attempt := 0; ; attempt++ {
		if cur.Revision == revision {
			return cur, nil
		}
		cur.Revision = revision
		out, err := h.api(cur.GetMetadata().GetNamespace()).Update(ctx, cur)
		if err == nil || !apierrors.IsConflict(err) || attempt >= 4 {
			return out, err
		}
		fresh, gerr := h.api(cur.GetMetadata().GetNamespace()).Get(ctx, cur.GetMetadata().GetName())
		if gerr != nil {
			return nil, gerr
		}
		cur = fresh
	}
}

// Delete removes a revision; one already gone is no error.
func (h *History) Delete(ctx context.Context, rev *appsv1.ControllerRevision) error {
	m := rev.GetMetadata()
	uid := m.GetUid()
	opts := client.DeleteOptions{}
	if uid != "" {
		opts = deleteUID(uid)
	}
	_, err := h.api(m.GetNamespace()).Delete(ctx, m.GetName(), opts)
	if apierrors.IsNotFound(err) || (uid != "" && apierrors.IsConflict(err)) {
		return nil
	}
	return err
}

func deleteUID(uid string) client.DeleteOptions {
	return client.DeleteOptions{Preconditions: &apipb.Preconditions{Uid: &uid}}
}
