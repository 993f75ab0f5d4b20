package servicealloc

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/internal/etcd"
	"skiff.dev/apiserver/internal/registry"
	"skiff.dev/apiserver/internal/storage"
	"skiff.dev/apiserver/internal/validation"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// One etcd for the package; each test has a prefix of its own, so tests
// cost a registry's start, not an etcd's.
var (
	etcdCli  *clientv3.Client
	prefixes atomic.Int64
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "servicealloc")
	if err != nil {
		panic(err)
	}
	srv, err := etcd.Start(context.Background(), dir)
	if err != nil {
		panic(err)
	}
	etcdCli, err = etcd.Dial(context.Background(), []string{srv.Endpoint})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	etcdCli.Close()
	srv.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

var svcKind, _ = scheme.ForResource("", "services")

// env is one apiserver's registry with the allocator as the Services'
// side keys, on a fresh prefix.
type env struct {
	t     *testing.T
	ctx   context.Context
	store *storage.Store
	alloc *Allocator
	reg   *registry.Registry
	prom  *prometheus.Registry
}

type envOpt func(*Config, *bool)

func withRanges(cidrs ...string) envOpt {
	return func(c *Config, _ *bool) {
		r, err := ParseIPRanges(cidrs)
		if err != nil {
			panic(err)
		}
		c.IPRanges = r
	}
}

func withPorts(s string) envOpt {
	return func(c *Config, _ *bool) {
		p, err := ParsePortRange(s)
		if err != nil {
			panic(err)
		}
		c.NodePorts = p
	}
}

// withoutView leaves the view empty, as if it had not listed yet: every
// taken key is learnt from a refused transaction.
func withoutView() envOpt { return func(_ *Config, watch *bool) { *watch = false } }

func withRand(f func(uint64) uint64) envOpt { return func(c *Config, _ *bool) { c.Rand = f } }

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	store := storage.New(etcdCli, fmt.Sprintf("/t%d", prefixes.Add(1)), nil)
	return newEnvOn(t, store, opts...)
}

// newEnvOn is another apiserver on store's prefix.
func newEnvOn(t *testing.T, store *storage.Store, opts ...envOpt) *env {
	t.Helper()
	ranges, _ := ParseIPRanges([]string{"10.96.0.0/12"})
	prom := prometheus.NewRegistry()
	cfg := Config{Store: store, IPRanges: ranges, NodePorts: PortRange{Base: 30000, Size: 2768}, Registerer: prom}
	watch := true
	for _, o := range opts {
		o(&cfg, &watch)
	}
	alloc := New(cfg)
	reg := registry.New(registry.Config{Store: store, SideKeys: map[*scheme.Kind]registry.SideKeys{svcKind: alloc},
		Validation: validation.Options{NodePortMin: int32(cfg.NodePorts.Base), NodePortMax: int32(cfg.NodePorts.Last())}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { reg.Start(ctx); done <- struct{}{} }()
	n := 1
	if watch {
		n = 2
		go func() { alloc.Start(ctx); done <- struct{}{} }()
	}
	t.Cleanup(func() {
		cancel()
		for range n {
			<-done
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := reg.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	if watch {
		<-alloc.Listed()
	}
	return &env{t: t, ctx: ctx, store: store, alloc: alloc, reg: reg, prom: prom}
}

func svc(name string, mutate ...func(*corev1.ServiceSpec)) *corev1.Service {
	s := &corev1.Service{
		Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:     &corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []*corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	for _, m := range mutate {
		m(s.Spec)
	}
	return s
}

func (e *env) create(s *corev1.Service) (*corev1.Service, error) {
	e.t.Helper()
	o, err := e.reg.Create(e.ctx, svcKind, "default", proto.Clone(s).(*corev1.Service), false)
	if err != nil {
		return nil, err
	}
	return proto.Clone(o.Msg).(*corev1.Service), nil
}

func (e *env) mustCreate(s *corev1.Service) *corev1.Service {
	e.t.Helper()
	out, err := e.create(s)
	if err != nil {
		e.t.Fatalf("create %s: %v", s.Metadata.Name, err)
	}
	return out
}

func (e *env) update(s *corev1.Service) (*corev1.Service, error) {
	e.t.Helper()
	o, err := e.reg.Update(e.ctx, svcKind, "default", proto.Clone(s).(*corev1.Service), false)
	if err != nil {
		return nil, err
	}
	return proto.Clone(o.Msg).(*corev1.Service), nil
}

func (e *env) mustUpdate(s *corev1.Service) *corev1.Service {
	e.t.Helper()
	out, err := e.update(s)
	if err != nil {
		e.t.Fatalf("update %s: %v", s.Metadata.Name, err)
	}
	return out
}

func (e *env) delete(name string) {
	e.t.Helper()
	if _, err := e.reg.Delete(e.ctx, svcKind, "default", name, registry.DeleteOptions{}); err != nil {
		e.t.Fatalf("delete %s: %v", name, err)
	}
}

// keys are the allocation keys in etcd, each with its owner's name.
func (e *env) keys() map[string]string {
	e.t.Helper()
	kvs, _, err := listAll(e.ctx, e.store, RangesPrefix, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range kvs {
		parts := strings.Split(string(kv.Value), "/")
		out[kv.Key] = parts[min(1, len(parts)-1)]
	}
	return out
}

func (e *env) wantKeys(want map[string]string) {
	e.t.Helper()
	if got := e.keys(); !mapsEqual(got, want) {
		e.t.Fatalf("allocation keys:\n got %v\nwant %v", got, want)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// putRaw writes a Service straight into etcd, as a restore would: no
// allocation, no keys.
func (e *env) putRaw(s *corev1.Service) {
	e.t.Helper()
	s = proto.Clone(s).(*corev1.Service)
	if s.Metadata.Uid == "" {
		s.Metadata.Uid = "uid-" + s.Metadata.Name
	}
	b, err := proto.Marshal(s)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.store.Create(e.ctx, "services/default/"+s.Metadata.Name, b); err != nil {
		e.t.Fatal(err)
	}
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	// gRPC status errors print "rpc error: code = X desc = msg".
	s := err.Error()
	if i := strings.Index(s, "desc = "); i >= 0 {
		return s[i+len("desc = "):]
	}
	return s
}

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	if got := errText(err); got != want {
		t.Fatalf("error:\n got %s\nwant %s", got, want)
	}
}

func sorted(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
