// Package deployment is the deployment controller of
// skiff-controller-manager (upstream's pkg/controller/deployment): it rolls
// each Deployment's pod template out through ReplicaSets. It writes
// ReplicaSets only; the replicaset controller makes their pods. It watches
// Deployments, ReplicaSets, and Pods (only their deletion, for Recreate).
//
// Kept from upstream:
//
//   - One ReplicaSet per template, named <deployment>-<pod-template-hash>,
//     the hash label on its selector, its template and itself. Orphans the
//     selector matches are adopted, owned ReplicaSets it no longer matches
//     are released (client/controller's RefManager, after a fresh read of
//     the Deployment). A name taken by another template bumps
//     status.collisionCount and the next sync hashes again.
//   - Annotations: deployment.kubernetes.io/revision (max of the old ones
//     plus one on the new ReplicaSet, copied to the Deployment),
//     desired-replicas and max-replicas (spec.replicas, and plus maxSurge,
//     when the ReplicaSet was last sized), revision-history on a ReplicaSet
//     re-used by a rollback; the Deployment's own annotations (so
//     kubernetes.io/change-cause) are copied to its new ReplicaSet, all but
//     last-applied-configuration and the controller's own.
//   - RollingUpdate: maxSurge rounded up, maxUnavailable rounded down, both
//     zero meaning one unavailable; the new ReplicaSet scaled up within
//     replicas+maxSurge, old ones down (unhealthy replicas first) while
//     availableReplicas stays at replicas-maxUnavailable, the new
//     ReplicaSet's unavailable pods counted against it.
//   - Recreate: old ReplicaSets to zero, then no new ReplicaSet until every
//     old pod not Succeeded or Failed is gone.
//   - Scaling during a rollout or while paused: the replicas to add or remove
//     spread over the active ReplicaSets in proportion to their size against
//     their max-replicas. A paused Deployment only scales.
//   - Rollback: apps/v1 has no spec.rollbackTo; `skiffctl rollout undo`
//     writes an old ReplicaSet's template into the Deployment, and the
//     controller finds that ReplicaSet by its template (EqualIgnoreHash),
//     re-uses it and raises its revision.
//   - Conditions: Progressing (NewReplicaSetCreated, FoundNewReplicaSet,
//     ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded,
//     DeploymentPaused, DeploymentResumed, ReplicaSetCreateError) with a
//     requeue for when progressDeadlineSeconds would pass, Available
//     (MinimumReplicasAvailable, MinimumReplicasUnavailable), ReplicaFailure
//     copied from the ReplicaSets. Status (observedGeneration, replicas,
//     updated, ready, available, unavailable, terminating replicas,
//     collisionCount) is written only when it changed.
//   - Old ReplicaSets beyond revisionHistoryLimit (10 when unset) deleted
//     lowest revision first, those at zero replicas in spec and status,
//     observed, and not being deleted.
//   - Events ScalingReplicaSet ("Scaled up replica set %s from 0 to %d",
//     "Scaled up|down replica set %s from %d to %d"), ReplicaSetCreateError,
//     SelectingAll, as upstream's component "deployment-controller".
//
// Differences:
//
//   - The pod-template-hash is upstream's ComputeHash (fnv32a, the collision
//     count as 8 little-endian bytes, rand.SafeEncodeString of the decimal
//     sum) over the template's deterministic protobuf encoding: upstream
//     deep-hash prints Go structs, which protobuf messages have no stable
//     form of. Names therefore differ from upstream's for the same template
//     (nothing outside the cluster relies on them).
//   - Upstream writes the Deployment's revision annotation with UpdateStatus
//     (its status strategy keeps annotations); ours writes status only, so
//     the annotation is a merge patch of its own, guarded by the
//     resourceVersion. After each write of the Deployment the sync carries
//     on from the stored resourceVersion instead of conflicting with itself.
//   - Old ReplicaSets are deleted with UID and resourceVersion
//     preconditions, so that one scaled up since the cache saw it is kept.
//   - Errors scaling old ReplicaSets down are returned (the sync is
//     retried) instead of swallowed.
//
// Left out: spec.rollbackTo and the DeploymentRollback events (not in
// apps/v1), the alpha podReplacementPolicy, and in-place pod updates.
package deployment
