package deployment

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

const (
	// controllerName is upstream's (--controllers, the worker count's key,
	// the queue's name).
	controllerName = "deployment"
	// component is the event source, as upstream's.
	component      = "deployment-controller"
	defaultWorkers = 5
)

var deploymentKind, _ = scheme.ForMessage(&appsv1.Deployment{})

// Controller is the deployment controller: it rolls each Deployment's pod
// template out through ReplicaSets.
type Controller struct {
	client   *client.Client
	recorder record.Recorder
	log      *slog.Logger
	now      func() time.Time
	queue    workqueue.Queue
	workers  int

	dLister   informers.Lister[*appsv1.Deployment]
	rsLister  informers.Lister[*appsv1.ReplicaSet]
	podLister informers.Lister[*corev1.Pod]
	synced    []informer.Registration
}

// New builds the controller on the shared informers of Deployments,
// ReplicaSets and Pods.
func New(cc controllers.Context) (controllers.Controller, error) {
	return newController(cc), nil
}

func newController(cc controllers.Context) *Controller {
	log := cc.Log()
	now := cc.Clock()
	workers := cc.WorkersFor(controllerName, defaultWorkers)
	d := informers.For[*appsv1.Deployment](cc.Informers)
	rs := informers.For[*appsv1.ReplicaSet](cc.Informers)
	pods := informers.For[*corev1.Pod](cc.Informers)
	c := &Controller{
		client:    cc.Client,
		recorder:  cc.EventRecorder(component),
		log:       log,
		now:       now,
		queue:     workqueue.NewWithMetrics(controllerName, cc.Registerer),
		workers:   workers,
		dLister:   d.Lister(),
		rsLister:  rs.Lister(),
		podLister: pods.Lister(),
	}
	c.synced = []informer.Registration{
		d.Informer().AddHandler(informer.Handler{
			OnAdd:    func(o scheme.Object) { c.enqueue(o.(*appsv1.Deployment)) },
			OnUpdate: func(_, o scheme.Object) { c.enqueue(o.(*appsv1.Deployment)) },
			// The sync finds it gone and does nothing; kept for symmetry
			// with upstream, which syncs deleted Deployments too.
			OnDelete: func(o scheme.Object) { c.enqueue(o.(*appsv1.Deployment)) },
		}),
		rs.Informer().AddHandler(informer.Handler{
			OnAdd:    func(o scheme.Object) { c.addReplicaSet(o.(*appsv1.ReplicaSet)) },
			OnUpdate: func(old, cur scheme.Object) { c.updateReplicaSet(old.(*appsv1.ReplicaSet), cur.(*appsv1.ReplicaSet)) },
			OnDelete: func(o scheme.Object) { c.deleteReplicaSet(o.(*appsv1.ReplicaSet)) },
		}),
		pods.Informer().AddHandler(informer.Handler{
			OnDelete: func(o scheme.Object) { c.deletePod(o.(*corev1.Pod)) },
		}),
	}
	return c
}

// Name is upstream's controller name.
func (c *Controller) Name() string { return controllerName }

// Run waits for the caches, then syncs Deployments until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return controllers.RunQueue(ctx, c.log, c.queue, c.workers, c.reconcile, c.synced...)
}

func (c *Controller) enqueue(d *appsv1.Deployment) {
	if d != nil {
		c.queue.Add(controller.KeyFunc(d))
	}
}

func (c *Controller) enqueueRateLimited(d *appsv1.Deployment) {
	c.queue.AddRateLimited(controller.KeyFunc(d))
}

func (c *Controller) enqueueAfter(d *appsv1.Deployment, after time.Duration) {
	c.queue.AddAfter(controller.KeyFunc(d), after)
}

// addReplicaSet wakes the ReplicaSet's Deployment, or for an orphan every
// Deployment that might adopt it.
func (c *Controller) addReplicaSet(rs *appsv1.ReplicaSet) {
	if rs.GetMetadata().GetDeletionTimestamp() != nil {
		// A restarted controller-manager may first see it already going.
		c.deleteReplicaSet(rs)
		return
	}
	if ref := controller.GetControllerOf(rs); ref != nil {
		c.enqueue(c.resolveControllerRef(rs.GetMetadata().GetNamespace(), ref))
		return
	}
	for _, d := range c.getDeploymentsForReplicaSet(rs) {
		c.enqueue(d)
	}
}

// updateReplicaSet wakes the old and the new controller when the
// ReplicaSet's changed hands, and for an orphan whose labels changed every
// Deployment that might adopt it now.
func (c *Controller) updateReplicaSet(old, cur *appsv1.ReplicaSet) {
	if cur.GetMetadata().GetResourceVersion() == old.GetMetadata().GetResourceVersion() {
		return
	}
	curRef, oldRef := controller.GetControllerOf(cur), controller.GetControllerOf(old)
	refChanged := !proto.Equal(curRef, oldRef)
	if refChanged && oldRef != nil {
		c.enqueue(c.resolveControllerRef(old.GetMetadata().GetNamespace(), oldRef))
	}
	if curRef != nil {
		c.enqueue(c.resolveControllerRef(cur.GetMetadata().GetNamespace(), curRef))
		return
	}
	if refChanged || !labels.Equals(cur.GetMetadata().GetLabels(), old.GetMetadata().GetLabels()) {
		for _, d := range c.getDeploymentsForReplicaSet(cur) {
			c.enqueue(d)
		}
	}
}

func (c *Controller) deleteReplicaSet(rs *appsv1.ReplicaSet) {
	if ref := controller.GetControllerOf(rs); ref != nil {
		c.enqueue(c.resolveControllerRef(rs.GetMetadata().GetNamespace(), ref))
	}
}

// deletePod wakes a Recreate Deployment once the last of its pods is gone:
// that is what it waits for before scaling the new ReplicaSet up.
func (c *Controller) deletePod(pod *corev1.Pod) {
	d := c.getDeploymentForPod(pod)
	if d == nil || d.GetSpec().GetStrategy().GetType() != RecreateDeploymentStrategyType {
		return
	}
	rsList, err := c.listReplicaSets(d)
	if err != nil {
		return
	}
	podMap, err := c.getPodMapForDeployment(d, rsList)
	if err != nil {
		return
	}
	for _, pods := range podMap {
		if len(pods) > 0 {
			return
		}
	}
	c.enqueue(d)
}

// getDeploymentForPod follows the pod's controller to its ReplicaSet and
// that one's to its Deployment.
func (c *Controller) getDeploymentForPod(pod *corev1.Pod) *appsv1.Deployment {
	ref := controller.GetControllerOf(pod)
	if ref == nil || ref.GetKind() != "ReplicaSet" {
		return nil
	}
	rs, err := c.rsLister.Get(pod.GetMetadata().GetNamespace(), ref.GetName())
	if err != nil || rs.GetMetadata().GetUid() != ref.GetUid() {
		return nil
	}
	rsRef := controller.GetControllerOf(rs)
	if rsRef == nil {
		return nil
	}
	return c.resolveControllerRef(rs.GetMetadata().GetNamespace(), rsRef)
}

// resolveControllerRef is the Deployment a controller reference names, if it
// is still the same one (same UID).
func (c *Controller) resolveControllerRef(namespace string, ref *metav1.OwnerReference) *appsv1.Deployment {
	if ref.GetKind() != deploymentKind.Kind {
		return nil
	}
	d, err := c.dLister.Get(namespace, ref.GetName())
	if err != nil || d.GetMetadata().GetUid() != ref.GetUid() {
		return nil
	}
	return d
}

// getDeploymentsForReplicaSet is every Deployment whose selector matches an
// orphan ReplicaSet; a nil or empty selector matches nothing.
func (c *Controller) getDeploymentsForReplicaSet(rs *appsv1.ReplicaSet) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, d := range c.dLister.Namespace(rs.GetMetadata().GetNamespace()).List(labels.Everything()) {
		sel, err := metav1.LabelSelectorAsSelector(d.GetSpec().GetSelector())
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(rs.GetMetadata().GetLabels())) {
			continue
		}
		out = append(out, d)
	}
	if len(out) > 1 {
		c.log.Info("More than one deployment is selecting replica set", "replicaSet", controller.KeyFunc(rs), "deployment", controller.KeyFunc(out[0]))
	}
	return out
}

// reconcile is upstream's syncDeployment. Order of precedence: deleting
// (status only), paused (scale only), a scaling event (scale), then the
// rollout of the strategy.
func (c *Controller) reconcile(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		c.log.Error("Invalid key", "key", key, "err", err)
		return nil
	}
	cached, err := c.dLister.Get(ns, name)
	if apierrors.IsNotFound(err) {
		c.log.Debug("Deployment has been deleted", "deployment", key)
		return nil
	}
	if err != nil {
		return err
	}
	d := proto.Clone(cached).(*appsv1.Deployment)
	if d.Spec == nil {
		d.Spec = &appsv1.DeploymentSpec{}
	}
	if d.Status == nil {
		d.Status = &appsv1.DeploymentStatus{}
	}

	if sel := d.Spec.GetSelector(); len(sel.GetMatchLabels()) == 0 && len(sel.GetMatchExpressions()) == 0 {
		c.recorder.Eventf(d, record.Warning, "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.")
		if d.Status.ObservedGeneration < d.Metadata.GetGeneration() {
			d.Status.ObservedGeneration = d.Metadata.GetGeneration()
			return c.updateStatus(ctx, d)
		}
		return nil
	}

	rsList, err := c.getReplicaSetsForDeployment(ctx, d)
	if err != nil {
		return err
	}
	podMap, err := c.getPodMapForDeployment(d, rsList)
	if err != nil {
		return err
	}

	if d.Metadata.GetDeletionTimestamp() != nil {
		return c.syncStatusOnly(ctx, d, rsList)
	}
	// Paused conditions first, so that a Deployment resumed after longer
	// than its deadline is not judged stuck.
	if err := c.checkPausedConditions(ctx, d); err != nil {
		return err
	}
	if d.Spec.Paused {
		return c.sync(ctx, d, rsList)
	}
	scaling, err := c.isScalingEvent(ctx, d, rsList)
	if err != nil {
		return err
	}
	if scaling {
		return c.sync(ctx, d, rsList)
	}
	switch t := d.Spec.GetStrategy().GetType(); t {
	case RecreateDeploymentStrategyType:
		return c.rolloutRecreate(ctx, d, rsList, podMap)
	case RollingUpdateDeploymentStrategyType:
		return c.rolloutRolling(ctx, d, rsList)
	default:
		return fmt.Errorf("unexpected deployment strategy type: %s", t)
	}
}

// listReplicaSets is the cached ReplicaSets the Deployment controls and
// still selects, without adopting or releasing any.
func (c *Controller) listReplicaSets(d *appsv1.Deployment) ([]*appsv1.ReplicaSet, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.GetSpec().GetSelector())
	if err != nil {
		return nil, err
	}
	var out []*appsv1.ReplicaSet
	for _, rs := range c.rsLister.Namespace(d.GetMetadata().GetNamespace()).List(sel) {
		if controller.IsControlledBy(rs, d) {
			out = append(out, rs)
		}
	}
	return out, nil
}

// getReplicaSetsForDeployment is the Deployment's ReplicaSets after
// reconciling controller references: orphans it selects are adopted (after
// a fresh read shows it is not being deleted), owned ones it no longer
// selects are released. The objects are the cache's: clone before changing.
func (c *Controller) getReplicaSetsForDeployment(ctx context.Context, d *appsv1.Deployment) ([]*appsv1.ReplicaSet, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.GetSelector())
	if err != nil {
		return nil, fmt.Errorf("deployment %s has invalid label selector: %w", controller.KeyFunc(d), err)
	}
	all := c.rsLister.Namespace(d.Metadata.GetNamespace()).List(labels.Everything())
	m := controller.NewRefManager(c.client, d, deploymentKind, sel, nil)
	claimed, err := controller.Claim(ctx, m, all)
	if err != nil {
		return nil, err
	}
	for i, rs := range claimed {
		if controller.IsControlledBy(rs, d) {
			continue
		}
		// Just adopted: the cache has yet to see the owner reference, and
		// a write based on its copy would only conflict.
		fresh, err := client.For[*appsv1.ReplicaSet](c.client, rs.Metadata.GetNamespace()).Get(ctx, rs.Metadata.GetName())
		if err != nil {
			return nil, err
		}
		claimed[i] = fresh
	}
	return claimed, nil
}

// getPodMapForDeployment groups the pods the Deployment selects by the
// ReplicaSet (of rsList) controlling them; every ReplicaSet has an entry.
func (c *Controller) getPodMapForDeployment(d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) (map[string][]*corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.GetSelector())
	if err != nil {
		return nil, err
	}
	m := make(map[string][]*corev1.Pod, len(rsList))
	for _, rs := range rsList {
		m[rs.GetMetadata().GetUid()] = nil
	}
	for _, pod := range c.podLister.Namespace(d.GetMetadata().GetNamespace()).List(sel) {
		ref := controller.GetControllerOf(pod)
		if ref == nil {
			continue
		}
		if _, ok := m[ref.GetUid()]; ok {
			m[ref.GetUid()] = append(m[ref.GetUid()], pod)
		}
	}
	return m, nil
}

// updateStatus writes d's status. d then carries the stored
// resourceVersion, so that later writes of the same sync do not conflict
// with this one.
func (c *Controller) updateStatus(ctx context.Context, d *appsv1.Deployment) error {
	out, err := client.For[*appsv1.Deployment](c.client, d.Metadata.GetNamespace()).UpdateStatus(ctx, d)
	if err != nil {
		return err
	}
	d.Metadata.ResourceVersion = out.GetMetadata().GetResourceVersion()
	return nil
}

// setDeploymentRevision writes the revision annotation of d. Upstream writes
// it with the status (its status strategy keeps annotations); our status
// subresource writes status only, so it is a merge patch of the annotation
// alone, guarded by the resourceVersion the sync started from.
func (c *Controller) setDeploymentRevision(ctx context.Context, d *appsv1.Deployment, revision string) error {
	if d.Metadata.GetAnnotations()[RevisionAnnotation] == revision {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": d.Metadata.GetResourceVersion(),
		"annotations":     map[string]string{RevisionAnnotation: revision},
	}})
	if err != nil {
		return err
	}
	out, err := client.For[*appsv1.Deployment](c.client, d.Metadata.GetNamespace()).Patch(ctx, d.Metadata.GetName(), "merge", patch, "")
	if err != nil {
		return err
	}
	SetDeploymentRevision(d, revision)
	d.Metadata.ResourceVersion = out.GetMetadata().GetResourceVersion()
	return nil
}

// writeReplicaSet updates a ReplicaSet; the resourceVersion it was read at
// guards against a stale cache.
func (c *Controller) writeReplicaSet(ctx context.Context, rs *appsv1.ReplicaSet) (*appsv1.ReplicaSet, error) {
	return client.For[*appsv1.ReplicaSet](c.client, rs.GetMetadata().GetNamespace()).Update(ctx, rs)
}
