package deployment

import (
	"fmt"
	"math"
	"skiff.dev/client/controller"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func template(image string, labels map[string]string) *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{
		Metadata: &metav1.ObjectMeta{Labels: labels},
		Spec:     &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app", Image: image}}},
	}
}

// rollingDeployment is a RollingUpdate Deployment with counts for its
// fenceposts.
func rollingDeployment(replicas int32, maxSurge, maxUnavailable *metav1.IntOrString) *appsv1.Deployment {
	return &appsv1.Deployment{
		Metadata: &metav1.ObjectMeta{Name: "foo", Namespace: "default"},
		Spec: &appsv1.DeploymentSpec{
			Replicas: ptr(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "foo"}},
			Template: template("img:1", map[string]string{"app": "foo"}),
			Strategy: &appsv1.DeploymentStrategy{
				Type:          RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: maxSurge, MaxUnavailable: maxUnavailable},
			},
		},
	}
}

func replicaSet(name string, replicas int32, created time.Time) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, CreationTimestamp: metav1.NewTime(created)},
		Spec:     &appsv1.ReplicaSetSpec{Replicas: ptr(replicas), Template: template("img:"+name, nil)},
		Status:   &appsv1.ReplicaSetStatus{},
	}
}

func TestResolveFenceposts(t *testing.T) {
	tests := []struct {
		maxSurge, maxUnavailable       *string
		desired                        int32
		expectSurge, expectUnavailable int32
		expectError                    bool
	}{
		{ptr("0%"), ptr("0%"), 0, 0, 1, false},
		{ptr("39%"), ptr("39%"), 10, 4, 3, false},
		{ptr("oops"), ptr("39%"), 10, 0, 0, true},
		{ptr("55%"), ptr("urg"), 10, 0, 0, true},
		{nil, ptr("39%"), 10, 0, 3, false},
		{ptr("39%"), nil, 10, 4, 0, false},
		{nil, nil, 10, 0, 1, false},
		// Percentages: surge rounds up, unavailable down.
		{ptr("25%"), ptr("25%"), 3, 1, 0, false},
		{ptr("1%"), ptr("1%"), 2, 1, 0, false},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var s, u *intstr.IntOrString
			if tt.maxSurge != nil {
				s = ptr(intstr.FromString(*tt.maxSurge))
			}
			if tt.maxUnavailable != nil {
				u = ptr(intstr.FromString(*tt.maxUnavailable))
			}
			surge, unavail, err := ResolveFenceposts(s, u, tt.desired)
			if (err != nil) != tt.expectError {
				t.Fatalf("err = %v, want error %v", err, tt.expectError)
			}
			if surge != tt.expectSurge || unavail != tt.expectUnavailable {
				t.Errorf("got %d:%d, want %d:%d", surge, unavail, tt.expectSurge, tt.expectUnavailable)
			}
		})
	}
	// Counts are taken as they are.
	surge, unavail, err := ResolveFenceposts(ptr(intstr.FromInt32(3)), ptr(intstr.FromInt32(2)), 10)
	if err != nil || surge != 3 || unavail != 2 {
		t.Errorf("counts: got %d:%d %v, want 3:2", surge, unavail, err)
	}
}

func TestNewRSNewReplicas(t *testing.T) {
	tests := []struct {
		name          string
		strategy      string
		depReplicas   int32
		newRSReplicas int32
		maxSurge      int32
		expected      int32
	}{
		{"can not scale up - to newRSReplicas", RollingUpdateDeploymentStrategyType, 1, 5, 1, 5},
		{"scale up - to depReplicas", RollingUpdateDeploymentStrategyType, 6, 2, 10, 6},
		{"recreate - to depReplicas", RecreateDeploymentStrategyType, 3, 1, 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := rollingDeployment(tt.depReplicas, metav1.IntOrStringFromInt(tt.maxSurge), metav1.IntOrStringFromInt(1))
			d.Spec.Strategy.Type = tt.strategy
			newRS := replicaSet("new", tt.newRSReplicas, time.Unix(0, 0))
			rs5 := replicaSet("rs5", 5, time.Unix(0, 0))
			got, err := NewRSNewReplicas(d, []*appsv1.ReplicaSet{rs5}, newRS)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.expected {
				t.Errorf("got %d, want %d", got, tt.expected)
			}
		})
	}
	d := rollingDeployment(1, nil, nil)
	d.Spec.Strategy.Type = "Canary"
	if _, err := NewRSNewReplicas(d, nil, replicaSet("new", 0, time.Unix(0, 0))); err == nil {
		t.Error("an unknown strategy is an error")
	}
}

func TestMaxUnavailable(t *testing.T) {
	tests := []struct {
		name     string
		d        *appsv1.Deployment
		expected int32
	}{
		{"less than replicas", rollingDeployment(10, metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(5)), 5},
		{"equal replicas", rollingDeployment(10, metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(10)), 10},
		{"greater than replicas", rollingDeployment(5, metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(10)), 5},
		{"replicas is 0", rollingDeployment(0, metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(10)), 0},
		{"Recreate", &appsv1.Deployment{Spec: &appsv1.DeploymentSpec{Strategy: &appsv1.DeploymentStrategy{Type: RecreateDeploymentStrategyType}}}, 0},
		{"percent less than replicas", rollingDeployment(10, metav1.IntOrStringFromInt(1), metav1.IntOrStringFromString("50%")), 5},
		{"percent equal replicas", rollingDeployment(10, metav1.IntOrStringFromInt(1), metav1.IntOrStringFromString("100%")), 10},
		{"percent greater than replicas", rollingDeployment(5, metav1.IntOrStringFromInt(1), metav1.IntOrStringFromString("100%")), 5},
		{"both zero resolves to one", rollingDeployment(10, metav1.IntOrStringFromInt(0), metav1.IntOrStringFromInt(0)), 1},
		{"percent rounds down", rollingDeployment(3, metav1.IntOrStringFromString("25%"), metav1.IntOrStringFromString("50%")), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MaxUnavailable(tt.d); got != tt.expected {
				t.Errorf("got %d, want %d", got, tt.expected)
			}
		})
	}
}

func TestMaxSurge(t *testing.T) {
	tests := []struct {
		name     string
		d        *appsv1.Deployment
		expected int32
	}{
		{"count", rollingDeployment(10, metav1.IntOrStringFromInt(3), metav1.IntOrStringFromInt(0)), 3},
		{"percent rounds up", rollingDeployment(10, metav1.IntOrStringFromString("25%"), metav1.IntOrStringFromInt(0)), 3},
		{"default 25% of 1", rollingDeployment(1, metav1.IntOrStringFromString("25%"), metav1.IntOrStringFromString("25%")), 1},
		{"unset", rollingDeployment(10, nil, metav1.IntOrStringFromInt(1)), 0},
		{"Recreate", &appsv1.Deployment{Spec: &appsv1.DeploymentSpec{Replicas: ptr(int32(10)), Strategy: &appsv1.DeploymentStrategy{Type: RecreateDeploymentStrategyType}}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MaxSurge(tt.d); got != tt.expected {
				t.Errorf("got %d, want %d", got, tt.expected)
			}
		})
	}
}

func TestGetProportion(t *testing.T) {
	withMax := func(rs *appsv1.ReplicaSet, maxReplicas string) *appsv1.ReplicaSet {
		rs.Metadata.Annotations = map[string]string{MaxReplicasAnnotation: maxReplicas}
		return rs
	}
	tests := []struct {
		name           string
		rs             *appsv1.ReplicaSet
		replicas       int32 // the Deployment's, maxSurge 3
		toAdd, added   int32
		wantProportion int32
	}{
		// 10 -> 20 with surge 3: a ReplicaSet with 5 of 13 gets round(5*23/13)-5 = 4.
		{"scale up share", withMax(replicaSet("a", 5, time.Unix(0, 0)), "13"), 20, 10, 0, 4},
		{"scale up capped by what is left", withMax(replicaSet("a", 5, time.Unix(0, 0)), "13"), 20, 10, 8, 2},
		// 10 -> 5: round(5*8/13)-5 = -2.
		{"scale down share", withMax(replicaSet("a", 5, time.Unix(0, 0)), "13"), 5, -5, 0, -2},
		{"scale down capped", withMax(replicaSet("a", 5, time.Unix(0, 0)), "13"), 5, -5, -4, -1},
		{"to zero takes all", withMax(replicaSet("a", 5, time.Unix(0, 0)), "13"), 0, -8, 0, -5},
		{"empty ReplicaSet gets nothing", withMax(replicaSet("a", 0, time.Unix(0, 0)), "13"), 20, 10, 0, 0},
		{"nothing to add", withMax(replicaSet("a", 5, time.Unix(0, 0)), "13"), 20, 0, 0, 0},
		{"all added", withMax(replicaSet("a", 5, time.Unix(0, 0)), "13"), 20, 4, 4, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := rollingDeployment(tt.replicas, metav1.IntOrStringFromInt(3), metav1.IntOrStringFromInt(1))
			if got := GetProportion(tt.rs, d, tt.toAdd, tt.added); got != tt.wantProportion {
				t.Errorf("got %d, want %d", got, tt.wantProportion)
			}
		})
	}
}

func TestDeploymentComplete(t *testing.T) {
	deployment := func(desired, current, updated, available int32) (*appsv1.Deployment, *appsv1.DeploymentStatus) {
		d := rollingDeployment(desired, metav1.IntOrStringFromInt(0), metav1.IntOrStringFromInt(1))
		return d, &appsv1.DeploymentStatus{Replicas: current, UpdatedReplicas: updated, AvailableReplicas: available}
	}
	tests := []struct {
		name string
		d    [4]int32
		want bool
	}{
		{"not all available", [4]int32{5, 5, 5, 4}, false},
		{"complete", [4]int32{5, 5, 5, 5}, true},
		{"not all updated", [4]int32{5, 5, 4, 5}, false},
		{"old pods still running", [4]int32{1, 2, 1, 1}, false},
		{"one replica never comes up", [4]int32{1, 1, 1, 0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, st := deployment(tt.d[0], tt.d[1], tt.d[2], tt.d[3])
			if got := DeploymentComplete(d, st); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	d, st := deployment(1, 1, 1, 1)
	d.Metadata.Generation = 2
	st.ObservedGeneration = 1
	if DeploymentComplete(d, st) {
		t.Error("a generation not yet observed is not complete")
	}
}

func TestDeploymentProgressing(t *testing.T) {
	st := func(current, updated, ready, available int32) *appsv1.DeploymentStatus {
		return &appsv1.DeploymentStatus{Replicas: current, UpdatedReplicas: updated, ReadyReplicas: ready, AvailableReplicas: available}
	}
	tests := []struct {
		name     string
		old, new *appsv1.DeploymentStatus
		want     bool
	}{
		{"updated pods", st(10, 4, 4, 4), st(10, 6, 4, 4), true},
		{"not progressing", st(10, 4, 4, 4), st(10, 4, 4, 4), false},
		{"old pods removed", st(10, 4, 6, 6), st(8, 4, 6, 6), true},
		{"fewer new pods", st(10, 7, 3, 3), st(10, 6, 3, 3), false},
		{"fewer overall but more new", st(10, 4, 7, 7), st(8, 8, 5, 5), true},
		{"more ready", st(10, 10, 9, 8), st(10, 10, 10, 8), true},
		{"more available", st(10, 10, 10, 9), st(10, 10, 10, 10), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DeploymentProgressing(&appsv1.Deployment{Status: tt.old}, tt.new); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDeploymentTimedOut(t *testing.T) {
	at := func(min, sec int) time.Time { return time.Date(2016, 1, 1, 0, min, sec, 0, time.UTC) }
	deployment := func(reason string, pds *int32, from time.Time) *appsv1.Deployment {
		return &appsv1.Deployment{
			Spec: &appsv1.DeploymentSpec{ProgressDeadlineSeconds: pds},
			Status: &appsv1.DeploymentStatus{Conditions: []*appsv1.DeploymentCondition{{
				Type: condProgressing, Status: conditionTrue, Reason: reason, LastUpdateTime: metav1.NewTime(from)}}},
		}
	}
	tests := []struct {
		name string
		d    *appsv1.Deployment
		now  time.Time
		want bool
	}{
		{"no deadline", deployment("", nil, at(1, 9)), at(1, 20), false},
		{"infinite deadline", deployment("", ptr(int32(math.MaxInt32)), at(1, 9)), at(1, 20), false},
		{"10s deadline, 11s since", deployment("", ptr(int32(10)), at(1, 9)), at(1, 20), true},
		{"10s deadline, 9s since", deployment("", ptr(int32(10)), at(1, 11)), at(1, 20), false},
		{"previous rollout complete", deployment(NewRSAvailableReason, ptr(int32(10)), at(0, 0)), at(1, 20), false},
		{"already timed out", deployment(TimedOutReason, ptr(int32(600)), at(1, 19)), at(1, 20), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DeploymentTimedOut(tt.d, tt.d.Status, tt.now); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSetNewReplicaSetAnnotations(t *testing.T) {
	d := rollingDeployment(4, metav1.IntOrStringFromInt(1), metav1.IntOrStringFromInt(1))
	d.Metadata.Annotations = map[string]string{
		ChangeCauseAnnotation:       "skiffctl set image",
		lastAppliedConfigAnnotation: "{}",
		RevisionAnnotation:          "7",
		"team":                      "web",
	}

	rs := replicaSet("new", 0, time.Unix(0, 0))
	if !SetNewReplicaSetAnnotations(d, rs, "3", false, maxRevHistoryLengthInChars) {
		t.Fatal("a new ReplicaSet's annotations change")
	}
	want := map[string]string{
		ChangeCauseAnnotation:     "skiffctl set image",
		"team":                    "web",
		RevisionAnnotation:        "3",
		DesiredReplicasAnnotation: "4",
		MaxReplicasAnnotation:     "5",
	}
	if fmt.Sprint(rs.Metadata.Annotations) != fmt.Sprint(want) {
		t.Errorf("annotations = %v, want %v", rs.Metadata.Annotations, want)
	}
	if SetNewReplicaSetAnnotations(d, rs, "3", true, maxRevHistoryLengthInChars) {
		t.Error("a second call changes nothing")
	}
	if SetNewReplicaSetAnnotations(d, rs, "2", true, maxRevHistoryLengthInChars) || rs.Metadata.Annotations[RevisionAnnotation] != "3" {
		t.Error("a revision is never lowered")
	}

	// A rollback: the re-used ReplicaSet remembers the revisions it had.
	if !SetNewReplicaSetAnnotations(d, rs, "5", true, maxRevHistoryLengthInChars) {
		t.Fatal("raising the revision is a change")
	}
	SetNewReplicaSetAnnotations(d, rs, "8", true, maxRevHistoryLengthInChars)
	if got := rs.Metadata.Annotations[RevisionAnnotation]; got != "8" {
		t.Errorf("revision = %s, want 8", got)
	}
	if got := rs.Metadata.Annotations[RevisionHistoryAnnotation]; got != "3,5" {
		t.Errorf("revision-history = %q, want 3,5", got)
	}
	// The history is bounded, oldest entries dropped first.
	SetNewReplicaSetAnnotations(d, rs, "9", true, 4)
	if got := rs.Metadata.Annotations[RevisionHistoryAnnotation]; got != "5,8" {
		t.Errorf("bounded revision-history = %q, want 5,8", got)
	}
}

func TestComputeHash(t *testing.T) {
	t1 := template("img:1", map[string]string{"app": "foo"})
	h := controller.ComputeHash(t1, nil)
	if h != controller.ComputeHash(template("img:1", map[string]string{"app": "foo"}), nil) {
		t.Error("equal templates hash alike")
	}
	if h == controller.ComputeHash(template("img:2", map[string]string{"app": "foo"}), nil) {
		t.Error("different templates hash apart")
	}
	if h == controller.ComputeHash(t1, ptr(int32(1))) || controller.ComputeHash(t1, ptr(int32(1))) == controller.ComputeHash(t1, ptr(int32(2))) {
		t.Error("the collision count changes the hash")
	}
	for _, c := range h {
		if !((c >= 'b' && c <= 'z') || (c >= '2' && c <= '9')) || c == 'e' || c == 'a' || c == 'i' || c == 'o' || c == 'u' {
			t.Fatalf("hash %q is not rand.SafeEncodeString's alphabet", h)
		}
	}
}

func TestEqualIgnoreHash(t *testing.T) {
	tests := []struct {
		name string
		a, b *corev1.PodTemplateSpec
		want bool
	}{
		{"same", template("i", map[string]string{"a": "b"}), template("i", map[string]string{"a": "b"}), true},
		{"hash values differ", template("i", map[string]string{"a": "b", DefaultDeploymentUniqueLabelKey: "x"}),
			template("i", map[string]string{"a": "b", DefaultDeploymentUniqueLabelKey: "y"}), true},
		{"hash on one side", template("i", map[string]string{"a": "b", DefaultDeploymentUniqueLabelKey: "x"}),
			template("i", map[string]string{"a": "b"}), true},
		{"other label differs", template("i", map[string]string{"a": "b"}), template("i", map[string]string{"a": "c"}), false},
		{"spec differs", template("i", nil), template("j", nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := fmt.Sprint(tt.a.Metadata.Labels)
			if got := EqualIgnoreHash(tt.a, tt.b); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if fmt.Sprint(tt.a.Metadata.Labels) != labels {
				t.Error("EqualIgnoreHash modified its argument")
			}
		})
	}
}

func TestFindNewAndOldReplicaSets(t *testing.T) {
	d := rollingDeployment(3, nil, nil)
	older := replicaSet("older", 1, time.Unix(100, 0))
	older.Spec.Template = template("img:1", map[string]string{"app": "foo", DefaultDeploymentUniqueLabelKey: "h1"})
	newer := replicaSet("newer", 1, time.Unix(200, 0))
	newer.Spec.Template = template("img:1", map[string]string{"app": "foo", DefaultDeploymentUniqueLabelKey: "h2"})
	old := replicaSet("old", 2, time.Unix(50, 0))
	empty := replicaSet("empty", 0, time.Unix(10, 0))

	if got := FindNewReplicaSet(d, []*appsv1.ReplicaSet{newer, old, older}); got != older {
		t.Errorf("new = %v, want the oldest with the template", got.GetMetadata().GetName())
	}
	required, all := FindOldReplicaSets(d, []*appsv1.ReplicaSet{newer, old, older, empty})
	if len(required) != 2 || len(all) != 3 {
		t.Errorf("required %d all %d, want 2 and 3", len(required), len(all))
	}
	if FindNewReplicaSet(d, []*appsv1.ReplicaSet{old}) != nil {
		t.Error("no ReplicaSet has the template")
	}
}

func TestFindActiveOrLatest(t *testing.T) {
	a := replicaSet("a", 0, time.Unix(1, 0))
	b := replicaSet("b", 0, time.Unix(2, 0))
	c := replicaSet("c", 3, time.Unix(3, 0))
	n := replicaSet("n", 0, time.Unix(4, 0))
	if got := FindActiveOrLatest(nil, []*appsv1.ReplicaSet{a, b}); got != b {
		t.Errorf("none active: got %s, want the newest old", got.GetMetadata().GetName())
	}
	if got := FindActiveOrLatest(n, []*appsv1.ReplicaSet{a, b}); got != n {
		t.Errorf("none active: got %s, want the new one", got.GetMetadata().GetName())
	}
	if got := FindActiveOrLatest(n, []*appsv1.ReplicaSet{a, c}); got != c {
		t.Errorf("one active: got %s", got.GetMetadata().GetName())
	}
	n.Spec.Replicas = ptr(int32(1))
	if got := FindActiveOrLatest(n, []*appsv1.ReplicaSet{a, c}); got != nil {
		t.Errorf("two active: got %s, want nil", got.GetMetadata().GetName())
	}
}

func TestGetTerminatingReplicaCount(t *testing.T) {
	synced := func(term *int32) *appsv1.ReplicaSet {
		rs := replicaSet("x", 1, time.Unix(0, 0))
		rs.Status = &appsv1.ReplicaSetStatus{ObservedGeneration: 1, TerminatingReplicas: term}
		return rs
	}
	never := replicaSet("never", 1, time.Unix(0, 0))
	tests := []struct {
		name string
		rss  []*appsv1.ReplicaSet
		want *int32
	}{
		{"sum", []*appsv1.ReplicaSet{synced(ptr(int32(1))), synced(ptr(int32(2)))}, ptr(int32(3))},
		{"never synced counts none", []*appsv1.ReplicaSet{synced(ptr(int32(1))), never}, ptr(int32(1))},
		{"synced without a count", []*appsv1.ReplicaSet{synced(ptr(int32(1))), synced(nil)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := GetTerminatingReplicaCountForReplicaSets(tt.rss)
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSetDeploymentCondition(t *testing.T) {
	t0, t1 := time.Unix(100, 0), time.Unix(200, 0)
	st := &appsv1.DeploymentStatus{}
	SetDeploymentCondition(st, NewDeploymentCondition(condProgressing, conditionTrue, NewReplicaSetReason, "a", t0))
	SetDeploymentCondition(st, NewDeploymentCondition(condAvailable, conditionFalse, MinimumReplicasUnavailable, "b", t0))
	// Same status and reason: kept as it was.
	SetDeploymentCondition(st, NewDeploymentCondition(condProgressing, conditionTrue, NewReplicaSetReason, "changed", t1))
	if c := GetDeploymentCondition(st, condProgressing); c.Message != "a" || len(st.Conditions) != 2 {
		t.Errorf("same reason overwrote: %v", st.Conditions)
	}
	// Same status, new reason: the transition time stays.
	SetDeploymentCondition(st, NewDeploymentCondition(condProgressing, conditionTrue, ReplicaSetUpdatedReason, "c", t1))
	c := GetDeploymentCondition(st, condProgressing)
	if c.Reason != ReplicaSetUpdatedReason || !c.LastTransitionTime.AsTime().Equal(t0) || !c.LastUpdateTime.AsTime().Equal(t1) {
		t.Errorf("condition = %v", c)
	}
	// New status: a transition.
	SetDeploymentCondition(st, NewDeploymentCondition(condProgressing, conditionFalse, TimedOutReason, "d", t1))
	if c := GetDeploymentCondition(st, condProgressing); !c.LastTransitionTime.AsTime().Equal(t1) {
		t.Errorf("transition time = %v, want %v", c.LastTransitionTime.AsTime(), t1)
	}
	RemoveDeploymentCondition(st, condProgressing)
	if GetDeploymentCondition(st, condProgressing) != nil || GetDeploymentCondition(st, condAvailable) == nil {
		t.Errorf("remove: %v", st.Conditions)
	}
}
