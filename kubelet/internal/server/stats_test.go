package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critesting "k8s.io/cri-api/pkg/apis/testing"

	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/stats"
	corev1 "skiff.dev/proto/api/core/v1"
)

func TestStatsSummaryAndResourceMetrics(t *testing.T) {
	rt := cri.NewFake()
	rt.SetFakeSandboxes([]*critesting.FakePodSandbox{{PodSandboxStatus: runtimeapi.PodSandboxStatus{
		Id: "s1", State: runtimeapi.PodSandboxState_SANDBOX_READY,
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "uid-1"}}}})
	rt.SetFakeContainers([]*critesting.FakeContainer{{SandboxID: "s1", ContainerStatus: runtimeapi.ContainerStatus{
		Id: "c1", State: runtimeapi.ContainerState_CONTAINER_RUNNING, Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}}})
	now := time.Now().UnixNano()
	rt.SetFakeContainerStats([]*runtimeapi.ContainerStats{{
		Attributes:    &runtimeapi.ContainerAttributes{Id: "c1"},
		Cpu:           &runtimeapi.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: 5e9}},
		Memory:        &runtimeapi.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtimeapi.UInt64Value{Value: 12345}},
		WritableLayer: &runtimeapi.FilesystemUsage{Timestamp: now, UsedBytes: &runtimeapi.UInt64Value{Value: 4096}},
	}})
	pods := func() []*corev1.Pod { return []*corev1.Pod{testPod()} }
	p := stats.New(rt, pods, "node-1")
	p.MinWindow = time.Millisecond
	s, err := New(Config{Runtime: rt, Pod: func(string, string) (*corev1.Pod, bool) { return nil, false }, Pods: pods, Stats: p})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(s.Handler())
	defer h.Close()
	f := &fixture{http: h}

	code, body := f.get(t, "/stats/summary")
	if code != http.StatusOK {
		t.Fatalf("/stats/summary: %d %s", code, body)
	}
	var sum stats.Summary
	if err := json.Unmarshal([]byte(body), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Node.NodeName != "node-1" || sum.Node.CPU == nil || sum.Node.Memory == nil {
		t.Errorf("node = %+v", sum.Node)
	}
	if len(sum.Pods) != 1 || sum.Pods[0].PodRef.Name != "web" || len(sum.Pods[0].Containers) != 1 ||
		*sum.Pods[0].Containers[0].Memory.WorkingSetBytes != 12345 || sum.Pods[0].Containers[0].Rootfs == nil {
		t.Errorf("pods = %s", body)
	}

	code, body = f.get(t, "/stats/summary?only_cpu_and_memory=true")
	if code != http.StatusOK || strings.Contains(body, "rootfs") || strings.Contains(body, "rlimit") || !strings.Contains(body, `"workingSetBytes":12345`) {
		t.Errorf("only_cpu_and_memory: %d %s", code, body)
	}
	if code, body = f.get(t, "/stats/summary?only_cpu_and_memory=yes please"); code != http.StatusBadRequest {
		t.Errorf("a bad only_cpu_and_memory: %d %s", code, body)
	}

	code, body = f.get(t, "/metrics/resource")
	if code != http.StatusOK || !strings.Contains(body, `container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"} 5 `) {
		t.Errorf("/metrics/resource: %d %s", code, body)
	}
}

func TestStatsWithoutAProviderAre501(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/stats/summary", "/metrics/resource"} {
		if code, body := f.get(t, p); code != http.StatusNotImplemented {
			t.Errorf("%s without stats: %d %s", p, code, body)
		}
	}
}
