package job

import (
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
)

// Pod failure policy actions.
const (
	actionFailJob   = "FailJob"
	actionFailIndex = "FailIndex"
	actionIgnore    = "Ignore"
	actionCount     = "Count"
)

// policyMatch is what the pod failure policy says about one failed pod.
type policyMatch struct {
	// failJobMessage is set when a FailJob rule matched.
	failJobMessage string
	// countFailed: the failure counts towards backoffLimit (and
	// backoffLimitPerIndex); false only for Ignore.
	countFailed bool
	// action is the matched rule's action, "" when none matched.
	action string
}

// matchPodFailurePolicy is upstream's: the first rule that matches the
// failed pod decides; no match counts the failure.
func matchPodFailurePolicy(pfp *batchv1.PodFailurePolicy, pod *corev1.Pod) policyMatch {
	if pfp == nil {
		return policyMatch{countFailed: true}
	}
	for i, rule := range pfp.GetRules() {
		var failMsg string
		switch {
		case rule.GetOnExitCodes() != nil:
			cs := matchOnExitCodes(pod.GetStatus(), rule.GetOnExitCodes())
			if cs == nil {
				continue
			}
			failMsg = fmt.Sprintf("Container %s for pod %s/%s failed with exit code %v matching %v rule at index %d",
				cs.GetName(), pod.GetMetadata().GetNamespace(), pod.GetMetadata().GetName(),
				cs.GetState().GetTerminated().GetExitCode(), rule.GetAction(), i)
		case rule.GetOnPodConditions() != nil:
			cond := matchOnPodConditions(pod.GetStatus(), rule.GetOnPodConditions())
			if cond == nil {
				continue
			}
			failMsg = fmt.Sprintf("Pod %s/%s has condition %v matching %v rule at index %d",
				pod.GetMetadata().GetNamespace(), pod.GetMetadata().GetName(), cond.GetType(), rule.GetAction(), i)
		default:
			continue
		}
		switch rule.GetAction() {
		case actionIgnore:
			return policyMatch{countFailed: false, action: actionIgnore}
		case actionFailIndex:
			return policyMatch{countFailed: true, action: actionFailIndex}
		case actionCount:
			return policyMatch{countFailed: true, action: actionCount}
		case actionFailJob:
			return policyMatch{failJobMessage: failMsg, countFailed: true, action: actionFailJob}
		}
		// An unknown action matches nothing; the next rule is tried.
	}
	return policyMatch{countFailed: true}
}

// matchOnExitCodes is the first terminated container (then init container)
// with a non-zero exit code the requirement selects.
func matchOnExitCodes(st *corev1.PodStatus, req *batchv1.PodFailurePolicyOnExitCodesRequirement) *corev1.ContainerStatus {
	for _, list := range [][]*corev1.ContainerStatus{st.GetContainerStatuses(), st.GetInitContainerStatuses()} {
		for _, cs := range list {
			t := cs.GetState().GetTerminated()
			if t == nil || t.GetExitCode() == 0 {
				continue
			}
			if req.ContainerName != nil && req.GetContainerName() != cs.GetName() {
				continue
			}
			in := slices.Contains(req.GetValues(), t.GetExitCode())
			switch req.GetOperator() {
			case "In":
				if in {
					return cs
				}
			case "NotIn":
				if !in {
					return cs
				}
			}
		}
	}
	return nil
}

func matchOnPodConditions(st *corev1.PodStatus, patterns []*batchv1.PodFailurePolicyOnPodConditionsPattern) *corev1.PodCondition {
	for _, c := range st.GetConditions() {
		for _, p := range patterns {
			status := p.GetStatus()
			if status == "" {
				status = "True" // upstream's default
			}
			if c.GetType() == p.GetType() && c.GetStatus() == status {
				return c
			}
		}
	}
	return nil
}

// matchSuccessPolicy is upstream's: the first rule met by the succeeded
// indexes, with upstream's message.
func matchSuccessPolicy(log *slog.Logger, sp *batchv1.SuccessPolicy, completions int32, succeeded intervals) (string, bool) {
	if sp == nil || len(succeeded) == 0 {
		return "", false
	}
	for i, rule := range sp.GetRules() {
		if rule.SucceededIndexes != nil {
			required := parseIntervals(log, rule.GetSucceededIndexes(), int(completions))
			if len(required) == 0 {
				continue
			}
			if matchSucceededIndexesRule(required, succeeded, rule.SucceededCount) {
				return fmt.Sprintf("Matched rules at index %d", i), true
			}
		} else if rule.SucceededCount != nil && succeeded.total() >= int(rule.GetSucceededCount()) {
			return fmt.Sprintf("Matched rules at index %d", i), true
		}
	}
	return "", false
}

// matchSucceededIndexesRule: every required index succeeded, or (with
// succeededCount) at least that many of them.
func matchSucceededIndexesRule(required, succeeded intervals, count *int32) bool {
	contains := 0
	for _, r := range required {
		for _, s := range succeeded {
			if o := min(r.last, s.last) - max(r.first, s.first) + 1; o > 0 {
				contains += o
			}
		}
	}
	return contains == required.total() || (count != nil && contains >= int(*count))
}

// Upstream's pod failure backoff: 10 s after the first failure, doubling
// with each further consecutive one, capped at 6 minutes.
const (
	defaultPodFailureBackoff = 10 * time.Second
	maxPodFailureBackoff     = 6 * time.Minute
)

// backoffRecord counts a Job's consecutive pod failures since its last
// success.
type backoffRecord struct {
	failuresAfterLastSuccess int32
	lastFailureTime          *time.Time
}

// backoffStore keeps each Job's record in memory, as upstream: after a
// restart the delay starts again from the pods' own failure times.
type backoffStore struct {
	mu      sync.Mutex
	records map[string]backoffRecord
}

func newBackoffStore() *backoffStore { return &backoffStore{records: map[string]backoffRecord{}} }

func (s *backoffStore) update(key string, r backoffRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[key] = r
}

func (s *backoffStore) remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, key)
}

// next is the record once the newly finished pods are taken into account:
// a success resets the count to the failures that came after it.
func (s *backoffStore) next(key string, succeeded, failed []*corev1.Pod) backoffRecord {
	s.mu.Lock()
	r := s.records[key]
	s.mu.Unlock()
	sortByFinishedTime(succeeded)
	sortByFinishedTime(failed)
	if len(succeeded) == 0 {
		if len(failed) == 0 {
			return r
		}
		t := finishedTime(failed[len(failed)-1])
		return backoffRecord{failuresAfterLastSuccess: r.failuresAfterLastSuccess + int32(len(failed)), lastFailureTime: &t}
	}
	out := backoffRecord{}
	lastSuccess := finishedTime(succeeded[len(succeeded)-1])
	for i := len(failed) - 1; i >= 0; i-- {
		t := finishedTime(failed[i])
		if !t.After(lastSuccess) {
			break
		}
		if out.lastFailureTime == nil {
			out.lastFailureTime = &t
		}
		out.failuresAfterLastSuccess++
	}
	return out
}

// remaining is how long pod creation still waits after the record's
// failures.
func (r backoffRecord) remaining(now time.Time) time.Duration {
	return remainingBackoff(now, r.failuresAfterLastSuccess, r.lastFailureTime)
}

// backoffDelay is the delay after failures consecutive failures.
func backoffDelay(failures int32) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := defaultPodFailureBackoff
	for i := int32(1); i < failures; i++ {
		d *= 2
		if d >= maxPodFailureBackoff {
			return maxPodFailureBackoff
		}
	}
	return d
}

func remainingBackoff(now time.Time, failures int32, last *time.Time) time.Duration {
	if failures == 0 || last == nil {
		return 0
	}
	d := backoffDelay(failures)
	elapsed := now.Sub(*last)
	if d < elapsed {
		return 0
	}
	return d - elapsed
}

// remainingPerIndex is an index's backoff, from its last failed pod's
// failure count.
func remainingPerIndex(now time.Time, lastFailed *corev1.Pod) time.Duration {
	if lastFailed == nil {
		return 0
	}
	t := finishedTime(lastFailed)
	return remainingBackoff(now, indexAbsoluteFailureCount(lastFailed)+1, &t)
}

func sortByFinishedTime(pods []*corev1.Pod) {
	sort.SliceStable(pods, func(i, j int) bool { return finishedTime(pods[i]).Before(finishedTime(pods[j])) })
}

// finishedTime is upstream's getFinishedTime: the last container's finish,
// else when Ready turned False, else the deletion's start, else creation.
func finishedTime(p *corev1.Pod) time.Time {
	st := p.GetStatus()
	var latest time.Time
	all := len(st.GetContainerStatuses()) > 0
	for _, cs := range st.GetContainerStatuses() {
		t := cs.GetState().GetTerminated()
		if t == nil || t.GetFinishedAt().IsZero() {
			all = false
			break
		}
		if ft := t.GetFinishedAt().AsTime(); ft.After(latest) {
			latest = ft
		}
	}
	if all {
		return latest
	}
	for _, c := range st.GetConditions() {
		if c.GetType() == "Ready" && c.GetStatus() == "False" && !c.GetLastTransitionTime().IsZero() {
			return c.GetLastTransitionTime().AsTime()
		}
	}
	if dt := p.GetMetadata().GetDeletionTimestamp(); dt != nil {
		return dt.AsTime().Add(-time.Duration(p.GetMetadata().GetDeletionGracePeriodSeconds()) * time.Second)
	}
	return p.GetMetadata().GetCreationTimestamp().AsTime()
}
