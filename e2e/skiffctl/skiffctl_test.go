// Package skiffctl runs skiffctl's commands in-process against a real
// in-process apiserver on an embedded etcd, as a user's shell would: every
// verb, its output and its errors. It lives in the e2e module so that
// skiffctl's own module never depends on the apiserver.
package skiffctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/ctl/app"
)

// cluster is one in-process apiserver shared by the command tests.
type cluster struct {
	t *testing.T
	s *apitest.Server
}

func newCluster(t *testing.T) *cluster {
	return &cluster{t: t, s: apitest.Start(t)}
}

// args points a command line at the cluster, as a user's --kubeconfig does.
func (c *cluster) args(args []string) []string {
	return append([]string{"--kubeconfig", c.s.AdminConfig()}, args...)
}

// run executes skiffctl with args against the cluster, as a user's shell would.
func (c *cluster) run(stdin string, args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = app.Main(app.Streams{In: strings.NewReader(stdin), Out: &out, Err: &errb}, c.args(args))
	return out.String(), errb.String(), code
}

// syncBuffer is output a test reads while the command is still writing it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is a skiffctl that runs until the user interrupts it.
type running struct {
	t        *testing.T
	out, err *syncBuffer
	cancel   context.CancelFunc
	exited   chan struct{}
	code     int // set before exited closes
}

// start runs skiffctl in the background; stop is its Ctrl-C.
func (c *cluster) start(args ...string) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: c.t, out: &syncBuffer{}, err: &syncBuffer{}, cancel: cancel, exited: make(chan struct{})}
	go func() {
		r.code = app.Run(ctx, app.Streams{In: strings.NewReader(""), Out: r.out, Err: r.err}, c.args(args))
		close(r.exited)
	}()
	c.t.Cleanup(func() { r.stop() })
	return r
}

// stop interrupts the command and returns its exit code.
func (r *running) stop() int {
	r.cancel()
	<-r.exited
	return r.code
}

// wait waits for the command to exit by itself.
func (r *running) wait() int {
	r.t.Helper()
	select {
	case <-r.exited:
		return r.code
	case <-time.After(60 * time.Second):
		r.t.Fatalf("skiffctl still runs:\n%s\nstderr:\n%s", r.out.String(), r.err.String())
		return 0
	}
}

// waitFor waits until the output satisfies ok. The deadline only keeps a
// broken command from hanging the test; nothing depends on how soon.
func (r *running) waitFor(what string, ok func(out string) bool) {
	r.t.Helper()
	r.waitOn(r.out, what, ok)
}

// waitForStderr is waitFor on the diagnostics.
func (r *running) waitForStderr(what string, ok func(errOut string) bool) {
	r.t.Helper()
	r.waitOn(r.err, what, ok)
}

func (r *running) waitOn(b *syncBuffer, what string, ok func(string) bool) {
	r.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok(b.String()) {
		select {
		case <-r.exited:
			r.t.Fatalf("skiffctl exited %d before %s:\n%s\nstderr:\n%s", r.code, what, r.out.String(), r.err.String())
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no %s in:\n%s\nstderr:\n%s", what, r.out.String(), r.err.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitWatchers waits until the apiserver has at least n watches of
// resource registered: a command's watch is in place, whatever it printed.
func (c *cluster) waitWatchers(resource string, n int) {
	c.t.Helper()
	line := `apiserver_registered_watchers{resource="` + resource + `"} `
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(c.s.Metrics + "/metrics")
		if err != nil {
			c.t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			c.t.Fatal(err)
		}
		got := 0
		for _, l := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(l, line); ok {
				got, _ = strconv.Atoi(v)
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d watches of %s registered, want %d", got, resource, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *cluster) must(stdin string, args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("skiffctl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

const web = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
`

func TestApplyCreatesConfiguresAndPrunesRemovedFields(t *testing.T) {
	c := newCluster(t)
	out := c.must(web, "apply", "-f", "-")
	if out != "deployment.apps/web created\nservice/web created\n" {
		t.Fatalf("first apply:\n%s", out)
	}
	if out := c.must(web, "apply", "-f", "-"); out != "deployment.apps/web unchanged\nservice/web unchanged\n" {
		t.Fatalf("second apply:\n%s", out)
	}
	// Someone else scales it; then the file drops the env B and the label.
	c.must("", "get", "deploy", "web")
	changed := strings.Replace(web, `env: [{name: A, value: "1"}, {name: B, value: "2"}]`, `env: [{name: A, value: "1"}]`, 1)
	changed = strings.Replace(changed, "  labels: {app: web}\nspec:\n  replicas: 2", "spec:\n  replicas: 2", 1)
	if out := c.must(changed, "apply", "-f", "-"); !strings.HasPrefix(out, "deployment.apps/web configured\n") {
		t.Fatalf("apply of a changed file:\n%s", out)
	}
	js := c.must("", "get", "deployment", "web", "-o", "json")
	if strings.Contains(js, `"name": "B"`) || strings.Contains(js, `"labels": {`+"\n"+`            "app": "web"`+"\n"+`        },`+"\n"+`        "name": "web"`) {
		t.Fatalf("removed fields survived:\n%s", js)
	}
	// Server-set fields survive an apply: the service keeps its defaults.
	if js := c.must("", "get", "svc", "web", "-o", "json"); !strings.Contains(js, `"sessionAffinity": "None"`) {
		t.Fatalf("service lost server fields:\n%s", js)
	}
}

// TestApplyRevertsHandEditsAndKeepsOthersFields: apply is three-way, as
// kubectl's: what the file sets wins over a hand edit, what only others set
// (a sidecar, an annotation) stays.
func TestApplyRevertsHandEditsAndKeepsOthersFields(t *testing.T) {
	c := newCluster(t)
	c.must(web, "apply", "-f", "-")
	c.must("", "patch", "deploy", "web", "--type", "json", "-p", `[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"nginx:by-hand"},`+
		`{"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"sidecar","image":"envoy:1"}}]`)
	c.must("", "scale", "deploy", "web", "--replicas", "5")
	c.must("", "annotate", "deploy", "web", "owner=ops")
	if out := c.must(web, "apply", "-f", "-"); out != "deployment.apps/web configured\nservice/web unchanged\n" {
		t.Fatalf("apply after hand edits:\n%s", out)
	}
	var d struct {
		Metadata struct{ Annotations map[string]string }
		Spec     struct {
			Replicas int
			Template struct {
				Spec struct {
					Containers []struct{ Name, Image string }
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(c.must("", "get", "deploy", "web", "-o", "json")), &d); err != nil {
		t.Fatal(err)
	}
	cs := d.Spec.Template.Spec.Containers
	if d.Spec.Replicas != 2 || len(cs) != 2 || cs[0].Name != "web" || cs[0].Image != "nginx:1.27" || cs[1].Name != "sidecar" || cs[1].Image != "envoy:1" {
		t.Errorf("replicas %d, containers %+v: want the file's 2 replicas and image, and the sidecar", d.Spec.Replicas, cs)
	}
	if d.Metadata.Annotations["owner"] != "ops" || d.Metadata.Annotations[app.LastApplied] == "" {
		t.Errorf("annotations %v: want owner=ops and the last applied configuration", d.Metadata.Annotations)
	}
}

// A second apply of an unchanged file is "unchanged" even where the
// three-way patch is not empty: a replace-strategy selector is always sent
// whole, a file's false is absent from the live object, stringData folds
// into data. The apiserver writes nothing, and apply says so.
func TestApplyTwiceIsUnchanged(t *testing.T) {
	c := newCluster(t)
	files := `apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: zk}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: zk}}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
globalDefault: false
---
apiVersion: v1
kind: Secret
metadata: {name: auth}
type: kubernetes.io/basic-auth
stringData: {username: admin, password: pw}
`
	c.must(files, "apply", "-f", "-")
	want := "poddisruptionbudget.policy/zk unchanged\npriorityclass.scheduling.k8s.io/high unchanged\nsecret/auth unchanged\n"
	if out := c.must(files, "apply", "-f", "-"); out != want {
		t.Fatalf("second apply:\n%s\nwant\n%s", out, want)
	}
	if out := c.must(strings.Replace(files, "minAvailable: 2", "minAvailable: 3", 1), "apply", "-f", "-"); !strings.HasPrefix(out, "poddisruptionbudget.policy/zk configured\n") {
		t.Fatalf("apply of a change:\n%s", out)
	}
}

func TestGetTablesAndFormats(t *testing.T) {
	c := newCluster(t)
	c.must(web, "apply", "-f", "-")
	out := c.must("", "get", "deployments")
	if !strings.HasPrefix(out, "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    0/2     0            0           ") {
		t.Fatalf("deployments table:\n%q", out)
	}
	out = c.must("", "get", "svc,deploy")
	if !strings.Contains(out, "service/web") || !strings.Contains(out, "deployment.apps/web") {
		t.Fatalf("two kinds:\n%s", out)
	}
	if out := c.must("", "get", "DEPLOY/web", "-o", "name"); out != "deployment.apps/web\n" {
		t.Fatalf("-o name: %q", out)
	}
	y := c.must("", "get", "deploy", "web", "-o", "yaml")
	if !strings.HasPrefix(y, "apiVersion: apps/v1\nkind: Deployment\n") {
		t.Fatalf("-o yaml:\n%s", y)
	}
	l := c.must("", "get", "deploy", "-o", "yaml")
	if !strings.HasPrefix(l, "apiVersion: v1\nitems:\n") || !strings.Contains(l, "kind: List") {
		t.Fatalf("-o yaml of a list:\n%s", l)
	}
	// -n is ignored for cluster-scoped kinds, -A adds NAMESPACE.
	if out := c.must("", "get", "ns", "-n", "kube-system"); !strings.Contains(out, "kube-public") {
		t.Fatalf("get ns -n:\n%s", out)
	}
	// The apiserver's own default/kubernetes Service is listed too.
	if out := c.must("", "get", "svc", "-A"); !regexp.MustCompile(`^NAMESPACE +NAME +TYPE`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^default +kubernetes +ClusterIP +10\.96\.0\.1 `).MatchString(out) {
		t.Fatalf("-A:\n%s", out)
	}
	if out := c.must("", "get", "deploy", "-l", "app=nope"); out != "" {
		t.Fatalf("empty selection printed %q", out)
	}
	_, errOut, _ := c.run("", "get", "deploy", "-l", "app=nope")
	if errOut != "No resources found in default namespace.\n" {
		t.Fatalf("empty selection: %q", errOut)
	}
}

func TestErrorsReadLikeKubectl(t *testing.T) {
	c := newCluster(t)
	cases := []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"get", "widgets"}, "error: the server doesn't have a resource type \"widgets\"\n"},
		{"", []string{"get", "pod", "nope"}, "Error from server (NotFound): pods \"nope\" not found\n"},
		{strings.Replace(web, "replicas: 2", "replicas: -2", 1), []string{"create", "-f", "-"},
			"The Deployment \"web\" is invalid: spec.replicas: Invalid value: -2: must be greater than or equal to 0\n"},
		{strings.Replace(strings.Replace(web, "replicas: 2", "replicas: -2", 1), "image: nginx:1.27", "image: \"\"", 1), []string{"apply", "-f", "-"},
			"The Deployment \"web\" is invalid: \n* spec.replicas: Invalid value: -2: must be greater than or equal to 0\n* spec.template.spec.containers[0].image: Required value\n"},
	}
	for _, tc := range cases {
		_, errOut, code := c.run(tc.stdin, tc.args...)
		if code != 1 || !strings.HasPrefix(errOut, tc.want) {
			t.Errorf("skiffctl %s: exit %d\n got %q\nwant %q", strings.Join(tc.args, " "), code, errOut, tc.want)
		}
	}
	c.must("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "create", "-f", "-")
	_, errOut, code := c.run("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "create", "-f", "-")
	if code != 1 || errOut != "Error from server (AlreadyExists): configmaps \"c\" already exists\n" {
		t.Errorf("create twice: %q", errOut)
	}
	// replace with a stale resourceVersion is upstream's conflict.
	_, errOut, code = c.run("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, resourceVersion: \"1\"}\ndata: {a: b}\n", "replace", "-f", "-")
	want := "Error from server (Conflict): Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again\n"
	if code != 1 || errOut != want {
		t.Errorf("stale replace: %q", errOut)
	}
	if out := c.must("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n", "replace", "-f", "-"); out != "configmap/c replaced\n" {
		t.Errorf("replace: %q", out)
	}
}

func TestDeleteByNameLabelAndFile(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(web), 0o644)
	c.must("", "apply", "-f", dir)
	if out := c.must("", "delete", "svc", "web"); out != "service \"web\" deleted\n" {
		t.Fatalf("delete: %q", out)
	}
	if out := c.must("", "delete", "-f", filepath.Join(dir, "web.yaml"), "--ignore-not-found"); out != "deployment.apps \"web\" deleted\n" {
		t.Fatalf("delete -f: %q", out)
	}
	c.must("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {x: z}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, labels: {x: z}}\n", "create", "-f", "-")
	if out := c.must("", "delete", "cm", "-l", "x=z"); out != "configmap \"a\" deleted\nconfigmap \"b\" deleted\n" {
		t.Fatalf("delete -l: %q", out)
	}
	if _, errOut, code := c.run("", "delete", "cm", "gone"); code != 1 || errOut != "Error from server (NotFound): configmaps \"gone\" not found\n" {
		t.Fatalf("delete missing: %d %q", code, errOut)
	}
}

func TestDescribeHistoryAndMetadataVerbs(t *testing.T) {
	c := newCluster(t)
	c.must("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, labels: {app: web}}\ndata: {mode: fast}\n", "apply", "-f", "-")
	out := c.must("", "describe", "configmap", "cfg")
	for _, want := range []string{"Name:", "cfg\n", "Namespace:", "Labels:", "app=web", "Data\n====\nmode:\n----\nfast\n", "Events:  <none>\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	if out := c.must("", "label", "cm", "cfg", "tier=db"); out != "configmap/cfg labeled\n" {
		t.Fatalf("label: %q", out)
	}
	if _, errOut, code := c.run("", "label", "cm", "cfg", "tier=web"); code != 1 || !strings.Contains(errOut, "'tier' already has a value (db), and --overwrite is false") {
		t.Fatalf("label without --overwrite: %q", errOut)
	}
	c.must("", "label", "cm", "cfg", "tier-")
	c.must("", "annotate", "cm", "cfg", "owner=team-a")
	if out := c.must("", "patch", "cm", "cfg", "-p", `{"data":{"mode":"slow"}}`); out != "configmap/cfg patched\n" {
		t.Fatalf("patch: %q", out)
	}
	hist := c.must("", "history", "cm", "cfg")
	lines := strings.Split(strings.TrimSpace(hist), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "REVISION") || !strings.Contains(lines[5], "created") {
		t.Fatalf("history:\n%s", hist)
	}
	first := strings.Fields(lines[5])[0]
	old := c.must("", "get", "cm", "cfg", "--revision", first, "-o", "json")
	if !strings.Contains(old, `"mode": "fast"`) {
		t.Fatalf("get --revision %s:\n%s", first, old)
	}
	c.must(web, "apply", "-f", "-")
	if out := c.must("", "scale", "deploy", "web", "--replicas", "4"); out != "deployment.apps/web scaled\n" {
		t.Fatalf("scale: %q", out)
	}
	if _, errOut, code := c.run("", "scale", "deploy", "web", "--replicas", "1", "--current-replicas", "3"); code != 1 || !strings.Contains(errOut, "expected replicas to be 3, was 4") {
		t.Fatalf("scale with a wrong --current-replicas: %q", errOut)
	}
	c.must("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n", "apply", "-f", "-")
	if out := c.must("", "cordon", "n1"); out != "node/n1 cordoned\n" {
		t.Fatalf("cordon: %q", out)
	}
	if out := c.must("", "cordon", "n1"); out != "node/n1 already cordoned\n" {
		t.Fatalf("cordon twice: %q", out)
	}
	if out := c.must("", "get", "nodes"); !strings.Contains(out, "SchedulingDisabled") {
		t.Fatalf("cordoned node:\n%s", out)
	}
	found := false
	for _, l := range strings.Split(c.must("", "api-resources"), "\n") {
		if f := strings.Fields(l); len(f) == 5 && f[0] == "deployments" && f[1] == "deploy" && f[2] == "apps/v1" && f[3] == "true" && f[4] == "Deployment" {
			found = true
		}
	}
	if !found {
		t.Fatal("api-resources lacks the deployments line")
	}
}

func TestCreateGenerators(t *testing.T) {
	c := newCluster(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "namespace", "team"}, "namespace/team created\n"},
		{[]string{"create", "deployment", "web", "--image", "nginx:1.27", "--replicas", "2", "--port", "80"}, "deployment.apps/web created\n"},
		{[]string{"create", "service", "clusterip", "web", "--tcp", "80:8080"}, "service/web created\n"},
		{[]string{"create", "configmap", "cfg", "--from-literal", "a=1", "--from-literal", "b=2"}, "configmap/cfg created\n"},
		{[]string{"create", "secret", "generic", "s", "--from-literal", "password=hunter2"}, "secret/s created\n"},
		{[]string{"create", "job", "pi", "--image", "perl:5.34", "--", "perl", "-e", "print 1"}, "job.batch/pi created\n"},
		{[]string{"create", "serviceaccount", "robot"}, "serviceaccount/robot created\n"},
	} {
		if out := c.must("", tc.args...); out != tc.want {
			t.Errorf("%v: %q, want %q", tc.args, out, tc.want)
		}
	}
	js := c.must("", "get", "deploy", "web", "-o", "json")
	for _, want := range []string{`"replicas": 2`, `"containerPort": 80`, `"name": "nginx"`, `"app": "web"`} {
		if !strings.Contains(js, want) {
			t.Errorf("deployment lacks %s:\n%s", want, js)
		}
	}
	if js := c.must("", "get", "svc", "web", "-o", "json"); !strings.Contains(js, `"targetPort": 8080`) || !strings.Contains(js, `"name": "80-8080"`) {
		t.Errorf("service:\n%s", js)
	}
	if js := c.must("", "get", "secret", "s", "-o", "json"); !strings.Contains(js, `"password": "aHVudGVyMg=="`) {
		t.Errorf("secret:\n%s", js)
	}
}

func TestRolloutSetImageWaitAndDrain(t *testing.T) {
	c := newCluster(t)
	c.must(web, "apply", "-f", "-")
	if out := c.must("", "set", "image", "deployment/web", "web=nginx:1.28"); out != "deployment.apps/web image updated\n" {
		t.Fatalf("set image: %q", out)
	}
	if js := c.must("", "get", "deploy", "web", "-o", "json"); !strings.Contains(js, `"image": "nginx:1.28"`) || !strings.Contains(js, `"generation": 2`) {
		t.Fatalf("after set image:\n%s", js)
	}
	// Play the deployment controller: report the rollout through status.
	status := func(s string) {
		c.t.Helper()
		c.must("", "patch", "deploy", "web", "--subresource", "status", "-p", s)
	}
	status(`{"status":{"observedGeneration":2,"replicas":2,"updatedReplicas":1,"availableReplicas":1}}`)
	if out := c.must("", "rollout", "status", "deploy/web", "--watch=false"); out != "Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated...\n" {
		t.Fatalf("rollout status: %q", out)
	}
	// Once it says it waits, it has read the object: it watches from that
	// object's resourceVersion, so the status written next is seen.
	rs := c.start("rollout", "status", "deploy/web", "--timeout", "20s")
	rs.waitFor("the rollout in progress", func(out string) bool { return strings.Contains(out, "1 out of 2 new replicas have been updated") })
	status(`{"status":{"observedGeneration":2,"replicas":2,"updatedReplicas":2,"availableReplicas":2,"conditions":[{"type":"Available","status":"True"}]}}`)
	if code := rs.wait(); code != 0 || rs.out.String() != "Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated...\ndeployment \"web\" successfully rolled out\n" {
		t.Fatalf("rollout status -w: exit %d: %q", code, rs.out.String())
	}
	if out := c.must("", "wait", "--for=condition=Available", "deploy/web", "--timeout", "5s"); out != "deployment.apps/web condition met\n" {
		t.Fatalf("wait: %q", out)
	}
	if out := c.must("", "wait", "--for=jsonpath={.status.replicas}=2", "deploy/web"); out != "deployment.apps/web condition met\n" {
		t.Fatalf("wait jsonpath: %q", out)
	}
	if _, errOut, code := c.run("", "wait", "--for=condition=Progressing", "deploy/web", "--timeout", "500ms"); code != 1 || !strings.Contains(errOut, "timed out waiting for the condition on deployments.apps/web") {
		t.Fatalf("wait timeout: %d %q", code, errOut)
	}
	for _, v := range [][2]string{{"pause", "deployment.apps/web paused\n"}, {"resume", "deployment.apps/web resumed\n"}, {"restart", "deployment.apps/web restarted\n"}} {
		if out := c.must("", "rollout", v[0], "deployment", "web"); out != v[1] {
			t.Errorf("rollout %s: %q", v[0], out)
		}
	}

	// drain: a pod with no controller needs --force; a PDB allowing no
	// disruption blocks eviction until it allows one.
	c.must("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n", "apply", "-f", "-")
	c.must("apiVersion: v1\nkind: Pod\nmetadata: {name: lone, labels: {app: db}}\nspec: {nodeName: n1, containers: [{name: c, image: i:1}]}\n", "apply", "-f", "-")
	// Upstream evicts a pending pod without asking its budget.
	c.must("", "patch", "pod", "lone", "--subresource", "status", "-p", `{"status":{"phase":"Running"}}`)
	_, errOut, code := c.run("", "drain", "n1")
	if code != 1 || !strings.Contains(errOut, "cannot delete Pods that declare no controller (use --force to override): default/lone") {
		t.Fatalf("drain without --force: %q", errOut)
	}
	c.must("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: db}\nspec: {minAvailable: 1, selector: {matchLabels: {app: db}}}\n", "apply", "-f", "-")
	dr := c.start("drain", "n1", "--force", "--timeout", "20s")
	dr.waitForStderr("the refused eviction", func(errOut string) bool {
		return strings.Contains(errOut, `error when evicting pods/"lone" -n "default" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.`)
	})
	c.must("", "patch", "pdb", "db", "--subresource", "status", "-p", `{"status":{"observedGeneration":1,"disruptionsAllowed":1,"currentHealthy":1,"desiredHealthy":1,"expectedPods":1}}`)
	code = dr.wait()
	if out := dr.out.String(); code != 0 || !strings.Contains(out, "node/n1 already cordoned\nevicting pod default/lone\n") || !strings.HasSuffix(out, "pod/lone evicted\nnode/n1 drained\n") {
		t.Fatalf("drain: exit %d\n%s", code, out)
	}
}

func TestOutputFormatsAndSorting(t *testing.T) {
	c := newCluster(t)
	for i, n := range []string{"b", "c", "a"} {
		c.must(fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s, labels: {tier: t%d}}\ndata: {num: \"%d\"}\n", n, i, 3-i), "apply", "-f", "-")
	}
	if out := c.must("", "get", "cm", "a", "-o", "jsonpath={.metadata.name} {.data.num}"); out != "a 1" {
		t.Fatalf("jsonpath: %q", out)
	}
	if out := c.must("", "get", "cm", "-o", "jsonpath={range .items[*]}{.metadata.name},{end}"); out != "a,b,c," {
		t.Fatalf("jsonpath over a list: %q", out)
	}
	if out := c.must("", "get", "cm", "-o", "custom-columns=NAME:.metadata.name,N:.data.num", "--sort-by", ".data.num"); out != "NAME   N\na      1\nc      2\nb      3\n" {
		t.Fatalf("custom-columns with --sort-by:\n%s", out)
	}
	out := c.must("", "get", "cm", "-L", "tier")
	if !strings.Contains(out, "TIER") || !strings.Contains(out, "t2") {
		t.Fatalf("-L:\n%s", out)
	}
}

func TestEditAndDiff(t *testing.T) {
	c := newCluster(t)
	c.must(web, "apply", "-f", "-")
	editor := func(expr string) string {
		p := filepath.Join(t.TempDir(), "editor.sh")
		os.WriteFile(p, []byte("#!/bin/sh\nsed -i '"+expr+"' \"$1\"\n"), 0o755)
		return p
	}
	t.Setenv("EDITOR", editor("s/replicas: 2/replicas: 3/"))
	if out := c.must("", "edit", "deploy", "web"); out != "deployment.apps/web edited\n" {
		t.Fatalf("edit: %q", out)
	}
	if js := c.must("", "get", "deploy", "web", "-o", "json"); !strings.Contains(js, `"replicas": 3`) {
		t.Fatalf("edit did not land:\n%s", js)
	}
	// An EDITOR with backslashes or quotes runs through the shell, as
	// kubectl runs it.
	t.Setenv("EDITOR", `sed -i s/replicas:\ 3/replicas:\ 4/`)
	if out := c.must("", "edit", "deploy", "web"); out != "deployment.apps/web edited\n" {
		t.Fatalf("edit with a shell EDITOR: %q", out)
	}
	t.Setenv("EDITOR", `sed -i 's/replicas: 4/replicas: 3/'`)
	if out := c.must("", "edit", "deploy", "web"); out != "deployment.apps/web edited\n" {
		t.Fatalf("edit with a quoted EDITOR: %q", out)
	}
	// An invalid edit reopens the file; saving it unchanged gives up.
	t.Setenv("EDITOR", editor("s/replicas: 3/replicas: -1/"))
	_, errOut, code := c.run("", "edit", "deploy", "web")
	if code != 1 || !strings.Contains(errOut, `The Deployment "web" is invalid: spec.replicas: Invalid value: -1`) || !strings.Contains(errOut, "Edit cancelled, no valid changes were saved.") {
		t.Fatalf("invalid edit: %d %q", code, errOut)
	}
	if _, err := exec.LookPath("diff"); err != nil {
		t.Skip("diff(1) is not installed (Debian package diffutils)")
	}
	changed := strings.Replace(web, "image: nginx:1.27", "image: nginx:1.28", 1)
	out, _, code := c.run(changed, "diff", "-f", "-")
	if code != 1 || !strings.Contains(out, "-        image: nginx:1.27") || !strings.Contains(out, "+        image: nginx:1.28") {
		t.Fatalf("diff: exit %d\n%s", code, out)
	}
	if js := c.must("", "get", "deploy", "web", "-o", "json"); !strings.Contains(js, "nginx:1.27") {
		t.Fatal("diff changed the object")
	}
}

func TestPruneAndDeleteWait(t *testing.T) {
	c := newCluster(t)
	two := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {set: s1}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, labels: {set: s1}}\n"
	c.must(two, "apply", "-f", "-")
	c.must("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hand, labels: {set: s1}}\n", "create", "-f", "-") // not from apply: never pruned
	out := c.must("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {set: s1}}\n", "apply", "-f", "-", "--prune", "-l", "set=s1")
	if out != "configmap/a unchanged\nconfigmap/b pruned\n" {
		t.Fatalf("prune: %q", out)
	}
	if out := c.must("", "get", "cm", "-o", "name"); out != "configmap/a\nconfigmap/hand\n" {
		t.Fatalf("after prune: %q", out)
	}
	// delete waits for finalizers.
	c.must("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [example.com/hold]}\n", "create", "-f", "-")
	del := c.start("delete", "cm", "held")
	// Marked for deletion: the delete was sent, and now waits.
	deadline := time.Now().Add(60 * time.Second)
	for c.must("", "get", "cm", "held", "-o", "jsonpath={.metadata.deletionTimestamp}") == "" {
		if time.Now().After(deadline) {
			t.Fatalf("delete never marked the object: %s", del.err.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-del.exited:
		t.Fatalf("delete returned before the finalizer was removed: %q", del.out.String())
	default:
	}
	c.must("", "patch", "cm", "held", "--type", "json", "-p", `[{"op":"remove","path":"/metadata/finalizers"}]`)
	if code := del.wait(); code != 0 || del.out.String() != "configmap \"held\" deleted\n" {
		t.Fatalf("delete --wait: exit %d %q", code, del.out.String())
	}
}

func TestRolloutUndoDaemonSetFromControllerRevision(t *testing.T) {
	c := newCluster(t)
	ds := `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: "agent:1"}]}
`
	c.must(ds, "apply", "-f", "-")
	var live struct {
		Metadata struct{ UID string } `json:"metadata"`
	}
	json.Unmarshal([]byte(c.must("", "get", "ds", "agent", "-o", "json")), &live)
	// What the daemonset controller records for revision 1.
	cr := fmt.Sprintf(`apiVersion: apps/v1
kind: ControllerRevision
metadata:
  name: agent-1
  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: %s, controller: true}]
revision: 1
data: {"spec":{"template":{"$patch":"replace","metadata":{"labels":{"app":"agent"}},"spec":{"containers":[{"name":"agent","image":"agent:1"}]}}}}
`, live.Metadata.UID)
	c.must(cr, "apply", "-f", "-")
	c.must(strings.Replace(cr, "agent-1", "agent-2", 1), "apply", "-f", "-") // a second, current revision
	c.must("", "set", "image", "ds/agent", "agent=agent:2")
	if out := c.must("", "rollout", "history", "ds/agent"); !strings.Contains(out, "REVISION   CHANGE-CAUSE\n1          <none>\n") {
		t.Fatalf("history:\n%s", out)
	}
	if out := c.must("", "rollout", "undo", "ds/agent", "--to-revision", "1"); out != "daemonset.apps/agent rolled back\n" {
		t.Fatalf("undo: %q", out)
	}
	if js := c.must("", "get", "ds", "agent", "-o", "json"); !strings.Contains(js, `"image": "agent:1"`) {
		t.Fatalf("after undo:\n%s", js)
	}
}

func TestDescribePodShowsWhyPendingAndEvents(t *testing.T) {
	c := newCluster(t)
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: big
  annotations: {scheduler.skiff.dev/diagnosis: '{"node-1":"NodeResourcesFit: Insufficient cpu","node-2":"TaintToleration: node(s) had untolerated taint {dedicated: batch}"}'}
spec: {containers: [{name: c, image: "nginx:1.27", resources: {requests: {cpu: "8"}}}]}
`
	c.must(pod, "apply", "-f", "-")
	c.must(`apiVersion: v1
kind: Event
metadata: {name: big.1}
involvedObject: {kind: Pod, name: big, namespace: default}
reason: FailedScheduling
message: "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: batch}."
type: Warning
source: {component: default-scheduler}
count: 1
`, "create", "-f", "-")
	out := c.must("", "describe", "pod", "big")
	for _, want := range []string{
		"Status:", "Pending", "QoS Class:", "Burstable",
		"Scheduling:\n  Node     Rejected by\n  ----     -----------\n  node-1   NodeResourcesFit: Insufficient cpu\n  node-2   TaintToleration: node(s) had untolerated taint {dedicated: batch}\n",
		"Warning   FailedScheduling", "default-scheduler   0/2 nodes are available",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
}

func TestDescribeEveryExampleHasItsLayout(t *testing.T) {
	c := newCluster(t)
	c.must("", "apply", "-f", "../../manifests/examples/")
	out := c.must("", "get", "all,cm,secret,role,rolebinding,clusterrole,clusterrolebinding,pdb,pc,hpa", "-A", "-o", "name")
	for _, ref := range strings.Fields(out) {
		kind, name, _ := strings.Cut(ref, "/")
		args := []string{"describe", kind, name, "-n", "default"}
		if strings.Contains(name, "fluentd") {
			args[4] = "kube-system"
		}
		d := c.must("", args...)
		if !strings.HasPrefix(d, "Name:") || !strings.Contains(d, name) {
			t.Errorf("describe %s:\n%s", ref, d)
		}
	}
}

func TestForbiddenReadsLikeKubectl(t *testing.T) {
	c := newCluster(t)
	c.must("", "create", "namespace", "closing")
	c.must("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: closing}\n", "create", "-f", "-")
	// The namespace stays Terminating (no namespace controller here), so new
	// content is refused.
	c.must("", "delete", "namespace", "closing", "--wait=false")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errOut, code := c.run("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fresh, namespace: closing}\n", "create", "-f", "-")
		if code == 1 && strings.HasPrefix(errOut, `Error from server (Forbidden): configmaps "fresh" is forbidden: unable to create new content in namespace closing because it is being terminated`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("create in a terminating namespace: %d %q", code, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestManifestsWithoutANameAreRefusedWhole: an object with no metadata,
// metadata: null, or a List item without metadata is refused, naming the
// file and the document, before any object of the input is sent.
func TestManifestsWithoutANameAreRefusedWhole(t *testing.T) {
	c := newCluster(t)
	const first = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n"
	for _, tc := range []struct{ name, second string }{
		{"no metadata", "---\napiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n"},
		{"metadata: null", "---\napiVersion: v1\nkind: ConfigMap\nmetadata: null\n"},
		{"a List item without metadata", "---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, data: {a: b}}\n"},
	} {
		for _, verb := range []string{"apply", "create", "replace", "delete", "diff"} {
			_, errOut, code := c.run(first+tc.second, verb, "-f", "-")
			want := "error: error validating \"STDIN\": document 1: metadata.name: Required value: name or generateName is required\n"
			if code != 1 || errOut != want {
				t.Errorf("%s: %s: exit %d\n got %q\nwant %q", tc.name, verb, code, errOut, want)
			}
		}
		if _, errOut, code := c.run("", "get", "cm", "first"); code != 1 || !strings.Contains(errOut, "NotFound") {
			t.Fatalf("%s: the object before the bad one was created: %q", tc.name, errOut)
		}
	}
	p := filepath.Join(t.TempDir(), "x.yaml")
	os.WriteFile(p, []byte(first+"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"), 0o644)
	if _, errOut, _ := c.run("", "apply", "-f", p); errOut != "error: error validating \""+p+"\": document 1: metadata.name: Required value: name or generateName is required\n" {
		t.Errorf("a file: %q", errOut)
	}
	// A generateName is enough to create, not to apply.
	gen := "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: gen-}\n"
	if _, errOut, code := c.run(first+"---\n"+gen, "apply", "-f", "-"); code != 1 || errOut != "error: from STDIN: cannot use generate name with apply\n" {
		t.Errorf("apply with generateName: %d %q", code, errOut)
	}
	if out := c.must(gen, "create", "-f", "-"); !strings.HasPrefix(out, "configmap/gen-") || len(out) <= len("configmap/gen- created\n") {
		t.Errorf("create with generateName: %q", out)
	}
}

// TestEmptyInputIsAnError: no objects is kubectl's error for apply, create
// and replace.
func TestEmptyInputIsAnError(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	for i, content := range []string{"", "# nothing here\n", "---\n---\n", "apiVersion: v1\nkind: List\nitems: []\n"} {
		p := filepath.Join(dir, fmt.Sprintf("empty-%d.yaml", i))
		os.WriteFile(p, []byte(content), 0o644)
		for _, verb := range []string{"apply", "create", "replace"} {
			if out, errOut, code := c.run("", verb, "-f", p); code != 1 || out != "" || errOut != "error: no objects passed to "+verb+"\n" {
				t.Errorf("%s -f %q: exit %d, %q %q", verb, content, code, out, errOut)
			}
		}
	}
	if _, errOut, code := c.run("", "apply", "-f", dir); code != 1 || errOut != "error: no objects passed to apply\n" {
		t.Errorf("apply -f of a directory of empty files: %d %q", code, errOut)
	}
}
