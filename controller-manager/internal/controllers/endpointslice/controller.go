// Package endpointslice is upstream's EndpointSlice controller: for every
// Service with a selector, EndpointSlices listing the selected pods.
//
// Kept from upstream (pkg/controller/endpointslice and the k8s.io/endpointslice
// reconciler): one endpoint per pod with an IP of the slice's address family
// (IPv4 and/or IPv6 from spec.ipFamilies), conditions ready/serving/terminating
// (publishNotReadyAddresses makes every endpoint ready), nodeName, the
// node's topology.kubernetes.io/zone, the hostname of pods whose
// hostname+subdomain name the Service, and a targetRef to the pod; ports from
// the Service with named target ports resolved per pod, slices grouped by
// port set, at most 100 endpoints each (--max-endpoints-per-slice); the
// reconciler's churn minimisation (planSlices); one empty placeholder slice
// for a Service with no endpoints; labels kubernetes.io/service-name,
// endpointslice.kubernetes.io/managed-by, service.kubernetes.io/headless and
// the Service's own; an owner reference to the Service, so the garbage
// collector deletes the slices with it; the last-change-trigger-time
// annotation; the endpoint_slice_controller_* metrics; the tracker that
// refuses to act on a cache behind its own writes (here by resourceVersion,
// see sliceTracker).
//
// Left out: topology hints (the service.kubernetes.io/topology-mode
// annotation and spec.trafficDistribution), the endpoint-updates batch
// period, and the slow 1 s retry backoff upstream gives this queue (ours
// uses the default controller rate limiter).
//
// The pod → endpoint decision (PodEndpoint and its helpers) is exported:
// the Endpoints controller uses the same one.
package endpointslice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Name is upstream's --controllers alias.
const Name = "endpointslice"

// DefaultMaxEndpointsPerSlice is upstream's --max-endpoints-per-slice.
const DefaultMaxEndpointsPerSlice = 100

// sliceChangeDelay batches the syncs a burst of slice events asks for
// (upstream's endpointSliceChangeMinSyncDelay).
const sliceChangeDelay = time.Second

// Config are the knobs controllers.Options does not carry.
type Config struct {
	// MaxEndpointsPerSlice caps each slice (DefaultMaxEndpointsPerSlice
	// when 0).
	MaxEndpointsPerSlice int
}

// Controller keeps every selector Service's EndpointSlices.
type Controller struct {
	client   *client.Client
	services informers.Lister[*corev1.Service]
	pods     informers.Lister[*corev1.Pod]
	nodes    informers.Lister[*corev1.Node]
	slices   informers.Lister[*discoveryv1.EndpointSlice]
	synced   []informer.Registration
	queue    workqueue.Queue
	recorder record.Recorder
	log      *slog.Logger
	workers  int

	maxPerSlice int
	tracker     *sliceTracker
	triggers    *TriggerTimeTracker
	metrics     *metrics
}

// New builds the controller with upstream's defaults.
func New(cc controllers.Context) (controllers.Controller, error) {
	return NewWithConfig(cc, Config{MaxEndpointsPerSlice: cc.Options.MaxEndpointsPerSlice})
}

// NewWithConfig builds the controller; its queue holds Service keys.
func NewWithConfig(cc controllers.Context, cfg Config) (*Controller, error) {
	if cfg.MaxEndpointsPerSlice == 0 {
		cfg.MaxEndpointsPerSlice = DefaultMaxEndpointsPerSlice
	}
	if cfg.MaxEndpointsPerSlice < 1 || cfg.MaxEndpointsPerSlice > 1000 {
		return nil, fmt.Errorf("--max-endpoints-per-slice: must lie between 1 and 1000, got %d", cfg.MaxEndpointsPerSlice)
	}
	svcs := informers.For[*corev1.Service](cc.Informers)
	pods := informers.For[*corev1.Pod](cc.Informers)
	nodes := informers.For[*corev1.Node](cc.Informers)
	slices := informers.For[*discoveryv1.EndpointSlice](cc.Informers)
	log := cc.Log()
	c := &Controller{
		client: cc.Client, services: svcs.Lister(), pods: pods.Lister(), nodes: nodes.Lister(), slices: slices.Lister(),
		queue:    workqueue.NewWithMetrics("endpoint_slice", cc.Registerer),
		recorder: cc.EventRecorder("endpoint-slice-controller"),
		log:      log,
		workers:  cc.WorkersFor(Name, 5),

		maxPerSlice: cfg.MaxEndpointsPerSlice,
		tracker:     newSliceTracker(),
		triggers:    NewTriggerTimeTracker(),
		metrics:     newMetrics(cc.Registerer, cfg.MaxEndpointsPerSlice),
	}
	forServices, forPods := ServiceHandlers(c.services, c.queue)
	c.synced = append(c.synced,
		svcs.Informer().AddHandler(forServices),
		pods.Informer().AddHandler(forPods),
		slices.Informer().AddHandler(informer.Handler{
			OnAdd: func(o scheme.Object) { c.onSliceAdd(o.(*discoveryv1.EndpointSlice)) },
			OnUpdate: func(old, cur scheme.Object) {
				c.onSliceUpdate(old.(*discoveryv1.EndpointSlice), cur.(*discoveryv1.EndpointSlice))
			},
			OnDelete: func(o scheme.Object) { c.onSliceDelete(o.(*discoveryv1.EndpointSlice)) },
		}),
		// Nodes are only read (for zones): their cache must be full, no
		// handler needed.
		nodes.Informer(),
	)
	return c, nil
}

func (c *Controller) Name() string { return Name }

// Run waits for the caches, then syncs Services until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.log.Info("Starting controller")
	defer c.log.Info("Shutting down controller")
	if !informers.WaitForCacheSync(ctx, c.synced...) {
		return nil
	}
	controller.Run(ctx, c.queue, c.workers, c.syncAndCount, c.log)
	return nil
}

// ServiceHandlers queue a Service's key when it changes, and the keys of
// the Services selecting a pod when the pod changes in a way that matters
// to them: the handlers of every controller whose queue holds Services
// (this one and the Endpoints controller).
func ServiceHandlers(services informers.Lister[*corev1.Service], q workqueue.Queue) (forServices, forPods informer.Handler) {
	enqueue := func(o scheme.Object) { q.Add(controller.KeyFunc(o)) }
	forServices = informer.Handler{OnAdd: enqueue, OnUpdate: func(_, o scheme.Object) { enqueue(o) }, OnDelete: enqueue}
	inNamespace := func(p *corev1.Pod) []*corev1.Service {
		return services.Namespace(p.GetMetadata().GetNamespace()).List(labels.Everything())
	}
	onPod := func(o scheme.Object) {
		p := o.(*corev1.Pod)
		for k := range ServicesForPod(inNamespace(p), p) {
			q.Add(k)
		}
	}
	forPods = informer.Handler{
		OnAdd: onPod,
		OnUpdate: func(old, cur scheme.Object) {
			for k := range ServicesToUpdate(inNamespace(cur.(*corev1.Pod)), old.(*corev1.Pod), cur.(*corev1.Pod)) {
				q.Add(k)
			}
		},
		OnDelete: onPod,
	}
	return forServices, forPods
}

func managedByUs(s *discoveryv1.EndpointSlice) bool {
	return s.GetMetadata().GetLabels()[LabelManagedBy] == ControllerName
}

// A slice event syncs its Service only when it is not the echo of this
// controller's own write: someone else changed or deleted one of its slices,
// or took one over or gave one back.
func (c *Controller) onSliceAdd(s *discoveryv1.EndpointSlice) {
	if managedByUs(s) && c.tracker.shouldSync(s) {
		c.enqueueForSlice(s)
	}
}

func (c *Controller) onSliceUpdate(old, cur *discoveryv1.EndpointSlice) {
	// A changed service-name label moves the slice between Services.
	if old.GetMetadata().GetLabels()[LabelServiceName] != cur.GetMetadata().GetLabels()[LabelServiceName] {
		c.enqueueForSlice(cur)
		c.enqueueForSlice(old)
		return
	}
	if managedByUs(old) != managedByUs(cur) || (managedByUs(cur) && c.tracker.shouldSync(cur)) {
		c.enqueueForSlice(cur)
	}
}

func (c *Controller) onSliceDelete(s *discoveryv1.EndpointSlice) {
	if managedByUs(s) && c.tracker.has(s) && !c.tracker.handleDeletion(s) {
		c.enqueueForSlice(s)
	}
}

func (c *Controller) enqueueForSlice(s *discoveryv1.EndpointSlice) {
	name := s.GetMetadata().GetLabels()[LabelServiceName]
	if name == "" {
		return
	}
	c.queue.AddAfter(s.GetMetadata().GetNamespace()+"/"+name, sliceChangeDelay)
}

// errStale is a sync refused because the cache has not seen this
// controller's last writes; the retry comes after the cache catches up.
var errStale = errors.New("EndpointSlice informer cache is out of date")

// syncAndCount is reconcile with the syncs{result} counter.
func (c *Controller) syncAndCount(ctx context.Context, key string) error {
	err := c.reconcile(ctx, key)
	result := "success"
	switch {
	case errors.Is(err, errStale):
		result = "stale"
	case err != nil:
		result = "error"
	}
	c.metrics.syncs.WithLabelValues(result).Inc()
	return err
}

func (c *Controller) reconcile(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key we made; retrying cannot help
	}
	svc, err := c.services.Get(ns, name)
	if apierrors.IsNotFound(err) {
		// The garbage collector deletes the slices through their owner
		// reference; only our bookkeeping is left to drop.
		c.triggers.Forget(ns, name)
		c.tracker.forget(key)
		c.metrics.deleteService(key)
		return nil
	}
	if err != nil {
		return err
	}
	// ExternalName Services have no endpoints; Services without a selector
	// get theirs from someone else.
	if svc.GetSpec().GetType() == "ExternalName" || svc.GetSpec().GetSelector() == nil {
		return nil
	}

	pods := c.pods.Namespace(ns).List(labels.SelectorFromValidatedSet(svc.GetSpec().GetSelector()))
	var existing []*discoveryv1.EndpointSlice
	for _, s := range c.slices.Namespace(ns).List(labels.SelectorFromValidatedSet(labels.Set{
		LabelServiceName: name, LabelManagedBy: ControllerName,
	})) {
		// Slices being deleted are on their way out; counting them
		// would wedge the controller until they are gone.
		if s.GetMetadata().GetDeletionTimestamp() == nil {
			existing = append(existing, s)
		}
	}
	if c.tracker.stale(key, svc.GetMetadata().GetUid(), existing) {
		return errStale
	}
	// Computed before planning so the tracker's state moves even when the
	// sync writes nothing.
	trigger := c.triggers.Compute(svc, pods)

	p, planErr := planSlices(planInput{
		service: svc, pods: pods, existing: existing,
		zone:        c.zoneOf,
		maxPerSlice: c.maxPerSlice,
		triggerTime: trigger,
	})
	c.metrics.added.WithLabelValues().Observe(float64(p.added))
	c.metrics.removed.WithLabelValues().Observe(float64(p.removed))
	c.metrics.setService(key, p.efficiency)

	if err := c.apply(ctx, svc, p); err != nil {
		c.recorder.Eventf(svc, record.Warning, "FailedToUpdateEndpointSlices",
			"Error updating Endpoint Slices for Service %s/%s: %v", ns, name, err)
		return err
	}
	return planErr
}

func (c *Controller) zoneOf(node string) (string, bool) {
	n, err := c.nodes.Get("", node)
	if err != nil {
		return "", false
	}
	return n.GetMetadata().GetLabels()[LabelTopologyZone], true
}

// apply writes a plan: creates, then updates, then deletes, so a Service's
// endpoints are never all gone in between.
func (c *Controller) apply(ctx context.Context, svc *corev1.Service, p plan) error {
	ns := svc.GetMetadata().GetNamespace()
	api := client.For[*discoveryv1.EndpointSlice](c.client, ns)
	changed := 0
	defer func() {
		c.metrics.changedPerSync.WithLabelValues("Disabled", "").Observe(float64(changed))
	}()
	// A Service being deleted gets no new slices: the garbage collector
	// would race to delete them.
	if svc.GetMetadata().GetDeletionTimestamp() == nil {
		for _, s := range p.create {
			created, err := api.Create(ctx, s)
			if err != nil {
				if apierrors.IsForbidden(err) && c.namespaceTerminating(ctx, ns) {
					return nil // creates keep failing until the namespace is gone
				}
				return fmt.Errorf("failed to create EndpointSlice for Service %s/%s: %w", ns, svc.GetMetadata().GetName(), err)
			}
			c.tracker.update(created)
			c.metrics.changes.WithLabelValues("create").Inc()
			changed++
		}
	}
	for _, s := range p.update {
		updated, err := api.Update(ctx, s)
		if err != nil {
			return fmt.Errorf("failed to update %s EndpointSlice for Service %s/%s: %w", s.GetMetadata().GetName(), ns, svc.GetMetadata().GetName(), err)
		}
		c.tracker.update(updated)
		c.metrics.changes.WithLabelValues("update").Inc()
		changed++
	}
	for _, s := range p.delete {
		_, err := api.Delete(ctx, s.GetMetadata().GetName(), client.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("failed to delete %s EndpointSlice for Service %s/%s: %w", s.GetMetadata().GetName(), ns, svc.GetMetadata().GetName(), err)
		}
		c.tracker.expectDeletion(s)
		c.metrics.changes.WithLabelValues("delete").Inc()
		changed++
	}
	return nil
}

// namespaceTerminating asks the apiserver (the Forbidden just came from
// it; a cache may not know yet).
func (c *Controller) namespaceTerminating(ctx context.Context, ns string) bool {
	n, err := client.For[*corev1.Namespace](c.client, "").Get(ctx, ns)
	return err == nil && (n.GetStatus().GetPhase() == "Terminating" || n.GetMetadata().GetDeletionTimestamp() != nil)
}
