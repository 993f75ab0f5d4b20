package fuzz

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	appsv1 "skiff.dev/proto/api/apps/v1"
	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

var update = flag.Bool("update", false, "rewrite testdata/fuzz/FuzzAPI/seed-* from seeds()")

// TestSeedCorpus keeps the seed files, which name each seed in go test's
// output (FuzzAPI/seed-patch-metadata-null), in step with seeds(). Files
// are compared as requests: prototext's spacing varies between builds.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzAPI")
	want := map[string]seed{}
	for _, s := range seeds() {
		name := "seed-" + strings.Join(strings.Fields(s.name), "-")
		if _, dup := want[name]; dup {
			t.Fatalf("two seeds named %q", s.name)
		}
		want[name] = s
	}
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
	for _, path := range old {
		if _, ok := want[filepath.Base(path)]; ok {
			continue
		}
		if *update {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s is no longer in seeds(); run go test -run TestSeedCorpus -update", path)
	}
	for name, s := range want {
		path := filepath.Join(dir, name)
		if *update {
			b := "go test fuzz v1\n[]byte(" + literal(string(textInput(s.op, s.req))) + ")\n"
			if err := os.WriteFile(path, []byte(b), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		o, req, err := readCorpusFile(path)
		if err != nil || o != s.op || !proto.Equal(req, s.req) {
			t.Errorf("%s differs from seeds() (%v); run go test -run TestSeedCorpus -update", path, err)
		}
	}
}

// literal is s as a Go string literal, a raw one where s allows it, so a
// seed file reads as the request it holds. (Corpus files hold one value a
// line, so a raw literal cannot span lines.)
func literal(s string) string {
	if strconv.CanBackquote(s) {
		return "`" + s + "`"
	}
	return strconv.Quote(s)
}

// readCorpusFile reads a one-[]byte corpus file as a request.
func readCorpusFile(path string) (op, proto.Message, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	header, lit, _ := strings.Cut(string(b), "\n")
	lit = strings.TrimSpace(lit)
	if header != "go test fuzz v1" || !strings.HasPrefix(lit, "[]byte(") || !strings.HasSuffix(lit, ")") {
		return 0, nil, fmt.Errorf("not a corpus file of one []byte")
	}
	data, err := strconv.Unquote(lit[len("[]byte(") : len(lit)-1])
	if err != nil {
		return 0, nil, err
	}
	o, req, ok := parse([]byte(data))
	if !ok {
		return 0, nil, fmt.Errorf("not a request")
	}
	return o, req, nil
}

type seed struct {
	name string
	op   op
	req  proto.Message
	// crasher marks a request that stopped the apiserver or was answered
	// wrongly when it was added; it is a regression test, so only its text
	// form is seeded (see FuzzAPI).
	crasher bool
}

// seeds are well-formed requests for every RPC and several kinds, which give
// the fuzzer the shapes to mutate, and the requests known to have crashed
// the apiserver (issue 8), which go test runs as regression tests.
func seeds() []seed {
	ns := namespaces[0]
	cm, pod, deploy, node, nsKind := kind("configmaps"), kind("pods"), kind("deployments.apps"), kind("nodes"), kind("namespaces")
	grace0 := int64(0)
	rv := "1"
	s := []seed{
		{"create configmap", opCreate, &apipb.CreateRequest{Resource: cm.Ref(), Namespace: ns, Object: object(cm, "obj-1")}, false},
		{"create pod", opCreate, &apipb.CreateRequest{Resource: pod.Ref(), Namespace: ns, Object: object(pod, "obj-1")}, false},
		{"create deployment", opCreate, &apipb.CreateRequest{Resource: deploy.Ref(), Namespace: ns, Object: object(deploy, "obj-1")}, false},
		{"create namespace", opCreate, &apipb.CreateRequest{Resource: nsKind.Ref(), Object: object(nsKind, "obj-1")}, false},
		{"create node dry-run", opCreate, &apipb.CreateRequest{Resource: node.Ref(), Object: object(node, "obj-1"), DryRun: true}, false},
		{"create generateName", opCreate, &apipb.CreateRequest{Resource: cm.Ref(), Namespace: ns, Object: mustAny(&corev1.ConfigMap{Metadata: &metav1.ObjectMeta{GenerateName: "gen-"}})}, false},
		{"get configmap", opGet, &apipb.GetRequest{Resource: cm.Ref(), Namespace: ns, Name: "obj-0"}, false},
		{"get pod from cache", opGet, &apipb.GetRequest{Resource: pod.Ref(), Namespace: ns, Name: "obj-0", ResourceVersion: "0"}, false},
		{"get node at revision", opGet, &apipb.GetRequest{Resource: node.Ref(), Name: "obj-0", ResourceVersion: "2"}, false},
		{"list pods by label", opList, &apipb.ListRequest{Resource: pod.Ref(), Namespace: ns, LabelSelector: "app=fuzz,tier notin (db)", Limit: 1}, false},
		{"list pods by node", opList, &apipb.ListRequest{Resource: pod.Ref(), FieldSelector: "spec.nodeName=obj-0,metadata.namespace!=x"}, false},
		{"list exact", opList, &apipb.ListRequest{Resource: cm.Ref(), ResourceVersion: "1", ResourceVersionMatch: "Exact", Limit: 2}, false},
		{"list continue", opList, &apipb.ListRequest{Resource: cm.Ref(), Namespace: ns, Limit: 1, Continue: "eyJydiI6MSwic3RhcnQiOiIifQ"}, false},
		{"update configmap", opUpdate, &apipb.UpdateRequest{Resource: cm.Ref(), Namespace: ns, Object: object(cm, "obj-0")}, false},
		{"update deployment", opUpdate, &apipb.UpdateRequest{Resource: deploy.Ref(), Namespace: ns, Object: object(deploy, "obj-0")}, false},
		{"update status pod", opUpdateStatus, &apipb.UpdateRequest{Resource: pod.Ref(), Namespace: ns, Object: mustAny(&corev1.Pod{
			Metadata: &metav1.ObjectMeta{Name: "obj-0", Namespace: ns}, Status: &corev1.PodStatus{Phase: "Running", PodIP: "10.0.0.1"}})}, false},
		{"patch merge", opPatch, &apipb.PatchRequest{Resource: cm.Ref(), Namespace: ns, Name: "obj-0", PatchType: "merge", Patch: []byte(`{"data":{"k":"w"},"metadata":{"labels":{"a":"b"}}}`)}, false},
		{"patch json", opPatch, &apipb.PatchRequest{Resource: deploy.Ref(), Namespace: ns, Name: "obj-0", PatchType: "json", Patch: []byte(`[{"op":"replace","path":"/spec/replicas","value":3},{"op":"add","path":"/metadata/finalizers","value":["x/y"]}]`)}, false},
		{"patch strategic containers", opPatch, &apipb.PatchRequest{Resource: pod.Ref(), Namespace: ns, Name: "obj-0", PatchType: "strategic",
			Patch: []byte(`{"metadata":{"$deleteFromPrimitiveList/finalizers":["x/y"]},"spec":{"$setElementOrder/containers":[{"name":"c"}],"containers":[{"name":"c","image":"skiff.local/pause:3.11"}]}}`)}, false},
		{"patch strategic directives", opPatch, &apipb.PatchRequest{Resource: deploy.Ref(), Namespace: ns, Name: "obj-0", PatchType: "strategic",
			Patch: []byte(`{"metadata":{"labels":{"$patch":"replace","app":"fuzz"}},"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"},"template":{"spec":{"containers":[{"name":"c","$patch":"delete"}]}}}}`)}, false},
		{"patch status", opPatch, &apipb.PatchRequest{Resource: pod.Ref(), Namespace: ns, Name: "obj-0", Subresource: "status", Patch: []byte(`{"status":{"phase":"Running"}}`)}, false},
		{"delete with preconditions", opDelete, &apipb.DeleteRequest{Resource: cm.Ref(), Namespace: ns, Name: "obj-0", Preconditions: &apipb.Preconditions{ResourceVersion: &rv}}, false},
		{"delete pod now", opDelete, &apipb.DeleteRequest{Resource: pod.Ref(), Namespace: ns, Name: "obj-1", GracePeriodSeconds: &grace0, PropagationPolicy: "Foreground"}, false},
		{"watch configmaps", opWatch, &apipb.WatchRequest{Resource: cm.Ref(), Namespace: ns, AllowBookmarks: true}, false},
		{"watch pods of a node", opWatch, &apipb.WatchRequest{Resource: pod.Ref(), FieldSelector: "spec.nodeName=obj-0", ResourceVersion: "1"}, false},
		{"discovery", opDiscovery, &apipb.DiscoveryRequest{}, false},
		{"bind", opBind, &apipb.BindRequest{Binding: &corev1.Binding{
			Metadata: &metav1.ObjectMeta{Name: "obj-0", Namespace: ns, Annotations: map[string]string{"a": "b"}}, Target: &corev1.ObjectReference{Kind: "Node", Name: "obj-0"}}}, false},
		{"evict", opEvict, &apipb.EvictRequest{Eviction: &policyv1.Eviction{
			Metadata: &metav1.ObjectMeta{Name: "obj-2", Namespace: ns}, DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: &grace0}}}, false},
		{"history", opHistory, &apipb.HistoryRequest{Resource: cm.Ref(), Namespace: ns, Name: "obj-0", Limit: 3}, false},

		// Issue 8 and what fuzzing found: requests that stopped the
		// apiserver or were answered wrongly (crasher), and the ones issue 8
		// suspected that were answered right all along.
		{"create without metadata", opCreate, &apipb.CreateRequest{Resource: cm.Ref(), Namespace: ns, Object: mustAny(&corev1.ConfigMap{Data: map[string]string{"k": "v"}})}, true},
		{"create cluster-scoped from empty object", opCreate, &apipb.CreateRequest{Resource: node.Ref(), Object: &anypb.Any{}}, true},
		{"update without metadata", opUpdate, &apipb.UpdateRequest{Resource: cm.Ref(), Namespace: ns, Object: mustAny(&corev1.ConfigMap{Data: map[string]string{"k": "v"}})}, true},
		{"update status without metadata", opUpdateStatus, &apipb.UpdateRequest{Resource: pod.Ref(), Namespace: ns, Object: mustAny(&corev1.Pod{Status: &corev1.PodStatus{Phase: "Running"}})}, true},
		{"patch metadata null", opPatch, &apipb.PatchRequest{Resource: cm.Ref(), Namespace: ns, Name: "obj-0", PatchType: "merge", Patch: []byte(`{"metadata":null}`)}, true},
		{"patch status metadata null", opPatch, &apipb.PatchRequest{Resource: pod.Ref(), Namespace: ns, Name: "obj-0", PatchType: "merge", Subresource: "status", Patch: []byte(`{"metadata":null}`)}, true},
		{"json patch remove metadata", opPatch, &apipb.PatchRequest{Resource: cm.Ref(), Namespace: ns, Name: "obj-0", PatchType: "json", Patch: []byte(`[{"op":"remove","path":"/metadata"}]`)}, true},
		{"json patch status remove metadata", opPatch, &apipb.PatchRequest{Resource: pod.Ref(), Namespace: ns, Name: "obj-0", PatchType: "json", Subresource: "status", Patch: []byte(`[{"op":"remove","path":"/metadata"}]`)}, true},
		{"bind empty", opBind, &apipb.BindRequest{}, false},
		{"evict empty", opEvict, &apipb.EvictRequest{}, false},
		{"bind empty binding", opBind, &apipb.BindRequest{Binding: &corev1.Binding{}}, false},
		{"evict empty eviction", opEvict, &apipb.EvictRequest{Eviction: &policyv1.Eviction{}}, false},
		{"evil type URL", opCreate, &apipb.CreateRequest{Resource: cm.Ref(), Namespace: ns, Object: withTypeURL(object(cm, "obj-2"), "evil.example/xskiff.api.core.v1.ConfigMap")}, true},
		{"deeply nested merge patch", opPatch, &apipb.PatchRequest{Resource: cm.Ref(), Namespace: ns, Name: "obj-0", PatchType: "merge",
			Patch: []byte(`{"data":` + strings.Repeat(`{"a":`, 10001) + `1` + strings.Repeat(`}`, 10001) + `}`)}, false},
		{"create replicaset without spec", opCreate, &apipb.CreateRequest{Resource: kind("replicasets.apps").Ref(), Namespace: ns, Object: mustAny(&appsv1.ReplicaSet{Metadata: &metav1.ObjectMeta{Name: "obj-3"}})}, true},
		{"create statefulset without spec", opCreate, &apipb.CreateRequest{Resource: kind("statefulsets.apps").Ref(), Namespace: ns, Object: mustAny(&appsv1.StatefulSet{Metadata: &metav1.ObjectMeta{Name: "obj-3"}})}, true},
		{"create daemonset without spec", opCreate, &apipb.CreateRequest{Resource: kind("daemonsets.apps").Ref(), Namespace: ns, Object: mustAny(&appsv1.DaemonSet{Metadata: &metav1.ObjectMeta{Name: "obj-3"}})}, true},
		{"create lease without spec", opCreate, &apipb.CreateRequest{Resource: kind("leases.coordination.k8s.io").Ref(), Namespace: ns, Object: mustAny(&coordinationv1.Lease{Metadata: &metav1.ObjectMeta{Name: "obj-3"}})}, true},
		{"create hpa without spec", opCreate, &apipb.CreateRequest{Resource: kind("horizontalpodautoscalers.autoscaling").Ref(), Namespace: ns, Object: mustAny(&autoscalingv2.HorizontalPodAutoscaler{Metadata: &metav1.ObjectMeta{Name: "obj-3"}})}, true},
		{"create pdb without spec", opCreate, &apipb.CreateRequest{Resource: kind("poddisruptionbudgets.policy").Ref(), Namespace: ns, Object: mustAny(&policyv1.PodDisruptionBudget{Metadata: &metav1.ObjectMeta{Name: "obj-3"}})}, true},
		{"patch replicaset spec null", opPatch, &apipb.PatchRequest{Resource: kind("replicasets.apps").Ref(), Namespace: ns, Name: "obj-0", PatchType: "merge", Patch: []byte(`{"spec":null}`)}, true},
		{"get at a future revision", opGet, &apipb.GetRequest{Resource: cm.Ref(), Namespace: ns, Name: "obj-0", ResourceVersion: "999999999"}, true},
		{"list exact at a future revision", opList, &apipb.ListRequest{Resource: cm.Ref(), ResourceVersion: "999999999", ResourceVersionMatch: "Exact"}, true},
		{"list continue at a future revision", opList, &apipb.ListRequest{Resource: cm.Ref(), Limit: 1, Continue: "eyJydiI6OTk5OTk5OTk5LCJzdGFydCI6IiJ9"}, true},
	}
	return s
}

func kind(resource string) *scheme.Kind {
	group := ""
	if i := strings.IndexByte(resource, '.'); i >= 0 {
		resource, group = resource[:i], resource[i+1:]
	}
	k, ok := scheme.ForResource(group, resource)
	if !ok {
		panic(fmt.Sprintf("no kind %s", resource))
	}
	return k
}

// object is the kind's fixture named name, as a request carries it.
func object(k *scheme.Kind, name string) *anypb.Any {
	return mustAny(fixture(k, name))
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func withTypeURL(a *anypb.Any, url string) *anypb.Any {
	a.TypeUrl = url
	return a
}
