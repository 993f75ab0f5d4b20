// Package cronjob is the cronjob controller of skiff-controller-manager,
// upstream's cronjob_controllerv2: it creates a Job from a CronJob's
// jobTemplate at each of its schedule times. It only creates (and, for
// Replace and the history limits, deletes) Jobs; the job controller runs
// them.
//
// Each sync of a CronJob keeps upstream's semantics:
//   - Its Jobs are those it controls (owner reference, by UID). Finished
//     ones leave status.active (SawCompletedJob) and the newest completion
//     becomes status.lastSuccessfulTime; an unfinished one not in the list
//     is reported (UnexpectedJob); a listed Job that no longer exists is
//     dropped (MissingJob).
//   - The oldest finished Jobs beyond successfulJobsHistoryLimit and
//     failedJobsHistoryLimit are deleted (SuccessfulDelete).
//   - Nothing starts while the CronJob is suspended or being deleted, or
//     when its timeZone is not in the tz database (UnknownTimeZone) or its
//     schedule does not parse (UnparseableSchedule) or never fires
//     (InvalidSchedule).
//   - Only the most recent unmet schedule time since status.lastScheduleTime
//     (or creation) starts a Job; one older than startingDeadlineSeconds is
//     skipped (MissSchedule); more than 100 unmet within the deadline warn
//     (TooManyMissedTimes).
//   - concurrencyPolicy: Allow starts regardless, Forbid skips while a Job
//     is active (JobAlreadyActive), Replace deletes the active Jobs first.
//   - The Job is named "<cronjob>-<minutes since the epoch>", so a time is
//     started once however often it is synced: a Job of that name that
//     already exists is this time's, taken into status.active if it is
//     ours. SuccessfulCreate, FailedCreate.
//   - The CronJob is synced again just after its next schedule time (the
//     queue's AddAfter), not polled.
//
// Deviations from upstream: Jobs are ours by controller UID (upstream
// matches the controller's name); a missed time beyond the deadline is
// reported (upstream's check can never fire, as its search already starts
// at the deadline); the most recent unmet time is found exactly, by
// bisection, where upstream estimates it from the first interval and can
// miss one on irregular schedules; a sync that finds a Job of this time
// already existing, or a Job not of ours under its name, requeues for the
// next time rather than waiting for an event.
package cronjob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	// The tz database inside the binary: a node without
	// /usr/share/zoneinfo still knows every timeZone the apiserver accepts.
	_ "time/tzdata"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	batchv1 "skiff.dev/proto/api/batch/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

const (
	// workersName is the controller's name for --concurrent-cron-job-syncs
	// (Options.ConcurrentSyncs) and its queue.
	workersName    = "cronjob"
	component      = "cronjob-controller"
	defaultWorkers = 5
)

var (
	cronJobKind, _ = scheme.ForMessage(&batchv1.CronJob{})
	jobKind, _     = scheme.ForMessage(&batchv1.Job{})
)

// Controller creates the Jobs of CronJobs.
type Controller struct {
	client   *client.Client
	cronJobs informers.Lister[*batchv1.CronJob]
	jobs     informers.Lister[*batchv1.Job]
	recorder record.Recorder
	queue    workqueue.Queue
	workers  int
	now      func() time.Time
	// local is the zone of schedules without a timeZone: the process's,
	// as upstream.
	local *time.Location
	log   *slog.Logger
	regs  []informer.Registration

	creationSkew prometheus.Observer
}

// New is the "cronjob-controller".
func New(cc controllers.Context) (controllers.Controller, error) {
	return newController(cc)
}

func newController(cc controllers.Context) (*Controller, error) {
	c := &Controller{
		client: cc.Client,
		queue:  workqueue.NewWithMetrics(workersName, cc.Registerer),
		now:    cc.Clock(),
		local:  time.Local,
		log:    cc.Log(),
	}
	c.workers = cc.WorkersFor(workersName, defaultWorkers)
	c.recorder = cc.EventRecorder(component)
	skew, err := creationSkewMetric(cc.Registerer)
	if err != nil {
		return nil, err
	}
	c.creationSkew = skew

	cjs := informers.For[*batchv1.CronJob](cc.Informers)
	jobs := informers.For[*batchv1.Job](cc.Informers)
	c.cronJobs, c.jobs = cjs.Lister(), jobs.Lister()
	c.regs = append(c.regs,
		cjs.Informer().AddHandler(informer.Handler{OnAdd: c.enqueue, OnUpdate: c.updateCronJob, OnDelete: c.enqueue}),
		jobs.Informer().AddHandler(informer.Handler{OnAdd: c.addJob, OnUpdate: c.updateJob, OnDelete: c.onJobDelete}))
	return c, nil
}

// creationSkewMetric is upstream's
// cronjob_controller_cronjob_job_creation_skew_duration_seconds.
func creationSkewMetric(reg prometheus.Registerer) (prometheus.Observer, error) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Subsystem: "cronjob_controller",
		Name:      "cronjob_job_creation_skew_duration_seconds",
		Help:      "Time between when a cronjob is scheduled to be run, and when the corresponding job is created",
		Buckets:   prometheus.ExponentialBuckets(1, 2, 10),
	})
	if reg == nil {
		return h, nil
	}
	if err := reg.Register(h); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if o, ok := are.ExistingCollector.(prometheus.Histogram); ok {
				return o, nil
			}
		}
		return nil, err
	}
	return h, nil
}

// Name is upstream's controller name.
func (c *Controller) Name() string { return component }

// Run waits for the informers, then syncs until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return controllers.RunQueue(ctx, c.log, c.queue, c.workers, c.reconcile, c.regs...)
}

func (c *Controller) enqueue(obj scheme.Object) { c.queue.Add(controller.KeyFunc(obj)) }

// updateCronJob is upstream's: a new schedule or time zone is first synced
// at its next time (syncing now could start a time of the new schedule
// that passed before the change); any other change is synced now.
func (c *Controller) updateCronJob(oldObj, curObj scheme.Object) {
	old, cur := oldObj.(*batchv1.CronJob), curObj.(*batchv1.CronJob)
	if old.GetSpec().GetSchedule() == cur.GetSpec().GetSchedule() &&
		old.GetSpec().GetTimeZone() == cur.GetSpec().GetTimeZone() &&
		(old.GetSpec().TimeZone == nil) == (cur.GetSpec().TimeZone == nil) {
		c.enqueue(cur)
		return
	}
	spec, _ := scheduleSpec(cur)
	now := c.now()
	tl, err := newTimeline(spec, c.local, earliestTime(cur))
	if err != nil {
		c.log.Info("Unparseable schedule for cronjob", "cronjob", controller.KeyFunc(cur), "schedule", cur.GetSpec().GetSchedule(), "err", err)
		c.recorder.Eventf(cur, record.Warning, "UnParseableCronJobSchedule", "unparseable schedule for cronjob: %s", cur.GetSpec().GetSchedule())
		return
	}
	d, ok := requeueAfter(tl, earliestTime(cur), now)
	if !ok {
		c.enqueue(cur) // the sync reports the schedule
		return
	}
	c.queue.AddAfter(controller.KeyFunc(cur), d)
}

// resolveControllerRef is the CronJob ref names, if it is still the one of
// that UID.
func (c *Controller) resolveControllerRef(namespace string, ref *metav1.OwnerReference) (*batchv1.CronJob, bool) {
	if ref.GetKind() != cronJobKind.Kind {
		return nil, false
	}
	cj, err := c.cronJobs.Get(namespace, ref.GetName())
	if err != nil || cj.GetMetadata().GetUid() != ref.GetUid() {
		return nil, false
	}
	return cj, true
}

func (c *Controller) enqueueOwner(j scheme.Object) {
	ref := metav1.GetControllerOf(j.GetMetadata())
	if ref == nil {
		return
	}
	if cj, ok := c.resolveControllerRef(j.GetMetadata().GetNamespace(), ref); ok {
		c.enqueue(cj)
	}
}

func (c *Controller) addJob(obj scheme.Object) { c.enqueueOwner(obj) }

func (c *Controller) updateJob(oldObj, curObj scheme.Object) {
	if oldObj.GetMetadata().GetResourceVersion() == curObj.GetMetadata().GetResourceVersion() {
		return // a resync
	}
	oldRef := metav1.GetControllerOf(oldObj.GetMetadata())
	curRef := metav1.GetControllerOf(curObj.GetMetadata())
	if oldRef != nil && !proto.Equal(oldRef, curRef) {
		c.enqueueOwner(oldObj)
	}
	c.enqueueOwner(curObj)
}

func (c *Controller) onJobDelete(obj scheme.Object) { c.enqueueOwner(obj) }

// reconcile syncs key and queues it again for its next schedule time.
func (c *Controller) reconcile(ctx context.Context, key string) error {
	d, err := c.sync(ctx, key)
	if err != nil {
		return err
	}
	if d != nil {
		c.log.Debug("Re-queuing cronjob", "cronjob", key, "requeueAfter", *d)
		c.queue.AddAfter(key, *d)
	}
	return nil
}

// earliestTime is the time after which schedule times are unmet: the last
// one a Job was made for, else the CronJob's creation.
func earliestTime(cj *batchv1.CronJob) time.Time {
	if t := cj.GetStatus().GetLastScheduleTime(); t != nil {
		return t.AsTime()
	}
	return cj.GetMetadata().GetCreationTimestamp().AsTime()
}

// sync is upstream's sync and syncCronJob: it returns when the CronJob is
// next due (nil: only an event will make it due), having written status
// if it changed.
func (c *Controller) sync(ctx context.Context, key string) (*time.Duration, error) {
	namespace, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil, err
	}
	cached, err := c.cronJobs.Get(namespace, name)
	if apierrors.IsNotFound(err) {
		c.log.Debug("CronJob not found, may be it is deleted", "cronjob", key)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	jobs := c.jobsOf(cached)
	// An unfinished Job of ours missing from status.active is most often
	// our own status write not yet in the cache: read the CronJob afresh
	// before calling it unexpected.
	for _, j := range jobs {
		if done, _ := finished(j); !done && !inActive(cached, j.GetMetadata().GetUid()) {
			fresh, err := client.For[*batchv1.CronJob](c.client, namespace).Get(ctx, name)
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			if err != nil {
				return nil, err
			}
			if fresh.GetMetadata().GetUid() != cached.GetMetadata().GetUid() {
				return nil, nil // recreated; its own events follow
			}
			cached = fresh
			break
		}
	}

	cj := proto.Clone(cached).(*batchv1.CronJob)
	if cj.Status == nil {
		cj.Status = &batchv1.CronJobStatus{}
	}
	c.cleanupFinishedJobs(ctx, cj, jobs)
	requeue, syncErr := c.syncCronJob(ctx, cj, jobs)

	if !proto.Equal(statusOf(cached), statusOf(cj)) {
		if _, err := client.For[*batchv1.CronJob](c.client, namespace).UpdateStatus(ctx, cj); err != nil {
			c.log.Info("Unable to update status for cronjob", "cronjob", key,
				"resourceVersion", cached.GetMetadata().GetResourceVersion(), "err", err)
			return nil, errors.Join(syncErr, err)
		}
	}
	if syncErr != nil {
		return nil, syncErr
	}
	return requeue, nil
}

func statusOf(cj *batchv1.CronJob) *batchv1.CronJobStatus {
	if st := cj.GetStatus(); st != nil {
		return st
	}
	return &batchv1.CronJobStatus{}
}

// jobsOf are the Jobs cj controls, by UID. Every Job of the namespace is
// looked at, as upstream: a Job's labels need not match the template any
// more.
func (c *Controller) jobsOf(cj *batchv1.CronJob) []*batchv1.Job {
	var out []*batchv1.Job
	for _, j := range c.jobs.Namespace(cj.GetMetadata().GetNamespace()).List(labels.Everything()) {
		if controller.IsControlledBy(j, cj) {
			out = append(out, j)
		}
	}
	return out
}

// syncCronJob brings cj's status up to date with its jobs and starts the
// Job of the most recent unmet schedule time. It changes cj's status only.
func (c *Controller) syncCronJob(ctx context.Context, cj *batchv1.CronJob, jobs []*batchv1.Job) (*time.Duration, error) {
	key := controller.KeyFunc(cj)
	now := c.now()
	st := cj.Status

	children := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		uid := j.GetMetadata().GetUid()
		children[uid] = true
		listed := inActive(cj, uid)
		done, cond := finished(j)
		switch {
		case !done && !listed:
			// Created by us and not yet recorded (a crash between the
			// create and the status write), or made by hand with us as
			// controller: upstream reports it and leaves it be.
			c.recorder.Eventf(cj, record.Warning, "UnexpectedJob", "Saw a job that the controller did not create or forgot: %s", j.GetMetadata().GetName())
		case done:
			if listed {
				removeActive(cj, uid)
				c.recorder.Eventf(cj, record.Normal, "SawCompletedJob", "Saw completed job: %s, condition: %v", j.GetMetadata().GetName(), cond)
			}
			if cond == "Complete" {
				if ct := j.GetStatus().GetCompletionTime(); ct != nil &&
					(st.LastSuccessfulTime == nil || ct.AsTime().After(st.LastSuccessfulTime.AsTime())) {
					st.LastSuccessfulTime = proto.Clone(ct).(*metav1.Time)
				}
			}
		}
	}

	// A listed Job the cache does not hold may only be late: ask the
	// apiserver before dropping it, or the CronJob would stay active for
	// ever after a Job was deleted behind our back.
	for _, ref := range append(st.Active[:0:0], st.Active...) {
		if children[ref.GetUid()] {
			continue
		}
		j, err := client.For[*batchv1.Job](c.client, ref.GetNamespace()).Get(ctx, ref.GetName())
		switch {
		case apierrors.IsNotFound(err) || (err == nil && j.GetMetadata().GetUid() != ref.GetUid()):
			c.recorder.Eventf(cj, record.Normal, "MissingJob", "Active job went missing: %v", ref.GetName())
			removeActive(cj, ref.GetUid())
		case err != nil:
			return nil, err
		}
	}

	if cj.GetMetadata().GetDeletionTimestamp() != nil {
		return nil, nil // being deleted: status only
	}
	var loc *time.Location
	if tz := cj.GetSpec().TimeZone; tz != nil {
		l, err := time.LoadLocation(*tz)
		if err != nil {
			c.log.Debug("Not starting job because timeZone is invalid", "cronjob", key, "timeZone", *tz, "err", err)
			c.recorder.Eventf(cj, record.Warning, "UnknownTimeZone", "invalid timeZone: %q: %s", *tz, err)
			return nil, nil
		}
		loc = l
	}
	if cj.GetSpec().GetSuspend() {
		c.log.Debug("Not starting job because the cron is suspended", "cronjob", key)
		return nil, nil
	}
	spec, unsupported := scheduleSpec(cj)
	if unsupported {
		c.recorder.Eventf(cj, record.Warning, "UnsupportedSchedule",
			"CRON_TZ or TZ used in schedule %q is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
			cj.GetSpec().GetSchedule())
	}
	earliest := earliestTime(cj)
	tl, err := newTimeline(spec, c.local, earliest)
	if err != nil {
		c.log.Info("Unparseable schedule", "cronjob", key, "schedule", cj.GetSpec().GetSchedule(), "err", err)
		c.recorder.Eventf(cj, record.Warning, "UnparseableSchedule", "unparseable schedule: %q : %s", cj.GetSpec().GetSchedule(), err)
		return nil, nil
	}
	next, ok := requeueAfter(tl, earliest, now)
	if !ok {
		c.log.Info("Invalid schedule", "cronjob", key, "schedule", cj.GetSpec().GetSchedule(), "err", errNeverFires)
		c.recorder.Eventf(cj, record.Warning, "InvalidSchedule", "invalid schedule: %s : %s", cj.GetSpec().GetSchedule(), errNeverFires)
		return nil, nil
	}

	u := findUnmet(tl, earliest, now, cj.GetSpec().StartingDeadlineSeconds)
	switch {
	case u.start.IsZero():
		c.log.Debug("No unmet start times", "cronjob", key)
		return &next, nil
	case u.tooLate:
		c.log.Debug("Missed starting window", "cronjob", key, "scheduled", u.start)
		c.recorder.Eventf(cj, record.Warning, "MissSchedule", "Missed scheduled time to start a job: %s", u.start.UTC().Format(time.RFC1123Z))
		return &next, nil
	}
	if u.missed > tooManyMissed {
		c.log.Info("too many missed times", "cronjob", key)
		c.recorder.Eventf(cj, record.Warning, "TooManyMissedTimes",
			"too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew")
	}
	scheduled := u.start
	if inActiveByName(cj, jobName(cj, scheduled)) ||
		(st.LastScheduleTime != nil && st.LastScheduleTime.AsTime().Equal(scheduled)) {
		c.log.Debug("Not starting job because the scheduled time is already processed", "cronjob", key, "schedule", scheduled)
		return &next, nil
	}
	switch cj.GetSpec().GetConcurrencyPolicy() {
	case "Forbid":
		if len(st.Active) > 0 {
			// The active list may lag (a Job we have not seen yet), so
			// Forbid can still overlap when runs are close together, as
			// upstream's.
			c.log.Debug("Not starting job because prior execution is still running and concurrency policy is Forbid", "cronjob", key)
			c.recorder.Eventf(cj, record.Normal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid")
			return &next, nil
		}
	case "Replace":
		for _, ref := range append(st.Active[:0:0], st.Active...) {
			c.log.Debug("Deleting job that was still running at next scheduled start time", "job", ref.GetNamespace()+"/"+ref.GetName())
			j, err := client.For[*batchv1.Job](c.client, ref.GetNamespace()).Get(ctx, ref.GetName())
			if apierrors.IsNotFound(err) {
				removeActive(cj, ref.GetUid())
				continue
			}
			if err != nil {
				c.recorder.Eventf(cj, record.Warning, "FailedGet", "Get job: %v", apierrors.Message(err))
				return nil, err
			}
			if err := c.deleteJob(ctx, cj, j); err != nil {
				return nil, fmt.Errorf("could not replace job %s/%s: %w", ref.GetNamespace(), ref.GetName(), err)
			}
		}
	}

	jobLoc := loc
	if jobLoc == nil {
		jobLoc = time.UTC // upstream: LoadLocation("") for a CronJob without a timeZone
	}
	req := jobFromTemplate(cj, scheduled, jobLoc)
	jobClient := client.For[*batchv1.Job](c.client, cj.GetMetadata().GetNamespace())
	created, err := jobClient.Create(ctx, req)
	switch {
	case isNamespaceTerminating(err):
		// Every create would fail; the namespace takes the CronJob with it.
		return nil, err
	case apierrors.IsAlreadyExists(err):
		// This time was started before (our status write was lost, or
		// the cache is behind): adopt the record if the Job is ours.
		existing, err := jobClient.Get(ctx, req.GetMetadata().GetName())
		if err != nil {
			return nil, err
		}
		if !controller.IsControlledBy(existing, cj) || inActive(cj, existing.GetMetadata().GetUid()) {
			c.log.Debug("Job already exists", "cronjob", key, "job", controller.KeyFunc(existing))
			return &next, nil
		}
		c.log.Info("Job already exists", "cronjob", key, "job", controller.KeyFunc(existing))
		created = existing
	case err != nil:
		c.recorder.Eventf(cj, record.Warning, "FailedCreate", "Error creating job: %v", apierrors.Message(err))
		return nil, err
	default:
		c.creationSkew.Observe(created.GetMetadata().GetCreationTimestamp().AsTime().Sub(scheduled).Seconds())
		c.log.Debug("Created Job", "job", controller.KeyFunc(created), "cronjob", key)
		c.recorder.Eventf(cj, record.Normal, "SuccessfulCreate", "Created job %v", created.GetMetadata().GetName())
	}
	// Should the process stop here, before the status write, the Job's
	// name keeps the next sync from starting this time twice.
	st.Active = append(st.Active, jobRef(created))
	st.LastScheduleTime = metav1.NewTime(scheduled)
	return &next, nil
}

// isNamespaceTerminating reports the apiserver refusing a create in a
// namespace being deleted; upstream stays quiet about those.
func isNamespaceTerminating(err error) bool {
	return err != nil && apierrors.IsForbidden(err) && strings.Contains(apierrors.Message(err), "because it is being terminated")
}
