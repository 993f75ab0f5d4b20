package replicaset

import (
	"math"
	"sort"
	"strconv"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
)

// podDeletionCostAnnotation lets a user say which pods of a ReplicaSet to
// delete first on scale down: lower cost goes first (upstream's
// controller.kubernetes.io/pod-deletion-cost, on by default since 1.22).
const podDeletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"

// podPhaseOrdinal orders phases from the cheapest to the dearest to lose;
// Succeeded and Failed pods are never active, so they are absent.
var podPhaseOrdinal = map[string]int{"Pending": 0, "Unknown": 1, "Running": 2}

// isPodActive is upstream's controller.IsPodActive: a pod that counts
// towards replicas is neither finished nor on its way out.
func isPodActive(p *corev1.Pod) bool {
	ph := p.GetStatus().GetPhase()
	return ph != "Succeeded" && ph != "Failed" && p.GetMetadata().GetDeletionTimestamp() == nil
}

// isPodTerminating is upstream's FilterTerminatingPods test: marked for
// deletion but not finished yet.
func isPodTerminating(p *corev1.Pod) bool {
	ph := p.GetStatus().GetPhase()
	return ph != "Succeeded" && ph != "Failed" && p.GetMetadata().GetDeletionTimestamp() != nil
}

// podReadyCondition is the pod's Ready condition, or nil.
func podReadyCondition(p *corev1.Pod) *corev1.PodCondition {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c
		}
	}
	return nil
}

// isPodReady is podutil.IsPodReady.
func isPodReady(p *corev1.Pod) bool {
	return podReadyCondition(p).GetStatus() == "True"
}

// isPodAvailable is podutil.IsPodAvailable: ready for at least
// minReadySeconds, measured from the Ready condition's last transition.
func isPodAvailable(p *corev1.Pod, minReadySeconds int32, now time.Time) bool {
	if !isPodReady(p) {
		return false
	}
	if minReadySeconds == 0 {
		return true
	}
	t := podReadyCondition(p).GetLastTransitionTime()
	return !t.IsZero() && t.AsTime().Add(time.Duration(minReadySeconds)*time.Second).Before(now)
}

// untilAvailable is how long a ready pod still needs to become available,
// or false when it is not ready or already available.
func untilAvailable(p *corev1.Pod, minReadySeconds int32, now time.Time) (time.Duration, bool) {
	if minReadySeconds == 0 || !isPodReady(p) || isPodAvailable(p, minReadySeconds, now) {
		return 0, false
	}
	t := podReadyCondition(p).GetLastTransitionTime()
	if t.IsZero() {
		// Upstream never counts such a pod available; nothing to wait for.
		return 0, false
	}
	return t.AsTime().Add(time.Duration(minReadySeconds) * time.Second).Sub(now), true
}

// podReadyTime is when the pod last became ready; the zero time when it is
// not ready.
func podReadyTime(p *corev1.Pod) time.Time {
	if c := podReadyCondition(p); c.GetStatus() == "True" {
		return c.GetLastTransitionTime().AsTime()
	}
	return time.Time{}
}

func maxContainerRestarts(p *corev1.Pod) int32 {
	var m int32
	for _, c := range p.GetStatus().GetContainerStatuses() {
		m = max(m, c.GetRestartCount())
	}
	return m
}

// deletionCost is the pod's deletion cost annotation; absent or invalid is 0,
// as upstream's GetDeletionCostFromPodAnnotations (validation rejects
// invalid values, so that case only arises for old objects).
func deletionCost(p *corev1.Pod) int32 {
	v, ok := p.GetMetadata().GetAnnotations()[podDeletionCostAnnotation]
	if !ok {
		return 0
	}
	c, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0
	}
	return int32(c)
}

// activePodsWithRanks is upstream's controller.ActivePodsWithRanks: it sorts
// the pods so that the ones to delete first come first. Applying each rule
// in turn until one decides:
//
//  1. unassigned before assigned to a node;
//  2. Pending before Unknown before Running;
//  3. not ready before ready;
//  4. lower pod-deletion-cost before higher;
//  5. higher rank (more related pods on the same node) before lower;
//  6. both ready: ready for a shorter time before longer;
//  7. more container restarts before fewer;
//  8. created more recently before older.
//
// In 6 and 8 times are compared on a logarithmic scale relative to now
// (upstream's LogarithmicScaleDown, GA): pods that came up at about the same
// time are equivalent, and ties among them are broken by UID, which spreads
// scale-downs pseudorandomly instead of always hitting the newest pod.
type activePodsWithRanks struct {
	pods []*corev1.Pod
	rank []int
	// now is the reference for the logarithmic comparison; zero compares
	// times directly.
	now time.Time
}

func (s activePodsWithRanks) Len() int { return len(s.pods) }

func (s activePodsWithRanks) Swap(i, j int) {
	s.pods[i], s.pods[j] = s.pods[j], s.pods[i]
	s.rank[i], s.rank[j] = s.rank[j], s.rank[i]
}

func (s activePodsWithRanks) Less(i, j int) bool {
	pi, pj := s.pods[i], s.pods[j]
	ni, nj := pi.GetSpec().GetNodeName(), pj.GetSpec().GetNodeName()
	if ni != nj && (ni == "" || nj == "") {
		return ni == ""
	}
	if oi, oj := podPhaseOrdinal[pi.GetStatus().GetPhase()], podPhaseOrdinal[pj.GetStatus().GetPhase()]; oi != oj {
		return oi < oj
	}
	ri, rj := isPodReady(pi), isPodReady(pj)
	if ri != rj {
		return !ri
	}
	if ci, cj := deletionCost(pi), deletionCost(pj); ci != cj {
		return ci < cj
	}
	if s.rank[i] != s.rank[j] {
		return s.rank[i] > s.rank[j]
	}
	if ri && rj {
		if ti, tj := podReadyTime(pi), podReadyTime(pj); !ti.Equal(tj) {
			if d, ok := s.logarithmicRankDiff(ti, tj); ok {
				if d == 0 {
					return pi.GetMetadata().GetUid() < pj.GetMetadata().GetUid()
				}
				return d < 0
			}
			return afterOrZero(ti, tj)
		}
	}
	if ci, cj := maxContainerRestarts(pi), maxContainerRestarts(pj); ci != cj {
		return ci > cj
	}
	if ti, tj := pi.GetMetadata().GetCreationTimestamp().AsTime(), pj.GetMetadata().GetCreationTimestamp().AsTime(); !ti.Equal(tj) {
		if d, ok := s.logarithmicRankDiff(ti, tj); ok {
			if d == 0 {
				return pi.GetMetadata().GetUid() < pj.GetMetadata().GetUid()
			}
			return d < 0
		}
		return afterOrZero(ti, tj)
	}
	return false
}

// logarithmicRankDiff compares the ages of t1 and t2 by their base-2
// logarithm (in nanoseconds, as upstream); false when there is no reference
// time or a time is missing, and the plain comparison applies.
func (s activePodsWithRanks) logarithmicRankDiff(t1, t2 time.Time) (int64, bool) {
	if s.now.IsZero() || t1.IsZero() || t2.IsZero() {
		return 0, false
	}
	rank := func(t time.Time) int64 {
		if d := s.now.Sub(t); d > 0 {
			return int64(math.Log2(float64(d)))
		}
		return -1
	}
	return rank(t1) - rank(t2), true
}

// afterOrZero: a missing time sorts first, then the later time.
func afterOrZero(t1, t2 time.Time) bool {
	if t1.IsZero() || t2.IsZero() {
		return t1.IsZero()
	}
	return t1.After(t2)
}

// rankedByRelatedPodsOnSameNode is upstream's
// getPodsRankedByRelatedPodsOnSameNode: each pod's rank is the number of
// active related pods (of every ReplicaSet with the same owner) on its node,
// so scale-down first thins out the nodes that hold the most.
func rankedByRelatedPodsOnSameNode(pods, related []*corev1.Pod, now time.Time) activePodsWithRanks {
	onNode := make(map[string]int)
	for _, p := range related {
		if isPodActive(p) {
			onNode[p.GetSpec().GetNodeName()]++
		}
	}
	rank := make([]int, len(pods))
	for i, p := range pods {
		rank[i] = onNode[p.GetSpec().GetNodeName()]
	}
	return activePodsWithRanks{pods: pods, rank: rank, now: now}
}

// podsToDelete is upstream's getPodsToDelete: the diff pods to delete first.
// It sorts a copy; pods is left as it was.
func podsToDelete(pods, related []*corev1.Pod, diff int, now time.Time) []*corev1.Pod {
	if diff >= len(pods) {
		return pods
	}
	sorted := append([]*corev1.Pod(nil), pods...)
	sort.Sort(rankedByRelatedPodsOnSameNode(sorted, related, now))
	return sorted[:diff]
}
