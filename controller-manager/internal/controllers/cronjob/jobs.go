package cronjob

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/record"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// ScheduledTimestampAnnotation is upstream's
// batch.kubernetes.io/cronjob-scheduled-timestamp: the schedule time a Job
// was made for, RFC 3339 in the CronJob's time zone (UTC without one).
const ScheduledTimestampAnnotation = "batch.kubernetes.io/cronjob-scheduled-timestamp"

// finished is upstream's IsJobFinished: a Complete or Failed condition that
// is True, and which of the two.
func finished(j *batchv1.Job) (bool, string) {
	for _, c := range j.GetStatus().GetConditions() {
		if (c.GetType() == "Complete" || c.GetType() == "Failed") && c.GetStatus() == "True" {
			return true, c.GetType()
		}
	}
	return false, ""
}

// jobFromTemplate is upstream's getJobFromTemplate2: the template's labels,
// annotations and spec, the deterministic name, the scheduled-timestamp
// annotation, and cj as controller.
func jobFromTemplate(cj *batchv1.CronJob, scheduled time.Time, loc *time.Location) *batchv1.Job {
	jt := cj.GetSpec().GetJobTemplate()
	annotations := maps.Clone(jt.GetMetadata().GetAnnotations())
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[ScheduledTimestampAnnotation] = scheduled.In(loc).Format(time.RFC3339)
	job := &batchv1.Job{
		Metadata: &metav1.ObjectMeta{
			Name:            jobName(cj, scheduled),
			Namespace:       cj.GetMetadata().GetNamespace(),
			Labels:          maps.Clone(jt.GetMetadata().GetLabels()),
			Annotations:     annotations,
			OwnerReferences: []*metav1.OwnerReference{controller.NewControllerRef(cj, cronJobKind)},
		},
		Spec: &batchv1.JobSpec{},
	}
	if s := jt.GetSpec(); s != nil {
		job.Spec = proto.Clone(s).(*batchv1.JobSpec)
	}
	return job
}

// jobRef is the reference status.active keeps, as client-go's
// reference.GetReference makes it.
func jobRef(j *batchv1.Job) *corev1.ObjectReference {
	m := j.GetMetadata()
	return &corev1.ObjectReference{
		Kind: jobKind.Kind, ApiVersion: jobKind.APIVersion(),
		Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(), ResourceVersion: m.GetResourceVersion(),
	}
}

func inActive(cj *batchv1.CronJob, uid string) bool {
	return slices.ContainsFunc(cj.GetStatus().GetActive(), func(r *corev1.ObjectReference) bool { return r.GetUid() == uid })
}

func inActiveByName(cj *batchv1.CronJob, name string) bool {
	return slices.ContainsFunc(cj.GetStatus().GetActive(), func(r *corev1.ObjectReference) bool { return r.GetName() == name })
}

func removeActive(cj *batchv1.CronJob, uid string) {
	cj.Status.Active = slices.DeleteFunc(cj.Status.Active, func(r *corev1.ObjectReference) bool { return r.GetUid() == uid })
}

// cleanupFinishedJobs is upstream's: the oldest finished Jobs beyond
// successfulJobsHistoryLimit (Complete) and failedJobsHistoryLimit (Failed)
// are deleted. A limit left unset keeps every Job (the apiserver defaults
// them to 3 and 1). Jobs already being deleted no longer count.
func (c *Controller) cleanupFinishedJobs(ctx context.Context, cj *batchv1.CronJob, jobs []*batchv1.Job) {
	spec := cj.GetSpec()
	if spec.SuccessfulJobsHistoryLimit == nil && spec.FailedJobsHistoryLimit == nil {
		return
	}
	var succeeded, failed []*batchv1.Job
	for _, j := range jobs {
		if j.GetMetadata().GetDeletionTimestamp() != nil {
			continue
		}
		switch _, cond := finished(j); cond {
		case "Complete":
			succeeded = append(succeeded, j)
		case "Failed":
			failed = append(failed, j)
		}
	}
	if spec.SuccessfulJobsHistoryLimit != nil {
		c.removeOldestJobs(ctx, cj, succeeded, int(spec.GetSuccessfulJobsHistoryLimit()))
	}
	if spec.FailedJobsHistoryLimit != nil {
		c.removeOldestJobs(ctx, cj, failed, int(spec.GetFailedJobsHistoryLimit()))
	}
}

// removeOldestJobs deletes all but the newest keep of jobs, oldest first by
// start time (Jobs that never started count as newest), then by name, as
// upstream's byJobStartTime sorts.
func (c *Controller) removeOldestJobs(ctx context.Context, cj *batchv1.CronJob, jobs []*batchv1.Job, keep int) {
	n := len(jobs) - keep
	if n <= 0 {
		return
	}
	slices.SortFunc(jobs, func(a, b *batchv1.Job) int {
		as, bs := a.GetStatus().GetStartTime(), b.GetStatus().GetStartTime()
		switch {
		case as == nil && bs == nil:
		case as == nil:
			return 1
		case bs == nil:
			return -1
		default:
			if d := as.AsTime().Compare(bs.AsTime()); d != 0 {
				return d
			}
		}
		return cmp.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
	})
	c.log.Debug("Cleaning up jobs from CronJob list", "cronjob", controller.KeyFunc(cj), "deletejobnum", n, "jobnum", len(jobs))
	for _, j := range jobs[:n] {
		_ = c.deleteJob(ctx, cj, j)
	}
}

// deleteJob is upstream's: delete the Job (its pods in the background,
// guarded by its UID) and drop it from status.active, with the event.
func (c *Controller) deleteJob(ctx context.Context, cj *batchv1.CronJob, j *batchv1.Job) error {
	m := j.GetMetadata()
	uid := m.GetUid()
	_, err := client.For[*batchv1.Job](c.client, m.GetNamespace()).Delete(ctx, m.GetName(),
		client.DeleteOptions{PropagationPolicy: "Background", Preconditions: &apipb.Preconditions{Uid: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		c.recorder.Eventf(cj, record.Warning, "FailedDelete", "Deleted job: %v", apierrors.Message(err))
		c.log.Error("Error deleting job from cronjob", "job", controller.KeyFunc(j), "cronjob", controller.KeyFunc(cj), "err", err)
		return err
	}
	removeActive(cj, uid)
	if err == nil {
		c.recorder.Eventf(cj, record.Normal, "SuccessfulDelete", "Deleted job %v", m.GetName())
	}
	return nil
}
