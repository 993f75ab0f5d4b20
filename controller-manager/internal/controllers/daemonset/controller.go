// Package daemonset is upstream's daemonset controller
// (pkg/controller/daemon): one pod of a DaemonSet on every node its
// template may run on.
//
// A node is eligible when it matches the template's nodeName, nodeSelector
// and required node affinity and has no NoSchedule or NoExecute taint the
// pod does not tolerate; a pod already on a node whose only untolerated
// taints are NoSchedule keeps running. Daemon pods carry upstream's
// automatic tolerations (not-ready and unreachable NoExecute; disk-,
// memory-, pid-pressure and unschedulable NoSchedule; network-unavailable
// for hostNetwork pods) and are pinned to their node by a required node
// affinity on metadata.name, so the scheduler binds them. Updates are
// RollingUpdate (maxUnavailable, maxSurge) or OnDelete; each template is a
// ControllerRevision (pods labelled controller-revision-hash and
// pod-template-generation), the revisionHistoryLimit oldest unused ones
// pruned.
package daemonset

import (
	"context"
	"log/slog"
	"maps"
	"sync"
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
	"skiff.dev/controller-manager/internal/controllers/history"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

const (
	// controllerName is upstream's (the worker count's key, the queue's name).
	controllerName = "daemonset"
	// component is the event source.
	component      = "daemonset-controller"
	defaultWorkers = 2
	// burstReplicas is upstream's BurstReplicas: the most pods one sync
	// creates or deletes.
	burstReplicas = 250
)

var (
	dsKind, _  = scheme.ForMessage(&appsv1.DaemonSet{})
	podKind, _ = scheme.ForMessage(&corev1.Pod{})
)

// Controller is the daemonset controller.
type Controller struct {
	client   *client.Client
	recorder record.Recorder
	log      *slog.Logger
	now      func() time.Time
	queue    workqueue.Queue
	workers  int
	exp      *controller.Expectations
	history  *history.History
	backoff  *failedPodsBackoff

	dsLister   informers.Lister[*appsv1.DaemonSet]
	podLister  informers.Lister[*corev1.Pod]
	nodeLister informers.Lister[*corev1.Node]
	crLister   informers.Lister[*appsv1.ControllerRevision]
	synced     []informer.Registration
}

// New builds the controller on the shared informers of DaemonSets,
// ControllerRevisions, Pods and Nodes.
func New(cc controllers.Context) (controllers.Controller, error) { return newController(cc), nil }

func newController(cc controllers.Context) *Controller {
	log := cc.Log()
	now := cc.Clock()
	workers := cc.WorkersFor(controllerName, defaultWorkers)
	rec := cc.EventRecorder(component)
	ds := informers.For[*appsv1.DaemonSet](cc.Informers)
	pods := informers.For[*corev1.Pod](cc.Informers)
	nodes := informers.For[*corev1.Node](cc.Informers)
	crs := informers.For[*appsv1.ControllerRevision](cc.Informers)
	c := &Controller{
		client:     cc.Client,
		recorder:   rec,
		log:        log.With("controller", controllerName),
		now:        now,
		queue:      workqueue.NewWithMetrics(controllerName, cc.Registerer),
		workers:    workers,
		exp:        controller.NewExpectations(),
		history:    history.New(cc.Client, crs.Lister()),
		backoff:    newFailedPodsBackoff(time.Second, 15*time.Minute),
		dsLister:   ds.Lister(),
		podLister:  pods.Lister(),
		nodeLister: nodes.Lister(),
		crLister:   crs.Lister(),
	}
	c.synced = []informer.Registration{
		ds.Informer().AddHandler(informer.Handler{
			OnAdd:    func(o scheme.Object) { c.enqueue(o) },
			OnUpdate: func(_, o scheme.Object) { c.enqueue(o) },
			OnDelete: func(o scheme.Object) { c.enqueue(o) },
		}),
		crs.Informer().AddHandler(informer.Handler{
			OnAdd:    c.onRevision,
			OnUpdate: func(old, cur scheme.Object) { c.onRevision(old); c.onRevision(cur) },
			OnDelete: c.onRevision,
		}),
		pods.Informer().AddHandler(informer.Handler{OnAdd: c.addPod, OnUpdate: c.updatePod, OnDelete: c.deletePod}),
		nodes.Informer().AddHandler(informer.Handler{OnAdd: c.addNode, OnUpdate: c.updateNode, OnDelete: c.addNode}),
	}
	return c
}

// Name is upstream's controller name.
func (c *Controller) Name() string { return controllerName }

// Run waits for the caches, then syncs DaemonSets until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return controllers.RunQueue(ctx, c.log, c.queue, c.workers, c.reconcile, c.synced...)
}

func (c *Controller) enqueue(o scheme.Object) {
	if o != nil {
		c.queue.Add(controller.KeyFunc(o))
	}
}

// resolve is the DaemonSet a controller reference names, if still the same.
func (c *Controller) resolve(namespace string, ref *metav1.OwnerReference) *appsv1.DaemonSet {
	if ref == nil || ref.GetKind() != dsKind.Kind {
		return nil
	}
	ds, err := c.dsLister.Get(namespace, ref.GetName())
	if err != nil || ds.GetMetadata().GetUid() != ref.GetUid() {
		return nil
	}
	return ds
}

// selecting are the DaemonSets whose selector matches an orphan's labels.
func (c *Controller) selecting(namespace string, l map[string]string) []*appsv1.DaemonSet {
	var out []*appsv1.DaemonSet
	for _, ds := range c.dsLister.Namespace(namespace).List(labels.Everything()) {
		sel, err := metav1.LabelSelectorAsSelector(ds.GetSpec().GetSelector())
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(l)) {
			continue
		}
		out = append(out, ds)
	}
	return out
}

func (c *Controller) onRevision(obj scheme.Object) {
	m := obj.GetMetadata()
	if ref := metav1.GetControllerOf(m); ref != nil {
		if ds := c.resolve(m.GetNamespace(), ref); ds != nil {
			c.enqueue(ds)
		}
		return
	}
	for _, ds := range c.selecting(m.GetNamespace(), m.GetLabels()) {
		c.enqueue(ds)
	}
}

func (c *Controller) addPod(obj scheme.Object) {
	pod := obj.(*corev1.Pod)
	if pod.GetMetadata().GetDeletionTimestamp() != nil {
		c.deletePod(pod)
		return
	}
	m := pod.GetMetadata()
	if ref := metav1.GetControllerOf(m); ref != nil {
		if ds := c.resolve(m.GetNamespace(), ref); ds != nil {
			key := controller.KeyFunc(ds)
			c.exp.CreationObserved(key)
			c.queue.Add(key)
		}
		return
	}
	for _, ds := range c.selecting(m.GetNamespace(), m.GetLabels()) {
		c.enqueue(ds)
	}
}

func (c *Controller) updatePod(oldObj, curObj scheme.Object) {
	old, cur := oldObj.(*corev1.Pod), curObj.(*corev1.Pod)
	if old.GetMetadata().GetResourceVersion() == cur.GetMetadata().GetResourceVersion() {
		return
	}
	if cur.GetMetadata().GetDeletionTimestamp() != nil && old.GetMetadata().GetDeletionTimestamp() == nil {
		c.deletePod(cur)
		return
	}
	curRef, oldRef := metav1.GetControllerOf(cur.GetMetadata()), metav1.GetControllerOf(old.GetMetadata())
	changed := !proto.Equal(curRef, oldRef)
	if changed && oldRef != nil {
		if ds := c.resolve(old.GetMetadata().GetNamespace(), oldRef); ds != nil {
			c.enqueue(ds)
		}
	}
	if curRef != nil {
		ds := c.resolve(cur.GetMetadata().GetNamespace(), curRef)
		if ds == nil {
			return
		}
		c.enqueue(ds)
		// Availability is not an event: look again when it is due.
		if mrs := ds.GetSpec().GetMinReadySeconds(); mrs > 0 && !isPodReady(old) && isPodReady(cur) {
			c.queue.AddAfter(controller.KeyFunc(ds), time.Duration(mrs)*time.Second+time.Second)
		}
		return
	}
	if changed || !maps.Equal(old.GetMetadata().GetLabels(), cur.GetMetadata().GetLabels()) {
		for _, ds := range c.selecting(cur.GetMetadata().GetNamespace(), cur.GetMetadata().GetLabels()) {
			c.enqueue(ds)
		}
	}
}

func (c *Controller) deletePod(obj scheme.Object) {
	m := obj.GetMetadata()
	ds := c.resolve(m.GetNamespace(), metav1.GetControllerOf(m))
	if ds == nil {
		return
	}
	key := controller.KeyFunc(ds)
	c.exp.DeletionObserved(key)
	c.queue.Add(key)
}

// addNode wakes the DaemonSets that should run on a new (or deleted) node.
func (c *Controller) addNode(obj scheme.Object) {
	n := obj.(*corev1.Node)
	for _, ds := range c.dsLister.List(labels.Everything()) {
		if run, cont := nodeShouldRunDaemonPod(n, newPodSpec(ds.GetSpec().GetTemplate())); run || cont {
			c.enqueue(ds)
		}
	}
}

// updateNode wakes the DaemonSets whose verdict on the node changed (its
// labels, taints or name); heartbeats change no verdict and wake none.
func (c *Controller) updateNode(oldObj, curObj scheme.Object) {
	old, cur := oldObj.(*corev1.Node), curObj.(*corev1.Node)
	for _, ds := range c.dsLister.List(labels.Everything()) {
		spec := newPodSpec(ds.GetSpec().GetTemplate())
		or, oc := nodeShouldRunDaemonPod(old, spec)
		cr, cc := nodeShouldRunDaemonPod(cur, spec)
		if or != cr || oc != cc {
			c.enqueue(ds)
		}
	}
}

// failedPodsBackoff is upstream's failedPodsBackoff (a flowcontrol.Backoff):
// how long to wait, per DaemonSet and node, before killing a failed daemon
// pod again, doubling up to a cap, forgotten after twice the cap idle.
type failedPodsBackoff struct {
	mu       sync.Mutex
	initial  time.Duration
	maxDelay time.Duration
	entries  map[string]*backoffEntry
}

type backoffEntry struct {
	delay time.Duration
	last  time.Time
}

func newFailedPodsBackoff(initial, maxDelay time.Duration) *failedPodsBackoff {
	return &failedPodsBackoff{initial: initial, maxDelay: maxDelay, entries: map[string]*backoffEntry{}}
}

// inBackoff reports whether key is still waiting at now, and for how long.
func (b *failedPodsBackoff) inBackoff(key string, now time.Time) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	if !ok {
		return 0, false
	}
	return e.delay, now.Sub(e.last) < e.delay
}

// next starts or doubles key's backoff at now.
func (b *failedPodsBackoff) next(key string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	if !ok || now.Sub(e.last) > 2*b.maxDelay {
		b.entries[key] = &backoffEntry{delay: b.initial, last: now}
		return
	}
	e.delay = min(2*e.delay, b.maxDelay)
	e.last = now
}

// gc forgets entries idle for twice the cap.
func (b *failedPodsBackoff) gc(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, e := range b.entries {
		if now.Sub(e.last) > 2*b.maxDelay {
			delete(b.entries, k)
		}
	}
}
