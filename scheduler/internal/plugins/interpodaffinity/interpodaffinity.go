// Package interpodaffinity places pods by the pods already running
// (upstream's InterPodAffinity): required affinity and anti-affinity with any
// topologyKey, existing pods' required anti-affinity, and preferred terms
// scored by weight.
package interpodaffinity

import (
	"context"

	"k8s.io/apimachinery/pkg/labels"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
)

const Name = "InterPodAffinity"

const (
	ErrReasonAffinity     = "node(s) didn't match pod affinity rules"
	ErrReasonAntiAffinity = "node(s) didn't match pod anti-affinity rules"
	ErrReasonExistingAnti = "node(s) didn't satisfy existing pods anti-affinity rules"
	stateKey              = Name + "/state"
)

type Plugin struct{}

func (Plugin) Name() string { return Name }

// term is an affinity term made ready to match.
type term struct {
	key        string
	selector   labels.Selector
	namespaces map[string]bool
	weight     int64
}

func newTerm(t *corev1.PodAffinityTerm, podNS string, podLabels labels.Set, weight int64) *term {
	sel := t.GetLabelSelector()
	if len(t.GetMatchLabelKeys())+len(t.GetMismatchLabelKeys()) > 0 {
		merged := &metav1.LabelSelector{MatchLabels: map[string]string{}}
		if sel != nil {
			for k, v := range sel.MatchLabels {
				merged.MatchLabels[k] = v
			}
			merged.MatchExpressions = append(merged.MatchExpressions, sel.MatchExpressions...)
		}
		for _, k := range t.GetMatchLabelKeys() {
			if v, ok := podLabels[k]; ok {
				merged.MatchLabels[k] = v
			}
		}
		for _, k := range t.GetMismatchLabelKeys() {
			if v, ok := podLabels[k]; ok {
				merged.MatchExpressions = append(merged.MatchExpressions, &metav1.LabelSelectorRequirement{Key: k, Operator: "NotIn", Values: []string{v}})
			}
		}
		sel = merged
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		s = labels.Nothing()
	}
	ns := map[string]bool{}
	for _, n := range t.GetNamespaces() {
		ns[n] = true
	}
	if len(ns) == 0 && t.GetNamespaceSelector() == nil {
		ns[podNS] = true
	}
	return &term{key: t.TopologyKey, selector: s, namespaces: ns, weight: weight}
}

// matches: the term selects pod p. An empty namespace selector ({}) selects
// every namespace.
func (t *term) matches(p *corev1.Pod, allNamespaces bool) bool {
	m := p.GetMetadata()
	if !allNamespaces && !t.namespaces[m.GetNamespace()] {
		return false
	}
	return t.selector.Matches(labels.Set(m.GetLabels()))
}

type pair struct{ key, value string }

type state struct {
	affinity, anti             []*term
	affinityCounts, antiCounts []map[pair]int64 // per term: domain → matching pods
	existingAnti               map[pair]int64   // domains where an existing pod's anti-affinity forbids us
	anyAffinityMatch           bool
	selfMatchesAll             bool
	// preferred holds the weighted score of each domain: +weight per pod a
	// preferred affinity term matches, -weight per anti-affinity match.
	preferred map[pair]int64
}

func (Plugin) PreFilter(_ context.Context, cs *framework.CycleState, pi *framework.PodInfo, nodes []*framework.NodeInfo) *framework.Status {
	pod := pi.Pod
	ns := pod.GetMetadata().GetNamespace()
	pl := labels.Set(pod.GetMetadata().GetLabels())
	aff := pod.GetSpec().GetAffinity()
	st := &state{existingAnti: map[pair]int64{}, preferred: map[pair]int64{}}
	var preferred, preferredAnti []*term
	for _, t := range aff.GetPodAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution() {
		st.affinity = append(st.affinity, newTerm(t, ns, pl, 0))
	}
	for _, t := range aff.GetPodAntiAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution() {
		st.anti = append(st.anti, newTerm(t, ns, pl, 0))
	}
	for _, w := range aff.GetPodAffinity().GetPreferredDuringSchedulingIgnoredDuringExecution() {
		preferred = append(preferred, newTerm(w.GetPodAffinityTerm(), ns, pl, int64(w.Weight)))
	}
	for _, w := range aff.GetPodAntiAffinity().GetPreferredDuringSchedulingIgnoredDuringExecution() {
		preferredAnti = append(preferredAnti, newTerm(w.GetPodAffinityTerm(), ns, pl, int64(w.Weight)))
	}
	st.affinityCounts = make([]map[pair]int64, len(st.affinity))
	st.antiCounts = make([]map[pair]int64, len(st.anti))
	for i := range st.affinityCounts {
		st.affinityCounts[i] = map[pair]int64{}
	}
	for i := range st.antiCounts {
		st.antiCounts[i] = map[pair]int64{}
	}
	st.selfMatchesAll = len(st.affinity) > 0
	for _, t := range st.affinity {
		if !t.matches(pod, false) {
			st.selfMatchesAll = false
		}
	}
	ownTerms := len(st.affinity)+len(st.anti)+len(preferred)+len(preferredAnti) > 0
	for _, n := range nodes {
		nl := n.Node.GetMetadata().GetLabels()
		// Existing pods' required anti-affinity against the incoming pod.
		for _, p := range n.PodsWithRequiredAntiAffinity {
			existing := p.Pod
			for _, t := range existing.GetSpec().GetAffinity().GetPodAntiAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution() {
				et := newTerm(t, existing.GetMetadata().GetNamespace(), labels.Set(existing.GetMetadata().GetLabels()), 0)
				allNS := t.GetNamespaceSelector() != nil && len(t.GetNamespaceSelector().GetMatchLabels())+len(t.GetNamespaceSelector().GetMatchExpressions()) == 0
				if v, ok := nl[et.key]; ok && et.matches(pod, allNS) {
					st.existingAnti[pair{et.key, v}]++
				}
			}
		}
		if !ownTerms {
			continue
		}
		for _, p := range n.Pods {
			existing := p.Pod
			for i, t := range st.affinity {
				if v, ok := nl[t.key]; ok && t.matches(existing, false) {
					st.affinityCounts[i][pair{t.key, v}]++
					st.anyAffinityMatch = true
				}
			}
			for i, t := range st.anti {
				if v, ok := nl[t.key]; ok && t.matches(existing, false) {
					st.antiCounts[i][pair{t.key, v}]++
				}
			}
			for _, t := range preferred {
				if v, ok := nl[t.key]; ok && t.matches(existing, false) {
					st.preferred[pair{t.key, v}] += t.weight
				}
			}
			for _, t := range preferredAnti {
				if v, ok := nl[t.key]; ok && t.matches(existing, false) {
					st.preferred[pair{t.key, v}] -= t.weight
				}
			}
		}
	}
	cs.Write(stateKey, st)
	return nil
}

func read(cs *framework.CycleState) *state {
	v, _ := cs.Read(stateKey)
	st, _ := v.(*state)
	return st
}

func (Plugin) Filter(_ context.Context, cs *framework.CycleState, _ *framework.PodInfo, node *framework.NodeInfo) *framework.Status {
	st := read(cs)
	if st == nil {
		return nil
	}
	nl := node.Node.GetMetadata().GetLabels()
	// Upstream's order: the pod's affinity, its anti-affinity, then existing pods'.
	if !st.affinityOK(nl) {
		return framework.NewStatus(framework.UnschedulableAndUnresolvable, ErrReasonAffinity)
	}
	for i, t := range st.anti {
		if v, ok := nl[t.key]; ok && st.antiCounts[i][pair{t.key, v}] > 0 {
			return framework.NewStatus(framework.Unschedulable, ErrReasonAntiAffinity)
		}
	}
	for k, v := range nl {
		if st.existingAnti[pair{k, v}] > 0 {
			return framework.NewStatus(framework.Unschedulable, ErrReasonExistingAnti)
		}
	}
	return nil
}

// affinityOK: every required affinity term has a matching pod in the node's
// domain — or no pod matches anywhere yet and the pod matches its own terms
// (the first of a group), which then may go wherever the keys exist.
func (st *state) affinityOK(nl map[string]string) bool {
	first := !st.anyAffinityMatch && st.selfMatchesAll
	for i, t := range st.affinity {
		v, ok := nl[t.key]
		if !ok || (!first && st.affinityCounts[i][pair{t.key, v}] == 0) {
			return false
		}
	}
	return true
}

// Score adds the weights of preferred affinity terms with matching pods in
// the node's domains and subtracts those of preferred anti-affinity terms.
func (Plugin) Score(_ context.Context, cs *framework.CycleState, _ *framework.PodInfo, node *framework.NodeInfo) (int64, *framework.Status) {
	st := read(cs)
	if st == nil || len(st.preferred) == 0 {
		return 0, nil
	}
	var s int64
	for k, v := range node.Node.GetMetadata().GetLabels() {
		s += st.preferred[pair{k, v}]
	}
	return s, nil
}

// NormalizeScore maps the (possibly negative) sums onto 0..100.
func (Plugin) NormalizeScore(_ context.Context, _ *framework.CycleState, _ *framework.PodInfo, scores []framework.NodeScore) *framework.Status {
	if len(scores) == 0 {
		return nil
	}
	lo, hi := scores[0].Score, scores[0].Score
	for _, s := range scores {
		lo, hi = min(lo, s.Score), max(hi, s.Score)
	}
	for i := range scores {
		if hi == lo {
			scores[i].Score = 0
			continue
		}
		scores[i].Score = framework.MaxNodeScore * (scores[i].Score - lo) / (hi - lo)
	}
	return nil
}
