package integration

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/apiserver/apitest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// These tests send what a hostile or buggy client would, one request each,
// and check the answer a user would read — and that the apiserver is still
// there to answer the next one.

func alive(t *testing.T, s *apitest.Server) {
	t.Helper()
	if _, err := s.API.Discovery(ctxT(t), &apipb.DiscoveryRequest{}); err != nil {
		t.Fatalf("the apiserver no longer answers: %v", err)
	}
}

// wantError checks the gRPC code, the reason and that the message holds want.
func wantError(t *testing.T, what string, err error, code codes.Code, reason apierrors.Reason, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %s %q", what, reason, want)
		return
	}
	if got := status.Code(err); got != code || apierrors.ReasonOf(err) != reason || !strings.Contains(apierrors.Message(err), want) {
		t.Errorf("%s: %v (%s), want %s %s with %q", what, err, apierrors.ReasonOf(err), code, reason, want)
	}
}

var cmKind, _ = scheme.ForResource("", "configmaps")

// rawAny is an Any of a configmap holding exactly b.
func rawAny(b []byte) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/skiff.api.core.v1.ConfigMap", Value: b}
}

func TestObjectsWithoutMetadataAreRefusedNotFatal(t *testing.T) {
	s := apitest.Start(t)
	onlyData, err := proto.Marshal(&corev1.ConfigMap{Data: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.API.Create(ctxT(t), &apipb.CreateRequest{Resource: cmKind.Ref(), Namespace: "default", Object: rawAny(onlyData)})
	wantError(t, "create without metadata", err, codes.InvalidArgument, apierrors.ReasonInvalid, "metadata.name: Required value")
	alive(t, s)
	_, err = s.API.Update(ctxT(t), &apipb.UpdateRequest{Resource: cmKind.Ref(), Namespace: "default", Object: rawAny(onlyData)})
	wantError(t, "update without metadata", err, codes.InvalidArgument, apierrors.ReasonInvalid, "metadata.name: Required value")
	_, err = s.API.UpdateStatus(ctxT(t), &apipb.UpdateRequest{Resource: kindOf(t, &corev1.Pod{}).Ref(), Namespace: "default",
		Object: &anypb.Any{TypeUrl: "type.googleapis.com/skiff.api.core.v1.Pod"}})
	wantError(t, "status update without metadata", err, codes.InvalidArgument, apierrors.ReasonInvalid, "metadata.name: Required value")
	alive(t, s)

	mustCreate(t, s, configMap("default", "cm", map[string]string{"a": "1"}))
	p := mustCreate(t, s, pod("default", "p"))
	for _, tc := range []struct {
		kind         *scheme.Kind
		name, typ    string
		patch, subre string
	}{
		{cmKind, "cm", "merge", `{"metadata":null}`, ""},
		{cmKind, "cm", "json", `[{"op":"remove","path":"/metadata"}]`, ""},
		{cmKind, "cm", "strategic", `{"metadata":null}`, ""},
		{kindOf(t, p), "p", "merge", `{"metadata":null}`, "status"},
		{kindOf(t, p), "p", "json", `[{"op":"remove","path":"/metadata"}]`, "status"},
	} {
		_, err := s.API.Patch(ctxT(t), &apipb.PatchRequest{Resource: tc.kind.Ref(), Namespace: "default", Name: tc.name,
			PatchType: tc.typ, Patch: []byte(tc.patch), Subresource: tc.subre})
		wantError(t, tc.typ+" patch "+tc.patch+" "+tc.subre, err, codes.InvalidArgument, apierrors.ReasonInvalid, "metadata.name: Required value")
		alive(t, s)
	}
	if cm, err := get(t, s, &corev1.ConfigMap{}, "default", "cm"); err != nil || cm.Data["a"] != "1" {
		t.Fatalf("configmap after refused patches: %v %v", cm, err)
	}
}

func TestTypeURLMustNameTheResourcesMessage(t *testing.T) {
	s := apitest.Start(t)
	value, _ := proto.Marshal(configMap("default", "cm", nil))
	for _, url := range []string{"", "evil.example/xskiff.api.core.v1.ConfigMap", "type.googleapis.com/skiff.api.core.v1.Secret"} {
		_, err := s.API.Create(ctxT(t), &apipb.CreateRequest{Resource: cmKind.Ref(), Object: &anypb.Any{TypeUrl: url, Value: value}})
		wantError(t, "type URL "+url, err, codes.InvalidArgument, apierrors.ReasonBadRequest, "does not name skiff.api.core.v1.ConfigMap")
	}
	if _, err := get(t, s, &corev1.ConfigMap{}, "default", "cm"); !apierrors.IsNotFound(err) {
		t.Fatalf("an object with a foreign type URL was stored: %v", err)
	}
}

func TestUnknownFieldsAreDropped(t *testing.T) {
	s := apitest.Start(t)
	value, _ := proto.Marshal(configMap("default", "cm", map[string]string{"a": "1"}))
	// Field 999 of ConfigMap and field 999 of its metadata do not exist.
	junk := protowire.AppendTag(nil, 999, protowire.BytesType)
	junk = protowire.AppendBytes(junk, make([]byte, 500<<10))
	inner := protowire.AppendTag(nil, 999, protowire.VarintType)
	inner = protowire.AppendVarint(inner, 7)
	meta := protowire.AppendTag(nil, 1, protowire.BytesType)
	meta = protowire.AppendBytes(meta, inner)
	value = append(append(value, junk...), meta...)
	a, err := s.API.Create(ctxT(t), &apipb.CreateRequest{Resource: cmKind.Ref(), Object: rawAny(value)})
	if err != nil {
		t.Fatal(err)
	}
	for what, a := range map[string]*anypb.Any{"create's answer": a} {
		if len(a.GetValue()) > 10<<10 {
			t.Errorf("%s is %d bytes: unknown fields came back", what, len(a.GetValue()))
		}
	}
	got, err := s.API.Get(ctxT(t), &apipb.GetRequest{Resource: cmKind.Ref(), Namespace: "default", Name: "cm"})
	if err != nil {
		t.Fatal(err)
	}
	cm := unpack(t, got, &corev1.ConfigMap{})
	if len(cm.ProtoReflect().GetUnknown()) > 0 || len(cm.Metadata.ProtoReflect().GetUnknown()) > 0 || cm.Data["a"] != "1" {
		t.Fatalf("stored configmap keeps unknown fields: %d bytes, metadata %d bytes", len(cm.ProtoReflect().GetUnknown()), len(cm.Metadata.ProtoReflect().GetUnknown()))
	}
}

func TestDataOverOneMiBNamesTheField(t *testing.T) {
	s := apitest.Start(t)
	blob := strings.Repeat("x", 1<<20+1)
	_, err := create(ctxT(t), s.API, configMap("default", "big", map[string]string{"blob": blob}))
	wantError(t, "configmap", err, codes.InvalidArgument, apierrors.ReasonInvalid, "data: Too long: must have at most 1048576 bytes")
	_, err = create(ctxT(t), s.API, &corev1.Secret{Metadata: &metav1.ObjectMeta{Name: "big"}, Data: map[string][]byte{"blob": []byte(blob)}})
	wantError(t, "secret", err, codes.InvalidArgument, apierrors.ReasonInvalid, "data: Too long: must have at most 1048576 bytes")
}

func TestBadPatchesSayWhatIsWrong(t *testing.T) {
	s := apitest.Start(t)
	mustCreate(t, s, configMap("default", "cm", map[string]string{"a": "1"}))
	patch := func(typ, p string) error {
		_, err := s.API.Patch(ctxT(t), &apipb.PatchRequest{Resource: cmKind.Ref(), Namespace: "default", Name: "cm", PatchType: typ, Patch: []byte(p)})
		return err
	}
	wantError(t, "merge patch that is not JSON", patch("merge", `{"data": {"a": `), codes.InvalidArgument, apierrors.ReasonBadRequest, "the patch is not valid JSON: unexpected end of JSON input")
	wantError(t, "merge patch that is a list", patch("merge", `[1]`), codes.InvalidArgument, apierrors.ReasonBadRequest, "a merge patch must be a JSON object")
	wantError(t, "json patch that is an object", patch("json", `{}`), codes.InvalidArgument, apierrors.ReasonBadRequest, "the JSON patch is not a list of operations")
	wantError(t, "unknown patch type", patch("yaml", `{}`), codes.InvalidArgument, apierrors.ReasonUnsupported, `patch type "yaml" is not supported`)

	// Depth 9,999 took 2.4 s of CPU before the bound; it is refused at once.
	deep := strings.Repeat(`{"a":`, 9999) + "1" + strings.Repeat("}", 9999)
	start := time.Now()
	wantError(t, "deeply nested merge patch", patch("merge", `{"data":`+deep+`}`), codes.InvalidArgument, apierrors.ReasonBadRequest, "at most 100 are allowed")
	t.Logf("deep patch refused in %v", time.Since(start))
	alive(t, s)

	// A strategic merge patch merges by key, as upstream's.
	mustCreate(t, s, pod("default", "p"))
	_, err := s.API.Patch(ctxT(t), &apipb.PatchRequest{Resource: kindOf(t, &corev1.Pod{}).Ref(), Namespace: "default", Name: "p",
		PatchType: "strategic", Patch: []byte(`{"metadata":{"labels":{"tier":"front"}},"spec":{"activeDeadlineSeconds":5}}`)})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := get(t, s, &corev1.Pod{}, "default", "p")
	if p.Metadata.Labels["tier"] != "front" || p.Metadata.Labels["app"] != "web" || p.Spec.GetActiveDeadlineSeconds() != 5 || len(p.Spec.Containers) != 1 {
		t.Fatalf("strategic patch: %v", p)
	}
}

func TestListAndReadOptionsAreChecked(t *testing.T) {
	s := apitest.Start(t)
	_, err := s.API.List(ctxT(t), &apipb.ListRequest{Resource: cmKind.Ref(), ResourceVersion: "1", ResourceVersionMatch: "Newest"})
	wantError(t, "unknown resourceVersionMatch", err, codes.InvalidArgument, apierrors.ReasonInvalid, `resourceVersionMatch: Unsupported value: "Newest": supported values: "Exact", "NotOlderThan", ""`)
	_, err = s.API.List(ctxT(t), &apipb.ListRequest{Resource: cmKind.Ref(), ResourceVersionMatch: "Exact"})
	wantError(t, "resourceVersionMatch without resourceVersion", err, codes.InvalidArgument, apierrors.ReasonInvalid, "resourceVersionMatch is forbidden unless resourceVersion is provided")

	l, err := s.API.List(ctxT(t), &apipb.ListRequest{Resource: cmKind.Ref()})
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := strconv.ParseInt(l.ResourceVersion, 10, 64)
	future := strconv.FormatInt(cur+1000, 10)
	_, err = s.API.Get(ctxT(t), &apipb.GetRequest{Resource: kindOf(t, &corev1.Namespace{}).Ref(), Name: "default", ResourceVersion: future})
	wantError(t, "get at a future revision", err, codes.DeadlineExceeded, apierrors.ReasonTimeout, "Too large resource version: "+future)
	if !apierrors.IsTooLargeResourceVersion(err) {
		t.Errorf("get at a future revision is not marked for retry: %v", err)
	}
	_, err = s.API.List(ctxT(t), &apipb.ListRequest{Resource: cmKind.Ref(), ResourceVersion: future, ResourceVersionMatch: "Exact"})
	wantError(t, "exact list at a future revision", err, codes.DeadlineExceeded, apierrors.ReasonTimeout, "Too large resource version: "+future)

	for _, name := range []string{"", "a/b", ".."} {
		_, err = s.API.Get(ctxT(t), &apipb.GetRequest{Resource: cmKind.Ref(), Namespace: "default", Name: name})
		wantError(t, "get of name "+strconv.Quote(name), err, codes.InvalidArgument, apierrors.ReasonBadRequest, "")
	}
	_, err = s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: cmKind.Ref(), Namespace: "kube-system/x", Name: "y"})
	wantError(t, "delete in namespace kube-system/x", err, codes.InvalidArgument, apierrors.ReasonBadRequest, `invalid namespace "kube-system/x": may not contain '/'`)
	_, err = s.API.Evict(ctxT(t), &apipb.EvictRequest{})
	wantError(t, "empty eviction", err, codes.InvalidArgument, apierrors.ReasonInvalid, "metadata.name: Required value")
	_, err = s.API.Bind(ctxT(t), &apipb.BindRequest{})
	wantError(t, "empty binding", err, codes.InvalidArgument, apierrors.ReasonInvalid, "metadata.name: Required value")
	alive(t, s)
}

// rawCodec sends request bytes as given, so a test can send a frame no
// protobuf encoder would write.
type rawCodec struct{}

type rawFrame struct{ b []byte }

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(*rawFrame).b)}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	v.(*rawFrame).b = data.Materialize()
	return nil
}

func TestUndecodableFramesAreBadRequests(t *testing.T) {
	s := apitest.Start(t)
	// Field 1 (resource) claims 100 bytes and carries two.
	truncated := &rawFrame{b: []byte{0x0a, 100, 1, 2}}
	err := s.Conn.Invoke(ctxT(t), apipb.API_Create_FullMethodName, truncated, &rawFrame{}, grpc.ForceCodecV2(rawCodec{}))
	wantError(t, "truncated create frame", err, codes.InvalidArgument, apierrors.ReasonBadRequest, "the request could not be decoded")

	stream, err := s.Conn.NewStream(ctxT(t), &grpc.StreamDesc{ServerStreams: true}, apipb.API_Watch_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(truncated); err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	err = stream.RecvMsg(&rawFrame{})
	wantError(t, "truncated watch frame", err, codes.InvalidArgument, apierrors.ReasonBadRequest, "the request could not be decoded")
	alive(t, s)
}

func TestUpdateWithoutResourceVersionRetriesConflicts(t *testing.T) {
	s := apitest.Start(t)
	mustCreate(t, s, configMap("default", "shared", map[string]string{"v": "0"}))
	const writers, each = 50, 3
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// No resourceVersion: "whatever is current".
				cm := configMap("default", "shared", map[string]string{"v": fmt.Sprintf("%d-%d", w, i)})
				if _, err := update(ctxT(t), s.API, cm); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 3 {
			t.Errorf("unconditional update failed: %v", err)
		}
	}
	if n > 0 {
		t.Fatalf("%d of %d unconditional updates failed", n, writers*each)
	}
}

func TestConcurrentEvictionsNeverBreakTheBudget(t *testing.T) {
	s := apitest.Start(t)
	const pods, allowed = 8, 2
	pdb := mustCreate(t, s, &policyv1.PodDisruptionBudget{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: &policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}})
	pdb.Status = &policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Metadata.Generation, DisruptionsAllowed: allowed,
		CurrentHealthy: pods, DesiredHealthy: pods - allowed, ExpectedPods: pods}
	if _, err := s.API.UpdateStatus(ctxT(t), &apipb.UpdateRequest{Resource: kindOf(t, pdb).Ref(), Namespace: "default", Object: pack(t, pdb)}); err != nil {
		t.Fatal(err)
	}
	for i := range pods {
		p := mustCreate(t, s, pod("default", fmt.Sprintf("web-%d", i)))
		p.Status = &corev1.PodStatus{Phase: "Running"}
		if _, err := s.API.UpdateStatus(ctxT(t), &apipb.UpdateRequest{Resource: kindOf(t, p).Ref(), Namespace: "default", Object: pack(t, p)}); err != nil {
			t.Fatal(err)
		}
	}
	// The budget must be in the cache before evictions look for it.
	waitFor(t, func() bool {
		l, err := s.API.List(ctxT(t), &apipb.ListRequest{Resource: kindOf(t, pdb).Ref(), Namespace: "default", ResourceVersion: "0"})
		return err == nil && len(l.Items) == 1 && unpack(t, l.Items[0], &policyv1.PodDisruptionBudget{}).Status.GetDisruptionsAllowed() == allowed
	})
	var wg sync.WaitGroup
	results := make(chan error, pods)
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.API.Evict(ctxT(t), &apipb.EvictRequest{Eviction: &policyv1.Eviction{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("web-%d", i)}}})
			results <- err
		}()
	}
	wg.Wait()
	close(results)
	evicted := 0
	for err := range results {
		switch {
		case err == nil:
			evicted++
		case apierrors.IsTooManyRequests(err):
		default:
			t.Errorf("eviction: %v", err)
		}
	}
	if evicted != allowed {
		t.Fatalf("%d pods evicted, the budget allowed %d", evicted, allowed)
	}
	got, _ := get(t, s, &policyv1.PodDisruptionBudget{}, "default", "web")
	if got.Status.GetDisruptionsAllowed() != 0 || len(got.Status.GetDisruptedPods()) != allowed {
		t.Fatalf("budget after evictions: %v", got.Status)
	}
}

func TestNamespaceLifecycleAdmission(t *testing.T) {
	s := apitest.Start(t)
	nsKind := kindOf(t, &corev1.Namespace{})
	for _, name := range []string{"default", "kube-system", "kube-public"} {
		_, err := s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: nsKind.Ref(), Name: name})
		wantError(t, "delete namespace "+name, err, codes.PermissionDenied, apierrors.ReasonForbidden, `namespaces "`+name+`" is forbidden: this namespace may not be deleted`)
	}
	alive(t, s)
}
