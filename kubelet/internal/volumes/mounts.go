package volumes

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/kubelet/internal/envvars"
	corev1 "skiff.dev/proto/api/core/v1"
)

// EtcHostsFile is the name of the pod's managed hosts file in its directory
// (written by the pod worker); Mounts mounts it on /etc/hosts when present.
const EtcHostsFile = "etc-hosts"

// Mounts returns the runtime mounts of container c: one per volumeMount
// (subPath and subPathExpr resolved inside the volume, read-only where the
// mount or the volume type says so, propagation translated), and
// <pod dir>/etc-hosts on /etc/hosts when that file exists and the container
// mounts nothing there itself. Setup must have succeeded first.
func (m *Manager) Mounts(pod *corev1.Pod, c *corev1.Container) ([]*runtimeapi.Mount, error) {
	uid := pod.GetMetadata().GetUid()
	defer m.lock(uid)()

	volumes := map[string]*corev1.Volume{}
	for _, v := range pod.GetSpec().GetVolumes() {
		volumes[v.GetName()] = v
	}
	var (
		env     []*runtimeapi.KeyValue
		envDone bool
		out     []*runtimeapi.Mount
		hasEtc  bool
	)
	for _, vm := range c.GetVolumeMounts() {
		v, ok := volumes[vm.GetName()]
		if !ok {
			return nil, fmt.Errorf("cannot find volume %q to mount into container %q", vm.GetName(), c.GetName())
		}
		hostPath, volReadOnly, err := m.hostPathOf(pod, v)
		if err != nil {
			return nil, err
		}
		subPath := vm.GetSubPath()
		if expr := vm.GetSubPathExpr(); expr != "" {
			if !envDone {
				if m.src.Env == nil {
					return nil, fmt.Errorf("volumeMount %q of container %q: subPathExpr needs the container's environment (volumes.Sources.Env is nil)", vm.GetName(), c.GetName())
				}
				if env, err = m.src.Env(pod, c); err != nil {
					return nil, err
				}
				envDone = true
			}
			if subPath, err = envvars.SubPathExpr(expr, env); err != nil {
				return nil, err
			}
		}
		if subPath != "" {
			if hostPath, err = resolveSubPath(hostPath, subPath, vm.GetName(), c.GetName()); err != nil {
				return nil, err
			}
		}
		prop, err := propagation(vm.MountPropagation, c)
		if err != nil {
			return nil, err
		}
		if filepath.Clean(vm.GetMountPath()) == "/etc/hosts" {
			hasEtc = true
		}
		out = append(out, &runtimeapi.Mount{
			ContainerPath: vm.GetMountPath(),
			HostPath:      hostPath,
			Readonly:      vm.GetReadOnly() || volReadOnly,
			Propagation:   prop,
		})
	}
	if !hasEtc {
		hosts := filepath.Join(m.PodDir(uid), EtcHostsFile)
		if _, err := os.Stat(hosts); err == nil {
			out = append(out, &runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: hosts})
		}
	}
	return out, nil
}

// resolveSubPath returns the host path of subPath inside the volume at
// volume, creating it as a directory (with the volume's mode) when missing,
// as upstream. Symlinks are followed as the runtime would follow them, and
// a path that ends outside the volume is refused; the resolved path is what
// the runtime gets, so a link swapped afterwards does not redirect it.
func resolveSubPath(volume, subPath, mountName, container string) (string, error) {
	if filepath.IsAbs(subPath) {
		return "", fmt.Errorf("error SubPath `%s` must not be an absolute path", subPath)
	}
	for _, part := range strings.Split(filepath.ToSlash(subPath), "/") {
		if part == ".." {
			return "", fmt.Errorf("unable to provision SubPath `%s`: must not contain '..'", subPath)
		}
	}
	base, err := filepath.EvalSymlinks(volume)
	if err != nil {
		return "", err
	}
	inside := func(p string) bool { return p == base || strings.HasPrefix(p, base+string(os.PathSeparator)) }

	full := filepath.Join(volume, subPath)
	if _, err := os.Lstat(full); os.IsNotExist(err) {
		if err := safeMkdirAll(base, subPath); err != nil {
			// As upstream, the detail stays in the kubelet: it could tell
			// about the host's filesystem.
			return "", fmt.Errorf("failed to create subPath directory for volumeMount %q of container %q", mountName, container)
		}
	}
	resolved, err := filepath.EvalSymlinks(full)
	if err != nil {
		return "", fmt.Errorf("failed to prepare subPath for volumeMount %q of container %q", mountName, container)
	}
	if !inside(resolved) {
		return "", fmt.Errorf("subpath %q not within volume path %q", resolved, base)
	}
	return resolved, nil
}

// safeMkdirAll creates the missing directories of sub below base, one
// component at a time, refusing to step through a symlink that leads out of
// base.
func safeMkdirAll(base, sub string) error {
	st, err := os.Stat(base)
	if err != nil {
		return err
	}
	perm := st.Mode().Perm()
	cur := base
	for _, part := range strings.Split(filepath.Clean(sub), string(os.PathSeparator)) {
		if part == "" || part == "." {
			continue
		}
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(next)
		switch {
		case os.IsNotExist(err):
			if err := os.Mkdir(next, perm); err != nil {
				return err
			}
			if err := os.Chmod(next, perm); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&os.ModeSymlink != 0:
			r, err := filepath.EvalSymlinks(next)
			if err != nil {
				return err
			}
			if r != base && !strings.HasPrefix(r, base+string(os.PathSeparator)) {
				return fmt.Errorf("%s leads out of the volume", next)
			}
			next = r
		}
		cur = next
	}
	return nil
}

// propagation translates a volumeMount's mountPropagation as upstream:
// none/nil private, HostToContainer rslave, Bidirectional rshared (only for
// privileged containers).
func propagation(p *string, c *corev1.Container) (runtimeapi.MountPropagation, error) {
	switch {
	case p == nil || *p == "None":
		return runtimeapi.MountPropagation_PROPAGATION_PRIVATE, nil
	case *p == "HostToContainer":
		return runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER, nil
	case *p == "Bidirectional":
		if !c.GetSecurityContext().GetPrivileged() {
			return 0, fmt.Errorf("mount propagation Bidirectional is only allowed for privileged containers")
		}
		return runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL, nil
	}
	return 0, fmt.Errorf("invalid MountPropagation mode: %q", *p)
}
