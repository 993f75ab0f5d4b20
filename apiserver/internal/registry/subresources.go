package registry

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/watchcache"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

var (
	podKind, _       = scheme.ForResource("", "pods")
	namespaceKind, _ = scheme.ForResource("", "namespaces")
	pdbKind, _       = scheme.ForResource("policy", "poddisruptionbudgets")
)

// Bind assigns a pod to a node: spec.nodeName is set once, and a second bind
// is a Conflict, so two schedulers can never both place a pod.
func (r *Registry) Bind(ctx context.Context, b *corev1.Binding) (*watchcache.Object, error) {
	res := r.res(podKind)
	m := b.GetMetadata()
	name := m.GetName()
	node := b.GetTarget().GetName()
	if name == "" || node == "" {
		var errs field.ErrorList
		if name == "" {
			errs = append(errs, field.Required(field.NewPath("metadata", "name"), ""))
		}
		if node == "" {
			errs = append(errs, field.Required(field.NewPath("target", "name"), ""))
		}
		return nil, apierrors.NewInvalid("Binding", name, errs)
	}
	ns, key, err := res.requestKey(m.GetNamespace(), name)
	if err != nil {
		return nil, err
	}
	a := admission.NewAttributes(admission.Create, podKind, "binding", ns, name, userOf(ctx), b, nil, false)
	if err := r.cfg.Admission.Admit(ctx, a); err != nil {
		return nil, err
	}
	if err := r.cfg.Admission.Validate(ctx, a); err != nil {
		return nil, err
	}
	for {
		cur, err := res.latest(ctx, key, name)
		if err != nil {
			return nil, err
		}
		pod := proto.Clone(cur.Msg).(*corev1.Pod)
		if uid := m.GetUid(); uid != "" && uid != pod.Metadata.Uid {
			return nil, apierrors.NewConflict("pods/binding", name, fmt.Sprintf("Precondition failed: UID in precondition: %s, UID in object meta: %s", uid, pod.Metadata.Uid))
		}
		if pod.Metadata.DeletionTimestamp != nil {
			return nil, apierrors.NewConflict("pods/binding", name, "pod is being deleted, cannot be assigned to a host")
		}
		if n := pod.GetSpec().GetNodeName(); n != "" {
			return nil, apierrors.NewConflict("pods/binding", name, fmt.Sprintf("pod %s is already assigned to node %q", name, n))
		}
		if pod.Spec == nil {
			pod.Spec = &corev1.PodSpec{}
		}
		pod.Spec.NodeName = node
		for k, v := range m.GetAnnotations() {
			if pod.Metadata.Annotations == nil {
				pod.Metadata.Annotations = map[string]string{}
			}
			pod.Metadata.Annotations[k] = v
		}
		if pod.Status == nil {
			pod.Status = &corev1.PodStatus{}
		}
		setPodCondition(pod.Status, &corev1.PodCondition{Type: "PodScheduled", Status: "True", LastTransitionTime: metav1.NewTime(r.cfg.Now())})
		o, err := r.write(ctx, res, key, pod, cur, false, nil)
		if err != nil && apierrors.IsConflict(err) && ctx.Err() == nil {
			continue
		}
		return o, err
	}
}

func setPodCondition(st *corev1.PodStatus, c *corev1.PodCondition) {
	for i, old := range st.Conditions {
		if old.Type == c.Type {
			if old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}

// maxDisruptedPods is upstream's bound on evictions a budget's controller
// has not yet confirmed.
const maxDisruptedPods = 2000

// Evict deletes a pod unless a PodDisruptionBudget selecting it allows no
// disruption right now (upstream answers 429 TooManyRequests; drain retries).
// The budget's decrement is written, guarded by its resourceVersion, before
// the pod is deleted, so concurrent evictions can never take a budget below
// its floor: of two that read the same budget, one write fails and that
// eviction starts over from the new count.
func (r *Registry) Evict(ctx context.Context, e *policyv1.Eviction) (*watchcache.Object, error) {
	m := e.GetMetadata()
	name := m.GetName()
	if name == "" {
		return nil, apierrors.NewInvalid("Eviction.policy", "", field.ErrorList{field.Required(field.NewPath("metadata", "name"), "the name of the pod to evict")})
	}
	ns, key, err := r.res(podKind).requestKey(m.GetNamespace(), name)
	if err != nil {
		return nil, err
	}
	var opts DeleteOptions
	if d := e.GetDeleteOptions(); d != nil {
		opts.GracePeriodSeconds = d.GracePeriodSeconds
		if p := d.GetPreconditions(); p != nil {
			opts.Preconditions = &apipb.Preconditions{Uid: p.Uid, ResourceVersion: p.ResourceVersion}
		}
		opts.DryRun = len(d.GetDryRun()) > 0
	}
	a := admission.NewAttributes(admission.Create, podKind, "eviction", ns, name, userOf(ctx), e, nil, opts.DryRun)
	if err := r.cfg.Admission.Admit(ctx, a); err != nil {
		return nil, err
	}
	if err := r.cfg.Admission.Validate(ctx, a); err != nil {
		return nil, err
	}
	opts.skipAdmission = true
	for {
		err := r.takeDisruption(ctx, ns, key, name, opts.DryRun)
		if err != nil && apierrors.IsConflict(err) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return nil, err
		}
		return r.Delete(ctx, podKind, ns, name, opts)
	}
}

// takeDisruption spends one of the disruptions the pod's budget allows.
func (r *Registry) takeDisruption(ctx context.Context, ns, key, name string, dryRun bool) error {
	pod, err := r.res(podKind).latest(ctx, key, name)
	if err != nil {
		return err
	}
	p := pod.Msg.(*corev1.Pod)
	// Upstream lets pods that are not running, or already going, go
	// without asking their budget.
	switch p.GetStatus().GetPhase() {
	case "Succeeded", "Failed", "Pending":
		return nil
	}
	if p.GetMetadata().GetDeletionTimestamp() != nil {
		return nil
	}
	pdbs := r.res(pdbKind)
	list, err := pdbs.cache.List(ctx, watchcache.ListOptions{Filter: watchcache.Filter{Namespace: ns}})
	if err != nil {
		return apierrors.NewInternal(err)
	}
	var match *watchcache.Object
	for _, o := range list.Items {
		sel, err := metav1.LabelSelectorAsSelector(o.Msg.(*policyv1.PodDisruptionBudget).GetSpec().GetSelector())
		if err != nil || sel.Empty() || !sel.Matches(pod.Labels) {
			continue
		}
		if match != nil {
			return apierrors.NewInternal(errors.New("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."))
		}
		match = o
	}
	if match == nil {
		return nil
	}
	// The cache may lag: read the budget as stored, and write against it.
	cur, err := pdbs.latest(ctx, match.Key, match.Msg.(scheme.Object).GetMetadata().GetName())
	if err != nil {
		return err
	}
	pdb := proto.Clone(cur.Msg).(*policyv1.PodDisruptionBudget)
	st := pdb.GetStatus()
	violation := func(why string) error {
		return apierrors.New(apierrors.ReasonTooManyReqs, "Cannot evict pod as it would violate the pod's disruption budget. "+why, nil)
	}
	switch {
	case st.GetObservedGeneration() < pdb.Metadata.Generation:
		return violation(fmt.Sprintf("The disruption budget %s is still being processed by the server.", pdb.Metadata.Name))
	case st.GetDisruptionsAllowed() < 0:
		return apierrors.NewForbidden("poddisruptionbudgets.policy", pdb.Metadata.Name, "pdb disruptions allowed is negative")
	case len(st.GetDisruptedPods()) > maxDisruptedPods:
		return apierrors.NewForbidden("poddisruptionbudgets.policy", pdb.Metadata.Name, "DisruptedPods map too big - too many evictions not confirmed by PDB controller")
	case st.GetDisruptionsAllowed() == 0:
		return violation(fmt.Sprintf("The disruption budget %s needs %d healthy pods and has %d currently", pdb.Metadata.Name, st.GetDesiredHealthy(), st.GetCurrentHealthy()))
	}
	if dryRun {
		return nil
	}
	st.DisruptionsAllowed--
	if st.DisruptedPods == nil {
		st.DisruptedPods = map[string]*metav1.Time{}
	}
	st.DisruptedPods[name] = metav1.NewTime(r.cfg.Now())
	_, err = r.write(ctx, pdbs, cur.Key, pdb, cur, false, nil)
	return err
}

// defaultNamespaces exist from the first start, as upstream.
var defaultNamespaces = []string{"default", "kube-system", "kube-public", "kube-node-lease"}

func (r *Registry) ensureNamespaces(ctx context.Context) error {
	for _, name := range defaultNamespaces {
		if _, ok := r.res(namespaceKind).cache.Get(name); ok {
			continue
		}
		ns := &corev1.Namespace{Metadata: &metav1.ObjectMeta{Name: name}}
		if _, err := r.Create(ctx, namespaceKind, "", ns, false); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", name, err)
		}
	}
	return nil
}
