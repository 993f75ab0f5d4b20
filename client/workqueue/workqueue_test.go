package workqueue

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestQueueDeduplicatesAndCountsWithUpstreamNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	q := New("pods", reg)
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
		t.Fatalf("requeues = %d", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for q.Len() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if q.Len() != 2 {
		t.Fatalf("rate-limited key did not come back: len %d", q.Len())
	}
	want := `
# HELP workqueue_adds_total Total number of adds handled by workqueue
# TYPE workqueue_adds_total counter
workqueue_adds_total{name="pods"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "workqueue_adds_total"); err != nil {
		t.Fatal(err)
	}
	// A second queue on the same registry shares the vectors.
	New("nodes", reg).ShutDown()
}
