package volumes

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"skiff.dev/kubelet/internal/csi"
	"skiff.dev/kubelet/internal/csi/csitest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

type storageStore struct {
	pvcs map[string]*corev1.PersistentVolumeClaim
	pvs  map[string]*corev1.PersistentVolume
}

func (s *storageStore) sources(drivers map[string]*csi.Client) StorageSources {
	return StorageSources{
		PersistentVolumeClaim: func(ns, name string) (*corev1.PersistentVolumeClaim, error) {
			if c, ok := s.pvcs[ns+"/"+name]; ok {
				return c, nil
			}
			return nil, apierrors.NewNotFound("persistentvolumeclaims", name)
		},
		PersistentVolume: func(name string) (*corev1.PersistentVolume, error) {
			if v, ok := s.pvs[name]; ok {
				return v, nil
			}
			return nil, apierrors.NewNotFound("persistentvolumes", name)
		},
		CSI: func(name string) (CSIClient, error) {
			if c, ok := drivers[name]; ok {
				return c, nil
			}
			return nil, &notRegistered{name}
		},
	}
}

type notRegistered struct{ name string }

func (e *notRegistered) Error() string {
	return "driver name " + e.name + " not found in the list of registered CSI drivers"
}

func boundClaim(ns, name, uid, pv string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name, Uid: uid},
		Spec: &corev1.PersistentVolumeClaimSpec{VolumeName: pv}, Status: &corev1.PersistentVolumeClaimStatus{Phase: "Bound"}}
}

func csiPV(name, driver, claimUID string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: name},
		Spec: &corev1.PersistentVolumeSpec{AccessModes: []string{"ReadWriteOnce"},
			ClaimRef: &corev1.ObjectReference{Uid: claimUID},
			PersistentVolumeSource: &corev1.PersistentVolumeSource{Csi: &corev1.CSIPersistentVolumeSource{
				Driver: driver, VolumeHandle: name, VolumeAttributes: map[string]string{"k": "v"}}}}}
}

func claimPod(uid string) *corev1.Pod {
	p := newPod(&corev1.Volume{Name: "data", VolumeSource: &corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}})
	p.Metadata.Uid = uid
	p.Spec.Containers[0].VolumeMounts = []*corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	return p
}

func methods(calls []csitest.Call) string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Method)
	}
	return strings.Join(out, ",")
}

func TestCSIClaimStagePublishUnpublishUnstage(t *testing.T) {
	st := &storageStore{pvcs: map[string]*corev1.PersistentVolumeClaim{"ns1/data": boundClaim("ns1", "data", "claim-uid", "pvc-claim-uid")},
		pvs: map[string]*corev1.PersistentVolume{"pvc-claim-uid": csiPV("pvc-claim-uid", "fake.csi.dev", "claim-uid")}}
	var fm *fakeMounter
	d := csitest.Start(t, &csitest.Driver{Name: "fake.csi.dev", NodeID: "node-1", Stage: true,
		OnPublish:   func(target string) { _ = fm.MountTmpfs(target, 0) }, // the driver's mount, in the fake table
		OnUnpublish: func(target string) { _ = fm.Unmount(target) }})
	c, err := csi.Dial(d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, fm0, _ := newTest(t, Sources{Storage: st.sources(map[string]*csi.Client{"fake.csi.dev": c})})
	fm = fm0
	ctx := context.Background()

	pod1 := claimPod("uid-1")
	if err := m.Setup(ctx, pod1); err != nil {
		t.Fatal(err)
	}
	target1 := filepath.Join(m.root, "pods", "uid-1", "volumes", "kubernetes.io~csi", "pvc-claim-uid", "mount")
	calls := d.Calls()
	if methods(calls) != "NodeStageVolume,NodePublishVolume" {
		t.Fatalf("calls %s, want stage then publish", methods(calls))
	}
	staging := calls[0].Path
	if !strings.HasPrefix(staging, filepath.Join(m.root, "plugins", "kubernetes.io", "csi", "fake.csi.dev")+"/") || filepath.Base(staging) != "globalmount" {
		t.Errorf("staging path %s", staging)
	}
	if calls[1].Path != target1 || calls[1].Staging != staging || calls[1].Volume != "pvc-claim-uid" || calls[1].Context["k"] != "v" {
		t.Errorf("publish %+v, want target %s staging %s", calls[1], target1, staging)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(target1), "vol_data.json")); err != nil {
		t.Errorf("no vol_data.json: %v", err)
	}

	// Every sync calls Setup: a published volume is not published again.
	if err := m.Setup(ctx, pod1); err != nil {
		t.Fatal(err)
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Errorf("second Setup called %s", methods(calls))
	}
	mounts, err := m.Mounts(pod1, pod1.Spec.Containers[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].HostPath != target1 || mounts[0].ContainerPath != "/data" || mounts[0].Readonly {
		t.Errorf("mounts %v, want %s on /data read-write", mounts, target1)
	}

	// A second pod on the same volume.
	pod2 := claimPod("uid-2")
	if err := m.Setup(ctx, pod2); err != nil {
		t.Fatal(err)
	}
	if got := methods(d.Calls()); !strings.HasSuffix(got, "NodePublishVolume") {
		t.Errorf("second pod: %s", got)
	}

	// The first pod goes: unpublished, still staged for the second.
	if err := m.Teardown("uid-1"); err != nil {
		t.Fatal(err)
	}
	calls = d.Calls()
	if methods(calls) != "NodeUnpublishVolume" || calls[0].Path != target1 {
		t.Errorf("teardown of the first pod: %+v, want only NodeUnpublishVolume of %s", calls, target1)
	}
	if _, err := os.Stat(m.PodDir("uid-1")); !os.IsNotExist(err) {
		t.Errorf("pod dir left: %v", err)
	}
	// The last pod goes: unpublished, then unstaged.
	if err := m.Teardown("uid-2"); err != nil {
		t.Fatal(err)
	}
	calls = d.Calls()
	if methods(calls) != "NodeUnpublishVolume,NodeUnstageVolume" || calls[1].Path != staging {
		t.Errorf("teardown of the last pod: %s", methods(calls))
	}
	if _, err := os.Stat(filepath.Dir(staging)); !os.IsNotExist(err) {
		t.Errorf("staging dir left: %v", err)
	}
	// Teardown again is a no-op.
	if err := m.Teardown("uid-2"); err != nil {
		t.Fatal(err)
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Errorf("second teardown called %s", methods(calls))
	}
}

func TestCSIWithoutStageAndReadOnlyClaim(t *testing.T) {
	st := &storageStore{pvcs: map[string]*corev1.PersistentVolumeClaim{"ns1/data": boundClaim("ns1", "data", "claim-uid", "pv1")},
		pvs: map[string]*corev1.PersistentVolume{"pv1": csiPV("pv1", "fake.csi.dev", "claim-uid")}}
	d := csitest.Start(t, &csitest.Driver{Name: "fake.csi.dev", NodeID: "node-1"})
	c, err := csi.Dial(d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, _, _ := newTest(t, Sources{Storage: st.sources(map[string]*csi.Client{"fake.csi.dev": c})})
	pod := claimPod("uid-1")
	pod.Spec.Volumes[0].VolumeSource.PersistentVolumeClaim.ReadOnly = true
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	calls := d.Calls()
	if methods(calls) != "NodePublishVolume" || calls[0].Staging != "" || !calls[0].ReadOnly {
		t.Fatalf("calls %+v, want one read-only publish with no staging", calls)
	}
	mounts, err := m.Mounts(pod, pod.Spec.Containers[0])
	if err != nil || len(mounts) != 1 || !mounts[0].Readonly {
		t.Fatalf("mounts %v, %v: want read-only", mounts, err)
	}
	if err := m.Teardown("uid-1"); err != nil {
		t.Fatal(err)
	}
	if got := methods(d.Calls()); got != "NodeUnpublishVolume" {
		t.Errorf("teardown: %s", got)
	}
}

func TestClaimErrors(t *testing.T) {
	pending := &corev1.PersistentVolumeClaim{Metadata: &metav1.ObjectMeta{Namespace: "ns1", Name: "data", Uid: "c1"},
		Spec: &corev1.PersistentVolumeClaimSpec{}, Status: &corev1.PersistentVolumeClaimStatus{Phase: "Pending"}}
	st := &storageStore{pvcs: map[string]*corev1.PersistentVolumeClaim{"ns1/data": pending}, pvs: map[string]*corev1.PersistentVolume{}}
	m, _, _ := newTest(t, Sources{Storage: st.sources(nil)})
	pod := claimPod("uid-1")
	err := m.Setup(context.Background(), pod)
	if err == nil || !strings.Contains(err.Error(), `MountVolume.SetUp failed for volume "data" : PVC ns1/data has non-bound phase ("Pending")`) {
		t.Fatalf("unbound claim: %v", err)
	}
	if _, err := m.Mounts(pod, pod.Spec.Containers[0]); err == nil {
		t.Error("Mounts of a pod whose claim is unbound succeeded")
	}

	st.pvcs["ns1/data"] = boundClaim("ns1", "data", "c1", "pv1")
	st.pvs["pv1"] = csiPV("pv1", "missing.csi.dev", "c1")
	if err := m.Setup(context.Background(), pod); err == nil || !strings.Contains(err.Error(), "missing.csi.dev not found in the list of registered CSI drivers") {
		t.Fatalf("unregistered driver: %v", err)
	}
	st.pvs["pv1"] = csiPV("pv1", "missing.csi.dev", "someone-else")
	if err := m.Setup(context.Background(), pod); err == nil || !strings.Contains(err.Error(), "different claim") {
		t.Fatalf("PV bound to another claim: %v", err)
	}
	delete(st.pvcs, "ns1/data")
	if err := m.Setup(context.Background(), pod); err == nil || !strings.Contains(err.Error(), "error processing PVC ns1/data") {
		t.Fatalf("missing claim: %v", err)
	}
}

func TestHostPathClaim(t *testing.T) {
	dir := t.TempDir()
	pv := &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: "pv1"}, Spec: &corev1.PersistentVolumeSpec{
		PersistentVolumeSource: &corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}}}}
	st := &storageStore{pvcs: map[string]*corev1.PersistentVolumeClaim{"ns1/data": boundClaim("ns1", "data", "c1", "pv1")},
		pvs: map[string]*corev1.PersistentVolume{"pv1": pv}}
	m, _, _ := newTest(t, Sources{Storage: st.sources(nil)})
	pod := claimPod("uid-1")
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	mounts, err := m.Mounts(pod, pod.Spec.Containers[0])
	if err != nil || len(mounts) != 1 || mounts[0].HostPath != dir {
		t.Fatalf("mounts %v, %v: want %s", mounts, err, dir)
	}
}
