package endpointslice

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Fixtures shared with the controller tests.

func testService(name string, mutate ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name,
			CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
		Spec: &corev1.ServiceSpec{
			Selector:   map[string]string{"app": name},
			ClusterIP:  "10.96.0.10",
			IpFamilies: []string{"IPv4"},
			Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80,
				TargetPort: metav1.IntOrStringFromInt(8080)}},
		},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

// testPod is pod i of app, ready, on node-1, with IP 10.0.<i/250>.<i%250+1>.
func testPod(app string, i int, mutate ...func(*corev1.Pod)) *corev1.Pod {
	ip := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
	p := &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", app, i), Namespace: "default",
			Uid: fmt.Sprintf("pod-uid-%s-%d", app, i), ResourceVersion: "1", Labels: map[string]string{"app": app}},
		Spec: &corev1.PodSpec{NodeName: "node-1", Containers: []*corev1.Container{{Name: "c",
			Ports: []*corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: "TCP"}}}}},
		Status: &corev1.PodStatus{Phase: "Running", PodIP: ip, PodIPs: []*corev1.PodIP{{Ip: ip}},
			Conditions: []*corev1.PodCondition{{Type: "Ready", Status: "True", LastTransitionTime: metav1.NewTime(time.Unix(2000, 0))}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func notReady(p *corev1.Pod) { p.Status.Conditions[0].Status = "False" }

func testPods(app string, n int, mutate ...func(*corev1.Pod)) []*corev1.Pod {
	out := make([]*corev1.Pod, n)
	for i := range out {
		out[i] = testPod(app, i, mutate...)
	}
	return out
}

func knownNodes(node string) (string, bool) {
	if node == "node-1" {
		return "zone-a", true
	}
	return "", false
}

// existingSlice is a slice as a previous sync of svc would have written it
// for pods, stored under name.
func existingSlice(svc *corev1.Service, name string, pods []*corev1.Pod) *discoveryv1.EndpointSlice {
	at := AddressTypes(svc)[0]
	var ports []*discoveryv1.EndpointPort
	s := newSlice(svc, at, nil)
	for _, p := range pods {
		ep, ok := PodEndpoint(svc, p, at)
		if !ok {
			panic("pod " + p.GetMetadata().GetName() + " has no endpoint")
		}
		ports = ep.Ports
		zone, _ := knownNodes(ep.NodeName)
		s.Endpoints = append(s.Endpoints, sliceEndpoint(ep, zone))
	}
	if ports == nil {
		ports = endpointPorts(svc, &corev1.Pod{})
	}
	s.Ports = ports
	s.Metadata.Name, s.Metadata.GenerateName = name, ""
	s.Metadata.Uid, s.Metadata.ResourceVersion = "uid-"+name, "5"
	return s
}

func placeholderSlice(svc *corev1.Service, name string) *discoveryv1.EndpointSlice {
	s := newSlice(svc, AddressTypes(svc)[0], []*discoveryv1.EndpointPort{})
	s.Metadata.Name, s.Metadata.GenerateName = name, ""
	s.Metadata.Uid, s.Metadata.ResourceVersion = "uid-"+name, "5"
	return s
}

// describe prints a slice as "name:type:pod-0,pod-1" ("+" for an unnamed
// new slice), endpoints in slice order.
func describe(s *discoveryv1.EndpointSlice) string {
	name := s.GetMetadata().GetName()
	if name == "" {
		name = "+"
	}
	var pods []string
	for _, ep := range s.GetEndpoints() {
		pods = append(pods, ep.GetTargetRef().GetName())
	}
	return name + ":" + s.GetAddressType() + ":" + strings.Join(pods, ",")
}

func describeAll(ss []*discoveryv1.EndpointSlice) string {
	var out []string
	for _, s := range ss {
		out = append(out, describe(s))
	}
	return "[" + strings.Join(out, " ") + "]"
}

func sizes(ss []*discoveryv1.EndpointSlice) []int {
	var out []int
	for _, s := range ss {
		out = append(out, len(s.GetEndpoints()))
	}
	return out
}

func TestPlanSlices(t *testing.T) {
	web := testService("web")
	three := testPods("web", 3)
	oneNotReady := testPods("web", 3)
	oneNotReady[1] = testPod("web", 1, notReady)

	tests := []struct {
		name      string
		svc       *corev1.Service
		pods      []*corev1.Pod
		existing  []*discoveryv1.EndpointSlice
		max       int
		create    string
		update    string
		delete    string
		createLen []int
		added     int
		removed   int
		wantErr   bool
	}{{
		name:   "no pods: one placeholder",
		svc:    web,
		create: "[+:IPv4:]", update: "[]", delete: "[]",
	}, {
		name:     "no pods and the placeholder exists: nothing to do",
		svc:      web,
		existing: []*discoveryv1.EndpointSlice{placeholderSlice(web, "web-ph")},
		create:   "[]", update: "[]", delete: "[]",
	}, {
		name:   "three ready pods: one slice",
		svc:    web,
		pods:   three,
		create: "[+:IPv4:web-0,web-1,web-2]", update: "[]", delete: "[]",
		added: 3,
	}, {
		name:     "the placeholder is reused for the first endpoints",
		svc:      web,
		pods:     three,
		existing: []*discoveryv1.EndpointSlice{placeholderSlice(web, "web-ph")},
		create:   "[]", update: "[web-ph:IPv4:web-0,web-1,web-2]", delete: "[]",
		added: 3,
	}, {
		name:     "nothing changed: no writes",
		svc:      web,
		pods:     three,
		existing: []*discoveryv1.EndpointSlice{existingSlice(web, "web-a", three)},
		create:   "[]", update: "[]", delete: "[]",
	}, {
		name:     "a pod turning not ready is updated in place",
		svc:      web,
		pods:     oneNotReady,
		existing: []*discoveryv1.EndpointSlice{existingSlice(web, "web-a", three)},
		create:   "[]", update: "[web-a:IPv4:web-0,web-1,web-2]", delete: "[]",
	}, {
		name:      "250 pods: slices of at most 100",
		svc:       web,
		pods:      testPods("web", 250),
		create:    "", // checked by size
		createLen: []int{100, 100, 50},
		update:    "[]", delete: "[]",
		added: 250,
	}, {
		name: "a removed pod's slice takes the new pods",
		svc:  web,
		pods: slices.Concat(testPods("web", 3)[1:], []*corev1.Pod{testPod("web", 3), testPod("web", 4)}),
		existing: []*discoveryv1.EndpointSlice{
			existingSlice(web, "web-a", testPods("web", 3)),
		},
		create: "[]", update: "[web-a:IPv4:web-1,web-2,web-3,web-4]", delete: "[]",
		added: 2, removed: 1,
	}, {
		name: "new pods fill the unchanged slice they fit most exactly",
		svc:  web,
		pods: testPods("web", 8),
		max:  5,
		existing: []*discoveryv1.EndpointSlice{
			existingSlice(web, "web-a", testPods("web", 2)),      // 2 of 5
			existingSlice(web, "web-b", testPods("web", 5)[2:5]), // 3 of 5
		},
		// The three new pods fill web-a exactly; web-b keeps its room.
		create: "[]", update: "[web-a:IPv4:web-0,web-1,web-5,web-6,web-7]", delete: "[]",
		added: 3,
	}, {
		name: "more new pods than fit any slice make a new one",
		svc:  web,
		pods: testPods("web", 9),
		max:  3,
		existing: []*discoveryv1.EndpointSlice{
			existingSlice(web, "web-a", testPods("web", 3)),
		},
		create: "[+:IPv4:web-3,web-4,web-5 +:IPv4:web-6,web-7,web-8]", update: "[]", delete: "[]",
		added: 6,
	}, {
		name:     "a slice whose pods all went is reused for the placeholder",
		svc:      web,
		existing: []*discoveryv1.EndpointSlice{existingSlice(web, "web-a", three)},
		create:   "[]", update: "[web-a:IPv4:]", delete: "[]",
		removed: 3,
	}, {
		name: "an emptied slice goes when the rest stay",
		svc:  web,
		pods: testPods("web", 6)[3:],
		max:  3,
		existing: []*discoveryv1.EndpointSlice{
			existingSlice(web, "web-a", testPods("web", 3)),
			existingSlice(web, "web-b", testPods("web", 6)[3:]),
		},
		create: "[]", update: "[]", delete: "[web-a:IPv4:web-0,web-1,web-2]",
		removed: 3,
	}, {
		name: "a slice of an earlier Service of the same name is replaced",
		svc:  web,
		pods: three,
		existing: []*discoveryv1.EndpointSlice{
			existingSlice(testService("web", func(s *corev1.Service) { s.Metadata.Uid = "old" }), "web-old", three),
		},
		create: "[+:IPv4:web-0,web-1,web-2]", update: "[]", delete: "[web-old:IPv4:web-0,web-1,web-2]",
		added: 3,
	}, {
		name: "a Service label change updates the labels only",
		svc:  testService("web", func(s *corev1.Service) { s.Metadata.Labels = map[string]string{"team": "a"} }),
		pods: three,
		existing: []*discoveryv1.EndpointSlice{
			existingSlice(web, "web-a", three),
		},
		create: "[]", update: "[web-a:IPv4:web-0,web-1,web-2]", delete: "[]",
	}, {
		name: "dual stack: a slice per family",
		svc: testService("web", func(s *corev1.Service) {
			s.Spec.IpFamilies = []string{"IPv4", "IPv6"}
		}),
		pods: testPods("web", 2, func(p *corev1.Pod) {
			p.Status.PodIPs = append(p.Status.PodIPs, &corev1.PodIP{Ip: "fd00::" + p.Status.PodIP[len("10.0.0."):]})
		}),
		create: "[+:IPv4:web-0,web-1 +:IPv6:web-0,web-1]", update: "[]", delete: "[]",
		added: 4,
	}, {
		name: "a family the Service dropped loses its slices",
		svc:  web,
		pods: three,
		existing: []*discoveryv1.EndpointSlice{
			existingSlice(web, "web-a", three),
			func() *discoveryv1.EndpointSlice {
				s := placeholderSlice(web, "web-v6")
				s.AddressType = "IPv6"
				return s
			}(),
		},
		create: "[]", update: "[]", delete: "[web-v6:IPv6:]",
	}, {
		name: "pods whose named port differs go into different slices",
		svc: testService("web", func(s *corev1.Service) {
			s.Spec.Ports[0].TargetPort = metav1.IntOrStringFromString("http")
		}),
		pods: []*corev1.Pod{testPod("web", 0), testPod("web", 1, func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports[0].ContainerPort = 9090
		}), testPod("web", 2)},
		create: "[+:IPv4:web-0,web-2 +:IPv4:web-1]", update: "[]", delete: "[]",
		added: 3,
	}, {
		name:   "a pod on an unknown node is left out, and the sync retried",
		svc:    web,
		pods:   []*corev1.Pod{testPod("web", 0), testPod("web", 1, func(p *corev1.Pod) { p.Spec.NodeName = "gone" })},
		create: "[+:IPv4:web-0]", update: "[]", delete: "[]",
		added: 1, wantErr: true,
	}, {
		name:   "publishNotReadyAddresses publishes it anyway",
		svc:    testService("web", func(s *corev1.Service) { s.Spec.PublishNotReadyAddresses = true }),
		pods:   []*corev1.Pod{testPod("web", 0), testPod("web", 1, func(p *corev1.Pod) { p.Spec.NodeName = "gone" })},
		create: "[+:IPv4:web-0,web-1]", update: "[]", delete: "[]",
		added: 2,
	}, {
		name: "terminal, unscheduled and IP-less pods are skipped",
		svc:  web,
		pods: []*corev1.Pod{
			testPod("web", 0),
			testPod("web", 1, func(p *corev1.Pod) { p.Status.Phase = "Succeeded" }),
			testPod("web", 2, func(p *corev1.Pod) { p.Status.Phase = "Failed" }),
			testPod("web", 3, func(p *corev1.Pod) { p.Spec.NodeName = "" }),
			testPod("web", 4, func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil }),
		},
		create: "[+:IPv4:web-0]", update: "[]", delete: "[]",
		added: 1,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			max := tt.max
			if max == 0 {
				max = 100
			}
			p, err := planSlices(planInput{service: tt.svc, pods: tt.pods, existing: tt.existing, zone: knownNodes, maxPerSlice: max})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.createLen != nil {
				if got := sizes(p.create); !slices.Equal(got, tt.createLen) {
					t.Errorf("created slice sizes = %v, want %v", got, tt.createLen)
				}
			} else if got := describeAll(p.create); got != tt.create {
				t.Errorf("create = %s, want %s", got, tt.create)
			}
			if got := describeAll(p.update); got != tt.update {
				t.Errorf("update = %s, want %s", got, tt.update)
			}
			if got := describeAll(p.delete); got != tt.delete {
				t.Errorf("delete = %s, want %s", got, tt.delete)
			}
			if p.added != tt.added || p.removed != tt.removed {
				t.Errorf("added, removed = %d, %d; want %d, %d", p.added, p.removed, tt.added, tt.removed)
			}
			for _, s := range slices.Concat(p.create, p.update) {
				if n := len(s.GetEndpoints()); n > max {
					t.Errorf("slice %s holds %d endpoints, more than %d", describe(s), n, max)
				}
			}
		})
	}
}

func TestPlanSlicesFillsBestFit(t *testing.T) {
	// Upstream's "existing slices with room": the leftovers go to the slice
	// they fill most exactly, not the first with room.
	web := testService("web")
	existing := []*discoveryv1.EndpointSlice{
		existingSlice(web, "web-a", testPods("web", 1)),      // 1 of 5: 2 would leave 2 free
		existingSlice(web, "web-b", testPods("web", 4)[1:4]), // 3 of 5: 2 fill it exactly
	}
	p, err := planSlices(planInput{service: web, pods: testPods("web", 6), existing: existing, zone: knownNodes, maxPerSlice: 5})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := describeAll(p.update), "[web-b:IPv4:web-1,web-2,web-3,web-4,web-5]"; got != want || len(p.create)+len(p.delete) != 0 {
		t.Errorf("update = %s, want %s; create %s, delete %s, want none", got, want, describeAll(p.create), describeAll(p.delete))
	}
}

func TestPlanSlicesEndpointFields(t *testing.T) {
	svc := testService("db", func(s *corev1.Service) {
		s.Metadata.Labels = map[string]string{"team": "a", LabelManagedBy: "someone-else"}
		s.Spec.ClusterIP = "None"
		s.Spec.Ports[0].AppProtocol = new("postgresql")
	})
	terminating := testPod("db", 1, func(p *corev1.Pod) { p.Metadata.DeletionTimestamp = metav1.NewTime(time.Unix(3000, 0)) })
	hosted := testPod("db", 0, func(p *corev1.Pod) { p.Spec.Hostname, p.Spec.Subdomain = "db-0", "db" })
	trigger := time.Unix(4000, 0)
	p, err := planSlices(planInput{service: svc, pods: []*corev1.Pod{hosted, terminating}, zone: knownNodes, maxPerSlice: 100, triggerTime: trigger})
	if err != nil || len(p.create) != 1 {
		t.Fatalf("plan = %s, %v; want one slice", describeAll(p.create), err)
	}
	s := p.create[0]
	m := s.GetMetadata()
	if m.GetGenerateName() != "db-" || m.GetNamespace() != "default" {
		t.Errorf("generateName, namespace = %q, %q", m.GetGenerateName(), m.GetNamespace())
	}
	wantLabels := map[string]string{"team": "a", LabelServiceName: "db", LabelManagedBy: ControllerName, LabelHeadless: ""}
	if fmt.Sprint(m.GetLabels()) != fmt.Sprint(wantLabels) {
		t.Errorf("labels = %v, want %v", m.GetLabels(), wantLabels)
	}
	if got := m.GetAnnotations()[AnnotationLastChangeTriggerTime]; got != "1970-01-01T01:06:40Z" {
		t.Errorf("trigger time annotation = %q", got)
	}
	refs := m.GetOwnerReferences()
	if len(refs) != 1 || refs[0].GetKind() != "Service" || refs[0].GetApiVersion() != "v1" || refs[0].GetUid() != "uid-db" ||
		!refs[0].GetController() || !refs[0].GetBlockOwnerDeletion() {
		t.Errorf("ownerReferences = %v, want the Service as controller", refs)
	}
	if len(s.Ports) != 1 || s.Ports[0].GetName() != "http" || s.Ports[0].GetPort() != 8080 || s.Ports[0].GetProtocol() != "TCP" ||
		s.Ports[0].GetAppProtocol() != "postgresql" {
		t.Errorf("ports = %v", s.Ports)
	}
	byPod := map[string]*discoveryv1.Endpoint{}
	for _, ep := range s.Endpoints {
		byPod[ep.GetTargetRef().GetName()] = ep
	}
	h := byPod["db-0"]
	if h.GetHostname() != "db-0" || h.GetNodeName() != "node-1" || h.GetZone() != "zone-a" ||
		fmt.Sprint(h.GetAddresses()) != "[10.0.0.1]" || h.GetTargetRef().GetUid() != "pod-uid-db-0" || h.GetTargetRef().GetKind() != "Pod" {
		t.Errorf("db-0 endpoint = %v", h)
	}
	if c := h.GetConditions(); !c.GetReady() || !c.GetServing() || c.GetTerminating() {
		t.Errorf("db-0 conditions = %v, want ready, serving, not terminating", c)
	}
	term := byPod["db-1"]
	if term.Hostname != nil {
		t.Errorf("db-1 has hostname %q but its subdomain is not the Service", term.GetHostname())
	}
	if c := term.GetConditions(); c.GetReady() || !c.GetServing() || !c.GetTerminating() {
		t.Errorf("terminating db-1 conditions = %v, want not ready, serving, terminating", c)
	}
}
