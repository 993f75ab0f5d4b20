package defaults

import (
	"testing"

	"google.golang.org/protobuf/proto"

	appsv1 "skiff.dev/proto/api/apps/v1"
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
