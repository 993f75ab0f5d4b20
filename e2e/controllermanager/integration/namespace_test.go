package integration

import (
	"fmt"
	"testing"

	"skiff.dev/client"
	"skiff.dev/controller-manager/app"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// A new namespace gets its default ServiceAccount and the cluster CA.
func TestNewNamespaceGetsAccountAndRootCA(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	e := setup(t, []string{"serviceaccount", "root-ca-cert-publisher"}, app.ControllerOptions{RootCA: ca})
	if _, err := client.For[*corev1.Namespace](e.c, "").Create(e.ctx(), &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: "team-a"}}); err != nil {
		t.Fatal(err)
	}
	e.eventually("default ServiceAccount in team-a", func() (bool, error) {
		_, err := client.For[*corev1.ServiceAccount](e.c, "team-a").Get(e.ctx(), "default")
		return err == nil, err
	})
	e.eventually("kube-root-ca.crt in team-a", func() (bool, error) {
		cm, err := client.For[*corev1.ConfigMap](e.c, "team-a").Get(e.ctx(), "kube-root-ca.crt")
		return err == nil && cm.Data["ca.crt"] == string(ca), err
	})
}

// Deleting a namespace empties it, then removes it; other namespaces keep
// their content.
func TestNamespaceDeletionEmptiesAndRemovesIt(t *testing.T) {
	e := setup(t, []string{"namespace", "replicaset", "garbagecollector"}, app.ControllerOptions{})
	ns := client.For[*corev1.Namespace](e.c, "")
	for _, n := range []string{"doomed", "kept"} {
		if _, err := ns.Create(e.ctx(), &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			cm := &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Namespace: n, Name: fmt.Sprintf("cm-%d", i)}, Data: map[string]string{"k": "v"}}
			if _, err := client.For[*corev1.ConfigMap](e.c, n).Create(e.ctx(), cm); err != nil {
				t.Fatal(err)
			}
		}
		rs := replicaSet("web", 2)
		rs.Metadata.Namespace = n
		if _, err := client.For[*appsv1.ReplicaSet](e.c, n).Create(e.ctx(), rs); err != nil {
			t.Fatal(err)
		}
	}
	e.eventually("pods in doomed", func() (bool, error) {
		l, err := client.For[*corev1.Pod](e.c, "doomed").List(e.ctx(), client.ListOptions{})
		return err == nil && len(l.Items) == 2, err
	})
	if _, err := ns.Delete(e.ctx(), "doomed", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("doomed gone", func() (bool, error) {
		_, err := ns.Get(e.ctx(), "doomed")
		return apierrors.IsNotFound(err), err
	})
	for _, k := range []string{"configmaps", "replicasets", "pods"} {
		kind, _ := scheme.ForResource(map[string]string{"replicasets": "apps"}[k], k)
		l, err := e.c.Resource(kind, "doomed").List(e.ctx(), client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Items) != 0 {
			t.Errorf("%d %s left in the deleted namespace", len(l.Items), k)
		}
	}
	l, err := client.For[*corev1.ConfigMap](e.c, "kept").List(e.ctx(), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 3 {
		t.Errorf("kept has %d configmaps, want its 3", len(l.Items))
	}
}
