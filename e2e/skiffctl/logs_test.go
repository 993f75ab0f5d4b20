package skiffctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
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

// logsKubelet is node n1's kubelet as the apiserver reaches it: TLS that
// requires a client certificate of the cluster CA, answering
// /containerLogs with a line naming what was asked.
type logsKubelet struct {
	mu      sync.Mutex
	queries []string
}

func (k *logsKubelet) asked() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.queries...)
}

func startLogsCluster(t *testing.T) (*cluster, *logsKubelet) {
	t.Helper()
	c := newCluster(t)
	k := &logsKubelet{}
	ca, err := os.ReadFile(filepath.Join(c.s.Opts.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cn := r.TLS.PeerCertificates[0].Subject.CommonName; cn != "kube-apiserver-kubelet-client" {
			http.Error(w, "unexpected client "+cn, http.StatusForbidden)
			return
		}
		k.mu.Lock()
		k.queries = append(k.queries, r.URL.Path+"?"+r.URL.RawQuery)
		k.mu.Unlock()
		parts := strings.Split(r.URL.Path, "/") // "", containerLogs, ns, pod, container
		if parts[4] == "waiting" {
			http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start: ContainerCreating", parts[4], parts[3]), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s says hello\n%s says bye\n", parts[4], parts[4])
		if r.URL.Query().Get("follow") == "true" {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}))
	srv.TLS = &tls.Config{ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	ctx := context.Background()
	api := client.New(c.s.Conn)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	nodes := client.For[*corev1.Node](api, "")
	node, err := nodes.Create(ctx, &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	node.Status = &corev1.NodeStatus{
		Addresses:       []*corev1.NodeAddress{{Type: "InternalIP", Address: host}},
		DaemonEndpoints: &corev1.NodeDaemonEndpoints{KubeletEndpoint: &corev1.DaemonEndpoint{Port: int32(p)}},
	}
	if _, err := nodes.UpdateStatus(ctx, node); err != nil {
		t.Fatal(err)
	}
	ctr := func(names ...string) []*corev1.Container {
		var out []*corev1.Container
		for _, n := range names {
			out = append(out, &corev1.Container{Name: n, Image: "x"})
		}
		return out
	}
	for _, pod := range []*corev1.Pod{
		{Metadata: &metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
			Spec: &corev1.PodSpec{NodeName: "n1", Containers: ctr("app", "side", "waiting"), InitContainers: ctr("setup")}},
		{Metadata: &metav1.ObjectMeta{Name: "web-2", Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{"kubectl.kubernetes.io/default-container": "side"}},
			Spec: &corev1.PodSpec{NodeName: "n1", Containers: ctr("app", "side")}},
	} {
		if _, err := client.For[*corev1.Pod](api, "default").Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	return c, k
}

func TestLogs(t *testing.T) {
	c, k := startLogsCluster(t)

	out, errOut, code := c.run("", "logs", "web")
	if code != 0 || out != "app says hello\napp says bye\n" || errOut != `Defaulted container "app" out of: app, side, waiting, setup (init)`+"\n" {
		t.Errorf("logs web: %d %q %q", code, out, errOut)
	}
	// The annotation picks the container, silently.
	out, errOut, code = c.run("", "logs", "pod/web-2")
	if code != 0 || out != "side says hello\nside says bye\n" || errOut != "" {
		t.Errorf("logs pod/web-2: %d %q %q", code, out, errOut)
	}
	out, _, code = c.run("", "logs", "web", "side", "--tail", "1", "--timestamps", "-p", "--since", "90s", "--limit-bytes", "100")
	if code != 0 || out != "side says hello\nside says bye\n" {
		t.Errorf("logs web side: %d %q", code, out)
	}
	q := k.asked()
	if last := q[len(q)-1]; last != "/containerLogs/default/web/side?limitBytes=100&previous=true&sinceSeconds=90&tailLines=1&timestamps=true" {
		t.Errorf("kubelet was asked %s", last)
	}

	// A selector reads every pod, 10 lines each unless --tail says, prefixed on request.
	out, _, code = c.run("", "logs", "-l", "app=web", "--prefix", "-c", "app")
	want := "[pod/web/app] app says hello\n[pod/web/app] app says bye\n[pod/web-2/app] app says hello\n[pod/web-2/app] app says bye\n"
	if code != 0 || out != want {
		t.Errorf("logs -l: %d %q", code, out)
	}
	if q := k.asked(); !strings.HasSuffix(q[len(q)-1], "tailLines=10") {
		t.Errorf("selector without --tail asked %s", q[len(q)-1])
	}

	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"logs", "web", "-c", "nope"}, "error: container nope is not valid for pod web\n"},
		{[]string{"logs", "web", "-c", "waiting"}, `Error from server (BadRequest): container "waiting" in pod "web" is waiting to start: ContainerCreating` + "\n"},
		{[]string{"logs", "missing"}, `Error from server (NotFound): pods "missing" not found` + "\n"},
		{[]string{"logs"}, "error: expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.\nPOD or TYPE/NAME is a required argument for the logs command\n"},
		{[]string{"logs", "web", "--since", "1m", "--since-time", "2024-01-01T00:00:00Z"}, "error: at most one of `sinceTime` or `sinceSeconds` may be specified\n"},
		{[]string{"logs", "web", "--all-containers", "-c", "app"}, "error: --container cannot be specified when --all-containers is set\n"},
	} {
		_, errOut, code := c.run("", tc.args...)
		if code != 1 || errOut != tc.err {
			t.Errorf("%v: %d %q, want %q", tc.args, code, errOut, tc.err)
		}
	}
}

// -f over several containers streams them all at once, whole lines each,
// until the user interrupts.
func TestLogsFollowAllContainers(t *testing.T) {
	c, _ := startLogsCluster(t)
	r := c.start("logs", "web-2", "-f", "--all-containers", "--prefix")
	r.waitFor("both containers' lines", func(out string) bool {
		return strings.Contains(out, "[pod/web-2/app] app says bye\n") && strings.Contains(out, "[pod/web-2/side] side says bye\n")
	})
	if code := r.stop(); code != 0 {
		t.Errorf("exit %d, stderr %q", code, r.err.String())
	}
	lines := strings.Split(strings.TrimSuffix(r.out.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Errorf("output %q", r.out.String())
	}
	_, errOut, code := c.run("", "logs", "-l", "app=web", "-f", "--all-containers", "--max-log-requests", "3")
	if code != 1 || errOut != "error: you are attempting to follow 6 log streams, but maximum allowed concurrency is 3, use --max-log-requests to increase the limit\n" {
		t.Errorf("following 6 streams with --max-log-requests 3: exit %d, %q", code, errOut)
	}
}
