package deployment

import (
	"context"
	"fmt"
	"sort"

	appsv1 "skiff.dev/proto/api/apps/v1"
)

// rolloutRolling rolls the new template out: the new ReplicaSet up as far as
// maxSurge allows, the old ones down as far as maxUnavailable allows, one
// step per sync.
func (c *Controller) rolloutRolling(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, oldRSs, err := c.getAllReplicaSetsAndSyncRevision(ctx, d, rsList, true)
	if err != nil {
		return err
	}
	allRSs := withNew(oldRSs, newRS)

	scaledUp, err := c.reconcileNewReplicaSet(ctx, allRSs, newRS, d)
	if err != nil {
		return err
	}
	if scaledUp {
		return c.syncRolloutStatus(ctx, allRSs, newRS, d)
	}

	scaledDown, err := c.reconcileOldReplicaSets(ctx, allRSs, FilterActiveReplicaSets(oldRSs), newRS, d)
	if err != nil {
		return err
	}
	if scaledDown {
		return c.syncRolloutStatus(ctx, allRSs, newRS, d)
	}

	if DeploymentComplete(d, d.Status) {
		if err := c.cleanupDeployment(ctx, oldRSs, d); err != nil {
			return err
		}
	}
	return c.syncRolloutStatus(ctx, allRSs, newRS, d)
}

// reconcileNewReplicaSet scales the new ReplicaSet towards spec.replicas:
// down at once, up within maxSurge.
func (c *Controller) reconcileNewReplicaSet(ctx context.Context, allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) (bool, error) {
	desired := desiredReplicas(d)
	switch {
	case rsReplicas(newRS) == desired:
		return false, nil
	case rsReplicas(newRS) > desired:
		scaled, _, err := c.scaleReplicaSetAndRecordEvent(ctx, newRS, desired, d)
		return scaled, err
	}
	n, err := NewRSNewReplicas(d, allRSs, newRS)
	if err != nil {
		return false, err
	}
	scaled, _, err := c.scaleReplicaSetAndRecordEvent(ctx, newRS, n, d)
	return scaled, err
}

// reconcileOldReplicaSets scales old ReplicaSets down as far as
// maxUnavailable allows: their unhealthy replicas first, then healthy ones.
//
// maxScaledDown = allPodsCount - minAvailable - newRSUnavailablePodCount
// counts the new ReplicaSet's unavailable pods as unavailable already, so
// that a crash-looping new template does not make us take old pods away
// (upstream's worked examples with 10 replicas, maxUnavailable 2, maxSurge
// 3: a rollback to a good template scales the bad pods down; a roll-over to
// yet another template starts at 0 and scales old ones down by 5).
func (c *Controller) reconcileOldReplicaSets(ctx context.Context, allRSs, oldRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) (bool, error) {
	if GetReplicaCountForReplicaSets(oldRSs) == 0 {
		return false, nil
	}
	allPodsCount := GetReplicaCountForReplicaSets(allRSs)
	minAvailable := desiredReplicas(d) - MaxUnavailable(d)
	newRSUnavailablePodCount := rsReplicas(newRS) - newRS.GetStatus().GetAvailableReplicas()
	maxScaledDown := allPodsCount - minAvailable - newRSUnavailablePodCount
	if maxScaledDown <= 0 {
		return false, nil
	}

	// Unhealthy replicas first: they would block the rollout and cost no
	// availability (upstream #16737).
	oldRSs, cleanupCount, err := c.cleanupUnhealthyReplicas(ctx, oldRSs, d, maxScaledDown)
	if err != nil {
		return false, err
	}
	scaledDownCount, err := c.scaleDownOldReplicaSetsForRollingUpdate(ctx, withNew(oldRSs, newRS), oldRSs, d)
	if err != nil {
		return false, err
	}
	return cleanupCount+scaledDownCount > 0, nil
}

// cleanupUnhealthyReplicas scales old ReplicaSets down by their unavailable
// replicas, oldest first, up to maxCleanupCount in all; the ReplicaSet
// controller deletes not-ready pods first, so this costs no availability.
func (c *Controller) cleanupUnhealthyReplicas(ctx context.Context, oldRSs []*appsv1.ReplicaSet, d *appsv1.Deployment, maxCleanupCount int32) ([]*appsv1.ReplicaSet, int32, error) {
	sort.SliceStable(oldRSs, byCreationTimestamp(oldRSs))
	total := int32(0)
	for i, rs := range oldRSs {
		if total >= maxCleanupCount {
			break
		}
		replicas, available := rsReplicas(rs), rs.GetStatus().GetAvailableReplicas()
		if replicas == 0 || replicas == available {
			continue
		}
		count := min(maxCleanupCount-total, replicas-available)
		n := replicas - count
		if n > replicas {
			return nil, 0, fmt.Errorf("when cleaning up unhealthy replicas, got invalid request to scale down %s/%s %d -> %d",
				rs.Metadata.GetNamespace(), rs.Metadata.GetName(), replicas, n)
		}
		_, updated, err := c.scaleReplicaSetAndRecordEvent(ctx, rs, n, d)
		if err != nil {
			return nil, total, err
		}
		total += count
		oldRSs[i] = updated
	}
	return oldRSs, total, nil
}

// scaleDownOldReplicaSetsForRollingUpdate scales old ReplicaSets down,
// oldest first, by as many available pods as there are above minAvailable.
func (c *Controller) scaleDownOldReplicaSetsForRollingUpdate(ctx context.Context, allRSs, oldRSs []*appsv1.ReplicaSet, d *appsv1.Deployment) (int32, error) {
	minAvailable := desiredReplicas(d) - MaxUnavailable(d)
	availablePodCount := GetAvailableReplicaCountForReplicaSets(allRSs)
	if availablePodCount <= minAvailable {
		return 0, nil
	}
	sort.SliceStable(oldRSs, byCreationTimestamp(oldRSs))
	total, want := int32(0), availablePodCount-minAvailable
	for _, rs := range oldRSs {
		if total >= want {
			break
		}
		replicas := rsReplicas(rs)
		if replicas == 0 {
			continue
		}
		count := min(replicas, want-total)
		n := replicas - count
		if n > replicas {
			return 0, fmt.Errorf("when scaling down old RS, got invalid request to scale down %s/%s %d -> %d",
				rs.Metadata.GetNamespace(), rs.Metadata.GetName(), replicas, n)
		}
		if _, _, err := c.scaleReplicaSetAndRecordEvent(ctx, rs, n, d); err != nil {
			return total, err
		}
		total += count
	}
	return total, nil
}
