package registry

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"skiff.dev/apiserver/internal/watchcache"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apierrors"
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
	ns := m.GetNamespace()
	if ns == "" {
		ns = "default"
	}
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
	key := res.key(ns, name)
	for attempt := 0; ; attempt++ {
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
		o, err := r.write(ctx, res, key, pod, cur, false)
		if err != nil && apierrors.IsConflict(err) && attempt < 5 {
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

// Evict deletes a pod unless a PodDisruptionBudget selecting it allows no
// disruption right now (upstream answers 429 TooManyRequests; drain retries).
func (r *Registry) Evict(ctx context.Context, e *policyv1.Eviction) (*watchcache.Object, error) {
	m := e.GetMetadata()
	ns := m.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	pod, err := r.Get(ctx, podKind, ns, m.GetName(), "")
	if err != nil {
		return nil, err
	}
	p := pod.Msg.(*corev1.Pod)
	switch p.GetStatus().GetPhase() {
	case "Succeeded", "Failed":
	default:
		list, err := r.res(pdbKind).cache.List(ctx, watchcache.ListOptions{Filter: watchcache.Filter{Namespace: ns}})
		if err != nil {
			return nil, apierrors.NewInternal(err)
		}
		for _, o := range list.Items {
			pdb := o.Msg.(*policyv1.PodDisruptionBudget)
			sel, err := metav1.LabelSelectorAsSelector(pdb.GetSpec().GetSelector())
			if err != nil || sel.Empty() || !sel.Matches(pod.Labels) {
				continue
			}
			if pdb.GetStatus().GetDisruptionsAllowed() <= 0 {
				return nil, apierrors.New(apierrors.ReasonTooManyReqs,
					fmt.Sprintf("Cannot evict pod as it would violate the pod's disruption budget. The disruption budget %s needs %d healthy pods and has %d currently",
						pdb.Metadata.Name, pdb.GetStatus().GetDesiredHealthy(), pdb.GetStatus().GetCurrentHealthy()), nil)
			}
		}
	}
	var opts DeleteOptions
	if d := e.GetDeleteOptions(); d != nil {
		opts.GracePeriodSeconds = d.GracePeriodSeconds
	}
	return r.Delete(ctx, podKind, ns, m.GetName(), opts)
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
