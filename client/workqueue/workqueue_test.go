package workqueue

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestQueueDeduplicatesAndRetriesWithBackoff(t *testing.T) {
	q := New("pods")
	defer q.ShutDown()
	q.Add("default/a")
	q.Add("default/a") // a key waiting once is queued once
	q.Add("default/b")
	if q.Len() != 2 {
		t.Fatalf("len = %d, want 2", q.Len())
	}
	k, _ := q.Get()
	q.AddRateLimited(k) // failed: back after a backoff
	q.Done(k)
	if n := q.NumRequeues(k); n != 1 {
		t.Fatalf("requeues = %d, want 1", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for q.Len() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if q.Len() != 2 {
		t.Fatalf("rate-limited key did not come back: len %d", q.Len())
	}
	q.Forget(k)
	if n := q.NumRequeues(k); n != 0 {
		t.Fatalf("requeues after Forget = %d, want 0", n)
	}
}

func TestMetricsUseUpstreamNamesPerQueue(t *testing.T) {
	reg := prometheus.NewRegistry()
	pods := NewWithMetrics("pods", reg)
	defer pods.ShutDown()
	// A second queue on the same registry shares the vectors.
	nodes := NewWithMetrics("nodes", reg)
	defer nodes.ShutDown()

	pods.Add("default/a")
	pods.Add("default/b")
	nodes.Add("n1")
	k := getWithin(t, pods, 5*time.Second)

	// Nothing is on a timer yet, so the counts are exact.
	compareMetrics(t, reg, "before retry", map[string]string{
		"workqueue_adds_total": `
# HELP workqueue_adds_total Total number of adds handled by workqueue
# TYPE workqueue_adds_total counter
workqueue_adds_total{name="nodes"} 1
workqueue_adds_total{name="pods"} 2
`,
		"workqueue_depth": `
# HELP workqueue_depth Current depth of workqueue
# TYPE workqueue_depth gauge
workqueue_depth{name="nodes"} 1
workqueue_depth{name="pods"} 1
`,
		"workqueue_retries_total": `
# HELP workqueue_retries_total Total number of retries handled by workqueue
# TYPE workqueue_retries_total counter
workqueue_retries_total{name="nodes"} 0
workqueue_retries_total{name="pods"} 0
`,
	})

	pods.AddRateLimited(k)
	pods.Done(k)
	// The limiter puts k back after its backoff, behind default/b. Between
	// AddRateLimited and that moment the counts depend on the scheduler, so
	// assert only once k has come back: drain the queue with Get, which
	// returns k only after the re-add has been counted.
	for _, want := range []string{"default/b", k} {
		if got := getWithin(t, pods, 5*time.Second); got != want {
			t.Fatalf("Get = %q, want %q", got, want)
		}
		pods.Done(want)
	}
	compareMetrics(t, reg, "after retry", map[string]string{
		"workqueue_adds_total": `
# HELP workqueue_adds_total Total number of adds handled by workqueue
# TYPE workqueue_adds_total counter
workqueue_adds_total{name="nodes"} 1
workqueue_adds_total{name="pods"} 3
`,
		"workqueue_depth": `
# HELP workqueue_depth Current depth of workqueue
# TYPE workqueue_depth gauge
workqueue_depth{name="nodes"} 1
workqueue_depth{name="pods"} 0
`,
		"workqueue_retries_total": `
# HELP workqueue_retries_total Total number of retries handled by workqueue
# TYPE workqueue_retries_total counter
workqueue_retries_total{name="nodes"} 0
workqueue_retries_total{name="pods"} 1
`,
	})
	for _, name := range []string{"workqueue_queue_duration_seconds", "workqueue_work_duration_seconds"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n == 0 {
			t.Errorf("%s: %d series, err %v", name, n, err)
		}
	}
}

// compareMetrics checks each metric on reg against its expected exposition.
func compareMetrics(t *testing.T, reg *prometheus.Registry, phase string, want map[string]string) {
	t.Helper()
	for metric, text := range want {
		if err := testutil.GatherAndCompare(reg, strings.NewReader(text), metric); err != nil {
			t.Errorf("%s: %s: %v", phase, metric, err)
		}
	}
}

// getWithin is q.Get that fails the test instead of blocking forever when no
// key arrives within d (it shuts q down to release the blocked Get).
func getWithin(t *testing.T, q Queue, d time.Duration) string {
	t.Helper()
	type result struct {
		key      string
		shutdown bool
	}
	ch := make(chan result, 1)
	go func() {
		k, shutdown := q.Get()
		ch <- result{k, shutdown}
	}()
	select {
	case r := <-ch:
		if r.shutdown {
			t.Fatal("queue shut down while waiting for a key")
		}
		return r.key
	case <-time.After(d):
		q.ShutDown()
		<-ch
		t.Fatalf("no key within %v", d)
		return ""
	}
}
