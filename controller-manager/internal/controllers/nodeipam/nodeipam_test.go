package nodeipam

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func TestCIDRSet(t *testing.T) {
	for _, tc := range []struct {
		cluster string
		mask    int
		first   []string
		err     string
	}{
		{cluster: "10.244.0.0/16", mask: 24, first: []string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"}},
		{cluster: "10.244.7.9/16", mask: 24, first: []string{"10.244.0.0/24"}}, // host bits ignored
		{cluster: "10.0.0.0/30", mask: 32, first: []string{"10.0.0.0/32", "10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"}},
		{cluster: "fd00:10::/56", mask: 64, first: []string{"fd00:10::/64", "fd00:10:0:1::/64"}},
		{cluster: "10.0.0.0/8", mask: 25, err: "more than 16 bits longer"},
		{cluster: "10.244.0.0/16", mask: 8, err: "must lie between"},
	} {
		t.Run(tc.cluster, func(t *testing.T) {
			s, err := newCIDRSet(netip.MustParsePrefix(tc.cluster), tc.mask)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tc.first {
				p, err := s.allocate()
				if err != nil || p.String() != want {
					t.Fatalf("allocate = %v %v, want %s", p, err, want)
				}
				if i, err := s.index(p); err != nil || s.subnet(i) != p {
					t.Fatalf("index(%s) = %d %v, not its position", p, i, err)
				}
			}
		})
	}
	// A /30 of /32s: four, then full; a release is not handed out again at
	// once while others are free, and occupy refuses what is not a subnet.
	s, _ := newCIDRSet(netip.MustParsePrefix("10.0.0.0/30"), 32)
	for range 4 {
		s.allocate()
	}
	if _, err := s.allocate(); err != errFull {
		t.Fatalf("fifth allocation = %v, want full", err)
	}
	s.release(netip.MustParsePrefix("10.0.0.1/32"))
	if p, _ := s.allocate(); p.String() != "10.0.0.1/32" {
		t.Fatalf("after release got %s", p)
	}
	if _, err := s.occupy(netip.MustParsePrefix("10.0.1.0/32")); err == nil {
		t.Fatal("occupy outside the range succeeded")
	}
	if _, err := s.occupy(netip.MustParsePrefix("10.0.0.0/31")); err == nil {
		t.Fatal("occupy of a wrong-size subnet succeeded")
	}
}

func node(name string, cidrs ...string) *corev1.Node {
	n := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: name}, Spec: &corev1.NodeSpec{PodCIDRs: cidrs}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	return n
}

func podCIDRs(t *testing.T, cs *fake.Clientset) map[string]string {
	k, _ := scheme.ForResource("", "nodes")
	out := map[string]string{}
	for _, o := range cs.Tracker().List(k, "") {
		n := o.(*corev1.Node)
		if n.GetSpec().GetPodCIDR() != "" {
			out[n.Metadata.Name] = n.Spec.PodCIDR + " " + fmt.Sprint(n.Spec.PodCIDRs)
		}
	}
	return out
}

func TestAllocatesKeepsAndReleases(t *testing.T) {
	// a holds the first subnet from before a restart: it must not be
	// handed to b.
	cs := fake.NewClientset(node("a", "10.244.0.0/24"), node("b"))
	defer cs.Close()
	opts := controllers.Options{AllocateNodeCIDRs: true, ClusterCIDR: "10.244.0.0/16", NodeCIDRMaskSize: 24}
	cc, _ := controllertest.Context(cs, opts)
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Run(t, cc, c)
	controllertest.Eventually(t, func() (bool, string) {
		got := podCIDRs(t, cs)
		return got["b"] == "10.244.1.0/24 [10.244.1.0/24]", fmt.Sprint(got)
	})
	ctx := context.Background()
	nodes := client.For[*corev1.Node](cs.Client, "")
	if _, err := nodes.Delete(ctx, "a", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes.Create(ctx, node("c")); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		got := podCIDRs(t, cs)
		return got["c"] == "10.244.2.0/24 [10.244.2.0/24]", fmt.Sprint(got)
	})
	// a's subnet was released: once the rotation comes round it is used again.
	ipam := c.(*Controller)
	ipam.mu.Lock()
	_, taken := ipam.owner[netip.MustParsePrefix("10.244.0.0/24")]
	ipam.mu.Unlock()
	if taken {
		t.Error("the deleted node's subnet is still held")
	}
}

func TestDualStack(t *testing.T) {
	cs := fake.NewClientset(node("a"))
	defer cs.Close()
	opts := controllers.Options{AllocateNodeCIDRs: true, ClusterCIDR: "10.244.0.0/16,fd00:10::/56", NodeCIDRMaskSize: 24}
	cc, _ := controllertest.Context(cs, opts)
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Run(t, cc, c)
	controllertest.Eventually(t, func() (bool, string) {
		got := podCIDRs(t, cs)
		return got["a"] == "10.244.0.0/24 [10.244.0.0/24 fd00:10::/64]", fmt.Sprint(got)
	})
}

func TestRangeFullIsReported(t *testing.T) {
	cs := fake.NewClientset(node("a"), node("b"))
	defer cs.Close()
	opts := controllers.Options{AllocateNodeCIDRs: true, ClusterCIDR: "10.244.0.0/24", NodeCIDRMaskSize: 24}
	cc, rec := controllertest.Context(cs, opts)
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Run(t, cc, c)
	ev := <-rec.Events
	if !strings.HasPrefix(ev, "Normal CIDRNotAvailable Node ") || !strings.HasSuffix(ev, " status is now: CIDRNotAvailable") {
		t.Errorf("event = %q", ev)
	}
	if got := podCIDRs(t, cs); len(got) != 1 {
		t.Errorf("podCIDRs = %v, want exactly one node with the only subnet", got)
	}
}

func TestOffAndBadFlags(t *testing.T) {
	cs := fake.NewClientset()
	defer cs.Close()
	for _, tc := range []struct {
		opts controllers.Options
		err  string
	}{
		{opts: controllers.Options{AllocateNodeCIDRs: true, ClusterCIDR: "10.244.0.0", NodeCIDRMaskSize: 24}, err: `--cluster-cidr: "10.244.0.0" is not a CIDR`},
		{opts: controllers.Options{AllocateNodeCIDRs: true, ClusterCIDR: "10.244.0.0/16", NodeCIDRMaskSize: 12}, err: "--node-cidr-mask-size: "},
		{opts: controllers.Options{AllocateNodeCIDRs: true, ClusterCIDR: "10.244.0.0/16,10.245.0.0/16", NodeCIDRMaskSize: 24}, err: "at most one IPv4 and one IPv6"},
	} {
		cc, _ := controllertest.Context(cs, tc.opts)
		if _, err := New(cc); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("New(%+v) = %v, want %q", tc.opts, err, tc.err)
		}
	}
	cc, _ := controllertest.Context(cs, controllers.Options{ClusterCIDR: "10.244.0.0/16"})
	if c, err := New(cc); c != nil || err != nil {
		t.Errorf("without --allocate-node-cidrs New = %v %v, want no controller", c, err)
	}
}
