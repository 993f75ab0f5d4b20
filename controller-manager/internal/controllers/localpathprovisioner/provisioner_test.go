package localpathprovisioner

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/fake"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	"skiff.dev/controller-manager/internal/controllers/persistentvolume"
	"skiff.dev/controller-manager/internal/controllers/pvprotection"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/scheme"
)

func claim(name string, ann map[string]string) *corev1.PersistentVolumeClaim {
	cls := ClassName
	return &corev1.PersistentVolumeClaim{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Uid: "u-" + name, Annotations: ann},
		Spec: &corev1.PersistentVolumeClaimSpec{
			AccessModes:      []string{"ReadWriteOnce", "ReadWriteOncePod"},
			Resources:        &corev1.VolumeResourceRequirements{Requests: map[string]*metav1.Quantity{"storage": {String_: "3Gi"}}},
			StorageClassName: &cls,
		},
	}
}

func handedOver(node string) map[string]string {
	a := map[string]string{annStorageProvisioner: Driver}
	if node != "" {
		a[annSelectedNode] = node
	}
	return a
}

func volumes(cs *fake.Clientset) map[string]*corev1.PersistentVolume {
	k, _ := scheme.ForResource("", "persistentvolumes")
	out := map[string]*corev1.PersistentVolume{}
	for _, o := range cs.Tracker().List(k, "") {
		out[o.GetMetadata().GetName()] = o.(*corev1.PersistentVolume)
	}
	return out
}

func run(t *testing.T, cs *fake.Clientset, ensure bool) {
	t.Helper()
	cc, _ := controllertest.Context(cs, controllers.Options{})
	c := newController(cc)
	c.EnsureClass = ensure
	controllertest.Run(t, cc, c)
}

func TestProvisionsPerContract(t *testing.T) {
	cs := fake.NewClientset(DefaultClass(), claim("data", handedOver("node-1")))
	defer cs.Close()
	run(t, cs, false)
	controllertest.Eventually(t, func() (bool, string) { return volumes(cs)["pvc-u-data"] != nil, fmt.Sprint("volumes: ", volumes(cs)) })
	v := volumes(cs)["pvc-u-data"]
	s := v.GetSpec()
	want := []struct {
		what      string
		got, want any
	}{
		{"csi driver", s.GetPersistentVolumeSource().GetCsi().GetDriver(), Driver},
		{"volume handle", s.GetPersistentVolumeSource().GetCsi().GetVolumeHandle(), "pvc-u-data"},
		{"fsType", s.GetPersistentVolumeSource().GetCsi().GetFsType(), ""},
		{"capacity", s.GetCapacity()["storage"].GetString_(), "3Gi"},
		{"access modes", fmt.Sprint(s.GetAccessModes()), "[ReadWriteOnce ReadWriteOncePod]"},
		{"reclaim policy", s.GetPersistentVolumeReclaimPolicy(), "Delete"},
		{"class", s.GetStorageClassName(), "local-path"},
		{"claimRef", fmt.Sprint(s.GetClaimRef().GetNamespace(), "/", s.GetClaimRef().GetName(), " ", s.GetClaimRef().GetUid()), "default/data u-data"},
		{"provisioned-by", v.GetMetadata().GetAnnotations()[annProvisionedBy], Driver},
		{"finalizer", slices.Contains(v.GetMetadata().GetFinalizers(), Finalizer), true},
	}
	for _, w := range want {
		if fmt.Sprint(w.got) != fmt.Sprint(w.want) {
			t.Errorf("%s = %v, want %v", w.what, w.got, w.want)
		}
	}
	terms := s.GetNodeAffinity().GetRequired().GetNodeSelectorTerms()
	if len(terms) != 1 || len(terms[0].MatchExpressions) != 1 ||
		!proto.Equal(terms[0].MatchExpressions[0], &corev1.NodeSelectorRequirement{Key: "kubernetes.io/hostname", Operator: "In", Values: []string{"node-1"}}) {
		t.Errorf("node affinity = %v, want kubernetes.io/hostname In [node-1]", terms)
	}
}

func TestReclaimPolicyFromClass(t *testing.T) {
	sc := DefaultClass()
	sc.ReclaimPolicy = proto.String("Retain")
	cs := fake.NewClientset(sc, claim("data", handedOver("n")))
	defer cs.Close()
	run(t, cs, false)
	controllertest.Eventually(t, func() (bool, string) {
		v := volumes(cs)["pvc-u-data"]
		return v.GetSpec().GetPersistentVolumeReclaimPolicy() == "Retain", fmt.Sprint("volume: ", v)
	})
}

func TestProvisionsOnlyWhatIsOurs(t *testing.T) {
	other := &storagev1.StorageClass{Metadata: &metav1.ObjectMeta{Name: "nfs"}, Provisioner: "example.com/nfs"}
	nfsClaim := claim("nfs", map[string]string{annStorageProvisioner: "example.com/nfs", annSelectedNode: "n"})
	nfsClaim.Spec.StorageClassName = proto.String("nfs")
	bound := claim("bound", handedOver("n"))
	bound.Spec.VolumeName = "elsewhere"
	cs := fake.NewClientset(DefaultClass(), other,
		claim("no-node", handedOver("")),                             // the scheduler has not chosen yet
		claim("not-handed", map[string]string{annSelectedNode: "n"}), // the binder has not handed it over
		nfsClaim, bound,
		claim("ready", handedOver("n")))
	defer cs.Close()
	run(t, cs, false)
	controllertest.Eventually(t, func() (bool, string) { return volumes(cs)["pvc-u-ready"] != nil, "the ready claim got no volume" })
	time.Sleep(50 * time.Millisecond)
	if got := len(volumes(cs)); got != 1 {
		t.Errorf("%d volumes, want only the ready claim's: %v", got, volumes(cs))
	}
}

func ours(name, phase, policy string, finalizers ...string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		Metadata: &metav1.ObjectMeta{Name: name, Annotations: map[string]string{annProvisionedBy: Driver}, Finalizers: finalizers},
		Spec: &corev1.PersistentVolumeSpec{PersistentVolumeReclaimPolicy: policy,
			ClaimRef: &corev1.ObjectReference{Namespace: "default", Name: "gone", Uid: "x"}},
		Status: &corev1.PersistentVolumeStatus{Phase: phase},
	}
}

func TestDeletion(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(
		ours("released-delete", "Released", "Delete", Finalizer),
		ours("released-retain", "Released", "Retain", Finalizer),
		ours("bound-delete", "Bound", "Delete", Finalizer),
		ours("retain-deleted", "Released", "Retain", Finalizer))
	defer cs.Close()
	run(t, cs, false)
	controllertest.Eventually(t, func() (bool, string) {
		_, ok := volumes(cs)["released-delete"]
		return !ok, "a released Delete volume was not deleted"
	})
	pvs := client.For[*corev1.PersistentVolume](cs.Client, "")
	for _, n := range []string{"bound-delete", "retain-deleted"} {
		if _, err := pvs.Delete(ctx, n, client.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A Retain volume a user deletes goes; a bound one waits.
	controllertest.Eventually(t, func() (bool, string) {
		_, ok := volumes(cs)["retain-deleted"]
		return !ok, "a deleted Retain volume kept the provisioner's finalizer"
	})
	vs := volumes(cs)
	if vs["released-retain"] == nil || vs["released-retain"].GetMetadata().GetDeletionTimestamp() != nil {
		t.Error("a released Retain volume was deleted")
	}
	if b := vs["bound-delete"]; b == nil || !slices.Contains(b.GetMetadata().GetFinalizers(), Finalizer) {
		t.Error("a bound volume lost the provisioner's finalizer")
	}
}

func TestEnsureClass(t *testing.T) {
	cs := fake.NewClientset()
	defer cs.Close()
	run(t, cs, true)
	k, _ := scheme.ForResource("storage.k8s.io", "storageclasses")
	controllertest.Eventually(t, func() (bool, string) {
		o, err := cs.Tracker().Get(k, "", ClassName)
		if err != nil {
			return false, err.Error()
		}
		sc := o.(*storagev1.StorageClass)
		return sc.GetProvisioner() == Driver && sc.GetVolumeBindingMode() == "WaitForFirstConsumer" && sc.GetReclaimPolicy() == "Delete" &&
			sc.GetMetadata().GetAnnotations()[annDefaultClass] == "true", fmt.Sprint("class: ", sc)
	})
}

// TestWithBinderAndProtection runs the flow a user sees: a claim with no
// class gets the default, the scheduler's choice of node makes a volume
// there, the binder binds it, and deleting the claim deletes the volume.
func TestWithBinderAndProtection(t *testing.T) {
	ctx := context.Background()
	noClass := claim("data", nil)
	noClass.Spec.StorageClassName = nil
	cs := fake.NewClientset(DefaultClass(), noClass)
	defer cs.Close()
	cc, _ := controllertest.Context(cs, controllers.Options{})
	var cs2 []controllers.Controller
	for _, ctor := range []func(controllers.Context) (controllers.Controller, error){
		New, persistentvolume.New, pvprotection.NewPVCProtection, pvprotection.NewPVProtection,
	} {
		c, err := ctor(cc)
		if err != nil {
			t.Fatal(err)
		}
		cs2 = append(cs2, c)
	}
	// One Run for the lot: they share the informer factory.
	controllertest.Run(t, cc, group(cs2))
	claims := client.For[*corev1.PersistentVolumeClaim](cs.Client, "default")
	controllertest.Eventually(t, func() (bool, string) {
		c, err := claims.Get(ctx, "data")
		return err == nil && c.GetSpec().GetStorageClassName() == ClassName, fmt.Sprint("claim: ", c)
	})
	// What the scheduler's VolumeBinding plugin does for the first pod.
	err := controller.RetryOnConflict(func() error {
		c, err := claims.Get(ctx, "data")
		if err != nil {
			return err
		}
		if c.Metadata.Annotations == nil {
			c.Metadata.Annotations = map[string]string{}
		}
		c.Metadata.Annotations[annSelectedNode] = "node-1"
		_, err = claims.Update(ctx, c)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		c, _ := claims.Get(ctx, "data")
		v := volumes(cs)["pvc-u-data"]
		return c.GetStatus().GetPhase() == "Bound" && c.GetSpec().GetVolumeName() == "pvc-u-data" && v.GetStatus().GetPhase() == "Bound",
			fmt.Sprintf("claim %v, volume %v", c.GetStatus(), v.GetStatus())
	})
	if _, err := claims.Delete(ctx, "data", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) {
		_, err := claims.Get(ctx, "data")
		return err != nil && len(volumes(cs)) == 0, fmt.Sprintf("claim err %v, volumes %v", err, volumes(cs))
	})
}

// group runs controllers as one.
type group []controllers.Controller

func (g group) Name() string { return "group" }

func (g group) Run(ctx context.Context) error {
	errs := make(chan error, len(g))
	for _, c := range g {
		go func() { errs <- c.Run(ctx) }()
	}
	var first error
	for range g {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
