package job

import (
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestIntervalsStringAndParse(t *testing.T) {
	for _, tc := range []struct {
		in          []int
		completions int
		want        string
	}{
		{nil, 10, ""},
		{[]int{0}, 10, "0"},
		{[]int{0, 1}, 10, "0,1"},
		{[]int{0, 1, 2}, 10, "0-2"},
		{[]int{1, 3, 4, 5, 7, 8}, 10, "1,3-5,7,8"},
		{[]int{9, 2, 5, 3, 4}, 10, "2-5,9"},
	} {
		got := intervals(nil).withIndexes(tc.in).String()
		if got != tc.want {
			t.Errorf("indexes %v: %q, want %q", tc.in, got, tc.want)
		}
		// Round trip.
		if back := parseIntervals(quiet, got, tc.completions).String(); back != tc.want {
			t.Errorf("parse(%q) = %q", got, back)
		}
	}
	// Parsing drops what is beyond completions and merges adjacent pieces.
	if got := parseIntervals(quiet, "0,1,2-4,7-12,20", 10).String(); got != "0-4,7-9" {
		t.Errorf("parse with completions 10 = %q, want 0-4,7-9", got)
	}
	iv := parseIntervals(quiet, "1,3-5", 10)
	for ix, want := range map[int]bool{0: false, 1: true, 2: false, 3: true, 5: true, 6: false} {
		if iv.has(ix) != want {
			t.Errorf("has(%d) = %v", ix, !want)
		}
	}
}

func TestFirstPendingIndexes(t *testing.T) {
	pod := func(ix int) *corev1.Pod {
		return &corev1.Pod{Metadata: &metav1.ObjectMeta{Annotations: map[string]string{completionIndexKey: itoa(ix)}}, Status: &corev1.PodStatus{Phase: "Running"}}
	}
	for _, tc := range []struct {
		name      string
		succeeded string
		active    []int
		failed    *string
		count     int
		want      []int
	}{
		{name: "fresh", count: 3, want: []int{0, 1, 2}},
		{name: "skips succeeded and active", succeeded: "0,2", active: []int{1, 4}, count: 3, want: []int{3, 5, 6}},
		{name: "bounded by completions", succeeded: "0-5", count: 5, want: []int{6, 7}},
		{name: "skips failed indexes", failed: proto.String("0-2"), count: 2, want: []int{3, 4}},
		{name: "nothing", count: 0, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := indexed(newJob("j", 8, 8))
			withDefaults(j)
			jc := &syncCtx{job: j, succeededIndexes: parseIntervals(quiet, tc.succeeded, 8)}
			for _, ix := range tc.active {
				jc.activePods = append(jc.activePods, pod(ix))
			}
			if tc.failed != nil {
				f := parseIntervals(quiet, *tc.failed, 8)
				jc.failedIndexes = &f
			}
			if got := firstPendingIndexes(jc, tc.count, 8); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func failedPod(containers map[string]int32, conds ...string) *corev1.Pod {
	p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Status: &corev1.PodStatus{Phase: "Failed"}}
	names := make([]string, 0, len(containers))
	for n := range containers {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, &corev1.ContainerStatus{Name: n,
			State: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: containers[n]}}})
	}
	for _, c := range conds {
		p.Status.Conditions = append(p.Status.Conditions, &corev1.PodCondition{Type: c, Status: "True"})
	}
	return p
}

func TestMatchPodFailurePolicy(t *testing.T) {
	exitRule := func(action, op string, container *string, values ...int32) *batchv1.PodFailurePolicyRule {
		return &batchv1.PodFailurePolicyRule{Action: action, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
			ContainerName: container, Operator: op, Values: values}}
	}
	condRule := func(action, typ string) *batchv1.PodFailurePolicyRule {
		return &batchv1.PodFailurePolicyRule{Action: action, OnPodConditions: []*batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: typ, Status: "True"}}}
	}
	for _, tc := range []struct {
		name        string
		rules       []*batchv1.PodFailurePolicyRule
		pod         *corev1.Pod
		wantAction  string
		wantCounted bool
		wantMsg     string
	}{
		{"no rules count", nil, failedPod(map[string]int32{"main": 1}), "", true, ""},
		{"FailJob on exit code In", []*batchv1.PodFailurePolicyRule{exitRule("FailJob", "In", nil, 42)},
			failedPod(map[string]int32{"main": 42}), "FailJob", true,
			"Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0"},
		{"In does not match another code", []*batchv1.PodFailurePolicyRule{exitRule("FailJob", "In", nil, 42)},
			failedPod(map[string]int32{"main": 1}), "", true, ""},
		{"NotIn matches other codes", []*batchv1.PodFailurePolicyRule{exitRule("Ignore", "NotIn", nil, 1, 2)},
			failedPod(map[string]int32{"main": 3}), "Ignore", false, ""},
		{"NotIn does not match listed code", []*batchv1.PodFailurePolicyRule{exitRule("Ignore", "NotIn", nil, 1, 2)},
			failedPod(map[string]int32{"main": 2}), "", true, ""},
		{"exit code 0 never matches", []*batchv1.PodFailurePolicyRule{exitRule("FailJob", "NotIn", nil, 1)},
			failedPod(map[string]int32{"main": 0}), "", true, ""},
		{"containerName restricts", []*batchv1.PodFailurePolicyRule{exitRule("FailJob", "In", proto.String("sidecar"), 42)},
			failedPod(map[string]int32{"main": 42, "sidecar": 1}), "", true, ""},
		{"containerName matches", []*batchv1.PodFailurePolicyRule{exitRule("FailJob", "In", proto.String("sidecar"), 42)},
			failedPod(map[string]int32{"main": 1, "sidecar": 42}), "FailJob", true,
			"Container sidecar for pod ns/p failed with exit code 42 matching FailJob rule at index 0"},
		{"first matching rule wins", []*batchv1.PodFailurePolicyRule{exitRule("Count", "In", nil, 5), exitRule("Ignore", "In", nil, 42), exitRule("FailJob", "In", nil, 42)},
			failedPod(map[string]int32{"main": 42}), "Ignore", false, ""},
		{"Count", []*batchv1.PodFailurePolicyRule{exitRule("Count", "In", nil, 42)},
			failedPod(map[string]int32{"main": 42}), "Count", true, ""},
		{"FailIndex", []*batchv1.PodFailurePolicyRule{exitRule("FailIndex", "In", nil, 42)},
			failedPod(map[string]int32{"main": 42}), "FailIndex", true, ""},
		{"DisruptionTarget ignored", []*batchv1.PodFailurePolicyRule{condRule("Ignore", "DisruptionTarget")},
			failedPod(map[string]int32{"main": 137}, "DisruptionTarget"), "Ignore", false, ""},
		{"condition FailJob message", []*batchv1.PodFailurePolicyRule{condRule("FailJob", "DisruptionTarget")},
			failedPod(map[string]int32{"main": 137}, "DisruptionTarget"), "FailJob", true,
			"Pod ns/p has condition DisruptionTarget matching FailJob rule at index 0"},
		{"condition absent", []*batchv1.PodFailurePolicyRule{condRule("Ignore", "DisruptionTarget")},
			failedPod(map[string]int32{"main": 1}), "", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pfp *batchv1.PodFailurePolicy
			if tc.rules != nil {
				pfp = &batchv1.PodFailurePolicy{Rules: tc.rules}
			}
			m := matchPodFailurePolicy(pfp, tc.pod)
			if m.action != tc.wantAction || m.countFailed != tc.wantCounted || m.failJobMessage != tc.wantMsg {
				t.Errorf("got %+v, want action %q counted %v message %q", m, tc.wantAction, tc.wantCounted, tc.wantMsg)
			}
		})
	}
}

func TestBackoffDelays(t *testing.T) {
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 320 * time.Second, 6 * time.Minute, 6 * time.Minute}
	for failures, w := range want {
		if got := backoffDelay(int32(failures)); got != w {
			t.Errorf("%d failures: %v, want %v", failures, got, w)
		}
	}
	now := time.Now().Truncate(time.Second) // API times have second precision
	last := now.Add(-15 * time.Second)
	if got := remainingBackoff(now, 2, &last); got != 5*time.Second {
		t.Errorf("2 failures, last 15s ago: %v left, want 5s", got)
	}
	if got := remainingBackoff(now, 1, &last); got != 0 {
		t.Errorf("1 failure, last 15s ago: %v left, want 0", got)
	}
	// A success resets the count to the failures after it.
	s := newBackoffStore()
	mk := func(phase string, at time.Time) *corev1.Pod {
		return &corev1.Pod{Metadata: &metav1.ObjectMeta{}, Status: &corev1.PodStatus{Phase: phase, ContainerStatuses: []*corev1.ContainerStatus{{
			State: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: metav1.NewTime(at)}}}}}}
	}
	r := s.next("k", nil, []*corev1.Pod{mk("Failed", now.Add(-3*time.Minute)), mk("Failed", now.Add(-2*time.Minute))})
	if r.failuresAfterLastSuccess != 2 {
		t.Fatalf("two failures recorded as %d", r.failuresAfterLastSuccess)
	}
	s.update("k", r)
	r = s.next("k", []*corev1.Pod{mk("Succeeded", now.Add(-time.Minute))}, []*corev1.Pod{mk("Failed", now.Add(-30*time.Second))})
	if r.failuresAfterLastSuccess != 1 || !r.lastFailureTime.Equal(now.Add(-30*time.Second)) {
		t.Errorf("after a success and one later failure: %+v", r)
	}
}

func TestMatchSuccessPolicy(t *testing.T) {
	rules := func(rs ...*batchv1.SuccessPolicyRule) *batchv1.SuccessPolicy {
		return &batchv1.SuccessPolicy{Rules: rs}
	}
	for _, tc := range []struct {
		name      string
		policy    *batchv1.SuccessPolicy
		succeeded string
		wantMsg   string
	}{
		{"no policy", nil, "0-9", ""},
		{"indexes all succeeded", rules(&batchv1.SuccessPolicyRule{SucceededIndexes: proto.String("0,2-3")}), "0-3", "Matched rules at index 0"},
		{"indexes missing one", rules(&batchv1.SuccessPolicyRule{SucceededIndexes: proto.String("0,2-3")}), "0,2", ""},
		{"count among indexes", rules(&batchv1.SuccessPolicyRule{SucceededIndexes: proto.String("0-4"), SucceededCount: proto.Int32(2)}), "3,4,7", "Matched rules at index 0"},
		{"count among indexes not reached", rules(&batchv1.SuccessPolicyRule{SucceededIndexes: proto.String("0-4"), SucceededCount: proto.Int32(2)}), "4,7,8", ""},
		{"count alone, second rule", rules(&batchv1.SuccessPolicyRule{SucceededIndexes: proto.String("9")}, &batchv1.SuccessPolicyRule{SucceededCount: proto.Int32(3)}), "1,5,6", "Matched rules at index 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, ok := matchSuccessPolicy(quiet, tc.policy, 10, parseIntervals(quiet, tc.succeeded, 10))
			if msg != tc.wantMsg || ok != (tc.wantMsg != "") {
				t.Errorf("got %q %v, want %q", msg, ok, tc.wantMsg)
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
