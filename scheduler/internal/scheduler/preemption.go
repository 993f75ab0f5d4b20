package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apipb"
	"skiff.dev/scheduler/internal/framework"
)

// candidate is a node where evicting victims would let the pod fit.
type candidate struct {
	node          string
	victims       []*framework.PodInfo
	pdbViolations int
}

// preempt is upstream's DefaultPreemption post-filter: on the nodes that
// rejected the pod for reasons eviction can cure, find the smallest set of
// lower-priority victims (reprieving the highest-priority ones first), pick
// the node whose victims violate the fewest PodDisruptionBudgets, then have
// the lowest top priority, the lowest priority sum and the fewest count;
// nominate it, and delete the victims gracefully.
func (s *Scheduler) preempt(ctx context.Context, f *profileFramework, state *framework.CycleState, qp *framework.QueuedPodInfo, d *framework.Diagnosis) (string, string) {
	pod := qp.Pod
	if pod.GetSpec().GetPreemptionPolicy() == "Never" {
		return "", "not eligible due to preemptionPolicy=Never."
	}
	prio := pod.GetSpec().GetPriority()
	// A pod that already preempted waits for its victims to go rather than
	// preempting again elsewhere (upstream's PodEligibleToPreemptOthers).
	if cur, ok := s.pods.Get(qp.Key()); ok {
		if nom := cur.(*corev1.Pod).GetStatus().GetNominatedNodeName(); nom != "" {
			if ni := s.snapshot.Get(nom); ni != nil {
				for _, p := range ni.Pods {
					if p.Pod.GetMetadata().GetDeletionTimestamp() != nil && p.Pod.GetSpec().GetPriority() < prio {
						return "", "not eligible: victims on the nominated node are still terminating."
					}
				}
			}
		}
	}
	pdbs := s.pdbList(pod.GetMetadata().GetNamespace())
	var cands []candidate
	for _, ni := range s.snapshot.List {
		st := d.NodeToStatus[ni.Name()]
		if st == nil || st.Code == framework.UnschedulableAndUnresolvable {
			continue
		}
		var lower []*framework.PodInfo
		for _, p := range ni.Pods {
			if p.Pod.GetSpec().GetPriority() < prio && p.Pod.GetMetadata().GetDeletionTimestamp() == nil {
				lower = append(lower, p)
			}
		}
		if len(lower) == 0 {
			continue
		}
		trial := ni.Clone()
		for _, v := range lower {
			trial.RemovePod(v.Key())
		}
		if !f.runFilters(ctx, state, qp.PodInfo, trial).IsSuccess() {
			continue
		}
		// Reprieve: keep as many victims as still lets the pod fit, highest
		// priority first, PDB-protected ones before others.
		sort.SliceStable(lower, func(i, j int) bool {
			vi, vj := violates(lower[i], pdbs), violates(lower[j], pdbs)
			if vi != vj {
				return vi
			}
			return lower[i].Pod.GetSpec().GetPriority() > lower[j].Pod.GetSpec().GetPriority()
		})
		var victims []*framework.PodInfo
		for _, v := range lower {
			trial.AddPod(v)
			if !f.runFilters(ctx, state, qp.PodInfo, trial).IsSuccess() {
				trial.RemovePod(v.Key())
				victims = append(victims, v)
			}
		}
		c := candidate{node: ni.Name(), victims: victims}
		for _, v := range victims {
			if violates(v, pdbs) {
				c.pdbViolations++
			}
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		return "", fmt.Sprintf("0/%d nodes are available: %d Preemption is not helpful for scheduling.", len(s.snapshot.List), len(s.snapshot.List))
	}
	sort.SliceStable(cands, func(i, j int) bool { return better(cands[i], cands[j]) })
	best := cands[0]
	s.m.victims.Observe(float64(len(best.victims)))
	go s.evict(ctx, qp.Pod, best)
	return best.node, ""
}

func better(a, b candidate) bool {
	if a.pdbViolations != b.pdbViolations {
		return a.pdbViolations < b.pdbViolations
	}
	top := func(c candidate) int32 {
		var t int32 = -1 << 31
		for _, v := range c.victims {
			t = max(t, v.Pod.GetSpec().GetPriority())
		}
		return t
	}
	if ta, tb := top(a), top(b); ta != tb {
		return ta < tb
	}
	sum := func(c candidate) int64 {
		var s int64
		for _, v := range c.victims {
			s += int64(v.Pod.GetSpec().GetPriority())
		}
		return s
	}
	if sa, sb := sum(a), sum(b); sa != sb {
		return sa < sb
	}
	return len(a.victims) < len(b.victims)
}

// violates: evicting p would break a budget that allows no disruption now.
func violates(p *framework.PodInfo, pdbs []*policyv1.PodDisruptionBudget) bool {
	for _, b := range pdbs {
		if b.GetMetadata().GetNamespace() != p.Pod.GetMetadata().GetNamespace() {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(b.GetSpec().GetSelector())
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(p.Pod.GetMetadata().GetLabels())) {
			continue
		}
		if b.GetStatus().GetDisruptionsAllowed() <= 0 {
			return true
		}
	}
	return false
}

func (s *Scheduler) pdbList(string) []*policyv1.PodDisruptionBudget {
	var out []*policyv1.PodDisruptionBudget
	for _, o := range s.pdbs.List() {
		out = append(out, o.(*policyv1.PodDisruptionBudget))
	}
	return out
}

// evict nominates the node and deletes the victims with their grace period.
func (s *Scheduler) evict(ctx context.Context, preemptor *corev1.Pod, c candidate) {
	m := preemptor.GetMetadata()
	// Victims first, then the nomination, in upstream's order: whoever sees
	// the preemptor nominated to a node finds its victims already going.
	for _, v := range c.victims {
		vm := v.Pod.GetMetadata()
		uid := vm.GetUid()
		_, err := client.For[*corev1.Pod](s.client, vm.GetNamespace()).Delete(ctx, vm.GetName(), client.DeleteOptions{Preconditions: &apipb.Preconditions{Uid: &uid}})
		if err != nil {
			s.log.Debug("deleting a preemption victim failed", "pod", vm.GetName(), "err", err)
			continue
		}
		s.event(v.Pod, "Normal", "Preempted", fmt.Sprintf("Preempted by pod %s on node %s", m.GetUid(), c.node))
	}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"nominatedNodeName": c.node}})
	if _, err := client.For[*corev1.Pod](s.client, m.GetNamespace()).Patch(ctx, m.GetName(), "merge", patch, "status"); err != nil {
		s.log.Debug("nominating failed", "pod", m.GetName(), "err", err)
	}
}
