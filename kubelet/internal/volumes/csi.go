package volumes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"

	"skiff.dev/kubelet/internal/envvars"
	corev1 "skiff.dev/proto/api/core/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
)

// CSI and persistentVolumeClaim volumes, as upstream's pkg/volume/csi:
//
//   - a pod volume of type persistentVolumeClaim resolves claim → bound PV;
//     a PV of type csi goes through the driver, hostPath and local PVs are
//     their host paths (as hostPath volumes are here; upstream's local
//     plugin bind-mounts the path into the pod's directory first);
//   - a CSI volume is staged once per node when the driver advertises
//     STAGE_UNSTAGE_VOLUME, at
//     <root>/plugins/kubernetes.io/csi/<driver>/<sha256(volumeHandle)>/globalmount,
//     then published into <root>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount;
//     vol_data.json beside each records what Teardown needs, which knows
//     only the pod's UID;
//   - Teardown unpublishes every CSI volume of the pod, and unstages a
//     volume no other pod on the node still publishes.
//
// Inline CSI volumes (a pod's volumes[].csi, ephemeral) are not supported.

const (
	pluginCSI   = "kubernetes.io~csi"
	csiDataFile = "vol_data.json"
)

// CSIClient is what the manager needs of one driver's node service
// (kubelet/internal/csi.Client).
type CSIClient interface {
	StageUnstage(ctx context.Context) (bool, error)
	NodeStageVolume(ctx context.Context, req *csipb.NodeStageVolumeRequest) error
	NodeUnstageVolume(ctx context.Context, volumeID, stagingPath string) error
	NodePublishVolume(ctx context.Context, req *csipb.NodePublishVolumeRequest) error
	NodeUnpublishVolume(ctx context.Context, volumeID, targetPath string) error
}

// StorageSources are where persistent volumes come from: the fields of
// Sources that claims and CSI volumes read.
type StorageSources struct {
	PersistentVolumeClaim func(ns, name string) (*corev1.PersistentVolumeClaim, error)
	PersistentVolume      func(name string) (*corev1.PersistentVolume, error)
	// CSIDriver reads the driver's CSIDriver object; nil, or NotFound,
	// means the defaults, except attachRequired, taken as false: this
	// kubelet has no attach/detach controller to wait for.
	CSIDriver func(name string) (*storagev1.CSIDriver, error)
	// CSI is the node client of a registered driver.
	CSI func(driver string) (CSIClient, error)
}

// csiData is vol_data.json.
type csiData struct {
	DriverName   string `json:"driverName"`
	VolumeHandle string `json:"volumeHandle"`
	SpecVolID    string `json:"specVolID"`
	PodUID       string `json:"podUID,omitempty"`
	ReadOnly     bool   `json:"readOnly,omitempty"`
	StagingPath  string `json:"stagingPath,omitempty"`
}

// claimVolume is where a set-up claim's volume is on the host.
type claimVolume struct {
	path     string
	readOnly bool
}

// csiState is the manager's memory of the pods' claims (so a set-up pod
// costs no API reads per sync) and the lock that orders staging and
// unstaging across pods.
type csiState struct {
	mu     sync.Mutex
	stage  sync.Mutex
	claims map[string]map[string]claimVolume // pod UID → volume name
}

func (s *csiState) get(uid, volume string) (claimVolume, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[uid][volume]
	return c, ok
}

func (s *csiState) set(uid, volume string, c claimVolume) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claims == nil {
		s.claims = map[string]map[string]claimVolume{}
	}
	if s.claims[uid] == nil {
		s.claims[uid] = map[string]claimVolume{}
	}
	s.claims[uid][volume] = c
}

func (s *csiState) forget(uid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.claims, uid)
}

// stagingPath is upstream's device mount path of a CSI volume.
func (m *Manager) stagingPath(driver, handle string) string {
	sum := sha256.Sum256([]byte(handle))
	return filepath.Join(m.root, "plugins", "kubernetes.io", "csi", driver, hex.EncodeToString(sum[:]), "globalmount")
}

// setupClaim sets up a persistentVolumeClaim volume; an unbound claim is an
// error worded as upstream's, so the pod waits in ContainerCreating with a
// FailedMount event and is tried again.
func (m *Manager) setupClaim(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) error {
	uid, ns := pod.GetMetadata().GetUid(), pod.GetMetadata().GetNamespace()
	src := v.GetVolumeSource().GetPersistentVolumeClaim()
	if c, ok := m.csi.get(uid, v.GetName()); ok {
		if _, err := os.Stat(c.path); err == nil {
			if mounted, err := isMountPoint(m.mount, c.path); err == nil && (mounted || !isUnder(c.path, m.PodDir(uid))) {
				return nil
			}
		}
	}
	st := m.src.Storage
	if st.PersistentVolumeClaim == nil || st.PersistentVolume == nil {
		return errors.New("persistentVolumeClaim volumes are not supported on this node")
	}
	name := src.GetClaimName()
	pvc, err := st.PersistentVolumeClaim(ns, name)
	if err != nil {
		return fmt.Errorf("error processing PVC %s/%s: %w", ns, name, err)
	}
	if pvc.GetMetadata().GetDeletionTimestamp() != nil {
		return fmt.Errorf("error processing PVC %s/%s: PVC is being deleted", ns, name)
	}
	if pvc.GetStatus().GetPhase() != "Bound" || pvc.GetSpec().GetVolumeName() == "" {
		return fmt.Errorf("PVC %s/%s has non-bound phase (%q) or empty pvc.Spec.VolumeName (%q)", ns, name, pvc.GetStatus().GetPhase(), pvc.GetSpec().GetVolumeName())
	}
	pvName := pvc.GetSpec().GetVolumeName()
	pv, err := st.PersistentVolume(pvName)
	if err != nil {
		return fmt.Errorf("error processing PVC %s/%s: failed to fetch PV %q from API server: %w", ns, name, pvName, err)
	}
	if ref := pv.GetSpec().GetClaimRef(); ref.GetUid() != "" && ref.GetUid() != pvc.GetMetadata().GetUid() {
		return fmt.Errorf("error processing PVC %s/%s: found PV %q but its claimRef is bound to a different claim (uid %s)", ns, name, pvName, ref.GetUid())
	}
	if pv.GetSpec().GetVolumeMode() == "Block" {
		return fmt.Errorf("PV %q: volumeMode Block is not supported", pvName)
	}
	readOnly := src.GetReadOnly()
	ps := pv.GetSpec().GetPersistentVolumeSource()
	switch {
	case ps.GetCsi() != nil:
		readOnly = readOnly || ps.GetCsi().GetReadOnly()
		target, err := m.setupCSI(ctx, pod, pv, readOnly)
		if err != nil {
			return err
		}
		m.csi.set(uid, v.GetName(), claimVolume{path: target, readOnly: readOnly})
	case ps.GetHostPath() != nil:
		if err := checkHostPath(ps.GetHostPath()); err != nil {
			return err
		}
		m.csi.set(uid, v.GetName(), claimVolume{path: ps.GetHostPath().GetPath(), readOnly: readOnly})
	case ps.GetLocal() != nil:
		p := ps.GetLocal().GetPath()
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("local volume %q: %w", pvName, err)
		}
		m.csi.set(uid, v.GetName(), claimVolume{path: p, readOnly: readOnly})
	default:
		return fmt.Errorf("PV %q: unsupported persistent volume type", pvName)
	}
	return nil
}

func isUnder(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !filepath.IsAbs(rel) && (len(rel) < 3 || rel[:3] != "../")
}

// claimPath is a set-up claim's host path (hostPathOf).
func (m *Manager) claimPath(pod *corev1.Pod, v *corev1.Volume) (string, bool, error) {
	c, ok := m.csi.get(pod.GetMetadata().GetUid(), v.GetName())
	if !ok {
		return "", false, fmt.Errorf("volume %q is not set up", v.GetName())
	}
	return c.path, c.readOnly, nil
}

// accessMode maps the PV's first access mode to the CSI's, as upstream's
// asCSIAccessModeV1.
func accessMode(modes []string) csipb.VolumeCapability_AccessMode_Mode {
	if len(modes) == 0 {
		return csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	}
	switch modes[0] {
	case "ReadOnlyMany":
		return csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	case "ReadWriteMany":
		return csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	case "ReadWriteOncePod":
		return csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	}
	return csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
}

func (m *Manager) csiSecrets(ref *corev1.SecretReference) (map[string]string, error) {
	if ref.GetName() == "" {
		return nil, nil
	}
	s, err := envvars.GetSecret(m.src.Secret, ref.GetNamespace(), ref.GetName())
	if err != nil {
		return nil, fmt.Errorf("fetching secret %s/%s: %w", ref.GetNamespace(), ref.GetName(), err)
	}
	out := map[string]string{}
	for k, v := range s.GetData() {
		out[k] = string(v)
	}
	return out, nil
}

// setupCSI stages (when the driver does) and publishes the PV's volume
// into the pod's directory, and returns the target path. Both calls are
// idempotent at the driver, so a setup interrupted anywhere is simply
// done again.
func (m *Manager) setupCSI(ctx context.Context, pod *corev1.Pod, pv *corev1.PersistentVolume, readOnly bool) (string, error) {
	src := pv.GetSpec().GetPersistentVolumeSource().GetCsi()
	uid, pvName, drv := pod.GetMetadata().GetUid(), pv.GetMetadata().GetName(), src.GetDriver()
	dir := m.volumeDir(uid, pluginCSI, pvName)
	target := filepath.Join(dir, "mount")
	if mounted, err := isMountPoint(m.mount, target); err == nil && mounted {
		if _, err := os.Stat(filepath.Join(dir, csiDataFile)); err == nil {
			return target, nil
		}
	}
	if m.src.Storage.CSI == nil {
		return "", fmt.Errorf("kubernetes.io/csi: no CSI drivers on this node")
	}
	c, err := m.src.Storage.CSI(drv)
	if err != nil {
		return "", fmt.Errorf("kubernetes.io/csi: mounter.SetUpAt failed to get CSI client: %w", err)
	}
	var obj *storagev1.CSIDriver
	if m.src.Storage.CSIDriver != nil {
		obj, err = m.src.Storage.CSIDriver(drv)
		if err != nil && !envvars.IsNotFound(err) {
			return "", fmt.Errorf("kubernetes.io/csi: reading CSIDriver %q: %w", drv, err)
		}
	}
	if spec := obj.GetSpec(); spec != nil && spec.AttachRequired != nil && spec.GetAttachRequired() {
		return "", fmt.Errorf("kubernetes.io/csi: CSI driver %q requires attach (CSIDriver attachRequired), which this kubelet does not support", drv)
	}
	volCtx := map[string]string{}
	for k, v := range src.GetVolumeAttributes() {
		volCtx[k] = v
	}
	if obj.GetSpec().GetPodInfoOnMount() {
		md := pod.GetMetadata()
		sa := pod.GetSpec().GetServiceAccountName()
		if sa == "" {
			sa = "default"
		}
		volCtx["csi.storage.k8s.io/pod.name"] = md.GetName()
		volCtx["csi.storage.k8s.io/pod.namespace"] = md.GetNamespace()
		volCtx["csi.storage.k8s.io/pod.uid"] = md.GetUid()
		volCtx["csi.storage.k8s.io/serviceAccount.name"] = sa
		volCtx["csi.storage.k8s.io/ephemeral"] = "false"
	}
	capability := &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{
			FsType: src.GetFsType(), MountFlags: pv.GetSpec().GetMountOptions()}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: accessMode(pv.GetSpec().GetAccessModes())},
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	m.csi.stage.Lock()
	defer m.csi.stage.Unlock()
	stage, err := c.StageUnstage(ctx)
	if err != nil {
		return "", fmt.Errorf("kubernetes.io/csi: %w", err)
	}
	data := csiData{DriverName: drv, VolumeHandle: src.GetVolumeHandle(), SpecVolID: pvName, PodUID: uid, ReadOnly: readOnly}
	if stage {
		data.StagingPath = m.stagingPath(drv, src.GetVolumeHandle())
		secrets, err := m.csiSecrets(src.GetNodeStageSecretRef())
		if err != nil {
			return "", fmt.Errorf("kubernetes.io/csi: attacher.MountDevice failed: %w", err)
		}
		if err := os.MkdirAll(data.StagingPath, 0o750); err != nil {
			return "", err
		}
		if err := writeCSIData(filepath.Dir(data.StagingPath), data); err != nil {
			return "", err
		}
		if err := c.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: src.GetVolumeHandle(),
			StagingTargetPath: data.StagingPath, VolumeCapability: capability, Secrets: secrets, VolumeContext: volCtx}); err != nil {
			return "", fmt.Errorf("kubernetes.io/csi: attacher.MountDevice failed: %w", err)
		}
	}
	secrets, err := m.csiSecrets(src.GetNodePublishSecretRef())
	if err != nil {
		return "", fmt.Errorf("kubernetes.io/csi: mounter.SetUpAt failed: %w", err)
	}
	// The CO makes the target's parent, the driver the target (CSI spec).
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	if err := writeCSIData(dir, data); err != nil {
		return "", err
	}
	if err := c.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: src.GetVolumeHandle(),
		StagingTargetPath: data.StagingPath, TargetPath: target, VolumeCapability: capability, Readonly: readOnly,
		Secrets: secrets, VolumeContext: volCtx}); err != nil {
		return "", fmt.Errorf("kubernetes.io/csi: mounter.SetUpAt failed: %w", err)
	}
	return target, nil
}

func writeCSIData(dir string, d csiData) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+csiDataFile)
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, csiDataFile))
}

func readCSIData(dir string) (csiData, error) {
	var d csiData
	b, err := os.ReadFile(filepath.Join(dir, csiDataFile))
	if err != nil {
		return d, err
	}
	return d, json.Unmarshal(b, &d)
}

// teardownCSI unpublishes every CSI volume of the pod (and unstages those
// no other pod publishes). A volume whose driver is not registered makes
// it fail, so the pod's directory stays until the driver is back, as
// upstream's.
func (m *Manager) teardownCSI(uid string) error {
	defer m.csi.forget(uid)
	base := filepath.Join(m.PodDir(uid), "volumes", pluginCSI)
	ents, err := os.ReadDir(base)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m.csi.stage.Lock()
	defer m.csi.stage.Unlock()
	var errs []error
	for _, e := range ents {
		dir := filepath.Join(base, e.Name())
		data, err := readCSIData(dir)
		if os.IsNotExist(err) {
			continue // never published; the generic teardown removes it
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", e.Name(), err))
			continue
		}
		if err := m.unpublish(ctx, dir, data); err != nil {
			errs = append(errs, fmt.Errorf("UnmountVolume.TearDown failed for volume %q : %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) unpublish(ctx context.Context, dir string, data csiData) error {
	if m.src.Storage.CSI == nil {
		return fmt.Errorf("kubernetes.io/csi: no CSI drivers on this node")
	}
	c, err := m.src.Storage.CSI(data.DriverName)
	if err != nil {
		return fmt.Errorf("kubernetes.io/csi: Unmounter.TearDownAt failed to get CSI client: %w", err)
	}
	target := filepath.Join(dir, "mount")
	if err := c.NodeUnpublishVolume(ctx, data.VolumeHandle, target); err != nil {
		return fmt.Errorf("kubernetes.io/csi: Unmounter.TearDownAt failed: %w", err)
	}
	if mounted, err := isMountPoint(m.mount, target); err != nil {
		return err
	} else if mounted {
		return fmt.Errorf("kubernetes.io/csi: %s is still mounted after NodeUnpublishVolume", target)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if data.StagingPath == "" || m.published(data) {
		return nil
	}
	if err := c.NodeUnstageVolume(ctx, data.VolumeHandle, data.StagingPath); err != nil {
		return fmt.Errorf("kubernetes.io/csi: attacher.UnmountDevice failed: %w", err)
	}
	if mounted, err := isMountPoint(m.mount, data.StagingPath); err == nil && !mounted {
		_ = os.RemoveAll(filepath.Dir(data.StagingPath))
	}
	return nil
}

// published says whether any pod on the node still has the volume
// published (a vol_data.json naming it).
func (m *Manager) published(data csiData) bool {
	dirs, _ := filepath.Glob(filepath.Join(m.root, "pods", "*", "volumes", pluginCSI, "*"))
	for _, d := range dirs {
		o, err := readCSIData(d)
		if err == nil && o.DriverName == data.DriverName && o.VolumeHandle == data.VolumeHandle {
			return true
		}
	}
	return false
}
