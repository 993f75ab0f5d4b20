package integration

import (
	"testing"

	"skiff.dev/client"
	"skiff.dev/controller-manager/app"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Nodes get podCIDRs from --cluster-cidr, kept across a controller restart
// and released when the node goes.
func TestNodesGetPodCIDRs(t *testing.T) {
	opts := app.ControllerOptions{AllocateNodeCIDRs: true, ClusterCIDR: "10.244.0.0/16", NodeCIDRMaskSize: 24}
	e := setup(t, []string{"nodeipam"}, opts)
	nodes := client.For[*corev1.Node](e.c, "")
	for _, n := range []string{"n1", "n2"} {
		if _, err := nodes.Create(e.ctx(), &corev1.Node{Metadata: &metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	for _, n := range []string{"n1", "n2"} {
		e.eventually("podCIDR of "+n, func() (bool, error) {
			node, err := nodes.Get(e.ctx(), n)
			got[n] = node.GetSpec().GetPodCIDR()
			return err == nil && got[n] != "" && len(node.GetSpec().GetPodCIDRs()) == 1 && node.Spec.PodCIDRs[0] == got[n], err
		})
	}
	if got["n1"] == got["n2"] {
		t.Fatalf("both nodes got %s", got["n1"])
	}
	// Nodes that joined while the controller-manager was down get neither
	// subnet after its restart, whatever order it meets them in.
	e.stop()
	fresh := []string{"n3", "n4", "n5", "n6"}
	for _, n := range fresh {
		if _, err := nodes.Create(e.ctx(), &corev1.Node{Metadata: &metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	setupOn(t, e, []string{"nodeipam"}, opts)
	seen := map[string]string{got["n1"]: "n1", got["n2"]: "n2"}
	for _, n := range fresh {
		var c string
		e.eventually("podCIDR of "+n, func() (bool, error) {
			node, err := nodes.Get(e.ctx(), n)
			c = node.GetSpec().GetPodCIDR()
			return err == nil && c != "", err
		})
		if other, dup := seen[c]; dup {
			t.Fatalf("%s got %s, already held by %s", n, c, other)
		}
		seen[c] = n
	}
}
