package persistentvolume

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/claimbinding"
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
	AnnBetaStorageClass = claimbinding.AnnBetaStorageClass

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

// checkVolumeSatisfyClaim says why a volume the user named cannot serve
// the claim, or nil.
func checkVolumeSatisfyClaim(v *corev1.PersistentVolume, c *corev1.PersistentVolumeClaim) error {
	req, capa := claimbinding.Request(c), claimbinding.Capacity(v)
	if capa.Cmp(req) < 0 {
		return fmt.Errorf("requested PV is too small")
	}
	if claimbinding.VolumeClass(v) != claimbinding.ClaimClass(c) {
		return fmt.Errorf("storageClassName does not match")
	}
	if claimbinding.VolumeModeMismatch(c, v) {
		return fmt.Errorf("incompatible volumeMode")
	}
	if !claimbinding.AccessModesContained(c.GetSpec().GetAccessModes(), v.GetSpec().GetAccessModes()) {
		return fmt.Errorf("incompatible accessMode")
	}
	return nil
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
