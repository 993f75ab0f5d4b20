package nodes

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/e2e/local"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// The documentation's StatefulSet on two real nodes: three pods made in
// order, each with a claim of its own from the default local-path class,
// each named in cluster DNS through the headless Service; web-1's data
// outlives web-1.
func TestStatefulSetStorage(t *testing.T) {
	c, cl := kubeletClusterN(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	binDir, _ := filepath.Abs("../../bin")
	inPod := func(pod, script string) (string, error) {
		out, err := exec.CommandContext(ctx, filepath.Join(binDir, "skiffctl"), "--kubeconfig", c.Kubeconfig(),
			"exec", pod, "--", "sh", "-c", script).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	labels := map[string]string{"app": "nginx"}
	if _, err := client.For[*corev1.Service](cl, "default").Create(ctx, &corev1.Service{Metadata: &metav1.ObjectMeta{Name: "nginx"},
		Spec: &corev1.ServiceSpec{ClusterIP: "None", Selector: labels, Ports: []*corev1.ServicePort{{Name: "web", Port: 80}}}}); err != nil {
		t.Fatal(err)
	}
	web := agnhost("nginx")
	web.VolumeMounts = []*corev1.VolumeMount{{Name: "www", MountPath: "/data"}}
	if _, err := client.For[*appsv1.StatefulSet](cl, "default").Create(ctx, &appsv1.StatefulSet{Metadata: &metav1.ObjectMeta{Name: "web"},
		Spec: &appsv1.StatefulSetSpec{Replicas: new(int32(3)), ServiceName: "nginx", Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: &corev1.PodTemplateSpec{Metadata: &metav1.ObjectMeta{Labels: labels}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{web}}},
			VolumeClaimTemplates: []*corev1.PersistentVolumeClaim{{Metadata: &metav1.ObjectMeta{Name: "www"},
				Spec: &corev1.PersistentVolumeClaimSpec{AccessModes: []string{"ReadWriteOnce"},
					Resources: &corev1.VolumeResourceRequirements{Requests: map[string]*metav1.Quantity{"storage": {String_: "1Gi"}}}}}}}}); err != nil {
		t.Fatal(err)
	}
	pods := client.For[*corev1.Pod](cl, "default")
	ready := func(name string) func() (bool, string) {
		return func() (bool, string) {
			p, err := pods.Get(ctx, name)
			if err != nil {
				return false, err.Error()
			}
			return condition(p, "Ready") == "True", fmt.Sprint(p.GetStatus().GetPhase(), p.GetStatus().GetConditions())
		}
	}
	for _, name := range []string{"web-0", "web-1", "web-2"} {
		eventually(t, 2*time.Minute, name+" ready", ready(name))
	}
	// OrderedReady: each pod was created once the one before it was ready
	// (both times to the second, so "not before").
	for i, name := range []string{"web-1", "web-2"} {
		prev, _ := pods.Get(ctx, fmt.Sprintf("web-%d", i))
		p, _ := pods.Get(ctx, name)
		var readyAt time.Time
		for _, c := range prev.GetStatus().GetConditions() {
			if c.Type == "Ready" {
				readyAt = c.GetLastTransitionTime().AsTime()
			}
		}
		if created := p.Metadata.GetCreationTimestamp().AsTime(); readyAt.IsZero() || created.Before(readyAt) {
			t.Errorf("%s created at %s, before web-%d was ready (%s)", name, created, i, readyAt)
		}
	}
	for _, name := range []string{"www-web-0", "www-web-1", "www-web-2"} {
		pvc, err := client.For[*corev1.PersistentVolumeClaim](cl, "default").Get(ctx, name)
		if err != nil || pvc.GetStatus().GetPhase() != "Bound" || pvc.Spec.GetStorageClassName() != "local-path" {
			t.Errorf("claim %s: %v (%v), want Bound in class local-path", name, pvc.GetStatus(), err)
		}
	}

	// Each pod's own name in cluster DNS, through the governing Service.
	p1, _ := pods.Get(ctx, "web-1")
	if out, err := inPod("web-0", "nslookup web-1.nginx.default.svc.cluster.local "+local.ClusterDNS); err != nil || !strings.Contains(out, p1.Status.PodIP) {
		t.Errorf("nslookup web-1.nginx: %v\n%s\nwant %s", err, out, p1.Status.PodIP)
	}

	if out, err := inPod("web-1", "echo kept-by-web-1 > /data/f && cat /data/f"); err != nil || out != "kept-by-web-1" {
		t.Fatalf("writing web-1's volume: %q (%v)", out, err)
	}
	if _, err := pods.Delete(ctx, "web-1", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "a new web-1 ready", func() (bool, string) {
		p, err := pods.Get(ctx, "web-1")
		if err != nil || p.Metadata.GetUid() == p1.Metadata.GetUid() {
			return false, fmt.Sprint("the old pod, or ", err)
		}
		return ready("web-1")()
	})
	if out, err := inPod("web-1", "cat /data/f"); err != nil || out != "kept-by-web-1" {
		t.Errorf("the new web-1 reads %q (%v), want what the old one wrote", out, err)
	}
}
