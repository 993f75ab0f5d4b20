package disruption

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/scheme"
)

var sel = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}

func pod(name string, ready bool, owner *metav1.OwnerReference) *corev1.Pod {
	st := "False"
	if ready {
		st = "True"
	}
	p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: name, Uid: "uid-" + name, Labels: map[string]string{"app": "web"}},
		Spec:   &corev1.PodSpec{Containers: []*corev1.Container{{Name: "c"}}},
		Status: &corev1.PodStatus{Phase: "Running", Conditions: []*corev1.PodCondition{{Type: "Ready", Status: st}}}}
	if owner != nil {
		p.Metadata.OwnerReferences = []*metav1.OwnerReference{owner}
	}
	return p
}

func ctrl(apiVersion, kind, name string) *metav1.OwnerReference {
	t := true
	return &metav1.OwnerReference{ApiVersion: apiVersion, Kind: kind, Name: name, Uid: "uid-" + name, Controller: &t}
}

func budget(name string, minAvailable, maxUnavailable *metav1.IntOrString) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: 1},
		Spec: &policyv1.PodDisruptionBudgetSpec{Selector: sel, MinAvailable: minAvailable, MaxUnavailable: maxUnavailable}}
}

func deployment(replicas int32) (*appsv1.Deployment, *appsv1.ReplicaSet) {
	d := &appsv1.Deployment{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "web", Uid: "uid-web"}, Spec: &appsv1.DeploymentSpec{Replicas: &replicas, Selector: sel}}
	rs := &appsv1.ReplicaSet{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "web-abc", Uid: "uid-web-abc",
		OwnerReferences: []*metav1.OwnerReference{ctrl("apps/v1", "Deployment", "web")}}, Spec: &appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: sel}}
	return d, rs
}

func start(t *testing.T, now func() time.Time, objs ...scheme.Object) (*fake.Clientset, *Controller) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	cc, _ := controllertest.Context(cs, controllers.Options{})
	if now != nil {
		cc.Now = now
	}
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Run(t, cc, c)
	return cs, c.(*Controller)
}

// summary is what `kubectl get pdb -o yaml` would show a user.
func summary(cs *fake.Clientset, name string) string {
	p, err := client.For[*policyv1.PodDisruptionBudget](cs.Client, "ns").Get(context.Background(), name)
	if err != nil {
		return err.Error()
	}
	st := p.GetStatus()
	cond := ""
	for _, c := range st.GetConditions() {
		if c.Type == ConditionDisruptionAllowed {
			cond = c.Status + "/" + c.Reason
			if c.Message != "" {
				cond += ": " + c.Message
			}
		}
	}
	var disrupted []string
	for n := range st.GetDisruptedPods() {
		disrupted = append(disrupted, n)
	}
	return fmt.Sprintf("expected=%d healthy=%d desired=%d allowed=%d gen=%d disrupted=%s %s", st.GetExpectedPods(), st.GetCurrentHealthy(),
		st.GetDesiredHealthy(), st.GetDisruptionsAllowed(), st.GetObservedGeneration(), strings.Join(disrupted, ","), cond)
}

func eventually(t *testing.T, cs *fake.Clientset, name, want string) {
	t.Helper()
	controllertest.Eventually(t, func() (bool, string) {
		got := summary(cs, name)
		return got == want, "status of " + name + ": " + got + "\nwant " + want
	})
}

func TestMaxUnavailableCountsTheDeploymentsScale(t *testing.T) {
	d, rs := deployment(4)
	owner := ctrl("apps/v1", "ReplicaSet", "web-abc")
	// Three of four pods exist and are ready: the fourth is missing, not
	// merely unready, which only the Deployment's scale reveals.
	cs, _ := start(t, nil, d, rs, pod("a", true, owner), pod("b", true, owner), pod("c", true, owner),
		budget("max1", nil, metav1.IntOrStringFromInt(1)),
		budget("half", metav1.IntOrStringFromString("50%"), nil),
		budget("min2", metav1.IntOrStringFromInt(2), nil))
	eventually(t, cs, "max1", "expected=4 healthy=3 desired=3 allowed=0 gen=1 disrupted= False/InsufficientPods")
	eventually(t, cs, "half", "expected=4 healthy=3 desired=2 allowed=1 gen=1 disrupted= True/SufficientPods")
	eventually(t, cs, "min2", "expected=3 healthy=3 desired=2 allowed=1 gen=1 disrupted= True/SufficientPods")

	// The fourth pod arrives ready: one disruption is allowed.
	pods := client.For[*corev1.Pod](cs.Client, "ns")
	created, err := pods.Create(context.Background(), pod("d", true, owner))
	if err != nil {
		t.Fatal(err)
	}
	created.Status = pod("d", true, owner).Status // the kubelet reports it ready
	if _, err := pods.UpdateStatus(context.Background(), created); err != nil {
		t.Fatal(err)
	}
	eventually(t, cs, "max1", "expected=4 healthy=4 desired=3 allowed=1 gen=1 disrupted= True/SufficientPods")
	// A pod being deleted is not healthy.
	if _, err := client.For[*corev1.Pod](cs.Client, "ns").Delete(context.Background(), "a", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, cs, "max1", "expected=4 healthy=3 desired=3 allowed=0 gen=1 disrupted= False/InsufficientPods")
}

func TestStatefulSetAndReplicationControllerScale(t *testing.T) {
	three, two := int32(3), int32(2)
	ss := &appsv1.StatefulSet{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "db", Uid: "uid-db"}, Spec: &appsv1.StatefulSetSpec{Replicas: &three, Selector: sel}}
	rc := &corev1.ReplicationController{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "old", Uid: "uid-old"}, Spec: &corev1.ReplicationControllerSpec{Replicas: &two}}
	cs, _ := start(t, nil, ss, rc, pod("db-0", true, ctrl("apps/v1", "StatefulSet", "db")), pod("old-x", true, ctrl("v1", "ReplicationController", "old")),
		budget("p", nil, metav1.IntOrStringFromString("20%")))
	// 5 expected, 20% of 5 rounded up is 1 unavailable.
	eventually(t, cs, "p", "expected=5 healthy=2 desired=4 allowed=0 gen=1 disrupted= False/InsufficientPods")
}

func TestMissingControllerFailsSafe(t *testing.T) {
	cs, _ := start(t, nil, pod("a", true, ctrl("apps/v1", "ReplicaSet", "gone")), pod("b", true, nil),
		budget("p", metav1.IntOrStringFromString("50%"), nil))
	eventually(t, cs, "p", `expected=0 healthy=0 desired=0 allowed=0 gen=0 disrupted= False/SyncFailed: found no controllers for pod "a"`)
}

func TestDisruptedPodsExpire(t *testing.T) {
	now := time.Now()
	d, rs := deployment(3)
	owner := ctrl("apps/v1", "ReplicaSet", "web-abc")
	p := budget("p", metav1.IntOrStringFromInt(1), nil)
	// b was evicted long ago but never deleted; c a moment before its
	// timeout runs out; a pod evicted and already gone is forgotten too.
	p.Status = &policyv1.PodDisruptionBudgetStatus{DisruptedPods: map[string]*metav1.Time{
		"b":    metav1.NewTime(now.Add(-3 * time.Minute)),
		"c":    metav1.NewTime(now.Add(-DeletionTimeout + 1500*time.Millisecond)),
		"gone": metav1.NewTime(now),
	}}
	cs, _ := start(t, nil, d, rs, pod("a", true, owner), pod("b", true, owner), pod("c", true, owner), p)
	eventually(t, cs, "p", "expected=3 healthy=2 desired=1 allowed=1 gen=1 disrupted=c True/SufficientPods")
	// The budget is synced again when c's entry expires.
	eventually(t, cs, "p", "expected=3 healthy=3 desired=1 allowed=2 gen=1 disrupted= True/SufficientPods")
}

func TestConditionTransitionTimeMovesOnlyOnChange(t *testing.T) {
	st := &policyv1.PodDisruptionBudgetStatus{}
	t0 := time.Unix(1000, 0)
	setCondition(st, "True", ReasonSufficientPods, "", t0)
	before := proto.Clone(st.Conditions[0]).(*metav1.Condition)
	setCondition(st, "True", ReasonSufficientPods, "", t0.Add(time.Minute))
	if !proto.Equal(before, st.Conditions[0]) {
		t.Errorf("an unchanged condition moved: %v", st.Conditions[0])
	}
	setCondition(st, "False", ReasonInsufficientPods, "", t0.Add(time.Minute))
	if got := st.Conditions[0].LastTransitionTime.AsTime(); !got.Equal(t0.Add(time.Minute)) || len(st.Conditions) != 1 {
		t.Errorf("transition at %v, conditions %v", got, st.Conditions)
	}
}
