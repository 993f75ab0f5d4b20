// Package podtopologyspread spreads matching pods across topology domains
// (upstream's PodTopologySpread): DoNotSchedule constraints filter, with
// maxSkew, minDomains, nodeAffinityPolicy, nodeTaintsPolicy and
// matchLabelKeys; ScheduleAnyway constraints score.
package podtopologyspread

import (
	"context"
	"math"

	"k8s.io/apimachinery/pkg/labels"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/placement"
	"skiff.dev/scheduler/internal/framework"
	"skiff.dev/scheduler/internal/plugins/nodeaffinity"
)

const Name = "PodTopologySpread"

const (
	ErrReasonConstraintsNotMatch = "node(s) didn't match pod topology spread constraints"
	ErrReasonNodeLabelNotMatch   = ErrReasonConstraintsNotMatch + " (missing required label)"
	stateKey                     = Name + "/state"
)

type Plugin struct{}

func (Plugin) Name() string { return Name }

type constraint struct {
	maxSkew     int64
	key         string
	selector    labels.Selector
	minDomains  int64
	hard        bool
	honorAffin  bool
	honorTaints bool
	counts      map[string]int64 // domain → matching pods
	minMatch    int64
	selfMatch   int64
}

type state struct{ constraints []*constraint }

func build(pod *corev1.Pod, nodes []*framework.NodeInfo) *state {
	st := &state{}
	podLabels := labels.Set(pod.GetMetadata().GetLabels())
	for _, c := range pod.GetSpec().GetTopologySpreadConstraints() {
		sel := c.GetLabelSelector()
		if len(c.GetMatchLabelKeys()) > 0 {
			sel = withMatchLabelKeys(sel, c.GetMatchLabelKeys(), podLabels)
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			continue
		}
		cs := &constraint{
			maxSkew: int64(c.MaxSkew), key: c.TopologyKey, selector: s, minDomains: 1,
			hard:        c.WhenUnsatisfiable != "ScheduleAnyway",
			honorAffin:  c.NodeAffinityPolicy == nil || *c.NodeAffinityPolicy == "Honor",
			honorTaints: c.NodeTaintsPolicy != nil && *c.NodeTaintsPolicy == "Honor",
			counts:      map[string]int64{},
		}
		if c.MinDomains != nil {
			cs.minDomains = int64(*c.MinDomains)
		}
		if s.Matches(podLabels) {
			cs.selfMatch = 1
		}
		st.constraints = append(st.constraints, cs)
	}
	if len(st.constraints) == 0 {
		return st
	}
	ns := pod.GetMetadata().GetNamespace()
	for _, n := range nodes {
		nl := n.Node.GetMetadata().GetLabels()
		for _, cs := range st.constraints {
			v, ok := nl[cs.key]
			if !ok || !eligible(cs, pod, n.Node) {
				continue
			}
			if _, seen := cs.counts[v]; !seen {
				cs.counts[v] = 0
			}
			for _, p := range n.Pods {
				m := p.Pod.GetMetadata()
				if m.GetNamespace() == ns && m.GetDeletionTimestamp() == nil && cs.selector.Matches(labels.Set(m.GetLabels())) {
					cs.counts[v]++
				}
			}
		}
	}
	for _, cs := range st.constraints {
		cs.minMatch = math.MaxInt64
		for _, c := range cs.counts {
			cs.minMatch = min(cs.minMatch, c)
		}
		if int64(len(cs.counts)) < cs.minDomains || cs.minMatch == math.MaxInt64 {
			cs.minMatch = 0
		}
	}
	return st
}

func withMatchLabelKeys(sel *metav1.LabelSelector, keys []string, podLabels labels.Set) *metav1.LabelSelector {
	out := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	if sel != nil {
		for k, v := range sel.MatchLabels {
			out.MatchLabels[k] = v
		}
		out.MatchExpressions = sel.MatchExpressions
	}
	for _, k := range keys {
		if v, ok := podLabels[k]; ok {
			out.MatchLabels[k] = v
		}
	}
	return out
}

func eligible(cs *constraint, pod *corev1.Pod, node *corev1.Node) bool {
	if cs.honorAffin && !nodeaffinity.RequiredMatches(pod, node) {
		return false
	}
	if cs.honorTaints {
		for _, t := range node.GetSpec().GetTaints() {
			if (t.Effect == "NoSchedule" || t.Effect == "NoExecute") && !placement.Tolerates(pod.GetSpec().GetTolerations(), t) {
				return false
			}
		}
	}
	return true
}

func (Plugin) PreFilter(_ context.Context, cs *framework.CycleState, pod *framework.PodInfo, nodes []*framework.NodeInfo) *framework.Status {
	cs.Write(stateKey, build(pod.Pod, nodes))
	return nil
}

func read(cs *framework.CycleState) *state {
	v, _ := cs.Read(stateKey)
	st, _ := v.(*state)
	return st
}

func (Plugin) Filter(_ context.Context, cs *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) *framework.Status {
	st := read(cs)
	if st == nil {
		return nil
	}
	nl := node.Node.GetMetadata().GetLabels()
	for _, c := range st.constraints {
		if !c.hard {
			continue
		}
		v, ok := nl[c.key]
		if !ok {
			return framework.NewStatus(framework.UnschedulableAndUnresolvable, ErrReasonNodeLabelNotMatch)
		}
		if c.counts[v]+c.selfMatch-c.minMatch > c.maxSkew {
			return framework.NewStatus(framework.Unschedulable, ErrReasonConstraintsNotMatch)
		}
	}
	return nil
}

// PreScore shares the counts with Score (the filter's state already holds them).
func (Plugin) PreScore(context.Context, *framework.CycleState, *framework.PodInfo, []*framework.NodeInfo) *framework.Status {
	return nil
}

// Score: fewer matching pods in the node's domains is better, weighted by
// the number of domains as upstream does (log(domains+2)).
func (Plugin) Score(_ context.Context, cs *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) (int64, *framework.Status) {
	st := read(cs)
	if st == nil {
		return 0, nil
	}
	var score float64
	nl := node.Node.GetMetadata().GetLabels()
	for _, c := range st.constraints {
		if c.hard {
			continue
		}
		if v, ok := nl[c.key]; ok {
			w := math.Log(float64(len(c.counts) + 2))
			score += float64(c.counts[v]+c.maxSkew-1) * w
		}
	}
	return int64(math.Round(score)), nil
}

func (Plugin) NormalizeScore(_ context.Context, _ *framework.CycleState, _ *framework.PodInfo, scores []framework.NodeScore) *framework.Status {
	framework.DefaultNormalize(scores, true)
	return nil
}
