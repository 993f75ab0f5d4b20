package persistentvolume

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/scheme"
)

func ptr[T any](v T) *T { return &v }

type pvOpt func(*corev1.PersistentVolume)

func pv(name, size, class string, opts ...pvOpt) *corev1.PersistentVolume {
	v := &corev1.PersistentVolume{
		Metadata: &metav1.ObjectMeta{Name: name, Uid: "uid-" + name, ResourceVersion: "1"},
		Spec: &corev1.PersistentVolumeSpec{
			Capacity:                      map[string]*metav1.Quantity{"storage": {String_: size}},
			AccessModes:                   []string{"ReadWriteOnce"},
			StorageClassName:              class,
			PersistentVolumeReclaimPolicy: "Retain",
		},
		Status: &corev1.PersistentVolumeStatus{Phase: VolumeAvailable},
	}
	for _, o := range opts {
		o(v)
	}
	return v
}

func modes(m ...string) pvOpt { return func(v *corev1.PersistentVolume) { v.Spec.AccessModes = m } }
func labelled(k, val string) pvOpt {
	return func(v *corev1.PersistentVolume) { v.Metadata.Labels = map[string]string{k: val} }
}
func block() pvOpt { return func(v *corev1.PersistentVolume) { v.Spec.VolumeMode = ptr("Block") } }
func reclaim(p string) pvOpt {
	return func(v *corev1.PersistentVolume) { v.Spec.PersistentVolumeReclaimPolicy = p }
}
func provisionedBy(p string) pvOpt {
	return func(v *corev1.PersistentVolume) {
		v.Metadata.Annotations = map[string]string{AnnDynamicallyProvisioned: p}
	}
}
func claimRefTo(ns, name, uid string) pvOpt {
	return func(v *corev1.PersistentVolume) {
		v.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: name, Uid: uid}
	}
}
func phase(p string) pvOpt { return func(v *corev1.PersistentVolume) { v.Status.Phase = p } }

type pvcOpt func(*corev1.PersistentVolumeClaim)

func pvc(name, size string, class *string, opts ...pvcOpt) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, ResourceVersion: "1"},
		Spec: &corev1.PersistentVolumeClaimSpec{
			AccessModes:      []string{"ReadWriteOnce"},
			Resources:        &corev1.VolumeResourceRequirements{Requests: map[string]*metav1.Quantity{"storage": {String_: size}}},
			StorageClassName: class,
		},
		Status: &corev1.PersistentVolumeClaimStatus{Phase: ClaimPending},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func volumeName(n string) pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) { c.Spec.VolumeName = n }
}
func selector(k, v string) pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) {
		c.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
	}
}
func claimModes(m ...string) pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) { c.Spec.AccessModes = m }
}
func blockClaim() pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) { c.Spec.VolumeMode = ptr("Block") }
}
func annotated(k, v string) pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) {
		if c.Metadata.Annotations == nil {
			c.Metadata.Annotations = map[string]string{}
		}
		c.Metadata.Annotations[k] = v
	}
}

func class(name, provisioner, mode string, isDefault bool) *storagev1.StorageClass {
	sc := &storagev1.StorageClass{Metadata: &metav1.ObjectMeta{Name: name}, Provisioner: provisioner, VolumeBindingMode: &mode}
	if isDefault {
		sc.Metadata.Annotations = map[string]string{AnnDefaultClass: "true"}
	}
	return sc
}

func start(t *testing.T, objs ...scheme.Object) (*fake.Clientset, *record.FakeRecorder) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	cc, rec := controllertest.Context(cs, controllers.Options{})
	c := newController(cc)
	c.ResyncPeriod = 0
	controllertest.Run(t, cc, c)
	return cs, rec
}

func getPV(cs *fake.Clientset, name string) *corev1.PersistentVolume {
	k, _ := scheme.ForResource("", "persistentvolumes")
	o, err := cs.Tracker().Get(k, "", name)
	if err != nil {
		return nil
	}
	return o.(*corev1.PersistentVolume)
}

func getPVC(cs *fake.Clientset, name string) *corev1.PersistentVolumeClaim {
	k, _ := scheme.ForResource("", "persistentvolumeclaims")
	o, err := cs.Tracker().Get(k, "default", name)
	if err != nil {
		return nil
	}
	return o.(*corev1.PersistentVolumeClaim)
}

// waitBound waits for claim and volume to be bound to each other, both
// phases Bound.
func waitBound(t *testing.T, cs *fake.Clientset, claim, volume string) {
	t.Helper()
	controllertest.Eventually(t, func() (bool, string) {
		c, v := getPVC(cs, claim), getPV(cs, volume)
		switch {
		case c.GetSpec().GetVolumeName() != volume:
			return false, fmt.Sprintf("claim %s has volumeName %q, want %s", claim, c.GetSpec().GetVolumeName(), volume)
		case c.GetStatus().GetPhase() != ClaimBound:
			return false, fmt.Sprintf("claim %s is %q", claim, c.GetStatus().GetPhase())
		case v.GetSpec().GetClaimRef().GetUid() != c.GetMetadata().GetUid():
			return false, fmt.Sprintf("volume %s claimRef %v", volume, v.GetSpec().GetClaimRef())
		case v.GetStatus().GetPhase() != VolumeBound:
			return false, fmt.Sprintf("volume %s is %q", volume, v.GetStatus().GetPhase())
		}
		return true, ""
	})
}

func waitEvent(t *testing.T, rec *record.FakeRecorder, substr string) {
	t.Helper()
	var seen []string
	controllertest.Eventually(t, func() (bool, string) {
		for {
			select {
			case e := <-rec.Events:
				seen = append(seen, e)
				if strings.Contains(e, substr) {
					return true, ""
				}
				continue
			default:
			}
			return false, fmt.Sprintf("no event %q among %q", substr, seen)
		}
	})
}

func TestBindingMatrix(t *testing.T) {
	fast := ptr("fast")
	cases := []struct {
		name  string
		pvs   []*corev1.PersistentVolume
		claim *corev1.PersistentVolumeClaim
		want  string // volume name, "" for none
	}{
		{"smallest fitting volume of the class", []*corev1.PersistentVolume{
			pv("small", "1Gi", "fast"), pv("ten", "10Gi", "fast"), pv("five", "5Gi", "fast"), pv("slow", "2Gi", "slow"),
		}, pvc("c", "2Gi", fast), "five"},
		{"exact size fits", []*corev1.PersistentVolume{pv("two", "2Gi", "fast"), pv("three", "3Gi", "fast")}, pvc("c", "2048Mi", fast), "two"},
		{"access modes must be offered", []*corev1.PersistentVolume{
			pv("rwo", "1Gi", "fast"), pv("rwx", "5Gi", "fast", modes("ReadWriteOnce", "ReadWriteMany")),
		}, pvc("c", "1Gi", fast, claimModes("ReadWriteMany")), "rwx"},
		{"selector", []*corev1.PersistentVolume{pv("plain", "1Gi", "fast"), pv("gold", "9Gi", "fast", labelled("tier", "gold"))},
			pvc("c", "1Gi", fast, selector("tier", "gold")), "gold"},
		{"volume mode", []*corev1.PersistentVolume{pv("fs", "1Gi", "fast"), pv("blk", "4Gi", "fast", block())},
			pvc("c", "1Gi", fast, blockClaim()), "blk"},
		{"no class matches only class-less volumes", []*corev1.PersistentVolume{pv("classy", "1Gi", "fast"), pv("bare", "8Gi", "")},
			pvc("c", "1Gi", ptr("")), "bare"},
		{"taken and non-Available volumes are skipped", []*corev1.PersistentVolume{
			pv("taken", "1Gi", "fast", claimRefTo("default", "other", "uid-other"), phase(VolumeBound)),
			pv("released", "1Gi", "fast", phase(VolumeReleased)), pv("free", "2Gi", "fast"),
		}, pvc("c", "1Gi", fast), "free"},
		{"user pre-bound volume wins over a smaller one", []*corev1.PersistentVolume{
			pv("small", "1Gi", "fast"), pv("mine", "5Gi", "fast", claimRefTo("default", "c", "")),
		}, pvc("c", "1Gi", fast), "mine"},
		{"too small", []*corev1.PersistentVolume{pv("small", "1Gi", "fast")}, pvc("c", "2Gi", fast), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := []scheme.Object{tc.claim}
			for _, v := range tc.pvs {
				objs = append(objs, v)
			}
			// Known class with Immediate binding and no provisioner: the
			// classes here are for pre-made volumes.
			objs = append(objs, class("fast", "kubernetes.io/no-provisioner", BindingImmediate, false))
			cs, rec := start(t, objs...)
			if tc.want == "" {
				waitEvent(t, rec, "ProvisioningFailed")
				if c := getPVC(cs, "c"); c.GetSpec().GetVolumeName() != "" || c.GetStatus().GetPhase() != ClaimPending {
					t.Fatalf("claim = %v, want Pending and unbound", c)
				}
				return
			}
			waitBound(t, cs, "c", tc.want)
			c, v := getPVC(cs, "c"), getPV(cs, tc.want)
			if got := c.GetStatus().GetCapacity()["storage"].GetString_(); got != v.GetSpec().GetCapacity()["storage"].GetString_() {
				t.Errorf("claim status capacity %s, want the volume's", got)
			}
			if c.GetMetadata().GetAnnotations()[AnnBindCompleted] != "yes" || c.GetMetadata().GetAnnotations()[AnnBoundByController] != "yes" {
				t.Errorf("claim annotations %v, want bind-completed and bound-by-controller", c.GetMetadata().GetAnnotations())
			}
			_, byCtrl := v.GetMetadata().GetAnnotations()[AnnBoundByController]
			if prebound := tc.name == "user pre-bound volume wins over a smaller one"; byCtrl == prebound {
				t.Errorf("volume bound-by-controller = %v, want %v (a user's pre-binding is the user's)", byCtrl, !prebound)
			}
		})
	}
}

func TestClaimNamingAVolume(t *testing.T) {
	t.Run("binds it", func(t *testing.T) {
		cs, _ := start(t, pv("a", "1Gi", ""), pv("b", "5Gi", ""), pvc("c", "1Gi", ptr(""), volumeName("b")))
		waitBound(t, cs, "c", "b")
		if _, ok := getPVC(cs, "c").GetMetadata().GetAnnotations()[AnnBoundByController]; ok {
			t.Error("the user named the volume, yet the claim says bound-by-controller")
		}
		if getPV(cs, "b").GetMetadata().GetAnnotations()[AnnBoundByController] != "yes" {
			t.Error("the controller wrote the volume's claimRef without bound-by-controller")
		}
	})
	t.Run("too small", func(t *testing.T) {
		cs, rec := start(t, pv("a", "1Gi", ""), pvc("c", "2Gi", ptr(""), volumeName("a")))
		waitEvent(t, rec, "VolumeMismatch Cannot bind to requested volume \"a\": requested PV is too small")
		if getPV(cs, "a").GetSpec().GetClaimRef() != nil {
			t.Error("a too small volume was bound")
		}
	})
	t.Run("taken by another claim", func(t *testing.T) {
		cs, rec := start(t, pv("a", "1Gi", "", claimRefTo("default", "other", "uid-other"), phase(VolumeBound)),
			pvc("c", "1Gi", ptr(""), volumeName("a")))
		waitEvent(t, rec, `FailedBinding volume "a" already bound to a different claim.`)
		if got := getPVC(cs, "c").GetStatus().GetPhase(); got != ClaimPending {
			t.Errorf("claim phase %s, want Pending", got)
		}
	})
}

func TestWaitForFirstConsumerAndProvisioning(t *testing.T) {
	wffc := class("local-path", "local-path.skiff.dev", BindingWaitForFirstConsumer, true)
	cs, rec := start(t, wffc, pv("free", "5Gi", "local-path"), pvc("c", "1Gi", ptr("local-path")))
	waitEvent(t, rec, "WaitForFirstConsumer waiting for first consumer to be created before binding")
	if getPV(cs, "free").GetSpec().GetClaimRef() != nil || getPVC(cs, "c").GetSpec().GetVolumeName() != "" {
		t.Fatal("a WaitForFirstConsumer claim was bound before the scheduler chose a node")
	}
	if _, ok := getPVC(cs, "c").GetMetadata().GetAnnotations()[AnnStorageProvisioner]; ok {
		t.Fatal("handed to the provisioner before a node was selected")
	}

	// The scheduler picks a node: the claim goes to the external provisioner.
	c := getPVC(cs, "c")
	c.Metadata.Annotations = map[string]string{AnnSelectedNode: "node-1"}
	if _, err := client.For[*corev1.PersistentVolumeClaim](cs.Client, "default").Update(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, rec, "ExternalProvisioning Waiting for a volume to be created either by the external provisioner 'local-path.skiff.dev'")
	a := getPVC(cs, "c").GetMetadata().GetAnnotations()
	if a[AnnStorageProvisioner] != "local-path.skiff.dev" || a[AnnBetaStorageProvisioner] != "local-path.skiff.dev" {
		t.Fatalf("claim annotations %v, want both storage-provisioner annotations", a)
	}

	// The provisioner's volume, pre-bound to the claim, is bound to it.
	made := pv("pvc-uid-c", "1Gi", "local-path", claimRefTo("default", "c", "uid-c"), provisionedBy("local-path.skiff.dev"), reclaim("Delete"))
	made.Status = nil
	made.Metadata.ResourceVersion = ""
	if _, err := client.For[*corev1.PersistentVolume](cs.Client, "").Create(context.Background(), made); err != nil {
		t.Fatal(err)
	}
	waitBound(t, cs, "c", "pvc-uid-c")
}

func TestProvisioningImmediate(t *testing.T) {
	cs, rec := start(t, class("ext", "example.com/nfs", BindingImmediate, false), pvc("c", "1Gi", ptr("ext")))
	waitEvent(t, rec, "ExternalProvisioning")
	if got := getPVC(cs, "c").GetMetadata().GetAnnotations()[AnnStorageProvisioner]; got != "example.com/nfs" {
		t.Errorf("storage-provisioner = %q", got)
	}
	cs2, rec2 := start(t, pvc("c", "1Gi", ptr("missing")))
	waitEvent(t, rec2, `ProvisioningFailed storageclass.storage.k8s.io "missing" not found`)
	if _, ok := getPVC(cs2, "c").GetMetadata().GetAnnotations()[AnnStorageProvisioner]; ok {
		t.Error("a claim of a missing class was handed to a provisioner")
	}
}

func TestNoClassNoVolume(t *testing.T) {
	cs, rec := start(t, pvc("c", "1Gi", ptr("")))
	waitEvent(t, rec, "FailedBinding no persistent volumes available for this claim and no storage class is set")
	if got := getPVC(cs, "c").GetStatus().GetPhase(); got != ClaimPending {
		t.Errorf("phase %q, want Pending", got)
	}
}

func TestRetroactiveDefaultClass(t *testing.T) {
	cs, _ := start(t, pvc("c", "1Gi", nil), pvc("empty", "1Gi", ptr("")))
	ctx := context.Background()
	if _, err := client.For[*storagev1.StorageClass](cs.Client, "").Create(ctx, class("local-path", "local-path.skiff.dev", BindingWaitForFirstConsumer, true)); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		got := getPVC(cs, "c").GetSpec().StorageClassName
		return got != nil && *got == "local-path", fmt.Sprintf("storageClassName %v, want the default local-path", got)
	})
	if got := getPVC(cs, "empty").GetSpec().GetStorageClassName(); got != "" {
		t.Errorf("a claim asking for no class (\"\") got %q", got)
	}
}

func TestDefaultClassNewestWins(t *testing.T) {
	a, b := class("a", "x", BindingImmediate, true), class("b", "x", BindingImmediate, true)
	a.Metadata.CreationTimestamp = &metav1.Time{Seconds: 100}
	b.Metadata.CreationTimestamp = &metav1.Time{Seconds: 200}
	if got := defaultClass([]*storagev1.StorageClass{b, a, class("c", "x", BindingImmediate, false)}).GetMetadata().GetName(); got != "b" {
		t.Errorf("default = %s, want the newest, b", got)
	}
}

func TestPhasesAndReclaim(t *testing.T) {
	boundPair := func(volume string, opts ...pvOpt) (*corev1.PersistentVolume, *corev1.PersistentVolumeClaim) {
		v := pv(volume, "1Gi", "", append([]pvOpt{claimRefTo("default", "c-"+volume, "uid-c-"+volume), phase(VolumeBound)}, opts...)...)
		c := pvc("c-"+volume, "1Gi", ptr(""), volumeName(volume), annotated(AnnBindCompleted, "yes"))
		c.Status.Phase = ClaimBound
		return v, c
	}
	cases := []struct {
		name      string
		opts      []pvOpt
		wantPhase string
		wantEvent string
	}{
		{"Retain keeps the volume Released", []pvOpt{reclaim("Retain")}, VolumeReleased, ""},
		{"Delete of a provisioned volume waits for its provisioner", []pvOpt{reclaim("Delete"), provisionedBy("local-path.skiff.dev")}, VolumeReleased, ""},
		{"Delete without a provisioner fails", []pvOpt{reclaim("Delete")}, VolumeFailed, "VolumeFailedDelete"},
		{"Recycle is not supported", []pvOpt{reclaim("Recycle")}, VolumeFailed, "VolumeFailedRecycle"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, c := boundPair("v", tc.opts...)
			cs, rec := start(t, v, c)
			waitBound(t, cs, "c-v", "v")
			if _, err := client.For[*corev1.PersistentVolumeClaim](cs.Client, "default").Delete(context.Background(), "c-v", client.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			controllertest.Eventually(t, func() (bool, string) {
				got := getPV(cs, "v").GetStatus().GetPhase()
				return got == tc.wantPhase, fmt.Sprintf("volume phase %q, want %q", got, tc.wantPhase)
			})
			if tc.wantEvent != "" {
				waitEvent(t, rec, tc.wantEvent)
			}
			if getPV(cs, "v").GetSpec().GetClaimRef() == nil {
				t.Error("a released volume lost its claimRef: it must not be bound again without an administrator")
			}
		})
	}

	t.Run("claim whose volume is deleted is Lost", func(t *testing.T) {
		v, c := boundPair("v")
		cs, rec := start(t, v, c)
		waitBound(t, cs, "c-v", "v")
		if _, err := client.For[*corev1.PersistentVolume](cs.Client, "").Delete(context.Background(), "v", client.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		controllertest.Eventually(t, func() (bool, string) {
			got := getPVC(cs, "c-v").GetStatus().GetPhase()
			return got == ClaimLost, fmt.Sprintf("claim phase %q, want Lost", got)
		})
		waitEvent(t, rec, "ClaimLost Bound claim has lost its PersistentVolume. Data on the volume is lost!")
	})

	t.Run("volume freed by its claim binding elsewhere", func(t *testing.T) {
		// The controller reserved v for c, but c is bound to w.
		v := pv("v", "1Gi", "", claimRefTo("default", "c-w", "uid-c-w"), phase(VolumeBound))
		v.Metadata.Annotations = map[string]string{AnnBoundByController: "yes"}
		w, c := boundPair("w")
		cs, _ := start(t, v, w, c)
		controllertest.Eventually(t, func() (bool, string) {
			got := getPV(cs, "v")
			return got.GetSpec().GetClaimRef() == nil && got.GetStatus().GetPhase() == VolumeAvailable,
				fmt.Sprintf("v claimRef %v phase %q, want none and Available", got.GetSpec().GetClaimRef(), got.GetStatus().GetPhase())
		})
	})

	t.Run("new volume without phase becomes Available", func(t *testing.T) {
		v := pv("v", "1Gi", "")
		v.Status = nil
		cs, _ := start(t, v)
		controllertest.Eventually(t, func() (bool, string) {
			got := getPV(cs, "v").GetStatus().GetPhase()
			return got == VolumeAvailable, fmt.Sprintf("phase %q", got)
		})
	})
}
