package healthcheck

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func get(t *testing.T, s *Server, path string) (int, ProxyHealth) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	var h ProxyHealth
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatalf("%s: %v: %s", path, err, rec.Body)
	}
	return rec.Code, h
}

func TestUnhealthyWhenAChangeWaitsTooLong(t *testing.T) {
	now := time.Unix(1000, 0)
	s := &Server{Timeout: time.Minute, Now: func() time.Time { return now }}
	s.Updated("IPv4")
	s.QueuedUpdate("IPv4")
	now = now.Add(30 * time.Second)
	if code, h := get(t, s, "/healthz"); code != http.StatusOK || !h.Healthy {
		t.Errorf("change pending 30s of a 60s timeout: %d %+v", code, h)
	}
	now = now.Add(31 * time.Second)
	if code, h := get(t, s, "/livez"); code != http.StatusServiceUnavailable || h.Healthy || h.Status["IPv4"].Healthy {
		t.Errorf("change pending 61s: %d %+v", code, h)
	}
	s.Updated("IPv4")
	if code, _ := get(t, s, "/healthz"); code != http.StatusOK {
		t.Errorf("after the sync: %d", code)
	}
}

func TestHealthzFailsWhileTheNodeGoes(t *testing.T) {
	node := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n"}, Spec: &corev1.NodeSpec{
		Taints: []*corev1.Taint{{Key: ToBeDeletedTaint, Effect: "NoSchedule"}}}}
	s := &Server{Timeout: time.Minute, Node: func() *corev1.Node { return node }}
	code, h := get(t, s, "/healthz")
	if code != http.StatusServiceUnavailable || h.NodeEligible == nil || *h.NodeEligible {
		t.Errorf("/healthz of a node being deleted: %d %+v", code, h)
	}
	if code, _ := get(t, s, "/livez"); code != http.StatusOK {
		t.Errorf("/livez follows only the syncs, got %d", code)
	}
}
