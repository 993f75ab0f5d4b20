// Package defaults sets upstream's default values on objects before they are
// validated and stored (k8s.io/kubernetes pkg/apis/*/v1/defaults.go), so that
// `get -o yaml` shows what upstream would show for the same manifest.
package defaults

import (
	"math"
	"strings"

	"google.golang.org/protobuf/proto"

	appsv1 "skiff.dev/proto/api/apps/v1"
	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	rbacv1 "skiff.dev/proto/api/rbac/v1"
	schedulingv1 "skiff.dev/proto/api/scheduling/v1"
)

func ptr[T any](v T) *T { return &v }

// Apply sets defaults in place; applying twice is the same as once.
func Apply(obj proto.Message) {
	switch o := obj.(type) {
	case *corev1.Pod:
		if o.Spec == nil {
			o.Spec = &corev1.PodSpec{}
		}
		podSpec(o.Spec)
	case *corev1.ReplicationController:
		if s := o.Spec; s != nil {
			if s.Replicas == nil {
				s.Replicas = ptr(int32(1))
			}
			template(s.Template)
		}
	case *appsv1.Deployment:
		deployment(o)
	case *appsv1.ReplicaSet:
		if s := o.Spec; s != nil {
			if s.Replicas == nil {
				s.Replicas = ptr(int32(1))
			}
			template(s.Template)
		}
	case *appsv1.StatefulSet:
		statefulSet(o)
	case *appsv1.DaemonSet:
		daemonSet(o)
	case *batchv1.Job:
		if o.Spec != nil {
			jobSpec(o.Spec)
		}
	case *batchv1.CronJob:
		cronJob(o)
	case *corev1.Service:
		service(o)
	case *corev1.Secret:
		if o.Type == "" {
			o.Type = "Opaque"
		}
	case *corev1.Namespace:
		if o.Spec == nil {
			o.Spec = &corev1.NamespaceSpec{}
		}
		if o.Spec.Finalizers == nil && o.GetMetadata().GetDeletionTimestamp() == nil {
			o.Spec.Finalizers = []string{"kubernetes"}
		}
	case *corev1.PersistentVolume:
		if s := o.Spec; s != nil {
			if s.PersistentVolumeReclaimPolicy == "" {
				s.PersistentVolumeReclaimPolicy = "Retain"
			}
			if s.VolumeMode == nil {
				s.VolumeMode = ptr("Filesystem")
			}
		}
	case *corev1.PersistentVolumeClaim:
		if s := o.Spec; s != nil && s.VolumeMode == nil {
			s.VolumeMode = ptr("Filesystem")
		}
	case *corev1.Endpoints:
		for _, ss := range o.Subsets {
			for _, p := range ss.Ports {
				if p.Protocol == "" {
					p.Protocol = "TCP"
				}
			}
		}
	case *discoveryv1.EndpointSlice:
		for _, p := range o.Ports {
			if p.Protocol == nil {
				p.Protocol = ptr("TCP")
			}
		}
	case *autoscalingv2.HorizontalPodAutoscaler:
		if s := o.Spec; s != nil && s.MinReplicas == nil {
			s.MinReplicas = ptr(int32(1))
		}
	case *schedulingv1.PriorityClass:
		if o.PreemptionPolicy == nil {
			o.PreemptionPolicy = ptr("PreemptLowerPriority")
		}
	case *rbacv1.RoleBinding:
		subjects(o.Subjects)
	case *rbacv1.ClusterRoleBinding:
		subjects(o.Subjects)
	}
}

func subjects(ss []*rbacv1.Subject) {
	for _, s := range ss {
		if s.ApiGroup == "" && (s.Kind == "User" || s.Kind == "Group") {
			s.ApiGroup = "rbac.authorization.k8s.io"
		}
	}
}

func template(t *corev1.PodTemplateSpec) {
	if t == nil {
		return
	}
	if t.Spec == nil {
		t.Spec = &corev1.PodSpec{}
	}
	podSpec(t.Spec)
}

func deployment(d *appsv1.Deployment) {
	s := d.Spec
	if s == nil {
		return
	}
	if s.Replicas == nil {
		s.Replicas = ptr(int32(1))
	}
	if s.Strategy == nil {
		s.Strategy = &appsv1.DeploymentStrategy{}
	}
	if s.Strategy.Type == "" {
		s.Strategy.Type = "RollingUpdate"
	}
	if s.Strategy.Type == "RollingUpdate" {
		if s.Strategy.RollingUpdate == nil {
			s.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		if s.Strategy.RollingUpdate.MaxUnavailable == nil {
			s.Strategy.RollingUpdate.MaxUnavailable = metav1.IntOrStringFromString("25%")
		}
		if s.Strategy.RollingUpdate.MaxSurge == nil {
			s.Strategy.RollingUpdate.MaxSurge = metav1.IntOrStringFromString("25%")
		}
	}
	if s.RevisionHistoryLimit == nil {
		s.RevisionHistoryLimit = ptr(int32(10))
	}
	if s.ProgressDeadlineSeconds == nil {
		s.ProgressDeadlineSeconds = ptr(int32(600))
	}
	template(s.Template)
}

func statefulSet(ss *appsv1.StatefulSet) {
	s := ss.Spec
	if s == nil {
		return
	}
	if s.Replicas == nil {
		s.Replicas = ptr(int32(1))
	}
	if s.PodManagementPolicy == "" {
		s.PodManagementPolicy = "OrderedReady"
	}
	if s.UpdateStrategy == nil {
		s.UpdateStrategy = &appsv1.StatefulSetUpdateStrategy{}
	}
	if s.UpdateStrategy.Type == "" {
		s.UpdateStrategy.Type = "RollingUpdate"
	}
	if s.UpdateStrategy.Type == "RollingUpdate" {
		if s.UpdateStrategy.RollingUpdate == nil {
			s.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{}
		}
		if s.UpdateStrategy.RollingUpdate.Partition == nil {
			s.UpdateStrategy.RollingUpdate.Partition = ptr(int32(0))
		}
	}
	if s.RevisionHistoryLimit == nil {
		s.RevisionHistoryLimit = ptr(int32(10))
	}
	if s.PersistentVolumeClaimRetentionPolicy == nil {
		s.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{}
	}
	if p := s.PersistentVolumeClaimRetentionPolicy; p.WhenDeleted == "" {
		p.WhenDeleted = "Retain"
	}
	if p := s.PersistentVolumeClaimRetentionPolicy; p.WhenScaled == "" {
		p.WhenScaled = "Retain"
	}
	for _, pvc := range s.VolumeClaimTemplates {
		if pvc.Spec != nil && pvc.Spec.VolumeMode == nil {
			pvc.Spec.VolumeMode = ptr("Filesystem")
		}
		if pvc.Status == nil {
			pvc.Status = &corev1.PersistentVolumeClaimStatus{Phase: "Pending"}
		}
	}
	template(s.Template)
}

func daemonSet(ds *appsv1.DaemonSet) {
	s := ds.Spec
	if s == nil {
		return
	}
	if s.UpdateStrategy == nil {
		s.UpdateStrategy = &appsv1.DaemonSetUpdateStrategy{}
	}
	if s.UpdateStrategy.Type == "" {
		s.UpdateStrategy.Type = "RollingUpdate"
	}
	if s.UpdateStrategy.Type == "RollingUpdate" {
		if s.UpdateStrategy.RollingUpdate == nil {
			s.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateDaemonSet{}
		}
		if s.UpdateStrategy.RollingUpdate.MaxUnavailable == nil {
			s.UpdateStrategy.RollingUpdate.MaxUnavailable = metav1.IntOrStringFromInt(1)
		}
		if s.UpdateStrategy.RollingUpdate.MaxSurge == nil {
			s.UpdateStrategy.RollingUpdate.MaxSurge = metav1.IntOrStringFromInt(0)
		}
	}
	if s.RevisionHistoryLimit == nil {
		s.RevisionHistoryLimit = ptr(int32(10))
	}
	template(s.Template)
}

func jobSpec(s *batchv1.JobSpec) {
	if s.Completions == nil && s.Parallelism == nil {
		s.Completions = ptr(int32(1))
		s.Parallelism = ptr(int32(1))
	}
	if s.Parallelism == nil {
		s.Parallelism = ptr(int32(1))
	}
	if s.BackoffLimit == nil {
		// With a limit per index, the Job as a whole fails only by
		// maxFailedIndexes, as upstream's SetDefaults_Job.
		if s.BackoffLimitPerIndex != nil {
			s.BackoffLimit = ptr(int32(math.MaxInt32))
		} else {
			s.BackoffLimit = ptr(int32(6))
		}
	}
	if s.CompletionMode == nil {
		s.CompletionMode = ptr("NonIndexed")
	}
	if s.Suspend == nil {
		s.Suspend = ptr(false)
	}
	if s.PodReplacementPolicy == nil {
		// A pod failure policy judges a pod by how it ended, so its
		// replacement waits until it has (upstream's default).
		if s.PodFailurePolicy != nil {
			s.PodReplacementPolicy = ptr("Failed")
		} else {
			s.PodReplacementPolicy = ptr("TerminatingOrFailed")
		}
	}
	template(s.Template)
}

func cronJob(cj *batchv1.CronJob) {
	s := cj.Spec
	if s == nil {
		return
	}
	if s.ConcurrencyPolicy == "" {
		s.ConcurrencyPolicy = "Allow"
	}
	if s.Suspend == nil {
		s.Suspend = ptr(false)
	}
	if s.SuccessfulJobsHistoryLimit == nil {
		s.SuccessfulJobsHistoryLimit = ptr(int32(3))
	}
	if s.FailedJobsHistoryLimit == nil {
		s.FailedJobsHistoryLimit = ptr(int32(1))
	}
	if jt := s.JobTemplate; jt != nil && jt.Spec != nil {
		// Upstream defaults only the pod template inside a CronJob's job
		// template; the job-level fields are defaulted when the Job is made.
		template(jt.Spec.Template)
	}
}

func service(svc *corev1.Service) {
	s := svc.Spec
	if s == nil {
		svc.Spec = &corev1.ServiceSpec{}
		s = svc.Spec
	}
	if s.Type == "" {
		s.Type = "ClusterIP"
	}
	if s.SessionAffinity == "" {
		s.SessionAffinity = "None"
	}
	for _, p := range s.Ports {
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		if p.TargetPort == nil || (!p.TargetPort.IsString() && p.TargetPort.IntVal == 0) {
			p.TargetPort = metav1.IntOrStringFromInt(p.Port)
		}
	}
	if s.Type != "ExternalName" {
		if s.IpFamilyPolicy == nil {
			s.IpFamilyPolicy = ptr("SingleStack")
		}
		if len(s.IpFamilies) == 0 {
			s.IpFamilies = []string{"IPv4"}
		}
		if s.InternalTrafficPolicy == nil {
			s.InternalTrafficPolicy = ptr("Cluster")
		}
	}
	if (s.Type == "NodePort" || s.Type == "LoadBalancer") && s.ExternalTrafficPolicy == "" {
		s.ExternalTrafficPolicy = "Cluster"
	}
	if s.Type == "LoadBalancer" && s.AllocateLoadBalancerNodePorts == nil {
		s.AllocateLoadBalancerNodePorts = ptr(true)
	}
}

func podSpec(s *corev1.PodSpec) {
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
		container(c, s.HostNetwork)
	}
	for _, c := range s.Containers {
		container(c, s.HostNetwork)
	}
	for _, v := range s.Volumes {
		volume(v)
	}
}

func container(c *corev1.Container, hostNetwork bool) {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = ImagePullPolicyFor(c.Image)
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
		probe(p)
	}
	// Requests default to limits where only limits are given.
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

func probe(p *corev1.Probe) {
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

const mode420 = int32(0o644)

func volume(v *corev1.Volume) {
	src := v.GetVolumeSource()
	if src == nil {
		return
	}
	if s := src.Secret; s != nil && s.DefaultMode == nil {
		s.DefaultMode = ptr(mode420)
	}
	if s := src.ConfigMap; s != nil && s.DefaultMode == nil {
		s.DefaultMode = ptr(mode420)
	}
	if s := src.Projected; s != nil && s.DefaultMode == nil {
		s.DefaultMode = ptr(mode420)
	}
	if s := src.DownwardAPI; s != nil {
		if s.DefaultMode == nil {
			s.DefaultMode = ptr(mode420)
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

// ImagePullPolicyFor is upstream's rule: Always for ":latest" or an untagged
// image, IfNotPresent otherwise (a digest counts as a tag).
func ImagePullPolicyFor(image string) string {
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
