package deployment

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/intstr"

	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Annotations and labels the controller writes, upstream's keys.
const (
	// RevisionAnnotation records a ReplicaSet's place in the rollout
	// sequence; the Deployment carries its new ReplicaSet's.
	RevisionAnnotation = "deployment.kubernetes.io/revision"
	// RevisionHistoryAnnotation lists the older revisions a ReplicaSet
	// served before a rollback made it new again.
	RevisionHistoryAnnotation = "deployment.kubernetes.io/revision-history"
	// DesiredReplicasAnnotation is the Deployment's spec.replicas when the
	// ReplicaSet was last scaled: it tells a scaling event from a rollout.
	DesiredReplicasAnnotation = "deployment.kubernetes.io/desired-replicas"
	// MaxReplicasAnnotation is spec.replicas+maxSurge when the ReplicaSet was
	// last scaled, the base of proportional scaling.
	MaxReplicasAnnotation = "deployment.kubernetes.io/max-replicas"
	// DefaultDeploymentUniqueLabelKey tells a Deployment's ReplicaSets (and
	// their pods) apart: the pod template's hash.
	DefaultDeploymentUniqueLabelKey = "pod-template-hash"
	// ChangeCauseAnnotation is copied from the Deployment to its new
	// ReplicaSet like every annotation not skipped; rollout history shows it.
	ChangeCauseAnnotation = "kubernetes.io/change-cause"

	lastAppliedConfigAnnotation = "kubectl.kubernetes.io/last-applied-configuration"
	deprecatedRollbackTo        = "deprecated.deployment.rollback.to"

	// maxRevHistoryLengthInChars bounds the revision-history annotation
	// (about 100 revisions).
	maxRevHistoryLengthInChars = 2000
)

// Condition types, statuses and reasons, upstream's.
const (
	condAvailable      = "Available"
	condProgressing    = "Progressing"
	condReplicaFailure = "ReplicaFailure"

	conditionTrue    = "True"
	conditionFalse   = "False"
	conditionUnknown = "Unknown"

	ReplicaSetUpdatedReason    = "ReplicaSetUpdated"
	FailedRSCreateReason       = "ReplicaSetCreateError"
	NewReplicaSetReason        = "NewReplicaSetCreated"
	FoundNewRSReason           = "FoundNewReplicaSet"
	NewRSAvailableReason       = "NewReplicaSetAvailable"
	TimedOutReason             = "ProgressDeadlineExceeded"
	PausedDeployReason         = "DeploymentPaused"
	ResumedDeployReason        = "DeploymentResumed"
	MinimumReplicasAvailable   = "MinimumReplicasAvailable"
	MinimumReplicasUnavailable = "MinimumReplicasUnavailable"

	RollingUpdateDeploymentStrategyType = "RollingUpdate"
	RecreateDeploymentStrategyType      = "Recreate"

	// defaultRevisionHistoryLimit is apps/v1's default, used when the field
	// is unset (the apiserver always sets it; objects built in code may not).
	defaultRevisionHistoryLimit = 10
)

// desiredReplicas is a Deployment's spec.replicas; unset is apps/v1's
// default of 1.
func desiredReplicas(d *appsv1.Deployment) int32 {
	if r := d.GetSpec().Replicas; r != nil {
		return *r
	}
	return 1
}

// rsReplicas is a ReplicaSet's spec.replicas; unset is apps/v1's default of 1.
func rsReplicas(rs *appsv1.ReplicaSet) int32 {
	if rs == nil {
		return 0
	}
	if r := rs.GetSpec().Replicas; r != nil {
		return *r
	}
	return 1
}

// EqualIgnoreHash reports two templates equal but for their
// pod-template-hash label: the hash depends on the encoding, the
// Deployment's template has none.
func EqualIgnoreHash(t1, t2 *corev1.PodTemplateSpec) bool {
	c1, c2 := proto.Clone(t1).(*corev1.PodTemplateSpec), proto.Clone(t2).(*corev1.PodTemplateSpec)
	for _, c := range []*corev1.PodTemplateSpec{c1, c2} {
		if c.GetMetadata() != nil {
			delete(c.Metadata.Labels, DefaultDeploymentUniqueLabelKey)
		}
	}
	return proto.Equal(c1, c2)
}

// toIntStr is the apimachinery form of an int-or-string field.
func toIntStr(x *metav1.IntOrString) *intstr.IntOrString {
	if x == nil {
		return nil
	}
	var v intstr.IntOrString
	if x.IsString() {
		v = intstr.FromString(x.StrVal)
	} else {
		v = intstr.FromInt32(x.IntVal)
	}
	return &v
}

// ResolveFenceposts resolves maxSurge (rounded up) and maxUnavailable
// (rounded down) against desired in one step: when both come to zero,
// maxUnavailable is 1, on the theory that surge might not work due to quota.
func ResolveFenceposts(maxSurge, maxUnavailable *intstr.IntOrString, desired int32) (int32, int32, error) {
	zero := intstr.FromInt32(0)
	surge, err := intstr.GetScaledValueFromIntOrPercent(intstr.ValueOrDefault(maxSurge, zero), int(desired), true)
	if err != nil {
		return 0, 0, err
	}
	unavailable, err := intstr.GetScaledValueFromIntOrPercent(intstr.ValueOrDefault(maxUnavailable, zero), int(desired), false)
	if err != nil {
		return 0, 0, err
	}
	if surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return int32(surge), int32(unavailable), nil
}

// IsRollingUpdate reports the RollingUpdate strategy.
func IsRollingUpdate(d *appsv1.Deployment) bool {
	return d.GetSpec().GetStrategy().GetType() == RollingUpdateDeploymentStrategyType
}

func fenceposts(d *appsv1.Deployment) (int32, int32) {
	ru := d.GetSpec().GetStrategy().GetRollingUpdate()
	// Validation refuses values that do not resolve.
	s, u, _ := ResolveFenceposts(toIntStr(ru.GetMaxSurge()), toIntStr(ru.GetMaxUnavailable()), desiredReplicas(d))
	return s, u
}

// MaxUnavailable is how many pods a rolling Deployment may have
// unavailable, at most its replicas.
func MaxUnavailable(d *appsv1.Deployment) int32 {
	if !IsRollingUpdate(d) || desiredReplicas(d) == 0 {
		return 0
	}
	_, u := fenceposts(d)
	return min(u, desiredReplicas(d))
}

// MaxSurge is how many pods above its replicas a rolling Deployment may run.
func MaxSurge(d *appsv1.Deployment) int32 {
	if !IsRollingUpdate(d) {
		return 0
	}
	s, _ := fenceposts(d)
	return s
}

// NewRSNewReplicas is the size the new ReplicaSet should be scaled to now:
// for RollingUpdate as far up as maxSurge allows but not above replicas; for
// Recreate, replicas.
func NewRSNewReplicas(d *appsv1.Deployment, allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) (int32, error) {
	switch t := d.GetSpec().GetStrategy().GetType(); t {
	case RollingUpdateDeploymentStrategyType:
		maxSurge, err := intstr.GetScaledValueFromIntOrPercent(
			intstr.ValueOrDefault(toIntStr(d.Spec.Strategy.GetRollingUpdate().GetMaxSurge()), intstr.FromInt32(0)),
			int(desiredReplicas(d)), true)
		if err != nil {
			return 0, err
		}
		current := GetReplicaCountForReplicaSets(allRSs)
		maxTotal := desiredReplicas(d) + int32(maxSurge)
		if current >= maxTotal {
			return rsReplicas(newRS), nil
		}
		up := min(maxTotal-current, desiredReplicas(d)-rsReplicas(newRS))
		return rsReplicas(newRS) + up, nil
	case RecreateDeploymentStrategyType:
		return desiredReplicas(d), nil
	default:
		return 0, fmt.Errorf("deployment type %v isn't supported", t)
	}
}

// IsSaturated reports a new ReplicaSet that owns, and both it and the
// Deployment believe owns, all desired replicas, all of them available.
func IsSaturated(d *appsv1.Deployment, rs *appsv1.ReplicaSet) bool {
	if rs == nil {
		return false
	}
	desired, err := strconv.Atoi(rs.GetMetadata().GetAnnotations()[DesiredReplicasAnnotation])
	if err != nil {
		return false
	}
	want := desiredReplicas(d)
	return rsReplicas(rs) == want && int32(desired) == want && rs.GetStatus().GetAvailableReplicas() == want
}

// GetProportion estimates how many replicas rs takes of the
// deploymentReplicasToAdd (negative: removes) still to hand out, from its
// share of the max-replicas it was last sized for.
func GetProportion(rs *appsv1.ReplicaSet, d *appsv1.Deployment, deploymentReplicasToAdd, deploymentReplicasAdded int32) int32 {
	if rs == nil || rsReplicas(rs) == 0 || deploymentReplicasToAdd == 0 || deploymentReplicasToAdd == deploymentReplicasAdded {
		return 0
	}
	fraction := getReplicaSetFraction(rs, d)
	allowed := deploymentReplicasToAdd - deploymentReplicasAdded
	if deploymentReplicasToAdd > 0 {
		// Never add more than is left to add.
		return min(fraction, allowed)
	}
	// Never remove more than is left to remove.
	return max(fraction, allowed)
}

func getReplicaSetFraction(rs *appsv1.ReplicaSet, d *appsv1.Deployment) int32 {
	if desiredReplicas(d) == 0 {
		return -rsReplicas(rs)
	}
	deploymentReplicas := desiredReplicas(d) + MaxSurge(d)
	annotated, ok := getIntFromAnnotation(rs, MaxReplicasAnnotation)
	if !ok || annotated == 0 {
		// Without the annotation the current size is the best guess; the
		// min/max in GetProportion keep us within limits.
		annotated = d.GetStatus().GetReplicas()
	}
	if annotated == 0 {
		return 0
	}
	size := float64(rsReplicas(rs)*deploymentReplicas) / float64(annotated)
	return int32(math.Round(size)) - rsReplicas(rs)
}

func getIntFromAnnotation(rs *appsv1.ReplicaSet, key string) (int32, bool) {
	v, ok := rs.GetMetadata().GetAnnotations()[key]
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, false
	}
	return int32(n), true
}

// GetDesiredReplicasAnnotation is the desired-replicas annotation.
func GetDesiredReplicasAnnotation(rs *appsv1.ReplicaSet) (int32, bool) {
	return getIntFromAnnotation(rs, DesiredReplicasAnnotation)
}

// SetReplicasAnnotations writes desired- and max-replicas; it reports a change.
func SetReplicasAnnotations(rs *appsv1.ReplicaSet, desired, maxReplicas int32) bool {
	a := annotations(rs.Metadata)
	updated := false
	if s := strconv.Itoa(int(desired)); a[DesiredReplicasAnnotation] != s {
		a[DesiredReplicasAnnotation] = s
		updated = true
	}
	if s := strconv.Itoa(int(maxReplicas)); a[MaxReplicasAnnotation] != s {
		a[MaxReplicasAnnotation] = s
		updated = true
	}
	return updated
}

// ReplicasAnnotationsNeedUpdate reports whether SetReplicasAnnotations
// would change anything.
func ReplicasAnnotationsNeedUpdate(rs *appsv1.ReplicaSet, desired, maxReplicas int32) bool {
	a := rs.GetMetadata().GetAnnotations()
	return a[DesiredReplicasAnnotation] != strconv.Itoa(int(desired)) || a[MaxReplicasAnnotation] != strconv.Itoa(int(maxReplicas))
}

func annotations(m *metav1.ObjectMeta) map[string]string {
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	return m.Annotations
}

// Revision is an object's revision annotation, 0 when absent.
func Revision(m *metav1.ObjectMeta) (int64, error) {
	v, ok := m.GetAnnotations()[RevisionAnnotation]
	if !ok {
		return 0, nil
	}
	return strconv.ParseInt(v, 10, 64)
}

// MaxRevision is the highest revision among rss; unparsable ones are skipped.
func MaxRevision(rss []*appsv1.ReplicaSet) int64 {
	var m int64
	for _, rs := range rss {
		if v, err := Revision(rs.GetMetadata()); err == nil && v > m {
			m = v
		}
	}
	return m
}

// SetDeploymentRevision writes the Deployment's revision annotation; it
// reports a change.
func SetDeploymentRevision(d *appsv1.Deployment, revision string) bool {
	a := annotations(d.Metadata)
	if a[RevisionAnnotation] == revision {
		return false
	}
	a[RevisionAnnotation] = revision
	return true
}

var annotationsToSkip = map[string]bool{
	lastAppliedConfigAnnotation: true,
	RevisionAnnotation:          true,
	RevisionHistoryAnnotation:   true,
	DesiredReplicasAnnotation:   true,
	MaxReplicasAnnotation:       true,
	deprecatedRollbackTo:        true,
}

// copyDeploymentAnnotationsToReplicaSet copies every annotation but the
// skipped ones (kubernetes.io/change-cause among those copied); it reports a
// change.
func copyDeploymentAnnotationsToReplicaSet(d *appsv1.Deployment, rs *appsv1.ReplicaSet) bool {
	a := annotations(rs.Metadata)
	changed := false
	for k, v := range d.GetMetadata().GetAnnotations() {
		if annotationsToSkip[k] || a[k] == v {
			continue
		}
		a[k] = v
		changed = true
	}
	return changed
}

// SetNewReplicaSetAnnotations brings the new ReplicaSet's annotations up to
// date: the Deployment's copied, its revision raised to newRevision (the
// revision it had joins revision-history: a rollback), and for a ReplicaSet
// about to be created the replicas annotations. It reports a change.
func SetNewReplicaSetAnnotations(d *appsv1.Deployment, rs *appsv1.ReplicaSet, newRevision string, exists bool, revHistoryLimitInChars int) bool {
	changed := copyDeploymentAnnotationsToReplicaSet(d, rs)
	a := annotations(rs.Metadata)
	oldRevision, ok := a[RevisionAnnotation]
	oldRev, err := strconv.ParseInt(oldRevision, 10, 64)
	if err != nil {
		if oldRevision != "" {
			return false
		}
		oldRev = 0
	}
	newRev, err := strconv.ParseInt(newRevision, 10, 64)
	if err != nil {
		return false
	}
	// Only ever raise: old ReplicaSets deleted since the last sync may make
	// newRevision lower than what the new one already has.
	if oldRev < newRev {
		a[RevisionAnnotation] = newRevision
		changed = true
	}
	if ok && oldRev < newRev {
		history := a[RevisionHistoryAnnotation]
		old := strings.Split(history, ",")
		if len(old[0]) == 0 {
			a[RevisionHistoryAnnotation] = oldRevision
		} else {
			total := len(history) + len(oldRevision) + 1
			start := 0
			for total > revHistoryLimitInChars && start < len(old) {
				total -= len(old[start]) + 1
				start++
			}
			if total <= revHistoryLimitInChars {
				a[RevisionHistoryAnnotation] = strings.Join(append(old[start:], oldRevision), ",")
			}
		}
	}
	if !exists && SetReplicasAnnotations(rs, desiredReplicas(d), desiredReplicas(d)+MaxSurge(d)) {
		changed = true
	}
	return changed
}

// FindNewReplicaSet is the ReplicaSet whose template is the Deployment's;
// the oldest when there are several (upstream #40415).
func FindNewReplicaSet(d *appsv1.Deployment, rss []*appsv1.ReplicaSet) *appsv1.ReplicaSet {
	sorted := append([]*appsv1.ReplicaSet(nil), rss...)
	sort.SliceStable(sorted, byCreationTimestamp(sorted))
	for _, rs := range sorted {
		if EqualIgnoreHash(rs.GetSpec().GetTemplate(), d.GetSpec().GetTemplate()) {
			return rs
		}
	}
	return nil
}

// FindOldReplicaSets is every ReplicaSet but the new one: those with
// replicas, and all.
func FindOldReplicaSets(d *appsv1.Deployment, rss []*appsv1.ReplicaSet) (required, all []*appsv1.ReplicaSet) {
	newRS := FindNewReplicaSet(d, rss)
	for _, rs := range rss {
		if newRS != nil && rs.GetMetadata().GetUid() == newRS.GetMetadata().GetUid() {
			continue
		}
		all = append(all, rs)
		if rsReplicas(rs) != 0 {
			required = append(required, rs)
		}
	}
	return required, all
}

// FindActiveOrLatest is the one ReplicaSet with replicas, or the newest when
// none has any; nil when several have (those scale proportionally).
func FindActiveOrLatest(newRS *appsv1.ReplicaSet, oldRSs []*appsv1.ReplicaSet) *appsv1.ReplicaSet {
	if newRS == nil && len(oldRSs) == 0 {
		return nil
	}
	olds := append([]*appsv1.ReplicaSet(nil), oldRSs...)
	sort.SliceStable(olds, func(i, j int) bool { return byCreationTimestamp(olds)(j, i) })
	active := FilterActiveReplicaSets(append(olds, newRS))
	switch len(active) {
	case 0:
		if newRS != nil {
			return newRS
		}
		return olds[0]
	case 1:
		return active[0]
	default:
		return nil
	}
}

// FilterActiveReplicaSets keeps the ReplicaSets with replicas.
func FilterActiveReplicaSets(rss []*appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	var out []*appsv1.ReplicaSet
	for _, rs := range rss {
		if rs != nil && rsReplicas(rs) > 0 {
			out = append(out, rs)
		}
	}
	return out
}

// GetReplicaCountForReplicaSets sums spec.replicas.
func GetReplicaCountForReplicaSets(rss []*appsv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range rss {
		if rs != nil {
			n += rsReplicas(rs)
		}
	}
	return n
}

// GetActualReplicaCountForReplicaSets sums status.replicas.
func GetActualReplicaCountForReplicaSets(rss []*appsv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range rss {
		n += rs.GetStatus().GetReplicas()
	}
	return n
}

// GetReadyReplicaCountForReplicaSets sums status.readyReplicas.
func GetReadyReplicaCountForReplicaSets(rss []*appsv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range rss {
		n += rs.GetStatus().GetReadyReplicas()
	}
	return n
}

// GetAvailableReplicaCountForReplicaSets sums status.availableReplicas.
func GetAvailableReplicaCountForReplicaSets(rss []*appsv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range rss {
		n += rs.GetStatus().GetAvailableReplicas()
	}
	return n
}

// GetTerminatingReplicaCountForReplicaSets sums status.terminatingReplicas;
// nil when a ReplicaSet its controller has synced does not report it (the
// sum would be a lie). ReplicaSets never synced count as none.
func GetTerminatingReplicaCountForReplicaSets(rss []*appsv1.ReplicaSet) *int32 {
	var n int32
	for _, rs := range rss {
		if rs == nil {
			continue
		}
		var tr *int32
		if st := rs.GetStatus(); st != nil {
			tr = st.TerminatingReplicas
		}
		switch {
		case tr == nil && rs.GetStatus().GetObservedGeneration() == 0:
		case tr == nil:
			return nil
		default:
			n += *tr
		}
	}
	return &n
}

// HasProgressDeadline reports a deadline to surface ProgressDeadlineExceeded
// against; MaxInt32 means none.
func HasProgressDeadline(d *appsv1.Deployment) bool {
	p := d.GetSpec().ProgressDeadlineSeconds
	return p != nil && *p != math.MaxInt32
}

// revisionHistoryLimit is how many old ReplicaSets to keep, and whether
// there is a limit at all (MaxInt32 keeps every one).
func revisionHistoryLimit(d *appsv1.Deployment) (int32, bool) {
	p := d.GetSpec().RevisionHistoryLimit
	if p == nil {
		return defaultRevisionHistoryLimit, true
	}
	return *p, *p != math.MaxInt32
}

// DeploymentComplete: every desired replica updated and available, no old
// pods left, the latest generation observed.
func DeploymentComplete(d *appsv1.Deployment, st *appsv1.DeploymentStatus) bool {
	want := desiredReplicas(d)
	return st.GetUpdatedReplicas() == want &&
		st.GetReplicas() == want &&
		st.GetAvailableReplicas() == want &&
		st.GetObservedGeneration() >= d.GetMetadata().GetGeneration()
}

// DeploymentProgressing reports progress between the Deployment's status and
// newStatus: more updated, fewer old, more ready or more available pods.
func DeploymentProgressing(d *appsv1.Deployment, newStatus *appsv1.DeploymentStatus) bool {
	old := d.GetStatus()
	oldOld := old.GetReplicas() - old.GetUpdatedReplicas()
	newOld := newStatus.GetReplicas() - newStatus.GetUpdatedReplicas()
	return newStatus.GetUpdatedReplicas() > old.GetUpdatedReplicas() ||
		newOld < oldOld ||
		newStatus.GetReadyReplicas() > old.GetReadyReplicas() ||
		newStatus.GetAvailableReplicas() > old.GetAvailableReplicas()
}

// DeploymentTimedOut reports a Progressing condition last updated more than
// progressDeadlineSeconds before now, or one that already says so.
func DeploymentTimedOut(d *appsv1.Deployment, newStatus *appsv1.DeploymentStatus, now time.Time) bool {
	if !HasProgressDeadline(d) {
		return false
	}
	c := GetDeploymentCondition(newStatus, condProgressing)
	if c == nil {
		return false
	}
	// A finished rollout is not re-judged: a resync may come before the
	// cached Deployment shows the new ReplicaSet's condition.
	if c.Reason == NewRSAvailableReason {
		return false
	}
	if c.Reason == TimedOutReason {
		return true
	}
	delta := time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second
	return c.GetLastUpdateTime().AsTime().Add(delta).Before(now)
}

// NewDeploymentCondition is a condition updated and transitioned now.
func NewDeploymentCondition(condType, status, reason, message string, now time.Time) *appsv1.DeploymentCondition {
	return &appsv1.DeploymentCondition{
		Type:               condType,
		Status:             status,
		LastUpdateTime:     metav1.NewTime(now),
		LastTransitionTime: metav1.NewTime(now),
		Reason:             reason,
		Message:            message,
	}
}

// GetDeploymentCondition is the condition of that type; do not modify it.
func GetDeploymentCondition(st *appsv1.DeploymentStatus, condType string) *appsv1.DeploymentCondition {
	for _, c := range st.GetConditions() {
		if c.GetType() == condType {
			return c
		}
	}
	return nil
}

// SetDeploymentCondition puts c in place of the condition of its type,
// unless that has the same status and reason; the transition time stays
// when the status does.
func SetDeploymentCondition(st *appsv1.DeploymentStatus, c *appsv1.DeploymentCondition) {
	cur := GetDeploymentCondition(st, c.Type)
	if cur != nil && cur.Status == c.Status && cur.Reason == c.Reason {
		return
	}
	if cur != nil && cur.Status == c.Status {
		c.LastTransitionTime = cur.LastTransitionTime
	}
	st.Conditions = append(filterOutCondition(st.Conditions, c.Type), c)
}

// RemoveDeploymentCondition drops the condition of that type.
func RemoveDeploymentCondition(st *appsv1.DeploymentStatus, condType string) {
	st.Conditions = filterOutCondition(st.Conditions, condType)
}

func filterOutCondition(cs []*appsv1.DeploymentCondition, condType string) []*appsv1.DeploymentCondition {
	var out []*appsv1.DeploymentCondition
	for _, c := range cs {
		if c.GetType() != condType {
			out = append(out, c)
		}
	}
	return out
}

// ReplicaSetToDeploymentCondition promotes a ReplicaSet's failure condition.
func ReplicaSetToDeploymentCondition(c *appsv1.ReplicaSetCondition) *appsv1.DeploymentCondition {
	return &appsv1.DeploymentCondition{
		Type:               c.GetType(),
		Status:             c.GetStatus(),
		LastTransitionTime: c.GetLastTransitionTime(),
		LastUpdateTime:     c.GetLastTransitionTime(),
		Reason:             c.GetReason(),
		Message:            c.GetMessage(),
	}
}

// byCreationTimestamp orders oldest first, then by name.
func byCreationTimestamp(rss []*appsv1.ReplicaSet) func(i, j int) bool {
	return func(i, j int) bool {
		ti, tj := rss[i].GetMetadata().GetCreationTimestamp().AsTime(), rss[j].GetMetadata().GetCreationTimestamp().AsTime()
		if ti.Equal(tj) {
			return rss[i].GetMetadata().GetName() < rss[j].GetMetadata().GetName()
		}
		return ti.Before(tj)
	}
}

// bySizeOlder orders largest first, the older of equal sizes first (scale
// down the older first).
func bySizeOlder(rss []*appsv1.ReplicaSet) func(i, j int) bool {
	return func(i, j int) bool {
		if rsReplicas(rss[i]) == rsReplicas(rss[j]) {
			return byCreationTimestamp(rss)(i, j)
		}
		return rsReplicas(rss[i]) > rsReplicas(rss[j])
	}
}

// bySizeNewer orders largest first, the newer of equal sizes first (scale
// up the newer first).
func bySizeNewer(rss []*appsv1.ReplicaSet) func(i, j int) bool {
	return func(i, j int) bool {
		if rsReplicas(rss[i]) == rsReplicas(rss[j]) {
			return byCreationTimestamp(rss)(j, i)
		}
		return rsReplicas(rss[i]) > rsReplicas(rss[j])
	}
}

// byRevision orders lowest revision first, then oldest.
func byRevision(rss []*appsv1.ReplicaSet) func(i, j int) bool {
	return func(i, j int) bool {
		ri, err1 := Revision(rss[i].GetMetadata())
		rj, err2 := Revision(rss[j].GetMetadata())
		if err1 != nil || err2 != nil || ri == rj {
			return byCreationTimestamp(rss)(i, j)
		}
		return ri < rj
	}
}
