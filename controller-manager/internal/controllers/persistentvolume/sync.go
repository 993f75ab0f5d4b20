package persistentvolume

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/claimbinding"
)

// Event reasons, upstream's.
const (
	eventFailedBinding        = "FailedBinding"
	eventWaitForFirstConsumer = "WaitForFirstConsumer"
	eventExternalProvisioning = "ExternalProvisioning"
	eventProvisioningFailed   = "ProvisioningFailed"
	eventClaimLost            = "ClaimLost"
	eventClaimMisbound        = "ClaimMisbound"
	eventVolumeMismatch       = "VolumeMismatch"
	eventVolumeFailedRecycle  = "VolumeFailedRecycle"
	eventVolumeFailedDelete   = "VolumeFailedDelete"
	eventVolumeUnknownPolicy  = "VolumeUnknownReclaimPolicy"
)

func (c *Controller) syncClaimKey(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	claim, err := c.claims.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil // its volume was queued by the delete handler
	}
	if err != nil {
		return err
	}
	claim = c.latestClaim(claim)
	if !hasAnn(claim.GetMetadata(), AnnBindCompleted) {
		return c.syncUnboundClaim(ctx, claim)
	}
	return c.syncBoundClaim(ctx, claim)
}

// syncUnboundClaim binds a claim the controller has not finished with.
func (c *Controller) syncUnboundClaim(ctx context.Context, claim *corev1.PersistentVolumeClaim) error {
	if claim.GetSpec().GetVolumeName() == "" {
		// Retroactive default class: a claim that names no class (nil,
		// not "") gets the default once there is one.
		if claim.GetSpec().StorageClassName == nil && !hasAnn(claim.GetMetadata(), AnnBetaStorageClass) {
			if def := defaultClass(c.classes.List(nil)); def != nil {
				cl := cloneClaim(claim)
				n := def.GetMetadata().GetName()
				cl.Spec.StorageClassName = &n
				_, err := c.updateClaim(ctx, cl)
				if err == nil {
					c.log.Info("assigned the default storage class to a claim", "claim", controller.KeyFunc(claim), "storageClass", n)
				}
				return err // the update's event syncs it again
			}
		}
		delay := c.delayBinding(claim)
		volume, err := claimbinding.FindMatchingVolume(claim, c.listVolumes(), claimbinding.Match{DelayBinding: delay})
		if err != nil {
			return err
		}
		if volume != nil {
			return c.bind(ctx, volume, claim)
		}
		switch {
		case delay && !hasAnn(claim.GetMetadata(), AnnSelectedNode):
			c.recorder.Event(claim, "Normal", eventWaitForFirstConsumer, "waiting for first consumer to be created before binding")
		case claimbinding.ClaimClass(claim) != "":
			updated, err := c.provisionClaim(ctx, claim)
			if err != nil {
				return err
			}
			claim = updated
		default:
			c.recorder.Event(claim, "Normal", eventFailedBinding, "no persistent volumes available for this claim and no storage class is set")
		}
		_, err = c.updateClaimStatus(ctx, claim, ClaimPending, nil)
		return err
	}

	// The user asked for a volume by name.
	volume, err := c.getVolume(claim.GetSpec().GetVolumeName())
	if apierrors.IsNotFound(err) {
		_, err = c.updateClaimStatus(ctx, claim, ClaimPending, nil)
		return err
	}
	if err != nil {
		return err
	}
	if volume.GetSpec().GetClaimRef() == nil {
		if err := checkVolumeSatisfyClaim(volume, claim); err != nil {
			c.recorder.Eventf(claim, "Warning", eventVolumeMismatch, "Cannot bind to requested volume %q: %s", volume.GetMetadata().GetName(), err)
			_, err = c.updateClaimStatus(ctx, claim, ClaimPending, nil)
			return err
		}
		return c.bind(ctx, volume, claim)
	}
	if claimbinding.IsVolumeBoundToClaim(volume, claim) {
		return c.bind(ctx, volume, claim)
	}
	if hasAnn(claim.GetMetadata(), AnnBoundByController) {
		// We named the volume on the claim, yet it is another's: a bug.
		return fmt.Errorf("invalid binding of claim %q to volume %q: volume already claimed by %q",
			controller.KeyFunc(claim), volume.GetMetadata().GetName(), refKey(volume.GetSpec().GetClaimRef()))
	}
	c.recorder.Eventf(claim, "Warning", eventFailedBinding, "volume %q already bound to a different claim.", volume.GetMetadata().GetName())
	_, err = c.updateClaimStatus(ctx, claim, ClaimPending, nil)
	return err
}

// syncBoundClaim keeps a bound claim bound, or marks it Lost.
func (c *Controller) syncBoundClaim(ctx context.Context, claim *corev1.PersistentVolumeClaim) error {
	if claim.GetSpec().GetVolumeName() == "" {
		_, err := c.claimLost(ctx, claim, "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!")
		return err
	}
	volume, err := c.getVolume(claim.GetSpec().GetVolumeName())
	if apierrors.IsNotFound(err) {
		_, err = c.claimLost(ctx, claim, "Bound claim has lost its PersistentVolume. Data on the volume is lost!")
		return err
	}
	if err != nil {
		return err
	}
	if ref := volume.GetSpec().GetClaimRef(); ref == nil || ref.Uid == claim.GetMetadata().GetUid() ||
		ref.Uid == "" && claimbinding.IsVolumeBoundToClaim(volume, claim) {
		// Bound, or the volume lost its half: (re)bind, which writes only
		// what is missing.
		return c.bind(ctx, volume, claim)
	}
	_, err = c.claimLost(ctx, claim, "Two claims are bound to the same volume, this one is bound incorrectly")
	if err == nil {
		c.recorder.Event(claim, "Warning", eventClaimMisbound, "Two claims are bound to the same volume, this one is bound incorrectly")
	}
	return err
}

func (c *Controller) claimLost(ctx context.Context, claim *corev1.PersistentVolumeClaim, msg string) (*corev1.PersistentVolumeClaim, error) {
	if claim.GetStatus().GetPhase() == ClaimLost {
		return claim, nil
	}
	out, err := c.updateClaimStatus(ctx, claim, ClaimLost, nil)
	if err == nil {
		c.recorder.Event(claim, "Warning", eventClaimLost, msg)
	}
	return out, err
}

// delayBinding: the claim's class waits for the first consumer. A missing
// class binds immediately, as upstream.
func (c *Controller) delayBinding(claim *corev1.PersistentVolumeClaim) bool {
	n := claimbinding.ClaimClass(claim)
	if n == "" {
		return false
	}
	sc, err := c.classes.Get("", n)
	return err == nil && sc.GetVolumeBindingMode() == BindingWaitForFirstConsumer
}

// provisionClaim hands the claim to its class's external provisioner by
// annotating it; the provisioner creates a volume pre-bound to the claim.
func (c *Controller) provisionClaim(ctx context.Context, claim *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, error) {
	n := claimbinding.ClaimClass(claim)
	sc, err := c.classes.Get("", n)
	if apierrors.IsNotFound(err) {
		c.recorder.Eventf(claim, "Warning", eventProvisioningFailed, "storageclass.storage.k8s.io %q not found", n)
		return claim, nil
	}
	if err != nil {
		return nil, err
	}
	p := sc.GetProvisioner()
	if strings.HasPrefix(p, "kubernetes.io/") {
		// Skiff has no in-tree volume plugins; kubernetes.io/no-provisioner
		// classes are for volumes an administrator creates.
		c.recorder.Eventf(claim, "Warning", eventProvisioningFailed, "no volume plugin matched name: %s", p)
		return claim, nil
	}
	a := claim.GetMetadata().GetAnnotations()
	if a[AnnStorageProvisioner] != p || a[AnnBetaStorageProvisioner] != p {
		cl := cloneClaim(claim)
		setAnn(cl.Metadata, AnnStorageProvisioner, p)
		setAnn(cl.Metadata, AnnBetaStorageProvisioner, p)
		if claim, err = c.updateClaim(ctx, cl); err != nil {
			return nil, err
		}
	}
	c.recorder.Eventf(claim, "Normal", eventExternalProvisioning,
		"Waiting for a volume to be created either by the external provisioner '%s' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.", p)
	return claim, nil
}

// bind completes a binding in upstream's order: the volume's claimRef, the
// volume's phase, the claim's volumeName and annotations, the claim's
// phase. Each step writes only what is missing, so an interrupted bind
// resumes where it stopped.
func (c *Controller) bind(ctx context.Context, volume *corev1.PersistentVolume, claim *corev1.PersistentVolumeClaim) error {
	volume, err := c.bindVolumeToClaim(ctx, volume, claim)
	if err != nil {
		return err
	}
	if volume, err = c.updateVolumePhase(ctx, volume, VolumeBound, "", ""); err != nil {
		return err
	}
	if claim, err = c.bindClaimToVolume(ctx, claim, volume); err != nil {
		return err
	}
	if _, err = c.updateClaimStatus(ctx, claim, ClaimBound, volume); err != nil {
		return err
	}
	c.log.Info("bound claim to volume", "claim", controller.KeyFunc(claim), "volume", volume.GetMetadata().GetName())
	return nil
}

func claimRef(claim *corev1.PersistentVolumeClaim) *corev1.ObjectReference {
	m := claim.GetMetadata()
	return &corev1.ObjectReference{Kind: "PersistentVolumeClaim", ApiVersion: "v1", Namespace: m.GetNamespace(),
		Name: m.GetName(), Uid: m.GetUid(), ResourceVersion: m.GetResourceVersion()}
}

func refKey(r *corev1.ObjectReference) string { return r.GetNamespace() + "/" + r.GetName() }

func (c *Controller) bindVolumeToClaim(ctx context.Context, volume *corev1.PersistentVolume, claim *corev1.PersistentVolumeClaim) (*corev1.PersistentVolume, error) {
	ref := volume.GetSpec().GetClaimRef()
	if ref != nil && ref.Uid == claim.GetMetadata().GetUid() && claimbinding.IsVolumeBoundToClaim(volume, claim) {
		return volume, nil
	}
	v := cloneVolume(volume)
	if v.Spec == nil {
		v.Spec = &corev1.PersistentVolumeSpec{}
	}
	// A user pre-binding (claimRef without a UID) stays the user's.
	byController := !claimbinding.IsVolumeBoundToClaim(volume, claim)
	v.Spec.ClaimRef = claimRef(claim)
	if byController {
		setAnn(v.Metadata, AnnBoundByController, "yes")
	}
	return c.updateVolume(ctx, v)
}

func (c *Controller) bindClaimToVolume(ctx context.Context, claim *corev1.PersistentVolumeClaim, volume *corev1.PersistentVolume) (*corev1.PersistentVolumeClaim, error) {
	changed := false
	cl := cloneClaim(claim)
	if cl.Spec == nil {
		cl.Spec = &corev1.PersistentVolumeClaimSpec{}
	}
	if cl.Spec.VolumeName != volume.GetMetadata().GetName() {
		cl.Spec.VolumeName = volume.GetMetadata().GetName()
		setAnn(cl.Metadata, AnnBoundByController, "yes")
		changed = true
	}
	if !hasAnn(cl.Metadata, AnnBindCompleted) {
		setAnn(cl.Metadata, AnnBindCompleted, "yes")
		changed = true
	}
	if !changed {
		return claim, nil
	}
	return c.updateClaim(ctx, cl)
}

// updateClaimStatus writes the phase, and the volume's access modes and
// capacity (cleared without a volume), when they differ.
func (c *Controller) updateClaimStatus(ctx context.Context, claim *corev1.PersistentVolumeClaim, phase string, volume *corev1.PersistentVolume) (*corev1.PersistentVolumeClaim, error) {
	st := claim.GetStatus()
	var modes []string
	var capa map[string]*metav1.Quantity
	if volume != nil {
		modes, capa = volume.GetSpec().GetAccessModes(), volume.GetSpec().GetCapacity()
	}
	if st.GetPhase() == phase && slices.Equal(st.GetAccessModes(), modes) && sameCapacity(st.GetCapacity(), capa) {
		return claim, nil
	}
	cl := cloneClaim(claim)
	if cl.Status == nil {
		cl.Status = &corev1.PersistentVolumeClaimStatus{}
	}
	cl.Status.Phase = phase
	cl.Status.AccessModes = slices.Clone(modes)
	cl.Status.Capacity = nil
	if len(capa) > 0 {
		cl.Status.Capacity = map[string]*metav1.Quantity{}
		for k, q := range capa {
			cl.Status.Capacity[k] = &metav1.Quantity{String_: q.GetString_()}
		}
	}
	out, err := client.For[*corev1.PersistentVolumeClaim](c.client, cl.GetMetadata().GetNamespace()).UpdateStatus(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("updating status of claim %s: %w", controller.KeyFunc(claim), err)
	}
	c.storeClaim(out)
	return out, nil
}

func sameCapacity(a, b map[string]*metav1.Quantity) bool {
	if len(a) != len(b) {
		return false
	}
	for k, q := range a {
		if r, ok := b[k]; !ok || r.GetString_() != q.GetString_() {
			return false
		}
	}
	return true
}

func (c *Controller) updateClaim(ctx context.Context, cl *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, error) {
	out, err := client.For[*corev1.PersistentVolumeClaim](c.client, cl.GetMetadata().GetNamespace()).Update(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("updating claim %s: %w", controller.KeyFunc(cl), err)
	}
	c.storeClaim(out)
	return out, nil
}

func (c *Controller) updateVolume(ctx context.Context, v *corev1.PersistentVolume) (*corev1.PersistentVolume, error) {
	out, err := client.For[*corev1.PersistentVolume](c.client, "").Update(ctx, v)
	if err != nil {
		return nil, fmt.Errorf("updating volume %s: %w", v.GetMetadata().GetName(), err)
	}
	c.storeVolume(out)
	return out, nil
}

// updateVolumePhase writes a phase change with its reason and message, and
// lastPhaseTransitionTime, as upstream.
func (c *Controller) updateVolumePhase(ctx context.Context, volume *corev1.PersistentVolume, phase, reason, message string) (*corev1.PersistentVolume, error) {
	st := volume.GetStatus()
	if st.GetPhase() == phase && st.GetReason() == reason && st.GetMessage() == message {
		return volume, nil
	}
	v := cloneVolume(volume)
	if v.Status == nil {
		v.Status = &corev1.PersistentVolumeStatus{}
	}
	if v.Status.Phase != phase {
		v.Status.LastPhaseTransitionTime = metav1.NewTime(c.now())
	}
	v.Status.Phase, v.Status.Reason, v.Status.Message = phase, reason, message
	out, err := client.For[*corev1.PersistentVolume](c.client, "").UpdateStatus(ctx, v)
	if err != nil {
		return nil, fmt.Errorf("updating status of volume %s: %w", v.GetMetadata().GetName(), err)
	}
	c.storeVolume(out)
	return out, nil
}

func (c *Controller) syncVolumeKey(ctx context.Context, name string) error {
	volume, err := c.getVolume(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.syncVolume(ctx, volume)
}

// syncVolume is upstream's: Available without a claim, Bound while its
// claim names it, Released (then reclaimed) once the claim is gone.
func (c *Controller) syncVolume(ctx context.Context, volume *corev1.PersistentVolume) error {
	ref := volume.GetSpec().GetClaimRef()
	if ref == nil || ref.Uid == "" {
		// Free, or pre-bound by the user to a claim that has not yet
		// been bound to it.
		_, err := c.updateVolumePhase(ctx, volume, VolumeAvailable, "", "")
		return err
	}
	claim, err := c.claimOf(ctx, ref)
	if err != nil {
		return err
	}
	switch {
	case claim == nil:
		if p := volume.GetStatus().GetPhase(); p != VolumeReleased && p != VolumeFailed {
			if volume, err = c.updateVolumePhase(ctx, volume, VolumeReleased, "", ""); err != nil {
				return err
			}
		}
		return c.reclaimVolume(ctx, volume)
	case claim.GetSpec().GetVolumeName() == "":
		// Bound on our side, the claim's half is to come (or the user
		// removed it): the claim's sync finishes or repairs it.
		if claimbinding.VolumeModeMismatch(claim, volume) {
			c.recorder.Eventf(volume, "Warning", eventVolumeMismatch, "Cannot bind PersistentVolume to requested PersistentVolumeClaim %q due to incompatible volumeMode.", claim.GetMetadata().GetName())
			return nil
		}
		c.claimQ.Add(controller.KeyFunc(claim))
		return nil
	case claim.GetSpec().GetVolumeName() == volume.GetMetadata().GetName():
		_, err := c.updateVolumePhase(ctx, volume, VolumeBound, "", "")
		return err
	}
	// The claim is bound to another volume.
	if hasAnn(volume.GetMetadata(), AnnDynamicallyProvisioned) && volume.GetSpec().GetPersistentVolumeReclaimPolicy() == "Delete" {
		// Provisioned for this claim, which went elsewhere: not needed.
		if volume.GetStatus().GetPhase() != VolumeReleased && volume.GetStatus().GetPhase() != VolumeFailed {
			if volume, err = c.updateVolumePhase(ctx, volume, VolumeReleased, "", ""); err != nil {
				return err
			}
		}
		return c.reclaimVolume(ctx, volume)
	}
	return c.unbindVolume(ctx, volume)
}

// claimOf is the claim a reference names, nil when it is gone or is
// another object of the same name. The cache saying "gone" is checked
// against the apiserver: releasing a volume is not undone lightly.
func (c *Controller) claimOf(ctx context.Context, ref *corev1.ObjectReference) (*corev1.PersistentVolumeClaim, error) {
	claim, err := c.claims.Get(ref.Namespace, ref.Name)
	if apierrors.IsNotFound(err) {
		claim, err = client.For[*corev1.PersistentVolumeClaim](c.client, ref.Namespace).Get(ctx, ref.Name)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
	}
	if err != nil {
		return nil, err
	}
	claim = c.latestClaim(claim)
	if claim.GetMetadata().GetUid() != ref.Uid {
		return nil, nil
	}
	return claim, nil
}

// unbindVolume undoes a binding the claim does not share: the controller's
// claimRef goes, a user's pre-binding loses only the UID.
func (c *Controller) unbindVolume(ctx context.Context, volume *corev1.PersistentVolume) error {
	v := cloneVolume(volume)
	if hasAnn(v.Metadata, AnnBoundByController) {
		v.Spec.ClaimRef = nil
		delete(v.Metadata.Annotations, AnnBoundByController)
	} else {
		v.Spec.ClaimRef.Uid = ""
		v.Spec.ClaimRef.ResourceVersion = ""
	}
	v, err := c.updateVolume(ctx, v)
	if err != nil {
		return err
	}
	_, err = c.updateVolumePhase(ctx, v, VolumeAvailable, "", "")
	return err
}

// reclaimVolume applies a Released volume's reclaim policy.
func (c *Controller) reclaimVolume(ctx context.Context, volume *corev1.PersistentVolume) error {
	if volume.GetStatus().GetPhase() != VolumeReleased {
		return nil // Failed already said why
	}
	name := volume.GetMetadata().GetName()
	switch policy := volume.GetSpec().GetPersistentVolumeReclaimPolicy(); policy {
	case "Retain", "":
		c.log.Debug("volume is released and reclaim policy is Retain, nothing to do", "volume", name)
		return nil
	case "Recycle":
		return c.volumeFailed(ctx, volume, eventVolumeFailedRecycle, "Recycle is not supported: delete the volume, or use a provisioner")
	case "Delete":
		if p := volume.GetMetadata().GetAnnotations()[AnnDynamicallyProvisioned]; p != "" && !strings.HasPrefix(p, "kubernetes.io/") {
			// The external provisioner deletes it (its finalizer keeps
			// the object until then).
			c.log.Debug("volume is released, waiting for its external provisioner to delete it", "volume", name, "provisioner", p)
			return nil
		}
		return c.volumeFailed(ctx, volume, eventVolumeFailedDelete,
			fmt.Sprintf("error getting deleter volume plugin for volume %q: no deletable volume plugin matched", name))
	default:
		return c.volumeFailed(ctx, volume, eventVolumeUnknownPolicy, "Volume has unrecognized PersistentVolumeReclaimPolicy")
	}
}

func (c *Controller) volumeFailed(ctx context.Context, volume *corev1.PersistentVolume, reason, msg string) error {
	if _, err := c.updateVolumePhase(ctx, volume, VolumeFailed, reason, msg); err != nil {
		return err
	}
	c.recorder.Event(volume, "Warning", reason, msg)
	return nil
}
