package quota

import (
	"strings"
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func kind(t *testing.T, group, res string) *scheme.Kind {
	t.Helper()
	k, ok := scheme.ForResource(group, res)
	if !ok {
		t.Fatalf("no kind %s.%s", res, group)
	}
	return k
}

func q(m map[string]string) map[string]*metav1.Quantity {
	out := map[string]*metav1.Quantity{}
	for k, v := range m {
		out[k] = &metav1.Quantity{String_: v}
	}
	return out
}

func container(name string, req, lim map[string]string) *corev1.Container {
	return &corev1.Container{Name: name, Resources: &corev1.ResourceRequirements{Requests: q(req), Limits: q(lim)}}
}

func TestUsage(t *testing.T) {
	always := "Always"
	f := false
	now := time.Now()
	past := metav1.NewTime(now.Add(-time.Hour))
	grace := int64(30)
	sidecar := container("side", map[string]string{"cpu": "100m"}, nil)
	sidecar.RestartPolicy = &always
	tests := []struct {
		name string
		res  string
		obj  scheme.Object
		want string
	}{
		{"pod sums its containers", "pods", &corev1.Pod{Metadata: &metav1.ObjectMeta{}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{
			container("a", map[string]string{"cpu": "250m", "memory": "64Mi"}, map[string]string{"cpu": "500m", "memory": "128Mi"}),
			container("b", map[string]string{"cpu": "250m"}, map[string]string{"cpu": "1"}),
		}}}, "count/pods=1,cpu=500m,limits.cpu=1500m,limits.memory=128Mi,memory=64Mi,pods=1,requests.cpu=500m,requests.memory=64Mi"},
		{"an init container larger than the containers wins", "pods", &corev1.Pod{Metadata: &metav1.ObjectMeta{}, Spec: &corev1.PodSpec{
			InitContainers: []*corev1.Container{container("init", map[string]string{"cpu": "2"}, nil)},
			Containers:     []*corev1.Container{container("a", map[string]string{"cpu": "1"}, nil)},
		}}, "count/pods=1,cpu=2,pods=1,requests.cpu=2"},
		{"a sidecar runs beside the containers", "pods", &corev1.Pod{Metadata: &metav1.ObjectMeta{}, Spec: &corev1.PodSpec{
			InitContainers: []*corev1.Container{sidecar},
			Containers:     []*corev1.Container{container("a", map[string]string{"cpu": "1"}, nil)},
		}}, "count/pods=1,cpu=1100m,pods=1,requests.cpu=1100m"},
		{"a finished pod only counts as an object", "pods", &corev1.Pod{Metadata: &metav1.ObjectMeta{}, Spec: &corev1.PodSpec{
			Containers: []*corev1.Container{container("a", map[string]string{"cpu": "1"}, nil)}}, Status: &corev1.PodStatus{Phase: "Succeeded"}},
			"count/pods=1"},
		{"a pod past its grace period only counts as an object", "pods", &corev1.Pod{Metadata: &metav1.ObjectMeta{DeletionTimestamp: past, DeletionGracePeriodSeconds: &grace},
			Spec: &corev1.PodSpec{Containers: []*corev1.Container{container("a", map[string]string{"cpu": "1"}, nil)}}},
			"count/pods=1"},
		{"ClusterIP service", "services", &corev1.Service{Metadata: &metav1.ObjectMeta{}, Spec: &corev1.ServiceSpec{Ports: []*corev1.ServicePort{{Port: 80}}}},
			"count/services=1,services=1,services.loadbalancers=0,services.nodeports=0"},
		{"NodePort service counts its ports", "services", &corev1.Service{Metadata: &metav1.ObjectMeta{}, Spec: &corev1.ServiceSpec{Type: "NodePort", Ports: []*corev1.ServicePort{{Port: 80}, {Port: 443}}}},
			"count/services=1,services=1,services.loadbalancers=0,services.nodeports=2"},
		{"LoadBalancer without node ports counts the explicit ones", "services", &corev1.Service{Metadata: &metav1.ObjectMeta{}, Spec: &corev1.ServiceSpec{Type: "LoadBalancer", AllocateLoadBalancerNodePorts: &f,
			Ports: []*corev1.ServicePort{{Port: 80, NodePort: 30080}, {Port: 443}}}},
			"count/services=1,services=1,services.loadbalancers=1,services.nodeports=1"},
		{"claim with a class", "persistentvolumeclaims", &corev1.PersistentVolumeClaim{Metadata: &metav1.ObjectMeta{}, Spec: &corev1.PersistentVolumeClaimSpec{
			StorageClassName: new("gold"), Resources: &corev1.VolumeResourceRequirements{Requests: q(map[string]string{"storage": "1Gi"})}},
			Status: &corev1.PersistentVolumeClaimStatus{AllocatedResources: q(map[string]string{"storage": "2Gi"})}},
			"count/persistentvolumeclaims=1,gold.storageclass.storage.k8s.io/persistentvolumeclaims=1,gold.storageclass.storage.k8s.io/requests.storage=2Gi,persistentvolumeclaims=1,requests.storage=2Gi"},
		{"configmap", "configmaps", &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{}}, "configmaps=1,count/configmaps=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Usage(kind(t, "", tt.res), tt.obj, now).String(); got != tt.want {
				t.Errorf("usage = %s\nwant    %s", got, tt.want)
			}
		})
	}
}

func TestConstraintsNameTheContainers(t *testing.T) {
	p := &corev1.Pod{Spec: &corev1.PodSpec{Containers: []*corev1.Container{
		container("web", map[string]string{"cpu": "1"}, map[string]string{"cpu": "1"}),
		container("log", nil, nil),
		container("db", map[string]string{"memory": "1Gi"}, nil),
	}}}
	err := Constraints([]string{"limits.cpu", "requests.memory", "pods"}, p)
	want := "must specify limits.cpu for: db,log; requests.memory for: log,web"
	if err == nil || err.Error() != want {
		t.Fatalf("Constraints = %v, want %q", err, want)
	}
	if err := Constraints([]string{"pods", "count/pods"}, p); err != nil {
		t.Errorf("a quota of pods only constrains nothing: %v", err)
	}
}

func TestScopes(t *testing.T) {
	deadline := int64(60)
	best := &corev1.Pod{Spec: &corev1.PodSpec{Containers: []*corev1.Container{container("a", nil, nil)}, PriorityClassName: "high"}}
	burst := &corev1.Pod{Spec: &corev1.PodSpec{Containers: []*corev1.Container{container("a", map[string]string{"cpu": "1"}, nil)}, ActiveDeadlineSeconds: &deadline}}
	pc := func(op string, v ...string) *corev1.ScopedResourceSelectorRequirement {
		return &corev1.ScopedResourceSelectorRequirement{ScopeName: ScopePriorityClass, Operator: op, Values: v}
	}
	exists := func(s string) *corev1.ScopedResourceSelectorRequirement {
		return &corev1.ScopedResourceSelectorRequirement{ScopeName: s, Operator: "Exists"}
	}
	tests := []struct {
		scope       *corev1.ScopedResourceSelectorRequirement
		best, burst bool
	}{
		{exists(ScopeBestEffort), true, false},
		{exists(ScopeNotBestEffort), false, true},
		{exists(ScopeTerminating), false, true},
		{exists(ScopeNotTerminating), true, false},
		{exists(ScopePriorityClass), true, false},
		{pc("In", "high", "low"), true, false},
		{pc("NotIn", "high"), false, true},
		{pc("DoesNotExist"), false, true},
	}
	for _, tt := range tests {
		name := tt.scope.ScopeName + " " + tt.scope.Operator + " " + strings.Join(tt.scope.Values, ",")
		if got, _ := PodMatchesScope(tt.scope, best); got != tt.best {
			t.Errorf("%s on a BestEffort pod of class high = %v", name, got)
		}
		if got, _ := PodMatchesScope(tt.scope, burst); got != tt.burst {
			t.Errorf("%s on a Burstable pod with a deadline = %v", name, got)
		}
	}
	// A scoped quota never governs other kinds.
	if ok, _ := MatchesScopes([]*corev1.ScopedResourceSelectorRequirement{exists(ScopeBestEffort)}, &corev1.Service{}); ok {
		t.Error("a BestEffort scope selected a service")
	}
}

func TestLessThanOrEqualNamesWhatExceeds(t *testing.T) {
	used := FromProto(q(map[string]string{"pods": "6", "cpu": "500m", "memory": "1Gi"}))
	hard := FromProto(q(map[string]string{"pods": "5", "cpu": "1", "memory": "512Mi"}))
	ok, exceeded := LessThanOrEqual(used, hard)
	if ok || strings.Join(exceeded, ",") != "memory,pods" {
		t.Errorf("LessThanOrEqual = %v %v, want false [memory pods]", ok, exceeded)
	}
}

func TestCountNames(t *testing.T) {
	if got := ObjectCountName(kind(t, "apps", "deployments")); got != "count/deployments.apps" {
		t.Errorf("count name of deployments = %s", got)
	}
	k, ok := KindForCountName("count/deployments.apps")
	if !ok || k.Kind != "Deployment" {
		t.Errorf("KindForCountName(count/deployments.apps) = %v %v", k, ok)
	}
	kinds := TrackedKinds([]string{"requests.cpu", "services.nodeports", "count/jobs.batch"})
	var names []string
	for _, k := range kinds {
		names = append(names, k.Resource)
	}
	if strings.Join(names, ",") != "pods,services,jobs" {
		t.Errorf("TrackedKinds = %v", names)
	}
}
