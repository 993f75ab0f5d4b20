package envvars

import (
	"reflect"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"VAR_A": "A", "VAR_B": "B", "VAR_EMPTY": ""}
	lookup := lookupIn(vars)
	for in, want := range map[string]string{
		"$(VAR_A)":                  "A",
		"___$(VAR_B)___":            "___B___",
		"$(VAR_A)-$(VAR_B)":         "A-B",
		"$(VAR_EMPTY)x":             "x",
		"$(UNKNOWN)":                "$(UNKNOWN)",
		"$$(VAR_A)":                 "$(VAR_A)",
		"$$$(VAR_A)":                "$A",
		"$$$$(VAR_A)":               "$$(VAR_A)",
		"$VAR_A":                    "$VAR_A",
		"$(VAR_A":                   "$(VAR_A",
		"$(VAR_A$(VAR_B)":           "$(VAR_A$(VAR_B)", // the name runs to the first ")"
		"foo$":                      "foo$",
		"$$":                        "$",
		"$()":                       "$()",
		"f00__(VAR_A)__":            "f00__(VAR_A)__",
		"$(VAR_A)$(VAR_A)$$(VAR_A)": "AA$(VAR_A)",
	} {
		if got := Expand(in, lookup); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func kv(env []*runtimeapi.KeyValue) [][2]string {
	var out [][2]string
	for _, e := range env {
		out = append(out, [2]string{e.GetKey(), string(e.GetValue())})
	}
	return out
}

func testPod() *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{
			Name: "web-0", Namespace: "ns1", Uid: "uid-1",
			Labels:      map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{"note": `say "hi"`},
		},
		Spec: &corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "sa"},
	}
}

func cmSource(objs ...*corev1.ConfigMap) func(ns, name string) (*corev1.ConfigMap, error) {
	return func(ns, name string) (*corev1.ConfigMap, error) {
		for _, o := range objs {
			if o.GetMetadata().GetNamespace() == ns && o.GetMetadata().GetName() == name {
				return o, nil
			}
		}
		return nil, apierrors.NewNotFound("configmaps", name)
	}
}

func secretSource(objs ...*corev1.Secret) func(ns, name string) (*corev1.Secret, error) {
	return func(ns, name string) (*corev1.Secret, error) {
		for _, o := range objs {
			if o.GetMetadata().GetNamespace() == ns && o.GetMetadata().GetName() == name {
				return o, nil
			}
		}
		return nil, apierrors.NewNotFound("secrets", name)
	}
}

func TestEnvOrderExpansionAndSources(t *testing.T) {
	cm := &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Namespace: "ns1", Name: "cfg"}, Data: map[string]string{"b": "2", "a": "1", "a=b": "bad"}}
	sec := &corev1.Secret{Metadata: &metav1.ObjectMeta{Namespace: "ns1", Name: "sec"}, Data: map[string][]byte{"pw": []byte("hunter2")}}
	pod := testPod()
	c := &corev1.Container{
		Name: "app",
		EnvFrom: []*corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: &corev1.LocalObjectReference{Name: "cfg"}}, Prefix: "CFG_"},
			{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: &corev1.LocalObjectReference{Name: "missing"}, Optional: ptr(true)}},
		},
		Env: []*corev1.EnvVar{
			{Name: "FIRST", Value: "one"},
			{Name: "SECOND", Value: "$(FIRST)-$(LATER)-$(CFG_a)-$$(FIRST)-$(KUBERNETES_SERVICE_HOST)"},
			{Name: "LATER", Value: "late"},
			{Name: "CFG_b", Value: "override"},
			{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: &corev1.LocalObjectReference{Name: "sec"}, Key: "pw"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: &corev1.LocalObjectReference{Name: "cfg"}, Key: "nope", Optional: ptr(true)}}},
			{Name: "OPT2", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: &corev1.LocalObjectReference{Name: "nocm"}, Key: "k", Optional: ptr(true)}}},
			{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "EMPTY"},
		},
	}
	kube := &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"},
		Spec: &corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []*corev1.ServicePort{{Name: "https", Port: 443, Protocol: "TCP"}}}}
	var events []string
	src := Sources{ConfigMap: cmSource(cm), Secret: secretSource(sec), Services: []*corev1.Service{kube},
		Event: func(typ, reason, msg string) { events = append(events, typ+" "+reason+" "+msg) }}
	pod.Spec.EnableServiceLinks = ptr(false)

	env, err := Env(pod, c, src)
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{
		{"CFG_a", "1"},
		{"CFG_b", "override"},
		{"FIRST", "one"},
		{"SECOND", "one-$(LATER)-1-$(FIRST)-10.96.0.1"},
		{"LATER", "late"},
		{"PW", "hunter2"},
		{"POD", "web-0"},
		{"EMPTY", ""},
		{"KUBERNETES_PORT", "tcp://10.96.0.1:443"},
		{"KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"},
		{"KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"},
		{"KUBERNETES_PORT_443_TCP_PORT", "443"},
		{"KUBERNETES_PORT_443_TCP_PROTO", "tcp"},
		{"KUBERNETES_SERVICE_HOST", "10.96.0.1"},
		{"KUBERNETES_SERVICE_PORT", "443"},
		{"KUBERNETES_SERVICE_PORT_HTTPS", "443"},
	}
	if got := kv(env); !reflect.DeepEqual(got, want) {
		t.Errorf("env:\n got %v\nwant %v", got, want)
	}
	wantEvent := "Warning InvalidEnvironmentVariableNames Keys [CFG_a=b] from the EnvFrom configMap ns1/cfg were skipped since they are considered invalid environment variable names."
	if len(events) != 1 || events[0] != wantEvent {
		t.Errorf("events = %q, want [%q]", events, wantEvent)
	}

	cmd, args := Command(&corev1.Container{Command: []string{"/bin/$(FIRST)", "$$(FIRST)"}, Args: []string{"--pw=$(PW)", "$(NOPE)"}}, env)
	if !reflect.DeepEqual(cmd, []string{"/bin/one", "$(FIRST)"}) || !reflect.DeepEqual(args, []string{"--pw=hunter2", "$(NOPE)"}) {
		t.Errorf("Command = %q %q", cmd, args)
	}
}

func TestServiceLinks(t *testing.T) {
	svc := func(ns, name, ip string, ports ...*corev1.ServicePort) *corev1.Service {
		return &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: &corev1.ServiceSpec{ClusterIP: ip, Ports: ports}}
	}
	services := []*corev1.Service{
		svc("ns1", "my-db.v2", "10.0.0.5", &corev1.ServicePort{Port: 5432}, &corev1.ServicePort{Name: "metrics-http", Port: 9187, Protocol: "TCP"}, &corev1.ServicePort{Name: "dns", Port: 53, Protocol: "UDP"}),
		svc("ns1", "headless", "None", &corev1.ServicePort{Port: 80}),
		svc("ns1", "9lives", "fd00::9", &corev1.ServicePort{Port: 80}),
		svc("other", "foreign", "10.0.0.6", &corev1.ServicePort{Port: 80}),
		svc("default", "kubernetes", "10.96.0.1", &corev1.ServicePort{Name: "https", Port: 443}),
		svc("default", "not-master", "10.96.0.2", &corev1.ServicePort{Port: 80}),
	}
	m := ServiceEnv("ns1", true, services)
	for k, v := range map[string]string{
		"MY_DB_V2_SERVICE_HOST":              "10.0.0.5",
		"MY_DB_V2_SERVICE_PORT":              "5432",
		"MY_DB_V2_SERVICE_PORT_METRICS_HTTP": "9187",
		"MY_DB_V2_SERVICE_PORT_DNS":          "53",
		"MY_DB_V2_PORT":                      "tcp://10.0.0.5:5432",
		"MY_DB_V2_PORT_5432_TCP":             "tcp://10.0.0.5:5432",
		"MY_DB_V2_PORT_53_UDP":               "udp://10.0.0.5:53",
		"MY_DB_V2_PORT_53_UDP_PROTO":         "udp",
		"MY_DB_V2_PORT_53_UDP_PORT":          "53",
		"MY_DB_V2_PORT_53_UDP_ADDR":          "10.0.0.5",
		"_9LIVES_SERVICE_HOST":               "fd00::9",
		"_9LIVES_PORT":                       "tcp://[fd00::9]:80",
		"KUBERNETES_SERVICE_HOST":            "10.96.0.1",
	} {
		if m[k] != v {
			t.Errorf("%s = %q, want %q", k, m[k], v)
		}
	}
	for k := range m {
		if strings.HasPrefix(k, "HEADLESS") || strings.HasPrefix(k, "FOREIGN") || strings.HasPrefix(k, "NOT_MASTER") {
			t.Errorf("unexpected %s", k)
		}
	}
	if len(m) != 17+7+8 { // my-db.v2, 9lives, kubernetes
		t.Errorf("got %d service variables, want 32: %v", len(m), m)
	}
	// Links off: only the master service remains.
	m = ServiceEnv("ns1", false, services)
	for k := range m {
		if !strings.HasPrefix(k, "KUBERNETES_") {
			t.Errorf("links disabled, got %s", k)
		}
	}
	if m["KUBERNETES_SERVICE_PORT_HTTPS"] != "443" {
		t.Errorf("master service missing: %v", m)
	}
	// A service of the pod's namespace named kubernetes wins over default's.
	m = ServiceEnv("ns1", true, append(services, svc("ns1", "kubernetes", "10.0.0.99", &corev1.ServicePort{Port: 1})))
	if m["KUBERNETES_SERVICE_HOST"] != "10.0.0.99" {
		t.Errorf("KUBERNETES_SERVICE_HOST = %q, want the namespace's", m["KUBERNETES_SERVICE_HOST"])
	}
}

func TestMissingSources(t *testing.T) {
	pod := testPod()
	src := Sources{ConfigMap: cmSource(), Secret: secretSource(&corev1.Secret{Metadata: &metav1.ObjectMeta{Namespace: "ns1", Name: "s"}, Data: map[string][]byte{}})}
	for _, tc := range []struct {
		name string
		c    *corev1.Container
		want string
	}{
		{"envFrom configmap", &corev1.Container{EnvFrom: []*corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: &corev1.LocalObjectReference{Name: "x"}}}}}, `configmap "x" not found`},
		{"envFrom secret", &corev1.Container{EnvFrom: []*corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: &corev1.LocalObjectReference{Name: "y"}}}}}, `secret "y" not found`},
		{"configmap key", &corev1.Container{Env: []*corev1.EnvVar{{Name: "A", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: &corev1.LocalObjectReference{Name: "x"}, Key: "k"}}}}}, `configmap "x" not found`},
		{"secret key", &corev1.Container{Env: []*corev1.EnvVar{{Name: "A", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: &corev1.LocalObjectReference{Name: "s"}, Key: "k"}}}}}, `couldn't find key k in Secret ns1/s`},
		{"field", &corev1.Container{Env: []*corev1.EnvVar{{Name: "A", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.bogus"}}}}}, `unsupported fieldPath: spec.bogus`},
		{"resource", &corev1.Container{Env: []*corev1.EnvVar{{Name: "A", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.gpu"}}}}}, `unsupported container resource : limits.gpu`},
	} {
		_, err := Env(pod, tc.c, src)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	// Other lookup errors pass through, naming the object.
	src.ConfigMap = func(ns, name string) (*corev1.ConfigMap, error) { return nil, apierrors.NewUnavailable("etcd down") }
	_, err := Env(pod, &corev1.Container{EnvFrom: []*corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: &corev1.LocalObjectReference{Name: "x"}, Optional: ptr(true)}}}}, src)
	if err == nil || !strings.Contains(err.Error(), `failed to get configmap "x"`) {
		t.Errorf("unavailable optional configmap: err = %v", err)
	}
}

func q(s string) *metav1.Quantity { return &metav1.Quantity{String_: s} }

func TestFieldAndResourceRefs(t *testing.T) {
	pod := testPod()
	c := &corev1.Container{Name: "app", Resources: &corev1.ResourceRequirements{
		Limits:   map[string]*metav1.Quantity{"cpu": q("1500m"), "memory": q("128Mi")},
		Requests: map[string]*metav1.Quantity{"cpu": q("250m"), "ephemeral-storage": q("1Gi")},
	}}
	side := &corev1.Container{Name: "side", Resources: &corev1.ResourceRequirements{Limits: map[string]*metav1.Quantity{"memory": q("1Gi")}}}
	pod.Spec.Containers = []*corev1.Container{c, side}
	src := Sources{HostIPs: []string{"192.168.1.2", "fd00::2"}, PodIPs: []string{"10.244.1.7", "fd00:1::7"},
		NodeAllocatable: map[string]*metav1.Quantity{"cpu": q("2"), "memory": q("4Gi"), "ephemeral-storage": q("10Gi")}}
	for path, want := range map[string]string{
		"metadata.name":                "web-0",
		"metadata.namespace":           "ns1",
		"metadata.uid":                 "uid-1",
		"metadata.labels['app']":       "web",
		"metadata.labels['missing']":   "",
		"metadata.annotations['note']": `say "hi"`,
		"metadata.labels":              "app=\"web\"\ntier=\"front\"",
		"metadata.annotations":         `note="say \"hi\""`,
		"spec.nodeName":                "node-1",
		"spec.serviceAccountName":      "sa",
		"status.hostIP":                "192.168.1.2",
		"status.hostIPs":               "192.168.1.2,fd00::2",
		"status.podIP":                 "10.244.1.7",
		"status.podIPs":                "10.244.1.7,fd00:1::7",
	} {
		got, err := PodField(pod, path, src)
		if err != nil || got != want {
			t.Errorf("PodField(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	// Without addresses in Sources, the pod's status provides them.
	pod.Status = &corev1.PodStatus{PodIPs: []*corev1.PodIP{{Ip: "10.244.9.9"}}, HostIP: "192.168.9.9"}
	if ip, _ := PodField(pod, "status.podIPs", Sources{}); ip != "10.244.9.9" {
		t.Errorf("status.podIPs from the status = %q", ip)
	}
	if ip, _ := PodField(pod, "status.hostIPs", Sources{}); ip != "192.168.9.9" {
		t.Errorf("status.hostIPs from the status = %q", ip)
	}
	if _, err := PodField(pod, "spec.nodeName['x']", src); err == nil {
		t.Error("subscript on a non-map field: want an error")
	}

	for _, tc := range []struct {
		res, divisor, container, want string
	}{
		{"limits.cpu", "", "", "2"}, // 1.5 rounded up
		{"limits.cpu", "1m", "", "1500"},
		{"requests.cpu", "1m", "", "250"},
		{"limits.memory", "", "", "134217728"},
		{"limits.memory", "1Mi", "", "128"},
		{"requests.memory", "", "", "0"},
		{"limits.ephemeral-storage", "1Gi", "", "10"}, // node allocatable
		{"requests.ephemeral-storage", "1Mi", "", "1024"},
		{"limits.cpu", "1m", "side", "2000"}, // allocatable for the other container
		{"limits.memory", "1Mi", "side", "1024"},
	} {
		sel := &corev1.ResourceFieldSelector{Resource: tc.res, ContainerName: tc.container}
		if tc.divisor != "" {
			sel.Divisor = q(tc.divisor)
		}
		got, err := ContainerResource(pod, c, sel, src.NodeAllocatable)
		if err != nil || got != tc.want {
			t.Errorf("%s/%s (%s) = %q, %v; want %q", tc.res, tc.divisor, tc.container, got, err, tc.want)
		}
	}
	if _, err := ContainerResource(pod, c, &corev1.ResourceFieldSelector{Resource: "limits.cpu", ContainerName: "nope"}, nil); err == nil || err.Error() != "container nope not found" {
		t.Errorf("unknown container: %v", err)
	}
}

func TestSubPathExpr(t *testing.T) {
	env := []*runtimeapi.KeyValue{{Key: "POD", Value: []byte("web-0")}, {Key: "EMPTY"}}
	if got, err := SubPathExpr("logs/$(POD)", env); err != nil || got != "logs/web-0" {
		t.Errorf("SubPathExpr = %q, %v", got, err)
	}
	if _, err := SubPathExpr("$(NOPE)/$(EMPTY)/$(NOPE)", env); err == nil || err.Error() != "missing value for EMPTY, NOPE" {
		t.Errorf("missing: err = %v", err)
	}
}
