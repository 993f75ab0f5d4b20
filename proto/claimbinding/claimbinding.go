// Package claimbinding matches PersistentVolumeClaims to
// PersistentVolumes the one way the PV controller and the scheduler's
// VolumeBinding plugin both need, as upstream shares
// pkg/controller/volume/persistentvolume/util between them: the classes
// (the beta annotation first), sizes, access and volume modes, and the
// choice of the smallest volume that fits.
package claimbinding

import (
	"cmp"
	"slices"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/placement"
)

// AnnBetaStorageClass is the class annotation that predates
// spec.storageClassName and still wins over it.
const AnnBetaStorageClass = "volume.beta.kubernetes.io/storage-class"

// ClaimClass is upstream's GetPersistentVolumeClaimClass.
func ClaimClass(c *corev1.PersistentVolumeClaim) string {
	if v, ok := c.GetMetadata().GetAnnotations()[AnnBetaStorageClass]; ok {
		return v
	}
	return c.GetSpec().GetStorageClassName()
}

// VolumeClass is upstream's GetPersistentVolumeClass.
func VolumeClass(v *corev1.PersistentVolume) string {
	if c, ok := v.GetMetadata().GetAnnotations()[AnnBetaStorageClass]; ok {
		return c
	}
	return v.GetSpec().GetStorageClassName()
}

// Request is a claim's storage request (zero if absent or unparsable:
// validation refuses such claims).
func Request(c *corev1.PersistentVolumeClaim) resource.Quantity {
	return quantity(c.GetSpec().GetResources().GetRequests()["storage"])
}

// Capacity is a volume's storage capacity.
func Capacity(v *corev1.PersistentVolume) resource.Quantity {
	return quantity(v.GetSpec().GetCapacity()["storage"])
}

func quantity(q *metav1.Quantity) resource.Quantity {
	if q == nil {
		return resource.Quantity{}
	}
	v, err := resource.ParseQuantity(q.GetString_())
	if err != nil {
		return resource.Quantity{}
	}
	return v
}

// AccessModesContained: every mode the claim asks for is one the volume
// offers (upstream's CheckAccessModes).
func AccessModesContained(claim, volume []string) bool {
	for _, m := range claim {
		if !slices.Contains(volume, m) {
			return false
		}
	}
	return true
}

// VolumeMode is a volumeMode with its default.
func VolumeMode(m *string) string {
	if m == nil || *m == "" {
		return "Filesystem"
	}
	return *m
}

// VolumeModeMismatch is upstream's CheckVolumeModeMismatches.
func VolumeModeMismatch(c *corev1.PersistentVolumeClaim, v *corev1.PersistentVolume) bool {
	return VolumeMode(c.GetSpec().VolumeMode) != VolumeMode(v.GetSpec().VolumeMode)
}

// IsVolumeBoundToClaim: the volume's claimRef names the claim (and, if it
// has a UID, the same incarnation of it).
func IsVolumeBoundToClaim(v *corev1.PersistentVolume, c *corev1.PersistentVolumeClaim) bool {
	ref := v.GetSpec().GetClaimRef()
	if ref == nil {
		return false
	}
	m := c.GetMetadata()
	return ref.Name == m.GetName() && ref.Namespace == m.GetNamespace() && (ref.Uid == "" || ref.Uid == m.GetUid())
}

// NodeFits is upstream's CheckNodeAffinity: a volume without node affinity
// fits every node; otherwise one of its required terms must match.
func NodeFits(v *corev1.PersistentVolume, n *corev1.Node) bool {
	req := v.GetSpec().GetNodeAffinity().GetRequired()
	if req == nil {
		return true
	}
	for _, t := range req.GetNodeSelectorTerms() {
		if placement.TermMatches(t, n) {
			return true
		}
	}
	return false
}

// Match narrows FindMatchingVolume.
type Match struct {
	// Node, when set, must satisfy the volume's node affinity (the
	// scheduler's question); nil: any node (the controller's).
	Node *corev1.Node
	// DelayBinding: only a volume pre-bound to the claim is returned; the
	// scheduler picks the others once it has chosen a node.
	DelayBinding bool
	// Taken volumes are passed over, pre-bound or not (the scheduler's
	// picks for the pod at hand).
	Taken func(name string) bool
	// Reserved volumes are passed over unless pre-bound to the claim (the
	// scheduler's picks for pods it has assumed).
	Reserved func(name string) bool
}

// FindMatchingVolume is upstream's FindMatchingVolume: a volume pre-bound
// to the claim wins; otherwise the smallest Available, unclaimed volume of
// the claim's class, access modes, volume mode and selector that holds the
// request, ties going to the first name; nil when none does.
func FindMatchingVolume(c *corev1.PersistentVolumeClaim, volumes []*corev1.PersistentVolume, m Match) (*corev1.PersistentVolume, error) {
	var sel labels.Selector
	if s := c.GetSpec().GetSelector(); s != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(s); err != nil {
			return nil, err
		}
	}
	req, class := Request(c), ClaimClass(c)
	volumes = slices.Clone(volumes)
	slices.SortFunc(volumes, func(a, b *corev1.PersistentVolume) int {
		qa, qb := Capacity(a), Capacity(b)
		if d := qa.Cmp(qb); d != 0 {
			return d
		}
		return cmp.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
	})
	var best *corev1.PersistentVolume
	for _, v := range volumes {
		name, capa := v.GetMetadata().GetName(), Capacity(v)
		switch {
		case m.Taken != nil && m.Taken(name), capa.Cmp(req) < 0, VolumeModeMismatch(c, v),
			v.GetMetadata().GetDeletionTimestamp() != nil,
			!AccessModesContained(c.GetSpec().GetAccessModes(), v.GetSpec().GetAccessModes()),
			m.Node != nil && !NodeFits(v, m.Node):
			continue
		}
		if IsVolumeBoundToClaim(v, c) {
			return v, nil
		}
		switch {
		case m.DelayBinding, best != nil, m.Reserved != nil && m.Reserved(name),
			v.GetStatus().GetPhase() != "Available", v.GetSpec().GetClaimRef() != nil,
			sel != nil && !sel.Matches(labels.Set(v.GetMetadata().GetLabels())),
			VolumeClass(v) != class:
			continue
		}
		best = v // sorted: the first fit is the smallest; a pre-bound one may still follow
	}
	return best, nil
}
