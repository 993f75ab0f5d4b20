package rootcacertpublisher

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

const ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

func namespace(name, phase string) *corev1.Namespace {
	return &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: name}, Status: &corev1.NamespaceStatus{Phase: phase}}
}

func published(cs *fake.Clientset, ns string) (*corev1.ConfigMap, bool) {
	k, _ := scheme.ForResource("", "configmaps")
	o, err := cs.Tracker().Get(k, ns, ConfigMapName)
	if err != nil {
		return nil, false
	}
	cm := o.(*corev1.ConfigMap)
	return cm, cm.GetData()[DataKey] == ca && cm.GetMetadata().GetAnnotations()[DescriptionAnnotation] == Description
}

func TestPublishesAndRepairs(t *testing.T) {
	stale := &corev1.ConfigMap{Metadata: &metav1.ObjectMeta{Name: ConfigMapName, Namespace: "b"}, Data: map[string]string{DataKey: "old"}}
	cs := fake.NewClientset(namespace("a", "Active"), namespace("b", "Active"), namespace("gone", "Terminating"), stale)
	defer cs.Close()
	cc, _ := controllertest.Context(cs, controllers.Options{RootCA: []byte(ca)})
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Run(t, cc, c)

	for _, ns := range []string{"a", "b"} {
		controllertest.Eventually(t, func() (bool, string) {
			cm, ok := published(cs, ns)
			return ok, "kube-root-ca.crt in " + ns + " = " + cm.String()
		})
	}
	ctx := context.Background()
	cms := client.For[*corev1.ConfigMap](cs.Client, "a")
	// A user's edit is put back.
	cm, _ := published(cs, "a")
	edited := proto.Clone(cm).(*corev1.ConfigMap)
	edited.Data[DataKey] = "tampered"
	if _, err := cms.Update(ctx, edited); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		cm, ok := published(cs, "a")
		return ok, "edited kube-root-ca.crt not repaired: " + cm.String()
	})
	// A deleted copy comes back.
	if _, err := cms.Delete(ctx, ConfigMapName, client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		_, ok := published(cs, "a")
		return ok, "deleted kube-root-ca.crt not recreated"
	})
	if _, ok := published(cs, "gone"); ok {
		t.Error("a terminating namespace got kube-root-ca.crt")
	}
}

func TestNoRootCAIsAnError(t *testing.T) {
	cs := fake.NewClientset()
	defer cs.Close()
	cc, _ := controllertest.Context(cs, controllers.Options{})
	if _, err := New(cc); err == nil {
		t.Fatal("New without a root CA succeeded")
	}
}
