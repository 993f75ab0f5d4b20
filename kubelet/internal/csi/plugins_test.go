package csi

import (
	"context"
	"strings"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/kubelet/internal/csi/csitest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
)

func newNode() *corev1.Node {
	return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "node-1", Uid: "node-uid"}}
}

func csiNode(t *testing.T, c *client.Client) *storagev1.CSINode {
	t.Helper()
	cn, err := client.For[*storagev1.CSINode](c, "").Get(context.Background(), "node-1")
	if err != nil {
		t.Fatalf("CSINode node-1: %v", err)
	}
	return cn
}

func TestRegisterWritesCSINodeAndDeregisterRemovesIt(t *testing.T) {
	cs := fake.NewClientset(newNode())
	defer cs.Close()
	d := csitest.Start(t, &csitest.Driver{Name: "fake.csi.dev", NodeID: "node-1"})
	p := NewPlugins(Config{Client: cs.Client, NodeName: "node-1"})
	ctx := context.Background()

	if err := p.RegisterPlugin(ctx, "fake.csi.dev", d.Socket, []string{"1.0.0"}); err != nil {
		t.Fatal(err)
	}
	cn := csiNode(t, cs.Client)
	if refs := cn.GetMetadata().GetOwnerReferences(); len(refs) != 1 || refs[0].GetKind() != "Node" || refs[0].GetUid() != "node-uid" {
		t.Errorf("CSINode owner references = %v, want the Node node-1", refs)
	}
	drivers := cn.GetSpec().GetDrivers()
	if len(drivers) != 1 || drivers[0].GetName() != "fake.csi.dev" || drivers[0].GetNodeID() != "node-1" ||
		strings.Join(drivers[0].GetTopologyKeys(), ",") != "kubernetes.io/hostname" || drivers[0].GetAllocatable().GetCount() != 7 {
		t.Fatalf("CSINode drivers = %v", drivers)
	}
	c, err := p.Get("fake.csi.dev")
	if err != nil {
		t.Fatal(err)
	}
	if stage, err := c.StageUnstage(ctx); err != nil || stage {
		t.Errorf("StageUnstage = %v, %v; the fake advertises none", stage, err)
	}
	// Registering again (a new socket) keeps one entry.
	if err := p.RegisterPlugin(ctx, "fake.csi.dev", d.Socket, []string{"1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if n := len(csiNode(t, cs.Client).GetSpec().GetDrivers()); n != 1 {
		t.Errorf("after a second registration: %d drivers, want 1", n)
	}

	p.DeRegisterPlugin(ctx, "fake.csi.dev", d.Socket)
	if n := len(csiNode(t, cs.Client).GetSpec().GetDrivers()); n != 0 {
		t.Errorf("after deregistration: %d drivers, want 0", n)
	}
	if _, err := p.Get("fake.csi.dev"); err == nil || !strings.Contains(err.Error(), "not found in the list of registered CSI drivers") {
		t.Errorf("Get after deregistration: %v", err)
	}
}

func TestValidatePlugin(t *testing.T) {
	p := NewPlugins(Config{})
	if err := p.ValidatePlugin("x", "/run/x.sock", []string{"0.3.0", "2.0.0"}); err == nil {
		t.Error("versions without 1.x accepted")
	}
	if err := p.ValidatePlugin("x", "relative.sock", []string{"1.0.0"}); err == nil {
		t.Error("relative endpoint accepted")
	}
	if err := p.ValidatePlugin("x", "unix:///run/x.sock", []string{"v1.5.0"}); err != nil {
		t.Error(err)
	}
}

func TestRegisterFailsWhenDriverDoesNotAnswer(t *testing.T) {
	cs := fake.NewClientset(newNode())
	defer cs.Close()
	p := NewPlugins(Config{Client: cs.Client, NodeName: "node-1"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := p.RegisterPlugin(ctx, "gone.csi.dev", "/nonexistent/csi.sock", []string{"1.0.0"}); err == nil {
		t.Fatal("registered a driver with no socket")
	}
	if len(p.Registered()) != 0 {
		t.Errorf("registered: %v", p.Registered())
	}
}

func TestRunMakesEmptyCSINode(t *testing.T) {
	cs := fake.NewClientset(newNode())
	defer cs.Close()
	p := NewPlugins(Config{Client: cs.Client, NodeName: "node-1"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := client.For[*storagev1.CSINode](cs.Client, "").Get(context.Background(), "node-1")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CSINode: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
}
