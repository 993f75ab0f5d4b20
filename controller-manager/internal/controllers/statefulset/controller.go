// Package statefulset is upstream's statefulset controller
// (pkg/controller/statefulset): pods with stable names and storage.
//
// Pod <set>-<ordinal> (ordinals from spec.ordinals.start) gets hostname
// <pod>, subdomain spec.serviceName, labels statefulset.kubernetes.io/pod-name
// and apps.kubernetes.io/pod-index, and for every volumeClaimTemplate the
// PVC <claim>-<set>-<ordinal>, created before the pod and kept when the pod
// is replaced. OrderedReady creates ordinal N only once N-1 is Running and
// Ready (and available after minReadySeconds), and removes from the
// highest ordinal down, one at a time; Parallel does not wait. Each template
// is a ControllerRevision (status currentRevision/updateRevision, pods
// labelled controller-revision-hash with the revision's name). RollingUpdate
// replaces pods from the highest ordinal down to the partition, one at a
// time or maxUnavailable at a time; OnDelete waits for the user.
// persistentVolumeClaimRetentionPolicy is carried out as upstream, through
// owner references the garbage collector follows: whenDeleted=Delete makes
// the set an owner of its claims, whenScaled=Delete makes a condemned pod
// the owner of its own.
package statefulset

import (
	"context"
	"log/slog"
	"maps"
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
	controllerName = "statefulset"
	component      = "statefulset-controller"
	defaultWorkers = 5
)

var (
	setKind, _ = scheme.ForMessage(&appsv1.StatefulSet{})
	podKind, _ = scheme.ForMessage(&corev1.Pod{})
	pvcKind, _ = scheme.ForMessage(&corev1.PersistentVolumeClaim{})
)

// Controller is the statefulset controller.
type Controller struct {
	client   *client.Client
	recorder record.Recorder
	log      *slog.Logger
	now      func() time.Time
	queue    workqueue.Queue
	workers  int
	history  *history.History

	setLister informers.Lister[*appsv1.StatefulSet]
	podLister informers.Lister[*corev1.Pod]
	pvcLister informers.Lister[*corev1.PersistentVolumeClaim]
	crLister  informers.Lister[*appsv1.ControllerRevision]
	synced    []informer.Registration
}

// New builds the controller on the shared informers of StatefulSets, Pods,
// PersistentVolumeClaims and ControllerRevisions.
func New(cc controllers.Context) (controllers.Controller, error) { return newController(cc), nil }

func newController(cc controllers.Context) *Controller {
	log := cc.Log()
	now := cc.Clock()
	workers := cc.WorkersFor(controllerName, defaultWorkers)
	rec := cc.EventRecorder(component)
	sets := informers.For[*appsv1.StatefulSet](cc.Informers)
	pods := informers.For[*corev1.Pod](cc.Informers)
	pvcs := informers.For[*corev1.PersistentVolumeClaim](cc.Informers)
	crs := informers.For[*appsv1.ControllerRevision](cc.Informers)
	c := &Controller{
		client:    cc.Client,
		recorder:  rec,
		log:       log.With("controller", controllerName),
		now:       now,
		queue:     workqueue.NewWithMetrics(controllerName, cc.Registerer),
		workers:   workers,
		history:   history.New(cc.Client, crs.Lister()),
		setLister: sets.Lister(),
		podLister: pods.Lister(),
		pvcLister: pvcs.Lister(),
		crLister:  crs.Lister(),
	}
	c.synced = []informer.Registration{
		sets.Informer().AddHandler(informer.Handler{
			OnAdd:    c.enqueue,
			OnUpdate: func(_, o scheme.Object) { c.enqueue(o) },
			OnDelete: c.enqueue,
		}),
		pods.Informer().AddHandler(informer.Handler{
			OnAdd:    c.onPod,
			OnUpdate: c.updatePod,
			OnDelete: c.onPod,
		}),
		pvcs.Informer().AddHandler(informer.Handler{}),
		crs.Informer().AddHandler(informer.Handler{
			OnAdd:    c.onOwned,
			OnDelete: c.onOwned,
		}),
	}
	return c
}

// Name is upstream's controller name.
func (c *Controller) Name() string { return controllerName }

// Run waits for the caches, then syncs StatefulSets until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return controllers.RunQueue(ctx, c.log, c.queue, c.workers, c.reconcile, c.synced...)
}

func (c *Controller) enqueue(o scheme.Object) { c.queue.Add(controller.KeyFunc(o)) }

func (c *Controller) resolve(namespace string, ref *metav1.OwnerReference) *appsv1.StatefulSet {
	if ref == nil || ref.GetKind() != setKind.Kind {
		return nil
	}
	s, err := c.setLister.Get(namespace, ref.GetName())
	if err != nil || s.GetMetadata().GetUid() != ref.GetUid() {
		return nil
	}
	return s
}

// onOwned wakes the set controlling obj, or for an orphan every set that
// selects it.
func (c *Controller) onOwned(obj scheme.Object) {
	m := obj.GetMetadata()
	if ref := metav1.GetControllerOf(m); ref != nil {
		if s := c.resolve(m.GetNamespace(), ref); s != nil {
			c.enqueue(s)
		}
		return
	}
	for _, s := range c.setLister.Namespace(m.GetNamespace()).List(labels.Everything()) {
		sel, err := metav1.LabelSelectorAsSelector(s.GetSpec().GetSelector())
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(m.GetLabels())) {
			c.enqueue(s)
		}
	}
}

func (c *Controller) onPod(obj scheme.Object) { c.onOwned(obj) }

func (c *Controller) updatePod(oldObj, curObj scheme.Object) {
	old, cur := oldObj.(*corev1.Pod), curObj.(*corev1.Pod)
	if old.GetMetadata().GetResourceVersion() == cur.GetMetadata().GetResourceVersion() {
		return
	}
	if !proto.Equal(metav1.GetControllerOf(old.GetMetadata()), metav1.GetControllerOf(cur.GetMetadata())) ||
		!maps.Equal(old.GetMetadata().GetLabels(), cur.GetMetadata().GetLabels()) {
		c.onOwned(old)
	}
	c.onOwned(cur)
	if s := c.resolve(cur.GetMetadata().GetNamespace(), metav1.GetControllerOf(cur.GetMetadata())); s != nil {
		if mrs := s.GetSpec().GetMinReadySeconds(); mrs > 0 && !isRunningAndReady(old) && isRunningAndReady(cur) {
			c.queue.AddAfter(controller.KeyFunc(s), time.Duration(mrs)*time.Second+time.Second)
		}
	}
}
