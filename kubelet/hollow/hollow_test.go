package hollow

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func poll(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func condition(n *corev1.Node, typ string) *corev1.NodeCondition {
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}

// Three hollow nodes register with the machine they are told to report,
// are NotReady until given a podCIDR (as a real node without its CNI
// configuration), then run the pods bound to them: each Running, with an
// address of its node's podCIDR, no two alike.
func TestHollowNodesRunTheirPods(t *testing.T) {
	cs := fake.NewClientset()
	defer cs.Close()
	o := NewOptions()
	o.Nodes, o.RootDir, o.NodeStatusUpdateFrequency = 3, t.TempDir(), 50*time.Millisecond
	n, err := New(Config{Options: *o, Client: cs.Client})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"hollow-node-0", "hollow-node-1", "hollow-node-2"}; !slices.Equal(n.Names(), want) {
		t.Fatalf("names %v, want %v", n.Names(), want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- n.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	nodes := client.For[*corev1.Node](cs.Client, "")
	poll(t, "three NotReady nodes", func() (bool, string) {
		l, err := nodes.List(ctx, client.ListOptions{})
		if err != nil || len(l.Items) != 3 {
			return false, fmt.Sprintf("listed %v (%v)", l, err)
		}
		for _, nd := range l.Items {
			if c := condition(nd, "Ready"); c == nil || c.GetStatus() != "False" {
				return false, nd.Metadata.Name + " has no Ready=False condition"
			}
		}
		return true, ""
	})
	nd, _ := nodes.Get(ctx, "hollow-node-1")
	if c := nd.Status.Capacity; c["cpu"].GetString_() != "4" || c["memory"].GetString_() != "16Gi" || c["pods"].GetString_() != "110" {
		t.Errorf("capacity %v, want cpu 4, memory 16Gi, pods 110", c)
	}
	if msg := condition(nd, "Ready").GetMessage(); !strings.Contains(msg, "NetworkReady=false reason:NetworkPluginNotReady") {
		t.Errorf("NotReady message %q, want the runtime's network message", msg)
	}

	// The controller-manager's nodeipam, by hand.
	cidrs := map[string]netip.Prefix{}
	for i, name := range n.Names() {
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128, byte(i), 0}), 24)
		cidrs[name] = cidr
		for {
			nd, err := nodes.Get(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if nd.Spec == nil {
				nd.Spec = &corev1.NodeSpec{}
			}
			nd.Spec.PodCIDR, nd.Spec.PodCIDRs = cidr.String(), []string{cidr.String()}
			if _, err = nodes.Update(ctx, nd); err == nil {
				break
			} else if !strings.Contains(err.Error(), "modified") {
				t.Fatal(err)
			}
		}
	}
	poll(t, "three Ready nodes", func() (bool, string) {
		for _, name := range n.Names() {
			nd, err := nodes.Get(ctx, name)
			if err != nil || condition(nd, "Ready").GetStatus() != "True" {
				return false, name + " is not Ready"
			}
		}
		return true, ""
	})

	pods := client.For[*corev1.Pod](cs.Client, "default")
	for i := range 6 {
		name := n.Names()[i%3]
		if _, err := pods.Create(ctx, &corev1.Pod{
			Metadata: &metav1.ObjectMeta{Name: "web-" + string(rune('a'+i))},
			Spec:     &corev1.PodSpec{NodeName: name, Containers: []*corev1.Container{{Name: "web", Image: "skiff.local/agnhost:2.53"}}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, "six Running pods", func() (bool, string) {
		l, err := pods.List(ctx, client.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range l.Items {
			if p.GetStatus().GetPhase() != "Running" || p.GetStatus().GetPodIP() == "" {
				return false, p.Metadata.Name + " is " + p.GetStatus().GetPhase()
			}
		}
		return len(l.Items) == 6, ""
	})
	l, _ := pods.List(ctx, client.ListOptions{})
	seen := map[string]string{}
	for _, p := range l.Items {
		ip := netip.MustParseAddr(p.Status.PodIP)
		if cidr := cidrs[p.Spec.NodeName]; !cidr.Contains(ip) {
			t.Errorf("%s on %s has IP %s, not of the node's podCIDR %s", p.Metadata.Name, p.Spec.NodeName, ip, cidr)
		}
		if other, dup := seen[p.Status.PodIP]; dup {
			t.Errorf("%s and %s share IP %s", p.Metadata.Name, other, ip)
		}
		seen[p.Status.PodIP] = p.Metadata.Name
		if c := p.Status.ContainerStatuses; len(c) != 1 || c[0].GetState().GetRunning() == nil || !c[0].GetReady() {
			t.Errorf("%s container statuses %v, want one running and ready", p.Metadata.Name, c)
		}
	}
	for name, sandboxes := range n.Sandboxes() {
		if sandboxes != 2 {
			t.Errorf("%s runs %d sandboxes, want its 2 pods'", name, sandboxes)
		}
	}

	// Containers running `true` and `false` exit at once, so pods that run
	// to completion (Jobs') end as a real node's would.
	for name, cmd := range map[string]string{"done": "true", "broken": "false"} {
		if _, err := pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: name},
			Spec: &corev1.PodSpec{NodeName: n.Names()[0], RestartPolicy: "Never",
				Containers: []*corev1.Container{{Name: "c", Image: "skiff.local/busybox:1.35", Command: []string{cmd}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, "done Succeeded and broken Failed with exit code 1", func() (bool, string) {
		d, err1 := pods.Get(ctx, "done")
		b, err2 := pods.Get(ctx, "broken")
		if err1 != nil || err2 != nil {
			return false, fmt.Sprint(err1, err2)
		}
		cs := b.GetStatus().GetContainerStatuses()
		return d.GetStatus().GetPhase() == "Succeeded" && b.GetStatus().GetPhase() == "Failed" &&
				len(cs) == 1 && cs[0].GetState().GetTerminated().GetExitCode() == 1,
			fmt.Sprintf("done %s, broken %s %v", d.GetStatus().GetPhase(), b.GetStatus().GetPhase(), cs)
	})

	// Every node's metrics, apart by their node label.
	mfs, err := n.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var named []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if !slices.ContainsFunc(m.GetLabel(), func(p *dto.LabelPair) bool { return p.GetName() == "node" }) {
				t.Errorf("%s has a series without a node label", mf.GetName())
			}
			if mf.GetName() == "kubelet_node_name" {
				named = append(named, m.GetLabel()[0].GetValue())
			}
		}
	}
	slices.Sort(named)
	if !slices.Equal(named, n.Names()) {
		t.Errorf("kubelet_node_name for %v, want %v", named, n.Names())
	}
}

// Addresses are handed out as host-local does: never the network address,
// the gateway or the broadcast address, none twice, and freed ones again.
func TestPool(t *testing.T) {
	p := newPool(netip.MustParsePrefix("10.0.0.0/29")) // .2 … .6
	var got []string
	for {
		ip, err := p.next()
		if err != nil {
			if !strings.Contains(err.Error(), "no IP addresses available in range set: 10.0.0.0/29") {
				t.Errorf("exhausted: %v", err)
			}
			break
		}
		got = append(got, ip)
	}
	if want := []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}; !slices.Equal(got, want) {
		t.Fatalf("handed out %v, want %v", got, want)
	}
	p.free("10.0.0.4")
	if ip, err := p.next(); err != nil || ip != "10.0.0.4" {
		t.Errorf("after freeing 10.0.0.4: %q, %v", ip, err)
	}
}

// Bad flags are refused, naming the flag.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Options)
		err    string
	}{
		{func(o *Options) { o.Nodes = 0 }, "--hollow-nodes: must be at least 1"},
		{func(o *Options) { o.NamePrefix = "Hollow_" }, `--name-prefix: "Hollow_"`},
		{func(o *Options) { o.CPU = 0 }, "--node-cpu: must be at least 1"},
		{func(o *Options) { o.Memory = "lots" }, `--node-memory: "lots" is not a positive quantity`},
		{func(o *Options) { o.MaxPods = 0 }, "--max-pods: must be at least 1"},
		{func(o *Options) { o.RootDir = "tmp/hollow" }, `--root-dir: "tmp/hollow" is not an absolute path`},
	} {
		o := NewOptions()
		tc.mutate(o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("err = %v, want %q", err, tc.err)
		}
	}
	if err := NewOptions().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
