package pleg

import (
	"context"
	"reflect"
	"sort"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critesting "k8s.io/cri-api/pkg/apis/testing"

	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/kuberuntime"
)

func TestGenerateEvents(t *testing.T) {
	for _, tc := range []struct {
		old, new state
		want     []EventType
	}{
		{nonExistent, running, []EventType{ContainerStarted}},
		{nonExistent, exited, []EventType{ContainerDied}},
		{nonExistent, unknown, []EventType{ContainerChanged}},
		{running, running, nil},
		{running, exited, []EventType{ContainerDied}},
		{running, nonExistent, []EventType{ContainerDied, ContainerRemoved}},
		{exited, nonExistent, []EventType{ContainerRemoved}},
		{exited, running, []EventType{ContainerStarted}},
		{unknown, nonExistent, []EventType{ContainerDied, ContainerRemoved}},
		{exited, exited, nil},
	} {
		var got []EventType
		for _, e := range generateEvents("uid", "c1", tc.old, tc.new) {
			if e.ID != "uid" || e.Data != "c1" {
				t.Errorf("%s→%s: event %+v does not name pod uid and container c1", tc.old, tc.new, e)
			}
			got = append(got, e.Type)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s→%s: events %v, want %v", tc.old, tc.new, got, tc.want)
		}
	}
}

func key(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ID+" "+string(e.Type)+" "+e.Data)
	}
	sort.Strings(out)
	return out
}

func drain(p *PLEG) []Event {
	var evs []Event
	for {
		select {
		case e := <-p.Events():
			evs = append(evs, e)
		default:
			return evs
		}
	}
}

func TestRelist(t *testing.T) {
	f := cri.NewFake()
	p := New(f, 0, nil)
	ctx := context.Background()
	lbl := map[string]string{kuberuntime.LabelPodUID: "u1"}
	f.SetFakeSandboxes([]*critesting.FakePodSandbox{{PodSandboxStatus: runtimeapi.PodSandboxStatus{
		Id: "s1", Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "u1"},
		State: runtimeapi.PodSandboxState_SANDBOX_READY, Labels: lbl}}})
	f.SetFakeContainers([]*critesting.FakeContainer{
		{SandboxID: "s1", ContainerStatus: runtimeapi.ContainerStatus{Id: "c1", Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			State: runtimeapi.ContainerState_CONTAINER_RUNNING, Labels: lbl}},
		{SandboxID: "s1", ContainerStatus: runtimeapi.ContainerStatus{Id: "c2", Metadata: &runtimeapi.ContainerMetadata{Name: "side"},
			State: runtimeapi.ContainerState_CONTAINER_CREATED, Labels: lbl}},
		// Not the kubelet's: no pod UID label.
		{SandboxID: "x", ContainerStatus: runtimeapi.ContainerStatus{Id: "foreign", Metadata: &runtimeapi.ContainerMetadata{Name: "x"},
			State: runtimeapi.ContainerState_CONTAINER_RUNNING}},
	})
	if err := p.Relist(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"u1 ContainerStarted c1", "u1 ContainerStarted s1"}
	if got := key(drain(p)); !reflect.DeepEqual(got, want) {
		t.Errorf("first relist: %v, want %v (created containers are ContainerChanged, not sent)", got, want)
	}
	st := p.Cache().Get("u1")
	if st == nil || len(st.Containers) != 2 || len(st.Sandboxes) != 1 || st.Name != "web" {
		t.Fatalf("cache after first relist = %+v, want the pod web with 1 sandbox and 2 containers", st)
	}

	if err := p.Relist(ctx); err != nil {
		t.Fatal(err)
	}
	if got := drain(p); len(got) != 0 {
		t.Errorf("relist without changes emitted %v", got)
	}

	f.FakeRuntimeService.Lock()
	f.Containers["c1"].State = runtimeapi.ContainerState_CONTAINER_EXITED
	f.Containers["c2"].State = runtimeapi.ContainerState_CONTAINER_RUNNING
	f.FakeRuntimeService.Unlock()
	p.Relist(ctx)
	want = []string{"u1 ContainerDied c1", "u1 ContainerStarted c2"}
	if got := key(drain(p)); !reflect.DeepEqual(got, want) {
		t.Errorf("after c1 exited and c2 started: %v, want %v", got, want)
	}
	if cs := p.Cache().Get("u1").Container("app"); cs.GetState() != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("cache not refreshed: app is %v, want exited", cs.GetState())
	}

	f.RemoveContainer(ctx, "c1")
	f.RemoveContainer(ctx, "c2")
	f.StopPodSandbox(ctx, "s1")
	p.Relist(ctx)
	want = []string{"u1 ContainerDied c2", "u1 ContainerDied s1", "u1 ContainerRemoved c1", "u1 ContainerRemoved c2"}
	if got := key(drain(p)); !reflect.DeepEqual(got, want) {
		t.Errorf("after removals: %v, want %v", got, want)
	}
	f.RemovePodSandbox(ctx, "s1")
	p.Relist(ctx)
	if got := key(drain(p)); !reflect.DeepEqual(got, []string{"u1 ContainerRemoved s1"}) {
		t.Errorf("after the sandbox's removal: %v", got)
	}
	if p.Cache().Get("u1") != nil {
		t.Error("a pod gone from the runtime is still cached")
	}
	if !p.Healthy() {
		t.Error("PLEG unhealthy right after a relist")
	}
}
