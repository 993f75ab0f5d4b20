package cronjob

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func newCronJob(name, schedule string) *batchv1.CronJob {
	return &batchv1.CronJob{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, ResourceVersion: "1",
			CreationTimestamp: metav1.NewTime(at("2025-01-06T09:30:00Z"))},
		Spec: &batchv1.CronJobSpec{
			Schedule:          schedule,
			ConcurrencyPolicy: "Allow",
			JobTemplate: &batchv1.JobTemplateSpec{
				Metadata: &metav1.ObjectMeta{Labels: map[string]string{"app": "report"}, Annotations: map[string]string{"team": "billing"}},
				Spec: &batchv1.JobSpec{
					BackoffLimit: proto.Int32(2),
					Template: &corev1.PodTemplateSpec{Spec: &corev1.PodSpec{RestartPolicy: "Never",
						Containers: []*corev1.Container{{Name: "report", Image: "skiff.local/busybox:1"}}}},
				},
			},
		},
		Status: &batchv1.CronJobStatus{},
	}
}

// ownedJob is a Job of cj made for scheduled, as the controller makes it.
func ownedJob(cj *batchv1.CronJob, scheduled string) *batchv1.Job {
	j := jobFromTemplate(cj, at(scheduled), time.UTC)
	j.Metadata.Uid = "uid-" + j.Metadata.Name
	j.Metadata.ResourceVersion = "1"
	j.Status = &batchv1.JobStatus{StartTime: metav1.NewTime(at(scheduled))}
	return j
}

func withCondition(j *batchv1.Job, cond, completed string) *batchv1.Job {
	j.Status.Conditions = append(j.Status.Conditions, &batchv1.JobCondition{Type: cond, Status: "True"})
	if cond == "Complete" {
		j.Status.CompletionTime = metav1.NewTime(at(completed))
	}
	return j
}

func activeWith(cj *batchv1.CronJob, last string, jobs ...*batchv1.Job) *batchv1.CronJob {
	cj.Status.LastScheduleTime = metav1.NewTime(at(last))
	for _, j := range jobs {
		cj.Status.Active = append(cj.Status.Active, jobRef(j))
	}
	return cj
}

type fixture struct {
	t   *testing.T
	ctx context.Context
	cs  *fake.Clientset
	c   *Controller
	rec *record.FakeRecorder
	reg *prometheus.Registry

	mu  sync.Mutex
	now time.Time
}

func newFixture(t *testing.T, objs ...scheme.Object) *fixture {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	cc, rec := controllertest.Context(cs, controllers.Options{})
	f := &fixture{t: t, cs: cs, rec: rec, reg: cc.Registerer.(*prometheus.Registry)}
	cc.Now = func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
	c, err := newController(cc)
	if err != nil {
		t.Fatal(err)
	}
	c.local = time.UTC
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Informers.Shutdown(); c.queue.ShutDown() })
	cc.Informers.Start(ctx)
	if !cc.Informers.WaitForCacheSync(ctx) {
		t.Fatal("caches did not sync")
	}
	f.ctx, f.c = ctx, c
	return f
}

func (f *fixture) setNow(s string) { f.mu.Lock(); f.now = at(s); f.mu.Unlock() }

// sync runs one sync of cj at now, after the caches caught up with the
// fake apiserver, and returns the requeue delay.
func (f *fixture) sync(name, now string) *time.Duration {
	f.t.Helper()
	f.settle()
	f.setNow(now)
	d, err := f.c.sync(f.ctx, "default/"+name)
	if err != nil {
		f.t.Fatalf("sync at %s: %v", now, err)
	}
	return d
}

// settle waits until the caches hold what the fake apiserver holds.
func (f *fixture) settle() {
	f.t.Helper()
	controllertest.Eventually(f.t, func() (bool, string) {
		cjs, err := client.For[*batchv1.CronJob](f.cs.Client, "default").List(f.ctx, client.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, cj := range cjs.Items {
			cached, err := f.c.cronJobs.Get("default", cj.Metadata.Name)
			if err != nil || cached.Metadata.ResourceVersion != cj.Metadata.ResourceVersion {
				return false, "cronjob cache behind"
			}
		}
		jobs := f.jobs()
		if len(f.c.jobs.List(nil)) != len(jobs) {
			return false, "job cache behind"
		}
		for _, j := range jobs {
			cached, err := f.c.jobs.Get("default", j.Metadata.Name)
			if err != nil || cached.Metadata.ResourceVersion != j.Metadata.ResourceVersion {
				return false, "job cache behind"
			}
		}
		return true, ""
	})
}

func (f *fixture) jobs() []*batchv1.Job {
	f.t.Helper()
	l, err := client.For[*batchv1.Job](f.cs.Client, "default").List(f.ctx, client.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return l.Items
}

func (f *fixture) jobNames() []string {
	var out []string
	for _, j := range f.jobs() {
		out = append(out, j.Metadata.Name)
	}
	slices.Sort(out)
	return out
}

func (f *fixture) cronJob(name string) *batchv1.CronJob {
	f.t.Helper()
	cj, err := client.For[*batchv1.CronJob](f.cs.Client, "default").Get(f.ctx, name)
	if err != nil {
		f.t.Fatal(err)
	}
	return cj
}

func activeNames(cj *batchv1.CronJob) []string {
	var out []string
	for _, r := range cj.GetStatus().GetActive() {
		out = append(out, r.GetName())
	}
	slices.Sort(out)
	return out
}

// events drains the recorder: "Type Reason Message" each.
func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func hasEvent(events []string, prefix string) bool {
	return slices.ContainsFunc(events, func(e string) bool { return strings.HasPrefix(e, prefix) })
}

func nameAt(cj *batchv1.CronJob, s string) string { return jobName(cj, at(s)) }

func TestCreatesJobAtScheduleTime(t *testing.T) {
	cj := newCronJob("report", "0 * * * *")
	f := newFixture(t, cj)

	// Created at 09:30: nothing to do before 10:00, and the next sync is due then.
	if d := f.sync("report", "2025-01-06T09:45:00Z"); d == nil || *d != 15*time.Minute+nextScheduleDelta {
		t.Fatalf("requeue before the first time = %v, want 15m0.1s", d)
	}
	if n := len(f.jobs()); n != 0 {
		t.Fatalf("%d jobs before the schedule time", n)
	}

	d := f.sync("report", "2025-01-06T10:00:02Z")
	if d == nil || *d != time.Hour-2*time.Second+nextScheduleDelta {
		t.Errorf("requeue after the start = %v, want 59m58.1s", d)
	}
	jobs := f.jobs()
	if len(jobs) != 1 {
		t.Fatalf("jobs = %v, want one", f.jobNames())
	}
	j := jobs[0]
	if want := nameAt(cj, "2025-01-06T10:00:00Z"); j.Metadata.Name != want {
		t.Errorf("job name = %s, want %s", j.Metadata.Name, want)
	}
	if got := j.Metadata.Annotations[ScheduledTimestampAnnotation]; got != "2025-01-06T10:00:00Z" {
		t.Errorf("scheduled-timestamp annotation = %q", got)
	}
	if j.Metadata.Labels["app"] != "report" || j.Metadata.Annotations["team"] != "billing" {
		t.Errorf("template metadata not copied: labels %v annotations %v", j.Metadata.Labels, j.Metadata.Annotations)
	}
	ref := metav1.GetControllerOf(j.Metadata)
	if ref == nil || ref.GetKind() != "CronJob" || ref.GetUid() != "uid-report" || ref.GetApiVersion() != "batch/v1" {
		t.Errorf("controller ref = %v", ref)
	}
	if j.GetSpec().GetBackoffLimit() != 2 || j.GetSpec().GetTemplate().GetSpec().GetContainers()[0].GetImage() != "skiff.local/busybox:1" {
		t.Errorf("job spec not from the template: %v", j.GetSpec())
	}

	got := f.cronJob("report")
	if a := got.GetStatus().GetActive(); len(a) != 1 || a[0].GetUid() != j.Metadata.Uid || a[0].GetKind() != "Job" || a[0].GetName() != j.Metadata.Name {
		t.Errorf("status.active = %v", a)
	}
	if lst := got.GetStatus().GetLastScheduleTime().AsTime(); !lst.Equal(at("2025-01-06T10:00:00Z")) {
		t.Errorf("lastScheduleTime = %v", lst)
	}
	if ev := f.events(); !hasEvent(ev, "Normal SuccessfulCreate Created job "+j.Metadata.Name) {
		t.Errorf("events = %v", ev)
	}

	// Synced again within the hour: that time is done, no second Job.
	f.sync("report", "2025-01-06T10:20:00Z")
	if names := f.jobNames(); len(names) != 1 {
		t.Errorf("jobs after a second sync = %v", names)
	}
	if n := testutil.CollectAndCount(f.reg, "cronjob_controller_cronjob_job_creation_skew_duration_seconds"); n != 1 {
		t.Errorf("creation skew histogram series = %d, want 1", n)
	}
}

// A Job created for a time whose status write was lost is taken back into
// status.active, not created twice nor an error.
func TestAlreadyExistingJobIsAdopted(t *testing.T) {
	cj := newCronJob("report", "0 * * * *")
	j := ownedJob(cj, "2025-01-06T10:00:00Z")
	f := newFixture(t, cj, j)
	f.sync("report", "2025-01-06T10:00:30Z")
	if names := f.jobNames(); !slices.Equal(names, []string{j.Metadata.Name}) {
		t.Errorf("jobs = %v", names)
	}
	got := f.cronJob("report")
	if !slices.Equal(activeNames(got), []string{j.Metadata.Name}) || !got.Status.LastScheduleTime.AsTime().Equal(at("2025-01-06T10:00:00Z")) {
		t.Errorf("status = %v", got.Status)
	}
	if ev := f.events(); hasEvent(ev, "Normal SuccessfulCreate") || hasEvent(ev, "Warning FailedCreate") {
		t.Errorf("events = %v", ev)
	}
}

// A Job of the same name that is not ours is left alone.
func TestForeignJobOfTheSameNameIsLeftAlone(t *testing.T) {
	cj := newCronJob("report", "0 * * * *")
	foreign := ownedJob(cj, "2025-01-06T10:00:00Z")
	foreign.Metadata.OwnerReferences = nil
	f := newFixture(t, cj, foreign)
	if d := f.sync("report", "2025-01-06T10:00:30Z"); d == nil {
		t.Error("no requeue after finding a foreign job")
	}
	if a := f.cronJob("report").GetStatus().GetActive(); len(a) != 0 {
		t.Errorf("foreign job taken into status.active: %v", a)
	}
}

func TestConcurrencyPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy     string
		wantJobs   int
		wantActive []string // by scheduled time
		wantEvent  string
	}{
		{policy: "Allow", wantJobs: 2, wantActive: []string{"2025-01-06T10:00:00Z", "2025-01-06T11:00:00Z"}, wantEvent: "Normal SuccessfulCreate"},
		{policy: "Forbid", wantJobs: 1, wantActive: []string{"2025-01-06T10:00:00Z"}, wantEvent: "Normal JobAlreadyActive"},
		{policy: "Replace", wantJobs: 1, wantActive: []string{"2025-01-06T11:00:00Z"}, wantEvent: "Normal SuccessfulDelete"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			cj := newCronJob("report", "0 * * * *")
			cj.Spec.ConcurrencyPolicy = tc.policy
			running := ownedJob(cj, "2025-01-06T10:00:00Z")
			f := newFixture(t, activeWith(cj, "2025-01-06T10:00:00Z", running), running)

			d := f.sync("report", "2025-01-06T11:00:01Z")
			if d == nil || *d != time.Hour-time.Second+nextScheduleDelta {
				t.Errorf("requeue = %v, want the next hour", d)
			}
			if n := len(f.jobs()); n != tc.wantJobs {
				t.Errorf("jobs = %v, want %d", f.jobNames(), tc.wantJobs)
			}
			var want []string
			for _, s := range tc.wantActive {
				want = append(want, nameAt(cj, s))
			}
			slices.Sort(want)
			if got := activeNames(f.cronJob("report")); !slices.Equal(got, want) {
				t.Errorf("active = %v, want %v", got, want)
			}
			if ev := f.events(); !hasEvent(ev, tc.wantEvent) {
				t.Errorf("events = %v, want %s", ev, tc.wantEvent)
			}
		})
	}
}

// Under Forbid the skipped time starts once the running Job finishes (no
// deadline), as upstream.
func TestForbidStartsTheSkippedTimeWhenTheJobFinishes(t *testing.T) {
	cj := newCronJob("report", "0 * * * *")
	cj.Spec.ConcurrencyPolicy = "Forbid"
	running := ownedJob(cj, "2025-01-06T10:00:00Z")
	f := newFixture(t, activeWith(cj, "2025-01-06T10:00:00Z", running), running)
	f.sync("report", "2025-01-06T11:00:01Z")
	if n := len(f.jobs()); n != 1 {
		t.Fatalf("jobs = %v", f.jobNames())
	}
	cur, err := client.For[*batchv1.Job](f.cs.Client, "default").Get(f.ctx, running.Metadata.Name)
	if err != nil {
		t.Fatal(err)
	}
	withCondition(cur, "Complete", "2025-01-06T11:10:00Z")
	if _, err := client.For[*batchv1.Job](f.cs.Client, "default").UpdateStatus(f.ctx, cur); err != nil {
		t.Fatal(err)
	}
	f.events()
	f.sync("report", "2025-01-06T11:10:05Z")
	got := f.cronJob("report")
	if want := []string{nameAt(cj, "2025-01-06T11:00:00Z")}; !slices.Equal(activeNames(got), want) {
		t.Errorf("active = %v, want %v", activeNames(got), want)
	}
	if lst := got.Status.GetLastSuccessfulTime().AsTime(); !lst.Equal(at("2025-01-06T11:10:00Z")) {
		t.Errorf("lastSuccessfulTime = %v", lst)
	}
	if ev := f.events(); !hasEvent(ev, "Normal SawCompletedJob Saw completed job: "+running.Metadata.Name+", condition: Complete") {
		t.Errorf("events = %v", ev)
	}
}

func TestHistoryLimits(t *testing.T) {
	cj := newCronJob("report", "0 * * * *")
	cj.Spec.SuccessfulJobsHistoryLimit = proto.Int32(2)
	cj.Spec.FailedJobsHistoryLimit = proto.Int32(1)
	objs := []scheme.Object{}
	var succeeded, failed []string
	for h := 1; h <= 5; h++ {
		s := fmt.Sprintf("2025-01-06T%02d:00:00Z", h)
		objs = append(objs, withCondition(ownedJob(cj, s), "Complete", fmt.Sprintf("2025-01-06T%02d:05:00Z", h)))
		succeeded = append(succeeded, nameAt(cj, s))
	}
	for h := 6; h <= 8; h++ {
		s := fmt.Sprintf("2025-01-06T%02d:00:00Z", h)
		objs = append(objs, withCondition(ownedJob(cj, s), "Failed", ""))
		failed = append(failed, nameAt(cj, s))
	}
	running := ownedJob(cj, "2025-01-06T09:00:00Z")
	// Another CronJob's finished Jobs are not ours to count.
	other := newCronJob("other", "0 * * * *")
	otherJob := withCondition(ownedJob(other, "2025-01-06T01:00:00Z"), "Complete", "2025-01-06T01:01:00Z")
	objs = append(objs, activeWith(cj, "2025-01-06T09:00:00Z", running), running, other, otherJob)
	f := newFixture(t, objs...)

	f.sync("report", "2025-01-06T09:30:00Z")
	want := []string{succeeded[3], succeeded[4], failed[2], running.Metadata.Name, otherJob.Metadata.Name}
	slices.Sort(want)
	if got := f.jobNames(); !slices.Equal(got, want) {
		t.Errorf("jobs kept = %v, want %v", got, want)
	}
	ev := f.events()
	deletes := 0
	for _, e := range ev {
		if strings.HasPrefix(e, "Normal SuccessfulDelete") {
			deletes++
		}
	}
	if deletes != 5 {
		t.Errorf("SuccessfulDelete events = %d, want 5: %v", deletes, ev)
	}
	if lst := f.cronJob("report").Status.GetLastSuccessfulTime().AsTime(); !lst.Equal(at("2025-01-06T05:05:00Z")) {
		t.Errorf("lastSuccessfulTime = %v, want the newest completion", lst)
	}
}

func TestSuspendStartsNothing(t *testing.T) {
	cj := newCronJob("report", "0 * * * *")
	cj.Spec.Suspend = proto.Bool(true)
	f := newFixture(t, cj)
	if d := f.sync("report", "2025-01-06T12:00:00Z"); d != nil {
		t.Errorf("a suspended CronJob is requeued after %v", *d)
	}
	if n := len(f.jobs()); n != 0 {
		t.Errorf("jobs = %v", f.jobNames())
	}
	// Resumed: only the most recent missed time starts.
	cur := f.cronJob("report")
	cur.Spec.Suspend = proto.Bool(false)
	if _, err := client.For[*batchv1.CronJob](f.cs.Client, "default").Update(f.ctx, cur); err != nil {
		t.Fatal(err)
	}
	f.sync("report", "2025-01-06T12:10:00Z")
	if got, want := f.jobNames(), []string{nameAt(cj, "2025-01-06T12:00:00Z")}; !slices.Equal(got, want) {
		t.Errorf("jobs after resuming = %v, want %v", got, want)
	}
}

func TestMissedBeyondDeadlineIsSkipped(t *testing.T) {
	cj := newCronJob("report", "0 * * * *")
	cj.Spec.StartingDeadlineSeconds = proto.Int64(600)
	f := newFixture(t, activeWith(cj, "2025-01-06T10:00:00Z"))
	d := f.sync("report", "2025-01-06T11:30:00Z")
	if n := len(f.jobs()); n != 0 {
		t.Errorf("jobs = %v", f.jobNames())
	}
	if d == nil || *d != 30*time.Minute+nextScheduleDelta {
		t.Errorf("requeue = %v, want 30m0.1s", d)
	}
	if ev := f.events(); !hasEvent(ev, "Warning MissSchedule Missed scheduled time to start a job: Mon, 06 Jan 2025 11:00:00 +0000") {
		t.Errorf("events = %v", ev)
	}
	// Within the deadline the late start happens.
	f.sync("report", "2025-01-06T12:09:00Z")
	if got, want := f.jobNames(), []string{nameAt(cj, "2025-01-06T12:00:00Z")}; !slices.Equal(got, want) {
		t.Errorf("jobs = %v, want %v", got, want)
	}
}

func TestTooManyMissedStartsOnlyTheMostRecent(t *testing.T) {
	cj := newCronJob("report", "*/5 * * * *")
	f := newFixture(t, activeWith(cj, "2025-01-06T00:00:00Z"))
	f.sync("report", "2025-01-06T12:02:00Z") // 144 times missed
	if got, want := f.jobNames(), []string{nameAt(cj, "2025-01-06T12:00:00Z")}; !slices.Equal(got, want) {
		t.Errorf("jobs = %v, want %v", got, want)
	}
	if ev := f.events(); !hasEvent(ev, "Warning TooManyMissedTimes") {
		t.Errorf("events = %v", ev)
	}
}

// 09:00 in Europe/Berlin is 08:00 UTC on Saturday 29 March 2025 and 07:00
// UTC on Sunday, after the clocks went forward.
func TestTimeZoneScheduleAcrossDST(t *testing.T) {
	cj := newCronJob("berlin", "0 9 * * *")
	cj.Spec.TimeZone = proto.String("Europe/Berlin")
	f := newFixture(t, activeWith(cj, "2025-03-29T08:00:00Z"))

	d := f.sync("berlin", "2025-03-30T06:59:59Z")
	if n := len(f.jobs()); n != 0 {
		t.Fatalf("job started before 09:00 CEST: %v", f.jobNames())
	}
	if d == nil || *d != time.Second+nextScheduleDelta {
		t.Errorf("requeue = %v, want 1.1s (07:00 UTC)", d)
	}
	d = f.sync("berlin", "2025-03-30T07:00:01Z")
	jobs := f.jobs()
	if len(jobs) != 1 {
		t.Fatalf("jobs = %v", f.jobNames())
	}
	if want := nameAt(cj, "2025-03-30T07:00:00Z"); jobs[0].Metadata.Name != want {
		t.Errorf("job = %s, want %s", jobs[0].Metadata.Name, want)
	}
	if got := jobs[0].Metadata.Annotations[ScheduledTimestampAnnotation]; got != "2025-03-30T09:00:00+02:00" {
		t.Errorf("scheduled-timestamp = %q, want 09:00 in Berlin", got)
	}
	if d == nil || *d != 24*time.Hour-time.Second+nextScheduleDelta {
		t.Errorf("requeue = %v, want Monday 07:00 UTC", d)
	}
}

func TestUnknownTimeZone(t *testing.T) {
	cj := newCronJob("mars", "0 * * * *")
	cj.Spec.TimeZone = proto.String("Mars/Olympus_Mons")
	f := newFixture(t, cj)
	if d := f.sync("mars", "2025-01-06T12:00:00Z"); d != nil {
		t.Errorf("requeue = %v, want none", *d)
	}
	if n := len(f.jobs()); n != 0 {
		t.Errorf("jobs = %v", f.jobNames())
	}
	if ev := f.events(); !hasEvent(ev, `Warning UnknownTimeZone invalid timeZone: "Mars/Olympus_Mons"`) {
		t.Errorf("events = %v", ev)
	}
}

func TestBadSchedules(t *testing.T) {
	for _, tc := range []struct{ schedule, event string }{
		{"every day", "Warning UnparseableSchedule"},
		{"0 0 31 2 *", "Warning InvalidSchedule"},
	} {
		t.Run(tc.schedule, func(t *testing.T) {
			f := newFixture(t, newCronJob("bad", tc.schedule))
			if d := f.sync("bad", "2025-01-06T12:00:00Z"); d != nil {
				t.Errorf("requeue = %v, want none", *d)
			}
			if ev := f.events(); !hasEvent(ev, tc.event) {
				t.Errorf("events = %v, want %s", ev, tc.event)
			}
		})
	}
}

func TestMissingActiveJobIsDropped(t *testing.T) {
	cj := newCronJob("report", "0 * * * *")
	gone := ownedJob(cj, "2025-01-06T10:00:00Z")
	f := newFixture(t, activeWith(cj, "2025-01-06T10:00:00Z", gone))
	f.sync("report", "2025-01-06T10:30:00Z")
	if a := f.cronJob("report").GetStatus().GetActive(); len(a) != 0 {
		t.Errorf("active = %v", a)
	}
	if ev := f.events(); !hasEvent(ev, "Normal MissingJob Active job went missing: "+gone.Metadata.Name) {
		t.Errorf("events = %v", ev)
	}
}

func TestDeletedCronJob(t *testing.T) {
	f := newFixture(t)
	f.setNow("2025-01-06T10:00:00Z")
	if d, err := f.c.sync(f.ctx, "default/nothere"); d != nil || err != nil {
		t.Errorf("sync of a deleted CronJob = %v, %v", d, err)
	}
}

// The real loop, with the real clock: the CronJob's add event finds nothing
// due, and only the queue's AddAfter brings it back a second later to
// create the Job (no event happens in between). Job names count minutes, so
// "@every 1s" makes one Job a minute, as upstream.
func TestRunRequeuesForTheNextTime(t *testing.T) {
	cj := newCronJob("tick", "@every 1s")
	cj.Metadata.CreationTimestamp = metav1.Now()
	cs := fake.NewClientset(cj)
	t.Cleanup(cs.Close)
	cc, _ := controllertest.Context(cs, controllers.Options{ConcurrentSyncs: map[string]int{"cronjob": 1}})
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "cronjob-controller" {
		t.Errorf("Name = %q", c.Name())
	}
	controllertest.Run(t, cc, c)
	controllertest.Eventually(t, func() (bool, string) {
		l, err := client.For[*batchv1.Job](cs.Client, "default").List(context.Background(), client.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(l.Items) == 1, fmt.Sprintf("%d jobs", len(l.Items))
	})
	if n := testutil.CollectAndCount(cc.Registerer.(*prometheus.Registry), "workqueue_adds_total"); n != 1 {
		t.Errorf("workqueue_adds_total series = %d, want the cronjob queue's", n)
	}
}
