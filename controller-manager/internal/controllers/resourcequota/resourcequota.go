// Package resourcequota is the resourcequota controller of
// skiff-controller-manager (upstream's pkg/controller/resourcequota): it
// keeps each ResourceQuota's status true to what its namespace holds.
//
//   - status.hard mirrors spec.hard; status.used is recomputed from the
//     informers' caches with the same evaluation the apiserver's
//     ResourceQuota admission charges with (skiff.dev/proto/quota): pods
//     and their compute resources (terminal pods count only as
//     count/pods), services, node ports and load balancers, claims and
//     their storage (per class too), configmaps, secrets,
//     replicationcontrollers, resourcequotas, and count/<resource> of any
//     namespaced kind; scopes (Terminating, NotTerminating, BestEffort,
//     NotBestEffort, PriorityClass, CrossNamespacePodAffinity) select pods.
//   - A quota is synced when it is created or its spec changes, when an
//     object of a kind it tracks is added, changed or deleted in its
//     namespace (releasing what admission charged), and every sync period
//     (upstream's --resource-quota-sync-period, 5 minutes), which also
//     takes back what admission charged for writes that then failed.
//   - The status is written only when it changed, guarded by the quota's
//     resourceVersion: a charge admission made meanwhile makes the write
//     conflict, and the quota is synced again.
//
// count/<resource> of kinds outside the watched set (pods, services,
// configmaps, secrets, persistentvolumeclaims, replicationcontrollers,
// resourcequotas) is counted by a live list through the API, as the sync
// period allows, rather than by an informer of its own.
package resourcequota

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/quota"
	"skiff.dev/proto/scheme"
)

// Name is upstream's alias, and the workers option's key.
const Name = "resourcequota"

// DefaultSyncPeriod is upstream's --resource-quota-sync-period.
const DefaultSyncPeriod = 5 * time.Minute

const defaultWorkers = 5

// watchedResources are the core kinds whose informers the controller
// shares, to react to their changes.
var watchedResources = []string{"pods", "services", "configmaps", "secrets", "persistentvolumeclaims", "replicationcontrollers", "resourcequotas"}

// Controller keeps quota status.
type Controller struct {
	client     *client.Client
	quotas     informers.Lister[*corev1.ResourceQuota]
	watched    map[*scheme.Kind]*informer.Informer
	queue      workqueue.Queue
	workers    int
	syncPeriod time.Duration
	now        func() time.Time
	log        *slog.Logger
	regs       []informer.Registration
}

// New is the "resourcequota" controller with upstream's sync period.
func New(cc controllers.Context) (controllers.Controller, error) {
	period := DefaultSyncPeriod
	if cc.Options != nil && cc.Options.ResourceQuotaSyncPeriod > 0 {
		period = cc.Options.ResourceQuotaSyncPeriod
	}
	return NewWithSyncPeriod(cc, period)
}

// NewWithSyncPeriod is New with --resource-quota-sync-period.
func NewWithSyncPeriod(cc controllers.Context, period time.Duration) (controllers.Controller, error) {
	if period <= 0 {
		period = DefaultSyncPeriod
	}
	c := &Controller{
		client:     cc.Client,
		queue:      workqueue.NewWithMetrics(Name, cc.Registerer),
		syncPeriod: period,
		now:        cc.Clock(),
		log:        cc.Log(),
		watched:    map[*scheme.Kind]*informer.Informer{},
	}
	c.log = c.log.With("controller", Name)
	c.workers = cc.WorkersFor(Name, defaultWorkers)
	rq := informers.For[*corev1.ResourceQuota](cc.Informers)
	c.quotas = rq.Lister()
	c.regs = append(c.regs, rq.Informer().AddHandler(informer.Handler{
		OnAdd:    func(o scheme.Object) { c.queue.Add(controller.KeyFunc(o)) },
		OnUpdate: c.updateQuota,
	}))
	for _, res := range watchedResources {
		k, _ := scheme.ForResource("", res)
		inf := cc.Informers.ForKind(k)
		c.watched[k] = inf
		c.regs = append(c.regs, inf.AddHandler(informer.Handler{
			OnAdd:    c.objectChanged,
			OnUpdate: func(_, cur scheme.Object) { c.objectChanged(cur) },
			OnDelete: c.objectChanged,
		}))
	}
	return c, nil
}

// Name is upstream's alias.
func (c *Controller) Name() string { return Name }

// Run syncs every quota once the caches are filled, then on changes and
// every sync period, until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	go controllers.ResyncEvery(ctx, c.syncPeriod, c.queue, c.quotas)
	return controllers.RunQueue(ctx, c.log, c.queue, c.workers, c.sync, c.regs...)
}

// updateQuota syncs a quota whose spec changed, or whose status does not
// say what its spec does (someone wrote it).
func (c *Controller) updateQuota(oldObj, curObj scheme.Object) {
	old, cur := oldObj.(*corev1.ResourceQuota), curObj.(*corev1.ResourceQuota)
	if !proto.Equal(old.GetSpec(), cur.GetSpec()) ||
		!quota.Equal(quota.FromProto(cur.GetSpec().GetHard()), quota.FromProto(cur.GetStatus().GetHard())) ||
		len(cur.GetStatus().GetUsed()) < len(cur.GetSpec().GetHard()) {
		c.queue.Add(controller.KeyFunc(cur))
	}
}

// objectChanged syncs every quota of the object's namespace.
func (c *Controller) objectChanged(obj scheme.Object) {
	if _, ok := obj.(*corev1.ResourceQuota); ok {
		// count/resourcequotas: a quota's own writes would wake every
		// quota of the namespace; its status writes change no count.
		return
	}
	ns := obj.GetMetadata().GetNamespace()
	for _, q := range c.quotas.Namespace(ns).List(nil) {
		c.queue.Add(controller.KeyFunc(q))
	}
}

// sync recomputes one quota's status.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	q, err := c.quotas.Namespace(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	hard := quota.FromProto(q.GetSpec().GetHard())
	names := hard.Names()
	used := quota.FromProto(q.GetStatus().GetUsed())
	scopes := quota.ScopeSelectors(q)
	now := c.now()
	for _, k := range quota.TrackedKinds(names) {
		objs, err := c.objects(ctx, k, ns)
		if err != nil {
			return err
		}
		u, _, err := quota.Tally(names, scopes, k, objs, now)
		if err != nil {
			return err
		}
		for n, v := range u {
			used[n] = v
		}
	}
	used = quota.Mask(used, names)
	if quota.Equal(hard, quota.FromProto(q.GetStatus().GetHard())) && quota.Equal(used, quota.FromProto(q.GetStatus().GetUsed())) {
		return nil
	}
	next := proto.Clone(q).(*corev1.ResourceQuota)
	next.Status = &corev1.ResourceQuotaStatus{Hard: hard.ToProto(), Used: used.ToProto()}
	c.log.Debug("Updating quota status", "quota", key, "used", used.String())
	_, err = client.For[*corev1.ResourceQuota](c.client, ns).UpdateStatus(ctx, next)
	return err
}

// objects are the namespace's objects of kind k: from the shared cache
// for the watched kinds, else listed through the API.
func (c *Controller) objects(ctx context.Context, k *scheme.Kind, ns string) ([]scheme.Object, error) {
	if inf, ok := c.watched[k]; ok {
		return inf.ByIndex(informer.NamespaceIndex, ns), nil
	}
	var out []scheme.Object
	opts := client.ListOptions{Limit: 500}
	for {
		l, err := c.client.Resource(k, ns).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, l.Items...)
		if l.Continue == "" {
			return out, nil
		}
		opts.Continue = l.Continue
	}
}
