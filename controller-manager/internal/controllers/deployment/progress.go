package deployment

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	appsv1 "skiff.dev/proto/api/apps/v1"
)

// syncRolloutStatus writes the status during a rollout, with the
// Progressing condition judged against progressDeadlineSeconds and the
// ReplicaSets' ReplicaFailure condition promoted.
func (c *Controller) syncRolloutStatus(ctx context.Context, allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) error {
	newStatus := c.calculateStatus(allRSs, newRS, d)
	if !HasProgressDeadline(d) {
		RemoveDeploymentCondition(newStatus, condProgressing)
	}

	// A finished rollout (one ReplicaSet, already reported available) is
	// a resync with no progress to estimate.
	currentCond := GetDeploymentCondition(d.Status, condProgressing)
	isCompleteDeployment := newStatus.Replicas == newStatus.UpdatedReplicas && currentCond != nil && currentCond.Reason == NewRSAvailableReason
	if HasProgressDeadline(d) && !isCompleteDeployment {
		now := c.now()
		switch {
		case DeploymentComplete(d, newStatus):
			msg := fmt.Sprintf("Deployment %q has successfully progressed.", d.Metadata.Name)
			if newRS != nil {
				msg = fmt.Sprintf("ReplicaSet %q has successfully progressed.", newRS.Metadata.Name)
			}
			SetDeploymentCondition(newStatus, NewDeploymentCondition(condProgressing, conditionTrue, NewRSAvailableReason, msg, now))
		case DeploymentProgressing(d, newStatus):
			msg := fmt.Sprintf("Deployment %q is progressing.", d.Metadata.Name)
			if newRS != nil {
				msg = fmt.Sprintf("ReplicaSet %q is progressing.", newRS.Metadata.Name)
			}
			cond := NewDeploymentCondition(condProgressing, conditionTrue, ReplicaSetUpdatedReason, msg, now)
			// Progress moves lastUpdateTime even with the same reason,
			// which SetDeploymentCondition would not do.
			if currentCond != nil {
				if currentCond.Status == conditionTrue {
					cond.LastTransitionTime = currentCond.LastTransitionTime
				}
				RemoveDeploymentCondition(newStatus, condProgressing)
			}
			SetDeploymentCondition(newStatus, cond)
		case DeploymentTimedOut(d, newStatus, now):
			msg := fmt.Sprintf("Deployment %q has timed out progressing.", d.Metadata.Name)
			if newRS != nil {
				msg = fmt.Sprintf("ReplicaSet %q has timed out progressing.", newRS.Metadata.Name)
			}
			SetDeploymentCondition(newStatus, NewDeploymentCondition(condProgressing, conditionFalse, TimedOutReason, msg, now))
		}
	}

	if failures := getReplicaFailures(allRSs, newRS); len(failures) > 0 {
		SetDeploymentCondition(newStatus, failures[0])
	} else {
		RemoveDeploymentCondition(newStatus, condReplicaFailure)
	}

	if proto.Equal(d.Status, newStatus) {
		c.requeueStuckDeployment(d, newStatus)
		return nil
	}
	d.Status = newStatus
	return c.updateStatus(ctx, d)
}

// getReplicaFailures is the new ReplicaSet's ReplicaFailure conditions, or
// else the old ones'.
func getReplicaFailures(allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) []*appsv1.DeploymentCondition {
	var out []*appsv1.DeploymentCondition
	collect := func(rs *appsv1.ReplicaSet) {
		for _, c := range rs.GetStatus().GetConditions() {
			if c.GetType() == condReplicaFailure {
				out = append(out, ReplicaSetToDeploymentCondition(c))
			}
		}
	}
	if newRS != nil {
		collect(newRS)
	}
	if len(out) > 0 {
		return out
	}
	for _, rs := range allRSs {
		if rs != nil {
			collect(rs)
		}
	}
	return out
}

// requeueStuckDeployment schedules the sync that will find a rollout
// without progress past its deadline: nothing else would wake it. It returns
// the delay, 0 for now, -1 for no requeue.
func (c *Controller) requeueStuckDeployment(d *appsv1.Deployment, newStatus *appsv1.DeploymentStatus) time.Duration {
	cur := GetDeploymentCondition(d.Status, condProgressing)
	if !HasProgressDeadline(d) || cur == nil {
		return -1
	}
	if DeploymentComplete(d, newStatus) || cur.Reason == TimedOutReason {
		return -1
	}
	// lastUpdateTime + progressDeadlineSeconds - now.
	after := cur.GetLastUpdateTime().AsTime().Add(time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second).Sub(c.now())
	if after < time.Second {
		c.log.Debug("Queueing up deployment for a progress check now", "deployment", d.Metadata.GetName())
		c.enqueueRateLimited(d)
		return 0
	}
	// A second more, against millisecond skew in AddAfter (upstream #39785).
	c.enqueueAfter(d, after+time.Second)
	return after
}
