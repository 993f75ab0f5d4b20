package endpointslice

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func TestServicesToUpdate(t *testing.T) {
	svcs := []*corev1.Service{
		testService("web"),
		testService("blue", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"color": "blue"} }),
		testService("none", func(s *corev1.Service) { s.Spec.Selector = nil }),
		testService("elsewhere", func(s *corev1.Service) { s.Metadata.Namespace = "other" }),
	}
	base := func(mutate ...func(*corev1.Pod)) *corev1.Pod {
		p := testPod("web", 0, func(p *corev1.Pod) { p.Metadata.Labels["color"] = "blue" })
		for _, m := range mutate {
			m(p)
		}
		return p
	}
	bumped := func(p *corev1.Pod) { p.Metadata.ResourceVersion = "2" }
	tests := []struct {
		name string
		cur  *corev1.Pod
		want string
	}{
		{"resync", base(), "[]"},
		{"an annotation changed", base(bumped, func(p *corev1.Pod) { p.Metadata.Annotations = map[string]string{"a": "b"} }), "[]"},
		{"readiness changed", base(bumped, notReady), "[default/blue default/web]"},
		{"deletion started", base(bumped, func(p *corev1.Pod) { p.Metadata.DeletionTimestamp = metav1.NewTime(time.Unix(1, 0)) }), "[default/blue default/web]"},
		{"IP changed", base(bumped, func(p *corev1.Pod) { p.Status.PodIPs[0].Ip = "10.9.9.9" }), "[default/blue default/web]"},
		{"left one service", base(bumped, func(p *corev1.Pod) { delete(p.Metadata.Labels, "color") }), "[default/blue]"},
		{"left one service and turned not ready", base(bumped, notReady, func(p *corev1.Pod) { delete(p.Metadata.Labels, "color") }), "[default/blue default/web]"},
		{"hostname changed", base(bumped, func(p *corev1.Pod) { p.Spec.Hostname = "h" }), "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fmt.Sprint(sets.List(ServicesToUpdate(svcs, base(), tt.cur)))
			if got != tt.want {
				t.Errorf("services = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPodEndpoint(t *testing.T) {
	svc := testService("web", func(s *corev1.Service) { s.Spec.IpFamilies = []string{"IPv6"} })
	dual := testPod("web", 0, func(p *corev1.Pod) {
		p.Status.PodIPs = append(p.Status.PodIPs, &corev1.PodIP{Ip: "FD00:0:0:0:0:0:0:1"})
	})
	ep, ok := PodEndpoint(svc, dual, AddressTypeIPv6)
	if !ok || fmt.Sprint(ep.Addresses) != "[fd00::1]" {
		t.Errorf("IPv6 endpoint = %v, %t; want the canonical IPv6 address", ep.Addresses, ok)
	}
	if _, ok := PodEndpoint(svc, testPod("web", 1), AddressTypeIPv6); ok {
		t.Error("an IPv4-only pod has an IPv6 endpoint")
	}
	// Only status.podIP set, as from a kubelet reporting one IP.
	legacy := testPod("web", 2, func(p *corev1.Pod) { p.Status.PodIPs = nil })
	if ep, ok := PodEndpoint(testService("web"), legacy, AddressTypeIPv4); !ok || fmt.Sprint(ep.Addresses) != "[10.0.0.3]" {
		t.Errorf("podIP-only endpoint = %v, %t", ep.Addresses, ok)
	}
	pub := testService("web", func(s *corev1.Service) { s.Spec.PublishNotReadyAddresses = true })
	if ep, _ := PodEndpoint(pub, testPod("web", 3, notReady), AddressTypeIPv4); !ep.Ready || ep.Serving {
		t.Errorf("publishNotReadyAddresses: ready %t serving %t, want ready and not serving", ep.Ready, ep.Serving)
	}
}

func TestAddressTypes(t *testing.T) {
	tests := []struct {
		svc  *corev1.Service
		want string
	}{
		{testService("a"), "[IPv4]"},
		{testService("a", func(s *corev1.Service) { s.Spec.IpFamilies = []string{"IPv6", "IPv4"} }), "[IPv6 IPv4]"},
		{testService("a", func(s *corev1.Service) { s.Spec.IpFamilies, s.Spec.ClusterIP = nil, "fd00::10" }), "[IPv6]"},
		{testService("a", func(s *corev1.Service) { s.Spec.IpFamilies, s.Spec.ClusterIP = nil, "None" }), "[IPv4 IPv6]"},
	}
	for _, tt := range tests {
		if got := fmt.Sprint(AddressTypes(tt.svc)); got != tt.want {
			t.Errorf("AddressTypes(%v) = %s, want %s", tt.svc.Spec, got, tt.want)
		}
	}
}
