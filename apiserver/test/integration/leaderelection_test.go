package integration

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/client"
	"skiff.dev/client/leaderelection"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
)

func TestLeaderElectionOneLeaderAndFailover(t *testing.T) {
	s := apitest.Start(t)
	c := client.New(s.Conn)
	var leading atomic.Int32
	var mu sync.Mutex
	var leaders []string
	run := func(ctx context.Context, id string) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			leaderelection.Run(ctx, leaderelection.Config{
				Client: c, Namespace: "kube-system", Name: "kube-scheduler", Identity: id,
				LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond,
				OnStartedLeading: func(ctx context.Context) {
					if n := leading.Add(1); n > 1 {
						t.Errorf("%s leads while %d others do", id, n-1)
					}
					mu.Lock()
					leaders = append(leaders, id)
					mu.Unlock()
					<-ctx.Done()
					leading.Add(-1)
				},
			})
		}()
		return done
	}
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := run(ctxA, "a")
	waitFor(t, func() bool { return leading.Load() == 1 })
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	doneB := run(ctxB, "b")
	time.Sleep(time.Second) // b campaigns and must not win
	mu.Lock()
	if len(leaders) != 1 || leaders[0] != "a" {
		t.Fatalf("leaders %v, want only a", leaders)
	}
	mu.Unlock()
	stopA() // a releases the lease; b takes over
	<-doneA
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(leaders) == 2 })
	lease, err := client.For[*coordinationv1.Lease](c, "kube-system").Get(ctxT(t), "kube-scheduler")
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.GetHolderIdentity() != "b" || lease.Spec.GetLeaseTransitions() != 1 {
		t.Fatalf("lease after failover: holder %q transitions %d", lease.Spec.GetHolderIdentity(), lease.Spec.GetLeaseTransitions())
	}
	stopB()
	<-doneB
}
