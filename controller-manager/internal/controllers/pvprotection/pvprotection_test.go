package pvprotection

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/controllers/controllertest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func claim(name string, finalizers ...string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default", Finalizers: finalizers},
		Spec: &corev1.PersistentVolumeClaimSpec{AccessModes: []string{"ReadWriteOnce"}}}
}

func pod(name, node, phase string, vols ...*corev1.Volume) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:   &corev1.PodSpec{NodeName: node, Volumes: vols},
		Status: &corev1.PodStatus{Phase: phase}}
}

func claimVolume(claim string) *corev1.Volume {
	return &corev1.Volume{Name: "data", VolumeSource: &corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
}

func getClaim(cs *fake.Clientset, name string) *corev1.PersistentVolumeClaim {
	k, _ := scheme.ForResource("", "persistentvolumeclaims")
	o, err := cs.Tracker().Get(k, "default", name)
	if err != nil {
		return nil
	}
	return o.(*corev1.PersistentVolumeClaim)
}

func getVolume(cs *fake.Clientset, name string) *corev1.PersistentVolume {
	k, _ := scheme.ForResource("", "persistentvolumes")
	o, err := cs.Tracker().Get(k, "", name)
	if err != nil {
		return nil
	}
	return o.(*corev1.PersistentVolume)
}

func startPVC(t *testing.T, objs ...scheme.Object) *fake.Clientset {
	t.Helper()
	cs := fake.NewClientset(objs...)
	t.Cleanup(cs.Close)
	cc, _ := controllertest.Context(cs, controllers.Options{})
	c, err := NewPVCProtection(cc)
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Run(t, cc, c)
	return cs
}

func TestPVCProtectionAddsFinalizer(t *testing.T) {
	cs := startPVC(t, claim("a"), claim("b", "example.com/other"))
	controllertest.Eventually(t, func() (bool, string) {
		a, b := getClaim(cs, "a"), getClaim(cs, "b")
		return slices.Contains(a.GetMetadata().GetFinalizers(), PVCFinalizer) &&
				slices.Equal(b.GetMetadata().GetFinalizers(), []string{"example.com/other", PVCFinalizer}),
			fmt.Sprintf("finalizers a=%v b=%v", a.GetMetadata().GetFinalizers(), b.GetMetadata().GetFinalizers())
	})
}

func TestPVCProtection(t *testing.T) {
	ephemeral := &corev1.Volume{Name: "scratch", VolumeSource: &corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}}
	cases := []struct {
		name     string
		pod      *corev1.Pod
		claim    string
		keptThen func(ctx context.Context, cs *fake.Clientset) error // frees the claim; nil: never held
	}{
		{"running pod holds it until it succeeds", pod("web", "n1", "Running", claimVolume("data")), "data",
			func(ctx context.Context, cs *fake.Clientset) error {
				p := pod("web", "n1", "Succeeded", claimVolume("data"))
				cur, err := client.For[*corev1.Pod](cs.Client, "default").Get(ctx, "web")
				if err != nil {
					return err
				}
				p.Metadata = cur.Metadata
				_, err = client.For[*corev1.Pod](cs.Client, "default").UpdateStatus(ctx, p)
				return err
			}},
		{"running pod holds it until it is deleted", pod("web", "n1", "Running", claimVolume("data")), "data",
			func(ctx context.Context, cs *fake.Clientset) error {
				_, err := client.For[*corev1.Pod](cs.Client, "default").Delete(ctx, "web", client.DeleteOptions{GracePeriodSeconds: new(int64)})
				return err
			}},
		{"ephemeral volume's claim is the pod's", pod("web", "n1", "Running", ephemeral), "web-scratch",
			func(ctx context.Context, cs *fake.Clientset) error {
				_, err := client.For[*corev1.Pod](cs.Client, "default").Delete(ctx, "web", client.DeleteOptions{GracePeriodSeconds: new(int64)})
				return err
			}},
		{"unscheduled pod does not hold it", pod("web", "", "Pending", claimVolume("data")), "data", nil},
		{"pod using another claim does not hold it", pod("web", "n1", "Running", claimVolume("other")), "data", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			cs := startPVC(t, claim(tc.claim), tc.pod)
			controllertest.Eventually(t, func() (bool, string) {
				return slices.Contains(getClaim(cs, tc.claim).GetMetadata().GetFinalizers(), PVCFinalizer), "no finalizer added"
			})
			if _, err := client.For[*corev1.PersistentVolumeClaim](cs.Client, "default").Delete(ctx, tc.claim, client.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if tc.keptThen != nil {
				// Give the controller the chance to get it wrong.
				for range 20 {
					if getClaim(cs, tc.claim) == nil {
						t.Fatal("a claim in use by a running pod was removed")
					}
					time.Sleep(10 * time.Millisecond)
				}
				c := getClaim(cs, tc.claim)
				if c.GetMetadata().GetDeletionTimestamp() == nil || !slices.Contains(c.GetMetadata().GetFinalizers(), PVCFinalizer) {
					t.Fatalf("claim in use: deletionTimestamp %v finalizers %v, want being deleted and still protected",
						c.GetMetadata().GetDeletionTimestamp(), c.GetMetadata().GetFinalizers())
				}
				if err := tc.keptThen(ctx, cs); err != nil {
					t.Fatal(err)
				}
			}
			controllertest.Eventually(t, func() (bool, string) {
				c := getClaim(cs, tc.claim)
				return c == nil, fmt.Sprintf("claim still there with finalizers %v", c.GetMetadata().GetFinalizers())
			})
		})
	}
}

func TestPVProtection(t *testing.T) {
	v := &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: "v"},
		Spec:   &corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: "default", Name: "c", Uid: "u"}},
		Status: &corev1.PersistentVolumeStatus{Phase: "Bound"}}
	free := &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: "free"}, Status: &corev1.PersistentVolumeStatus{Phase: "Available"}}
	cs := fake.NewClientset(v, free)
	t.Cleanup(cs.Close)
	cc, _ := controllertest.Context(cs, controllers.Options{})
	c, err := NewPVProtection(cc)
	if err != nil {
		t.Fatal(err)
	}
	controllertest.Run(t, cc, c)
	controllertest.Eventually(t, func() (bool, string) {
		return slices.Contains(getVolume(cs, "v").GetMetadata().GetFinalizers(), PVFinalizer) &&
			slices.Contains(getVolume(cs, "free").GetMetadata().GetFinalizers(), PVFinalizer), "finalizers not added"
	})
	ctx := context.Background()
	pvs := client.For[*corev1.PersistentVolume](cs.Client, "")
	for _, n := range []string{"v", "free"} {
		if _, err := pvs.Delete(ctx, n, client.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The unbound one goes; the bound one stays until released.
	controllertest.Eventually(t, func() (bool, string) { return getVolume(cs, "free") == nil, "an unbound deleted volume stayed" })
	if got := getVolume(cs, "v"); got == nil || got.GetMetadata().GetDeletionTimestamp() == nil {
		t.Fatalf("bound volume: %v, want kept while being deleted", got)
	}
	cur := getVolume(cs, "v")
	cur.Status.Phase = "Released"
	if _, err := pvs.UpdateStatus(ctx, cur); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, func() (bool, string) { return getVolume(cs, "v") == nil, "a released deleted volume stayed" })
}
