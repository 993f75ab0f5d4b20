package cronjob

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	batchv1 "skiff.dev/proto/api/batch/v1"
)

const (
	// tooManyMissed is upstream's limit: more unmet schedule times than
	// this within the starting deadline earn a TooManyMissedTimes warning.
	tooManyMissed = 100
	// nextScheduleDelta is added to every requeue, as upstream does, so
	// that the sync lands just after the schedule time, not a moment before.
	nextScheduleDelta = 100 * time.Millisecond
)

// errNeverFires is a schedule that parses but names no real time
// ("0 0 30 2 *"): robfig finds no activation within five years.
var errNeverFires = errors.New("the schedule has no activation time within five years")

// timeline is the sequence of a CronJob's schedule times. A cron expression
// names fixed instants (in its time zone); "@every <d>" counts from the
// CronJob's last schedule time (or creation), as upstream's controller
// counts it.
type timeline struct {
	sched cron.Schedule
	// loc is where an expression without a zone is read: the CronJob's
	// timeZone was folded into sched already, this is the process's zone.
	loc *time.Location
	// every and anchor are set for "@every": the times are anchor + k*every,
	// k >= 1.
	every  time.Duration
	anchor time.Time
}

// scheduleSpec is what is parsed for cj, as upstream's formatSchedule: a
// timeZone becomes a TZ= prefix, and a schedule that carries its own TZ= or
// CRON_TZ= (no longer accepted by validation, but older objects may have
// one) is taken as it is; unsupported reports the latter.
func scheduleSpec(cj *batchv1.CronJob) (spec string, unsupported bool) {
	s := cj.GetSpec().GetSchedule()
	if strings.Contains(s, "TZ") {
		return s, true
	}
	if tz := cj.GetSpec().TimeZone; tz != nil {
		return "TZ=" + *tz + " " + s, false
	}
	return s, false
}

// newTimeline parses spec as upstream does (robfig's ParseStandard: five
// fields, the @yearly… macros and @every); earliest anchors "@every".
func newTimeline(spec string, local *time.Location, earliest time.Time) (timeline, error) {
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return timeline{}, err
	}
	tl := timeline{sched: sched, loc: local}
	if cd, ok := sched.(cron.ConstantDelaySchedule); ok {
		tl.every = cd.Delay
		tl.anchor = earliest.Truncate(time.Second)
	}
	return tl, nil
}

// next is the first schedule time strictly after t, or the zero time when
// there is none within five years.
func (tl timeline) next(t time.Time) time.Time {
	if tl.every > 0 {
		if t.Before(tl.anchor) {
			return tl.anchor.Add(tl.every)
		}
		k := t.Sub(tl.anchor) / tl.every
		return tl.anchor.Add((k + 1) * tl.every)
	}
	// robfig reads a schedule without a zone in the zone of the time it
	// is given: give it the process's.
	return tl.sched.Next(t.In(tl.loc))
}

// latest is the most recent schedule time in (after, notAfter], or false.
func (tl timeline) latest(after, notAfter time.Time) (time.Time, bool) {
	if !after.Before(notAfter) {
		return time.Time{}, false
	}
	if tl.every > 0 {
		if notAfter.Before(tl.anchor.Add(tl.every)) {
			return time.Time{}, false
		}
		k := notAfter.Sub(tl.anchor) / tl.every
		t := tl.anchor.Add(k * tl.every)
		return t, t.After(after)
	}
	// next is monotonic in its argument and every activation falls on a
	// whole second: bisect for the last whole-second offset from after
	// whose next activation is still not after notAfter. This costs about
	// thirty calls to next however long the controller was away.
	fires := func(k int64) bool {
		t := tl.next(after.Add(time.Duration(k) * time.Second))
		return !t.IsZero() && !t.After(notAfter)
	}
	if !fires(0) {
		return time.Time{}, false
	}
	lo, hi := int64(0), int64(notAfter.Sub(after)/time.Second)+1 // fires(lo), !fires(hi)
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if fires(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return tl.next(after.Add(time.Duration(lo) * time.Second)), true
}

// count is the number of schedule times in (after, notAfter], stopping at
// limit.
func (tl timeline) count(after, notAfter time.Time, limit int) int {
	n := 0
	for t := tl.next(after); n < limit && !t.IsZero() && !t.After(notAfter); t = tl.next(t) {
		n++
	}
	return n
}

// unmet is what a sync finds between a CronJob's last schedule time and now.
type unmet struct {
	// start is the most recent schedule time after the last one the
	// CronJob ran (or its creation) and not after now; zero when none.
	start time.Time
	// tooLate: start lies more than startingDeadlineSeconds before now, so
	// it is skipped (MissSchedule).
	tooLate bool
	// missed is how many schedule times passed unmet within the starting
	// deadline (since earliest when there is none), counted up to
	// tooManyMissed+1.
	missed int
}

// findUnmet is upstream's mostRecentScheduleTime in our own arithmetic:
// only the most recent unmet time is ever started, however many passed;
// more than 100 of them within the deadline is worth a warning; one older
// than the deadline is not started at all.
func findUnmet(tl timeline, earliest, now time.Time, deadline *int64) unmet {
	var u unmet
	start, ok := tl.latest(earliest, now)
	if !ok {
		return u
	}
	u.start = start
	from := earliest
	if deadline != nil {
		limit := now.Add(-time.Duration(*deadline) * time.Second)
		if start.Before(limit) {
			u.tooLate = true
			return u
		}
		if limit.After(from) {
			from = limit
		}
	}
	// Strictly after the deadline's limit, as upstream: a time exactly
	// startingDeadlineSeconds old is still started but not counted.
	u.missed = tl.count(from, now, tooManyMissed+1)
	if u.missed == 0 {
		u.missed = 1 // start itself sits on the limit
	}
	return u
}

// requeueAfter is how long until the sync after now is due: just after the
// next schedule time (upstream's nextScheduleTimeDuration). false when the
// schedule has no next time.
func requeueAfter(tl timeline, earliest, now time.Time) (time.Duration, bool) {
	from := now
	if earliest.After(from) {
		from = earliest
	}
	next := tl.next(from)
	if next.IsZero() {
		return 0, false
	}
	return next.Add(nextScheduleDelta).Sub(now), true
}

// jobName is upstream's: the CronJob's name and the scheduled time in
// minutes since the epoch, so that one schedule time makes one Job however
// often it is synced.
func jobName(cj *batchv1.CronJob, scheduled time.Time) string {
	return fmt.Sprintf("%s-%d", cj.GetMetadata().GetName(), scheduled.Unix()/60)
}
