package integration

import (
	"fmt"
	"slices"
	"testing"

	"skiff.dev/client"
	"skiff.dev/controller-manager/app"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/apierrors"
)

// A claim of the default class, once the scheduler has picked a node for
// it (played here by the annotation), gets a local-path volume pinned to
// that node and binds to it; deleting the claim deletes the volume.
func TestLocalPathClaimIsProvisionedBoundAndDeleted(t *testing.T) {
	e := setup(t, []string{"persistentvolume-binder", "pvc-protection", "pv-protection", "local-path-provisioner"}, app.ControllerOptions{})
	e.eventually("the local-path StorageClass, default", func() (bool, error) {
		sc, err := client.For[*storagev1.StorageClass](e.c, "").Get(e.ctx(), "local-path")
		return err == nil && sc.Metadata.Annotations["storageclass.kubernetes.io/is-default-class"] == "true", err
	})
	claims := client.For[*corev1.PersistentVolumeClaim](e.c, "default")
	if _, err := claims.Create(e.ctx(), &corev1.PersistentVolumeClaim{Metadata: &metav1.ObjectMeta{Name: "data"},
		Spec: &corev1.PersistentVolumeClaimSpec{AccessModes: []string{"ReadWriteOnce"},
			Resources: &corev1.VolumeResourceRequirements{Requests: map[string]*metav1.Quantity{"storage": {String_: "1Gi"}}}}}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the default class given and the finalizer added", func() (bool, error) {
		c, err := claims.Get(e.ctx(), "data")
		return err == nil && c.Spec.GetStorageClassName() == "local-path" && slices.Contains(c.Metadata.Finalizers, "kubernetes.io/pvc-protection"),
			fmt.Errorf("%v %v (%v)", c.GetSpec().GetStorageClassName(), c.GetMetadata().GetFinalizers(), err)
	})
	// WaitForFirstConsumer: nothing is provisioned before a node is chosen.
	if l, _ := client.For[*corev1.PersistentVolume](e.c, "").List(e.ctx(), client.ListOptions{}); len(l.Items) != 0 {
		t.Fatalf("volumes before a node was selected: %v", l.Items)
	}
	for range 10 {
		c, err := claims.Get(e.ctx(), "data")
		if err != nil {
			t.Fatal(err)
		}
		if c.Metadata.Annotations == nil {
			c.Metadata.Annotations = map[string]string{}
		}
		c.Metadata.Annotations["volume.kubernetes.io/selected-node"] = "node-1"
		if _, err = claims.Update(e.ctx(), c); err == nil {
			break
		} else if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
	var pvName string
	e.eventually("the claim Bound to a volume on node-1", func() (bool, error) {
		c, err := claims.Get(e.ctx(), "data")
		if err != nil || c.GetStatus().GetPhase() != "Bound" {
			return false, fmt.Errorf("claim %v (%v)", c.GetStatus(), err)
		}
		pvName = c.Spec.GetVolumeName()
		return true, nil
	})
	pv, err := client.For[*corev1.PersistentVolume](e.c, "").Get(e.ctx(), pvName)
	if err != nil {
		t.Fatal(err)
	}
	terms := pv.GetSpec().GetNodeAffinity().GetRequired().GetNodeSelectorTerms()
	if pv.Spec.GetPersistentVolumeSource().GetCsi().GetDriver() != "local-path.skiff.dev" || len(terms) != 1 || terms[0].MatchExpressions[0].Values[0] != "node-1" ||
		pv.Spec.GetCapacity()["storage"].GetString_() != "1Gi" || pv.Spec.GetPersistentVolumeReclaimPolicy() != "Delete" {
		t.Errorf("volume %s: %v; want local-path.skiff.dev on node-1, 1Gi, Delete", pvName, pv.Spec)
	}
	if _, err := claims.Delete(e.ctx(), "data", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the claim and its volume gone", func() (bool, error) {
		_, err1 := claims.Get(e.ctx(), "data")
		_, err2 := client.For[*corev1.PersistentVolume](e.c, "").Get(e.ctx(), pvName)
		return apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2), fmt.Errorf("claim: %v, volume: %v", err1, err2)
	})
}
