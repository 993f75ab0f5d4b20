package persistentvolume

import (
	"fmt"
	"slices"
	"strconv"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
)

// Upstream's annotations and phases (pkg/controller/volume/persistentvolume
// and component-helpers/storage/volume).
const (
	// AnnBindCompleted on a claim: the controller finished binding it.
	AnnBindCompleted = "pv.kubernetes.io/bind-completed"
	// AnnBoundByController on a claim or volume: the controller, not the
	// user, set its half of the binding (and may undo it).
	AnnBoundByController = "pv.kubernetes.io/bound-by-controller"
	// AnnSelectedNode on a claim: the scheduler chose this node for a
	// WaitForFirstConsumer claim's first pod.
	AnnSelectedNode = "volume.kubernetes.io/selected-node"
	// AnnStorageProvisioner (and its beta twin) on a claim: which external
	// provisioner is to create its volume.
	AnnStorageProvisioner     = "volume.kubernetes.io/storage-provisioner"
	AnnBetaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
	// AnnDynamicallyProvisioned on a volume: the provisioner that made it.
	AnnDynamicallyProvisioned = "pv.kubernetes.io/provisioned-by"
	// AnnDefaultClass (and its beta twin) marks the default StorageClass.
	AnnDefaultClass     = "storageclass.kubernetes.io/is-default-class"
	AnnBetaDefaultClass = "storageclass.beta.kubernetes.io/is-default-class"
	// AnnBetaStorageClass is the class annotation that predates
	// spec.storageClassName; it still wins when present, as upstream.
	AnnBetaStorageClass = "volume.beta.kubernetes.io/storage-class"

	// ExternalProvisionerFinalizer keeps a provisioned volume until its
	// external provisioner has deleted it.
	ExternalProvisionerFinalizer = "external-provisioner.volume.kubernetes.io/finalizer"

	ClaimPending = "Pending"
	ClaimBound   = "Bound"
	ClaimLost    = "Lost"

	VolumeAvailable = "Available"
	VolumeBound     = "Bound"
	VolumeReleased  = "Released"
	VolumeFailed    = "Failed"
	VolumePending   = "Pending"

	BindingImmediate            = "Immediate"
	BindingWaitForFirstConsumer = "WaitForFirstConsumer"
)

func hasAnn(m *metav1.ObjectMeta, key string) bool {
	_, ok := m.GetAnnotations()[key]
	return ok
}

func setAnn(m *metav1.ObjectMeta, key, value string) {
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[key] = value
}

// claimClass is the class a claim asks for: the beta annotation, then
// spec.storageClassName, else "" (upstream's GetPersistentVolumeClaimClass).
func claimClass(c *corev1.PersistentVolumeClaim) string {
	if v, ok := c.GetMetadata().GetAnnotations()[AnnBetaStorageClass]; ok {
		return v
	}
	return c.GetSpec().GetStorageClassName()
}

// volumeClass is upstream's GetPersistentVolumeClass.
func volumeClass(v *corev1.PersistentVolume) string {
	if c, ok := v.GetMetadata().GetAnnotations()[AnnBetaStorageClass]; ok {
		return c
	}
	return v.GetSpec().GetStorageClassName()
}

// request is a claim's storage request (zero if absent or unparsable:
// validation refuses such claims).
func request(c *corev1.PersistentVolumeClaim) resource.Quantity {
	return quantity(c.GetSpec().GetResources().GetRequests()["storage"])
}

func capacity(v *corev1.PersistentVolume) resource.Quantity {
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

// accessModesContained: every mode the claim asks for is one the volume
// offers (upstream's CheckAccessModes / access-mode index).
func accessModesContained(claim []string, volume []string) bool {
	for _, m := range claim {
		if !slices.Contains(volume, m) {
			return false
		}
	}
	return true
}

func volumeModeOf(m *string) string {
	if m == nil || *m == "" {
		return "Filesystem"
	}
	return *m
}

// volumeModeMismatch is upstream's CheckVolumeModeMismatches.
func volumeModeMismatch(c *corev1.PersistentVolumeClaim, v *corev1.PersistentVolume) bool {
	return volumeModeOf(c.GetSpec().VolumeMode) != volumeModeOf(v.GetSpec().VolumeMode)
}

// isVolumeBoundToClaim: the volume's claimRef names the claim (and, if it
// has a UID, the same incarnation of it).
func isVolumeBoundToClaim(v *corev1.PersistentVolume, c *corev1.PersistentVolumeClaim) bool {
	ref := v.GetSpec().GetClaimRef()
	if ref == nil {
		return false
	}
	m := c.GetMetadata()
	if ref.Name != m.GetName() || ref.Namespace != m.GetNamespace() {
		return false
	}
	return ref.Uid == "" || ref.Uid == m.GetUid()
}

// checkVolumeSatisfyClaim says why a volume the user named cannot serve
// the claim, or nil.
func checkVolumeSatisfyClaim(v *corev1.PersistentVolume, c *corev1.PersistentVolumeClaim) error {
	req, capa := request(c), capacity(v)
	if capa.Cmp(req) < 0 {
		return fmt.Errorf("requested PV is too small")
	}
	if volumeClass(v) != claimClass(c) {
		return fmt.Errorf("storageClassName does not match")
	}
	if volumeModeMismatch(c, v) {
		return fmt.Errorf("incompatible volumeMode")
	}
	if !accessModesContained(c.GetSpec().GetAccessModes(), v.GetSpec().GetAccessModes()) {
		return fmt.Errorf("incompatible accessMode")
	}
	return nil
}

// findMatchingVolume is upstream's FindMatchingVolume for the controller
// (no node): a volume pre-bound to the claim wins; otherwise, unless the
// claim's binding waits for its first consumer, the smallest Available,
// unclaimed volume of the claim's class, access modes, volume mode and
// selector that holds the request. Ties go to the first name.
func findMatchingVolume(c *corev1.PersistentVolumeClaim, volumes []*corev1.PersistentVolume, delayBinding bool) (*corev1.PersistentVolume, error) {
	var sel labels.Selector
	if s := c.GetSpec().GetSelector(); s != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(s); err != nil {
			return nil, fmt.Errorf("error creating internal label selector for claim: %w", err)
		}
	}
	req := request(c)
	class := claimClass(c)
	volumes = slices.Clone(volumes)
	slices.SortFunc(volumes, func(a, b *corev1.PersistentVolume) int {
		qa, qb := capacity(a), capacity(b)
		if d := qa.Cmp(qb); d != 0 {
			return d
		}
		return compareStrings(a.GetMetadata().GetName(), b.GetMetadata().GetName())
	})
	var best *corev1.PersistentVolume
	for _, v := range volumes {
		capa := capacity(v)
		if capa.Cmp(req) < 0 || volumeModeMismatch(c, v) || v.GetMetadata().GetDeletionTimestamp() != nil {
			continue
		}
		if !accessModesContained(c.GetSpec().GetAccessModes(), v.GetSpec().GetAccessModes()) {
			continue
		}
		if isVolumeBoundToClaim(v, c) {
			return v, nil
		}
		if delayBinding {
			// The scheduler picks volumes of delayed claims.
			continue
		}
		switch {
		case v.GetStatus().GetPhase() != VolumeAvailable, v.GetSpec().GetClaimRef() != nil:
			continue
		case sel != nil && !sel.Matches(labels.Set(v.GetMetadata().GetLabels())):
			continue
		case volumeClass(v) != class:
			continue
		}
		if best == nil {
			best = v // sorted: the first fit is the smallest
		}
	}
	return best, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// defaultClass is the default StorageClass; of several, the newest (then
// the first name), as upstream since 1.26.
func defaultClass(classes []*storagev1.StorageClass) *storagev1.StorageClass {
	var best *storagev1.StorageClass
	for _, sc := range classes {
		a := sc.GetMetadata().GetAnnotations()
		if a[AnnDefaultClass] != "true" && a[AnnBetaDefaultClass] != "true" {
			continue
		}
		if best == nil {
			best = sc
			continue
		}
		bt, st := best.GetMetadata().GetCreationTimestamp().AsTime(), sc.GetMetadata().GetCreationTimestamp().AsTime()
		if st.After(bt) || st.Equal(bt) && sc.GetMetadata().GetName() < best.GetMetadata().GetName() {
			best = sc
		}
	}
	return best
}

// newer reports whether a's resourceVersion is later than b's (both are
// etcd revisions).
func newer(a, b *metav1.ObjectMeta) bool {
	x, err1 := strconv.ParseInt(a.GetResourceVersion(), 10, 64)
	y, err2 := strconv.ParseInt(b.GetResourceVersion(), 10, 64)
	return err1 == nil && err2 == nil && x > y
}

func cloneClaim(c *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	return proto.Clone(c).(*corev1.PersistentVolumeClaim)
}

func cloneVolume(v *corev1.PersistentVolume) *corev1.PersistentVolume {
	return proto.Clone(v).(*corev1.PersistentVolume)
}
