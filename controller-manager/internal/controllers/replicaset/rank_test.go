package replicaset

import (
	"errors"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// podOpt shapes a test pod.
type podOpt func(*corev1.Pod)

func onNode(n string) podOpt { return func(p *corev1.Pod) { p.Spec.NodeName = n } }
func phase(ph string) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }
func uid(u string) podOpt    { return func(p *corev1.Pod) { p.Metadata.Uid = u } }
func created(ago time.Duration) podOpt {
	return func(p *corev1.Pod) { p.Metadata.CreationTimestamp = metav1.NewTime(now.Add(-ago)) }
}

// readySince marks the pod Running and Ready since ago (a negative ago
// leaves the transition time unset).
func readySince(ago time.Duration) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Phase = "Running"
		c := &corev1.PodCondition{Type: "Ready", Status: "True"}
		if ago >= 0 {
			c.LastTransitionTime = metav1.NewTime(now.Add(-ago))
		}
		p.Status.Conditions = []*corev1.PodCondition{c}
	}
}
func notReady() podOpt {
	return func(p *corev1.Pod) {
		p.Status.Conditions = []*corev1.PodCondition{{Type: "Ready", Status: "False"}}
	}
}
func restarts(n int32) podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, &corev1.ContainerStatus{Name: "c", RestartCount: n})
	}
}
func cost(v string) podOpt {
	return func(p *corev1.Pod) {
		if p.Metadata.Annotations == nil {
			p.Metadata.Annotations = map[string]string{}
		}
		p.Metadata.Annotations[podDeletionCostAnnotation] = v
	}
}

func testPod(name string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name,
			CreationTimestamp: metav1.NewTime(now.Add(-24 * time.Hour))},
		Spec:   &corev1.PodSpec{NodeName: "node-1"},
		Status: &corev1.PodStatus{Phase: "Running"},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// TestActivePodsWithRanksOrder checks each rule of upstream's
// ActivePodsWithRanks.Less: first is to be deleted before second, and not
// the other way round.
func TestActivePodsWithRanksOrder(t *testing.T) {
	ready := readySince(time.Hour)
	tests := []struct {
		name          string
		first, second *corev1.Pod
		rank          [2]int
		zeroNow       bool
	}{
		{name: "unassigned before assigned, whatever the phase",
			first:  testPod("a", onNode(""), ready),
			second: testPod("b", phase("Pending"))},
		{name: "pending before unknown",
			first: testPod("a", phase("Pending")), second: testPod("b", phase("Unknown"))},
		{name: "unknown before running",
			first: testPod("a", phase("Unknown")), second: testPod("b", phase("Running"))},
		{name: "not ready before ready",
			first: testPod("a", notReady()), second: testPod("b", ready)},
		{name: "no ready condition before ready",
			first: testPod("a"), second: testPod("b", ready)},
		{name: "lower deletion cost before higher",
			first: testPod("a", ready, cost("-5")), second: testPod("b", ready, cost("10"))},
		{name: "deletion cost outranks co-location",
			first: testPod("a", ready, cost("1")), second: testPod("b", ready, cost("2")), rank: [2]int{1, 5}},
		{name: "invalid deletion cost counts as zero",
			first: testPod("a", ready, cost("nope")), second: testPod("b", ready, cost("1"))},
		{name: "more pods on the node before fewer",
			first: testPod("a", ready), second: testPod("b", ready), rank: [2]int{3, 1}},
		{name: "co-location outranks ready time",
			first: testPod("a", readySince(48*time.Hour)), second: testPod("b", readySince(time.Minute)), rank: [2]int{2, 1}},
		{name: "ready for less time before longer",
			first: testPod("a", readySince(10*time.Second)), second: testPod("b", readySince(time.Hour))},
		{name: "ready times in one logarithmic bucket tie-break by uid",
			first:  testPod("x", uid("1"), readySince(100*time.Second)),
			second: testPod("y", uid("2"), readySince(101*time.Second))},
		{name: "same bucket, uid beats the later ready time",
			first:  testPod("x", uid("1"), readySince(101*time.Second)),
			second: testPod("y", uid("2"), readySince(100*time.Second))},
		{name: "without a reference time ready times compare directly",
			first:  testPod("x", uid("2"), readySince(100*time.Second)),
			second: testPod("y", uid("1"), readySince(101*time.Second)), zeroNow: true},
		{name: "unknown ready time before a known one",
			first: testPod("a", readySince(-1)), second: testPod("b", readySince(time.Second))},
		{name: "more restarts before fewer",
			first: testPod("a", ready, restarts(5)), second: testPod("b", ready, restarts(1))},
		{name: "restarts are the container maximum",
			first: testPod("a", ready, restarts(4)), second: testPod("b", ready, restarts(1), restarts(3))},
		{name: "restarts outrank age",
			first: testPod("a", ready, restarts(1), created(48*time.Hour)), second: testPod("b", ready, created(time.Minute))},
		{name: "newer before older",
			first: testPod("a", ready, created(time.Minute)), second: testPod("b", ready, created(24*time.Hour))},
		{name: "creation times in one logarithmic bucket tie-break by uid",
			first:  testPod("x", uid("1"), ready, created(100*time.Second)),
			second: testPod("y", uid("2"), ready, created(101*time.Second))},
		{name: "unknown creation time first",
			first: testPod("a", ready, func(p *corev1.Pod) { p.Metadata.CreationTimestamp = nil }), second: testPod("b", ready, created(time.Second))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := activePodsWithRanks{pods: []*corev1.Pod{tt.first, tt.second}, rank: tt.rank[:], now: now}
			if tt.zeroNow {
				s.now = time.Time{}
			}
			if !s.Less(0, 1) {
				t.Errorf("Less(first, second) = false, want true")
			}
			if s.Less(1, 0) {
				t.Errorf("Less(second, first) = true, want false")
			}
		})
	}
}

func TestActivePodsWithRanksEqualPodsAreNotLess(t *testing.T) {
	a, b := testPod("a", readySince(time.Hour)), testPod("b", readySince(time.Hour))
	b.Metadata.Uid = a.Metadata.Uid
	s := activePodsWithRanks{pods: []*corev1.Pod{a, b}, rank: []int{1, 1}, now: now}
	if s.Less(0, 1) || s.Less(1, 0) {
		t.Error("identical pods compare as less")
	}
}

func TestSortPutsDeletionCandidatesFirst(t *testing.T) {
	pods := []*corev1.Pod{
		testPod("running-ready", readySince(time.Hour)),
		testPod("unscheduled", onNode(""), phase("Pending")),
		testPod("running-not-ready", notReady()),
		testPod("pending", phase("Pending")),
		testPod("unknown", phase("Unknown")),
	}
	s := activePodsWithRanks{pods: pods, rank: make([]int, len(pods)), now: now}
	sort.Sort(s)
	var got []string
	for _, p := range s.pods {
		got = append(got, p.Metadata.Name)
	}
	want := []string{"unscheduled", "pending", "unknown", "running-not-ready", "running-ready"}
	if !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
}

func names(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.GetMetadata().GetName())
	}
	slices.Sort(out)
	return out
}

func TestPodsToDeleteRanksByRelatedPodsOnSameNode(t *testing.T) {
	ready := readySince(time.Hour)
	a := testPod("a", ready, onNode("n1"))
	b := testPod("b", ready, onNode("n1"))
	c := testPod("c", ready, onNode("n2"))
	own := []*corev1.Pod{a, b, c}
	// Pods of a sibling ReplicaSet (same Deployment) crowd n2.
	d := testPod("d", ready, onNode("n2"))
	e := testPod("e", ready, onNode("n2"))
	// An inactive related pod does not count.
	gone := testPod("gone", ready, onNode("n1"), phase("Failed"))

	tests := []struct {
		name    string
		related []*corev1.Pod
		diff    int
		want    []string
	}{
		{name: "own pods only: the doubled-up node loses first", related: own, diff: 2, want: []string{"a", "b"}},
		{name: "siblings make n2 the crowded node", related: []*corev1.Pod{a, b, c, d, e}, diff: 1, want: []string{"c"}},
		{name: "inactive related pods are not counted", related: []*corev1.Pod{a, c, d, gone}, diff: 1, want: []string{"c"}},
		{name: "all of them", related: own, diff: 3, want: []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(own)
			got := podsToDelete(in, tt.related, tt.diff, now)
			if !slices.Equal(names(got), tt.want) {
				t.Errorf("podsToDelete = %v, want %v", names(got), tt.want)
			}
			if !slices.Equal(in, own) {
				t.Error("podsToDelete reordered its input")
			}
		})
	}
}

func TestIsPodAvailable(t *testing.T) {
	tests := []struct {
		name     string
		pod      *corev1.Pod
		minReady int32
		want     bool
		waiting  bool          // untilAvailable's verdict
		wait     time.Duration // and its duration
	}{
		{name: "not ready", pod: testPod("p", notReady()), minReady: 0, want: false},
		{name: "ready, no minReadySeconds", pod: testPod("p", readySince(0)), minReady: 0, want: true},
		{name: "ready long enough", pod: testPod("p", readySince(11*time.Second)), minReady: 10, want: true},
		{name: "ready exactly minReadySeconds is not yet available", pod: testPod("p", readySince(10*time.Second)), minReady: 10, want: false, waiting: true},
		{name: "ready too briefly", pod: testPod("p", readySince(4*time.Second)), minReady: 10, want: false, waiting: true, wait: 6 * time.Second},
		{name: "ready without a transition time never counts", pod: testPod("p", readySince(-1)), minReady: 10, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isPodAvailable(tt.pod, tt.minReady, now); got != tt.want {
				t.Errorf("isPodAvailable = %v, want %v", got, tt.want)
			}
			d, ok := untilAvailable(tt.pod, tt.minReady, now)
			if ok != tt.waiting || d != tt.wait {
				t.Errorf("untilAvailable = %v, %v; want %v", d, ok, tt.wait)
			}
		})
	}
}

func TestSlowStartBatch(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name          string
		count         int
		failFrom      int // calls numbered from 1; 0 never fails
		wantSuccesses int
		wantCalls     int
		wantErr       bool
	}{
		{name: "all succeed in batches 1, 2, 4, 3", count: 10, wantSuccesses: 10, wantCalls: 10},
		{name: "nothing to do", count: 0},
		{name: "the first call fails: one request only", count: 10, failFrom: 1, wantCalls: 1, wantErr: true},
		{name: "failure in the third batch stops there", count: 10, failFrom: 5, wantSuccesses: 4, wantCalls: 7, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			var mu sync.Mutex
			n := 0
			got, err := slowStartBatch(tt.count, 1, func() error {
				calls.Add(1)
				mu.Lock()
				defer mu.Unlock()
				n++
				if tt.failFrom > 0 && n >= tt.failFrom {
					return errBoom
				}
				return nil
			})
			if got != tt.wantSuccesses || int(calls.Load()) != tt.wantCalls || (err != nil) != tt.wantErr {
				t.Errorf("successes %d, calls %d, err %v; want %d, %d, err %v",
					got, calls.Load(), err, tt.wantSuccesses, tt.wantCalls, tt.wantErr)
			}
		})
	}
}
