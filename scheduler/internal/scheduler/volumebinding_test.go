package scheduler

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/scheme"
)

func vbNode(name string) *corev1.Node {
	q := func(s string) *metav1.Quantity { return &metav1.Quantity{String_: s} }
	return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: &corev1.NodeStatus{Allocatable: map[string]*metav1.Quantity{"cpu": q("4"), "memory": q("8Gi"), "pods": q("110")}}}
}

func vbPod(claim string) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: &corev1.PodSpec{SchedulerName: "default-scheduler", Containers: []*corev1.Container{{Name: "c", Image: "i"}},
			Volumes: []*corev1.Volume{{Name: "data", VolumeSource: &corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}}}
}

func vbClaim(volume string) *corev1.PersistentVolumeClaim {
	cls := "local-path"
	c := &corev1.PersistentVolumeClaim{Metadata: &metav1.ObjectMeta{Name: "data", Namespace: "default", Uid: "u-data"},
		Spec: &corev1.PersistentVolumeClaimSpec{AccessModes: []string{"ReadWriteOnce"}, StorageClassName: &cls,
			Resources: &corev1.VolumeResourceRequirements{Requests: map[string]*metav1.Quantity{"storage": {String_: "1Gi"}}}}}
	if volume != "" {
		c.Spec.VolumeName = volume
		c.Metadata.Annotations = map[string]string{"pv.kubernetes.io/bind-completed": "yes"}
	}
	return c
}

func vbVolume(name, node string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: name},
		Spec: &corev1.PersistentVolumeSpec{AccessModes: []string{"ReadWriteOnce"}, StorageClassName: "local-path",
			Capacity: map[string]*metav1.Quantity{"storage": {String_: "1Gi"}},
			ClaimRef: &corev1.ObjectReference{Namespace: "default", Name: "data", Uid: "u-data"},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []*corev1.NodeSelectorTerm{{
				MatchExpressions: []*corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: "In", Values: []string{node}}}}}}}},
		Status: &corev1.PersistentVolumeStatus{Phase: "Bound"}}
}

var localPath = &storagev1.StorageClass{Metadata: &metav1.ObjectMeta{Name: "local-path"}, Provisioner: "local-path.skiff.dev",
	VolumeBindingMode: func() *string { s := "WaitForFirstConsumer"; return &s }()}

func runScheduler(t *testing.T, objs ...scheme.Object) *fake.Clientset {
	t.Helper()
	cs := fake.NewClientset(objs...)
	s, err := New(Config{Client: cs.Client, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; cs.Close() })
	return cs
}

func waitPodNode(t *testing.T, cs *fake.Clientset) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p, err := client.For[*corev1.Pod](cs.Client, "default").Get(context.Background(), "web")
		if err == nil && p.GetSpec().GetNodeName() != "" {
			return p.GetSpec().GetNodeName()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the pod was not bound")
	return ""
}

func TestBoundVolumePinsThePod(t *testing.T) {
	cs := runScheduler(t, vbNode("n1"), vbNode("n2"), vbNode("n3"), localPath, vbClaim("pv"), vbVolume("pv", "n2"), vbPod("data"))
	if got := waitPodNode(t, cs); got != "n2" {
		t.Errorf("pod on %s, want n2, where its volume is", got)
	}
}

func TestDelayedClaimIsProvisionedBeforeThePodBinds(t *testing.T) {
	cs := runScheduler(t, vbNode("n1"), localPath, vbClaim(""), vbPod("data"))
	ctx := context.Background()
	claims := client.For[*corev1.PersistentVolumeClaim](cs.Client, "default")
	// The provisioner and the binder, as the controller-manager runs them.
	var node string
	deadline := time.Now().Add(10 * time.Second)
	for node == "" && time.Now().Before(deadline) {
		c, err := claims.Get(ctx, "data")
		if err != nil {
			t.Fatal(err)
		}
		node = c.GetMetadata().GetAnnotations()["volume.kubernetes.io/selected-node"]
		if p, _ := client.For[*corev1.Pod](cs.Client, "default").Get(ctx, "web"); p.GetSpec().GetNodeName() != "" {
			t.Fatal("the pod was bound before its claim")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if node != "n1" {
		t.Fatalf("selected-node = %q, want n1", node)
	}
	if _, err := client.For[*corev1.PersistentVolume](cs.Client, "").Create(ctx, vbVolume("pvc-u-data", node)); err != nil {
		t.Fatal(err)
	}
	c, _ := claims.Get(ctx, "data")
	c.Spec.VolumeName = "pvc-u-data"
	c.Metadata.Annotations["pv.kubernetes.io/bind-completed"] = "yes"
	if _, err := claims.Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got := waitPodNode(t, cs); got != "n1" {
		t.Errorf("pod on %s, want n1", got)
	}
}
