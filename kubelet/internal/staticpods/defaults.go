package staticpods

import (
	"strings"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// setDefaults is upstream's v1 defaulting of a Pod, which the kubelet's
// decoder applies to a manifest as the apiserver does to a created pod: a
// static pod never passes through the apiserver, yet the workers read
// restartPolicy, the grace period, imagePullPolicy and the probe timings
// as if it had. (The apiserver's own copy is internal to its module.)
func setDefaults(pod *corev1.Pod) {
	if pod.Spec == nil {
		pod.Spec = &corev1.PodSpec{}
	}
	s := pod.Spec
	if s.RestartPolicy == "" {
		s.RestartPolicy = "Always"
	}
	if s.DnsPolicy == "" {
		s.DnsPolicy = "ClusterFirst"
	}
	if s.TerminationGracePeriodSeconds == nil {
		s.TerminationGracePeriodSeconds = ptr(int64(30))
	}
	if s.SchedulerName == "" {
		s.SchedulerName = "default-scheduler"
	}
	if s.SecurityContext == nil {
		s.SecurityContext = &corev1.PodSecurityContext{}
	}
	if s.EnableServiceLinks == nil {
		s.EnableServiceLinks = ptr(true)
	}
	if s.ServiceAccountName == "" && s.ServiceAccount != "" {
		s.ServiceAccountName = s.ServiceAccount
	}
	for _, c := range s.InitContainers {
		containerDefaults(c, s.HostNetwork)
	}
	for _, c := range s.Containers {
		containerDefaults(c, s.HostNetwork)
	}
	for _, v := range s.Volumes {
		volumeDefaults(v)
	}
}

func ptr[T any](v T) *T { return &v }

func containerDefaults(c *corev1.Container, hostNetwork bool) {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = imagePullPolicyFor(c.Image)
	}
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = "/dev/termination-log"
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = "File"
	}
	for _, p := range c.Ports {
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		if hostNetwork && p.HostPort == 0 {
			p.HostPort = p.ContainerPort
		}
	}
	for _, e := range c.Env {
		if f := e.GetValueFrom().GetFieldRef(); f != nil && f.ApiVersion == "" {
			f.ApiVersion = "v1"
		}
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		probeDefaults(p)
	}
	if r := c.Resources; r != nil && len(r.Limits) > 0 {
		if r.Requests == nil {
			r.Requests = map[string]*metav1.Quantity{}
		}
		for k, v := range r.Limits {
			if _, ok := r.Requests[k]; !ok {
				r.Requests[k] = &metav1.Quantity{String_: v.GetString_()}
			}
		}
	}
}

func probeDefaults(p *corev1.Probe) {
	if p == nil {
		return
	}
	if p.TimeoutSeconds == 0 {
		p.TimeoutSeconds = 1
	}
	if p.PeriodSeconds == 0 {
		p.PeriodSeconds = 10
	}
	if p.SuccessThreshold == 0 {
		p.SuccessThreshold = 1
	}
	if p.FailureThreshold == 0 {
		p.FailureThreshold = 3
	}
	if h := p.GetHandler().GetHttpGet(); h != nil {
		if h.Path == "" {
			h.Path = "/"
		}
		if h.Scheme == "" {
			h.Scheme = "HTTP"
		}
	}
	if g := p.GetHandler().GetGrpc(); g != nil && g.Service == nil {
		g.Service = ptr("")
	}
}

func volumeDefaults(v *corev1.Volume) {
	src := v.GetVolumeSource()
	if src == nil {
		return
	}
	const mode = int32(0o644)
	if s := src.Secret; s != nil && s.DefaultMode == nil {
		s.DefaultMode = ptr(mode)
	}
	if s := src.ConfigMap; s != nil && s.DefaultMode == nil {
		s.DefaultMode = ptr(mode)
	}
	if s := src.Projected; s != nil && s.DefaultMode == nil {
		s.DefaultMode = ptr(mode)
	}
	if s := src.DownwardAPI; s != nil {
		if s.DefaultMode == nil {
			s.DefaultMode = ptr(mode)
		}
		for _, it := range s.Items {
			if f := it.FieldRef; f != nil && f.ApiVersion == "" {
				f.ApiVersion = "v1"
			}
		}
	}
	if s := src.HostPath; s != nil && s.Type == nil {
		s.Type = ptr("")
	}
}

// imagePullPolicyFor is upstream's rule: Always for ":latest" or an
// untagged image, IfNotPresent otherwise (a digest counts as a tag).
func imagePullPolicyFor(image string) string {
	if strings.Contains(image, "@") {
		return "IfNotPresent"
	}
	name := image
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	tag := ""
	if i := strings.LastIndex(name, ":"); i >= 0 {
		tag = name[i+1:]
	}
	if tag == "" || tag == "latest" {
		return "Always"
	}
	return "IfNotPresent"
}
