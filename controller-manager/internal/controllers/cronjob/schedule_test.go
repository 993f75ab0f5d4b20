package cronjob

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func mustTimeline(t *testing.T, spec string, earliest time.Time) timeline {
	t.Helper()
	tl, err := newTimeline(spec, time.UTC, earliest)
	if err != nil {
		t.Fatalf("parse %q: %v", spec, err)
	}
	return tl
}

func TestFindUnmet(t *testing.T) {
	for _, tc := range []struct {
		name     string
		schedule string
		earliest string // last schedule time, or creation
		now      string
		deadline *int64
		// want
		start   string // "" for nothing to start
		tooLate bool
		missed  int
	}{
		{name: "before the next time", schedule: "0 * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T10:30:00Z"},
		{name: "exactly at the time", schedule: "0 * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T11:00:00Z",
			start: "2025-01-06T11:00:00Z", missed: 1},
		{name: "shortly after", schedule: "0 * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T11:05:00Z",
			start: "2025-01-06T11:00:00Z", missed: 1},
		{name: "three missed, the most recent starts", schedule: "0 * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T13:30:00Z",
			start: "2025-01-06T13:00:00Z", missed: 3},
		{name: "most recent beyond the deadline", schedule: "0 * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T13:30:00Z",
			deadline: proto.Int64(600), start: "2025-01-06T13:00:00Z", tooLate: true},
		{name: "deadline narrows the count", schedule: "0 * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T13:30:00Z",
			deadline: proto.Int64(3600), start: "2025-01-06T13:00:00Z", missed: 1},
		{name: "exactly on the deadline still starts", schedule: "0 * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T11:10:00Z",
			deadline: proto.Int64(600), start: "2025-01-06T11:00:00Z", missed: 1},
		{name: "more than 100 missed", schedule: "* * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T12:00:30Z",
			start: "2025-01-06T12:00:00Z", missed: 101},
		{name: "deadline keeps the count under 100", schedule: "* * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T12:00:30Z",
			deadline: proto.Int64(3000), start: "2025-01-06T12:00:00Z", missed: 50},
		{name: "controller away for years", schedule: "0 * * * *", earliest: "2015-01-06T10:00:00Z", now: "2025-01-06T13:30:00Z",
			start: "2025-01-06T13:00:00Z", missed: 101},
		{name: "irregular hours", schedule: "0 9,10 * * *", earliest: "2025-01-06T08:00:00Z", now: "2025-01-07T08:00:00Z",
			start: "2025-01-06T10:00:00Z", missed: 2},
		{name: "weekdays only, over a weekend", schedule: "30 6-16/4 * * 1-5", earliest: "2025-01-10T17:00:00Z", now: "2025-01-13T07:00:00Z",
			start: "2025-01-13T06:30:00Z", missed: 1},
		{name: "@daily", schedule: "@daily", earliest: "2025-01-06T12:00:00Z", now: "2025-01-08T01:00:00Z",
			start: "2025-01-08T00:00:00Z", missed: 2},
		{name: "@every counts from the last time", schedule: "@every 90m", earliest: "2025-01-06T10:00:30.5Z", now: "2025-01-06T13:10:00Z",
			start: "2025-01-06T13:00:30Z", missed: 2},
		{name: "@every not yet due", schedule: "@every 90m", earliest: "2025-01-06T10:00:30Z", now: "2025-01-06T11:30:29Z"},
		{name: "created in the future (clock skew)", schedule: "0 * * * *", earliest: "2025-01-06T12:00:00Z", now: "2025-01-06T11:00:00Z"},
		{name: "a day that never comes", schedule: "0 0 30 2 *", earliest: "2025-01-06T12:00:00Z", now: "2026-01-06T11:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			earliest := at(tc.earliest)
			tl := mustTimeline(t, tc.schedule, earliest)
			u := findUnmet(tl, earliest, at(tc.now), tc.deadline)
			var want time.Time
			if tc.start != "" {
				want = at(tc.start)
			}
			if !u.start.Equal(want) || u.tooLate != tc.tooLate || u.missed != tc.missed {
				t.Errorf("findUnmet = start %v tooLate %v missed %d; want start %v tooLate %v missed %d",
					u.start, u.tooLate, u.missed, want, tc.tooLate, tc.missed)
			}
		})
	}
}

func TestRequeueAfter(t *testing.T) {
	for _, tc := range []struct {
		name, schedule, earliest, now string
		want                          time.Duration
		none                          bool
	}{
		{name: "half an hour to go", schedule: "0 * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T10:30:00Z",
			want: 30*time.Minute + nextScheduleDelta},
		{name: "synced right at a time", schedule: "0 * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T11:00:00Z",
			want: time.Hour + nextScheduleDelta},
		{name: "after missed times, the next from now", schedule: "0 * * * *", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T13:45:00Z",
			want: 15*time.Minute + nextScheduleDelta},
		{name: "@every from the last time", schedule: "@every 90m", earliest: "2025-01-06T10:00:00Z", now: "2025-01-06T12:00:00Z",
			want: time.Hour + nextScheduleDelta},
		{name: "last time ahead of the clock", schedule: "0 * * * *", earliest: "2025-01-06T12:00:00Z", now: "2025-01-06T11:00:00Z",
			want: 2*time.Hour + nextScheduleDelta},
		{name: "never fires", schedule: "0 0 31 2 *", earliest: "2025-01-06T12:00:00Z", now: "2025-01-06T11:00:00Z", none: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := mustTimeline(t, tc.schedule, at(tc.earliest))
			d, ok := requeueAfter(tl, at(tc.earliest), at(tc.now))
			if ok == tc.none || d != tc.want {
				t.Errorf("requeueAfter = %v, %v; want %v, %v", d, ok, tc.want, !tc.none)
			}
		})
	}
}

// A schedule at 09:00 Europe/Berlin is 08:00 UTC in winter (CET) and 07:00
// UTC in summer (CEST), on both sides of each change.
func TestTimeZoneAcrossDST(t *testing.T) {
	tl := mustTimeline(t, "TZ=Europe/Berlin 0 9 * * *", at("2025-03-29T08:00:00Z"))
	for _, tc := range []struct{ after, want string }{
		{"2025-03-28T08:00:00Z", "2025-03-29T08:00:00Z"}, // Saturday, CET
		{"2025-03-29T08:00:00Z", "2025-03-30T07:00:00Z"}, // Sunday, the clocks went forward at 02:00
		{"2025-10-25T07:00:00Z", "2025-10-26T08:00:00Z"}, // Sunday, back to CET at 03:00
	} {
		if got := tl.next(at(tc.after)); !got.Equal(at(tc.want)) {
			t.Errorf("next after %s = %s, want %s", tc.after, got.UTC().Format(time.RFC3339), tc.want)
		}
	}
	// The process's own zone is irrelevant to a schedule with a timeZone.
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	tl, err = newTimeline("TZ=Europe/Berlin 0 9 * * *", tokyo, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got := tl.next(at("2025-03-29T08:00:00Z")); !got.Equal(at("2025-03-30T07:00:00Z")) {
		t.Errorf("with a Tokyo process, next = %s", got.UTC())
	}
	// Without a timeZone the process's zone is used, as upstream.
	tl, err = newTimeline("0 9 * * *", tokyo, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got := tl.next(at("2025-03-29T08:00:00Z")); !got.Equal(at("2025-03-30T00:00:00Z")) {
		t.Errorf("09:00 in Tokyo = %s, want 00:00 UTC", got.UTC())
	}
}

func TestJobName(t *testing.T) {
	cj := newCronJob("nightly", "0 2 * * *")
	if got := jobName(cj, at("2025-01-06T02:00:00Z")); got != "nightly-28935480" {
		t.Errorf("jobName = %q, want nightly-28935480 (minutes since the epoch)", got)
	}
}
