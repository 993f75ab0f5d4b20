package integration

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/controller-manager/app"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// A CronJob that last ran three minutes ago has missed its every-minute
// schedule: once resumed it starts the most recent missed time at once,
// as one Job named for that minute, owned by it and listed as active.
func TestCronJobStartsTheMostRecentMissedTime(t *testing.T) {
	e := setup(t, []string{"cronjob"}, app.ControllerOptions{})
	cronjobs := client.For[*batchv1.CronJob](e.c, "default")
	cj, err := cronjobs.Create(e.ctx(), &batchv1.CronJob{Metadata: &metav1.ObjectMeta{Name: "tick"}, Spec: &batchv1.CronJobSpec{
		Schedule: "* * * * *", Suspend: new(true),
		JobTemplate: &batchv1.JobTemplateSpec{Spec: &batchv1.JobSpec{Template: &corev1.PodTemplateSpec{Spec: &corev1.PodSpec{
			RestartPolicy: "Never", Containers: []*corev1.Container{{Name: "c", Image: "skiff.local/busybox:1.35", Command: []string{"true"}}}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	cj.Status = &batchv1.CronJobStatus{LastScheduleTime: metav1.NewTime(time.Now().Add(-3 * time.Minute).Truncate(time.Minute))}
	if cj, err = cronjobs.UpdateStatus(e.ctx(), cj); err != nil {
		t.Fatal(err)
	}
	cj.Spec.Suspend = new(false)
	if _, err := cronjobs.Update(e.ctx(), cj); err != nil {
		t.Fatal(err)
	}
	var job *batchv1.Job
	e.eventually("one Job for the most recent missed minute", func() (bool, error) {
		l, err := client.For[*batchv1.Job](e.c, "default").List(e.ctx(), client.ListOptions{})
		if err != nil || len(l.Items) == 0 {
			return false, err
		}
		if len(l.Items) > 1 {
			return false, fmt.Errorf("%d Jobs, want one for the latest missed time only", len(l.Items))
		}
		job = l.Items[0]
		return true, nil
	})
	// The minute may have turned while the test looked.
	now := time.Now().Truncate(time.Minute)
	var want []string
	for _, m := range []time.Time{now, now.Add(-time.Minute)} {
		want = append(want, "tick-"+strconv.FormatInt(m.Unix()/60, 10))
	}
	if n := job.Metadata.Name; n != want[0] && n != want[1] {
		t.Errorf("Job %s, want %s or %s", n, want[0], want[1])
	}
	if r := metav1.GetControllerOf(job.Metadata); r == nil || r.Kind != "CronJob" || r.Name != "tick" {
		t.Errorf("Job's controller %v, want CronJob tick", r)
	}
	if ts := job.Metadata.Annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"]; ts == "" {
		t.Error("no cronjob-scheduled-timestamp annotation")
	}
	e.eventually("the Job in the CronJob's status.active", func() (bool, error) {
		cj, err := cronjobs.Get(e.ctx(), "tick")
		if err != nil {
			return false, err
		}
		act := cj.GetStatus().GetActive()
		return len(act) == 1 && act[0].Name == job.Metadata.Name, fmt.Errorf("active %v", act)
	})
}
