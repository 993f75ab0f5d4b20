// Package e2e drives the built binaries (bin/) as a user would: a cluster
// started by skiff-local, operated with skiffctl, inspected with etcdctl and
// curl. Run `make build` first; `make e2e` does both.
package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"skiff.dev/client/config"
	"skiff.dev/e2e/local"
	"skiff.dev/proto/codec"
)

var (
	binDir  string
	cluster *local.Cluster
)

func TestMain(m *testing.M) {
	abs, _ := filepath.Abs("../bin")
	binDir = abs
	for _, b := range []string{"skiff-apiserver", "skiff-scheduler", "skiff-controller-manager", "skiffctl"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s/%s is missing: run `make build` (or `make e2e`) first\n", binDir, b)
			os.Exit(1)
		}
	}
	dir, err := os.MkdirTemp("", "skiff-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster, err = local.Up(context.Background(), local.Options{Dir: dir, BinDir: binDir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cluster did not start:", err)
		os.Exit(1)
	}
	code := m.Run()
	cluster.Down()
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "e2e: cluster logs kept in", filepath.Join(dir, "logs"))
	}
	os.Exit(code)
}

// skiffctl runs the CLI against the test cluster.
func skiffctl(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "skiffctl"), append([]string{"--kubeconfig", cluster.Kubeconfig()}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func mustSkiffctl(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := skiffctl(t, "", args...)
	if code != 0 {
		t.Fatalf("skiffctl %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// subset reports the first path where want has something got lacks. A zero
// value in want may be absent from got: upstream omits those too
// (globalDefault: false comes back without the field from Kubernetes as well).
func subset(want, got any, path string) (string, bool) {
	if got == nil {
		switch w := want.(type) {
		case bool:
			return path, !w
		case float64:
			return path, w == 0
		case string:
			return path, w == ""
		case nil:
			return "", true
		}
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return path, false
		}
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, ok := subset(w[k], g[k], path+"."+k); !ok {
				return p, false
			}
		}
		return "", true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return path, false
		}
		for i := range w {
			if p, ok := subset(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); !ok {
				return p, false
			}
		}
		return "", true
	}
	return path, reflect.DeepEqual(want, got)
}

func TestApplyDocumentationExamples(t *testing.T) {
	out := mustSkiffctl(t, "apply", "-f", "../manifests/examples/")
	files, _ := filepath.Glob("../manifests/examples/*.yaml")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := codec.ReadManifests(bytes.NewReader(data), codec.Options{Strict: true})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, d := range docs {
			var want map[string]any
			if err := json.Unmarshal(d.JSON, &want); err != nil {
				t.Fatal(err)
			}
			kind := want["kind"].(string)
			name := want["metadata"].(map[string]any)["name"].(string)
			if !strings.Contains(out, "/"+name+" created") && !strings.Contains(out, "/"+name+" unchanged") {
				t.Errorf("apply output lacks %s %s:\n%s", kind, name, out)
			}
			// stringData is folded into data on write, as upstream.
			if sd, ok := want["stringData"].(map[string]any); ok {
				data, _ := want["data"].(map[string]any)
				if data == nil {
					data = map[string]any{}
				}
				for k, v := range sd {
					data[k] = base64.StdEncoding.EncodeToString([]byte(v.(string)))
				}
				want["data"] = data
				delete(want, "stringData")
			}
			ns := "default"
			if n, ok := want["metadata"].(map[string]any)["namespace"].(string); ok {
				ns = n
			}
			js := mustSkiffctl(t, "get", kind, name, "-n", ns, "-o", "json")
			var got map[string]any
			if err := json.Unmarshal([]byte(js), &got); err != nil {
				t.Fatalf("get %s %s -o json: %v\n%s", kind, name, err, js)
			}
			if p, ok := subset(want, got, ""); !ok {
				t.Errorf("%s %s (%s): field %s differs from the manifest", kind, name, filepath.Base(f), p)
			}
			md := got["metadata"].(map[string]any)
			for _, k := range []string{"uid", "resourceVersion", "creationTimestamp"} {
				if md[k] == nil || md[k] == "" {
					t.Errorf("%s %s: metadata.%s not set by the server", kind, name, k)
				}
			}
			y := mustSkiffctl(t, "get", kind, name, "-n", ns, "-o", "yaml")
			var fromYAML map[string]any
			if err := yaml.Unmarshal([]byte(y), &fromYAML); err != nil || !reflect.DeepEqual(normalizeJSON(t, fromYAML), normalizeJSON(t, got)) {
				t.Errorf("%s %s: -o yaml differs from -o json (%v)", kind, name, err)
			}
		}
	}
	// Applying again changes nothing.
	again := mustSkiffctl(t, "apply", "-f", "../manifests/examples/")
	if strings.Contains(again, "configured") || strings.Contains(again, "created") {
		t.Errorf("second apply changed objects:\n%s", again)
	}
}

func normalizeJSON(t *testing.T, v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	json.Unmarshal(b, &out)
	return out
}

const negDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: neg
spec:
  replicas: -2
  selector:
    matchLabels: {app: neg}
  template:
    metadata:
      labels: {app: neg}
    spec:
      containers:
      - name: web
        image: nginx:1.27
`

func TestInvalidManifestIsRefusedAndNotStored(t *testing.T) {
	_, errOut, code := skiffctl(t, negDeployment, "apply", "-f", "-")
	want := `The Deployment "neg" is invalid: spec.replicas: Invalid value: -2: must be greater than or equal to 0`
	if code != 1 || strings.TrimSpace(errOut) != want {
		t.Fatalf("apply of an invalid Deployment: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = skiffctl(t, "", "get", "deployment", "neg")
	if code != 1 || !strings.Contains(errOut, `Error from server (NotFound): deployments.apps "neg" not found`) {
		t.Fatalf("invalid Deployment was stored: exit %d %s", code, errOut)
	}
	_, errOut, code = skiffctl(t, "", "get", "widgets")
	if code != 1 || !strings.Contains(errOut, `the server doesn't have a resource type "widgets"`) {
		t.Fatalf("unknown kind: exit %d %s", code, errOut)
	}
}

func TestObjectsAreUnderUpstreamKeyLayoutInEtcd(t *testing.T) {
	etcdctl, err := exec.LookPath("etcdctl")
	if err != nil {
		t.Skip("etcdctl is not installed (Debian package etcd-client; make deps installs it)")
	}
	mustSkiffctl(t, "apply", "-f", "../manifests/examples/deployment.yaml")
	ep, err := os.ReadFile(filepath.Join(cluster.APIServerDataDir(), "etcd", "endpoint"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(etcdctl, "--endpoints", strings.TrimSpace(string(ep)), "get", "/registry/", "--prefix", "--keys-only")
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("etcdctl: %v\n%s", err, out)
	}
	for _, key := range []string{"/registry/deployments/default/nginx-deployment", "/registry/namespaces/default", "/registry/namespaces/kube-system"} {
		if !strings.Contains(string(out), key+"\n") {
			t.Errorf("etcd has no key %s:\n%s", key, out)
		}
	}
}

func TestMetricsEndpoint(t *testing.T) {
	mustSkiffctl(t, "get", "ns")
	resp, err := http.Get(cluster.Processes[0].Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"apiserver_request_total", "apiserver_request_duration_seconds", "etcd_request_duration_seconds", "apiserver_storage_objects"} {
		if !bytes.Contains(body, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// TestRestartKeepsObjects runs last: it restarts the cluster on its data.
func TestRestartKeepsObjects(t *testing.T) {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: survivor\ndata:\n  k: v\n"
	if _, errOut, code := skiffctl(t, cm, "create", "-f", "-"); code != 0 {
		t.Fatalf("create: %s", errOut)
	}
	cluster.Down()
	c, err := local.Up(context.Background(), local.Options{Dir: cluster.Dir, BinDir: binDir, Port: cluster.Port})
	if err != nil {
		t.Fatal(err)
	}
	cluster = c
	var got struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal([]byte(mustSkiffctl(t, "get", "configmap", "survivor", "-o", "json")), &got); err != nil || got.Data["k"] != "v" {
		t.Fatalf("after restart: %+v %v", got, err)
	}
}

func TestSchedulerBindsPodsToNodes(t *testing.T) {
	node := `apiVersion: v1
kind: Node
metadata:
  name: e2e-node
  labels: {kubernetes.io/hostname: e2e-node}
status:
  allocatable: {cpu: "2", memory: 4Gi, pods: "110"}
  capacity: {cpu: "2", memory: 4Gi, pods: "110"}
  conditions: [{type: Ready, status: "True"}]
`
	if _, errOut, code := skiffctl(t, node, "apply", "-f", "-"); code != 0 {
		t.Fatalf("node: %s", errOut)
	}
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: e2e-sched}\nspec:\n  containers: [{name: c, image: registry.local/pause:3.10, resources: {requests: {cpu: 500m}}}]\n"
	if _, errOut, code := skiffctl(t, pod, "apply", "-f", "-"); code != 0 {
		t.Fatalf("pod: %s", errOut)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := mustSkiffctl(t, "get", "pod", "e2e-sched", "-o", "json")
		if strings.Contains(out, `"nodeName": "e2e-node"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod not bound by skiff-scheduler:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually polls the command's output until ok holds, for up to 30s.
func eventually(t *testing.T, what string, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		done, last := ok()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s; last:\n%s", what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The flow against the real skiff-controller-manager that
// skiff-local started: a Deployment becomes a ReplicaSet and pods with
// upstream's names, a new namespace gets its ServiceAccount and CA, a Node
// gets a podCIDR.
func TestControllerManagerDrivesTheCluster(t *testing.T) {
	// No kubelet runs here to finish a bound pod's graceful deletion: keep
	// the pods unscheduled by cordoning the nodes other tests made.
	for _, n := range strings.Fields(mustSkiffctl(t, "get", "nodes", "-o", "jsonpath={.items[*].metadata.name}")) {
		mustSkiffctl(t, "cordon", n)
		t.Cleanup(func() { skiffctl(t, "", "uncordon", n) })
	}
	if out := mustSkiffctl(t, "create", "deployment", "e2e-web", "--image=x", "--replicas=3"); out != "deployment.apps/e2e-web created\n" {
		t.Fatalf("create deployment: %q", out)
	}
	eventually(t, "a ReplicaSet and three pods", func() (bool, string) {
		rs := mustSkiffctl(t, "get", "rs", "-l", "app=e2e-web", "-o", "name")
		pods := mustSkiffctl(t, "get", "pods", "-l", "app=e2e-web", "-o", "name")
		lines := strings.Fields(pods)
		if len(strings.Fields(rs)) != 1 || len(lines) != 3 {
			return false, rs + pods
		}
		rsName := strings.TrimPrefix(strings.TrimSpace(rs), "replicaset.apps/")
		for _, p := range lines {
			if !strings.HasPrefix(p, "pod/"+rsName+"-") || len(p) != len("pod/"+rsName+"-")+5 {
				return false, rs + pods
			}
		}
		return true, ""
	})
	mustSkiffctl(t, "scale", "deployment/e2e-web", "--replicas=1")
	eventually(t, "scaled to one pod", func() (bool, string) {
		pods := mustSkiffctl(t, "get", "pods", "-l", "app=e2e-web", "-o", "name")
		return len(strings.Fields(pods)) == 1, pods
	})
	mustSkiffctl(t, "delete", "deployment", "e2e-web", "--cascade=foreground")
	eventually(t, "the deployment's ReplicaSet and pods collected", func() (bool, string) {
		out := mustSkiffctl(t, "get", "rs,pods", "-l", "app=e2e-web", "-o", "name")
		return strings.TrimSpace(out) == "", out
	})

	mustSkiffctl(t, "create", "namespace", "e2e-team")
	eventually(t, "default ServiceAccount and kube-root-ca.crt in e2e-team", func() (bool, string) {
		out := mustSkiffctl(t, "get", "sa,cm", "-n", "e2e-team", "-o", "name")
		return strings.Contains(out, "serviceaccount/default") && strings.Contains(out, "configmap/kube-root-ca.crt"), out
	})

	if _, errOut, code := skiffctl(t, "apiVersion: v1\nkind: Node\nmetadata: {name: e2e-cidr}\n", "apply", "-f", "-"); code != 0 {
		t.Fatalf("node: %s", errOut)
	}
	eventually(t, "a podCIDR for the node", func() (bool, string) {
		out := mustSkiffctl(t, "get", "node", "e2e-cidr", "-o", "jsonpath={.spec.podCIDR}")
		return strings.HasPrefix(out, "10.244.") && strings.HasSuffix(out, "/24"), out
	})
}

// Each component authenticates with upstream's identity, minted by
// skiff-local from the cluster CA (the scheduler and controller-manager
// tests above prove those identities are accepted).
func TestComponentIdentities(t *testing.T) {
	for file, want := range map[string]string{
		"scheduler.conf":          "CN=system:kube-scheduler",
		"controller-manager.conf": "CN=system:kube-controller-manager",
	} {
		cfg, err := config.Load(filepath.Join(cluster.Dir, file))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(cfg.Users[0].User.ClientCertificateData)
		if block == nil {
			t.Fatalf("%s: no client certificate", file)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if got := cert.Subject.String(); got != want {
			t.Errorf("%s: subject %s, want %s", file, got, want)
		}
	}
}
