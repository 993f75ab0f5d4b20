package integration

import (
	"fmt"
	"strings"
	"testing"

	"skiff.dev/client"
	"skiff.dev/controller-manager/app"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// A quota of two pods refuses the third with upstream's message; once a
// pod is gone the controller counts it out and the next one is admitted.
func TestQuotaRefusesThenAdmitsAfterADeletion(t *testing.T) {
	e := setup(t, []string{"resourcequota"}, app.ControllerOptions{})
	quotas := client.For[*corev1.ResourceQuota](e.c, "default")
	if _, err := quotas.Create(e.ctx(), &corev1.ResourceQuota{Metadata: &metav1.ObjectMeta{Name: "two"},
		Spec: &corev1.ResourceQuotaSpec{Hard: map[string]*metav1.Quantity{"pods": {String_: "2"}}}}); err != nil {
		t.Fatal(err)
	}
	used := func(want string) func() (bool, error) {
		return func() (bool, error) {
			q, err := quotas.Get(e.ctx(), "two")
			got := q.GetStatus().GetUsed()["pods"].GetString_()
			return err == nil && got == want, fmt.Errorf("used pods %q, want %q (%v)", got, want, err)
		}
	}
	e.eventually("the quota counted", used("0"))
	pods := client.For[*corev1.Pod](e.c, "default")
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: name},
			Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "skiff.local/agnhost:2.53"}}}}
	}
	for _, n := range []string{"a", "b"} {
		if _, err := pods.Create(e.ctx(), pod(n)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := pods.Create(e.ctx(), pod("c"))
	if want := "exceeded quota: two, requested: pods=1, used: pods=2, limited: pods=2"; !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("a third pod: %v, want Forbidden: %s", err, want)
	}
	zero := int64(0)
	if _, err := pods.Delete(e.ctx(), "a", client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the deleted pod counted out", used("1"))
	if _, err := pods.Create(e.ctx(), pod("c")); err != nil {
		t.Errorf("a pod within the quota again: %v", err)
	}
}
