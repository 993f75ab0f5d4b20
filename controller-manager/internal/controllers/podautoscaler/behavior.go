package podautoscaler

import (
	"math"
	"sync"
	"time"

	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
)

// Upstream's scaling limits when an HPA has no behavior.
const (
	scaleUpLimitFactor  = 2.0
	scaleUpLimitMinimum = 4.0
)

type timestampedRecommendation struct {
	recommendation int32
	timestamp      time.Time
}

type timestampedScaleEvent struct {
	replicaChange int32
	timestamp     time.Time
	outdated      bool
}

// recommender holds, per HPA key, the recent recommendations (for the
// stabilization windows) and scale events (for the rate policies), as
// upstream's HorizontalController does. now is injectable so tests walk
// through windows instantly.
type recommender struct {
	now func() time.Time
	// downscaleStabilisationWindow is --horizontal-pod-autoscaler-downscale-stabilization,
	// used without behavior and when behavior leaves scaleDown's window unset.
	downscaleStabilisationWindow time.Duration

	mu              sync.Mutex
	recommendations map[string][]timestampedRecommendation
	scaleUpEvents   map[string][]timestampedScaleEvent
	scaleDownEvents map[string][]timestampedScaleEvent
}

func newRecommender(now func() time.Time, downscaleWindow time.Duration) *recommender {
	return &recommender{now: now, downscaleStabilisationWindow: downscaleWindow,
		recommendations: map[string][]timestampedRecommendation{},
		scaleUpEvents:   map[string][]timestampedScaleEvent{}, scaleDownEvents: map[string][]timestampedScaleEvent{}}
}

// forget drops what is kept of a deleted HPA.
func (r *recommender) forget(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.recommendations, key)
	delete(r.scaleUpEvents, key)
	delete(r.scaleDownEvents, key)
}

// recordInitial seeds the window with the current size, as upstream's
// recordInitialRecommendation, so a fresh controller does not scale down
// at once.
func (r *recommender) recordInitial(key string, current int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.recommendations[key] == nil {
		r.recommendations[key] = []timestampedRecommendation{{current, r.now()}}
	}
}

// stabilize is upstream's stabilizeRecommendation (no behavior): the
// highest recommendation within the downscale window.
func (r *recommender) stabilize(key string, prenormalized int32) int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	maxRec := prenormalized
	foundOld, oldIdx := false, 0
	cutoff := now.Add(-r.downscaleStabilisationWindow)
	for i, rec := range r.recommendations[key] {
		if rec.timestamp.Before(cutoff) {
			foundOld, oldIdx = true, i
		} else if rec.recommendation > maxRec {
			maxRec = rec.recommendation
		}
	}
	if foundOld {
		r.recommendations[key][oldIdx] = timestampedRecommendation{prenormalized, now}
	} else {
		r.recommendations[key] = append(r.recommendations[key], timestampedRecommendation{prenormalized, now})
	}
	return maxRec
}

// normalizationArg is what the behavior-driven normalization works from.
type normalizationArg struct {
	key             string
	scaleUp         *autoscalingv2.HPAScalingRules
	scaleDown       *autoscalingv2.HPAScalingRules
	minReplicas     int32
	maxReplicas     int32
	currentReplicas int32
	desiredReplicas int32
}

// stabilizeWithBehaviors is upstream's stabilizeRecommendationWithBehaviors:
// the recommendation is held between the lowest recommendation of the
// scale-up window and the highest of the scale-down window.
func (r *recommender) stabilizeWithBehaviors(a normalizationArg) (int32, string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	upRec, downRec := a.desiredReplicas, a.desiredReplicas
	upCutoff := now.Add(-time.Duration(a.scaleUp.GetStabilizationWindowSeconds()) * time.Second)
	downCutoff := now.Add(-time.Duration(a.scaleDown.GetStabilizationWindowSeconds()) * time.Second)
	foundOld, oldIdx := false, 0
	for i, rec := range r.recommendations[a.key] {
		if rec.timestamp.After(upCutoff) {
			upRec = min(rec.recommendation, upRec)
		}
		if rec.timestamp.After(downCutoff) {
			downRec = max(rec.recommendation, downRec)
		}
		if rec.timestamp.Before(upCutoff) && rec.timestamp.Before(downCutoff) {
			foundOld, oldIdx = true, i
		}
	}
	recommendation := a.currentReplicas
	if recommendation < upRec {
		recommendation = upRec
	}
	if recommendation > downRec {
		recommendation = downRec
	}
	if foundOld {
		r.recommendations[a.key][oldIdx] = timestampedRecommendation{a.desiredReplicas, now}
	} else {
		r.recommendations[a.key] = append(r.recommendations[a.key], timestampedRecommendation{a.desiredReplicas, now})
	}
	if a.desiredReplicas >= a.currentReplicas {
		return recommendation, "ScaleUpStabilized", "recent recommendations were lower than current one, applying the lowest recent recommendation"
	}
	return recommendation, "ScaleDownStabilized", "recent recommendations were higher than current one, applying the highest recent recommendation"
}

// convertWithBehaviorRate is upstream's convertDesiredReplicasWithBehaviorRate:
// the policies' limit on how far one period may move, then min/max.
func (r *recommender) convertWithBehaviorRate(a normalizationArg) (int32, string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	switch {
	case a.desiredReplicas > a.currentReplicas:
		limit := scaleUpLimitWithRules(now, a.currentReplicas, r.scaleUpEvents[a.key], r.scaleDownEvents[a.key], a.scaleUp)
		if limit < a.currentReplicas {
			// No further up until the period's events age out.
			limit = a.currentReplicas
		}
		maxAllowed := a.maxReplicas
		reason, msg := "TooManyReplicas", "the desired replica count is more than the maximum replica count"
		if maxAllowed > limit {
			maxAllowed = limit
			reason, msg = "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate"
		}
		if a.desiredReplicas > maxAllowed {
			return maxAllowed, reason, msg
		}
	case a.desiredReplicas < a.currentReplicas:
		limit := scaleDownLimitWithRules(now, a.currentReplicas, r.scaleUpEvents[a.key], r.scaleDownEvents[a.key], a.scaleDown)
		if limit > a.currentReplicas {
			limit = a.currentReplicas
		}
		minAllowed := a.minReplicas
		reason, msg := "TooFewReplicas", "the desired replica count is less than the minimum replica count"
		if minAllowed < limit {
			minAllowed = limit
			reason, msg = "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate"
		}
		if a.desiredReplicas < minAllowed {
			return minAllowed, reason, msg
		}
	}
	return a.desiredReplicas, "DesiredWithinRange", "the desired count is within the acceptable range"
}

// storeScaleEvent records a rescale for the rate policies (behavior only).
func (r *recommender) storeScaleEvent(behavior *autoscalingv2.HorizontalPodAutoscalerBehavior, key string, prev, next int32) {
	if behavior == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	store := func(events map[string][]timestampedScaleEvent, rules *autoscalingv2.HPAScalingRules, change int32) {
		longest := longestPolicyPeriod(rules)
		markOutdated(now, events[key], longest)
		for i, e := range events[key] {
			if e.outdated {
				events[key][i] = timestampedScaleEvent{change, now, false}
				return
			}
		}
		events[key] = append(events[key], timestampedScaleEvent{change, now, false})
	}
	if next > prev {
		store(r.scaleUpEvents, behavior.GetScaleUp(), next-prev)
	} else {
		store(r.scaleDownEvents, behavior.GetScaleDown(), prev-next)
	}
}

func longestPolicyPeriod(rules *autoscalingv2.HPAScalingRules) int32 {
	var longest int32
	for _, p := range rules.GetPolicies() {
		longest = max(longest, p.GetPeriodSeconds())
	}
	return longest
}

func markOutdated(now time.Time, events []timestampedScaleEvent, longestPeriod int32) {
	cutoff := now.Add(-time.Duration(longestPeriod) * time.Second)
	for i, e := range events {
		if e.timestamp.Before(cutoff) {
			events[i].outdated = true
		}
	}
}

// replicasChangePerPeriod sums the changes within the last periodSeconds.
func replicasChangePerPeriod(now time.Time, periodSeconds int32, events []timestampedScaleEvent) int32 {
	cutoff := now.Add(-time.Duration(periodSeconds) * time.Second)
	var n int32
	for _, e := range events {
		if e.timestamp.After(cutoff) {
			n += e.replicaChange
		}
	}
	return n
}

func scaleUpLimitWithRules(now time.Time, current int32, up, down []timestampedScaleEvent, rules *autoscalingv2.HPAScalingRules) int32 {
	var result int32
	var pick func(a, b int32) int32
	switch rules.GetSelectPolicy() {
	case "Disabled":
		return current
	case "Min":
		result, pick = math.MaxInt32, func(a, b int32) int32 { return min(a, b) }
	default:
		result, pick = math.MinInt32, func(a, b int32) int32 { return max(a, b) }
	}
	for _, p := range rules.GetPolicies() {
		start := current - replicasChangePerPeriod(now, p.GetPeriodSeconds(), up) + replicasChangePerPeriod(now, p.GetPeriodSeconds(), down)
		var proposed int32
		switch p.GetType() {
		case "Pods":
			proposed = start + p.GetValue()
		case "Percent":
			// Rounded up, or a small target would never grow.
			proposed = int32(math.Ceil(float64(start) * (1 + float64(p.GetValue())/100)))
		}
		result = pick(result, proposed)
	}
	return result
}

func scaleDownLimitWithRules(now time.Time, current int32, up, down []timestampedScaleEvent, rules *autoscalingv2.HPAScalingRules) int32 {
	var result int32
	var pick func(a, b int32) int32
	switch rules.GetSelectPolicy() {
	case "Disabled":
		return current
	case "Min":
		result, pick = math.MinInt32, func(a, b int32) int32 { return max(a, b) }
	default:
		result, pick = math.MaxInt32, func(a, b int32) int32 { return min(a, b) }
	}
	for _, p := range rules.GetPolicies() {
		start := current - replicasChangePerPeriod(now, p.GetPeriodSeconds(), up) + replicasChangePerPeriod(now, p.GetPeriodSeconds(), down)
		var proposed int32
		switch p.GetType() {
		case "Pods":
			proposed = start - p.GetValue()
		case "Percent":
			proposed = int32(float64(start) * (1 - float64(p.GetValue())/100))
		}
		result = pick(result, proposed)
	}
	return result
}

// convertWithRules is upstream's convertDesiredReplicasWithRules (no
// behavior): at most double (or 4) per step, within min and max.
func convertWithRules(current, desired, minReplicas, maxReplicas int32) (int32, string, string) {
	scaleUpLimit := int32(math.Max(scaleUpLimitFactor*float64(current), scaleUpLimitMinimum))
	maxAllowed := maxReplicas
	reason, msg := "TooManyReplicas", "the desired replica count is more than the maximum replica count"
	if maxReplicas > scaleUpLimit {
		maxAllowed = scaleUpLimit
		reason, msg = "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate"
	}
	if desired < minReplicas {
		return minReplicas, "TooFewReplicas", "the desired replica count is less than the minimum replica count"
	}
	if desired > maxAllowed {
		return maxAllowed, reason, msg
	}
	return desired, "DesiredWithinRange", "the desired count is within the acceptable range"
}

func ptr[T any](v T) *T { return &v }

// withDefaults fills behavior's unset fields with upstream's defaults
// (GenerateHPAScaleUpRules/GenerateHPAScaleDownRules); scaleDown's window
// defaults to the controller's downscale stabilization.
func withDefaults(b *autoscalingv2.HorizontalPodAutoscalerBehavior, downscaleWindow time.Duration) *autoscalingv2.HorizontalPodAutoscalerBehavior {
	up := &autoscalingv2.HPAScalingRules{
		StabilizationWindowSeconds: ptr(int32(0)), SelectPolicy: ptr("Max"),
		Policies: []*autoscalingv2.HPAScalingPolicy{{Type: "Pods", Value: 4, PeriodSeconds: 15}, {Type: "Percent", Value: 100, PeriodSeconds: 15}},
	}
	down := &autoscalingv2.HPAScalingRules{
		StabilizationWindowSeconds: ptr(int32(downscaleWindow / time.Second)), SelectPolicy: ptr("Max"),
		Policies: []*autoscalingv2.HPAScalingPolicy{{Type: "Percent", Value: 100, PeriodSeconds: 15}},
	}
	merge := func(from, to *autoscalingv2.HPAScalingRules) *autoscalingv2.HPAScalingRules {
		if from == nil {
			return to
		}
		if from.SelectPolicy != nil {
			to.SelectPolicy = from.SelectPolicy
		}
		if from.StabilizationWindowSeconds != nil {
			to.StabilizationWindowSeconds = from.StabilizationWindowSeconds
		}
		if from.Policies != nil {
			to.Policies = from.Policies
		}
		to.Tolerance = from.Tolerance
		return to
	}
	return &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: merge(b.GetScaleUp(), up), ScaleDown: merge(b.GetScaleDown(), down)}
}
