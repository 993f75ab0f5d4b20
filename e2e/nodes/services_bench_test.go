package nodes

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"skiff.dev/client"
	"skiff.dev/e2e/local"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Each load run stops at whichever bound comes first, so that a slow
// machine still finishes in seconds and a fast one is not measured on
// a few milliseconds.
const (
	loadWorkers  = 8
	loadRequests = 50000
	loadDuration = 5 * time.Second
	// Each target's budget is spent in 2×abbaRounds turns (compareHTTP).
	abbaRounds = 3
)

// BenchmarkServiceHTTP prints HTTP requests/s through a ClusterIP next to
// the same client straight to the pod IPs, in the same run, with keep-alive
// connections and with a new connection per request (DNAT is decided once
// per connection, so the second is where the proxy's rules cost), for one
// pod and then two behind the Service. The target is a ratio ≥ 90 %.
//
// The client runs in the node's network namespace (see sources for the
// addresses it uses); the client and agnhost share the machine's two
// cores either way, so the ratio is the figure, not the rates.
func BenchmarkServiceHTTP(b *testing.B) {
	start := time.Now()
	c, cl := kubeletClusterN(b, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns := c.Nodes[0].NetNS()
	labels := map[string]string{"app": "web"}
	replicas := int32(1)
	deployments := client.For[*appsv1.Deployment](cl, "default")
	if _, err := deployments.Create(ctx, &appsv1.Deployment{Metadata: &metav1.ObjectMeta{Name: "web"}, Spec: &appsv1.DeploymentSpec{
		Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: &corev1.PodTemplateSpec{Metadata: &metav1.ObjectMeta{Labels: labels},
			Spec: &corev1.PodSpec{Containers: []*corev1.Container{agnhost("web")}}}}}); err != nil {
		b.Fatal(err)
	}
	svc, err := client.For[*corev1.Service](cl, "default").Create(ctx, &corev1.Service{Metadata: &metav1.ObjectMeta{Name: "web"},
		Spec: &corev1.ServiceSpec{Selector: labels, Ports: []*corev1.ServicePort{{Name: "http", Port: 80, TargetPort: &metav1.IntOrString{Type: 1, StrVal: "http"}}}}})
	if err != nil {
		b.Fatal(err)
	}
	clusterURL := "http://" + net.JoinHostPort(svc.GetSpec().GetClusterIP(), "80") + "/hostname"
	src := sourcesIn(b, c.Nodes[0])
	// More threads than workers: the Transport may dial again for a
	// request while an earlier dial of its is still out.
	serviceDialer := newNSDialer(b, ns, fromAddr(src.service, "tcp"), 4*loadWorkers)
	directDialer := newNSDialer(b, ns, fromAddr(src.direct, "tcp"), 4*loadWorkers)

	for _, pods := range []int{1, 2} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			if pods > 1 {
				d, err := deployments.Get(ctx, "web")
				if err != nil {
					b.Fatal(err)
				}
				n := int32(pods)
				d.Spec.Replicas = &n
				if _, err := deployments.Update(ctx, d); err != nil {
					b.Fatal(err)
				}
			}
			names, ips := readyWebPods(b, ctx, cl, pods)
			direct := make([]endpoint, len(ips))
			for i, ip := range ips {
				direct[i] = endpoint{url: "http://" + net.JoinHostPort(ip, "8080") + "/hostname", accept: names[i : i+1]}
			}
			viaService := []endpoint{{url: clusterURL, accept: names}}
			// The proxy programs the Service once it sees the
			// EndpointSlice; every pod must answer through it before
			// anything is measured.
			probe := &http.Client{Transport: &http.Transport{DialContext: serviceDialer.DialContext, DisableKeepAlives: true}, Timeout: 2 * time.Second}
			waitFor(b, 30*time.Second, "every web pod answering through the ClusterIP "+clusterURL, func() (bool, string) {
				var seen []string
				for range 10 * pods {
					body, err := getBody(ctx, probe, clusterURL)
					if err != nil {
						return false, err.Error()
					}
					if !slices.Contains(seen, body) {
						seen = append(seen, body)
					}
				}
				slices.Sort(seen)
				return slices.Equal(seen, names), fmt.Sprintf("answers %v, want %v", seen, names)
			})
			setup := time.Since(start)
			for _, mode := range []string{"keepalive", "newconn"} {
				b.Run(mode, func(b *testing.B) {
					// Only the innermost benchmarks' logs are printed.
					if pods == 1 && mode == "keepalive" {
						b.Logf("setup (one node, coredns, one ready pod behind the Service) took %s", setup.Round(time.Millisecond))
					}
					newClient := func(d *nsDialer) *http.Client {
						return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
							DialContext: d.DialContext, DisableKeepAlives: mode == "newconn",
							MaxIdleConnsPerHost: loadWorkers, DisableCompression: true}}
					}
					serviceClient, directClient := newClient(serviceDialer), newClient(directDialer)
					defer serviceClient.CloseIdleConnections()
					defer directClient.CloseIdleConnections()
					podIP, clusterIP := compareHTTP(b, ctx, directClient, direct, serviceClient, viaService)
					ratio := 100 * clusterIP.rate() / podIP.rate()
					b.ReportMetric(clusterIP.rate(), "clusterip-req/s")
					b.ReportMetric(podIP.rate(), "podip-req/s")
					b.ReportMetric(ratio, "ratio-%")
					b.Logf("%d pod(s), %s, %d workers: ClusterIP %s; pod IP %s: %.1f %% (target ≥ 90 %%)",
						pods, mode, loadWorkers, clusterIP, podIP, ratio)
				})
			}
		})
	}
}

// BenchmarkClusterDNS prints queries/s and p50/p99 latency of A queries for
// web.default.svc.cluster.local against skiff-dns through the kube-dns
// ClusterIP, and straight to the coredns pod for comparison, each query on
// a socket of its own as a pod's resolver makes one per lookup (so every
// query is a new conntrack flow, DNAT'd afresh through the ClusterIP).
//
// The issue asks for queries from a pod; these come from the node's network
// namespace instead, so that the client is a Go loop rather than a shell in
// a container: they leave through the output hook rather than arriving at
// prerouting from the pod's veth, and meet the same skiff-proxy DNAT to the
// same coredns pod over the same bridge. They come from the node's address
// on that bridge, inside the cluster CIDR, so that like a pod's they are
// not masqueraded (see sources).
func BenchmarkClusterDNS(b *testing.B) {
	start := time.Now()
	c, cl := kubeletClusterN(b, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns := c.Nodes[0].NetNS()
	// The A record of a ClusterIP Service is its ClusterIP whether or not
	// it has endpoints, so no pods are needed behind it.
	svc, err := client.For[*corev1.Service](cl, "default").Create(ctx, &corev1.Service{Metadata: &metav1.ObjectMeta{Name: "web"},
		Spec: &corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []*corev1.ServicePort{{Name: "http", Port: 80, TargetPort: &metav1.IntOrString{IntVal: 8080}}}}})
	if err != nil {
		b.Fatal(err)
	}
	want := net.ParseIP(svc.GetSpec().GetClusterIP())
	if want == nil {
		b.Fatalf("Service web has no ClusterIP: %v", svc.GetSpec())
	}
	const name = "web.default.svc." + local.ClusterDomain + "."
	var corednsIP string
	pods := client.For[*corev1.Pod](cl, "kube-system")
	waitFor(b, 30*time.Second, "a ready coredns pod", func() (bool, string) {
		l, err := pods.List(ctx, client.ListOptions{LabelSelector: "k8s-app=kube-dns"})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range l.Items {
			if condition(p, "Ready") == "True" && p.GetStatus().GetPodIP() != "" {
				corednsIP = p.Status.PodIP
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d coredns pods, none ready", len(l.Items))
	})
	clusterIP, podIP := net.JoinHostPort(local.ClusterDNS, "53"), net.JoinHostPort(corednsIP, "53")
	src := sourcesIn(b, c.Nodes[0])
	serviceDialer, directDialer := fromAddr(src.service, "udp"), fromAddr(src.direct, "udp")
	// skiff-dns learns of the Service from its watch, and the proxy of
	// coredns' endpoints from theirs.
	for _, t := range []struct {
		addr string
		nd   net.Dialer
	}{{clusterIP, serviceDialer}, {podIP, directDialer}} {
		addr := t.addr
		waitFor(b, 30*time.Second, name+" resolving at "+addr, func() (bool, string) {
			var why string
			var err error
			if nserr := inNetNS(ns, func() error {
				why, err = exchangeA(t.nd, addr, name, want, 2*time.Second)
				return nil
			}); nserr != nil {
				return false, nserr.Error()
			}
			if err != nil {
				return false, err.Error()
			}
			return why == "", why
		})
	}
	setup := time.Since(start)
	// A sub-benchmark, whose log is printed whole, unlike one under the
	// cluster's own lines.
	b.Run("udp", func(b *testing.B) {
		b.Logf("setup (one node, coredns ready and answering for the Service) took %s", setup.Round(time.Millisecond))
		// Warm-up outside the figures (its wrong answers still count), then
		// A B B A as for HTTP.
		var viaService, direct dnsResult
		viaService.wrong = dnsLoad(b, ns, serviceDialer, clusterIP, name, want, 50*loadWorkers, loadDuration).wrong
		direct.wrong = dnsLoad(b, ns, directDialer, podIP, name, want, 50*loadWorkers, loadDuration).wrong
		for range abbaRounds {
			for _, part := range []struct {
				addr string
				nd   net.Dialer
				to   *dnsResult
			}{{podIP, directDialer, &direct}, {clusterIP, serviceDialer, &viaService}, {clusterIP, serviceDialer, &viaService}, {podIP, directDialer, &direct}} {
				part.to.add(dnsLoad(b, ns, part.nd, part.addr, name, want, loadRequests/(2*abbaRounds), loadDuration/(2*abbaRounds)))
			}
		}
		for _, t := range []struct {
			what, addr string
			r          dnsResult
		}{{"clusterip", clusterIP, viaService}, {"podip", podIP, direct}} {
			r := t.r
			if len(r.wrong) > 0 {
				b.Errorf("%d answers at %s do not hold %s alone, e.g. %s", len(r.wrong), t.addr, want, r.wrong[0])
			}
			if tried := len(r.lat) + r.failed; r.failed*100 > tried {
				b.Errorf("%d of %d queries at %s failed, e.g. %v", r.failed, tried, t.addr, r.firstErr)
			}
			if len(r.lat) == 0 {
				b.Fatalf("no answers at %s", t.addr)
			}
			qps := float64(len(r.lat)) / r.elapsed.Seconds()
			p50, p99 := percentile(r.lat, 50), percentile(r.lat, 99)
			b.ReportMetric(qps, t.what+"-qps")
			b.ReportMetric(ms(p50), t.what+"-p50-ms")
			b.ReportMetric(ms(p99), t.what+"-p99-ms")
			b.Logf("%s (%s), %d workers, a socket per query: %.0f queries/s (%d answered in %s, %d failed), p50 %.3f ms, p99 %.3f ms",
				t.what, t.addr, loadWorkers, qps, len(r.lat), r.elapsed.Round(time.Millisecond), r.failed, ms(p50), ms(p99))
		}
	})
}

// endpoint is a URL and the bodies that count as a right answer from it.
type endpoint struct {
	url    string
	accept []string
}

type loadResult struct {
	ok, failed int
	wrong      []string
	firstErr   error
	elapsed    time.Duration
	// lat is each right answer's time: a max near a second is a SYN
	// that was retried.
	lat []time.Duration
}

func (r loadResult) String() string {
	if len(r.lat) == 0 {
		return fmt.Sprintf("no answers, %d failed", r.failed)
	}
	return fmt.Sprintf("%.0f req/s (%d ok in %s, %d failed; p50 %s, p99 %s, max %s)", r.rate(), r.ok, r.elapsed.Round(time.Millisecond), r.failed,
		percentile(r.lat, 50).Round(time.Microsecond), percentile(r.lat, 99).Round(time.Microsecond), slices.Max(r.lat).Round(time.Microsecond))
}

func (r loadResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func (r *loadResult) add(o loadResult) {
	r.ok += o.ok
	r.failed += o.failed
	r.wrong = append(r.wrong, o.wrong...)
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
}

// compareHTTP measures the pod IPs and the ClusterIP in turns, A B B A
// abbaRounds times, so that whatever drifts or comes in bursts during the
// run (the apiserver's, kubelet's and controllers' own work on the same two
// cores, GC) weighs on both alike.
func compareHTTP(b *testing.B, ctx context.Context, directClient *http.Client, direct []endpoint, serviceClient *http.Client, viaService []endpoint) (podIP, clusterIP loadResult) {
	b.Helper()
	// Warm both paths (keep-alive pools, conntrack, agnhost's goroutines)
	// outside the figures; their wrong answers still count.
	podIP.wrong = httpLoad(ctx, directClient, direct, 50*loadWorkers, loadDuration).wrong
	clusterIP.wrong = httpLoad(ctx, serviceClient, viaService, 50*loadWorkers, loadDuration).wrong
	for range abbaRounds {
		for _, part := range []struct {
			hc  *http.Client
			eps []endpoint
			to  *loadResult
		}{{directClient, direct, &podIP}, {serviceClient, viaService, &clusterIP}, {serviceClient, viaService, &clusterIP}, {directClient, direct, &podIP}} {
			part.to.add(httpLoad(ctx, part.hc, part.eps, loadRequests/(2*abbaRounds), loadDuration/(2*abbaRounds)))
		}
	}
	for _, r := range []struct {
		what string
		r    loadResult
	}{{"pod IP", podIP}, {"ClusterIP", clusterIP}} {
		if len(r.r.wrong) > 0 {
			b.Errorf("%s: %d wrong bodies, e.g. %s", r.what, len(r.r.wrong), r.r.wrong[0])
		}
		if tried := r.r.ok + r.r.failed; r.r.failed*100 > tried {
			b.Errorf("%s: %d of %d requests failed, e.g. %v", r.what, r.r.failed, tried, r.r.firstErr)
		}
		if r.r.ok == 0 {
			b.Fatalf("%s: no request answered", r.what)
		}
	}
	return podIP, clusterIP
}

// httpLoad sends GETs from loadWorkers goroutines, round-robin over eps,
// until maxReq have been sent or d has passed, and counts those whose body
// is one that eps accepts.
func httpLoad(ctx context.Context, hc *http.Client, eps []endpoint, maxReq int, d time.Duration) loadResult {
	var issued atomic.Int64
	results := make([]loadResult, loadWorkers)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range loadWorkers {
		wg.Go(func() {
			r := &results[w]
			for {
				i := issued.Add(1)
				if i > int64(maxReq) || time.Now().After(deadline) {
					return
				}
				ep := eps[int(i)%len(eps)]
				t0 := time.Now()
				body, err := getBody(ctx, hc, ep.url)
				took := time.Since(t0)
				switch {
				case err != nil:
					r.failed++
					if r.firstErr == nil {
						r.firstErr = err
					}
				case !slices.Contains(ep.accept, body):
					r.wrong = append(r.wrong, fmt.Sprintf("%s answered %q, want one of %q", ep.url, body, ep.accept))
				default:
					r.ok++
					r.lat = append(r.lat, took)
				}
			}
		})
	}
	wg.Wait()
	var total loadResult
	for _, r := range results {
		total.add(r)
	}
	total.elapsed = time.Since(start)
	return total
}

// getBody reads the whole body, which a keep-alive connection needs before
// it goes back to the pool.
func getBody(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(data)), nil
}

// readyWebPods waits for n ready app=web pods and returns their names,
// sorted, and IPs in the same order.
func readyWebPods(b testing.TB, ctx context.Context, cl *client.Client, n int) (names, ips []string) {
	b.Helper()
	pods := client.For[*corev1.Pod](cl, "default")
	waitFor(b, 60*time.Second, fmt.Sprintf("%d ready web pods", n), func() (bool, string) {
		l, err := pods.List(ctx, client.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err.Error()
		}
		ready := map[string]string{}
		for _, p := range l.Items {
			if condition(p, "Ready") == "True" && p.GetMetadata().GetDeletionTimestamp() == nil {
				ready[p.Metadata.Name] = p.Status.PodIP
			}
		}
		names, ips = nil, nil
		for name := range ready {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			ips = append(ips, ready[name])
		}
		return len(names) == n, fmt.Sprintf("ready %v", names)
	})
	return names, ips
}

// nsDialer makes sockets in a network namespace for an http.Transport,
// whose dials run on goroutines of its own choosing: a socket belongs to the
// namespace of the thread that created it, so the dials are handed to
// goroutines locked on threads inside the namespace. Once made, the
// connection is read and written from any thread.
type nsDialer struct{ reqs chan dialReq }

type dialReq struct {
	ctx           context.Context
	network, addr string
	reply         chan dialReply
}

type dialReply struct {
	conn net.Conn
	err  error
}

func newNSDialer(b testing.TB, ns string, nd net.Dialer, threads int) *nsDialer {
	b.Helper()
	d := &nsDialer{reqs: make(chan dialReq)}
	ready := make(chan struct{}, threads)
	errc := make(chan error, threads)
	for range threads {
		go func() {
			errc <- inNetNS(ns, func() error {
				ready <- struct{}{}
				for r := range d.reqs {
					c, err := nd.DialContext(r.ctx, r.network, r.addr)
					r.reply <- dialReply{c, err}
				}
				return nil
			})
		}()
	}
	for range threads {
		select {
		case <-ready:
		case err := <-errc:
			b.Fatalf("dialer in %s: %v", ns, err)
		}
	}
	b.Cleanup(func() { close(d.reqs) })
	return d
}

func (d *nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	reply := make(chan dialReply, 1)
	select {
	case d.reqs <- dialReq{ctx, network, addr, reply}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r := <-reply
	return r.conn, r.err
}

// sources are the node-namespace addresses the clients dial from.
//
// Through the ClusterIP: the node's address on the pod bridge, inside the
// cluster CIDR, so that skiff-proxy DNATs the traffic without masquerading
// it, as it does a pod's (the client). From the node's own address
// it would also be masqueraded, as upstream's kube-proxy does for clients
// outside the cluster CIDR; and masquerade fully-random under thousands of
// new connections a second picks tuples that the pod still holds in
// TIME_WAIT, whose SYNs the pod answers with a stale ACK until they are
// retried a second later. That is the kernel's, not the proxy's: one
// "dnat" and one "masquerade fully-random" rule in two bare namespaces do
// the same.
//
// Straight to the pod: the node's own address, which nothing else uses
// towards the pods, never the bridge's: the pod would see both kinds of
// connection from one address and port range with different TCP timestamp
// offsets (Linux derives one per address pair, and the ClusterIP is not the
// pod IP), and refuse, with the same stale ACK, a SYN that reuses the other
// kind's TIME_WAIT 4-tuple: a cost of mixing the two in one run, not of
// either path.
type sources struct{ service, direct string }

func sourcesIn(b testing.TB, n *local.Node) sources {
	b.Helper()
	_, cluster, err := net.ParseCIDR(local.ClusterCIDR)
	if err != nil {
		b.Fatal(err)
	}
	var bridge string
	if err := inNetNS(n.NetNS(), func() error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && cluster.Contains(ipn.IP) {
				bridge = ipn.IP.String()
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	if bridge == "" {
		b.Fatalf("%s has no address inside the cluster CIDR %s", n.Name, local.ClusterCIDR)
	}
	return sources{service: bridge, direct: n.IP}
}

// fromAddr dials from ip. IP_BIND_ADDRESS_NO_PORT leaves the port to
// connect, as without a bind, so that tens of thousands of connections in
// TIME_WAIT share ports across destinations rather than run out of them.
func fromAddr(ip, network string) net.Dialer {
	var laddr net.Addr = &net.TCPAddr{IP: net.ParseIP(ip)}
	if network == "udp" {
		laddr = &net.UDPAddr{IP: net.ParseIP(ip)}
	}
	return net.Dialer{LocalAddr: laddr, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
}

type dnsResult struct {
	lat      []time.Duration
	failed   int
	wrong    []string
	firstErr error
	elapsed  time.Duration
}

func (r *dnsResult) add(o dnsResult) {
	r.lat = append(r.lat, o.lat...)
	r.failed += o.failed
	r.wrong = append(r.wrong, o.wrong...)
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	r.elapsed += o.elapsed
}

// dnsLoad queries addr for name's A record from loadWorkers goroutines in
// namespace ns, until maxQ queries have been sent or d has passed.
func dnsLoad(b testing.TB, ns string, nd net.Dialer, addr, name string, want net.IP, maxQ int, d time.Duration) dnsResult {
	b.Helper()
	var issued atomic.Int64
	results := make([]dnsResult, loadWorkers)
	errs := make([]error, loadWorkers)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range loadWorkers {
		wg.Go(func() {
			r := &results[w]
			errs[w] = inNetNS(ns, func() error {
				for issued.Add(1) <= int64(maxQ) && time.Now().Before(deadline) {
					t0 := time.Now()
					why, err := exchangeA(nd, addr, name, want, 2*time.Second)
					took := time.Since(t0)
					switch {
					case err != nil:
						r.failed++
						if r.firstErr == nil {
							r.firstErr = err
						}
					case why != "":
						r.wrong = append(r.wrong, why)
					default:
						r.lat = append(r.lat, took)
					}
				}
				return nil
			})
		})
	}
	wg.Wait()
	var total dnsResult
	for w, r := range results {
		if errs[w] != nil {
			b.Fatal(errs[w])
		}
		total.add(r)
	}
	total.elapsed = time.Since(start)
	return total
}

// exchangeA sends one A query for name to addr over UDP on a socket of its
// own, made on the calling thread (and so in its network namespace), and
// returns why the answer is not exactly want ("" when it is); err is a
// query that got no answer at all.
func exchangeA(nd net.Dialer, addr, name string, want net.IP, timeout time.Duration) (why string, err error) {
	nd.Timeout = timeout
	conn, err := nd.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	co := &dns.Conn{Conn: conn}
	if err := co.WriteMsg(q); err != nil {
		return "", err
	}
	r, err := co.ReadMsg()
	if err != nil {
		return "", err
	}
	if r.Id != q.Id {
		return fmt.Sprintf("answer id %d to query id %d", r.Id, q.Id), nil
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return fmt.Sprintf("%s with %d answers: %v", dns.RcodeToString[r.Rcode], len(r.Answer), r.Answer), nil
	}
	if a, ok := r.Answer[0].(*dns.A); !ok || !a.A.Equal(want) {
		return fmt.Sprintf("answer %v, want A %s", r.Answer[0], want), nil
	}
	return "", nil
}

// waitFor polls cond for up to d: eventually, for benchmarks too.
func waitFor(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %s", what, d, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
