package nodes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/e2e/local"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// The whole flow a user sees, on two nodes with their proxies and the DNS
// addon: a Deployment behind Services answers by name from a pod on either
// node, at its NodePort from the host, sticks with ClientIP affinity,
// refuses at once with no endpoints, answers again when scaled back, and
// a headless Service resolves to the pods' IPs.
func TestServices(t *testing.T) {
	c, cl := kubeletClusterN(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	binDir, _ := filepath.Abs("../../bin")
	inPod := func(pod, script string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "skiffctl"), "--kubeconfig", c.Kubeconfig(), "exec", pod, "--", "sh", "-c", script)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	labels := map[string]string{"app": "web"}
	replicas := int32(2)
	web := agnhost("web")
	web.ReadinessProbe.PeriodSeconds = 1
	d := &appsv1.Deployment{Metadata: &metav1.ObjectMeta{Name: "web"}, Spec: &appsv1.DeploymentSpec{
		Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: &corev1.PodTemplateSpec{Metadata: &metav1.ObjectMeta{Labels: labels}, Spec: &corev1.PodSpec{
			Containers: []*corev1.Container{web},
			// One on each node, so that some traffic always crosses.
			TopologySpreadConstraints: []*corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
				WhenUnsatisfiable: "DoNotSchedule", LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
		}}}}
	deployments := client.For[*appsv1.Deployment](cl, "default")
	if _, err := deployments.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	http8080 := &metav1.IntOrString{Type: 1, StrVal: "http"}
	services := client.For[*corev1.Service](cl, "default")
	for _, s := range []*corev1.Service{
		{Metadata: &metav1.ObjectMeta{Name: "web"}, Spec: &corev1.ServiceSpec{Type: "NodePort", Selector: labels,
			Ports: []*corev1.ServicePort{{Name: "http", Port: 80, TargetPort: http8080}}}},
		{Metadata: &metav1.ObjectMeta{Name: "sticky"}, Spec: &corev1.ServiceSpec{Selector: labels, SessionAffinity: "ClientIP",
			Ports: []*corev1.ServicePort{{Name: "http", Port: 80, TargetPort: http8080}}}},
		{Metadata: &metav1.ObjectMeta{Name: "headless"}, Spec: &corev1.ServiceSpec{ClusterIP: "None", Selector: labels,
			Ports: []*corev1.ServicePort{{Name: "http", Port: 8080}}}},
		// No load balancer answers here: it is served as a NodePort with
		// the Local policy, and gets a health-check node port.
		{Metadata: &metav1.ObjectMeta{Name: "local"}, Spec: &corev1.ServiceSpec{Type: "LoadBalancer", ExternalTrafficPolicy: "Local",
			Selector: labels, Ports: []*corev1.ServicePort{{Name: "http", Port: 80, TargetPort: http8080}}}},
	} {
		if _, err := services.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	pods := client.For[*corev1.Pod](cl, "default")
	client1 := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "client"}, Spec: &corev1.PodSpec{NodeName: c.Nodes[1].Name,
		Containers: []*corev1.Container{{Name: "sh", Image: "skiff.local/busybox:1.35", Command: []string{"sleep", "3600"}}}}}
	if _, err := pods.Create(ctx, client1); err != nil {
		t.Fatal(err)
	}
	var names, ips []string
	ipOf, nodeOf := map[string]string{}, map[string]string{}
	eventually(t, 90*time.Second, "two ready web pods and the client running", func() (bool, string) {
		names, ips = nil, nil
		l, err := pods.List(ctx, client.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range l.Items {
			if condition(p, "Ready") == "True" {
				names, ips = append(names, p.Metadata.Name), append(ips, p.Status.PodIP)
				ipOf[p.Metadata.Name], nodeOf[p.Metadata.Name] = p.Status.PodIP, p.Spec.NodeName
			}
		}
		cp, err := pods.Get(ctx, "client")
		return len(names) == 2 && err == nil && cp.GetStatus().GetPhase() == "Running", fmt.Sprintf("ready %v", names)
	})
	slices.Sort(names)

	// By name, through cluster DNS and the ClusterIP, from the client's node.
	loop := func(url string, n int) string {
		return fmt.Sprintf("for i in $(seq %d); do timeout 5 wget -qO- %s 2>&1; echo; done", n, url)
	}
	var seen []string
	eventually(t, 60*time.Second, "both pods answer web.default.svc.cluster.local", func() (bool, string) {
		out, err := inPod("client", loop("http://web.default.svc.cluster.local/hostname", 20))
		if err != nil {
			return false, fmt.Sprint(err, ": ", out)
		}
		seen = uniqueLines(out)
		return slices.Equal(seen, names), fmt.Sprintf("answers %v, want %v", seen, names)
	})
	// The short name resolves through the pod's search path.
	if out, err := inPod("client", "timeout 5 wget -qO- http://web/hostname"); err != nil || !slices.Contains(names, out) {
		t.Errorf("wget web/hostname: %q (%v), want one of %v", out, err, names)
	}

	// From the host, at each node's address and the NodePort.
	svc, err := services.Get(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	nodePort := strconv.Itoa(int(svc.Spec.Ports[0].NodePort))
	for _, n := range c.Nodes {
		body, err := hostGet("http://" + net.JoinHostPort(n.IP, nodePort) + "/hostname")
		if err != nil || !slices.Contains(names, body) {
			t.Errorf("NodePort on %s: %q (%v), want one of %v", n.Name, body, err, names)
		}
	}

	// Hairpin: a web pod reaching its own Service gets itself back, across
	// the bridge and masqueraded (netexec's /dial makes the requests from
	// the pod). Two pods at random: 20 tries all miss it with p ~1e-6.
	for _, name := range names {
		dial := fmt.Sprintf("http://%s/dial?request=hostname&protocol=http&host=%s&port=80&tries=20",
			net.JoinHostPort(ipOf[name], "8080"), svc.Spec.ClusterIP)
		if out, err := inPod("client", "timeout 30 wget -qO- '"+dial+"'"); err != nil || !strings.Contains(out, `"`+name+`"`) {
			t.Errorf("%s through its own Service: %s (%v), want its own name among the answers", name, out, err)
		}
	}

	// externalTrafficPolicy Local: each node's NodePort answers only with
	// the pod on that node, which sees the host's own address; the
	// health-check port says how many local endpoints the node has.
	lsvc, err := services.Get(ctx, "local")
	if err != nil {
		t.Fatal(err)
	}
	localPort, healthPort := strconv.Itoa(int(lsvc.Spec.Ports[0].NodePort)), strconv.Itoa(int(lsvc.Spec.HealthCheckNodePort))
	if lsvc.Spec.HealthCheckNodePort == 0 {
		t.Errorf("a LoadBalancer Service with externalTrafficPolicy Local has no healthCheckNodePort")
	}
	for _, n := range c.Nodes {
		var here string
		for _, name := range names {
			if nodeOf[name] == n.Name {
				here = name
			}
		}
		for range 10 {
			body, err := hostGet("http://" + net.JoinHostPort(n.IP, localPort) + "/hostname")
			if err != nil || body != here {
				t.Errorf("Local NodePort on %s: %q (%v), want only %s, the pod on that node", n.Name, body, err, here)
				break
			}
		}
		if body, err := hostGet("http://" + net.JoinHostPort(n.IP, localPort) + "/clientip"); err != nil || !strings.HasPrefix(body, n.HostIP+":") {
			t.Errorf("Local NodePort on %s: the pod saw %q (%v), want the host's %s", n.Name, body, err, n.HostIP)
		}
		eventually(t, 30*time.Second, "the health-check node port on "+n.Name, func() (bool, string) {
			body, err := hostGet("http://" + net.JoinHostPort(n.IP, healthPort) + "/healthz")
			return err == nil && strings.Contains(body, `"localEndpoints":1`), fmt.Sprint(body, err)
		})
	}

	// ClientIP affinity: one pod for every request of one client.
	if out, err := inPod("client", loop("http://sticky/hostname", 10)); err != nil || len(uniqueLines(out)) != 1 {
		t.Errorf("sessionAffinity ClientIP: answers %v (%v), want one pod", uniqueLines(out), err)
	}

	// A headless Service is the ready pods' addresses.
	out, err := inPod("client", "nslookup headless.default.svc.cluster.local "+local.ClusterDNS)
	for _, ip := range ips {
		if err != nil || !strings.Contains(out, ip) {
			t.Errorf("nslookup headless: %v\n%s\nwant %v", err, out, ips)
			break
		}
	}

	// No endpoints: refused at once, from the host and from a pod.
	scale := func(n int32) {
		t.Helper()
		dd, err := deployments.Get(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		dd.Spec.Replicas = &n
		if _, err := deployments.Update(ctx, dd); err != nil {
			t.Fatal(err)
		}
	}
	scale(0)
	addr := net.JoinHostPort(c.Nodes[0].IP, nodePort)
	eventually(t, 60*time.Second, "the NodePort refusing once web has no pods", func() (bool, string) {
		start := time.Now()
		conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err == nil {
			conn.Close()
			return false, "connected"
		}
		took := time.Since(start)
		return errors.Is(err, syscall.ECONNREFUSED) && took < time.Second, fmt.Sprintf("%v after %v", err, took)
	})
	// The client's node syncs on its own; until then the pods' endpoints
	// may still be listed while they terminate, as upstream's.
	eventually(t, 60*time.Second, "a pod's request refused at once with no endpoints", func() (bool, string) {
		start := time.Now()
		out, _ := inPod("client", "timeout 5 wget -qO- http://web/hostname 2>&1; true")
		took := time.Since(start)
		return strings.Contains(out, "refused") && took < 2*time.Second, fmt.Sprintf("%q after %v", out, took)
	})

	// Scaled back, it answers within seconds.
	scale(2)
	eventually(t, 60*time.Second, "web answering again after scaling back", func() (bool, string) {
		body, err := hostGet("http://" + addr + "/hostname")
		return err == nil && strings.HasPrefix(body, "web-"), fmt.Sprint(body, err)
	})

	// --cleanup removes the proxy's table from the node; a new sync would
	// bring it back, so the proxy is stopped first.
	n := c.Nodes[0]
	if err := c.StopProxy(n); err != nil {
		t.Fatal(err)
	}
	cleanup := exec.CommandContext(ctx, "nsenter", "--net="+n.NetNS(), "--", filepath.Join(binDir, "skiff-proxy"), "--cleanup")
	if out, err := cleanup.CombinedOutput(); err != nil {
		t.Fatalf("skiff-proxy --cleanup: %v\n%s", err, out)
	}
	for _, family := range []string{"ip", "ip6"} {
		out, err := exec.Command("nsenter", "--net="+n.NetNS(), "--", "nft", "list", "table", family, "skiff-proxy").CombinedOutput()
		if err == nil {
			t.Errorf("after --cleanup, table %s skiff-proxy is still there:\n%s", family, out)
		}
		// The proxies program their nodes' namespaces only, which
		// skiff-local down deletes (TestTwoNodes sees them gone): so down
		// leaves no table as long as none is ever in the host's.
		if out, err := exec.Command("nft", "list", "table", family, "skiff-proxy").CombinedOutput(); err == nil {
			t.Errorf("the host has a table %s skiff-proxy:\n%s", family, out)
		}
	}
}

func uniqueLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// hostGet is a GET from the host, whose body is the answer: an address
// that does not answer must never look like one that does.
func hostGet(url string) (string, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}
