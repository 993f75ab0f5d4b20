// Package leaderelection elects one leader among a component's replicas on a
// coordination.k8s.io/v1 Lease, with upstream's semantics: a candidate takes
// the lease when it is free or its holder has not renewed it within
// leaseDurationSeconds (judged by when this candidate last saw it change, so
// clocks need not agree), the leader renews every RetryPeriod, and gives up
// when it could not renew for RenewDeadline. Every write is guarded by the
// Lease's resourceVersion, so two candidates can never both win.
package leaderelection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// Config configures an election.
type Config struct {
	Client          *client.Client
	Namespace, Name string // the Lease: kube-system/kube-scheduler
	Identity        string // unique per candidate: hostname_uuid
	LeaseDuration   time.Duration
	RenewDeadline   time.Duration
	RetryPeriod     time.Duration
	// OnStartedLeading runs while this candidate leads; its context is
	// cancelled when leadership is lost, and it must then return: a new
	// campaign (or Run's return) waits for it.
	OnStartedLeading func(ctx context.Context)
	OnStoppedLeading func()
	OnNewLeader      func(identity string)
	Logger           *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

func (c *Config) defaults() error {
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 15 * time.Second
	}
	if c.RenewDeadline == 0 {
		c.RenewDeadline = 10 * time.Second
	}
	if c.RetryPeriod == 0 {
		c.RetryPeriod = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.Client == nil:
		return errors.New("leaderelection: Client is required")
	case c.Identity == "":
		return errors.New("leaderelection: Identity is required")
	case c.Name == "":
		return errors.New("leaderelection: Name (of the Lease) is required")
	case c.LeaseDuration <= c.RenewDeadline:
		return errors.New("leaderelection: LeaseDuration must be greater than RenewDeadline")
	case c.RenewDeadline <= c.RetryPeriod:
		return errors.New("leaderelection: RenewDeadline must be greater than RetryPeriod")
	}
	return nil
}

type elector struct {
	cfg    Config
	leases *client.Typed[*coordinationv1.Lease]
	// observed is the lease as last read and when this candidate saw it change.
	observed     *coordinationv1.Lease
	observedTime time.Time
	leader       string
}

// Run campaigns until ctx ends: acquire, lead while renewing, and on losing
// the lease return to campaigning. It releases the lease on ctx's end.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	e := &elector{cfg: cfg, leases: client.For[*coordinationv1.Lease](cfg.Client, cfg.Namespace)}
	for ctx.Err() == nil {
		if !e.acquire(ctx) {
			return nil
		}
		e.lead(ctx)
	}
	return nil
}

// ErrLost is what Lead returns when leadership ends before ctx does.
var ErrLost = errors.New("leader election lost")

// Lead runs work while this candidate leads and returns once it stops
// leading, as upstream's components do: they exit and let their service
// manager restart them, since caches and in-flight decisions made as leader
// are not to be trusted across a gap in leadership. It returns work's error,
// ErrLost when the lease went before ctx ended, or nil when ctx ended.
// cfg's OnStartedLeading and OnStoppedLeading are Lead's own.
func Lead(ctx context.Context, cfg Config, work func(ctx context.Context) error) error {
	lctx, lost := context.WithCancel(ctx)
	defer lost()
	var workErr error
	cfg.OnStartedLeading = func(ctx context.Context) {
		workErr = work(ctx)
		// Work that stops ends the campaign too (and releases the lease, so
		// another replica takes over at once) rather than leave a leader
		// renewing a lease for nothing.
		lost()
	}
	cfg.OnStoppedLeading = lost
	err := Run(lctx, cfg)
	switch {
	case err != nil:
		return err
	case workErr != nil:
		return workErr
	case ctx.Err() == nil:
		return ErrLost
	}
	return nil
}

func (e *elector) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// acquire blocks until this candidate holds the lease (true) or ctx ends.
func (e *elector) acquire(ctx context.Context) bool {
	for {
		// A hung call must not stall the campaign past what a leader
		// would wait for its own renewal.
		actx, cancel := context.WithTimeout(ctx, e.cfg.RenewDeadline)
		ok, err := e.tryAcquireOrRenew(actx)
		cancel()
		if ok {
			e.cfg.Logger.Info("successfully acquired lease", "lease", e.cfg.Namespace+"/"+e.cfg.Name, "identity", e.cfg.Identity)
			return true
		}
		if err != nil && ctx.Err() == nil {
			e.cfg.Logger.Debug("failed to acquire lease", "err", err)
		}
		if !e.sleep(ctx, e.cfg.RetryPeriod) {
			return false
		}
	}
}

// lead runs the leader's work and renews until a renewal misses the deadline
// or ctx ends. Every renewal must finish within RenewDeadline of the last
// good one, so a leader cut off from the apiserver stops leading before any
// other candidate can see the lease as expired (LeaseDuration later). It
// returns only once OnStartedLeading has returned.
func (e *elector) lead(ctx context.Context) {
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if e.cfg.OnStartedLeading != nil {
			e.cfg.OnStartedLeading(lctx)
		}
	}()
	lastRenew := e.cfg.Now()
	for e.sleep(ctx, e.cfg.RetryPeriod) {
		left := e.cfg.RenewDeadline - e.cfg.Now().Sub(lastRenew)
		var err error
		if left > 0 {
			rctx, rcancel := context.WithTimeout(ctx, left)
			var ok bool
			ok, err = e.tryAcquireOrRenew(rctx)
			rcancel()
			if ok {
				lastRenew = e.cfg.Now()
				continue
			}
			if ctx.Err() != nil {
				break
			}
		}
		if e.cfg.Now().Sub(lastRenew) >= e.cfg.RenewDeadline || (err == nil && e.leader != e.cfg.Identity) {
			e.cfg.Logger.Warn("failed to renew lease; leadership lost", "lease", e.cfg.Namespace+"/"+e.cfg.Name,
				"identity", e.cfg.Identity, "err", err)
			break
		}
	}
	cancel()
	<-done
	if ctx.Err() != nil {
		e.release()
	}
	if e.cfg.OnStoppedLeading != nil {
		e.cfg.OnStoppedLeading()
	}
}

// tryAcquireOrRenew is one step of upstream's algorithm.
func (e *elector) tryAcquireOrRenew(ctx context.Context) (bool, error) {
	now := e.cfg.Now()
	desired := &coordinationv1.LeaseSpec{
		HolderIdentity:       proto.String(e.cfg.Identity),
		LeaseDurationSeconds: proto.Int32(int32(e.cfg.LeaseDuration / time.Second)),
		AcquireTime:          microTime(now),
		RenewTime:            microTime(now),
		LeaseTransitions:     proto.Int32(0),
	}
	cur, err := e.leases.Get(ctx, e.cfg.Name)
	if apierrors.IsNotFound(err) {
		lease := &coordinationv1.Lease{Metadata: &metav1.ObjectMeta{Name: e.cfg.Name, Namespace: e.cfg.Namespace}, Spec: desired}
		created, err := e.leases.Create(ctx, lease)
		if err != nil {
			return false, err
		}
		e.observe(created, now)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if e.observed == nil || e.observed.GetMetadata().GetResourceVersion() != cur.GetMetadata().GetResourceVersion() {
		e.observe(cur, now)
	}
	spec := cur.GetSpec()
	holder := spec.GetHolderIdentity()
	expired := e.observedTime.Add(time.Duration(spec.GetLeaseDurationSeconds()) * time.Second).Before(now)
	if holder != "" && holder != e.cfg.Identity && !expired {
		return false, nil
	}
	if holder == e.cfg.Identity {
		desired.AcquireTime = spec.GetAcquireTime()
		desired.LeaseTransitions = proto.Int32(spec.GetLeaseTransitions())
	} else {
		desired.LeaseTransitions = proto.Int32(spec.GetLeaseTransitions() + 1)
	}
	next := proto.Clone(cur).(*coordinationv1.Lease)
	next.Spec = desired
	updated, err := e.leases.Update(ctx, next)
	if err != nil {
		return false, err
	}
	e.observe(updated, now)
	return true, nil
}

func (e *elector) observe(l *coordinationv1.Lease, now time.Time) {
	e.observed, e.observedTime = l, now
	if h := l.GetSpec().GetHolderIdentity(); h != e.leader {
		e.leader = h
		if e.cfg.OnNewLeader != nil && h != "" {
			e.cfg.OnNewLeader(h)
		}
	}
}

// release gives the lease up on shutdown so a standby takes over at once.
func (e *elector) release() {
	if e.observed == nil || e.observed.GetSpec().GetHolderIdentity() != e.cfg.Identity {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RenewDeadline)
	defer cancel()
	next := proto.Clone(e.observed).(*coordinationv1.Lease)
	next.Spec.HolderIdentity = nil
	next.Spec.LeaseDurationSeconds = proto.Int32(1)
	if _, err := e.leases.Update(ctx, next); err != nil {
		e.cfg.Logger.Warn("failed to release lease", "err", fmt.Errorf("%s/%s: %w", e.cfg.Namespace, e.cfg.Name, err))
	}
}

func microTime(t time.Time) *metav1.MicroTime {
	return &metav1.MicroTime{Seconds: t.Unix(), Nanos: int32(t.Nanosecond() / 1000 * 1000)}
}
