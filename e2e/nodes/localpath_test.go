package nodes

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/e2e/local"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
)

// The node's skiff-local-path plugin registers with its kubelet (the
// CSINode names it), and a pod whose claim is bound to a local-path PV
// writes into the volume's directory on its node through the plugin's bind
// mount; the pod's removal unpublishes the volume and keeps the data. The
// PV and the binding are made by hand, so the test needs no provisioner.
func TestLocalPathVolume(t *testing.T) {
	c, cl := kubeletClusterN(t, 1)
	n := c.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	eventually(t, 30*time.Second, "CSINode lists the driver", func() (bool, string) {
		cn, err := client.For[*storagev1.CSINode](cl, "").Get(ctx, n.Name)
		if err != nil {
			return false, err.Error()
		}
		for _, d := range cn.GetSpec().GetDrivers() {
			if d.GetName() == local.LocalPathDriver && d.GetNodeID() == n.Name && len(d.GetTopologyKeys()) == 1 && d.GetTopologyKeys()[0] == "kubernetes.io/hostname" {
				return true, ""
			}
		}
		return false, fmt.Sprint(cn.GetSpec().GetDrivers())
	})

	pv := &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: "pv-e2e"}, Spec: &corev1.PersistentVolumeSpec{
		Capacity:                      map[string]*metav1.Quantity{"storage": {String_: "1Gi"}},
		AccessModes:                   []string{"ReadWriteOnce"},
		PersistentVolumeReclaimPolicy: "Retain",
		ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "default", Name: "data"},
		PersistentVolumeSource:        &corev1.PersistentVolumeSource{Csi: &corev1.CSIPersistentVolumeSource{Driver: local.LocalPathDriver, VolumeHandle: "pv-e2e"}},
	}}
	if _, err := client.For[*corev1.PersistentVolume](cl, "").Create(ctx, pv); err != nil {
		t.Fatal(err)
	}
	empty := ""
	pvc, err := client.For[*corev1.PersistentVolumeClaim](cl, "default").Create(ctx, &corev1.PersistentVolumeClaim{
		Metadata: &metav1.ObjectMeta{Name: "data"}, Spec: &corev1.PersistentVolumeClaimSpec{
			AccessModes: []string{"ReadWriteOnce"}, VolumeName: "pv-e2e", StorageClassName: &empty,
			Resources: &corev1.VolumeResourceRequirements{Requests: map[string]*metav1.Quantity{"storage": {String_: "1Gi"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	// The binder's part, unless a binder already did it.
	eventually(t, 20*time.Second, "claim bound", func() (bool, string) {
		cur, err := client.For[*corev1.PersistentVolumeClaim](cl, "default").Get(ctx, "data")
		if err != nil {
			return false, err.Error()
		}
		if cur.GetStatus().GetPhase() == "Bound" {
			return true, ""
		}
		cur.Status = &corev1.PersistentVolumeClaimStatus{Phase: "Bound", AccessModes: []string{"ReadWriteOnce"}}
		_, err = client.For[*corev1.PersistentVolumeClaim](cl, "default").UpdateStatus(ctx, cur)
		return false, fmt.Sprint("setting Bound: ", err)
	})
	_ = pvc

	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "writer", Namespace: "default"}, Spec: &corev1.PodSpec{
		NodeName: n.Name,
		Containers: []*corev1.Container{{Name: "w", Image: busyboxImage, Command: []string{"sh", "-c", "echo hello > /data/f && sleep 3600"},
			VolumeMounts: []*corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
		Volumes: []*corev1.Volume{{Name: "data", VolumeSource: &corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
	}}
	created, err := client.For[*corev1.Pod](cl, "default").Create(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(n.LocalPathRoot(), "pv-e2e", "f")
	eventually(t, 60*time.Second, "the pod's write in the volume's directory", func() (bool, string) {
		b, err := os.ReadFile(data)
		if err == nil && string(b) == "hello\n" {
			return true, ""
		}
		p, _ := client.For[*corev1.Pod](cl, "default").Get(ctx, "writer")
		return false, fmt.Sprintf("%q %v; pod %v", b, err, p.GetStatus())
	})

	target := filepath.Join(n.KubeletDir(), "pods", created.GetMetadata().GetUid(), "volumes", "kubernetes.io~csi", "pv-e2e", "mount")
	if _, err := os.Stat(target); err != nil {
		t.Errorf("publish target %s: %v", target, err)
	}
	zero := int64(0)
	if _, err := client.For[*corev1.Pod](cl, "default").Delete(ctx, "writer", client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the pod gone and its volume unpublished", func() (bool, string) {
		_, err := os.Stat(filepath.Dir(target))
		if !os.IsNotExist(err) {
			return false, fmt.Sprint("volume dir: ", err)
		}
		if _, err := client.For[*corev1.Pod](cl, "default").Get(ctx, "writer"); err == nil {
			return false, "pod still there"
		}
		return true, ""
	})
	if b, err := os.ReadFile(data); err != nil || string(b) != "hello\n" {
		t.Errorf("after the pod: data %q, %v; want it kept", b, err)
	}
}
