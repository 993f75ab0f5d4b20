package resourcequota

import (
	"context"
	"strings"
	"testing"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func q(m map[string]string) map[string]*metav1.Quantity {
	out := map[string]*metav1.Quantity{}
	for k, v := range m {
		out[k] = &metav1.Quantity{String_: v}
	}
	return out
}

func pod(name string, cpu string, phase string) *corev1.Pod {
	c := &corev1.Container{Name: "app"}
	if cpu != "" {
		c.Resources = &corev1.ResourceRequirements{Requests: q(map[string]string{"cpu": cpu}), Limits: q(map[string]string{"cpu": cpu})}
	}
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{c}},
		Status: &corev1.PodStatus{Phase: phase}}
}

func quotaObj(name string, hard map[string]string, scopes ...string) *corev1.ResourceQuota {
	return &corev1.ResourceQuota{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: &corev1.ResourceQuotaSpec{Hard: q(hard), Scopes: scopes}}
}

// status is "hard | used" of a stored quota, each sorted.
func status(cs *fake.Clientset, name string) string {
	rq, err := client.For[*corev1.ResourceQuota](cs.Client, "ns").Get(context.Background(), name)
	if err != nil {
		return err.Error()
	}
	f := func(m map[string]*metav1.Quantity) string {
		var parts []string
		for _, k := range sortedKeys(m) {
			parts = append(parts, k+"="+m[k].GetString_())
		}
		return strings.Join(parts, ",")
	}
	return f(rq.GetStatus().GetHard()) + " | " + f(rq.GetStatus().GetUsed())
}

func sortedKeys(m map[string]*metav1.Quantity) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func start(t *testing.T, objs ...scheme.Object) *fake.Clientset {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	cc, _ := controllertest.Context(cs, controllers.Options{})
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Run(t, cc, c)
	return cs
}

func eventually(t *testing.T, cs *fake.Clientset, name, want string) {
	t.Helper()
	controllertest.Eventually(t, func() (bool, string) {
		got := status(cs, name)
		return got == want, "status of " + name + " = " + got + ", want " + want
	})
}

func TestUsedIsWhatTheNamespaceHolds(t *testing.T) {
	deadline := int64(30)
	terminating := pod("batch", "", "Running")
	terminating.Spec.ActiveDeadlineSeconds = &deadline
	cs := start(t,
		pod("a", "500m", "Running"), pod("b", "250m", "Pending"), pod("done", "1", "Succeeded"), terminating,
		&corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "other", Name: "x"}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c"}}}},
		&corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "np"}, Spec: &corev1.ServiceSpec{Type: "NodePort", Ports: []*corev1.ServicePort{{Port: 80}, {Port: 81}}}},
		&corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "lb"}, Spec: &corev1.ServiceSpec{Type: "LoadBalancer", Ports: []*corev1.ServicePort{{Port: 80}}}},
		&corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "cfg"}},
		&corev1.Secret{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "s"}},
		&batchv1.Job{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "j"}},
		quotaObj("compute", map[string]string{"pods": "10", "requests.cpu": "4", "limits.cpu": "4", "count/pods": "20"}),
		quotaObj("objects", map[string]string{"services": "5", "services.nodeports": "5", "services.loadbalancers": "1", "configmaps": "3", "secrets": "3", "count/jobs.batch": "2"}),
		quotaObj("besteffort", map[string]string{"pods": "5"}, "BestEffort"),
		quotaObj("terminating", map[string]string{"pods": "5"}, "Terminating"),
	)
	// The finished pod counts only as an object; the one of "other" not at all.
	eventually(t, cs, "compute", "count/pods=20,limits.cpu=4,pods=10,requests.cpu=4 | count/pods=4,limits.cpu=750m,pods=3,requests.cpu=750m")
	eventually(t, cs, "objects", "configmaps=3,count/jobs.batch=2,secrets=3,services=5,services.loadbalancers=1,services.nodeports=5 | "+
		"configmaps=1,count/jobs.batch=1,secrets=1,services=2,services.loadbalancers=1,services.nodeports=3")
	eventually(t, cs, "besteffort", "pods=5 | pods=1")
	eventually(t, cs, "terminating", "pods=5 | pods=1")

	// A deleted pod is released; a new quota limit is mirrored.
	ctx := context.Background()
	if _, err := client.For[*corev1.Pod](cs.Client, "ns").Delete(ctx, "a", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, cs, "compute", "count/pods=20,limits.cpu=4,pods=10,requests.cpu=4 | count/pods=3,limits.cpu=250m,pods=2,requests.cpu=250m")
	rq, err := client.For[*corev1.ResourceQuota](cs.Client, "ns").Get(ctx, "besteffort")
	if err != nil {
		t.Fatal(err)
	}
	rq.Spec.Hard = q(map[string]string{"pods": "7", "requests.memory": "1Gi"})
	if _, err := client.For[*corev1.ResourceQuota](cs.Client, "ns").Update(ctx, rq); err != nil {
		t.Fatal(err)
	}
	eventually(t, cs, "besteffort", "pods=7,requests.memory=1Gi | pods=1,requests.memory=0")
}
