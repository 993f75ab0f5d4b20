package namespace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/sets"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// FinalizerKubernetes is the spec finalizer the apiserver gives every
// namespace and this controller removes once the namespace is empty.
const FinalizerKubernetes = "kubernetes"

const (
	// finalizerEstimateSeconds is upstream's guess at how long the
	// controllers owning the finalizers on remaining content take.
	finalizerEstimateSeconds int64 = 15
	// listPageSize bounds one List of a kind in the namespace: a namespace
	// may hold far more objects than one response should carry.
	listPageSize = 500
)

// ResourcesRemainingError says the content is going but not gone yet: a
// pod's grace period or another controller's finalizer is still running.
// Estimate is upstream's: seconds until it is likely gone.
type ResourcesRemainingError struct {
	Estimate int64
}

func (e *ResourcesRemainingError) Error() string {
	return fmt.Sprintf("some content remains in the namespace, estimate %d seconds before it is removed", e.Estimate)
}

// deleter empties a terminating namespace and then finalizes it, as
// upstream's namespacedResourcesDeleter. Every read is a live one: a lagging
// cache would let the namespace be finalized over content it did not see.
type deleter struct {
	client *client.Client
	// discover lists what the server serves (the client's Discovery).
	discover func(ctx context.Context) ([]*apipb.APIResource, error)
	now      func() time.Time
	log      *slog.Logger
}

// Delete deletes the content of the namespace name if it is being deleted,
// then removes FinalizerKubernetes from its spec. It returns a
// *ResourcesRemainingError while content is still going away; the caller
// is to come back later until it returns nil.
func (d *deleter) Delete(ctx context.Context, name string) error {
	ns, err := client.For[*corev1.Namespace](d.client, "").Get(ctx, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.GetMetadata().GetDeletionTimestamp() == nil {
		return nil
	}
	ns, err = d.retryOnConflict(ctx, ns, d.ensureTerminating)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !slices.Contains(ns.GetSpec().GetFinalizers(), FinalizerKubernetes) {
		return nil // finalized already; the rest is for other finalizers' owners
	}
	ns, estimate, err := d.deleteAllContent(ctx, ns)
	if err != nil {
		return err
	}
	if estimate > 0 {
		return &ResourcesRemainingError{Estimate: estimate}
	}
	_, err = d.retryOnConflict(ctx, ns, d.finalize)
	if apierrors.IsNotFound(err) {
		// Another controller sharing the finalizer finished first.
		return nil
	}
	return err
}

// retryOnConflict runs fn on the newest namespace until it does not
// conflict, refusing to carry on against a namespace recreated meanwhile.
func (d *deleter) retryOnConflict(ctx context.Context, ns *corev1.Namespace, fn func(context.Context, *corev1.Namespace) (*corev1.Namespace, error)) (*corev1.Namespace, error) {
	latest := ns
	var out *corev1.Namespace
	err := controller.RetryOnConflict(func() error {
		var err error
		out, err = fn(ctx, latest)
		if !apierrors.IsConflict(err) {
			return err
		}
		fresh, gerr := client.For[*corev1.Namespace](d.client, "").Get(ctx, latest.GetMetadata().GetName())
		if gerr != nil {
			return gerr
		}
		if fresh.GetMetadata().GetUid() != latest.GetMetadata().GetUid() {
			return errors.New("namespace uid has changed across retries")
		}
		latest = fresh
		return err
	})
	return out, err
}

// ensureTerminating sets the phase the apiserver sets on delete, should a
// writer have reverted it.
func (d *deleter) ensureTerminating(ctx context.Context, ns *corev1.Namespace) (*corev1.Namespace, error) {
	if ns.GetStatus().GetPhase() == "Terminating" {
		return ns, nil
	}
	next := proto.Clone(ns).(*corev1.Namespace)
	if next.Status == nil {
		next.Status = &corev1.NamespaceStatus{}
	}
	next.Status.Phase = "Terminating"
	return client.For[*corev1.Namespace](d.client, "").UpdateStatus(ctx, next)
}

// finalize removes FinalizerKubernetes from spec.finalizers. Upstream
// writes through the namespaces/finalize subresource; Skiff's apiserver
// serves none, and its Update lets spec.finalizers change, so this is an
// Update guarded by the namespace's resourceVersion. With spec.finalizers
// and metadata.finalizers both empty the apiserver removes the namespace.
func (d *deleter) finalize(ctx context.Context, ns *corev1.Namespace) (*corev1.Namespace, error) {
	rest := sets.New(ns.GetSpec().GetFinalizers()...)
	rest.Delete(FinalizerKubernetes)
	next := proto.Clone(ns).(*corev1.Namespace)
	if next.Spec == nil {
		next.Spec = &corev1.NamespaceSpec{}
	}
	next.Spec.Finalizers = sets.List(rest)
	return client.For[*corev1.Namespace](d.client, "").Update(ctx, next)
}

// deleteAllContent deletes every namespaced object in ns and reports, in
// ns's status conditions, what remains and what failed. It returns ns as
// last written, the seconds the remaining content likely needs (0: none
// remains) and every failure; one kind failing does not stop the others.
func (d *deleter) deleteAllContent(ctx context.Context, ns *corev1.Namespace) (*corev1.Namespace, int64, error) {
	var (
		errs     []error
		u        conditionUpdater
		estimate int64
	)
	resources, err := d.discover(ctx)
	if err != nil {
		errs = append(errs, err)
		u.discoveryErr(err)
	}
	kinds, err := deletableKinds(resources)
	if err != nil {
		errs = append(errs, err)
		u.groupVersionErr(err)
	}
	deletedAt := ns.GetMetadata().GetDeletionTimestamp().AsTime()
	remaining, finalizers := map[string]int{}, map[string]int{}
	for _, k := range kinds {
		r, err := d.deleteKind(ctx, k, ns.GetMetadata().GetName(), deletedAt)
		if err != nil {
			errs = append(errs, err)
			u.deleteContentErr(err)
		}
		estimate = max(estimate, r.estimate)
		if r.remaining > 0 {
			remaining[k.Resource+"."+k.Group] = r.remaining
			for f, n := range r.finalizers {
				finalizers[f] += n
			}
		}
	}
	u.contentTotals(remaining, finalizers)
	// Written whenever it changed, so that a failure that cleared shows as
	// cleared even while the namespace waits on other finalizers.
	next := proto.Clone(ns).(*corev1.Namespace)
	if next.Status == nil {
		next.Status = &corev1.NamespaceStatus{}
	}
	if u.update(next.Status, d.now()) {
		written, err := client.For[*corev1.Namespace](d.client, "").UpdateStatus(ctx, next)
		if err != nil {
			// As upstream: the conditions are a report; the deletion goes on.
			d.log.Info("Couldn't update status condition for namespace", "namespace", ns.GetMetadata().GetName(), "err", err)
		} else {
			ns = written
		}
	}
	return ns, estimate, errors.Join(errs...)
}

// deletableKinds are the namespaced resources the server can list and
// delete, in discovery order but events last: the teardown of everything
// else is what the events describe. A resource this binary has no type for
// is an error, so that the namespace is not finalized over content it
// cannot see.
func deletableKinds(resources []*apipb.APIResource) ([]*scheme.Kind, error) {
	var (
		kinds, last []*scheme.Kind
		errs        []error
	)
	for _, r := range resources {
		if !r.GetNamespaced() || !slices.Contains(r.GetVerbs(), "delete") || !slices.Contains(r.GetVerbs(), "list") {
			continue
		}
		k, ok := scheme.ForResource(r.GetGroup(), r.GetResource())
		if !ok || k.Version != r.GetVersion() {
			errs = append(errs, fmt.Errorf("no type known for resource %q in group version %q", r.GetResource(), apiVersion(r.GetGroup(), r.GetVersion())))
			continue
		}
		if k.Group == "" && k.Resource == "events" {
			last = append(last, k)
			continue
		}
		kinds = append(kinds, k)
	}
	return append(kinds, last...), errors.Join(errs...)
}

func apiVersion(group, version string) string {
	if group == "" {
		return version
	}
	return group + "/" + version
}

// kindResult is what remains of one kind after a pass.
type kindResult struct {
	estimate   int64
	remaining  int
	finalizers map[string]int
}

// deleteKind deletes every object of k in namespace, then lists again to
// count what remains, as upstream's deleteAllContentForGroupVersionResource.
func (d *deleter) deleteKind(ctx context.Context, k *scheme.Kind, namespace string, deletedAt time.Time) (kindResult, error) {
	dyn := d.client.Resource(k, namespace)
	var grace int64
	err := each(ctx, dyn, func(o scheme.Object) error {
		if p, ok := o.(*corev1.Pod); ok {
			grace = max(grace, podGrace(p))
		}
		m := o.GetMetadata()
		if m.GetDeletionTimestamp() != nil {
			return nil // going already; deleting again changes nothing
		}
		// Background, as upstream: the namespace controller removes the
		// dependents itself, so nothing should wait on orphaning them.
		_, err := dyn.Delete(ctx, m.GetName(), client.DeleteOptions{PropagationPolicy: "Background"})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	if apierrors.IsNotFound(err) {
		return kindResult{}, nil // the server stopped serving the kind
	}
	// The pods' grace is counted from the namespace's deletion: past it,
	// a pod that is still there is not waiting on its grace period.
	var estimate int64
	if d.now().Sub(deletedAt) < time.Duration(grace)*time.Second {
		estimate = grace
	}
	if err != nil {
		return kindResult{estimate: estimate}, err
	}
	r := kindResult{estimate: estimate, finalizers: map[string]int{}}
	err = each(ctx, dyn, func(o scheme.Object) error {
		r.remaining++
		for _, f := range o.GetMetadata().GetFinalizers() {
			r.finalizers[f]++
		}
		return nil
	})
	if err != nil {
		return kindResult{estimate: estimate}, err
	}
	switch {
	case r.remaining == 0:
		return kindResult{}, nil
	case estimate > 0:
		return r, nil
	case len(r.finalizers) > 0:
		// Waiting on the finalizers' owners is normal.
		r.estimate = finalizerEstimateSeconds
		return r, nil
	}
	// Nothing holds it, so it should have gone.
	return r, fmt.Errorf("unexpected items still remain in namespace: %s for gvr: %s/%s, Resource=%s", namespace, k.Group, k.Version, k.Resource)
}

// podGrace is how long a pod that is not finished may take to stop once
// deleted: its spec's grace period, which the apiserver defaults.
func podGrace(p *corev1.Pod) int64 {
	switch p.GetStatus().GetPhase() {
	case "Succeeded", "Failed":
		return 0
	}
	return p.GetSpec().GetTerminationGracePeriodSeconds()
}

// each calls fn on every object of dyn's kind and namespace, a page at a
// time, stopping at the first error.
func each(ctx context.Context, dyn *client.Dynamic, fn func(scheme.Object) error) error {
	opts := client.ListOptions{Limit: listPageSize}
	for {
		l, err := dyn.List(ctx, opts)
		if err != nil {
			return err
		}
		for _, o := range l.Items {
			if err := fn(o); err != nil {
				return err
			}
		}
		if l.Continue == "" {
			return nil
		}
		opts.Continue = l.Continue
	}
}
