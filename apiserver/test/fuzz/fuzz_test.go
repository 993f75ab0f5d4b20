package fuzz

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"k8s.io/apimachinery/pkg/util/validation"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

const (
	// maxInput bounds one request; the deeply nested patch seed is the
	// largest input that means anything, everything bigger only costs time.
	maxInput = 256 << 10
	// callTimeout keeps one input well under the fuzz worker's 10 s limit,
	// past which the worker is killed as deadlocked, and keeps minimization
	// and the replay of the cached corpus quick: a request that waits (a
	// future resourceVersion waits 3 s for the cache) is cut at 500 ms.
	callTimeout = 500 * time.Millisecond
	// watchIdle and watchEvents bound a Watch: the initial ADDED events,
	// served from memory, are where the watch path can go wrong; a stream
	// quiet for watchIdle has sent them.
	watchIdle   = 50 * time.Millisecond
	watchEvents = 16
)

// The fuzzer's objects stay few however long it runs, so etcd and the watch
// caches stay small: Create stores objects only under names (a valid name is
// mapped onto one of them, any other create is dry-run), and only into
// namespaces that exist: the default ones, namespaces, and Namespaces named
// from names.
var (
	namespaces = []string{"fuzz-0", "fuzz-1", "fuzz-2"}
	names      = []string{"obj-0", "obj-1", "obj-2", "obj-3"}
	// protected namespaces are only ever deleted in dry-run: with no
	// namespace controller running, a deleted namespace stays Terminating
	// and refuses every create for the rest of the process.
	protected = append([]string{"default", "kube-system", "kube-public", "kube-node-lease"}, namespaces...)
)

// op is an RPC of apipb.APIServer; parse tells how an input names one.
type op uint8

const (
	opCreate op = iota
	opGet
	opList
	opUpdate
	opUpdateStatus
	opPatch
	opDelete
	opWatch
	opDiscovery
	opBind
	opEvict
	opHistory
	numOps
)

var opNames = [numOps]string{"Create", "Get", "List", "Update", "UpdateStatus", "Patch", "Delete", "Watch", "Discovery", "Bind", "Evict", "History"}

func (o op) String() string { return opNames[o%numOps] }

func (o op) newRequest() proto.Message {
	switch o {
	case opCreate:
		return &apipb.CreateRequest{}
	case opGet:
		return &apipb.GetRequest{}
	case opList:
		return &apipb.ListRequest{}
	case opUpdate, opUpdateStatus:
		return &apipb.UpdateRequest{}
	case opPatch:
		return &apipb.PatchRequest{}
	case opDelete:
		return &apipb.DeleteRequest{}
	case opWatch:
		return &apipb.WatchRequest{}
	case opDiscovery:
		return &apipb.DiscoveryRequest{}
	case opBind:
		return &apipb.BindRequest{}
	case opEvict:
		return &apipb.EvictRequest{}
	case opHistory:
		return &apipb.HistoryRequest{}
	}
	panic(fmt.Sprintf("op %d out of range", o))
}

// An input is one request in one of two forms. Binary: a byte below 0x20
// picks the RPC (modulo numOps), the rest is the request in protobuf binary,
// whose bytes the fuzzer mutates as the server's decoder meets them. Text:
// the RPC's name, a space, and the request in protobuf text format, which
// survives mutations that change a string's length (binary's length
// prefixes do not) and reads as what it is in testdata.
func parse(data []byte) (op, proto.Message, bool) {
	if len(data) == 0 {
		return 0, nil, false
	}
	if data[0] < 0x20 {
		o := op(data[0] % byte(numOps))
		req := o.newRequest()
		// As the server's request codec decodes, so that what fails here
		// fails there too, and is sent as it is (see rawCall).
		return o, req, proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data[1:], req) == nil
	}
	name, text, _ := strings.Cut(string(data), " ")
	for o := range numOps {
		if o.String() == name {
			req := o.newRequest()
			return o, req, prototext.Unmarshal([]byte(text), req) == nil
		}
	}
	return 0, nil, false
}

// binaryInput encodes a request in the binary form.
func binaryInput(o op, req proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		panic(err)
	}
	return append([]byte{byte(o)}, b...)
}

// textInput encodes a request in the text form.
func textInput(o op, req proto.Message) []byte {
	b, err := prototext.MarshalOptions{}.Marshal(req)
	if err != nil {
		panic(err)
	}
	return append([]byte(o.String()+" "), b...)
}

func TestMain(m *testing.M) {
	code := m.Run()
	proc.cleanup()
	os.Exit(code)
}

// FuzzAPI's seed corpus is testdata/fuzz/FuzzAPI: the seed-* files are
// the text form of seeds() (see TestSeedCorpus), the others are what the
// fuzzer found that seeds() cannot say (frames that do not decode). The
// well-formed seeds are added in the binary form too, so the fuzzer mutates
// both.
func FuzzAPI(f *testing.F) {
	named := map[string]bool{} // kinds whose crash a named seed shows
	for _, s := range seeds() {
		if !s.crasher {
			f.Add(binaryInput(s.op, s.req))
		} else if r, ok := s.req.(*apipb.CreateRequest); ok {
			named[r.GetResource().GetResource()] = true
		}
	}
	// Every other kind's Create and Update, so mutations start from each
	// kind's validation and defaulting, not only the fixtures'.
	for _, k := range scheme.All() {
		if named[k.Resource] {
			continue
		}
		obj := k.New()
		m := obj.GetMetadata()
		m.Name, m.Labels = names[1], map[string]string{"app": "fuzz"}
		if k.Namespaced {
			m.Namespace = namespaces[1]
		}
		a, err := anypb.New(obj)
		if err != nil {
			f.Fatal(err)
		}
		for _, r := range []struct {
			op  op
			req proto.Message
		}{
			{opCreate, &apipb.CreateRequest{Resource: k.Ref(), Namespace: m.Namespace, Object: a}},
			{opUpdate, &apipb.UpdateRequest{Resource: k.Ref(), Namespace: m.Namespace, Object: a}},
		} {
			f.Add(textInput(r.op, r.req))
			f.Add(binaryInput(r.op, r.req))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := proc.harness()
		if err != nil {
			t.Fatalf("starting the apiserver: %v", err)
		}
		h.run(t, data)
	})
}

// harness is the process's apiserver and what the fuzzer knows about it.
type harness struct {
	s   *apitest.Server
	api apipb.APIClient
}

// ignore, from $SKIFF_FUZZ_IGNORE, matches failures to log rather than fail:
// the fuzzer stops at its first failure, so a long run looks past the bugs
// already known with, say, SKIFF_FUZZ_IGNORE='checkNamespace|metadata null'.
var ignore = func() *regexp.Regexp {
	if e := os.Getenv("SKIFF_FUZZ_IGNORE"); e != "" {
		return regexp.MustCompile(e)
	}
	return nil
}()

// upstreamInternal matches the Internal answers upstream gives on purpose,
// which are no bug: pkg/registry/core/pod/storage/eviction.go answers
// InternalError to an eviction two budgets cover.
var upstreamInternal = regexp.MustCompile(`^Internal error occurred: This pod has more than one PodDisruptionBudget`)

func fail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if ignore != nil && ignore.MatchString(msg) {
		t.Log("ignored: " + msg)
		return
	}
	t.Error(msg)
}

func (h *harness) run(t *testing.T, data []byte) {
	if len(data) == 0 || len(data) > maxInput {
		return
	}
	o, req, ok := parse(data)
	if !ok {
		if data[0] < 0x20 {
			h.raw(t, op(data[0]%byte(numOps)), data[1:])
		}
		return
	}
	bound(o, req)
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	h.ensureTarget(ctx, o, req)
	resp, err := call(ctx, h.api, o, req)
	if c := status.Code(err); (c == codes.Internal || c == codes.Unknown) && !upstreamInternal.MatchString(apierrors.Message(err)) {
		fail(t, "%s answered %s: %s\nrequest: %s", o, c, apierrors.Message(err), describe(req))
	}
	// The server says ServiceUnavailable only when etcd cannot be reached;
	// said while etcd answers, it is a storage error nobody mapped. (With
	// no details, Unavailable is gRPC's own: the connection, not an answer.)
	unavailable := status.Code(err) == codes.Unavailable && len(status.Convert(err).Details()) > 0
	if err == nil {
		if msg := checkAnswer(o, req, resp); msg != "" {
			fail(t, "%s %s\nrequest: %s", o, msg, describe(req))
		}
	}
	if err := h.alive(unavailable); err != nil {
		t.Fatalf("apiserver stopped answering after %s: %v\nrequest: %s", o, err, describe(req))
	}
	if unavailable {
		fail(t, "%s answered Unavailable while etcd answers: %s\nrequest: %s", o, apierrors.Message(err), describe(req))
	}
}

// raw sends a frame that does not decode as the op's request as it is: the
// server's request codec must answer it with InvalidArgument.
func (h *harness) raw(t *testing.T, o op, frame []byte) {
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	err := rawCall(ctx, h.s.Conn, o, frame)
	if c := status.Code(err); c == codes.Internal || c == codes.Unknown {
		fail(t, "%s answered %s to an undecodable frame: %s\nframe: %q", o, c, apierrors.Message(err), frame)
	}
	if err := h.alive(false); err != nil {
		t.Fatalf("apiserver stopped answering after %s with an undecodable frame: %v\nframe: %q", o, err, frame)
	}
}

func rawCall(ctx context.Context, conn *grpc.ClientConn, o op, frame []byte) error {
	method := "/" + apipb.API_ServiceDesc.ServiceName + "/" + o.String()
	var resp []byte
	if o != opWatch {
		return conn.Invoke(ctx, method, &frame, &resp, grpc.ForceCodecV2(rawCodec{}))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return err
	}
	if err := st.SendMsg(&frame); err != nil {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	return readQuietly(ctx, cancel, func() error { return st.RecvMsg(&resp) })
}

// readQuietly reads a stream with recv until it ends, has given watchEvents
// messages, or is quiet for watchIdle, when it cancels the stream's context.
// It returns the stream's error, or nil if the stream ended or was cut.
func readQuietly(ctx context.Context, cancel context.CancelFunc, recv func() error) error {
	errc := make(chan error, 1)
	go func() {
		for range watchEvents {
			if err := recv(); err != nil {
				errc <- err
				return
			}
			errc <- nil
		}
		errc <- io.EOF
	}()
	for {
		select {
		case err := <-errc:
			switch {
			case err == nil:
				continue
			case errors.Is(err, io.EOF):
				return nil
			case ctx.Err() != nil && (status.Code(err) == codes.Canceled || status.Code(err) == codes.DeadlineExceeded):
				return nil // our cut, not the server's answer
			}
			return err
		case <-time.After(watchIdle):
			cancel()
		}
	}
}

// rawCodec sends and receives frames as they are, under the name of the
// proto codec so the server reads them with its own.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// call sends one request; for Watch, the answer is the last event read.
func call(ctx context.Context, api apipb.APIClient, o op, req proto.Message) (proto.Message, error) {
	switch o {
	case opCreate:
		return api.Create(ctx, req.(*apipb.CreateRequest))
	case opGet:
		return api.Get(ctx, req.(*apipb.GetRequest))
	case opList:
		return api.List(ctx, req.(*apipb.ListRequest))
	case opUpdate:
		return api.Update(ctx, req.(*apipb.UpdateRequest))
	case opUpdateStatus:
		return api.UpdateStatus(ctx, req.(*apipb.UpdateRequest))
	case opPatch:
		return api.Patch(ctx, req.(*apipb.PatchRequest))
	case opDelete:
		return api.Delete(ctx, req.(*apipb.DeleteRequest))
	case opDiscovery:
		return api.Discovery(ctx, req.(*apipb.DiscoveryRequest))
	case opBind:
		return api.Bind(ctx, req.(*apipb.BindRequest))
	case opEvict:
		return api.Evict(ctx, req.(*apipb.EvictRequest))
	case opHistory:
		return api.History(ctx, req.(*apipb.HistoryRequest))
	case opWatch:
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w, err := api.Watch(ctx, req.(*apipb.WatchRequest))
		if err != nil {
			return nil, err
		}
		var last proto.Message
		err = readQuietly(ctx, cancel, func() error {
			ev, err := w.Recv()
			if err == nil {
				last = ev
			}
			return err
		})
		return last, err
	}
	panic(fmt.Sprintf("op %d out of range", o))
}

// checkAnswer looks at a successful answer for what must never be: an object
// the server took under a type URL that names another message, or an answer
// the client cannot decode. It returns what is wrong, or "".
func checkAnswer(o op, req, resp proto.Message) string {
	var sent *anypb.Any
	var ref *apipb.Resource
	switch r := req.(type) {
	case *apipb.CreateRequest:
		sent, ref = r.GetObject(), r.GetResource()
	case *apipb.UpdateRequest:
		sent, ref = r.GetObject(), r.GetResource()
	}
	if k, err := scheme.ForRef(ref); err == nil && sent != nil {
		if u := sent.GetTypeUrl(); u != "" && typeName(u) != string(k.FullName()) {
			return fmt.Sprintf("accepted an object of type %q as %s", u, k.GroupResource())
		}
	}
	var got []*anypb.Any
	switch r := resp.(type) {
	case *anypb.Any:
		got = append(got, r)
	case *apipb.ListResponse:
		got = r.GetItems()
	case *apipb.WatchEvent:
		got = append(got, r.GetObject())
	case *apipb.HistoryResponse:
		for _, it := range r.GetItems() {
			got = append(got, it.GetObject())
		}
	}
	for _, a := range got {
		if a == nil {
			continue
		}
		if _, err := a.UnmarshalNew(); err != nil {
			return fmt.Sprintf("answered an object the client cannot decode (%s): %v", a.GetTypeUrl(), err)
		}
	}
	return ""
}

// typeName is the message name of an Any's type URL: what follows the last
// slash, as anypb resolves it.
func typeName(url string) string { return url[strings.LastIndex(url, "/")+1:] }

// bound keeps what the fuzzer stores bounded (see names) and the fixture
// namespaces alive. It changes only names and dry-run flags, never the shape
// of a request, and failures print the request as sent.
func bound(o op, req proto.Message) {
	switch r := req.(type) {
	case *apipb.CreateRequest:
		k, obj := decodeObject(r.GetResource(), r.GetObject())
		if obj == nil || obj.GetMetadata() == nil {
			return
		}
		m := obj.GetMetadata()
		switch {
		case m.Name != "" && validName(k, m.Name):
			m.Name = pick(names, m.Name)
		case m.Name != "" || m.GenerateName != "":
			r.DryRun = true
		}
		v, err := proto.MarshalOptions{Deterministic: true}.Marshal(obj)
		if err == nil {
			r.Object.Value = v
		}
	case *apipb.DeleteRequest:
		if r.GetResource().GetGroup() == "" && r.GetResource().GetResource() == "namespaces" && contains(protected, r.GetName()) {
			r.DryRun = true
		}
	}
}

func validName(k *scheme.Kind, name string) bool {
	if k.Kind == "Namespace" {
		return len(validation.IsDNS1123Label(name)) == 0
	}
	return len(validation.IsDNS1123Subdomain(name)) == 0
}

// decodeObject decodes an Any the way the server would, or returns nil.
func decodeObject(ref *apipb.Resource, a *anypb.Any) (*scheme.Kind, scheme.Object) {
	k, err := scheme.ForRef(ref)
	if err != nil || a == nil {
		return nil, nil
	}
	if u := a.GetTypeUrl(); u != "" && typeName(u) != string(k.FullName()) {
		return nil, nil
	}
	obj := k.New()
	if proto.Unmarshal(a.GetValue(), obj) != nil {
		return nil, nil
	}
	return k, obj
}

func pick(from []string, s string) string {
	if contains(from, s) {
		return s
	}
	h := fnv.New32a()
	h.Write([]byte(s))
	return from[h.Sum32()%uint32(len(from))]
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ensureTarget puts back the fixture a request works on when an earlier
// input deleted it, so the seeds that update, patch, bind or evict reach
// the code behind the lookup whatever ran before them.
func (h *harness) ensureTarget(ctx context.Context, o op, req proto.Message) {
	var ref *apipb.Resource
	var ns, name string
	switch r := req.(type) {
	case *apipb.GetRequest:
		ref, ns, name = r.GetResource(), r.GetNamespace(), r.GetName()
	case *apipb.PatchRequest:
		ref, ns, name = r.GetResource(), r.GetNamespace(), r.GetName()
	case *apipb.DeleteRequest:
		ref, ns, name = r.GetResource(), r.GetNamespace(), r.GetName()
	case *apipb.HistoryRequest:
		ref, ns, name = r.GetResource(), r.GetNamespace(), r.GetName()
	case *apipb.UpdateRequest:
		_, obj := decodeObject(r.GetResource(), r.GetObject())
		if obj == nil {
			return
		}
		ref, ns, name = r.GetResource(), r.GetNamespace(), obj.GetMetadata().GetName()
		if ns == "" {
			ns = obj.GetMetadata().GetNamespace()
		}
	case *apipb.BindRequest:
		ref, ns, name = podRef, r.GetBinding().GetMetadata().GetNamespace(), r.GetBinding().GetMetadata().GetName()
	case *apipb.EvictRequest:
		ref, ns, name = podRef, r.GetEviction().GetMetadata().GetNamespace(), r.GetEviction().GetMetadata().GetName()
	default:
		return
	}
	k, err := scheme.ForRef(ref)
	if err != nil || !contains(names, name) {
		return
	}
	if k.Namespaced && ns != namespaces[0] {
		return
	}
	obj := fixture(k, name)
	if obj == nil {
		return
	}
	if _, err := h.api.Get(ctx, &apipb.GetRequest{Resource: k.Ref(), Namespace: ns, Name: name, ResourceVersion: "0"}); !apierrors.IsNotFound(err) {
		return
	}
	a, err := anypb.New(obj)
	if err != nil {
		return
	}
	// Best effort: the request then meets whatever is there.
	_, _ = h.api.Create(ctx, &apipb.CreateRequest{Resource: k.Ref(), Namespace: ns, Object: a})
}

var podRef = &apipb.Resource{Version: "v1", Resource: "pods"}

// fixtures are valid objects of the kinds the seeds work on, in upstream's
// JSON; a fixture's name is set per use.
var fixtures = map[string]string{
	"ConfigMap":  `{"apiVersion":"v1","kind":"ConfigMap","data":{"k":"v"}}`,
	"Secret":     `{"apiVersion":"v1","kind":"Secret","stringData":{"k":"v"}}`,
	"Pod":        `{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"fuzz"}},"spec":{"containers":[{"name":"c","image":"skiff.local/pause:3.10"}]}}`,
	"Deployment": `{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":1,"selector":{"matchLabels":{"app":"fuzz"}},"template":{"metadata":{"labels":{"app":"fuzz"}},"spec":{"containers":[{"name":"c","image":"skiff.local/pause:3.10"}]}}}}`,
	"ReplicaSet": `{"apiVersion":"apps/v1","kind":"ReplicaSet","spec":{"replicas":1,"selector":{"matchLabels":{"app":"fuzz"}},"template":{"metadata":{"labels":{"app":"fuzz"}},"spec":{"containers":[{"name":"c","image":"skiff.local/pause:3.10"}]}}}}`,
	"Node":       `{"apiVersion":"v1","kind":"Node","metadata":{"labels":{"kubernetes.io/hostname":"n"}}}`,
	"Namespace":  `{"apiVersion":"v1","kind":"Namespace"}`,
	"Service":    `{"apiVersion":"v1","kind":"Service","spec":{"selector":{"app":"fuzz"},"ports":[{"port":80}]}}`,
}

// fixture is the kind's fixture named name (in namespaces[0] when
// namespaced), or nil for kinds without one.
func fixture(k *scheme.Kind, name string) scheme.Object {
	j, ok := fixtures[k.Kind]
	if !ok {
		return nil
	}
	obj, err := codec.DecodeObject([]byte(j), codec.Options{Strict: true})
	if err != nil {
		panic(fmt.Sprintf("fixture %s: %v", k.Kind, err))
	}
	m := scheme.Meta(obj)
	m.Name = name
	if k.Namespaced {
		m.Namespace = namespaces[0]
	}
	return obj
}

// alive is the property every input must keep: the API answers. A server
// whose run group ended stops serving, so Discovery, which never reaches
// etcd, tells; with etcd too, it asks etcd as well (a read from etcd, not
// the cache), which every input could but need not pay for.
func (h *harness) alive(etcd bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.api.Discovery(ctx, &apipb.DiscoveryRequest{}); err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	if !etcd {
		return nil
	}
	if _, err := h.api.Get(ctx, &apipb.GetRequest{Resource: &apipb.Resource{Version: "v1", Resource: "namespaces"}, Name: "default"}); err != nil {
		return fmt.Errorf("get namespace default from etcd: %w", err)
	}
	return nil
}

// describe prints a request for a failure report; an object under a type
// URL prototext cannot resolve is decoded as the kind the request names.
func describe(req proto.Message) string {
	var b strings.Builder
	b.WriteString(prototext.MarshalOptions{}.Format(req))
	var a *anypb.Any
	var ref *apipb.Resource
	switch r := req.(type) {
	case *apipb.CreateRequest:
		a, ref = r.GetObject(), r.GetResource()
	case *apipb.UpdateRequest:
		a, ref = r.GetObject(), r.GetResource()
	case *apipb.PatchRequest:
		fmt.Fprintf(&b, "\npatch: %.2000s", r.GetPatch())
	}
	if _, err := a.UnmarshalNew(); a != nil && err != nil {
		if k, err := scheme.ForRef(ref); err == nil {
			obj := k.New()
			if proto.Unmarshal(a.GetValue(), obj) == nil {
				fmt.Fprintf(&b, "\nobject as %s: %.2000s", k.Kind, prototext.MarshalOptions{}.Format(obj))
			}
		}
	}
	return b.String()
}

// proc is the apiserver of this process, started by the first input that
// needs it: a fuzzing coordinator runs no input and so starts none, and each
// worker process starts its own, in its own temporary directory on ports the
// kernel picks. It lives until TestMain ends, longer than any *testing.T.
var proc process

type process struct {
	once sync.Once
	h    *harness
	err  error
	tb   *processTB
}

func (p *process) harness() (*harness, error) {
	p.once.Do(func() {
		p.tb = &processTB{}
		p.h, p.err = p.start()
	})
	return p.h, p.err
}

func (p *process) start() (h *harness, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = errors.New(string(f))
		}
	}()
	s := apitest.Start(p.tb)
	h = &harness{s: s, api: s.API}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ns := range namespaces {
		k, _ := scheme.ForResource("", "namespaces")
		a, err := anypb.New(fixture(k, ns))
		if err != nil {
			return nil, err
		}
		if _, err := h.api.Create(ctx, &apipb.CreateRequest{Resource: k.Ref(), Object: a}); err != nil {
			return nil, fmt.Errorf("namespace %s: %w", ns, err)
		}
	}
	return h, nil
}

func (p *process) cleanup() {
	if p.tb != nil {
		p.tb.cleanup()
	}
}

// processTB is the testing.TB apitest gets for the process's apiserver. The
// embedded TB is nil: apitest uses only the methods defined here.
type processTB struct {
	testing.TB
	mu       sync.Mutex
	dirs     []string
	cleanups []func()
}

// fatal carries a Fatal out of apitest.Start to process.start.
type fatal string

func (p *processTB) Helper() {}

// tempPrefix names this process's temporary directories by its pid, so a
// later process can tell which ones outlived theirs (see sweepTemp).
var tempPrefix = fmt.Sprintf("skiff-fuzz-%d-", os.Getpid())

func (p *processTB) TempDir() string {
	sweepTemp()
	d, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		p.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dirs = append(p.dirs, d)
	return d
}

func (p *processTB) Cleanup(fn func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, fn)
}

func (p *processTB) Fatal(args ...any)                 { panic(fatal(fmt.Sprint(args...))) }
func (p *processTB) Fatalf(format string, args ...any) { panic(fatal(fmt.Sprintf(format, args...))) }
func (p *processTB) Errorf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (p *processTB) Logf(format string, args ...any)   { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func (p *processTB) cleanup() {
	p.mu.Lock()
	fns, dirs := p.cleanups, p.dirs
	p.cleanups, p.dirs = nil, nil
	p.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// sweepTemp removes the directories of fuzz processes that are gone. The
// coordinator gives a worker a second to exit before it kills it, less than
// a graceful stop of an apiserver and its etcd takes, so a worker's cleanup
// often never runs; the next worker's start does it instead.
func sweepTemp() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "skiff-fuzz-*-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.Split(filepath.Base(d), "-")[2])
		if err != nil || pid == os.Getpid() {
			continue
		}
		// On Unix FindProcess always succeeds; signal 0 tells if it lives.
		if p, err := os.FindProcess(pid); err == nil && p.Signal(syscall.Signal(0)) == nil {
			continue
		}
		os.RemoveAll(d)
	}
}
