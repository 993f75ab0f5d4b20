package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	apiapp "skiff.dev/apiserver/app"
	"skiff.dev/client"
	"skiff.dev/controller-manager/app"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// heartbeat plays a kubelet's Lease until ctx ends.
func (e *env) heartbeat(ctx context.Context, node string) {
	leases := client.For[*coordinationv1.Lease](e.c, "kube-node-lease")
	renew := func() {
		l, err := leases.Get(ctx, node)
		now := time.Now()
		if err != nil {
			holder, dur := node, int32(40)
			leases.Create(ctx, &coordinationv1.Lease{Metadata: &metav1.ObjectMeta{Namespace: "kube-node-lease", Name: node},
				Spec: &coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur,
					RenewTime: &metav1.MicroTime{Seconds: now.Unix(), Nanos: int32(now.Nanosecond())}}})
			return
		}
		l = proto.Clone(l).(*coordinationv1.Lease)
		l.Spec.RenewTime = &metav1.MicroTime{Seconds: now.Unix(), Nanos: int32(now.Nanosecond())}
		leases.Update(ctx, l)
	}
	renew()
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				renew()
			}
		}
	}()
}

func readyNode(name string) *corev1.Node {
	now := metav1.Now()
	return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: name}, Status: &corev1.NodeStatus{Conditions: []*corev1.NodeCondition{
		{Type: "Ready", Status: "True", Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}}}
}

// A node whose Lease stops is marked Unknown and tainted unreachable; pods
// are evicted after their tolerationSeconds (the apiserver's default one,
// here 1s, for a pod that names none), never when they tolerate it without
// a limit; when its Lease is renewed again, the taints go.
func TestSilentNodeIsTaintedAndItsPodsEvicted(t *testing.T) {
	opts := app.ControllerOptions{NodeMonitorGracePeriod: 2 * time.Second, NodeMonitorPeriod: 200 * time.Millisecond,
		NodeStartupGracePeriod: 2 * time.Second, NodeEvictionRate: 10, SecondaryNodeEvictionRate: 1,
		LargeClusterSizeThreshold: 50, UnhealthyZoneThreshold: 0.55}
	e := setupWith(t, func(o *apiapp.Options) { o.DefaultUnreachableTolerationSeconds = 1 }, []string{"nodelifecycle"}, opts)
	nodes := client.For[*corev1.Node](e.c, "")
	for _, n := range []string{"silent", "healthy"} {
		if _, err := nodes.Create(e.ctx(), readyNode(n)); err != nil {
			t.Fatal(err)
		}
	}
	// The healthy node keeps the zone from counting as fully disrupted,
	// when upstream stops evicting altogether.
	ctx, cancel := context.WithCancel(e.ctx())
	defer cancel()
	e.heartbeat(ctx, "healthy")
	silentCtx, stopSilent := context.WithCancel(ctx)
	e.heartbeat(silentCtx, "silent")

	pods := client.For[*corev1.Pod](e.c, "default")
	tolerate := int64(3)
	for name, tol := range map[string]*corev1.Toleration{
		"defaulted":    nil,
		"tolerates-3s": {Key: "node.kubernetes.io/unreachable", Operator: "Exists", Effect: "NoExecute", TolerationSeconds: &tolerate},
		"tolerates":    {Key: "node.kubernetes.io/unreachable", Operator: "Exists", Effect: "NoExecute"},
	} {
		p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c", Image: "skiff.local/pause:3.10"}}}}
		if tol != nil {
			p.Spec.Tolerations = []*corev1.Toleration{tol}
		}
		p, err := pods.Create(e.ctx(), p)
		if err != nil {
			t.Fatal(err)
		}
		e.markRunning(p, "silent", "10.244.0.9", true)
	}
	time.Sleep(time.Second) // healthy for a while: nothing happens
	if n, _ := nodes.Get(e.ctx(), "silent"); len(n.GetSpec().GetTaints()) != 0 {
		t.Fatalf("a heartbeating node got taints %v", n.Spec.Taints)
	}

	stopSilent()
	var unreachable *corev1.Taint
	e.eventually("silent node Unknown and tainted unreachable", func() (bool, error) {
		n, err := nodes.Get(e.ctx(), "silent")
		if err != nil {
			return false, err
		}
		for _, c := range n.GetStatus().GetConditions() {
			if c.Type == "Ready" && c.Status != "Unknown" {
				return false, fmt.Errorf("Ready=%s", c.Status)
			}
		}
		for _, tt := range n.GetSpec().GetTaints() {
			if tt.Key == "node.kubernetes.io/unreachable" && tt.Effect == "NoExecute" {
				unreachable = tt
			}
		}
		return unreachable != nil, fmt.Errorf("taints %v", n.GetSpec().GetTaints())
	})
	deletedAt := func(name string) time.Time {
		p, err := pods.Get(e.ctx(), name)
		if err != nil || p.Metadata.DeletionTimestamp == nil {
			return time.Time{}
		}
		return p.Metadata.DeletionTimestamp.AsTime().Add(-time.Duration(p.Metadata.GetDeletionGracePeriodSeconds()) * time.Second)
	}
	for name, secs := range map[string]time.Duration{"defaulted": time.Second, "tolerates-3s": 3 * time.Second} {
		e.eventually(name+" evicted", func() (bool, error) { return !deletedAt(name).IsZero(), nil })
		// Taint times have whole seconds.
		if at, earliest := deletedAt(name), unreachable.TimeAdded.AsTime().Add(secs); at.Before(earliest.Add(-time.Second)) {
			t.Errorf("%s was evicted at %s, before its toleration ended at %s", name, at, earliest)
		}
	}
	p, _ := pods.Get(e.ctx(), "defaulted")
	if got := fmt.Sprint(tolerationsOf(p)); got != "[node.kubernetes.io/not-ready:300 node.kubernetes.io/unreachable:1]" {
		t.Errorf("the apiserver gave a pod without tolerations %s, want the default ones", got)
	}
	if p.GetStatus() != nil {
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status != "False" {
				t.Errorf("a pod of the silent node is Ready=%s", c.Status)
			}
		}
	}
	if !deletedAt("tolerates").IsZero() {
		t.Error("the pod tolerating forever was evicted")
	}

	e.heartbeat(ctx, "silent")
	e.eventually("taints gone once the Lease is renewed", func() (bool, error) {
		n, err := nodes.Get(e.ctx(), "silent")
		for _, tt := range n.GetSpec().GetTaints() {
			if tt.Effect == "NoExecute" {
				return false, fmt.Errorf("taints %v", n.Spec.Taints)
			}
		}
		return err == nil, err
	})
}

func tolerationsOf(p *corev1.Pod) []string {
	var out []string
	for _, t := range p.GetSpec().GetTolerations() {
		out = append(out, fmt.Sprintf("%s:%d", t.Key, t.GetTolerationSeconds()))
	}
	return out
}
