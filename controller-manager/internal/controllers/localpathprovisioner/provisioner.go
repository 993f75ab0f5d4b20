// Package localpathprovisioner is Skiff's own local-path provisioner, run
// in the controller-manager in the role upstream gives an external
// provisioner (kubernetes-csi/external-provisioner with a CSI controller
// plugin), after rancher/local-path-provisioner's idea: a claim's volume
// is a directory on the node its first pod was scheduled to.
//
// Only the API objects are made here: for a claim of a class whose
// provisioner is local-path.skiff.dev, once the persistentvolume-binder
// has handed it over (volume.kubernetes.io/storage-provisioner) and the
// scheduler has chosen its node (volume.kubernetes.io/selected-node), a
// PersistentVolume "pvc-<claim uid>" pinned to that node, pre-bound to the
// claim; the binder then binds them. The skiff-local-path CSI node plugin
// creates the directory on first mount and removes it once the volume
// object is gone. When a Delete volume is Released, it is deleted here;
// the finalizer external-provisioner.volume.kubernetes.io/finalizer keeps a
// provisioned volume until this provisioner lets it go.
package localpathprovisioner

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/claimbinding"
	"skiff.dev/proto/scheme"
)

const (
	// Name is the controller's name (Skiff's own; upstream has none).
	Name = "local-path-provisioner"
	// Driver is the CSI driver, and the provisioner name of its classes.
	Driver = "local-path.skiff.dev"
	// ClassName is the default StorageClass this provisioner serves.
	ClassName = "local-path"

	annSelectedNode           = "volume.kubernetes.io/selected-node"
	annStorageProvisioner     = "volume.kubernetes.io/storage-provisioner"
	annBetaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
	annProvisionedBy          = "pv.kubernetes.io/provisioned-by"
	annDefaultClass           = "storageclass.kubernetes.io/is-default-class"
	annBetaStorageClass       = "volume.beta.kubernetes.io/storage-class"
	// Finalizer is upstream's external-provisioner finalizer.
	Finalizer = "external-provisioner.volume.kubernetes.io/finalizer"
	// hostnameLabel pins a volume to its node.
	hostnameLabel = "kubernetes.io/hostname"
)

// Controller provisions and deletes local-path volumes.
type Controller struct {
	client   *client.Client
	claims   informers.Lister[*corev1.PersistentVolumeClaim]
	volumes  informers.Lister[*corev1.PersistentVolume]
	classes  informers.Lister[*storagev1.StorageClass]
	queue    workqueue.Queue
	recorder record.Recorder
	regs     []informer.Registration
	log      *slog.Logger
	// EnsureClass creates the local-path StorageClass at start when it is
	// missing (k3s ships its local-path class the same way, as an addon).
	EnsureClass bool
}

// New is the local-path provisioner.
func New(cc controllers.Context) (controllers.Controller, error) { return newController(cc), nil }

func newController(cc controllers.Context) *Controller {
	pvc := informers.For[*corev1.PersistentVolumeClaim](cc.Informers)
	pv := informers.For[*corev1.PersistentVolume](cc.Informers)
	sc := informers.For[*storagev1.StorageClass](cc.Informers)
	c := &Controller{client: cc.Client, claims: pvc.Lister(), volumes: pv.Lister(), classes: sc.Lister(),
		queue: workqueue.NewWithMetrics("localpathprovisioner", cc.Registerer), log: cc.Log(), EnsureClass: true}
	c.recorder = cc.EventRecorder(Driver + "_skiff-controller-manager")
	claimKey := func(o scheme.Object) { c.queue.Add("claim:" + controller.KeyFunc(o)) }
	volumeKey := func(o scheme.Object) { c.queue.Add("volume:" + o.GetMetadata().GetName()) }
	c.regs = append(c.regs,
		pvc.Informer().AddHandler(informer.Handler{OnAdd: claimKey, OnUpdate: func(_, o scheme.Object) { claimKey(o) }}),
		pv.Informer().AddHandler(informer.Handler{OnAdd: volumeKey, OnUpdate: func(_, o scheme.Object) { volumeKey(o) },
			// A claim whose volume vanished before it was bound may need
			// another.
			OnDelete: func(o scheme.Object) {
				if ref := o.(*corev1.PersistentVolume).GetSpec().GetClaimRef(); ref != nil {
					c.queue.Add("claim:" + ref.Namespace + "/" + ref.Name)
				}
			}}),
		sc.Informer())
	return c
}

// Name is the controller's name.
func (c *Controller) Name() string { return Name }

// Run provisions until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	if !informers.WaitForCacheSync(ctx, c.regs...) {
		c.queue.ShutDown()
		return nil
	}
	if c.EnsureClass {
		if err := c.ensureClass(ctx); err != nil {
			// Not fatal: an administrator may manage the class.
			c.log.Error("creating the local-path StorageClass failed", "err", err)
		}
	}
	controller.Run(ctx, c.queue, 2, c.reconcile, c.log)
	return nil
}

// DefaultClass is the StorageClass of the contract with the node plugin.
func DefaultClass() *storagev1.StorageClass {
	mode, policy := "WaitForFirstConsumer", "Delete"
	return &storagev1.StorageClass{
		Metadata:          &metav1.ObjectMeta{Name: ClassName, Annotations: map[string]string{annDefaultClass: "true"}},
		Provisioner:       Driver,
		ReclaimPolicy:     &policy,
		VolumeBindingMode: &mode,
	}
}

func (c *Controller) ensureClass(ctx context.Context) error {
	if _, err := c.classes.Get("", ClassName); err == nil {
		return nil
	}
	_, err := client.For[*storagev1.StorageClass](c.client, "").Create(ctx, DefaultClass())
	if err == nil {
		c.log.Info("created the default StorageClass", "storageClass", ClassName)
	}
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func (c *Controller) reconcile(ctx context.Context, key string) error {
	switch kind, rest, _ := strings.Cut(key, ":"); kind {
	case "claim":
		return c.syncClaim(ctx, rest)
	case "volume":
		return c.syncVolume(ctx, rest)
	}
	return nil
}

// VolumeName is the name of a claim's volume.
func VolumeName(claim *corev1.PersistentVolumeClaim) string {
	return "pvc-" + claim.GetMetadata().GetUid()
}

func (c *Controller) syncClaim(ctx context.Context, key string) error {
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
	a := m.GetAnnotations()
	node := a[annSelectedNode]
	switch {
	case m.GetDeletionTimestamp() != nil, claim.GetSpec().GetVolumeName() != "":
		return nil // going, or bound (or being bound) already
	case a[annStorageProvisioner] != Driver && a[annBetaStorageProvisioner] != Driver:
		return nil // not handed to us (yet)
	}
	sc, err := c.classes.Get("", claimbinding.ClaimClass(claim))
	if apierrors.IsNotFound(err) {
		return nil // the binder reports a missing class
	}
	if err != nil {
		return err
	}
	if sc.GetProvisioner() != Driver {
		return nil
	}
	if node == "" {
		if sc.GetVolumeBindingMode() != "WaitForFirstConsumer" {
			c.recorder.Eventf(claim, "Warning", "ProvisioningFailed",
				"storageclass %q: local-path volumes need volumeBindingMode WaitForFirstConsumer, to know their node", sc.GetMetadata().GetName())
		}
		return nil // the scheduler chooses the node
	}
	pvName := VolumeName(claim)
	if _, err := c.volumes.Get("", pvName); err == nil {
		return nil // made already; the binder binds it
	}
	if claim.GetSpec().VolumeMode != nil && claim.GetSpec().GetVolumeMode() == "Block" {
		c.recorder.Event(claim, "Warning", "ProvisioningFailed", "local-path volumes are directories: volumeMode Block is not supported")
		return nil
	}
	req, ok := claim.GetSpec().GetResources().GetRequests()["storage"]
	if !ok {
		c.recorder.Event(claim, "Warning", "ProvisioningFailed", "claim has no storage request")
		return nil
	}
	c.recorder.Eventf(claim, "Normal", "Provisioning", "External provisioner is provisioning volume for claim %q", key)
	pv := newVolume(claim, sc, node, req)
	_, err = client.For[*corev1.PersistentVolume](c.client, "").Create(ctx, pv)
	switch {
	case apierrors.IsAlreadyExists(err):
		return nil
	case err != nil:
		c.recorder.Eventf(claim, "Warning", "ProvisioningFailed", "failed to provision volume with StorageClass %q: %v", sc.GetMetadata().GetName(), err)
		return fmt.Errorf("creating volume %s for claim %s: %w", pvName, key, err)
	}
	c.recorder.Eventf(claim, "Normal", "ProvisioningSucceeded", "Successfully provisioned volume %s", pvName)
	c.log.Info("provisioned volume", "claim", key, "volume", pvName, "node", node)
	return nil
}

// newVolume is the contract's volume for a claim on node.
func newVolume(claim *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass, node string, req *metav1.Quantity) *corev1.PersistentVolume {
	m := claim.GetMetadata()
	name := VolumeName(claim)
	policy := "Delete"
	if sc.ReclaimPolicy != nil && *sc.ReclaimPolicy != "" {
		policy = *sc.ReclaimPolicy
	}
	mode := "Filesystem"
	return &corev1.PersistentVolume{
		Metadata: &metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{annProvisionedBy: Driver},
			Finalizers:  []string{Finalizer},
		},
		Spec: &corev1.PersistentVolumeSpec{
			Capacity: map[string]*metav1.Quantity{"storage": {String_: req.GetString_()}},
			PersistentVolumeSource: &corev1.PersistentVolumeSource{
				Csi: &corev1.CSIPersistentVolumeSource{Driver: Driver, VolumeHandle: name, FsType: ""},
			},
			AccessModes: slices.Clone(claim.GetSpec().GetAccessModes()),
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", ApiVersion: "v1", Namespace: m.GetNamespace(),
				Name: m.GetName(), Uid: m.GetUid(), ResourceVersion: m.GetResourceVersion()},
			PersistentVolumeReclaimPolicy: policy,
			StorageClassName:              sc.GetMetadata().GetName(),
			MountOptions:                  slices.Clone(sc.GetMountOptions()),
			VolumeMode:                    &mode,
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []*corev1.NodeSelectorTerm{{MatchExpressions: []*corev1.NodeSelectorRequirement{
					{Key: hostnameLabel, Operator: "In", Values: []string{node}},
				}}},
			}},
		},
	}
}

// syncVolume deletes a Released Delete volume of ours, and lets a volume of
// ours that is being deleted and no longer bound go.
func (c *Controller) syncVolume(ctx context.Context, name string) error {
	v, err := c.volumes.Get("", name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if v.GetMetadata().GetAnnotations()[annProvisionedBy] != Driver {
		return nil
	}
	phase := v.GetStatus().GetPhase()
	if v.GetMetadata().GetDeletionTimestamp() == nil {
		if phase != "Released" || v.GetSpec().GetPersistentVolumeReclaimPolicy() != "Delete" {
			return nil
		}
		uid := v.GetMetadata().GetUid()
		_, err := client.For[*corev1.PersistentVolume](c.client, "").Delete(ctx, name,
			client.DeleteOptions{Preconditions: &apipb.Preconditions{Uid: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			c.recorder.Eventf(v, "Warning", "VolumeFailedDelete", "deleting volume: %v", err)
			return fmt.Errorf("deleting volume %s: %w", name, err)
		}
		c.log.Info("deleted released volume", "volume", name)
		return nil // the delete's update event removes the finalizer
	}
	if phase == "Bound" || !slices.Contains(v.GetMetadata().GetFinalizers(), Finalizer) {
		return nil
	}
	out := proto.Clone(v).(*corev1.PersistentVolume)
	out.Metadata.Finalizers = slices.DeleteFunc(out.Metadata.Finalizers, func(f string) bool { return f == Finalizer })
	if _, err := client.For[*corev1.PersistentVolume](c.client, "").Update(ctx, out); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the finalizer of volume %s: %w", name, err)
	}
	return nil
}
