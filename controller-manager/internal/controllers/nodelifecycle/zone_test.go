package nodelifecycle

import (
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func readyConds(statuses ...string) []*corev1.NodeCondition {
	var out []*corev1.NodeCondition
	for _, s := range statuses {
		if s == "" {
			out = append(out, nil) // never reported
			continue
		}
		out = append(out, &corev1.NodeCondition{Type: "Ready", Status: s})
	}
	return out
}

// Upstream's TestComputeZoneState cases, and the edges of its threshold.
func TestComputeZoneState(t *testing.T) {
	const T, F, U = condTrue, condFalse, condUnknown
	for _, tc := range []struct {
		name      string
		conds     []*corev1.NodeCondition
		unhealthy int
		want      zoneState
	}{
		{"all ready", readyConds(T, T, T), 0, stateNormal},
		{"none ready", readyConds(F, U, F), 3, stateFullDisruption},
		{"one node, not ready", readyConds(U), 1, stateFullDisruption},
		{"never reported counts as not ready", readyConds("", ""), 2, stateFullDisruption},
		{"two of three down: too few to be partial", readyConds(T, F, U), 2, stateNormal},
		{"three of five down: 60% is over 55%", readyConds(T, T, F, F, U), 3, statePartialDisruption},
		{"three of six down: 50% is under 55%", readyConds(T, T, T, F, F, U), 3, stateNormal},
		{"eleven of twenty down: exactly 55%", append(readyConds(T, T, T, T, T, T, T, T, T), readyConds(F, F, F, F, F, F, F, F, F, F, F)...), 11, statePartialDisruption},
		{"empty zone", nil, 0, stateNormal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unhealthy, state := computeZoneState(tc.conds, 0.55)
			if unhealthy != tc.unhealthy || state != tc.want {
				t.Errorf("computeZoneState = %d, %s; want %d, %s", unhealthy, state, tc.unhealthy, tc.want)
			}
		})
	}
}

func TestZoneKey(t *testing.T) {
	node := func(labels map[string]string) *corev1.Node {
		return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n", Labels: labels}}
	}
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{nil, ""},
		{map[string]string{labelTopologyZone: "a"}, ":\x00:a"},
		{map[string]string{labelTopologyZone: "a", labelTopologyRegion: "r"}, "r:\x00:a"},
		{map[string]string{labelFailureZone: "b", labelFailureRegion: "q"}, "q:\x00:b"},
		{map[string]string{labelTopologyZone: "a", labelFailureZone: "b"}, ":\x00:a"},
	} {
		if got := zoneKey(node(tc.labels)); got != tc.want {
			t.Errorf("zoneKey(%v) = %q, want %q", tc.labels, got, tc.want)
		}
	}
}

func TestEvictionTime(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 1, 0, 0, time.UTC)
	added := now.Add(-10 * time.Second)
	secs := func(s int64) *int64 { return &s }
	unreachable := &corev1.Taint{Key: taintNodeUnreachable, Effect: effectNoExecute}
	notReady := &corev1.Taint{Key: taintNodeNotReady, Effect: effectNoExecute}
	custom := &corev1.Taint{Key: "example.com/maintenance", Value: "yes", Effect: effectNoExecute}
	tol := func(key string, s *int64) *corev1.Toleration {
		return &corev1.Toleration{Key: key, Operator: "Exists", Effect: effectNoExecute, TolerationSeconds: s}
	}
	for _, tc := range []struct {
		name   string
		tols   []*corev1.Toleration
		taints []*corev1.Taint
		at     time.Time
		ok     bool
	}{
		{"not tolerated: now", nil, []*corev1.Taint{unreachable}, now, true},
		{"one of two not tolerated: now", []*corev1.Toleration{tol(taintNodeUnreachable, nil)}, []*corev1.Taint{unreachable, notReady}, now, true},
		{"tolerated 30s from timeAdded", []*corev1.Toleration{tol(taintNodeUnreachable, secs(30))}, []*corev1.Taint{unreachable}, added.Add(30 * time.Second), true},
		{"tolerated 5s, already past", []*corev1.Toleration{tol(taintNodeUnreachable, secs(5))}, []*corev1.Taint{unreachable}, added.Add(5 * time.Second), true},
		{"tolerated forever", []*corev1.Toleration{tol(taintNodeUnreachable, nil)}, []*corev1.Taint{unreachable}, time.Time{}, false},
		{"negative seconds: at once from timeAdded", []*corev1.Toleration{tol(taintNodeUnreachable, secs(-1))}, []*corev1.Taint{unreachable}, added, true},
		{"the least seconds wins", []*corev1.Toleration{tol(taintNodeUnreachable, secs(300)), tol(taintNodeNotReady, secs(60))},
			[]*corev1.Taint{unreachable, notReady}, added.Add(60 * time.Second), true},
		{"forever and bounded: bounded", []*corev1.Toleration{tol(taintNodeUnreachable, nil), tol(taintNodeNotReady, secs(60))},
			[]*corev1.Taint{unreachable, notReady}, added.Add(60 * time.Second), true},
		{"the first matching toleration is used", []*corev1.Toleration{tol("", nil), tol(taintNodeUnreachable, secs(30))},
			[]*corev1.Taint{unreachable}, time.Time{}, false},
		{"Equal needs the value", []*corev1.Toleration{{Key: custom.Key, Operator: "Equal", Value: "no", Effect: effectNoExecute}},
			[]*corev1.Taint{custom}, now, true},
		{"Equal with the value", []*corev1.Toleration{{Key: custom.Key, Value: "yes"}}, []*corev1.Taint{custom}, time.Time{}, false},
		{"a NoSchedule toleration does not count", []*corev1.Toleration{{Key: taintNodeUnreachable, Operator: "Exists", Effect: effectNoSchedule}},
			[]*corev1.Taint{unreachable}, now, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at, ok := evictionTime(tc.tols, tc.taints, func(*corev1.Taint) time.Time { return added }, now)
			if ok != tc.ok || !at.Equal(tc.at) {
				t.Errorf("evictionTime = %v, %v; want %v, %v", at, ok, tc.at, tc.ok)
			}
		})
	}
}
