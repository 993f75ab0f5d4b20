package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"skiff.dev/client/fake"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	proxyapp "skiff.dev/proxy/app"
)

// The test node's own address, outside the cluster CIDR (10.99.0.0/17),
// and a client beyond it: "outside the cluster" as a load balancer or a
// user's machine would be.
const (
	nodeIP   = "10.99.200.1"
	clientIP = "10.99.200.2"
)

// addClient makes a namespace outside the cluster CIDR, routed through
// the node, and has the node forward.
func (c *cluster) addClient(t *testing.T) *netNS {
	t.Helper()
	ext := newNS(t)
	link(t, c.node, "vext", nodeIP+"/24", ext, "eth0", clientIP+"/24")
	run(t, "ip", "-n", ext.name, "route", "add", "default", "via", nodeIP)
	c.forward(t)
	return ext
}

// forward turns on forwarding in the node namespace (a new namespace
// starts with it off), as a node does for its pods.
func (c *cluster) forward(t *testing.T) {
	t.Helper()
	if err := c.node.do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
}

// localSlice is svc's endpoints: pod1 on this node, and pod2 on another
// (in these tests every pod hangs off the one node namespace; the proxy
// only knows what the slice says).
func localSlice(svc string, pods ...int) *discoveryv1.EndpointSlice {
	s := endpointSlice(svc)
	for _, i := range pods {
		node := "elsewhere"
		if i == 1 {
			node = nodeName
		}
		s.Endpoints = append(s.Endpoints, &discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.99.%d.2", i)}, NodeName: ptr(node),
			Conditions: &discoveryv1.EndpointConditions{Ready: ptr(true)}})
	}
	return s
}

func nodePort(name, ip string, port int32, etp string) *corev1.Service {
	s := service(name, ip)
	s.Spec.Type, s.Spec.ExternalTrafficPolicy = "NodePort", etp
	s.Spec.Ports[0].NodePort = port
	return s
}

// answers makes n requests and counts the bodies.
func answers(t *testing.T, ctx context.Context, from *netNS, addr, path string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		body, err := getFrom(ctx, from, addr, path, 3*time.Second)
		if err != nil {
			t.Fatalf("GET %s%s: %v (after %v)", addr, path, err, seen)
		}
		seen[body]++
	}
	return seen
}

// dropped checks that a connection to addr gets no answer at all: no
// reset, no ICMP, only the time-out.
func dropped(t *testing.T, ctx context.Context, from *netNS, addr string) {
	t.Helper()
	_, err := getFrom(ctx, from, addr, "/", time.Second)
	// The dial's deadline, reported as a net.Error timing out (whether it
	// also matches context.DeadlineExceeded depends on where it expired).
	var ne net.Error
	if err == nil || errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("connecting to %s: %v, want the connection dropped (a time-out)", addr, err)
	}
}

// TestTrafficPolicies carries real connections through the Local and
// Cluster traffic policies and a pod's hairpin, and checks both the pod
// that answers and the client address it sees.
func TestTrafficPolicies(t *testing.T) {
	needRoot(t)
	c := newCluster(t, 2)
	ext := c.addClient(t)
	iLocal := service("internal-local", "10.99.100.20")
	iLocal.Spec.InternalTrafficPolicy = ptr("Local")
	iLocalRemote := service("internal-local-remote", "10.99.100.21")
	iLocalRemote.Spec.InternalTrafficPolicy = ptr("Local")
	c.cs = fake.NewClientset(
		nodePort("local", "10.99.100.30", 30080, "Local"), localSlice("local", 1, 2),
		nodePort("cluster", "10.99.100.31", 30081, "Cluster"), localSlice("cluster", 1, 2),
		nodePort("local-remote", "10.99.100.32", 30082, "Local"), localSlice("local-remote", 2),
		iLocal, localSlice("internal-local", 1, 2),
		iLocalRemote, localSlice("internal-local-remote", 2),
		service("hairpin", "10.99.100.40"), localSlice("hairpin", 1),
		&corev1.Node{Metadata: &metav1.ObjectMeta{Name: nodeName},
			Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: nodeIP}}}})
	t.Cleanup(c.cs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.startProxy(t, ctx)

	t.Run("eTP=Local: only the local endpoint, client address kept", func(t *testing.T) {
		if seen := answers(t, ctx, ext, nodeIP+":30080", "/clientip", 20); len(seen) != 1 || seen["pod1 "+clientIP] != 20 {
			t.Errorf("20 requests from outside to a Local NodePort: %v, want all from pod1 seeing %s", seen, clientIP)
		}
	})

	t.Run("eTP=Cluster: every endpoint, client masqueraded", func(t *testing.T) {
		seen := answers(t, ctx, ext, nodeIP+":30081", "/clientip", 40)
		// Masqueraded to the node's address on the way to the pod.
		want := map[string]bool{"pod1 10.99.1.1": true, "pod2 10.99.2.1": true}
		for body := range seen {
			if !want[body] {
				t.Errorf("answer %q; want pod1 or pod2 seeing the node's own address", body)
			}
		}
		// Two endpoints at random: each gets at least 5 of 40 except with
		// probability ~1e-6.
		if seen["pod1 10.99.1.1"] < 5 || seen["pod2 10.99.2.1"] < 5 {
			t.Errorf("40 requests spread as %v", seen)
		}
	})

	t.Run("eTP=Local without a local endpoint drops", func(t *testing.T) {
		dropped(t, ctx, ext, nodeIP+":30082")
	})

	t.Run("eTP=Local from inside the cluster reaches every endpoint", func(t *testing.T) {
		// A pod's traffic to a Local NodePort is not external traffic:
		// upstream sends it to every endpoint, so the one on another
		// node answers too.
		c.forward(t)
		if seen := answers(t, ctx, c.pods[0], nodeIP+":30082", "/", 5); seen["pod2"] != 5 {
			t.Errorf("a pod through a Local NodePort with only a remote endpoint: %v, want pod2", seen)
		}
	})

	t.Run("iTP=Local: only the local endpoint", func(t *testing.T) {
		if seen := answers(t, ctx, c.node, "10.99.100.20:80", "/", 20); seen["pod1"] != 20 {
			t.Errorf("20 requests to a ClusterIP with internalTrafficPolicy Local: %v, want all pod1", seen)
		}
		dropped(t, ctx, c.node, "10.99.100.21:80")
	})

	t.Run("a pod reaches itself through its Service (hairpin)", func(t *testing.T) {
		// Without masquerading the reply would go from pod1 to pod1
		// straight, and the connection would never open.
		c.forward(t)
		if seen := answers(t, ctx, c.pods[0], "10.99.100.40:80", "/clientip", 5); seen["pod1 10.99.1.1"] != 5 {
			t.Errorf("pod1 through its own Service: %v, want pod1 seeing the node's address", seen)
		}
	})
}

// The IPv6 half of a cluster: pod and Service ranges inside the
// namespaces this test makes.
const podCIDR6 = "fd99:1::/64"

// addIPv6 gives the node and pod1 IPv6 addresses (no duplicate address
// detection: the addresses are usable at once), routes the Service range
// and has the proxy program the ip6 table too.
func (c *cluster) addIPv6(t *testing.T) {
	t.Helper()
	run(t, "ip", "-n", c.node.name, "addr", "add", "fd99:1::1/64", "dev", "vpod1", "nodad")
	run(t, "ip", "-n", c.pods[0].name, "addr", "add", "fd99:1::2/64", "dev", "eth0", "nodad")
	run(t, "ip", "-n", c.pods[0].name, "-6", "route", "add", "default", "via", "fd99:1::1")
	run(t, "ip", "-n", c.node.name, "-6", "route", "add", "fd99:100::/64", "dev", "vpod1")
	serve(t, c.pods[0], "[fd99:1::2]:8080", "pod1-v6")
	c.nft6 = newNSNFT(t, c.node, knftables.IPv6Family, proxyapp.TableName)
}

func service6(name, ip string) *corev1.Service {
	s := service(name, ip)
	s.Spec.IpFamilies = []string{"IPv6"}
	return s
}

func slice6(svc string, ips ...string) *discoveryv1.EndpointSlice {
	s := endpointSlice(svc, ips...)
	s.AddressType = "IPv6"
	s.Metadata.Name = svc + "-v6"
	return s
}

func TestIPv6ClusterIP(t *testing.T) {
	needRoot(t)
	c := newCluster(t, 1)
	c.addIPv6(t)
	c.cs = fake.NewClientset(service6("web6", "fd99:100::10"), slice6("web6", "fd99:1::2"), service6("empty6", "fd99:100::11"),
		service("web", "10.99.100.10"), endpointSlice("web", "10.99.1.2"),
		&corev1.Node{Metadata: &metav1.ObjectMeta{Name: nodeName},
			Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: "10.99.1.1"}, {Type: "InternalIP", Address: "fd99:1::1"}}}})
	t.Cleanup(c.cs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.startProxy(t, ctx)

	if seen := answers(t, ctx, c.node, "[fd99:100::10]:80", "/", 5); seen["pod1-v6"] != 5 {
		t.Errorf("GET through the IPv6 ClusterIP: %v, want pod1-v6", seen)
	}
	if seen := answers(t, ctx, c.node, "10.99.100.10:80", "/", 5); seen["pod1"] != 5 {
		t.Errorf("GET through the IPv4 ClusterIP beside it: %v, want pod1", seen)
	}
	start := time.Now()
	if _, err := c.get(ctx, "[fd99:100::11]:80"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("an IPv6 Service without endpoints: %v, want connection refused", err)
	} else if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("refusal took %s", took)
	}
	if tables := c.node.tables(t); !strings.Contains(tables, "table ip6 skiff-proxy") {
		t.Errorf("no ip6 table:\n%s", tables)
	}
}
