package podautoscaler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fakeMetrics PodMetricsInfo

func (f fakeMetrics) GetResourceMetric(context.Context, string, string, labels.Selector, string) (PodMetricsInfo, time.Time, error) {
	out := PodMetricsInfo{}
	for k, v := range f {
		out[k] = v
	}
	return out, now, nil
}

type podSpec struct {
	phase     string
	ready     bool
	started   time.Duration // ago
	readyFor  time.Duration // ago, the Ready condition's transition
	requestMi int64         // cpu request in millicores
}

func mkPods(specs map[string]podSpec) []*corev1.Pod {
	var out []*corev1.Pod
	for name, s := range specs {
		phase := s.phase
		if phase == "" {
			phase = "Running"
		}
		status := "False"
		if s.ready {
			status = "True"
		}
		started, readyFor := s.started, s.readyFor
		if started == 0 {
			started = time.Hour
		}
		if readyFor == 0 {
			readyFor = 50 * time.Minute
		}
		req := s.requestMi
		if req == 0 {
			req = 1000
		}
		out = append(out, &corev1.Pod{
			Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app",
				Resources: &corev1.ResourceRequirements{Requests: map[string]*metav1.Quantity{"cpu": {String_: fmt.Sprintf("%dm", req)}}}}}},
			Status: &corev1.PodStatus{Phase: phase, StartTime: metav1.NewTime(now.Add(-started)),
				Conditions: []*corev1.PodCondition{{Type: "Ready", Status: status, LastTransitionTime: metav1.NewTime(now.Add(-readyFor))}}},
		})
	}
	return out
}

func usage(milli ...int64) fakeMetrics {
	m := fakeMetrics{}
	for i, v := range milli {
		m[fmt.Sprintf("p%d", i)] = PodMetric{Value: v, Timestamp: now.Add(-10 * time.Second), Window: 15 * time.Second}
	}
	return m
}

func readyPods(n int) map[string]podSpec {
	out := map[string]podSpec{}
	for i := range n {
		out[fmt.Sprintf("p%d", i)] = podSpec{ready: true}
	}
	return out
}

func TestReplicaCalculator(t *testing.T) {
	tol := tolerances{0.1, 0.1}
	cases := []struct {
		name       string
		current    int32
		target     int32 // utilization %
		pods       map[string]podSpec
		metrics    fakeMetrics
		want       int32
		wantUtil   int32
		wantErrSub string
	}{
		{name: "scale up by ratio", current: 3, target: 50, pods: readyPods(3), metrics: usage(900, 900, 900), want: 6, wantUtil: 90},
		{name: "scale down by ratio", current: 4, target: 50, pods: readyPods(4), metrics: usage(250, 250, 250, 250), want: 2, wantUtil: 25},
		{name: "within tolerance keeps size", current: 3, target: 50, pods: readyPods(3), metrics: usage(540, 540, 540), want: 3, wantUtil: 54},
		{name: "just outside tolerance moves", current: 10, target: 50, pods: readyPods(10), metrics: usage(560, 560, 560, 560, 560, 560, 560, 560, 560, 560), want: 12, wantUtil: 56},
		{
			// p2 has no metric: scaling up, it counts as 0; ratio (900+900+0)/3000=60% of 50 → ceil(1.2*3)=4.
			name: "missing pod assumed idle when scaling up", current: 3, target: 50, pods: readyPods(3),
			metrics: usage(900, 900), want: 4, wantUtil: 90,
		},
		{
			// p2 missing: scaling down, it counts as its full request: (100+100+1000)/3000=40% → ratio .8 → ceil(2.4)=3 = current.
			name: "missing pod assumed at 100% when scaling down", current: 3, target: 50, pods: readyPods(3),
			metrics: usage(100, 100), want: 3, wantUtil: 10,
		},
		{
			// p2 is in its CPU initialization and not ready: ignored, then 0 for the scale up.
			name: "unready pod assumed idle when scaling up", current: 3, target: 50,
			pods:    map[string]podSpec{"p0": {ready: true}, "p1": {ready: true}, "p2": {ready: false, started: time.Minute, readyFor: time.Minute}},
			metrics: usage(900, 900, 900), want: 4, wantUtil: 90,
		},
		{
			// Scaling down, unready pods are just left out: 2 ready at 25% → 1.
			name: "unready pod ignored when scaling down", current: 3, target: 50,
			pods:    map[string]podSpec{"p0": {ready: true}, "p1": {ready: true}, "p2": {ready: false, started: time.Minute, readyFor: time.Minute}},
			metrics: usage(250, 250, 900), want: 1, wantUtil: 25,
		},
		{
			name: "pending pods are unready", current: 2, target: 50,
			pods:    map[string]podSpec{"p0": {ready: true}, "p1": {phase: "Pending"}},
			metrics: usage(1000), want: 2, wantUtil: 100,
		},
		{
			name: "failed pods are ignored", current: 2, target: 50,
			pods:    map[string]podSpec{"p0": {ready: true}, "p1": {phase: "Failed"}},
			metrics: usage(1000, 1000), want: 2, wantUtil: 100,
		},
		{name: "no metrics for any pod", current: 2, target: 50, pods: map[string]podSpec{"p0": {phase: "Pending"}}, metrics: usage(500), wantErrSub: "did not receive metrics"},
		{name: "no pods", current: 2, target: 50, pods: nil, metrics: usage(500), wantErrSub: "no pods returned by selector"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pods := mkPods(tc.pods)
			c := &ReplicaCalculator{metrics: tc.metrics, now: func() time.Time { return now },
				pods:                    func(string, labels.Selector) []*corev1.Pod { return pods },
				cpuInitializationPeriod: 5 * time.Minute, delayOfInitialReadinessStatus: 30 * time.Second}
			got, util, _, _, err := c.GetResourceReplicas(context.Background(), tc.current, tc.target, "cpu", tol, "default", labels.Everything(), "")
			if tc.wantErrSub != "" {
				if err == nil || !contains(err.Error(), tc.wantErrSub) {
					t.Fatalf("err = %v, want one with %q", err, tc.wantErrSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || util != tc.wantUtil {
				t.Errorf("replicas %d at %d%%, want %d at %d%%", got, util, tc.want, tc.wantUtil)
			}
		})
	}
}

func TestRawReplicas(t *testing.T) {
	pods := mkPods(readyPods(2))
	c := &ReplicaCalculator{metrics: usage(300, 500), now: func() time.Time { return now },
		pods: func(string, labels.Selector) []*corev1.Pod { return pods }}
	// Average 400m against a 200m target: 2 × 2 = 4.
	got, avg, _, err := c.GetRawResourceReplicas(context.Background(), 2, 200, "cpu", tolerances{0.1, 0.1}, "default", labels.Everything(), "")
	if err != nil || got != 4 || avg != 400 {
		t.Fatalf("raw replicas = %d avg %d (%v), want 4 avg 400", got, avg, err)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0))
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// clock is an injected time the test moves.
type clock struct{ t time.Time }

func (c *clock) now() time.Time       { return c.t }
func (c *clock) step(d time.Duration) { c.t = c.t.Add(d) }
func rules(window int32, policy string, ps ...*autoscalingv2.HPAScalingPolicy) *autoscalingv2.HPAScalingRules {
	return &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: &window, SelectPolicy: &policy, Policies: ps}
}
func pol(typ string, v, period int32) *autoscalingv2.HPAScalingPolicy {
	return &autoscalingv2.HPAScalingPolicy{Type: typ, Value: v, PeriodSeconds: period}
}

func TestBehaviorAndStabilization(t *testing.T) {
	type step struct {
		after    time.Duration // clock advance before this step
		current  int32
		proposed int32
		want     int32
		reason   string // the ScalingLimited reason
	}
	cases := []struct {
		name     string
		behavior *autoscalingv2.HorizontalPodAutoscalerBehavior
		steps    []step
	}{
		{
			name:     "default scale-down window holds the highest recommendation for 300s",
			behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{},
			steps: []step{
				{current: 10, proposed: 10, want: 10, reason: "DesiredWithinRange"},
				{after: 60 * time.Second, current: 10, proposed: 2, want: 10, reason: "DesiredWithinRange"},
				{after: 200 * time.Second, current: 10, proposed: 2, want: 10, reason: "DesiredWithinRange"},
				// 310 s after the recommendation of 10 it ages out.
				{after: 50 * time.Second, current: 10, proposed: 2, want: 2, reason: "DesiredWithinRange"},
			},
		},
		{
			name:     "scale up is immediate by default but limited to max(4 pods, 100%) per 15s",
			behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{},
			steps: []step{
				{current: 2, proposed: 20, want: 6, reason: "ScaleUpLimit"},
				// Within the same 15 s period the 4 pods added count against it.
				{after: 5 * time.Second, current: 6, proposed: 20, want: 6, reason: "ScaleUpLimit"},
				// Next period: max(6+4, 2×6) = 12, capped by maxReplicas 10.
				{after: 15 * time.Second, current: 6, proposed: 20, want: 10, reason: "TooManyReplicas"},
			},
		},
		{
			name: "Pods policy of 1 per 60s on scale down, no window",
			behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleDown: rules(0, "Max", pol("Pods", 1, 60))},
			steps: []step{
				{current: 5, proposed: 1, want: 4, reason: "ScaleDownLimit"},
				{after: 30 * time.Second, current: 4, proposed: 1, want: 4, reason: "ScaleDownLimit"},
				{after: 31 * time.Second, current: 4, proposed: 1, want: 3, reason: "ScaleDownLimit"},
			},
		},
		{
			name: "selectPolicy Min picks the smaller change",
			behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleUp: rules(0, "Min", pol("Pods", 4, 60), pol("Percent", 50, 60))},
			steps: []step{{current: 4, proposed: 40, want: 6, reason: "ScaleUpLimit"}},
		},
		{
			name: "selectPolicy Disabled never scales that way",
			behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleDown: rules(0, "Disabled", pol("Percent", 100, 15))},
			steps: []step{{current: 5, proposed: 1, want: 5, reason: "ScaleDownLimit"}},
		},
		{
			name: "scale-up stabilization window takes the lowest recent recommendation",
			behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleUp: rules(120, "Max", pol("Percent", 900, 15))},
			steps: []step{
				{current: 3, proposed: 3, want: 3, reason: "DesiredWithinRange"},
				{after: 30 * time.Second, current: 3, proposed: 9, want: 3, reason: "DesiredWithinRange"},
				{after: 100 * time.Second, current: 3, proposed: 9, want: 9, reason: "DesiredWithinRange"},
			},
		},
		{
			name:     "maxReplicas caps",
			behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: rules(0, "Max", pol("Percent", 1000, 15))},
			steps:    []step{{current: 5, proposed: 50, want: 10, reason: "TooManyReplicas"}},
		},
		{
			name:     "minReplicas floors",
			behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleDown: rules(0, "Max", pol("Percent", 100, 15))},
			steps:    []step{{current: 5, proposed: 0, want: 1, reason: "TooFewReplicas"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{t: now}
			c := &Controller{now: clk.now, opts: DefaultOptions(), rec: newRecommender(clk.now, 5*time.Minute)}
			hpa := &autoscalingv2.HorizontalPodAutoscaler{Metadata: &metav1.ObjectMeta{Name: "h", Namespace: "default"},
				Spec: &autoscalingv2.HorizontalPodAutoscalerSpec{MaxReplicas: 10, Behavior: tc.behavior}}
			for i, s := range tc.steps {
				clk.step(s.after)
				got := c.normalizeDesiredReplicasWithBehaviors(hpa, "default/h", s.current, s.proposed, 1)
				if got != s.want {
					t.Fatalf("step %d (t+%v): %d→%d proposed gave %d, want %d", i, clk.t.Sub(now), s.current, s.proposed, got, s.want)
				}
				if r := cond(hpa, "ScalingLimited").GetReason(); r != s.reason {
					t.Errorf("step %d: ScalingLimited reason %q, want %q", i, r, s.reason)
				}
				if got != s.current {
					c.rec.storeScaleEvent(c.behavior(hpa), "default/h", s.current, got)
				}
			}
		})
	}
}

func TestNoBehaviorUsesFlagWindowAndDoubling(t *testing.T) {
	clk := &clock{t: now}
	c := &Controller{now: clk.now, opts: DefaultOptions(), rec: newRecommender(clk.now, 5*time.Minute)}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{Spec: &autoscalingv2.HorizontalPodAutoscalerSpec{MaxReplicas: 100}}
	if got := c.normalizeDesiredReplicas(hpa, "k", 3, 50, 1); got != 6 {
		t.Errorf("3→50 without behavior = %d, want 6 (double)", got)
	}
	if cond(hpa, "ScalingLimited").GetReason() != "ScaleUpLimit" {
		t.Errorf("ScalingLimited = %v", cond(hpa, "ScalingLimited"))
	}
	clk.step(time.Minute)
	if got := c.normalizeDesiredReplicas(hpa, "k2", 4, 4, 1); got != 4 {
		t.Errorf("steady = %d, want 4", got)
	}
	clk.step(time.Minute)
	if got := c.normalizeDesiredReplicas(hpa, "k2", 4, 2, 1); got != 4 {
		t.Errorf("scale down within the 5m window = %d, want 4", got)
	}
	if cond(hpa, "AbleToScale").GetReason() != "ScaleDownStabilized" {
		t.Errorf("AbleToScale = %v, want ScaleDownStabilized", cond(hpa, "AbleToScale"))
	}
	clk.step(5 * time.Minute)
	if got := c.normalizeDesiredReplicas(hpa, "k2", 4, 2, 1); got != 2 {
		t.Errorf("scale down after the window = %d, want 2", got)
	}
}

func cond(h *autoscalingv2.HorizontalPodAutoscaler, typ string) *autoscalingv2.HorizontalPodAutoscalerCondition {
	for _, c := range h.GetStatus().GetConditions() {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}
