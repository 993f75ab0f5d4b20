package integration

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/apitest"
	appsv1 "skiff.dev/proto/api/apps/v1"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

const negDeployment = `
apiVersion: apps/v1
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

func TestCreateSetsServerFieldsAndDefaults(t *testing.T) {
	s := apitest.Start(t)
	d := manifest(t, strings.Replace(negDeployment, "replicas: -2", "replicas: 2", 1)).(*appsv1.Deployment)
	got := mustCreate(t, s, d)
	m := got.GetMetadata()
	if m.Uid == "" || m.ResourceVersion == "" || m.CreationTimestamp == nil || m.Generation != 1 || m.Namespace != "default" {
		t.Fatalf("server-set metadata missing: %v", m)
	}
	if got.Spec.GetRevisionHistoryLimit() != 10 || got.Spec.GetStrategy().GetType() != "RollingUpdate" {
		t.Errorf("deployment defaults not applied: %v", got.Spec)
	}
	if p := got.Spec.Template.Spec.Containers[0].ImagePullPolicy; p != "IfNotPresent" {
		t.Errorf("imagePullPolicy = %q, want IfNotPresent for a tagged image", p)
	}
	back, err := get(t, s, &appsv1.Deployment{}, "default", "neg")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, got) {
		t.Errorf("get differs from create's answer:\n%v\n%v", back, got)
	}
	if _, err := create(ctxT(t), s.API, d); !apierrors.IsAlreadyExists(err) ||
		apierrors.Message(err) != `deployments.apps "neg" already exists` {
		t.Errorf("second create: %v", err)
	}
}

func TestGenerateName(t *testing.T) {
	s := apitest.Start(t)
	cm := configMap("default", "", nil)
	cm.Metadata.GenerateName = "cfg-"
	a := mustCreate(t, s, cm)
	b := mustCreate(t, s, cm)
	if !strings.HasPrefix(a.Metadata.Name, "cfg-") || len(a.Metadata.Name) != 9 || a.Metadata.Name == b.Metadata.Name {
		t.Fatalf("generated names %q, %q", a.Metadata.Name, b.Metadata.Name)
	}
}

func TestInvalidIsRefusedWithFieldPathsAndNotStored(t *testing.T) {
	s := apitest.Start(t)
	_, err := create(ctxT(t), s.API, manifest(t, negDeployment))
	if !apierrors.IsInvalid(err) {
		t.Fatalf("create: %v, want Invalid", err)
	}
	want := `Deployment.apps "neg" is invalid: spec.replicas: Invalid value: -2: must be greater than or equal to 0`
	if got := apierrors.Message(err); got != want {
		t.Errorf("message:\n got %s\nwant %s", got, want)
	}
	if v := apierrors.FieldViolations(err); len(v) != 1 || v[0].Field != "spec.replicas" {
		t.Errorf("field violations: %+v", v)
	}
	if _, err := get(t, s, &appsv1.Deployment{}, "default", "neg"); !apierrors.IsNotFound(err) {
		t.Errorf("invalid object was stored: %v", err)
	}
	// Every error at once.
	bad := pod("default", "Bad_Name")
	bad.Spec.Containers = append(bad.Spec.Containers, &corev1.Container{Name: "c"})
	_, err = create(ctxT(t), s.API, bad)
	if v := apierrors.FieldViolations(err); len(v) < 3 {
		t.Errorf("want name, duplicate container and missing image errors, got %v", err)
	}
}

func TestConcurrentWritersLoseNoUpdate(t *testing.T) {
	s := apitest.Start(t)
	mustCreate(t, s, configMap("default", "counter", map[string]string{"n": "0"}))
	const writers, each = 50, 4
	var conflicts atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				for {
					cm, err := get(t, s, &corev1.ConfigMap{}, "default", "counter")
					if err != nil {
						t.Error(err)
						return
					}
					n, _ := strconv.Atoi(cm.Data["n"])
					cm.Data["n"] = strconv.Itoa(n + 1)
					_, err = update(ctxT(t), s.API, cm)
					if apierrors.IsConflict(err) {
						conflicts.Add(1)
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	cm, err := get(t, s, &corev1.ConfigMap{}, "default", "counter")
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["n"] != strconv.Itoa(writers*each) {
		t.Fatalf("counter = %s after %d increments: an update was lost", cm.Data["n"], writers*each)
	}
	if conflicts.Load() == 0 {
		t.Errorf("50 concurrent writers never conflicted: optimistic concurrency is not exercised")
	}
	// The stale-version message is upstream's.
	stale := proto.Clone(cm).(*corev1.ConfigMap)
	stale.Metadata.ResourceVersion = "2"
	_, err = update(ctxT(t), s.API, stale)
	want := `Operation cannot be fulfilled on configmaps "counter": the object has been modified; please apply your changes to the latest version and try again`
	if !apierrors.IsConflict(err) || apierrors.Message(err) != want {
		t.Errorf("stale update: %v", err)
	}
}

func TestGenerationMovesOnSpecOnlyAndStatusOnlyThroughStatus(t *testing.T) {
	s := apitest.Start(t)
	d := mustCreate(t, s, manifest(t, strings.Replace(negDeployment, "replicas: -2", "replicas: 1", 1)).(*appsv1.Deployment))
	d.Metadata.Labels = map[string]string{"team": "a"}
	d.Status = &appsv1.DeploymentStatus{Replicas: 7}
	a, err := update(ctxT(t), s.API, d)
	if err != nil {
		t.Fatal(err)
	}
	d = unpack(t, a, &appsv1.Deployment{})
	if d.Metadata.Generation != 1 || d.Status.GetReplicas() != 0 {
		t.Fatalf("label change: generation %d, status %v", d.Metadata.Generation, d.Status)
	}
	r := int32(3)
	d.Spec.Replicas = &r
	a, err = update(ctxT(t), s.API, d)
	if err != nil {
		t.Fatal(err)
	}
	d = unpack(t, a, &appsv1.Deployment{})
	if d.Metadata.Generation != 2 {
		t.Fatalf("spec change: generation %d, want 2", d.Metadata.Generation)
	}
	d.Status = &appsv1.DeploymentStatus{Replicas: 3, ObservedGeneration: 2}
	d.Spec.Paused = true // ignored by a status write
	a, err = s.API.UpdateStatus(ctxT(t), &apipb.UpdateRequest{Resource: kindOf(t, d).Ref(), Namespace: "default", Object: pack(t, d)})
	if err != nil {
		t.Fatal(err)
	}
	d = unpack(t, a, &appsv1.Deployment{})
	if d.Status.GetReplicas() != 3 || d.Spec.Paused || d.Metadata.Generation != 2 {
		t.Fatalf("status write: status %v paused %v generation %d", d.Status, d.Spec.Paused, d.Metadata.Generation)
	}
}

func TestPatchMergeAndJSON(t *testing.T) {
	s := apitest.Start(t)
	mustCreate(t, s, configMap("default", "p", map[string]string{"a": "1", "b": "2"}))
	ref := kindOf(t, &corev1.ConfigMap{}).Ref()
	a, err := s.API.Patch(ctxT(t), &apipb.PatchRequest{Resource: ref, Namespace: "default", Name: "p", PatchType: "merge",
		Patch: []byte(`{"data":{"a":null,"c":"3"},"metadata":{"labels":{"x":"y"}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	cm := unpack(t, a, &corev1.ConfigMap{})
	if _, ok := cm.Data["a"]; ok || cm.Data["c"] != "3" || cm.Metadata.Labels["x"] != "y" {
		t.Fatalf("merge patch result: %v", cm)
	}
	a, err = s.API.Patch(ctxT(t), &apipb.PatchRequest{Resource: ref, Namespace: "default", Name: "p", PatchType: "json",
		Patch: []byte(`[{"op":"replace","path":"/data/b","value":"20"}]`)})
	if err != nil {
		t.Fatal(err)
	}
	if cm = unpack(t, a, &corev1.ConfigMap{}); cm.Data["b"] != "20" {
		t.Fatalf("json patch result: %v", cm.Data)
	}
	_, err = s.API.Patch(ctxT(t), &apipb.PatchRequest{Resource: ref, Namespace: "default", Name: "p", PatchType: "merge",
		Patch: []byte(`{"metadata":{"resourceVersion":"1"},"data":{"z":"1"}}`)})
	if !apierrors.IsConflict(err) {
		t.Fatalf("patch pinned to a stale resourceVersion: %v", err)
	}
}

func TestFinalizersHoldDeletion(t *testing.T) {
	s := apitest.Start(t)
	cm := configMap("default", "held", nil)
	cm.Metadata.Finalizers = []string{"example.com/hold"}
	mustCreate(t, s, cm)
	ref := kindOf(t, cm).Ref()
	a, err := s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: ref, Namespace: "default", Name: "held"})
	if err != nil {
		t.Fatal(err)
	}
	if got := unpack(t, a, &corev1.ConfigMap{}); got.Metadata.DeletionTimestamp == nil {
		t.Fatal("delete of an object with finalizers did not set deletionTimestamp")
	}
	cur, err := get(t, s, &corev1.ConfigMap{}, "default", "held")
	if err != nil || cur.Metadata.DeletionTimestamp == nil {
		t.Fatalf("object with finalizers is gone or not terminating: %v %v", cur, err)
	}
	cur.Metadata.Finalizers = nil
	if _, err := update(ctxT(t), s.API, cur); err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, s, &corev1.ConfigMap{}, "default", "held"); !apierrors.IsNotFound(err) {
		t.Fatalf("object still there after its last finalizer: %v", err)
	}
}

func TestDeletePreconditionsAndPropagation(t *testing.T) {
	s := apitest.Start(t)
	c := mustCreate(t, s, configMap("default", "x", nil))
	ref := kindOf(t, c).Ref()
	wrong := "0f0f"
	_, err := s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: ref, Namespace: "default", Name: "x", Preconditions: &apipb.Preconditions{Uid: &wrong}})
	if !apierrors.IsConflict(err) || !strings.Contains(apierrors.Message(err), "Precondition failed: UID in precondition: 0f0f") {
		t.Fatalf("uid precondition: %v", err)
	}
	a, err := s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: ref, Namespace: "default", Name: "x", PropagationPolicy: "Orphan"})
	if err != nil {
		t.Fatal(err)
	}
	if got := unpack(t, a, &corev1.ConfigMap{}); len(got.Metadata.Finalizers) != 1 || got.Metadata.Finalizers[0] != "orphan" {
		t.Fatalf("orphan propagation not recorded: %v", got.Metadata)
	}
	_, err = s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: ref, Namespace: "default", Name: "x", PropagationPolicy: "Sideways"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad propagation policy: %v", err)
	}
}

func TestNamespaceRules(t *testing.T) {
	s := apitest.Start(t)
	for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		n, err := get(t, s, &corev1.Namespace{}, "", ns)
		if err != nil || n.Status.GetPhase() != "Active" {
			t.Errorf("namespace %s: %v %v", ns, n, err)
		}
	}
	_, err := create(ctxT(t), s.API, configMap("nowhere", "x", nil))
	if !apierrors.IsNotFound(err) || apierrors.Message(err) != `namespaces "nowhere" not found` {
		t.Fatalf("create in a missing namespace: %v", err)
	}
	mustCreate(t, s, &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: "team"}})
	mustCreate(t, s, configMap("team", "x", nil))
	if _, err := s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: kindOf(t, &corev1.Namespace{}).Ref(), Name: "team"}); err != nil {
		t.Fatal(err)
	}
	n, err := get(t, s, &corev1.Namespace{}, "", "team")
	if err != nil || n.Status.GetPhase() != "Terminating" || n.Metadata.DeletionTimestamp == nil {
		t.Fatalf("deleted namespace: %v %v", n, err)
	}
	waitFor(t, func() bool {
		_, err = create(ctxT(t), s.API, configMap("team", "y", nil))
		return apierrors.IsForbidden(err)
	})
	if !strings.Contains(apierrors.Message(err), "because it is being terminated") {
		t.Fatalf("create in a terminating namespace: %v", err)
	}
	// Cluster-scoped objects ignore the request's namespace, as upstream.
	a, err := s.API.Create(ctxT(t), &apipb.CreateRequest{Resource: kindOf(t, &corev1.Namespace{}).Ref(), Namespace: "default",
		Object: pack(t, &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: "other"}})})
	if err != nil || unpack(t, a, &corev1.Namespace{}).Metadata.Namespace != "" {
		t.Fatalf("cluster-scoped create with a namespace: %v", err)
	}
}

func TestTooLarge(t *testing.T) {
	s := apitest.Start(t)
	// ConfigMaps have their own 1 MiB limit, checked by validation as upstream.
	big := configMap("default", "big", map[string]string{"blob": strings.Repeat("x", 2<<20)})
	if _, err := create(ctxT(t), s.API, big); !apierrors.IsInvalid(err) || !strings.Contains(apierrors.Message(err), "Too long") {
		t.Fatalf("2 MiB ConfigMap: %v, want Invalid (too long)", err)
	}
	// Anything else above etcd's 1.5 MiB request limit is TooLarge.
	p := pod("default", "big")
	p.Spec.Containers[0].Env = []*corev1.EnvVar{{Name: "BLOB", Value: strings.Repeat("x", 2<<20)}}
	_, err := create(ctxT(t), s.API, p)
	if !apierrors.IsTooLarge(err) {
		t.Fatalf("2 MiB pod: %v, want TooLarge", err)
	}
	if _, err := get(t, s, &corev1.Pod{}, "default", "big"); !apierrors.IsNotFound(err) {
		t.Fatalf("too large object stored: %v", err)
	}
}

func TestUnauthenticatedRequestsAreRefused(t *testing.T) {
	s := apitest.Start(t)
	ca, err := os.ReadFile(filepath.Join(s.Opts.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conn, err := grpc.NewClient(s.Server.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = apipb.NewAPIClient(conn).List(ctxT(t), &apipb.ListRequest{Resource: kindOf(t, &corev1.Pod{}).Ref()})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("list without a client certificate: %v, want Unauthenticated", err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without a certificate: %v %v", h, err)
	}
}

func TestBindingSetsNodeOnce(t *testing.T) {
	s := apitest.Start(t)
	mustCreate(t, s, pod("default", "web-1"))
	bind := func(node string) error {
		_, err := s.API.Bind(ctxT(t), &apipb.BindRequest{Binding: &corev1.Binding{
			Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web-1"},
			Target:   &corev1.ObjectReference{Kind: "Node", Name: node},
		}})
		return err
	}
	if err := bind("node-1"); err != nil {
		t.Fatal(err)
	}
	err := bind("node-2")
	if !apierrors.IsConflict(err) || !strings.Contains(apierrors.Message(err), `already assigned to node "node-1"`) {
		t.Fatalf("second bind: %v", err)
	}
	p, _ := get(t, s, &corev1.Pod{}, "default", "web-1")
	if p.Spec.NodeName != "node-1" || p.Status.GetConditions()[0].GetType() != "PodScheduled" {
		t.Fatalf("bound pod: %v", p)
	}
}

func TestMetricsAndReadiness(t *testing.T) {
	s := apitest.Start(t)
	mustCreate(t, s, configMap("default", "m", nil))
	for path, want := range map[string]string{
		"/readyz":  "ok",
		"/livez":   "ok",
		"/metrics": `apiserver_request_total{code="201",group="",resource="configmaps",subresource="",verb="create"} 1`,
	} {
		resp, err := http.Get(s.Metrics + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte(want)) {
			t.Errorf("GET %s: %d, missing %q", path, resp.StatusCode, want)
		}
	}
	for _, name := range []string{"apiserver_request_duration_seconds", "etcd_request_duration_seconds", "apiserver_registered_watchers"} {
		resp, _ := http.Get(s.Metrics + "/metrics")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(body, []byte(name)) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestUnknownResource(t *testing.T) {
	s := apitest.Start(t)
	_, err := s.API.List(ctxT(t), &apipb.ListRequest{Resource: &apipb.Resource{Version: "v1", Resource: "widgets"}})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("unknown resource: %v", err)
	}
	var st interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &st) {
		t.Fatalf("not a gRPC status: %v", err)
	}
	_ = fmt.Sprint(st)
}

func TestJobSelectorIsGenerated(t *testing.T) {
	s := apitest.Start(t)
	j := manifest(t, `
apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: pi, image: perl:5.34.0, command: ["perl", "-Mbignum=bpi", "-wle", "print bpi(2000)"]}]
`).(*batchv1.Job)
	got := mustCreate(t, s, j)
	uid := got.Metadata.Uid
	if got.Spec.Selector.GetMatchLabels()["batch.kubernetes.io/controller-uid"] != uid ||
		got.Spec.Template.Metadata.Labels["job-name"] != "pi" || got.Spec.GetBackoffLimit() != 6 {
		t.Fatalf("job spec: %v", got.Spec)
	}
}

func TestHistoryServesPastRevisions(t *testing.T) {
	s := apitest.Start(t)
	cm := mustCreate(t, s, configMap("default", "h", map[string]string{"v": "1"}))
	for _, v := range []string{"2", "3"} {
		cm.Data["v"] = v
		a, err := update(ctxT(t), s.API, cm)
		if err != nil {
			t.Fatal(err)
		}
		cm = unpack(t, a, &corev1.ConfigMap{})
	}
	ref := kindOf(t, cm).Ref()
	if _, err := s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: ref, Namespace: "default", Name: "h"}); err != nil {
		t.Fatal(err)
	}
	h, err := s.API.History(ctxT(t), &apipb.HistoryRequest{Resource: ref, Namespace: "default", Name: "h"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range h.Items {
		c := unpack(t, it.Object, &corev1.ConfigMap{})
		got = append(got, fmt.Sprintf("%s deleted=%v", c.Data["v"], it.Deleted))
	}
	if strings.Join(got, ";") != "3 deleted=true;3 deleted=false;2 deleted=false;1 deleted=false" {
		t.Fatalf("history: %v", got)
	}
	if _, err := s.API.History(ctxT(t), &apipb.HistoryRequest{Resource: ref, Namespace: "default", Name: "never"}); !apierrors.IsNotFound(err) {
		t.Fatalf("history of nothing: %v", err)
	}
}

func TestPatchOfMetadataKeepsGeneration(t *testing.T) {
	s := apitest.Start(t)
	d := mustCreate(t, s, manifest(t, strings.Replace(negDeployment, "replicas: -2", "replicas: 1", 1)).(*appsv1.Deployment))
	a, err := s.API.Patch(ctxT(t), &apipb.PatchRequest{Resource: kindOf(t, d).Ref(), Namespace: "default", Name: "neg", PatchType: "merge",
		Patch: []byte(`{"metadata":{"labels":{"tier":"web"}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if g := unpack(t, a, &appsv1.Deployment{}).Metadata.Generation; g != 1 {
		t.Fatalf("a label patch moved generation to %d", g)
	}
}
