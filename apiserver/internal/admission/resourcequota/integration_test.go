package resourcequota_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func quantities(m map[string]string) map[string]*metav1.Quantity {
	out := map[string]*metav1.Quantity{}
	for k, v := range m {
		out[k] = &metav1.Quantity{String_: v}
	}
	return out
}

// Against the real apiserver and etcd: 20 pods created at once into a
// namespace whose quota allows 5 leave exactly 5 pods, and the quota says
// 5 are used. No controller-manager runs: the test writes the quota's
// status as the resourcequota controller would.
func TestTwentyConcurrentCreatesAgainstPodsFive(t *testing.T) {
	s := apitest.Start(t)
	c := client.New(s.Conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	quotas := client.For[*corev1.ResourceQuota](c, "default")
	rq, err := quotas.Create(ctx, &corev1.ResourceQuota{Metadata: &metav1.ObjectMeta{Name: "pods"},
		Spec: &corev1.ResourceQuotaSpec{Hard: quantities(map[string]string{"pods": "5"})}})
	if err != nil {
		t.Fatal(err)
	}
	rq.Status = &corev1.ResourceQuotaStatus{Hard: quantities(map[string]string{"pods": "5"}), Used: quantities(map[string]string{"pods": "0"})}
	if _, err := quotas.UpdateStatus(ctx, rq); err != nil {
		t.Fatal(err)
	}

	pods := client.For[*corev1.Pod](c, "default")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var admitted int
	var refusals []string
	for i := range 20 {
		wg.Go(func() {
			_, err := pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: fmt.Sprintf("p%02d", i)},
				Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app", Image: "skiff.local/pause:3.10"}}}})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				admitted++
			} else {
				refusals = append(refusals, err.Error())
			}
		})
	}
	wg.Wait()
	if admitted != 5 {
		t.Errorf("%d pods admitted, want exactly 5", admitted)
	}
	for _, r := range refusals {
		if !strings.Contains(r, "exceeded quota: pods, requested: pods=1, used: pods=5, limited: pods=5") {
			t.Errorf("refusal %q is not upstream's exceeded-quota message", r)
		}
	}
	l, err := pods.List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 5 {
		t.Errorf("%d pods stored, want 5", len(l.Items))
	}
	got, err := quotas.Get(ctx, "pods")
	if err != nil {
		t.Fatal(err)
	}
	if u := got.GetStatus().GetUsed()["pods"].GetString_(); u != "5" {
		t.Errorf("status.used.pods = %q, want 5", u)
	}
}

// A LimitRange's defaults reach a pod created right after it, and its max
// refuses a container over it with upstream's message.
func TestLimitRangeThroughTheAPI(t *testing.T) {
	s := apitest.Start(t)
	c := client.New(s.Conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := client.For[*corev1.LimitRange](c, "default").Create(ctx, &corev1.LimitRange{Metadata: &metav1.ObjectMeta{Name: "cpu"},
		Spec: &corev1.LimitRangeSpec{Limits: []*corev1.LimitRangeItem{{Type: "Container",
			Max: quantities(map[string]string{"cpu": "1"}), DefaultRequest: quantities(map[string]string{"cpu": "100m"})}}}}); err != nil {
		t.Fatal(err)
	}
	pods := client.For[*corev1.Pod](c, "default")
	p, err := pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "defaulted"},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app", Image: "skiff.local/pause:3.10"}}}})
	if err != nil {
		t.Fatal(err)
	}
	r := p.GetSpec().GetContainers()[0].GetResources()
	if r.GetRequests()["cpu"].GetString_() != "100m" || r.GetLimits()["cpu"].GetString_() != "1" {
		t.Errorf("resources = %v, want request 100m and the max 1 as limit", r)
	}
	_, err = pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "big"},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app", Image: "skiff.local/pause:3.10",
			Resources: &corev1.ResourceRequirements{Limits: quantities(map[string]string{"cpu": "2"})}}}}})
	if err == nil || !strings.Contains(err.Error(), `pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2`) {
		t.Errorf("err = %v, want upstream's max message", err)
	}
}
