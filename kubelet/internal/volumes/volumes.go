// Package volumes sets up a pod's volumes under the kubelet's root directory
// as upstream's in-tree plugins do (pkg/volume/emptydir, hostpath,
// configmap, secret, downwardapi, projected), hands the runtime the mounts of
// each container (subPath, readOnly, propagation), and undoes all of it when
// the pod is gone.
//
// Layout, as upstream: <root>/pods/<uid>/volumes/<plugin>/<volume>, plugin
// one of kubernetes.io~empty-dir, ~configmap, ~secret, ~downward-api,
// ~projected (hostPath volumes are the host's own paths). Secrets, downward
// API and projected volumes, and emptyDir with medium Memory, are tmpfs
// mounts; configMaps and other emptyDirs are on the root's disk. File
// contents go through the atomic ..data writer, so calling Setup again
// (every pod sync) updates configMap, secret and token contents in place.
package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Sources is what volume contents come from.
type Sources struct {
	// ConfigMap and Secret read objects; nil means none exist.
	ConfigMap func(ns, name string) (*corev1.ConfigMap, error)
	Secret    func(ns, name string) (*corev1.Secret, error)
	// Token issues a token for the pod's service account bound to the pod
	// (TokenRequest); audience "" means the apiserver's own. nil makes every
	// serviceAccountToken projection fail with an error saying so. Tokens
	// are cached and asked for again after 80% of their lifetime.
	Token func(ctx context.Context, pod *corev1.Pod, audience string, expirationSeconds int64) (string, error)
	// Env returns a container's environment, needed for subPathExpr; nil
	// makes a subPathExpr an error.
	Env func(pod *corev1.Pod, c *corev1.Container) ([]*runtimeapi.KeyValue, error)
	// NodeAllocatable stands in for unset limits in downward API
	// resourceFieldRefs, and bounds the size of memory-backed volumes.
	NodeAllocatable map[string]*metav1.Quantity
	// Now is the clock of the token cache; nil is time.Now.
	Now func() time.Time
	// Storage serves persistentVolumeClaim and CSI volumes (csi.go).
	Storage StorageSources
}

// Upstream's plugin directory names.
const (
	pluginEmptyDir    = "kubernetes.io~empty-dir"
	pluginConfigMap   = "kubernetes.io~configmap"
	pluginSecret      = "kubernetes.io~secret"
	pluginDownwardAPI = "kubernetes.io~downward-api"
	pluginProjected   = "kubernetes.io~projected"
)

// Manager sets up and tears down the volumes of the node's pods.
type Manager struct {
	root  string
	src   Sources
	mount mounter

	mu     sync.Mutex
	locks  map[string]*sync.Mutex // per pod UID: Setup, Mounts and Teardown of one pod never overlap
	tokens map[string]map[tokenKey]cachedToken
	csi    csiState
}

// New returns a manager for the kubelet root directory root (--root-dir).
func New(root string, src Sources) *Manager {
	return &Manager{root: root, src: src, mount: sysMounter{}, locks: map[string]*sync.Mutex{}, tokens: map[string]map[tokenKey]cachedToken{}}
}

// NewWithoutMounts is New with tmpfs volumes (secrets, memory emptyDirs)
// kept as plain directories and nothing mounted: for hollow nodes.
func NewWithoutMounts(root string, src Sources) *Manager {
	m := New(root, src)
	m.mount = dirMounter{}
	return m
}

func (m *Manager) lock(uid string) func() {
	m.mu.Lock()
	l, ok := m.locks[uid]
	if !ok {
		l = &sync.Mutex{}
		m.locks[uid] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (m *Manager) now() time.Time {
	if m.src.Now != nil {
		return m.src.Now()
	}
	return time.Now()
}

// PodDir is <root>/pods/<uid>.
func (m *Manager) PodDir(uid string) string { return filepath.Join(m.root, "pods", uid) }

func (m *Manager) volumeDir(uid, plugin, name string) string {
	return filepath.Join(m.PodDir(uid), "volumes", plugin, name)
}

// Setup makes every volume of the pod ready, or refreshes its contents when
// it already is. Each failing volume contributes a line worded as upstream's
// FailedMount events (`MountVolume.SetUp failed for volume "x" : ...`); the
// other volumes are still set up.
func (m *Manager) Setup(ctx context.Context, pod *corev1.Pod) error {
	uid := pod.GetMetadata().GetUid()
	if uid == "" {
		return fmt.Errorf("pod %q has no uid", pod.GetMetadata().GetName())
	}
	defer m.lock(uid)()
	var errs []error
	for _, v := range pod.GetSpec().GetVolumes() {
		if err := m.setupVolume(ctx, pod, v); err != nil {
			errs = append(errs, fmt.Errorf("MountVolume.SetUp failed for volume %q : %w", v.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// hostPathOf returns where a set-up volume lives on the host, and whether
// the runtime must mount it read-only whatever the volumeMount says (the
// secret, configMap, downward API and projected volumes are, as upstream).
func (m *Manager) hostPathOf(pod *corev1.Pod, v *corev1.Volume) (path string, readOnly bool, err error) {
	uid := pod.GetMetadata().GetUid()
	vs := v.GetVolumeSource()
	switch {
	case vs.GetHostPath() != nil:
		return vs.GetHostPath().GetPath(), false, nil
	case vs.GetPersistentVolumeClaim() != nil:
		return m.claimPath(pod, v)
	case vs.GetConfigMap() != nil:
		path, readOnly = m.volumeDir(uid, pluginConfigMap, v.GetName()), true
	case vs.GetSecret() != nil:
		path, readOnly = m.volumeDir(uid, pluginSecret, v.GetName()), true
	case vs.GetDownwardAPI() != nil:
		path, readOnly = m.volumeDir(uid, pluginDownwardAPI, v.GetName()), true
	case vs.GetProjected() != nil:
		path, readOnly = m.volumeDir(uid, pluginProjected, v.GetName()), true
	case vs.GetEmptyDir() != nil || isEmpty(vs):
		path = m.volumeDir(uid, pluginEmptyDir, v.GetName())
	default:
		return "", false, fmt.Errorf("volume %q: unsupported volume type", v.GetName())
	}
	if _, err := os.Stat(path); err != nil {
		return "", false, fmt.Errorf("volume %q is not set up: %v", v.GetName(), err)
	}
	return path, readOnly, nil
}

// isEmpty: a volume with no source is an emptyDir (deprecated upstream
// behaviour, still honoured).
func isEmpty(vs *corev1.VolumeSource) bool { return vs == nil || proto.Size(vs) == 0 }

// Teardown unmounts everything mounted under the pod's directory and removes
// the directory. It refuses to remove anything while a mount remains.
func (m *Manager) Teardown(podUID string) error {
	if podUID == "" {
		return fmt.Errorf("teardown: empty pod uid")
	}
	unlock := m.lock(podUID)
	defer func() {
		unlock()
		m.mu.Lock()
		delete(m.locks, podUID)
		delete(m.tokens, podUID)
		m.mu.Unlock()
	}()
	dir := m.PodDir(podUID)
	if _, err := os.Lstat(dir); os.IsNotExist(err) {
		return nil
	}
	if err := m.teardownCSI(podUID); err != nil {
		return err
	}
	mps, err := m.mount.MountPoints(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		if err := m.mount.Unmount(mp); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if left, err := m.mount.MountPoints(dir); err != nil {
		return err
	} else if len(left) > 0 {
		return fmt.Errorf("teardown of pod %s: still mounted: %v", podUID, left)
	}
	return os.RemoveAll(dir)
}
