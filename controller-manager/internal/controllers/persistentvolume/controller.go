// Package persistentvolume is upstream's persistentvolume-binder controller
// (pkg/controller/volume/persistentvolume): it binds PersistentVolumeClaims
// to PersistentVolumes, hands claims it cannot bind to their class's
// external provisioner, keeps both objects' phases, and reclaims volumes
// whose claim is gone.
//
// Two queues, as upstream: claims ("namespace/name") and volumes (name),
// one worker each, so that two claims never race for one volume inside this
// process; across processes every write carries the resourceVersion it read.
// The controller remembers the objects it wrote until its informers catch
// up (upstream's storeObjectUpdate), so a sync that follows its own write
// does not act on the older cached copy.
package persistentvolume

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	corev1 "skiff.dev/proto/api/core/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/claimbinding"
	"skiff.dev/proto/scheme"
)

// Name is upstream's canonical controller name.
const Name = "persistentvolume-binder-controller"

// component is the Events' source, as upstream's.
const component = "persistentvolume-controller"

// DefaultResyncPeriod is upstream's --pvclaimbinder-sync-period: every
// volume and claim is synced again this often.
const DefaultResyncPeriod = 15 * time.Second

// Controller binds claims to volumes.
type Controller struct {
	client   *client.Client
	volumes  informers.Lister[*corev1.PersistentVolume]
	claims   informers.Lister[*corev1.PersistentVolumeClaim]
	classes  informers.Lister[*storagev1.StorageClass]
	volumeQ  workqueue.Queue
	claimQ   workqueue.Queue
	recorder record.Recorder
	log      *slog.Logger
	now      func() time.Time
	regs     []informer.Registration
	// ResyncPeriod is how often everything is synced again.
	ResyncPeriod time.Duration

	mu           sync.Mutex
	wroteVolumes map[string]*corev1.PersistentVolume
	wroteClaims  map[string]*corev1.PersistentVolumeClaim
}

// New is the persistentvolume-binder controller.
func New(cc controllers.Context) (controllers.Controller, error) { return newController(cc), nil }

func newController(cc controllers.Context) *Controller {
	c := &Controller{
		client:       cc.Client,
		volumeQ:      workqueue.NewWithMetrics("volumes", cc.Registerer),
		claimQ:       workqueue.NewWithMetrics("claims", cc.Registerer),
		log:          cc.Log(),
		now:          cc.Clock(),
		ResyncPeriod: DefaultResyncPeriod,
		wroteVolumes: map[string]*corev1.PersistentVolume{},
		wroteClaims:  map[string]*corev1.PersistentVolumeClaim{},
	}
	c.recorder = cc.EventRecorder(component)
	pv := informers.For[*corev1.PersistentVolume](cc.Informers)
	pvc := informers.For[*corev1.PersistentVolumeClaim](cc.Informers)
	sc := informers.For[*storagev1.StorageClass](cc.Informers)
	c.volumes, c.claims, c.classes = pv.Lister(), pvc.Lister(), sc.Lister()
	c.regs = append(c.regs,
		pv.Informer().AddHandler(informer.Handler{
			OnAdd:    c.volumeChanged,
			OnUpdate: func(_, o scheme.Object) { c.volumeChanged(o) },
			OnDelete: c.volumeDeleted,
		}),
		pvc.Informer().AddHandler(informer.Handler{
			OnAdd:    c.claimChanged,
			OnUpdate: func(_, o scheme.Object) { c.claimChanged(o) },
			OnDelete: c.claimDeleted,
		}),
		sc.Informer().AddHandler(informer.Handler{
			// A new or changed class may be the default a class-less claim
			// waits for, or the class a claim names.
			OnAdd:    func(scheme.Object) { c.enqueueUnboundClaims("") },
			OnUpdate: func(_, o scheme.Object) { c.enqueueUnboundClaims("") },
		}))
	return c
}

// Name is the canonical name.
func (c *Controller) Name() string { return Name }

// Run syncs until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.log.Info("Starting persistent volume controller")
	defer c.log.Info("Shutting down persistent volume controller")
	if !informers.WaitForCacheSync(ctx, c.regs...) {
		c.volumeQ.ShutDown()
		c.claimQ.ShutDown()
		return nil
	}
	var wg sync.WaitGroup
	wg.Go(func() { controller.Run(ctx, c.volumeQ, 1, c.syncVolumeKey, c.log) })
	wg.Go(func() { controller.Run(ctx, c.claimQ, 1, c.syncClaimKey, c.log) })
	if c.ResyncPeriod > 0 {
		wg.Go(func() {
			t := time.NewTicker(c.ResyncPeriod)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					c.resync()
				}
			}
		})
	}
	wg.Wait()
	return nil
}

func (c *Controller) resync() {
	for _, v := range c.volumes.List(nil) {
		c.volumeQ.Add(v.GetMetadata().GetName())
	}
	for _, cl := range c.claims.List(nil) {
		c.claimQ.Add(controller.KeyFunc(cl))
	}
}

func (c *Controller) volumeChanged(o scheme.Object) {
	v := o.(*corev1.PersistentVolume)
	c.volumeQ.Add(v.GetMetadata().GetName())
	if ref := v.GetSpec().GetClaimRef(); ref != nil {
		c.claimQ.Add(ref.Namespace + "/" + ref.Name)
	} else if v.GetStatus().GetPhase() == VolumeAvailable {
		// A volume free for binding: claims of its class waiting for one
		// need not wait for the resync.
		c.enqueueUnboundClaims(claimbinding.VolumeClass(v))
	}
}

func (c *Controller) volumeDeleted(o scheme.Object) {
	v := o.(*corev1.PersistentVolume)
	c.forgetVolume(v.GetMetadata().GetName())
	if ref := v.GetSpec().GetClaimRef(); ref != nil {
		// Its claim is Lost now.
		c.claimQ.Add(ref.Namespace + "/" + ref.Name)
	}
}

func (c *Controller) claimChanged(o scheme.Object) {
	cl := o.(*corev1.PersistentVolumeClaim)
	c.claimQ.Add(controller.KeyFunc(cl))
	if n := cl.GetSpec().GetVolumeName(); n != "" {
		c.volumeQ.Add(n)
	}
}

func (c *Controller) claimDeleted(o scheme.Object) {
	cl := o.(*corev1.PersistentVolumeClaim)
	c.forgetClaim(controller.KeyFunc(cl))
	if n := cl.GetSpec().GetVolumeName(); n != "" {
		// Its volume is Released now.
		c.volumeQ.Add(n)
	}
	// A volume pre-bound to it by the controller but not yet named by it.
	for _, v := range c.volumes.List(nil) {
		if ref := v.GetSpec().GetClaimRef(); ref != nil && ref.Namespace == cl.GetMetadata().GetNamespace() && ref.Name == cl.GetMetadata().GetName() {
			c.volumeQ.Add(v.GetMetadata().GetName())
		}
	}
}

// enqueueUnboundClaims queues the claims not yet bound, of class (any
// class when "").
func (c *Controller) enqueueUnboundClaims(class string) {
	for _, cl := range c.claims.List(nil) {
		if hasAnn(cl.GetMetadata(), AnnBindCompleted) {
			continue
		}
		if class == "" || claimbinding.ClaimClass(cl) == class {
			c.claimQ.Add(controller.KeyFunc(cl))
		}
	}
}

// The controller's own writes, kept until the informer has them.

func (c *Controller) latestVolume(v *corev1.PersistentVolume) *corev1.PersistentVolume {
	c.mu.Lock()
	defer c.mu.Unlock()
	name := v.GetMetadata().GetName()
	if w, ok := c.wroteVolumes[name]; ok {
		if w.GetMetadata().GetUid() == v.GetMetadata().GetUid() && newer(w.GetMetadata(), v.GetMetadata()) {
			return w
		}
		delete(c.wroteVolumes, name)
	}
	return v
}

func (c *Controller) latestClaim(cl *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := controller.KeyFunc(cl)
	if w, ok := c.wroteClaims[key]; ok {
		if w.GetMetadata().GetUid() == cl.GetMetadata().GetUid() && newer(w.GetMetadata(), cl.GetMetadata()) {
			return w
		}
		delete(c.wroteClaims, key)
	}
	return cl
}

func (c *Controller) storeVolume(v *corev1.PersistentVolume) {
	c.mu.Lock()
	c.wroteVolumes[v.GetMetadata().GetName()] = v
	c.mu.Unlock()
}

func (c *Controller) storeClaim(cl *corev1.PersistentVolumeClaim) {
	c.mu.Lock()
	c.wroteClaims[controller.KeyFunc(cl)] = cl
	c.mu.Unlock()
}

func (c *Controller) forgetVolume(name string) {
	c.mu.Lock()
	delete(c.wroteVolumes, name)
	c.mu.Unlock()
}

func (c *Controller) forgetClaim(key string) {
	c.mu.Lock()
	delete(c.wroteClaims, key)
	c.mu.Unlock()
}

// getVolume is the newest known state of a volume.
func (c *Controller) getVolume(name string) (*corev1.PersistentVolume, error) {
	v, err := c.volumes.Get("", name)
	if err != nil {
		return nil, err
	}
	return c.latestVolume(v), nil
}

// listVolumes is every volume, at its newest known state.
func (c *Controller) listVolumes() []*corev1.PersistentVolume {
	vs := c.volumes.List(nil)
	for i, v := range vs {
		vs[i] = c.latestVolume(v)
	}
	return vs
}
