package leaderelection

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/client"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// leaseAPI stores Leases in memory with the apiserver's optimistic
// concurrency: an update with a stale resourceVersion is a Conflict.
type leaseAPI struct {
	apipb.UnimplementedAPIServer
	mu     sync.Mutex
	rev    int64
	leases map[string]*coordinationv1.Lease
}

func leaseKey(ns, name string) string { return ns + "/" + name }

func (s *leaseAPI) Get(_ context.Context, req *apipb.GetRequest) (*anypb.Any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[leaseKey(req.GetNamespace(), req.GetName())]
	if !ok {
		return nil, apierrors.NewNotFound("leases.coordination.k8s.io", req.GetName())
	}
	return anypb.New(l)
}

func (s *leaseAPI) write(a *anypb.Any, create bool) (*anypb.Any, error) {
	l := &coordinationv1.Lease{}
	if err := a.UnmarshalTo(l); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := leaseKey(l.GetMetadata().GetNamespace(), l.GetMetadata().GetName())
	cur, exists := s.leases[k]
	switch {
	case create && exists:
		return nil, apierrors.NewAlreadyExists("leases.coordination.k8s.io", l.Metadata.Name)
	case !create && !exists:
		return nil, apierrors.NewNotFound("leases.coordination.k8s.io", l.Metadata.Name)
	case !create && cur.GetMetadata().GetResourceVersion() != l.GetMetadata().GetResourceVersion():
		return nil, apierrors.NewConflict("leases.coordination.k8s.io", l.Metadata.Name, apierrors.StaleMessage)
	}
	s.rev++
	l.Metadata.ResourceVersion = strconv.FormatInt(s.rev, 10)
	s.leases[k] = l
	return anypb.New(l)
}

func (s *leaseAPI) Create(_ context.Context, req *apipb.CreateRequest) (*anypb.Any, error) {
	return s.write(req.GetObject(), true)
}

func (s *leaseAPI) Update(_ context.Context, req *apipb.UpdateRequest) (*anypb.Any, error) {
	return s.write(req.GetObject(), false)
}

func (s *leaseAPI) lease(t *testing.T) *coordinationv1.Lease {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[leaseKey("kube-system", "kube-scheduler")]
	if !ok {
		t.Fatal("no lease")
	}
	return proto.Clone(l).(*coordinationv1.Lease)
}

// candidate is one replica: its own connection to the server, which the
// test can cut, and what its callbacks saw.
type candidate struct {
	id       string
	cut      atomic.Bool
	calls    atomic.Int32
	stop     context.CancelFunc
	done     chan error
	mu       sync.Mutex
	started  time.Time
	stopped  time.Time
	leaders  []string
	isLeader atomic.Bool
}

// leaseDuration is every candidate's LeaseDuration.
const leaseDuration = time.Second

type cluster struct {
	t       *testing.T
	api     *leaseAPI
	lis     *bufconn.Listener
	leading atomic.Int32
}

func newCluster(t *testing.T) *cluster {
	api := &leaseAPI{leases: map[string]*coordinationv1.Lease{}}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	apipb.RegisterAPIServer(srv, api)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return &cluster{t: t, api: api, lis: lis}
}

func (c *cluster) start(id string) *candidate {
	t := c.t
	cand := &candidate{id: id, done: make(chan error, 1)}
	conn, err := grpc.NewClient("passthrough:///fake",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return c.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			cand.calls.Add(1)
			if cand.cut.Load() {
				return apierrors.NewUnavailable("connection refused")
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	cand.stop = cancel
	cfg := Config{
		Client: client.New(conn), Namespace: "kube-system", Name: "kube-scheduler", Identity: id,
		LeaseDuration: leaseDuration, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond,
		OnStartedLeading: func(ctx context.Context) {
			if n := c.leading.Add(1); n > 1 {
				t.Errorf("%s leads while %d other(s) do", id, n-1)
			}
			cand.mu.Lock()
			cand.started = time.Now()
			cand.mu.Unlock()
			cand.isLeader.Store(true)
			<-ctx.Done()
			cand.isLeader.Store(false)
			c.leading.Add(-1)
		},
		OnStoppedLeading: func() {
			cand.mu.Lock()
			cand.stopped = time.Now()
			cand.mu.Unlock()
		},
		OnNewLeader: func(leader string) {
			cand.mu.Lock()
			cand.leaders = append(cand.leaders, leader)
			cand.mu.Unlock()
		},
	}
	go func() { cand.done <- Run(ctx, cfg) }()
	t.Cleanup(func() { cancel(); <-cand.done })
	return cand
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leaderOf returns the one candidate leading, the other one.
func leaderOf(t *testing.T, a, b *candidate) (*candidate, *candidate) {
	t.Helper()
	waitFor(t, "a leader", func() bool { return a.isLeader.Load() || b.isLeader.Load() })
	if a.isLeader.Load() {
		return a, b
	}
	return b, a
}

func TestOneLeaderAndHandOverOnStop(t *testing.T) {
	c := newCluster(t)
	a, b := c.start("a"), c.start("b") // both race to create the Lease
	leader, standby := leaderOf(t, a, b)
	// The standby keeps campaigning and never wins, also once a whole
	// LeaseDuration has passed: the leader's renewals keep the lease alive,
	// and a standby that missed them would take the lease then. So wait that
	// out, and then for the standby to finish a try (one Get) started after
	// it: the call after next proves the next one returned.
	time.Sleep(leaseDuration + 100*time.Millisecond)
	n := standby.calls.Load()
	waitFor(t, "the standby to campaign", func() bool { return standby.calls.Load() >= n+2 })
	if standby.isLeader.Load() {
		t.Fatal("both candidates lead")
	}
	if l := c.api.lease(t); l.Spec.GetHolderIdentity() != leader.id || l.Spec.GetLeaseTransitions() != 0 {
		t.Fatalf("lease held by %q with %d transitions; want %q with 0", l.Spec.GetHolderIdentity(), l.Spec.GetLeaseTransitions(), leader.id)
	}

	leader.stop() // releases the lease: the standby takes over at its next try
	if err := <-leader.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	leader.done <- nil // for the cleanup
	waitFor(t, "the standby to lead", standby.isLeader.Load)
	l := c.api.lease(t)
	if l.Spec.GetHolderIdentity() != standby.id || l.Spec.GetLeaseTransitions() != 1 {
		t.Errorf("lease held by %q with %d transitions; want %q with 1", l.Spec.GetHolderIdentity(), l.Spec.GetLeaseTransitions(), standby.id)
	}
	standby.mu.Lock()
	defer standby.mu.Unlock()
	if got, want := strings.Join(standby.leaders, ","), leader.id+","+standby.id; got != want {
		t.Errorf("standby saw leaders %s, want %s", got, want)
	}
	leader.mu.Lock()
	defer leader.mu.Unlock()
	if leader.stopped.IsZero() {
		t.Error("OnStoppedLeading was not called on the stopped leader")
	}
}

func TestCutOffLeaderStepsDownBeforeTheLeaseExpires(t *testing.T) {
	c := newCluster(t)
	a, b := c.start("a"), c.start("b")
	leader, standby := leaderOf(t, a, b)
	leader.cut.Store(true) // it can no longer renew, nor release

	waitFor(t, "the standby to lead", standby.isLeader.Load)
	leader.mu.Lock()
	stopped := leader.stopped
	leader.mu.Unlock()
	standby.mu.Lock()
	started := standby.started
	standby.mu.Unlock()
	if stopped.IsZero() || !stopped.Before(started) {
		t.Errorf("old leader stopped at %v, new one started at %v: they overlapped", stopped, started)
	}
	l := c.api.lease(t)
	if l.Spec.GetHolderIdentity() != standby.id || l.Spec.GetLeaseTransitions() != 1 {
		t.Errorf("lease held by %q with %d transitions; want %q with 1", l.Spec.GetHolderIdentity(), l.Spec.GetLeaseTransitions(), standby.id)
	}
}

func TestConfigIsValidated(t *testing.T) {
	ok := Config{Client: &client.Client{}, Name: "x", Identity: "me"}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no client", func(c *Config) { c.Client = nil }, "Client is required"},
		{"no identity", func(c *Config) { c.Identity = "" }, "Identity is required"},
		{"no lease name", func(c *Config) { c.Name = "" }, "Name"},
		{"renew deadline not below lease duration", func(c *Config) { c.LeaseDuration, c.RenewDeadline = 5*time.Second, 5*time.Second }, "LeaseDuration must be greater"},
		{"retry period not below renew deadline", func(c *Config) { c.RetryPeriod = 10 * time.Second }, "RenewDeadline must be greater"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.change(&cfg)
			err := Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run = %v, want an error about %q", err, tc.want)
			}
		})
	}
}
