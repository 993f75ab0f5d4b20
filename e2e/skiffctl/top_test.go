package skiffctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// The kubelets' summaries as upstream's Summary API has them, cut to what
// only_cpu_and_memory returns.
type topContainer struct {
	Name   string         `json:"name"`
	CPU    map[string]any `json:"cpu,omitempty"`
	Memory map[string]any `json:"memory,omitempty"`
}

func ctrUsage(name string, nanoCores, bytes uint64) topContainer {
	return topContainer{Name: name,
		CPU:    map[string]any{"time": "2025-03-01T12:00:00Z", "usageNanoCores": nanoCores, "usageCoreNanoSeconds": 123456789},
		Memory: map[string]any{"time": "2025-03-01T12:00:00Z", "workingSetBytes": bytes}}
}

func podUsage(ns, name string, ctrs ...topContainer) map[string]any {
	return map[string]any{"podRef": map[string]string{"name": name, "namespace": ns, "uid": ns + "-" + name},
		"startTime": "2025-03-01T11:00:00Z", "containers": ctrs}
}

func nodeSummary(name string, nanoCores, bytes uint64, pods ...map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{
		"node": map[string]any{"nodeName": name, "startTime": "2025-03-01T10:00:00Z",
			"cpu":    map[string]any{"time": "2025-03-01T12:00:00Z", "usageNanoCores": nanoCores},
			"memory": map[string]any{"time": "2025-03-01T12:00:00Z", "workingSetBytes": bytes}},
		"pods": pods,
	})
	return b
}

type topKubelets struct {
	mu    sync.Mutex
	asked []string
}

func (k *topKubelets) queries() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.asked...)
}

const mib = 1 << 20

// startTopCluster is three nodes: n1 and n2 with kubelets serving their
// summaries, n3 whose kubelet is gone; pods on both live nodes.
func startTopCluster(t *testing.T) (*cluster, *topKubelets) {
	t.Helper()
	c := newCluster(t)
	k := &topKubelets{}
	ca, err := os.ReadFile(filepath.Join(c.s.Opts.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	summaries := map[string][]byte{
		"n1": nodeSummary("n1", 250_000_001, 1029*mib,
			podUsage("default", "web", ctrUsage("app", 100_000_000, 10*mib), ctrUsage("side", 50_000_000, 5*mib+1)),
			podUsage("kube-system", "dns", ctrUsage("coredns", 4_200_000, 20*mib))),
		"n2": nodeSummary("n2", 1_500_000_000, 2048*mib,
			podUsage("default", "db", ctrUsage("db", 300_000_000, 100*mib)),
			// A container just started: no rate yet, so no pod metrics.
			podUsage("default", "new", topContainer{Name: "c", Memory: map[string]any{"workingSetBytes": 1}}),
			// A pod the apiserver no longer has.
			podUsage("default", "deleted", ctrUsage("c", 1, 1))),
	}
	kubelet := func(node string) *httptest.Server {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if cn := r.TLS.PeerCertificates[0].Subject.CommonName; cn != "kube-apiserver-kubelet-client" {
				http.Error(w, "unexpected client "+cn, http.StatusForbidden)
				return
			}
			k.mu.Lock()
			k.asked = append(k.asked, node+" "+r.URL.Path+"?"+r.URL.RawQuery)
			k.mu.Unlock()
			if r.URL.Path != "/stats/summary" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write(summaries[node])
		}))
		srv.TLS = &tls.Config{ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	ctx := context.Background()
	api := client.New(c.s.Conn)
	nodes := client.For[*corev1.Node](api, "")
	q := func(s string) *metav1.Quantity { return &metav1.Quantity{String_: s} }
	// n3's kubelet address is a port nothing listens on any more.
	gone := kubelet("n3")
	gone.Close()
	for _, n := range []struct {
		name, cpu, mem, capCPU, capMem string
		addr                           string
	}{
		{"n1", "2", "4Gi", "4", "8Gi", kubelet("n1").Listener.Addr().String()},
		{"n2", "4", "8Gi", "4", "8Gi", kubelet("n2").Listener.Addr().String()},
		{"n3", "1", "1Gi", "1", "1Gi", gone.Listener.Addr().String()},
	} {
		node, err := nodes.Create(ctx, &corev1.Node{Metadata: &metav1.ObjectMeta{Name: n.name, Labels: map[string]string{"pool": map[bool]string{true: "big", false: "small"}[n.name == "n2"]}}})
		if err != nil {
			t.Fatal(err)
		}
		host, port, _ := net.SplitHostPort(n.addr)
		p, _ := strconv.Atoi(port)
		node.Status = &corev1.NodeStatus{
			Addresses:       []*corev1.NodeAddress{{Type: "InternalIP", Address: host}},
			DaemonEndpoints: &corev1.NodeDaemonEndpoints{KubeletEndpoint: &corev1.DaemonEndpoint{Port: int32(p)}},
			Capacity:        map[string]*metav1.Quantity{"cpu": q(n.capCPU), "memory": q(n.capMem)},
			// The percentages are of allocatable, unless --show-capacity.
			Allocatable: map[string]*metav1.Quantity{"cpu": q(n.cpu), "memory": q(n.mem)},
		}
		if _, err := nodes.UpdateStatus(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct{ ns, name, node, app string }{
		{"default", "web", "n1", "web"}, {"kube-system", "dns", "n1", "dns"},
		{"default", "db", "n2", "db"}, {"default", "new", "n2", "web"}, {"default", "pending", "", "web"},
	} {
		pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: p.name, Labels: map[string]string{"app": p.app}},
			Spec: &corev1.PodSpec{NodeName: p.node, Containers: []*corev1.Container{{Name: "c", Image: "x"}}}}
		if _, err := client.For[*corev1.Pod](api, p.ns).Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	return c, k
}

// table is output as rows of fields, so a test reads what a user sees
// without counting the padding.
func table(out string) string {
	var rows []string
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		rows = append(rows, strings.Join(strings.Fields(line), " "))
	}
	return strings.Join(rows, "\n")
}

func TestTopNode(t *testing.T) {
	c, k := startTopCluster(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		// 250000001 nanocores is 251m, as a quantity's MilliValue rounds up;
		// n3's kubelet does not answer, so it has no metrics.
		{[]string{"top", "node"}, "NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)\n" +
			"n1 251m 12% 1029Mi 25%\n" +
			"n2 1500m 37% 2048Mi 25%\n" +
			"n3 <unknown> <unknown> <unknown> <unknown>"},
		{[]string{"top", "node", "--sort-by", "cpu", "--no-headers"}, "n2 1500m 37% 2048Mi 25%\nn1 251m 12% 1029Mi 25%\nn3 <unknown> <unknown> <unknown> <unknown>"},
		{[]string{"top", "nodes", "n1"}, "NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)\nn1 251m 12% 1029Mi 25%"},
		{[]string{"top", "no", "-l", "pool=big"}, "NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)\nn2 1500m 37% 2048Mi 25%"},
		{[]string{"top", "node", "n1", "--show-capacity", "--no-headers"}, "n1 251m 6% 1029Mi 12%"},
	} {
		out, errOut, code := c.run("", tc.args...)
		if code != 0 || table(out) != tc.want {
			t.Errorf("%v: exit %d, stderr %q, output:\n%s\nwant:\n%s", tc.args, code, errOut, out, tc.want)
		}
	}
	// Columns line up as kubectl's tabwriter has them.
	out, _, _ := c.run("", "top", "node", "n1")
	if want := "NAME   CPU(cores)   CPU(%)   MEMORY(bytes)   MEMORY(%)   \nn1     251m         12%      1029Mi          25%         \n"; out != want {
		t.Errorf("top node n1 =\n%q\nwant\n%q", out, want)
	}
	for _, q := range k.queries() {
		if !strings.HasSuffix(q, " /stats/summary?only_cpu_and_memory=true") {
			t.Errorf("a kubelet was asked %q", q)
		}
	}

	// Asked for alone, a node whose kubelet is unreachable says why.
	_, errOut, code := c.run("", "top", "node", "n3")
	if code != 1 || !strings.HasPrefix(errOut, `Error from server (ServiceUnavailable): kubelet on node "n3": `) || !strings.Contains(errOut, "connection refused") {
		t.Errorf("top node n3: exit %d, %q", code, errOut)
	}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"top", "node", "--sort-by", "name"}, "error: --sort-by accepts only cpu or memory\n"},
		{[]string{"top", "node", "n9"}, `Error from server (NotFound): nodes "n9" not found` + "\n"},
	} {
		_, errOut, code := c.run("", tc.args...)
		if code != 1 || errOut != tc.err {
			t.Errorf("%v: exit %d, %q, want %q", tc.args, code, errOut, tc.err)
		}
	}
}

func TestTopPod(t *testing.T) {
	c, _ := startTopCluster(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		// A pod is the sum of its containers: 150m and 15Mi (5Mi+1 byte
		// prints as 5Mi alone, the sum of bytes as 15Mi).
		{[]string{"top", "pod"}, "NAME CPU(cores) MEMORY(bytes)\ndb 300m 100Mi\nweb 150m 15Mi"},
		{[]string{"top", "pods", "-A"}, "NAMESPACE NAME CPU(cores) MEMORY(bytes)\ndefault db 300m 100Mi\ndefault web 150m 15Mi\nkube-system dns 5m 20Mi"},
		{[]string{"top", "pod", "-A", "--sort-by", "memory", "--no-headers"}, "default db 300m 100Mi\nkube-system dns 5m 20Mi\ndefault web 150m 15Mi"},
		{[]string{"top", "po", "web", "--containers"}, "POD NAME CPU(cores) MEMORY(bytes)\nweb app 100m 10Mi\nweb side 50m 5Mi"},
		{[]string{"top", "pod", "-l", "app=web", "--containers", "--sort-by", "memory"}, "POD NAME CPU(cores) MEMORY(bytes)\nweb app 100m 10Mi\nweb side 50m 5Mi"},
		{[]string{"top", "pod", "-n", "kube-system"}, "NAME CPU(cores) MEMORY(bytes)\ndns 5m 20Mi"},
		{[]string{"top", "pod", "-A", "--containers", "--field-selector", "spec.nodeName=n1"}, "NAMESPACE POD NAME CPU(cores) MEMORY(bytes)\ndefault web app 100m 10Mi\ndefault web side 50m 5Mi\nkube-system dns coredns 5m 20Mi"},
	} {
		out, errOut, code := c.run("", tc.args...)
		if code != 0 || table(out) != tc.want {
			t.Errorf("%v: exit %d, stderr %q, output:\n%s\nwant:\n%s", tc.args, code, errOut, out, tc.want)
		}
	}

	out, errOut, code := c.run("", "top", "pod", "-n", "empty")
	if code != 0 || out != "" || errOut != "No resources found in empty namespace.\n" {
		t.Errorf("top pod in an empty namespace: exit %d, %q %q", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		// Running, but its container has no CPU rate yet; and one not scheduled.
		{[]string{"top", "pod", "new"}, "error: metrics not available yet\n"},
		{[]string{"top", "pod", "pending"}, "error: metrics not available yet\n"},
		{[]string{"top", "pod", "missing"}, `Error from server (NotFound): pods "missing" not found` + "\n"},
		{[]string{"top", "pod", "web", "-l", "app=web"}, "error: only one of NAME or selector can be provided\n"},
		{[]string{"top", "pod", "--sort-by", "name"}, "error: --sort-by accepts only cpu or memory\n"},
	} {
		_, errOut, code := c.run("", tc.args...)
		if code != 1 || errOut != tc.err {
			t.Errorf("%v: exit %d, %q, want %q", tc.args, code, errOut, tc.err)
		}
	}
}
