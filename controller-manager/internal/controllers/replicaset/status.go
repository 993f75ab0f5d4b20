package replicaset

import (
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// replicaFailure is the condition a ReplicaSet carries while creating or
// deleting pods fails (upstream's ReplicaSetReplicaFailure).
const replicaFailure = "ReplicaFailure"

// Reasons of events and of the ReplicaFailure condition, as upstream's
// controller package spells them.
const (
	failedCreateReason     = "FailedCreate"
	successfulCreateReason = "SuccessfulCreate"
	failedDeleteReason     = "FailedDelete"
	successfulDeleteReason = "SuccessfulDelete"
)

// calculateStatus is upstream's calculateStatus: the status the ReplicaSet
// should have given its active and terminating pods and the outcome of
// manageReplicas. It returns a new status; rs is not modified.
// countTerminating is false for kinds without status.terminatingReplicas.
func calculateStatus(rs *appsv1.ReplicaSet, active, terminating []*corev1.Pod, countTerminating bool, manageErr error, now time.Time) *appsv1.ReplicaSetStatus {
	st := proto.Clone(rs.GetStatus()).(*appsv1.ReplicaSetStatus)
	if st == nil {
		st = &appsv1.ReplicaSetStatus{}
	}
	// The template's labels are a superset of the selector, so every fully
	// labeled pod is among the selected ones.
	template := labels.SelectorFromSet(rs.GetSpec().GetTemplate().GetMetadata().GetLabels())
	var fullyLabeled, ready, available int32
	for _, p := range active {
		if template.Matches(labels.Set(p.GetMetadata().GetLabels())) {
			fullyLabeled++
		}
		if isPodReady(p) {
			ready++
			if isPodAvailable(p, rs.GetSpec().GetMinReadySeconds(), now) {
				available++
			}
		}
	}

	failure := getCondition(st, replicaFailure)
	switch {
	case manageErr != nil && failure == nil:
		var reason string
		if diff := len(active) - int(replicas(rs)); diff < 0 {
			reason = failedCreateReason
		} else if diff > 0 {
			reason = failedDeleteReason
		}
		setCondition(st, &appsv1.ReplicaSetCondition{
			Type: replicaFailure, Status: "True", Reason: reason, Message: manageErr.Error(),
			LastTransitionTime: metav1.NewTime(now),
		})
	case manageErr == nil && failure != nil:
		removeCondition(st, replicaFailure)
	}

	st.Replicas = int32(len(active))
	st.FullyLabeledReplicas = fullyLabeled
	st.ReadyReplicas = ready
	st.AvailableReplicas = available
	if countTerminating {
		st.TerminatingReplicas = proto.Int32(int32(len(terminating)))
	} else {
		st.TerminatingReplicas = nil
	}
	return st
}

// replicas is spec.replicas; the apiserver defaults it to 1.
func replicas(rs *appsv1.ReplicaSet) int32 {
	if r := rs.GetSpec().Replicas; r != nil {
		return *r
	}
	return 1
}

func getCondition(st *appsv1.ReplicaSetStatus, t string) *appsv1.ReplicaSetCondition {
	for _, c := range st.GetConditions() {
		if c.GetType() == t {
			return c
		}
	}
	return nil
}

// setCondition adds or replaces a condition; one already there with the
// same status and reason is kept, with its transition time.
func setCondition(st *appsv1.ReplicaSetStatus, c *appsv1.ReplicaSetCondition) {
	if cur := getCondition(st, c.Type); cur != nil && cur.Status == c.Status && cur.Reason == c.Reason {
		return
	}
	removeCondition(st, c.Type)
	st.Conditions = append(st.Conditions, c)
}

func removeCondition(st *appsv1.ReplicaSetStatus, t string) {
	var out []*appsv1.ReplicaSetCondition
	for _, c := range st.Conditions {
		if c.GetType() != t {
			out = append(out, c)
		}
	}
	st.Conditions = out
}

// statusUnchanged reports whether writing st (with observedGeneration set
// to the object's generation) would change nothing: the steady state, which
// must not cost a write.
func statusUnchanged(rs *appsv1.ReplicaSet, st *appsv1.ReplicaSetStatus) bool {
	want := proto.Clone(st).(*appsv1.ReplicaSetStatus)
	want.ObservedGeneration = rs.GetMetadata().GetGeneration()
	cur := rs.GetStatus()
	if cur == nil {
		cur = &appsv1.ReplicaSetStatus{}
	}
	return proto.Equal(cur, want)
}
