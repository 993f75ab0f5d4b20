package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"skiff.dev/kubelet/internal/envvars"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// defaultMode is what the apiserver defaults defaultMode to for configMap,
// secret, downwardAPI and projected volumes.
const defaultMode = 0o644

func (m *Manager) setupVolume(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) error {
	uid := pod.GetMetadata().GetUid()
	vs := v.GetVolumeSource()
	switch {
	case vs.GetHostPath() != nil:
		return checkHostPath(vs.GetHostPath())
	case vs.GetPersistentVolumeClaim() != nil:
		return m.setupClaim(ctx, pod, v)
	case vs.GetEmptyDir() != nil || isEmpty(vs):
		ed := vs.GetEmptyDir()
		dir := m.volumeDir(uid, pluginEmptyDir, v.GetName())
		mode := os.FileMode(0o777)
		if ed.GetMode() != 0 {
			mode = os.FileMode(ed.GetMode()) & (os.ModePerm | os.ModeSticky)
		}
		switch ed.GetMedium() {
		case "":
			return m.makeDir(dir, mode, false, 0)
		case "Memory":
			size, err := memoryVolumeSize(pod, ed.GetSizeLimit(), m.src.NodeAllocatable)
			if err != nil {
				return err
			}
			return m.makeDir(dir, mode, true, size)
		default:
			return fmt.Errorf("emptyDir medium %q is not supported", ed.GetMedium())
		}
	case vs.GetConfigMap() != nil:
		src := vs.GetConfigMap()
		dir := m.volumeDir(uid, pluginConfigMap, v.GetName())
		payload, err := m.configMapPayload(pod, src.GetLocalObjectReference().GetName(), src.GetItems(), src.GetOptional(), mode(src.DefaultMode))
		if err != nil {
			return err
		}
		return m.project(dir, false, pod, payload)
	case vs.GetSecret() != nil:
		src := vs.GetSecret()
		dir := m.volumeDir(uid, pluginSecret, v.GetName())
		payload, err := m.secretPayload(pod, src.GetSecretName(), src.GetItems(), src.GetOptional(), mode(src.DefaultMode))
		if err != nil {
			return err
		}
		return m.project(dir, true, pod, payload)
	case vs.GetDownwardAPI() != nil:
		src := vs.GetDownwardAPI()
		dir := m.volumeDir(uid, pluginDownwardAPI, v.GetName())
		payload, err := m.downwardPayload(pod, src.GetItems(), mode(src.DefaultMode))
		if err != nil {
			return err
		}
		return m.project(dir, true, pod, payload)
	case vs.GetProjected() != nil:
		dir := m.volumeDir(uid, pluginProjected, v.GetName())
		payload, err := m.projectedPayload(ctx, pod, v.GetName(), vs.GetProjected())
		if err != nil {
			return err
		}
		return m.project(dir, true, pod, payload)
	}
	return fmt.Errorf("unsupported volume type")
}

func mode(p *int32) os.FileMode {
	if p == nil {
		return defaultMode
	}
	return os.FileMode(*p) & os.ModePerm
}

// makeDir creates a volume directory, on a tmpfs of its own when memory is
// set (mounted once; a later Setup finds it mounted).
func (m *Manager) makeDir(dir string, perm os.FileMode, memory bool, size int64) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if memory {
		mounted, err := isMountPoint(m.mount, dir)
		if err != nil {
			return err
		}
		if !mounted {
			if err := m.mount.MountTmpfs(dir, size); err != nil {
				return err
			}
		}
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st.Mode()&(os.ModePerm|os.ModeSticky) != perm {
		return os.Chmod(dir, perm)
	}
	return nil
}

// project writes payload atomically into dir (a tmpfs when memory).
func (m *Manager) project(dir string, memory bool, pod *corev1.Pod, payload map[string]File) error {
	var size int64
	if memory {
		var err error
		if size, err = memoryVolumeSize(pod, nil, m.src.NodeAllocatable); err != nil {
			return err
		}
	}
	if err := m.makeDir(dir, 0o777, memory, size); err != nil {
		return err
	}
	_, err := writeAtomic(dir, payload)
	return err
}

// memoryVolumeSize is upstream's calculateEmptyDirMemorySize: the node's
// allocatable memory, lowered to the pod's memory limit when every container
// has one, lowered to sizeLimit when that is smaller. 0 means no size option.
func memoryVolumeSize(pod *corev1.Pod, sizeLimit *metav1.Quantity, allocatable map[string]*metav1.Quantity) (int64, error) {
	size, err := bytesOf(allocatable["memory"])
	if err != nil {
		return 0, err
	}
	lower := func(v int64) {
		if v > 0 && (size == 0 || v < size) {
			size = v
		}
	}
	podLimit, err := podMemoryLimit(pod)
	if err != nil {
		return 0, err
	}
	lower(podLimit)
	limit, err := bytesOf(sizeLimit)
	if err != nil {
		return 0, err
	}
	lower(limit)
	return size, nil
}

// podMemoryLimit is the pod cgroup's memory limit: the sum over containers,
// at least the largest init container's, 0 when any container is unlimited.
func podMemoryLimit(pod *corev1.Pod) (int64, error) {
	var sum int64
	for _, c := range pod.GetSpec().GetContainers() {
		v, err := bytesOf(c.GetResources().GetLimits()["memory"])
		if err != nil || v == 0 {
			return 0, err
		}
		sum += v
	}
	for _, c := range pod.GetSpec().GetInitContainers() {
		v, err := bytesOf(c.GetResources().GetLimits()["memory"])
		if err != nil || v == 0 {
			return 0, err
		}
		if c.GetRestartPolicy() == "Always" {
			sum += v // a sidecar runs next to the containers
		} else if v > sum {
			sum = v
		}
	}
	if o := pod.GetSpec().GetOverhead()["memory"]; o != nil && sum > 0 {
		v, err := bytesOf(o)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func bytesOf(q *metav1.Quantity) (int64, error) {
	if q.GetString_() == "" {
		return 0, nil
	}
	v, err := resource.ParseQuantity(q.GetString_())
	if err != nil {
		return 0, fmt.Errorf("invalid quantity %q: %v", q.GetString_(), err)
	}
	return v.Value(), nil
}

// keyPayload maps a ConfigMap's or Secret's data to files: every key, or
// only items (each with its own path and mode), as upstream's MakePayload.
func keyPayload(data map[string][]byte, items []*corev1.KeyToPath, optional bool, def os.FileMode, kind string) (map[string]File, error) {
	payload := map[string]File{}
	if len(items) == 0 {
		for k, v := range data {
			payload[k] = File{Data: v, Mode: def}
		}
		return payload, nil
	}
	for _, it := range items {
		v, ok := data[it.GetKey()]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("%s references non-existent %s key: %s", kind, map[string]string{"configmap": "config", "secret": "secret"}[kind], it.GetKey())
		}
		md := def
		if it.Mode != nil {
			md = os.FileMode(it.GetMode()) & os.ModePerm
		}
		payload[it.GetPath()] = File{Data: v, Mode: md}
	}
	return payload, nil
}

func (m *Manager) configMapPayload(pod *corev1.Pod, name string, items []*corev1.KeyToPath, optional bool, def os.FileMode) (map[string]File, error) {
	cm, err := envvars.GetConfigMap(m.src.ConfigMap, pod.GetMetadata().GetNamespace(), name)
	if err != nil {
		if envvars.IsNotFound(err) && optional {
			return map[string]File{}, nil
		}
		return nil, err
	}
	data := make(map[string][]byte, len(cm.GetData())+len(cm.GetBinaryData()))
	for k, v := range cm.GetData() {
		data[k] = []byte(v)
	}
	for k, v := range cm.GetBinaryData() {
		data[k] = v
	}
	return keyPayload(data, items, optional, def, "configmap")
}

func (m *Manager) secretPayload(pod *corev1.Pod, name string, items []*corev1.KeyToPath, optional bool, def os.FileMode) (map[string]File, error) {
	s, err := envvars.GetSecret(m.src.Secret, pod.GetMetadata().GetNamespace(), name)
	if err != nil {
		if envvars.IsNotFound(err) && optional {
			return map[string]File{}, nil
		}
		return nil, err
	}
	return keyPayload(s.GetData(), items, optional, def, "secret")
}

func (m *Manager) downwardPayload(pod *corev1.Pod, items []*corev1.DownwardAPIVolumeFile, def os.FileMode) (map[string]File, error) {
	payload := map[string]File{}
	var errs []error
	for _, it := range items {
		md := def
		if it.Mode != nil {
			md = os.FileMode(it.GetMode()) & os.ModePerm
		}
		var (
			v   string
			err error
		)
		switch {
		case it.GetFieldRef() != nil:
			v, err = envvars.PodField(pod, it.GetFieldRef().GetFieldPath(), envvars.Sources{})
		case it.GetResourceFieldRef() != nil:
			v, err = envvars.ContainerResource(pod, nil, it.GetResourceFieldRef(), m.src.NodeAllocatable)
		default:
			err = fmt.Errorf("item %q has neither fieldRef nor resourceFieldRef", it.GetPath())
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		payload[it.GetPath()] = File{Data: []byte(v), Mode: md}
	}
	return payload, errors.Join(errs...)
}

func (m *Manager) projectedPayload(ctx context.Context, pod *corev1.Pod, volume string, p *corev1.ProjectedVolumeSource) (map[string]File, error) {
	def := mode(p.DefaultMode)
	payload := map[string]File{}
	var errs []error
	merge := func(part map[string]File, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		for k, v := range part {
			payload[k] = v
		}
	}
	for _, s := range p.GetSources() {
		switch {
		case s.GetConfigMap() != nil:
			c := s.GetConfigMap()
			merge(m.configMapPayload(pod, c.GetLocalObjectReference().GetName(), c.GetItems(), c.GetOptional(), def))
		case s.GetSecret() != nil:
			c := s.GetSecret()
			merge(m.secretPayload(pod, c.GetLocalObjectReference().GetName(), c.GetItems(), c.GetOptional(), def))
		case s.GetDownwardAPI() != nil:
			merge(m.downwardPayload(pod, s.GetDownwardAPI().GetItems(), def))
		case s.GetServiceAccountToken() != nil:
			t := s.GetServiceAccountToken()
			tok, err := m.token(ctx, pod, volume, t)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			payload[t.GetPath()] = File{Data: []byte(tok), Mode: def}
		case s.GetClusterTrustBundle() != nil:
			errs = append(errs, fmt.Errorf("clusterTrustBundle projections are not supported"))
		case s.GetPodCertificate() != nil:
			errs = append(errs, fmt.Errorf("podCertificate projections are not supported"))
		}
	}
	return payload, errors.Join(errs...)
}

type tokenKey struct {
	audience string
	seconds  int64
}

type cachedToken struct {
	token   string
	fetched time.Time
}

// token returns the pod's service account token for a projection, asking
// Sources.Token again once 80% of its lifetime has passed (upstream's token
// manager refreshes at 80% of the TTL, and at least daily).
func (m *Manager) token(ctx context.Context, pod *corev1.Pod, volume string, t *corev1.ServiceAccountTokenProjection) (string, error) {
	if m.src.Token == nil {
		return "", fmt.Errorf("serviceAccountToken projection of volume %q: no token source (volumes.Sources.Token is nil)", volume)
	}
	seconds := t.GetExpirationSeconds()
	if seconds == 0 {
		seconds = 3600
	}
	uid := pod.GetMetadata().GetUid()
	key := tokenKey{t.GetAudience(), seconds}
	refresh := time.Duration(seconds) * time.Second * 8 / 10
	if refresh > 24*time.Hour {
		refresh = 24 * time.Hour
	}
	now := m.now()
	m.mu.Lock()
	c, ok := m.tokens[uid][key]
	m.mu.Unlock()
	if ok && now.Sub(c.fetched) < refresh {
		return c.token, nil
	}
	tok, err := m.src.Token(ctx, pod, t.GetAudience(), seconds)
	if err != nil {
		if ok {
			// Keep serving the old token while it is valid, as upstream.
			if now.Sub(c.fetched) < time.Duration(seconds)*time.Second {
				return c.token, nil
			}
		}
		return "", fmt.Errorf("failed to fetch token: %w", err)
	}
	m.mu.Lock()
	if m.tokens[uid] == nil {
		m.tokens[uid] = map[tokenKey]cachedToken{}
	}
	m.tokens[uid][key] = cachedToken{token: tok, fetched: now}
	m.mu.Unlock()
	return tok, nil
}

// checkHostPath is upstream's hostPath type check, with its messages.
func checkHostPath(hp *corev1.HostPathVolumeSource) error {
	path := hp.GetPath()
	typ := hp.GetType()
	st, statErr := os.Stat(path)
	exists := statErr == nil
	switch typ {
	case "":
		return nil
	case "DirectoryOrCreate":
		if !exists {
			return os.MkdirAll(path, 0o755)
		}
		fallthrough
	case "Directory":
		if !exists || !st.IsDir() {
			return fmt.Errorf("hostPath type check failed: %s is not a directory", path)
		}
	case "FileOrCreate":
		if !exists {
			// As upstream: the file is created, its parent is not.
			f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
		fallthrough
	case "File":
		if !exists || !st.Mode().IsRegular() {
			return fmt.Errorf("hostPath type check failed: %s is not a file", path)
		}
	case "Socket":
		if !exists || st.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("hostPath type check failed: %s is not a socket file", path)
		}
	case "CharDevice":
		if !exists || st.Mode()&os.ModeCharDevice == 0 {
			return fmt.Errorf("hostPath type check failed: %s is not a character device", path)
		}
	case "BlockDevice":
		if !exists || st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
			return fmt.Errorf("hostPath type check failed: %s is not a block device", path)
		}
	default:
		return fmt.Errorf("%s is an invalid volume type", typ)
	}
	return nil
}
