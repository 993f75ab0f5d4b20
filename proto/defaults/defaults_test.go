package defaults

import (
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	appsv1 "skiff.dev/proto/api/apps/v1"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func TestImagePullPolicy(t *testing.T) {
	for image, want := range map[string]string{
		"nginx": "Always", "nginx:latest": "Always", "nginx:1.27": "IfNotPresent",
		"registry.local:5000/pause": "Always", "registry.local:5000/pause:3.10": "IfNotPresent",
		"nginx@sha256:abc": "IfNotPresent",
	} {
		if got := ImagePullPolicyFor(image); got != want {
			t.Errorf("%s: %s, want %s", image, got, want)
		}
	}
}

func TestDeploymentDefaultsAndIdempotence(t *testing.T) {
	d := &appsv1.Deployment{Spec: &appsv1.DeploymentSpec{Template: &corev1.PodTemplateSpec{Spec: &corev1.PodSpec{
		Containers: []*corev1.Container{{Name: "c", Image: "nginx", Ports: []*corev1.ContainerPort{{ContainerPort: 80}},
			Resources: &corev1.ResourceRequirements{Limits: map[string]*metav1.Quantity{"cpu": {String_: "1"}}}}},
	}}}}
	Apply(d)
	s := d.Spec
	if s.GetReplicas() != 1 || s.GetRevisionHistoryLimit() != 10 || s.GetProgressDeadlineSeconds() != 600 ||
		s.Strategy.Type != "RollingUpdate" || s.Strategy.RollingUpdate.MaxSurge.StrVal != "25%" || s.Strategy.RollingUpdate.MaxUnavailable.StrVal != "25%" {
		t.Fatalf("deployment defaults: %v", s)
	}
	ps := s.Template.Spec
	c := ps.Containers[0]
	if ps.RestartPolicy != "Always" || ps.DnsPolicy != "ClusterFirst" || ps.GetTerminationGracePeriodSeconds() != 30 || ps.SchedulerName != "default-scheduler" ||
		c.ImagePullPolicy != "Always" || c.Ports[0].Protocol != "TCP" || c.TerminationMessagePath != "/dev/termination-log" ||
		c.Resources.Requests["cpu"].GetString_() != "1" {
		t.Fatalf("pod defaults: %v", ps)
	}
	again := proto.Clone(d)
	Apply(again)
	if !proto.Equal(again, d) {
		t.Fatal("Apply is not idempotent")
	}
}

func TestServiceDefaults(t *testing.T) {
	s := &corev1.Service{Spec: &corev1.ServiceSpec{Type: "NodePort", Ports: []*corev1.ServicePort{{Port: 80}, {Port: 443, TargetPort: metav1.IntOrStringFromString("https")}}}}
	Apply(s)
	p := s.Spec.Ports
	if p[0].Protocol != "TCP" || p[0].TargetPort.IntVal != 80 || p[1].TargetPort.StrVal != "https" ||
		s.Spec.SessionAffinity != "None" || s.Spec.ExternalTrafficPolicy != "Cluster" || s.Spec.GetInternalTrafficPolicy() != "Cluster" {
		t.Fatalf("service defaults: %v", s.Spec)
	}
}

// The Job defaults that depend on other fields, as upstream's SetDefaults_Job.
func TestJobDefaults(t *testing.T) {
	tmpl := func() *corev1.PodTemplateSpec {
		return &corev1.PodTemplateSpec{Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "busybox:1.35"}}}}
	}
	for _, tc := range []struct {
		name        string
		spec        *batchv1.JobSpec
		backoff     int32
		replacement string
	}{
		{"plain", &batchv1.JobSpec{Template: tmpl()}, 6, "TerminatingOrFailed"},
		{"a limit per index", &batchv1.JobSpec{Template: tmpl(), BackoffLimitPerIndex: new(int32(1))}, math.MaxInt32, "TerminatingOrFailed"},
		{"a pod failure policy", &batchv1.JobSpec{Template: tmpl(), PodFailurePolicy: &batchv1.PodFailurePolicy{}}, 6, "Failed"},
		{"both set stay", &batchv1.JobSpec{Template: tmpl(), BackoffLimit: new(int32(2)), PodReplacementPolicy: new("TerminatingOrFailed"),
			PodFailurePolicy: &batchv1.PodFailurePolicy{}}, 2, "TerminatingOrFailed"},
	} {
		j := &batchv1.Job{Spec: tc.spec}
		Apply(j)
		if j.Spec.GetBackoffLimit() != tc.backoff || j.Spec.GetPodReplacementPolicy() != tc.replacement {
			t.Errorf("%s: backoffLimit %d, podReplacementPolicy %s; want %d, %s", tc.name, j.Spec.GetBackoffLimit(), j.Spec.GetPodReplacementPolicy(), tc.backoff, tc.replacement)
		}
	}
}
