package serviceaccount

import (
	"context"
	"fmt"
	"testing"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func namespace(name, phase string) *corev1.Namespace {
	return &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: name}, Status: &corev1.NamespaceStatus{Phase: phase}}
}

func accounts(cs *fake.Clientset, ns string) map[string]bool {
	k, _ := scheme.ForResource("", "serviceaccounts")
	out := map[string]bool{}
	for _, o := range cs.Tracker().List(k, ns) {
		out[o.GetMetadata().GetName()] = true
	}
	return out
}

func creates(cs *fake.Clientset) []string {
	var out []string
	for _, a := range cs.Actions() {
		if a.Verb == "create" && a.Resource == "serviceaccounts" {
			out = append(out, a.Namespace+"/"+a.Object.GetMetadata().GetName())
		}
	}
	return out
}

func TestDefaultAccountInEveryActiveNamespace(t *testing.T) {
	existing := &corev1.ServiceAccount{Metadata: &metav1.ObjectMeta{Name: "default", Namespace: "a"}}
	cs := fake.NewClientset(namespace("a", "Active"), namespace("b", "Active"), namespace("gone", "Terminating"), existing)
	defer cs.Close()
	cc, _ := controllertest.Context(cs, controllers.Options{})
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Run(t, cc, c)

	controllertest.Eventually(t, func() (bool, string) {
		return accounts(cs, "b")["default"], "no default ServiceAccount in b"
	})
	// A new namespace gets one too.
	ctx := context.Background()
	if _, err := client.For[*corev1.Namespace](cs.Client, "").Create(ctx, namespace("c", "Active")); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		return accounts(cs, "c")["default"], "no default ServiceAccount in the new namespace c"
	})
	// A deleted one comes back.
	if _, err := client.For[*corev1.ServiceAccount](cs.Client, "a").Delete(ctx, "default", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		return accounts(cs, "a")["default"], "the deleted default ServiceAccount of a was not recreated"
	})
	if got := fmt.Sprint(creates(cs)); got != "[b/default c/default a/default]" {
		t.Errorf("creates = %s, want b, c, then a's replacement, and none in the terminating namespace", got)
	}
	if accounts(cs, "gone")["default"] {
		t.Error("a terminating namespace got a ServiceAccount")
	}
}
