package kuberuntime

import (
	"fmt"
	"path/filepath"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	corev1 "skiff.dev/proto/api/core/v1"
)

// PodLogDir is where the runtime writes a pod's container logs, as
// upstream's BuildPodLogsDirectory.
func PodLogDir(root string, pod *corev1.Pod) string {
	md := pod.GetMetadata()
	return filepath.Join(root, md.GetNamespace()+"_"+md.GetName()+"_"+md.GetUid())
}

// ContainerLogPath is a container's log file relative to PodLogDir.
func ContainerLogPath(name string, restartCount int) string {
	return filepath.Join(name, fmt.Sprintf("%d.log", restartCount))
}

// Hostname is the pod's hostname as upstream's GeneratePodHostNameAndDomain
// has it: spec.hostname, else the pod's name, cut to 63 characters.
func Hostname(pod *corev1.Pod) string {
	h := pod.GetMetadata().GetName()
	if s := pod.GetSpec().GetHostname(); s != "" {
		h = s
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// SandboxConfig is the pod's PodSandboxConfig for attempt.
func (m *Manager) SandboxConfig(pod *corev1.Pod, attempt uint32) (*runtimeapi.PodSandboxConfig, error) {
	md, spec := pod.GetMetadata(), pod.GetSpec()
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{
			Name: md.GetName(), Namespace: md.GetNamespace(), Uid: md.GetUid(), Attempt: attempt,
		},
		LogDirectory: PodLogDir(m.o.PodLogsDir, pod),
		Labels:       sandboxLabels(pod),
		Annotations:  sandboxAnnotations(pod),
	}
	if !spec.GetHostNetwork() {
		cfg.Hostname = Hostname(pod)
	}
	if m.o.DNS != nil {
		dns, err := m.o.DNS(pod)
		if err != nil {
			return nil, err
		}
		cfg.DnsConfig = dns
	}
	cfg.PortMappings = portMappings(pod)
	linux := &runtimeapi.LinuxPodSandboxConfig{
		SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: namespaceOptions(pod),
			Privileged:       anyPrivileged(pod),
		},
	}
	if m.o.CgroupParent != nil {
		linux.CgroupParent = m.o.CgroupParent(pod)
	}
	if sc := spec.GetSecurityContext(); sc != nil {
		if sc.RunAsUser != nil {
			linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: *sc.RunAsUser}
		}
		if sc.RunAsGroup != nil {
			linux.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: *sc.RunAsGroup}
		}
		linux.SecurityContext.SupplementalGroups = append(linux.SecurityContext.SupplementalGroups, sc.GetSupplementalGroups()...)
		if sc.FsGroup != nil {
			linux.SecurityContext.SupplementalGroups = append(linux.SecurityContext.SupplementalGroups, *sc.FsGroup)
		}
		if len(sc.GetSysctls()) > 0 {
			linux.Sysctls = map[string]string{}
			for _, s := range sc.GetSysctls() {
				linux.Sysctls[s.GetName()] = s.GetValue()
			}
		}
	}
	cfg.Linux = linux
	return cfg, nil
}

func namespaceOptions(pod *corev1.Pod) *runtimeapi.NamespaceOption {
	spec := pod.GetSpec()
	ns := &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_POD,
		Pid:     runtimeapi.NamespaceMode_CONTAINER,
		Ipc:     runtimeapi.NamespaceMode_POD,
	}
	if spec.GetHostNetwork() {
		ns.Network = runtimeapi.NamespaceMode_NODE
	}
	if spec.GetHostIPC() {
		ns.Ipc = runtimeapi.NamespaceMode_NODE
	}
	switch {
	case spec.GetHostPID():
		ns.Pid = runtimeapi.NamespaceMode_NODE
	case spec.GetShareProcessNamespace():
		ns.Pid = runtimeapi.NamespaceMode_POD
	}
	return ns
}

func anyPrivileged(pod *corev1.Pod) bool {
	for _, c := range allContainers(pod) {
		if c.GetSecurityContext().GetPrivileged() {
			return true
		}
	}
	return false
}

func allContainers(pod *corev1.Pod) []*corev1.Container {
	return append(append([]*corev1.Container(nil), pod.GetSpec().GetInitContainers()...), pod.GetSpec().GetContainers()...)
}

// portMappings are the hostPorts the CNI portmap plugin maps.
func portMappings(pod *corev1.Pod) []*runtimeapi.PortMapping {
	var out []*runtimeapi.PortMapping
	for _, c := range allContainers(pod) {
		for _, p := range c.GetPorts() {
			if p.GetHostPort() <= 0 {
				continue
			}
			proto := runtimeapi.Protocol_TCP
			switch p.GetProtocol() {
			case "UDP":
				proto = runtimeapi.Protocol_UDP
			case "SCTP":
				proto = runtimeapi.Protocol_SCTP
			}
			out = append(out, &runtimeapi.PortMapping{
				Protocol: proto, ContainerPort: p.GetContainerPort(), HostPort: p.GetHostPort(), HostIp: p.GetHostIP(),
			})
		}
	}
	return out
}

// configError is a failure to build a container's configuration (env from
// a missing ConfigMap, a volume not set up): CreateContainerConfigError.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

// ContainerConfig is c's ContainerConfig for its restartCount-th run.
func (m *Manager) ContainerConfig(pod *corev1.Pod, c *corev1.Container, imageRef string, restartCount int, podIPs []string) (*runtimeapi.ContainerConfig, error) {
	var env []*runtimeapi.KeyValue
	if m.o.Env != nil {
		var err error
		if env, err = m.o.Env(pod, c); err != nil {
			return nil, configError{err}
		}
	} else {
		for _, e := range c.GetEnv() {
			if e.GetValueFrom() == nil {
				env = append(env, &runtimeapi.KeyValue{Key: e.GetName(), Value: []byte(e.GetValue())})
			}
		}
	}
	cmd, args := c.GetCommand(), c.GetArgs()
	if m.o.Command != nil {
		cmd, args = m.o.Command(c, env)
	}
	var mounts []*runtimeapi.Mount
	if m.o.Mounts != nil {
		var err error
		if mounts, err = m.o.Mounts(pod, c); err != nil {
			return nil, configError{err}
		}
	}
	cfg := &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: c.GetName(), Attempt: uint32(restartCount)},
		Image:       &runtimeapi.ImageSpec{Image: imageRef, UserSpecifiedImage: c.GetImage()},
		Command:     cmd,
		Args:        args,
		WorkingDir:  c.GetWorkingDir(),
		Labels:      containerLabels(pod, c),
		Annotations: containerAnnotations(pod, c, restartCount),
		Mounts:      mounts,
		Envs:        env,
		LogPath:     ContainerLogPath(c.GetName(), restartCount),
		Stdin:       c.GetStdin(),
		StdinOnce:   c.GetStdinOnce(),
		Tty:         c.GetTty(),
	}
	linux := &runtimeapi.LinuxContainerConfig{SecurityContext: containerSecurity(pod, c)}
	if m.o.Resources != nil {
		linux.Resources = m.o.Resources(pod, c)
	}
	cfg.Linux = linux
	return cfg, nil
}

func containerSecurity(pod *corev1.Pod, c *corev1.Container) *runtimeapi.LinuxContainerSecurityContext {
	sc := &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: namespaceOptions(pod)}
	psc, csc := pod.GetSpec().GetSecurityContext(), c.GetSecurityContext()
	if psc != nil {
		if v := psc.RunAsUser; v != nil {
			sc.RunAsUser = &runtimeapi.Int64Value{Value: *v}
		}
		if v := psc.RunAsGroup; v != nil {
			sc.RunAsGroup = &runtimeapi.Int64Value{Value: *v}
		}
		sc.SupplementalGroups = append(sc.SupplementalGroups, psc.GetSupplementalGroups()...)
		if psc.FsGroup != nil {
			sc.SupplementalGroups = append(sc.SupplementalGroups, *psc.FsGroup)
		}
	}
	if csc != nil {
		if csc.RunAsUser != nil {
			sc.RunAsUser = &runtimeapi.Int64Value{Value: *csc.RunAsUser}
		}
		if csc.RunAsGroup != nil {
			sc.RunAsGroup = &runtimeapi.Int64Value{Value: *csc.RunAsGroup}
		}
		sc.Privileged = csc.GetPrivileged()
		sc.ReadonlyRootfs = csc.GetReadOnlyRootFilesystem()
		if csc.AllowPrivilegeEscalation != nil {
			sc.NoNewPrivs = !*csc.AllowPrivilegeEscalation
		}
		if caps := csc.GetCapabilities(); caps != nil {
			sc.Capabilities = &runtimeapi.Capability{AddCapabilities: caps.GetAdd(), DropCapabilities: caps.GetDrop()}
		}
	}
	return sc
}
