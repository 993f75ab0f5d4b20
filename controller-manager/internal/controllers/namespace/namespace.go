// Package namespace is upstream's namespace controller. Deleting a
// namespace only marks it: the apiserver sets its deletionTimestamp and
// phase Terminating, and keeps it while spec.finalizers holds
// "kubernetes". This controller then deletes every namespaced object in it
// (every kind the server's discovery lists as namespaced and deletable,
// events last, each object with propagationPolicy Background), waits while
// content remains, and removes "kubernetes" from spec.finalizers, after
// which the apiserver removes the namespace once no other finalizer holds it.
//
// Kept from upstream: the five status conditions with upstream's reasons
// and messages, written when they change; the wait on pods' grace periods
// (the longest grace of the namespace's unfinished pods, counted from the
// namespace's deletion, requeued after half of it plus a second) and on
// other controllers' finalizers (15 s); live Lists rather than caches for
// the content, so that a lagging cache cannot let a namespace be finalized
// over objects it did not see; the 5 s wait before the first pass, for
// apiservers and etcd members to agree the namespace is terminating; and a
// retry backoff capped at a minute.
//
// Different: there is no deletecollection in Skiff's API, so each kind is
// listed (a page of 500 at a time) and its objects deleted one by one, as
// upstream does where deletecollection is not served; objects already
// carrying a deletionTimestamp are not deleted again. There is no finalize
// subresource either: the finalizer is removed with an Update, which the
// apiserver allows to change spec.finalizers. A discovered resource this
// binary has no type for fails the pass (NamespaceDeletionGroupVersionParsingFailure)
// rather than being skipped, for the same reason as the live Lists.
package namespace

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// Name is upstream's --controllers alias, also the --concurrent-namespace-syncs key.
const Name = "namespace"

const (
	// namespaceDeletionGracePeriod delays the first pass over a deleted
	// namespace, so every apiserver's lifecycle admission refuses new
	// content in it, and creations that just made it are visible to the
	// Lists that follow.
	namespaceDeletionGracePeriod = 5 * time.Second

	// maxRetryDelay caps the backoff of a namespace whose deletion fails,
	// as upstream's nsControllerRateLimiter: namespace cleanup is retried at
	// least once a minute.
	maxRetryDelay = 60 * time.Second
	// baseRetryDelay is the workqueue's per-item backoff start, doubled per
	// failure.
	baseRetryDelay = 5 * time.Millisecond
)

// Controller deletes the content of terminating namespaces.
type Controller struct {
	namespaces informers.Lister[*corev1.Namespace]
	queue      workqueue.Queue
	synced     informer.Registration
	deleter    *deleter
	workers    int
	log        *slog.Logger

	// deletionGracePeriod and remainingDelay are upstream's waits (tests
	// shorten them).
	deletionGracePeriod time.Duration
	remainingDelay      func(estimateSeconds int64) time.Duration
}

// New builds the controller; its queue holds namespace names, and only the
// namespace informer feeds it.
func New(cc controllers.Context) (controllers.Controller, error) {
	log := cc.Log()
	now := cc.Clock()
	ns := informers.For[*corev1.Namespace](cc.Informers)
	c := &Controller{
		namespaces: ns.Lister(),
		queue:      retryCapped{workqueue.NewWithMetrics(Name, cc.Registerer)},
		deleter: &deleter{
			client: cc.Client,
			discover: func(ctx context.Context) ([]*apipb.APIResource, error) {
				d, err := cc.Client.Discovery(ctx)
				return d.GetResources(), err
			},
			now: now,
			log: log,
		},
		workers:             cc.WorkersFor(Name, 10),
		log:                 log,
		deletionGracePeriod: namespaceDeletionGracePeriod,
		remainingDelay: func(estimate int64) time.Duration {
			return time.Duration(estimate/2+1) * time.Second
		},
	}
	c.synced = ns.Informer().AddHandler(informer.Handler{
		OnAdd:    c.enqueue,
		OnUpdate: func(_, o scheme.Object) { c.enqueue(o) },
	})
	return c, nil
}

func (c *Controller) Name() string { return Name }

// enqueue queues a namespace that is being deleted; nothing else concerns
// this controller.
func (c *Controller) enqueue(o scheme.Object) {
	m := o.GetMetadata()
	if m.GetDeletionTimestamp() == nil {
		return
	}
	c.queue.AddAfter(m.GetName(), c.deletionGracePeriod)
}

// Run works until ctx ends, once the namespace cache has synced.
func (c *Controller) Run(ctx context.Context) error {
	c.log.Info("Starting namespace controller")
	defer c.log.Info("Shutting down namespace controller")
	if !informers.WaitForCacheSync(ctx, c.synced) {
		return nil
	}
	controller.Run(ctx, c.queue, c.workers, c.reconcile, c.log)
	return nil
}

// reconcile deletes the namespace's content. Content that is going away
// but not gone is not a failure: the namespace comes back when it is
// likely gone rather than with the error backoff.
func (c *Controller) reconcile(ctx context.Context, name string) error {
	if _, err := c.namespaces.Get("", name); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	err := c.deleter.Delete(ctx, name)
	if rr := (*ResourcesRemainingError)(nil); errors.As(err, &rr) {
		c.log.Debug("Content remaining in namespace", "namespace", name, "estimateSeconds", rr.Estimate)
		c.queue.AddAfter(name, c.remainingDelay(rr.Estimate))
		return nil
	}
	return err
}

// retryCapped is the shared workqueue with upstream's namespace rate
// limit: the per-item backoff doubles from baseRetryDelay as in every
// controller, but stops at maxRetryDelay rather than the default 1000 s.
type retryCapped struct{ workqueue.Queue }

func (q retryCapped) AddRateLimited(key string) {
	if n := q.NumRequeues(key); n >= 30 || baseRetryDelay<<n >= maxRetryDelay {
		q.AddAfter(key, maxRetryDelay)
		return
	}
	q.Queue.AddRateLimited(key)
}
