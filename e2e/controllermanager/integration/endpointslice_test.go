package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"skiff.dev/client"
	"skiff.dev/controller-manager/app"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// slices reads the Service's EndpointSlices as "pod ready/serving/terminating" lines.
func (e *env) endpointLines(svc string) ([]string, []*discoveryv1.EndpointSlice) {
	l, err := client.For[*discoveryv1.EndpointSlice](e.c, "default").List(e.ctx(), client.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, s := range l.Items {
		for _, ep := range s.Endpoints {
			c := ep.GetConditions()
			out = append(out, fmt.Sprintf("%s %v/%v/%v %s", ep.GetTargetRef().GetName(), c.GetReady(), c.GetServing(), c.GetTerminating(), strings.Join(ep.Addresses, ",")))
		}
	}
	slices.Sort(out)
	return out, l.Items
}

// EndpointSlices and Endpoints follow pods becoming ready and terminating.
func TestEndpointsFollowPods(t *testing.T) {
	e := setup(t, []string{"endpointslice", "endpoint"}, app.ControllerOptions{})
	ctx := e.ctx()
	if _, err := client.For[*corev1.Node](e.c, "").Create(ctx, &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1",
		Labels: map[string]string{"topology.kubernetes.io/zone": "z1"}}}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: &corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"},
		Ports:    []*corev1.ServicePort{{Name: "http", Port: 80, TargetPort: &metav1.IntOrString{Type: 1, StrVal: "http"}, Protocol: "TCP"}},
	}}
	if _, err := client.For[*corev1.Service](e.c, "default").Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	pods := client.For[*corev1.Pod](e.c, "default")
	var created []*corev1.Pod
	for i, port := range []int32{8080, 9090} {
		p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("web-%d", i), Labels: map[string]string{"app": "web"}},
			Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "skiff.local/pause:3.10",
				Ports: []*corev1.ContainerPort{{Name: "http", ContainerPort: port, Protocol: "TCP"}}}}}}
		p, err := pods.Create(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, e.markRunning(p, "n1", fmt.Sprintf("10.244.0.%d", 10+i), i == 0))
	}
	want := func(what string, lines ...string) {
		t.Helper()
		e.eventually(what, func() (bool, error) {
			got, _ := e.endpointLines("web")
			return slices.Equal(got, lines), fmt.Errorf("slices: %q, want %q", got, lines)
		})
	}
	want("one ready and one unready endpoint", "web-0 true/true/false 10.244.0.10", "web-1 false/false/false 10.244.0.11")
	// The named target port resolves per pod: two port sets, two slices.
	_, ss := e.endpointLines("web")
	ports := map[int32]bool{}
	for _, s := range ss {
		if s.Metadata.Labels["endpointslice.kubernetes.io/managed-by"] != "endpointslice-controller.k8s.io" || s.AddressType != "IPv4" {
			t.Errorf("slice %s: labels %v addressType %s", s.Metadata.Name, s.Metadata.Labels, s.AddressType)
		}
		for _, p := range s.Ports {
			ports[p.GetPort()] = true
		}
		for _, ep := range s.Endpoints {
			if ep.GetNodeName() != "n1" || ep.GetZone() != "z1" {
				t.Errorf("endpoint %s: node %q zone %q", ep.GetTargetRef().GetName(), ep.GetNodeName(), ep.GetZone())
			}
		}
	}
	if len(ss) != 2 || !ports[8080] || !ports[9090] {
		t.Errorf("%d slices with ports %v, want two, for 8080 and 9090", len(ss), ports)
	}

	e.markRunning(created[1], "n1", "10.244.0.11", true)
	want("both ready", "web-0 true/true/false 10.244.0.10", "web-1 true/true/false 10.244.0.11")

	// web-0 is bound to a node, so deleting it leaves it terminating.
	if _, err := pods.Delete(ctx, "web-0", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want("web-0 terminating, still serving", "web-0 false/true/true 10.244.0.10", "web-1 true/true/false 10.244.0.11")

	e.eventually("legacy Endpoints", func() (bool, error) {
		ep, err := client.For[*corev1.Endpoints](e.c, "default").Get(ctx, "web")
		if err != nil {
			return false, err
		}
		var ready, notReady []string
		for _, s := range ep.Subsets {
			for _, a := range s.Addresses {
				ready = append(ready, a.Ip)
			}
			for _, a := range s.NotReadyAddresses {
				notReady = append(notReady, a.Ip)
			}
		}
		return fmt.Sprint(ready) == "[10.244.0.11]", fmt.Errorf("addresses %v, not ready %v", ready, notReady)
	})
}
