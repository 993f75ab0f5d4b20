// Package proxy tests skiff-proxy's nftables dataplane on the real kernel:
// a "node" network namespace whose rules the proxy programs, "pod"
// namespaces behind veths serving HTTP, and real connections through
// ClusterIPs. Everything lives in 10.99.0.0/16 inside namespaces the tests
// make and delete; no packet leaves them.
package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"sigs.k8s.io/knftables"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	proxyapp "skiff.dev/proxy/app"
)

const nodeName = "proxytest-node"

type cluster struct {
	node *netNS
	pods []*netNS
	cs   *fake.Clientset
	nft  knftables.Interface
	// nft6, when set, has the proxy program IPv6 too (see addIPv6).
	nft6 knftables.Interface
}

// newCluster makes the node namespace and n pod namespaces, pod i at
// 10.99.<i>.2 behind the node's 10.99.<i>.1, each serving "pod<i>" on
// :8080.
func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{node: newNS(t)}
	for i := 1; i <= n; i++ {
		pod := newNS(t)
		link(t, c.node, fmt.Sprintf("vpod%d", i), fmt.Sprintf("10.99.%d.1/24", i), pod, "eth0", fmt.Sprintf("10.99.%d.2/24", i))
		run(t, "ip", "-n", pod.name, "route", "add", "default", "via", fmt.Sprintf("10.99.%d.1", i))
		serve(t, pod, fmt.Sprintf("10.99.%d.2:8080", i), fmt.Sprintf("pod%d", i))
		c.pods = append(c.pods, pod)
	}
	// The Service range needs a route for a socket to connect at all; the
	// DNAT then reroutes to the chosen pod.
	run(t, "ip", "-n", c.node.name, "route", "add", "10.99.100.0/24", "dev", "vpod1")
	c.nft = newNSNFT(t, c.node, knftables.IPv4Family, proxyapp.TableName)
	return c
}

// serve runs an HTTP server inside ns answering body on addr, and the
// client's address on /clientip (what masquerading leaves of it).
func serve(t *testing.T, ns *netNS, addr, body string) {
	t.Helper()
	var l net.Listener
	if err := ns.do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/clientip" {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			io.WriteString(w, body+" "+host)
			return
		}
		io.WriteString(w, body)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// get fetches http://addr/ from the node namespace, one connection per
// request so each is a fresh endpoint choice.
func (c *cluster) get(ctx context.Context, addr string) (string, error) {
	return getFrom(ctx, c.node, addr, "/", 3*time.Second)
}

// getFrom fetches http://addr/path from inside ns on a new connection,
// giving up after timeout.
func getFrom(ctx context.Context, ns *netNS, addr, path string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := ns.dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func ptr[T any](v T) *T { return &v }

func service(name, ip string) *corev1.Service {
	return &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: &corev1.ServiceSpec{Type: "ClusterIP", ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: metav1.IntOrStringFromInt(8080)}}}}
}

func endpointSlice(svc string, ips ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: svc + "-1",
		Labels: map[string]string{"kubernetes.io/service-name": svc}}, AddressType: "IPv4",
		Ports: []*discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr("TCP"), Port: ptr(int32(8080))}}}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, &discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr("elsewhere"),
			Conditions: &discoveryv1.EndpointConditions{Ready: ptr(true)}})
	}
	return s
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startProxy runs the real proxy (informers, sync loop, nftables through
// nft) against the fake apiserver, its rules in the node namespace.
func (c *cluster) startProxy(t *testing.T, ctx context.Context) {
	t.Helper()
	ct, err := netlink.NewHandleAt(c.node.h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ct.Close)
	families, nfts := []proxyapp.Family{proxyapp.IPv4}, map[proxyapp.Family]knftables.Interface{proxyapp.IPv4: c.nft}
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.99.0.0/17")}
	if c.nft6 != nil {
		families, nfts[proxyapp.IPv6] = append(families, proxyapp.IPv6), c.nft6
		cidrs = append(cidrs, netip.MustParsePrefix(podCIDR6))
	}
	p, err := proxyapp.New(proxyapp.Config{Client: c.cs.Client, Hostname: nodeName, Families: families,
		NFT: nfts, Conntrack: proxyapp.ConntrackNetlink{Handle: ct},
		ClusterCIDRs:  cidrs,
		MinSyncPeriod: 20 * time.Millisecond, SyncPeriod: 30 * time.Second,
		HealthCheckListen: func(network, addr string) (l net.Listener, err error) {
			// Health check ports listen in the node: a socket stays in the
			// namespace it was made in, whichever thread accepts on it.
			err = c.node.do(func() error { l, err = net.Listen(network, addr); return err })
			return l, err
		},
		Logger: slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy: %v", err)
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("proxy stopped before its first sync: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("proxy not ready after 20s")
	}
}

// eventually retries check every 50ms for at most 10s.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	var err error
	for range 200 {
		if err = check(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func TestClusterIPThroughTheKernel(t *testing.T) {
	needRoot(t)
	c := newCluster(t, 2)
	dns := service("dns", "10.99.100.12")
	dns.Spec.Ports[0] = &corev1.ServicePort{Name: "dns", Protocol: "UDP", Port: 53}
	dnsSlice := endpointSlice("dns", "10.99.1.2", "10.99.2.2")
	dnsSlice.Ports[0] = &discoveryv1.EndpointPort{Name: ptr("dns"), Protocol: ptr("UDP"), Port: ptr(int32(5353))}
	for i := range c.pods {
		serveUDP(t, c.pods[i], fmt.Sprintf("10.99.%d.2:5353", i+1))
	}
	c.cs = fake.NewClientset(service("web", "10.99.100.10"), endpointSlice("web", "10.99.1.2"), service("empty", "10.99.100.11"),
		dns, dnsSlice,
		&corev1.Node{Metadata: &metav1.ObjectMeta{Name: nodeName},
			Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: "10.99.1.1"}}}})
	t.Cleanup(c.cs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.startProxy(t, ctx)

	t.Run("one endpoint answers", func(t *testing.T) {
		for range 5 {
			body, err := c.get(ctx, "10.99.100.10:80")
			if err != nil || body != "pod1" {
				t.Fatalf("GET through the ClusterIP: %q, %v", body, err)
			}
		}
	})

	t.Run("two endpoints share the load", func(t *testing.T) {
		sl := endpointSlice("web", "10.99.1.2", "10.99.2.2")
		if _, err := client.For[*discoveryv1.EndpointSlice](c.cs.Client, "default").Update(ctx, withRV(t, ctx, c, sl)); err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		eventually(t, "both pods answering", func() error {
			body, err := c.get(ctx, "10.99.100.10:80")
			if err != nil {
				return err
			}
			seen[body]++
			if len(seen) < 2 {
				return fmt.Errorf("only %v so far", seen)
			}
			return nil
		})
		// Then a fixed number of requests: random choice among two gives
		// each at least 5 of 40 except with probability ~1e-6.
		counts := map[string]int{}
		for range 40 {
			body, err := c.get(ctx, "10.99.100.10:80")
			if err != nil {
				t.Fatal(err)
			}
			counts[body]++
		}
		if counts["pod1"] < 5 || counts["pod2"] < 5 || counts["pod1"]+counts["pod2"] != 40 {
			t.Errorf("40 requests spread as %v", counts)
		}
	})

	t.Run("no endpoints is refused at once", func(t *testing.T) {
		start := time.Now()
		_, err := c.get(ctx, "10.99.100.11:80")
		took := time.Since(start)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("connecting to a Service without endpoints: %v, want connection refused", err)
		}
		if took > 500*time.Millisecond {
			t.Errorf("refusal took %s; a reject should take a round trip", took)
		}
		t.Logf("refused in %s", took)
	})

	t.Run("endpoints gone is refused", func(t *testing.T) {
		sl := endpointSlice("web")
		if _, err := client.For[*discoveryv1.EndpointSlice](c.cs.Client, "default").Update(ctx, withRV(t, ctx, c, sl)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "refusal once the endpoints are gone", func() error {
			_, err := c.get(ctx, "10.99.100.10:80")
			if !errors.Is(err, syscall.ECONNREFUSED) {
				return fmt.Errorf("got %v", err)
			}
			return nil
		})
	})

	t.Run("a UDP endpoint gone takes its conntrack entries along", func(t *testing.T) {
		// One datagram per source port: flows to both pods, each a
		// conntrack entry whose reply comes from the pod.
		for i := range 20 {
			if _, err := c.udpExchange(ctx, 40000+i, "10.99.100.12:53"); err != nil {
				t.Fatal(err)
			}
		}
		if n := c.flowsFrom(t, "10.99.100.12", "10.99.1.2"); n == 0 {
			t.Fatal("no conntrack entry for pod1 after 20 datagrams")
		}
		sl := dnsSlice
		sl.Endpoints = sl.Endpoints[1:]
		if _, err := client.For[*discoveryv1.EndpointSlice](c.cs.Client, "default").Update(ctx, withRV(t, ctx, c, sl)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "pod1's UDP flows deleted", func() error {
			if n := c.flowsFrom(t, "10.99.100.12", "10.99.1.2"); n > 0 {
				return fmt.Errorf("%d flows still answered by the removed pod", n)
			}
			return nil
		})
		if n := c.flowsFrom(t, "10.99.100.12", "10.99.2.2"); n == 0 {
			t.Error("pod2's flows were deleted too")
		}
	})

	t.Run("cleanup leaves no table", func(t *testing.T) {
		if !strings.Contains(c.node.tables(t), "table ip "+proxyapp.TableName) {
			t.Fatalf("no %s table before cleanup:\n%s", proxyapp.TableName, c.node.tables(t))
		}
		// skiff-proxy --cleanup, run where the node's rules are.
		o := proxyapp.NewOptions()
		o.Cleanup = true
		if err := c.node.do(func() error { return proxyapp.Run(ctx, *o) }); err != nil {
			t.Fatal(err)
		}
		if tables := c.node.tables(t); strings.Contains(tables, proxyapp.TableName) {
			t.Errorf("tables after --cleanup:\n%s", tables)
		}
	})
}

// serveUDP echoes datagrams on addr inside ns.
func serveUDP(t *testing.T, ns *netNS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// udpExchange sends one datagram from the node's source port and waits
// for the echo.
func (c *cluster) udpExchange(ctx context.Context, srcPort int, addr string) (string, error) {
	var conn net.Conn
	err := c.node.do(func() error {
		var err error
		d := net.Dialer{LocalAddr: &net.UDPAddr{Port: srcPort}}
		conn, err = d.DialContext(ctx, "udp", addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		return "", err
	}
	buf := make([]byte, 16)
	n, err := conn.Read(buf)
	return string(buf[:n]), err
}

// flowsFrom counts the node's UDP conntrack entries to vip answered by ep.
func (c *cluster) flowsFrom(t *testing.T, vip, ep string) int {
	t.Helper()
	h, err := netlink.NewHandleAt(c.node.h)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range flows {
		if f.Forward.Protocol == syscall.IPPROTO_UDP && f.Forward.DstIP.String() == vip && f.Reverse.SrcIP.String() == ep {
			n++
		}
	}
	return n
}

// withRV gives sl the stored slice's resourceVersion, for an Update.
func withRV(t *testing.T, ctx context.Context, c *cluster, sl *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	t.Helper()
	cur, err := client.For[*discoveryv1.EndpointSlice](c.cs.Client, "default").Get(ctx, sl.Metadata.Name)
	if err != nil {
		t.Fatal(err)
	}
	sl.Metadata.ResourceVersion = cur.Metadata.ResourceVersion
	return sl
}
