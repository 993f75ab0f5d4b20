package integration

import (
	"context"
	"slices"
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
	const leaseDuration = 2 * time.Second
	// attempts counts each candidate's tries at the lease: the elector reads
	// its clock once at the start of every try, so a hooked clock is the
	// candidate's heartbeat. seen is what OnNewLeader reported, under mu.
	var attempts [2]atomic.Int32
	var seen [2][]string
	run := func(ctx context.Context, id string) chan struct{} {
		i := int(id[0] - 'a')
		done := make(chan struct{})
		go func() {
			defer close(done)
			leaderelection.Run(ctx, leaderelection.Config{
				Client: c, Namespace: "kube-system", Name: "kube-scheduler", Identity: id,
				LeaseDuration: leaseDuration, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond,
				Now: func() time.Time {
					attempts[i].Add(1)
					return time.Now()
				},
				OnNewLeader: func(leader string) {
					mu.Lock()
					seen[i] = append(seen[i], leader)
					mu.Unlock()
				},
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
	// b must not win while a holds and renews the lease. A bare sleep would
	// pass if b never campaigned, so prove it did: wait out more than a
	// LeaseDuration (long enough for a b that wrongly judged a's renewed
	// lease expired to take it), then see b complete a try that started
	// after that, and check it had read the lease as a's. Each try starts
	// with a read of b's clock, so two more reads mean one whole try.
	time.Sleep(leaseDuration + 500*time.Millisecond)
	n := attempts[1].Load()
	waitFor(t, func() bool { return attempts[1].Load() >= n+2 })
	mu.Lock()
	got, bSaw := slices.Clone(leaders), slices.Clone(seen[1])
	mu.Unlock()
	if len(got) != 1 || got[0] != "a" {
		t.Fatalf("leaders %v, want only a", got)
	}
	if len(bSaw) != 1 || bSaw[0] != "a" {
		t.Fatalf("b saw leaders %v while campaigning, want a", bSaw)
	}
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
