// Package ttlafterfinished is upstream's ttl-after-finished controller:
// it deletes a finished Job (Complete or Failed) ttlSecondsAfterFinished
// after it finished, with background propagation so that the garbage
// collector takes its pods. Before deleting it reads the Job afresh and
// deletes only that version (resourceVersion precondition), so a Job whose
// TTL was raised or that was recreated meanwhile is left alone.
package ttlafterfinished

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	batchv1 "skiff.dev/proto/api/batch/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// Name is the controller's canonical name.
const Name = "ttl-after-finished-controller"

const defaultWorkers = 5 // upstream's --concurrent-ttl-after-finished-syncs

// Controller deletes finished Jobs after their TTL.
type Controller struct {
	client  *client.Client
	jobs    informers.Lister[*batchv1.Job]
	regs    []informer.Registration
	queue   workqueue.Queue
	workers int
	now     func() time.Time
	log     *slog.Logger
}

// New is the "ttl-after-finished" controller.
func New(cc controllers.Context) (controllers.Controller, error) {
	c := &Controller{
		client:  cc.Client,
		queue:   workqueue.NewWithMetrics("ttl_jobs_to_delete", cc.Registerer),
		workers: defaultWorkers,
		now:     cc.Clock(),
		log:     cc.Log(),
	}
	c.workers = cc.WorkersFor("ttl-after-finished", defaultWorkers)
	jobs := informers.For[*batchv1.Job](cc.Informers)
	c.jobs = jobs.Lister()
	c.regs = append(c.regs, jobs.Informer().AddHandler(informer.Handler{
		OnAdd:    c.enqueueIfNeeded,
		OnUpdate: func(_, cur scheme.Object) { c.enqueueIfNeeded(cur) },
	}))
	return c, nil
}

// Name is the canonical name.
func (c *Controller) Name() string { return Name }

// Run waits for the cache and works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return controllers.RunQueue(ctx, c.log, c.queue, c.workers, c.sync, c.regs...)
}

func (c *Controller) enqueueIfNeeded(obj scheme.Object) {
	j := obj.(*batchv1.Job)
	if needsCleanup(j) {
		c.queue.Add(controller.KeyFunc(j))
	}
}

// needsCleanup: a TTL, finished, not already being deleted.
func needsCleanup(j *batchv1.Job) bool {
	return j.GetSpec() != nil && j.GetSpec().TtlSecondsAfterFinished != nil && j.GetMetadata().GetDeletionTimestamp() == nil && finished(j)
}

// finishTime is the transition time of the Job's Complete or Failed
// condition.
func finishTime(j *batchv1.Job) (time.Time, bool) {
	for _, cond := range j.GetStatus().GetConditions() {
		if (cond.GetType() == "Complete" || cond.GetType() == "Failed") && cond.GetStatus() == "True" {
			if cond.GetLastTransitionTime().IsZero() {
				return time.Time{}, false
			}
			return cond.GetLastTransitionTime().AsTime(), true
		}
	}
	return time.Time{}, false
}

func finished(j *batchv1.Job) bool {
	for _, cond := range j.GetStatus().GetConditions() {
		if (cond.GetType() == "Complete" || cond.GetType() == "Failed") && cond.GetStatus() == "True" {
			return true
		}
	}
	return false
}

// timeLeft is how long until j expires; ok false when it has no TTL or
// finish time.
func (c *Controller) timeLeft(j *batchv1.Job) (time.Duration, bool) {
	if !needsCleanup(j) {
		return 0, false
	}
	ft, ok := finishTime(j)
	if !ok {
		return 0, false
	}
	expire := ft.Add(time.Duration(*j.Spec.TtlSecondsAfterFinished) * time.Second)
	return expire.Sub(c.now()), true
}

// sync is upstream's processJob: check the cached Job, then a fresh read,
// then delete the version read.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	j, err := c.jobs.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if expired, err := c.processTTL(key, j); err != nil || !expired {
		return err
	}
	// The cache may be stale: the TTL may have been changed since.
	fresh, err := client.For[*batchv1.Job](c.client, ns).Get(ctx, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if expired, err := c.processTTL(key, fresh); err != nil || !expired {
		return err
	}
	c.log.Info("Cleaning up Job", "job", key)
	rv := fresh.GetMetadata().GetResourceVersion()
	_, err = client.For[*batchv1.Job](c.client, ns).Delete(ctx, name, client.DeleteOptions{
		PropagationPolicy: "Background",
		Preconditions:     &apipb.Preconditions{ResourceVersion: &rv},
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting job %s: %w", key, err)
	}
	return nil
}

// processTTL reports whether j has expired, and otherwise requeues it for
// when it will.
func (c *Controller) processTTL(key string, j *batchv1.Job) (bool, error) {
	left, ok := c.timeLeft(j)
	if !ok {
		return false, nil
	}
	if left <= 0 {
		return true, nil
	}
	c.queue.AddAfter(key, left)
	return false, nil
}
