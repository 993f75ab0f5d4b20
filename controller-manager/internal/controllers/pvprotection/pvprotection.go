// Package pvprotection holds upstream's pvc-protection and pv-protection
// controllers (pkg/controller/volume/pvcprotection, pvprotection): a
// claim in use by a pod, or a volume bound to a claim, is not removed
// while so, because it carries a finalizer the controller takes off only
// when that no longer holds.
//
// Upstream's StorageObjectInUseProtection admission puts the finalizers on
// at create time; Skiff has no such admission plugin yet, so these
// controllers also add them to objects that lack them (as upstream's
// controllers do for objects created before the plugin was enabled).
package pvprotection

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

const (
	// PVCName and PVName are upstream's canonical controller names
	// (cmd/kube-controller-manager/names; --controllers aliases
	// "pvc-protection" and "pv-protection").
	PVCName = "persistentvolumeclaim-protection-controller"
	PVName  = "persistentvolume-protection-controller"

	// PVCFinalizer and PVFinalizer are upstream's finalizers.
	PVCFinalizer = "kubernetes.io/pvc-protection"
	PVFinalizer  = "kubernetes.io/pv-protection"

	// pvcIndex indexes pods by the claims they use ("namespace/claim").
	pvcIndex = "pvcprotection.skiff.dev/claims"
)

// PVCController keeps claims in use from going away.
type PVCController struct {
	client *client.Client
	claims informers.Lister[*corev1.PersistentVolumeClaim]
	podInf *informer.Informer
	queue  workqueue.Queue
	regs   []informer.Registration
	log    *slog.Logger
}

// NewPVCProtection is the pvc-protection controller.
func NewPVCProtection(cc controllers.Context) (controllers.Controller, error) {
	pvc := informers.For[*corev1.PersistentVolumeClaim](cc.Informers)
	pods := informers.For[*corev1.Pod](cc.Informers)
	c := &PVCController{client: cc.Client, claims: pvc.Lister(), podInf: pods.Informer(),
		queue: workqueue.NewWithMetrics("pvcprotection", cc.Registerer), log: cc.Log()}
	if err := c.podInf.AddIndexers(map[string]informer.IndexFunc{pvcIndex: podClaimKeys}); err != nil {
		return nil, fmt.Errorf("pvc-protection: %w", err)
	}
	enqueue := func(o scheme.Object) { c.queue.Add(controller.KeyFunc(o)) }
	c.regs = append(c.regs,
		pvc.Informer().AddHandler(informer.Handler{OnAdd: enqueue, OnUpdate: func(_, o scheme.Object) { enqueue(o) }}),
		c.podInf.AddHandler(informer.Handler{
			OnAdd:    c.podChanged,
			OnUpdate: func(_, o scheme.Object) { c.podChanged(o) },
			OnDelete: c.podChanged,
		}))
	return c, nil
}

// podClaimKeys are the claims a pod's volumes name, including the claims
// of its generic ephemeral volumes ("<pod>-<volume>").
func podClaimKeys(o scheme.Object) []string {
	p := o.(*corev1.Pod)
	ns := p.GetMetadata().GetNamespace()
	var out []string
	for _, v := range p.GetSpec().GetVolumes() {
		switch src := v.GetVolumeSource(); {
		case src.GetPersistentVolumeClaim() != nil:
			out = append(out, ns+"/"+src.GetPersistentVolumeClaim().GetClaimName())
		case src.GetEphemeral() != nil:
			out = append(out, ns+"/"+p.GetMetadata().GetName()+"-"+v.GetName())
		}
	}
	return out
}

// podChanged wakes the claims the pod uses that are being deleted: a pod
// gone or finished may free them.
func (c *PVCController) podChanged(o scheme.Object) {
	for _, key := range podClaimKeys(o) {
		ns, name, _ := controller.SplitMetaNamespaceKey(key)
		if cl, err := c.claims.Get(ns, name); err == nil && cl.GetMetadata().GetDeletionTimestamp() != nil {
			c.queue.Add(key)
		}
	}
}

func (c *PVCController) Name() string { return PVCName }

// Run syncs until ctx ends.
func (c *PVCController) Run(ctx context.Context) error {
	return controllers.RunQueue(ctx, c.log, c.queue, 1, c.reconcile, c.regs...)
}

func (c *PVCController) reconcile(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	claim, err := c.claims.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	m := claim.GetMetadata()
	has := slices.Contains(m.GetFinalizers(), PVCFinalizer)
	if m.GetDeletionTimestamp() == nil {
		if has {
			return nil
		}
		cl := proto.Clone(claim).(*corev1.PersistentVolumeClaim)
		cl.Metadata.Finalizers = append(cl.Metadata.Finalizers, PVCFinalizer)
		return c.update(ctx, cl, "added protection finalizer to claim")
	}
	if !has {
		return nil
	}
	used, err := c.inUse(ctx, claim)
	if err != nil || used {
		return err
	}
	cl := proto.Clone(claim).(*corev1.PersistentVolumeClaim)
	cl.Metadata.Finalizers = slices.DeleteFunc(cl.Metadata.Finalizers, func(f string) bool { return f == PVCFinalizer })
	return c.update(ctx, cl, "removed protection finalizer from claim")
}

func (c *PVCController) update(ctx context.Context, cl *corev1.PersistentVolumeClaim, what string) error {
	_, err := client.For[*corev1.PersistentVolumeClaim](c.client, cl.GetMetadata().GetNamespace()).Update(ctx, cl)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating claim %s: %w", controller.KeyFunc(cl), err)
	}
	c.log.Info(what, "claim", controller.KeyFunc(cl))
	return nil
}

// inUse asks the cache first; when it says "unused", the apiserver has the
// last word, since removing the finalizer cannot be undone and the cache may
// lag a pod just created (upstream's askInformer, then askAPIServer).
func (c *PVCController) inUse(ctx context.Context, claim *corev1.PersistentVolumeClaim) (bool, error) {
	key := controller.KeyFunc(claim)
	for _, o := range c.podInf.ByIndex(pvcIndex, key) {
		if podUsesClaim(o.(*corev1.Pod), claim) {
			return true, nil
		}
	}
	l, err := client.For[*corev1.Pod](c.client, claim.GetMetadata().GetNamespace()).List(ctx, client.ListOptions{})
	if err != nil {
		return false, fmt.Errorf("listing pods for claim %s: %w", key, err)
	}
	for _, p := range l.Items {
		if podUsesClaim(p, claim) {
			return true, nil
		}
	}
	return false, nil
}

// podUsesClaim: a scheduled pod that is not done names the claim. A pod
// not yet scheduled does not count (the kubelet refuses to start one whose
// claim is being deleted); nor does one whose containers have all ended
// (Succeeded, Failed) or that was deleted with no grace period, as
// upstream's podIsShutDown.
func podUsesClaim(p *corev1.Pod, claim *corev1.PersistentVolumeClaim) bool {
	if p.GetSpec().GetNodeName() == "" {
		return false
	}
	switch p.GetStatus().GetPhase() {
	case "Succeeded", "Failed":
		return false
	}
	if m := p.GetMetadata(); m.GetDeletionTimestamp() != nil && m.DeletionGracePeriodSeconds != nil && *m.DeletionGracePeriodSeconds == 0 {
		return false
	}
	return slices.Contains(podClaimKeys(p), controller.KeyFunc(claim))
}

// PVController keeps bound volumes from going away.
type PVController struct {
	client  *client.Client
	volumes informers.Lister[*corev1.PersistentVolume]
	queue   workqueue.Queue
	regs    []informer.Registration
	log     *slog.Logger
}

// NewPVProtection is the pv-protection controller.
func NewPVProtection(cc controllers.Context) (controllers.Controller, error) {
	pv := informers.For[*corev1.PersistentVolume](cc.Informers)
	c := &PVController{client: cc.Client, volumes: pv.Lister(),
		queue: workqueue.NewWithMetrics("pvprotection", cc.Registerer), log: cc.Log()}
	enqueue := func(o scheme.Object) { c.queue.Add(o.GetMetadata().GetName()) }
	c.regs = append(c.regs, pv.Informer().AddHandler(informer.Handler{OnAdd: enqueue, OnUpdate: func(_, o scheme.Object) { enqueue(o) }}))
	return c, nil
}

func (c *PVController) Name() string { return PVName }

// Run syncs until ctx ends.
func (c *PVController) Run(ctx context.Context) error {
	return controllers.RunQueue(ctx, c.log, c.queue, 1, c.reconcile, c.regs...)
}

// reconcile adds the finalizer to live volumes and removes it from deleted
// ones that are no longer Bound. The phase comes from the cache; the
// update carries its resourceVersion, so a volume bound since fails the
// write with a conflict and is looked at again.
func (c *PVController) reconcile(ctx context.Context, name string) error {
	volume, err := c.volumes.Get("", name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	m := volume.GetMetadata()
	has := slices.Contains(m.GetFinalizers(), PVFinalizer)
	v := proto.Clone(volume).(*corev1.PersistentVolume)
	what := ""
	switch {
	case m.GetDeletionTimestamp() == nil && !has:
		v.Metadata.Finalizers = append(v.Metadata.Finalizers, PVFinalizer)
		what = "added protection finalizer to volume"
	case m.GetDeletionTimestamp() != nil && has && volume.GetStatus().GetPhase() != "Bound":
		v.Metadata.Finalizers = slices.DeleteFunc(v.Metadata.Finalizers, func(f string) bool { return f == PVFinalizer })
		what = "removed protection finalizer from volume"
	default:
		return nil
	}
	_, err = client.For[*corev1.PersistentVolume](c.client, "").Update(ctx, v)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating volume %s: %w", name, err)
	}
	c.log.Info(what, "volume", name)
	return nil
}
