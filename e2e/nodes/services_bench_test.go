package nodes

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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
	// Each target's budget is spent in 2×abbaRounds turns, A B B A, so that
	// drift on the machine weighs on both alike.
	abbaRounds = 3
)

// loadBounds are agnhost bench-http's and bench-dns's flags for the bounds
// above; count is the flag of the request budget.
func loadBounds(count string) []string {
	return []string{"--workers", strconv.Itoa(loadWorkers), "--" + count, strconv.Itoa(loadRequests),
		"--duration", loadDuration.String(), "--rounds", strconv.Itoa(abbaRounds),
		"--warmup", strconv.Itoa(50 * loadWorkers), "--wait", "30s"}
}

// BenchmarkServiceHTTP prints HTTP requests/s through a ClusterIP next to
// the same client straight to the pod IPs, in the same run, with keep-alive
// connections and with a new connection per request (DNAT is decided once
// per connection, so the second is where the proxy's rules cost), for one
// pod and then two behind the Service. The target is a ratio ≥ 90 %.
//
// The client is agnhost bench-http in a pod on the other node than the web
// pods, as a Service's client usually is: the ClusterIP is DNAT'd by the
// client node's proxy and both paths cross between the nodes alike. Client
// and servers still share the machine's two cores, so the ratio is the
// figure, not the rates.
func BenchmarkServiceHTTP(b *testing.B) {
	start := time.Now()
	c, cl := kubeletClusterN(b, 2)
	serverNode, clientNode := c.Nodes[0].Name, c.Nodes[1].Name
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	labels := map[string]string{"app": "web"}
	replicas := int32(1)
	deployments := client.For[*appsv1.Deployment](cl, "default")
	if _, err := deployments.Create(ctx, &appsv1.Deployment{Metadata: &metav1.ObjectMeta{Name: "web"}, Spec: &appsv1.DeploymentSpec{
		Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: &corev1.PodTemplateSpec{Metadata: &metav1.ObjectMeta{Labels: labels},
			Spec: &corev1.PodSpec{NodeName: serverNode, Containers: []*corev1.Container{agnhost("web")}}}}}); err != nil {
		b.Fatal(err)
	}
	svc, err := client.For[*corev1.Service](cl, "default").Create(ctx, &corev1.Service{Metadata: &metav1.ObjectMeta{Name: "web"},
		Spec: &corev1.ServiceSpec{Selector: labels, Ports: []*corev1.ServicePort{{Name: "http", Port: 80, TargetPort: &metav1.IntOrString{Type: 1, StrVal: "http"}}}}})
	if err != nil {
		b.Fatal(err)
	}
	clusterURL := "http://" + net.JoinHostPort(svc.GetSpec().GetClusterIP(), "80") + "/hostname"

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
			// bench-http waits (--wait) until each pod answers with its
			// name straight and every one of them through the ClusterIP,
			// which the proxy programs once it sees the EndpointSlice.
			args := []string{"bench-http", "--service", clusterURL}
			for i, ip := range ips {
				args = append(args, "--direct", names[i]+"=http://"+net.JoinHostPort(ip, "8080")+"/hostname")
			}
			setup := time.Since(start)
			for _, mode := range []string{"keepalive", "newconn"} {
				b.Run(mode, func(b *testing.B) {
					// Only the innermost benchmarks' logs are printed.
					if pods == 1 && mode == "keepalive" {
						b.Logf("setup (two nodes, coredns, one ready pod behind the Service) took %s", setup.Round(time.Millisecond))
					}
					r := runBenchPod(b, ctx, cl, fmt.Sprintf("bench-http-%d-%s", pods, mode), clientNode,
						slices.Concat(args, []string{"--conn", mode}, loadBounds("requests")))
					for _, t := range []struct {
						what string
						r    benchResult
					}{{"pod IP", r.Direct}, {"ClusterIP", r.Service}} {
						t.r.check(b, t.what)
					}
					b.ReportMetric(r.Service.Rate, "clusterip-req/s")
					b.ReportMetric(r.Direct.Rate, "podip-req/s")
					b.ReportMetric(r.RatioPercent, "ratio-%")
					b.Logf("%d pod(s), %s, %d workers, from a pod on %s: ClusterIP %s; pod IP %s: %.1f %% (target ≥ 90 %%)",
						pods, mode, loadWorkers, clientNode, r.Service, r.Direct, r.RatioPercent)
				})
			}
		})
	}
}

// BenchmarkClusterDNS prints queries/s and p50/p99 latency of A queries for
// web.default.svc.cluster.local against skiff-dns through the kube-dns
// ClusterIP, and straight to the coredns pod for comparison, from agnhost
// bench-dns in a pod on the other node than coredns'. Each query is on a
// socket of its own, as a pod's resolver makes one per lookup, so every
// query is a new conntrack flow, DNAT'd afresh through the ClusterIP.
func BenchmarkClusterDNS(b *testing.B) {
	start := time.Now()
	c, cl := kubeletClusterN(b, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
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
	var corednsIP, corednsNode string
	pods := client.For[*corev1.Pod](cl, "kube-system")
	waitFor(b, 30*time.Second, "a ready coredns pod", func() (bool, string) {
		l, err := pods.List(ctx, client.ListOptions{LabelSelector: "k8s-app=kube-dns"})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range l.Items {
			if condition(p, "Ready") == "True" && p.GetStatus().GetPodIP() != "" {
				corednsIP, corednsNode = p.Status.PodIP, p.Spec.NodeName
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d coredns pods, none ready", len(l.Items))
	})
	clientNode := c.Nodes[0].Name
	if clientNode == corednsNode {
		clientNode = c.Nodes[1].Name
	}
	setup := time.Since(start)
	// A sub-benchmark, whose log is printed whole, unlike one under the
	// cluster's own lines.
	b.Run("udp", func(b *testing.B) {
		b.Logf("setup (two nodes, coredns ready) took %s", setup.Round(time.Millisecond))
		// bench-dns waits (--wait) until both addresses answer with the
		// ClusterIP: skiff-dns learns of the Service from its watch, and
		// the proxy of coredns' endpoints from theirs.
		r := runBenchPod(b, ctx, cl, "bench-dns", clientNode, append([]string{"bench-dns",
			"--direct", corednsIP, "--service", local.ClusterDNS, "--name", name, "--want-a", want.String()},
			loadBounds("queries")...))
		for _, t := range []struct {
			what string
			r    benchResult
		}{{"clusterip", r.Service}, {"podip", r.Direct}} {
			t.r.check(b, t.what)
			b.ReportMetric(t.r.Rate, t.what+"-qps")
			b.ReportMetric(t.r.P50Ms, t.what+"-p50-ms")
			b.ReportMetric(t.r.P99Ms, t.what+"-p99-ms")
			b.Logf("%s (%s), %d workers, a socket per query, from a pod on %s (coredns on %s): %.0f queries/s (%d answered in %.3fs, %d failed), p50 %.3f ms, p99 %.3f ms",
				t.what, t.r.Targets, loadWorkers, clientNode, corednsNode, t.r.Rate, t.r.OK, t.r.DurationSeconds, t.r.Errors-t.r.Wrong, t.r.P50Ms, t.r.P99Ms)
		}
	})
}

// benchReport is the JSON line agnhost bench-http and bench-dns print
// (images/internal/agnhost/bench.Report).
type benchReport struct {
	Direct       benchResult `json:"direct"`
	Service      benchResult `json:"service"`
	RatioPercent float64     `json:"ratio_percent"`
}

type benchResult struct {
	Targets         []string `json:"targets"`
	Requests        int      `json:"requests"`
	OK              int      `json:"ok"`
	Errors          int      `json:"errors"`
	Wrong           int      `json:"wrong"`
	WarmupWrong     int      `json:"warmup_wrong"`
	FirstError      string   `json:"first_error"`
	FirstWrong      string   `json:"first_wrong"`
	DurationSeconds float64  `json:"duration_seconds"`
	Rate            float64  `json:"rate"`
	P50Ms           float64  `json:"p50_ms"`
	P99Ms           float64  `json:"p99_ms"`
	MaxMs           float64  `json:"max_ms"`
}

func (r benchResult) String() string {
	if r.OK == 0 {
		return fmt.Sprintf("no answers, %d errors", r.Errors)
	}
	return fmt.Sprintf("%.0f req/s (%d ok in %.3fs, %d failed; p50 %.3f ms, p99 %.3f ms, max %.3f ms)",
		r.Rate, r.OK, r.DurationSeconds, r.Errors-r.Wrong, r.P50Ms, r.P99Ms, r.MaxMs)
}

// check fails the benchmark on any wrong answer (a pod answering for
// another, or through the Service a pod that is not behind it), on more
// than 1 % of requests unanswered, and on no answer at all.
func (r benchResult) check(b *testing.B, what string) {
	b.Helper()
	if n := r.Wrong + r.WarmupWrong; n > 0 {
		b.Errorf("%s: %d wrong answers (%d in the warm-up), e.g. %s", what, n, r.WarmupWrong, r.FirstWrong)
	}
	if failed := r.Errors - r.Wrong; failed*100 > r.Requests {
		b.Errorf("%s: %d of %d requests failed, e.g. %s", what, failed, r.Requests, r.FirstError)
	}
	if r.OK == 0 {
		b.Fatalf("%s: no request answered", what)
	}
}

// runBenchPod runs agnhost with args in a pod on node, to its end, and
// returns the report it printed; the pod's other log lines are logged.
func runBenchPod(b *testing.B, ctx context.Context, cl *client.Client, name, node string, args []string) benchReport {
	b.Helper()
	pods := client.For[*corev1.Pod](cl, "default")
	if _, err := pods.Create(ctx, &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: name}, Spec: &corev1.PodSpec{
		NodeName: node, RestartPolicy: "Never",
		Containers: []*corev1.Container{{Name: "bench", Image: agnhostImage, Args: args}}}}); err != nil {
		b.Fatal(err)
	}
	// Gone before the next run, whose pod would otherwise share the node
	// with this one's teardown.
	defer func() {
		if _, err := pods.Delete(ctx, name, client.DeleteOptions{}); err != nil {
			b.Errorf("deleting pod %s: %v", name, err)
		}
	}()
	var phase string
	// The pod's start, its --wait, two warm-ups and the runs, each bounded.
	waitFor(b, 3*time.Minute, "pod "+name+" finishing", func() (bool, string) {
		p, err := pods.Get(ctx, name)
		if err != nil {
			return false, err.Error()
		}
		phase = p.GetStatus().GetPhase()
		return phase == "Succeeded" || phase == "Failed", p.GetStatus().String()
	})
	rc, err := cl.PodLogs(ctx, "default", name, client.LogOptions{})
	if err != nil {
		b.Fatalf("logs of pod %s: %v", name, err)
	}
	defer rc.Close()
	logs, err := io.ReadAll(rc)
	if err != nil {
		b.Fatalf("logs of pod %s: %v", name, err)
	}
	if phase != "Succeeded" {
		b.Fatalf("pod %s %s (agnhost %s):\n%s", name, phase, strings.Join(args, " "), logs)
	}
	var report []byte
	sc := bufio.NewScanner(strings.NewReader(string(logs)))
	for sc.Scan() {
		if line := sc.Bytes(); len(line) > 0 && line[0] == '{' {
			report = slices.Clone(line)
		} else {
			b.Logf("%s: %s", name, line)
		}
	}
	var r benchReport
	if err := json.Unmarshal(report, &r); err != nil {
		b.Fatalf("pod %s printed no report (%v):\n%s", name, err, logs)
	}
	return r
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
