// Package endpoints is upstream's Endpoints controller ("endpoint" in
// --controllers): the legacy core/v1 Endpoints object, named as its
// Service, for every Service with a selector.
//
// Kept from upstream (pkg/controller/endpoint): which pods count and how
// comes from endpointslice.PodEndpoint, shared with the EndpointSlice
// controller, with this controller's one difference, that terminating pods
// are left out unless the Service publishes not-ready addresses; one
// address per pod, of the Service's first IP family; ready pods under
// addresses, the others under notReadyAddresses; a named targetPort
// resolved per pod; subsets repacked canonically (repackSubsets), so the
// object is written only when its content changes; at most 1000 addresses,
// truncated with endpoints.kubernetes.io/over-capacity: truncated; the
// last-change-trigger-time annotation; the Service's labels plus
// service.kubernetes.io/headless for a headless Service and, as upstream
// since 1.33, endpoints.kubernetes.io/managed-by: endpoint-controller; the
// Endpoints deleted with its Service; at start, Endpoints this controller
// manages whose Service is gone are deleted too (the leader-election
// record excepted).
//
// Left out: the endpoint-updates batch period.
package endpoints

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"strconv"
	"sync"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/endpointslice"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Name is upstream's --controllers alias.
const Name = "endpoint"

const (
	// MaxCapacity is the most addresses an Endpoints object holds.
	MaxCapacity = 1000
	// AnnotationOverCapacity says the addresses were cut to MaxCapacity.
	AnnotationOverCapacity = "endpoints.kubernetes.io/over-capacity"
	// LabelManagedBy marks Endpoints this controller writes.
	LabelManagedBy = "endpoints.kubernetes.io/managed-by"
	// ControllerName is this controller's LabelManagedBy value.
	ControllerName = "endpoint-controller"

	truncated = "truncated"
	// leaderAnnotation marks an Endpoints used as a leader-election lock
	// by old components: it has no Service and must not be cleaned up.
	leaderAnnotation = "control-plane.alpha.kubernetes.io/leader"
)

// Controller keeps every selector Service's Endpoints.
type Controller struct {
	client    *client.Client
	services  informers.Lister[*corev1.Service]
	pods      informers.Lister[*corev1.Pod]
	endpoints informers.Lister[*corev1.Endpoints]
	synced    []informer.Registration
	queue     workqueue.Queue
	recorder  record.Recorder
	log       *slog.Logger
	workers   int

	triggers *endpointslice.TriggerTimeTracker
	written  *writeTracker
}

// New builds the controller; its queue holds Service keys.
func New(cc controllers.Context) (controllers.Controller, error) {
	svcs := informers.For[*corev1.Service](cc.Informers)
	pods := informers.For[*corev1.Pod](cc.Informers)
	eps := informers.For[*corev1.Endpoints](cc.Informers)
	log := cc.Log()
	c := &Controller{
		client: cc.Client, services: svcs.Lister(), pods: pods.Lister(), endpoints: eps.Lister(),
		queue:    workqueue.NewWithMetrics("endpoint", cc.Registerer),
		recorder: cc.EventRecorder("endpoint-controller"),
		log:      log,
		workers:  cc.WorkersFor(Name, 5),
		triggers: endpointslice.NewTriggerTimeTracker(),
		written:  &writeTracker{rv: map[string]int64{}},
	}
	forServices, forPods := endpointslice.ServiceHandlers(c.services, c.queue)
	c.synced = append(c.synced,
		svcs.Informer().AddHandler(forServices),
		pods.Informer().AddHandler(forPods),
		// A deleted Endpoints is recreated if its Service still wants one.
		eps.Informer().AddHandler(informer.Handler{
			OnDelete: func(o scheme.Object) {
				c.written.forget(controller.KeyFunc(o))
				c.queue.Add(controller.KeyFunc(o))
			},
		}),
	)
	return c, nil
}

func (c *Controller) Name() string { return Name }

// Run waits for the caches, queues the Endpoints it manages once (to clean
// up those whose Service went while it was down), then syncs until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.log.Info("Starting controller")
	defer c.log.Info("Shutting down controller")
	if !informers.WaitForCacheSync(ctx, c.synced...) {
		return nil
	}
	c.queueLeftovers()
	controller.Run(ctx, c.queue, c.workers, c.reconcile, c.log)
	return nil
}

func (c *Controller) queueLeftovers() {
	for _, e := range c.endpoints.List(labels.SelectorFromValidatedSet(labels.Set{LabelManagedBy: ControllerName})) {
		if _, lock := e.GetMetadata().GetAnnotations()[leaderAnnotation]; lock {
			continue
		}
		c.queue.Add(controller.KeyFunc(e))
	}
}

// errStale is a sync refused because the cache has not seen this
// controller's last write of the object.
var errStale = errors.New("endpoints informer cache is out of date")

func (c *Controller) reconcile(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key we made; retrying cannot help
	}
	api := client.For[*corev1.Endpoints](c.client, ns)
	svc, err := c.services.Get(ns, name)
	if apierrors.IsNotFound(err) {
		// The Service went: its Endpoints go too. Asked of the apiserver,
		// not the cache, which may not have seen a recent create.
		if _, err := api.Delete(ctx, name, client.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		c.triggers.Forget(ns, name)
		c.written.forget(key)
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
	// Computed before comparing so the tracker's state moves even when the
	// sync writes nothing.
	trigger := c.triggers.Compute(svc, pods)
	subsets := desiredSubsets(svc, pods)

	cur, err := c.endpoints.Get(ns, name)
	create := apierrors.IsNotFound(err)
	if err != nil && !create {
		return err
	}
	if c.written.stale(key, cur) {
		return errStale
	}

	want := &corev1.Endpoints{Metadata: &metav1.ObjectMeta{Name: name, Namespace: ns}}
	if !create {
		want = proto.Clone(cur).(*corev1.Endpoints)
	}
	want.Subsets = subsets
	m := want.Metadata
	m.Labels = maps.Clone(svc.GetMetadata().GetLabels())
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	if endpointslice.IsHeadless(svc) {
		m.Labels[endpointslice.LabelHeadless] = ""
	} else {
		delete(m.Labels, endpointslice.LabelHeadless)
	}
	m.Labels[LabelManagedBy] = ControllerName
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	if truncate(want.Subsets, MaxCapacity) {
		m.Annotations[AnnotationOverCapacity] = truncated
	} else {
		delete(m.Annotations, AnnotationOverCapacity)
	}
	if !create && subsetsEqual(cur.GetSubsets(), want.Subsets) && maps.Equal(cur.GetMetadata().GetLabels(), m.Labels) &&
		cur.GetMetadata().GetAnnotations()[AnnotationOverCapacity] == m.Annotations[AnnotationOverCapacity] {
		return nil
	}
	// The trigger time rides along with a write; alone it causes none.
	if trigger.IsZero() {
		delete(m.Annotations, endpointslice.AnnotationLastChangeTriggerTime)
	} else {
		m.Annotations[endpointslice.AnnotationLastChangeTriggerTime] = endpointslice.FormatTriggerTime(trigger)
	}

	var written *corev1.Endpoints
	if create {
		written, err = api.Create(ctx, want)
	} else {
		written, err = api.Update(ctx, want)
	}
	if err != nil {
		if create && apierrors.IsForbidden(err) && c.namespaceTerminating(ctx, ns) {
			return nil // creates keep failing until the namespace is gone
		}
		if create {
			c.recorder.Eventf(want, record.Warning, "FailedToCreateEndpoint", "Failed to create endpoint for service %s/%s: %v", ns, name, err)
		} else {
			c.recorder.Eventf(want, record.Warning, "FailedToUpdateEndpoint", "Failed to update endpoint %s/%s: %v", ns, name, err)
		}
		return err
	}
	c.written.record(key, written)
	return nil
}

// desiredSubsets are svc's subsets for pods, repacked.
func desiredSubsets(svc *corev1.Service, pods []*corev1.Pod) []*corev1.EndpointSubset {
	publishNotReady := svc.GetSpec().GetPublishNotReadyAddresses()
	var subsets []*corev1.EndpointSubset
	for _, pod := range pods {
		ep, ok := endpointslice.PodEndpoint(svc, pod, addressFamily(svc, pod))
		if !ok || (ep.Terminating && !publishNotReady) {
			continue
		}
		addr := &corev1.EndpointAddress{Ip: ep.Addresses[0], Hostname: ep.Hostname, NodeName: new(ep.NodeName), TargetRef: ep.TargetRef}
		in := func(ports []*corev1.EndpointPort) *corev1.EndpointSubset {
			if ep.Ready {
				return &corev1.EndpointSubset{Addresses: []*corev1.EndpointAddress{addr}, Ports: ports}
			}
			return &corev1.EndpointSubset{NotReadyAddresses: []*corev1.EndpointAddress{addr}, Ports: ports}
		}
		if len(svc.GetSpec().GetPorts()) == 0 {
			// Only a headless Service may do without ports.
			if endpointslice.IsHeadless(svc) {
				subsets = append(subsets, in(nil))
			}
			continue
		}
		for _, p := range ep.Ports {
			subsets = append(subsets, in([]*corev1.EndpointPort{{
				Name: p.GetName(), Port: p.GetPort(), Protocol: p.GetProtocol(), AppProtocol: p.AppProtocol,
			}}))
		}
	}
	return repackSubsets(subsets)
}

// addressFamily is the one family an Endpoints lists: the Service's first,
// or, from an apiserver that does not set ipFamilies, its cluster IP's, or
// for a headless Service the pod's own.
func addressFamily(svc *corev1.Service, pod *corev1.Pod) string {
	if len(svc.GetSpec().GetIpFamilies()) > 0 || !endpointslice.IsHeadless(svc) {
		return endpointslice.AddressTypes(svc)[0]
	}
	if a, err := netip.ParseAddr(pod.GetStatus().GetPodIP()); err == nil && a.Is6() && !a.Is4In6() {
		return endpointslice.AddressTypeIPv6
	}
	return endpointslice.AddressTypeIPv4
}

// namespaceTerminating asks the apiserver (the Forbidden just came from
// it; a cache may not know yet).
func (c *Controller) namespaceTerminating(ctx context.Context, ns string) bool {
	n, err := client.For[*corev1.Namespace](c.client, "").Get(ctx, ns)
	return err == nil && (n.GetStatus().GetPhase() == "Terminating" || n.GetMetadata().GetDeletionTimestamp() != nil)
}

// writeTracker remembers the resourceVersion of each Endpoints this
// controller wrote, so it does not compare against (and overwrite with a
// Conflict, or re-create with AlreadyExists) a cached copy older than its
// own write. Upstream's staleEndpointsTracker remembers the version it
// replaced; resourceVersions being etcd revisions, "older than ours" also
// covers a cache more than one write behind.
type writeTracker struct {
	mu sync.Mutex
	rv map[string]int64
}

func (t *writeTracker) record(key string, e *corev1.Endpoints) {
	n, _ := strconv.ParseInt(e.GetMetadata().GetResourceVersion(), 10, 64)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rv[key] = n
}

// stale reports a cached object (nil: absent) older than our last write.
func (t *writeTracker) stale(key string, cached *corev1.Endpoints) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	w, ok := t.rv[key]
	if !ok {
		return false
	}
	if cached == nil {
		return true
	}
	n, _ := strconv.ParseInt(cached.GetMetadata().GetResourceVersion(), 10, 64)
	return n < w
}

func (t *writeTracker) forget(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.rv, key)
}
