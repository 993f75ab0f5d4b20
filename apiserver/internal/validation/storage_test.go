package validation

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/validation/field"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
)

func errText(errs field.ErrorList) string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return strings.Join(out, "; ")
}

func TestStorageClass(t *testing.T) {
	sc := func(mod func(*storagev1.StorageClass)) *storagev1.StorageClass {
		s := &storagev1.StorageClass{Metadata: &metav1.ObjectMeta{Name: "local-path"}, Provisioner: "local-path.skiff.dev",
			ReclaimPolicy: proto.String("Delete"), VolumeBindingMode: proto.String("WaitForFirstConsumer")}
		if mod != nil {
			mod(s)
		}
		return s
	}
	cases := []struct {
		name string
		sc   *storagev1.StorageClass
		want string // substring of the errors, "" for valid
	}{
		{"valid", sc(nil), ""},
		{"no provisioner", sc(func(s *storagev1.StorageClass) { s.Provisioner = "" }), "provisioner: Required value"},
		{"bad provisioner", sc(func(s *storagev1.StorageClass) { s.Provisioner = "not a name!" }), "provisioner: Invalid value"},
		{"Recycle is not a class policy", sc(func(s *storagev1.StorageClass) { s.ReclaimPolicy = proto.String("Recycle") }),
			`reclaimPolicy: Unsupported value: "Recycle"`},
		{"binding mode", sc(func(s *storagev1.StorageClass) { s.VolumeBindingMode = proto.String("Later") }),
			`volumeBindingMode: Unsupported value: "Later"`},
		{"empty topology term", sc(func(s *storagev1.StorageClass) {
			s.AllowedTopologies = []*corev1.TopologySelectorTerm{{}}
		}), "allowedTopologies[0].matchLabelExpressions: Required value"},
		{"duplicate topology value", sc(func(s *storagev1.StorageClass) {
			s.AllowedTopologies = []*corev1.TopologySelectorTerm{{MatchLabelExpressions: []*corev1.TopologySelectorLabelRequirement{
				{Key: "topology.kubernetes.io/zone", Values: []string{"a", "a"}}}}}
		}), "allowedTopologies[0].matchLabelExpressions[0].values[1]: Duplicate value"},
		{"empty parameter key", sc(func(s *storagev1.StorageClass) { s.Parameters = map[string]string{"": "x"} }), "parameters: Invalid value"},
	}
	for _, tc := range cases {
		got := errText(ValidateCreate(tc.sc, Options{}))
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%s: errors %q, want %q", tc.name, got, tc.want)
		}
	}
	old := sc(nil)
	old.Metadata.ResourceVersion = "1"
	upd := sc(func(s *storagev1.StorageClass) {
		s.Metadata.ResourceVersion = "1"
		s.Provisioner = "other.example.com"
		s.Parameters = map[string]string{"k": "v"}
		s.VolumeBindingMode = proto.String("Immediate")
	})
	got := errText(ValidateUpdate(upd, old, Options{}))
	for _, want := range []string{"provisioner: Forbidden", "parameters: Forbidden", "volumeBindingMode: Invalid value: \"Immediate\": field is immutable"} {
		if !strings.Contains(got, want) {
			t.Errorf("update: errors %q, want %q", got, want)
		}
	}
	labels := sc(func(s *storagev1.StorageClass) {
		s.Metadata.ResourceVersion = "1"
		s.Metadata.Labels = map[string]string{"a": "b"}
	})
	if errs := ValidateUpdate(labels, old, Options{}); len(errs) > 0 {
		t.Errorf("a metadata-only update was refused: %v", errs)
	}
}

func contractPV() *corev1.PersistentVolume {
	return &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: "pvc-1"}, Spec: &corev1.PersistentVolumeSpec{
		Capacity:    map[string]*metav1.Quantity{"storage": {String_: "1Gi"}},
		AccessModes: []string{"ReadWriteOnce"},
		PersistentVolumeSource: &corev1.PersistentVolumeSource{Csi: &corev1.CSIPersistentVolumeSource{
			Driver: "local-path.skiff.dev", VolumeHandle: "pvc-1"}},
		PersistentVolumeReclaimPolicy: "Delete",
		StorageClassName:              "local-path",
		NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []*corev1.NodeSelectorTerm{{
			MatchExpressions: []*corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: "In", Values: []string{"n1"}}}}}}},
	}}
}

func TestPersistentVolume(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*corev1.PersistentVolume)
		want string
	}{
		{"the provisioner's volume", nil, ""},
		{"no source", func(v *corev1.PersistentVolume) { v.Spec.PersistentVolumeSource = nil }, "spec: Required value: must specify a volume type"},
		{"two sources", func(v *corev1.PersistentVolume) {
			v.Spec.PersistentVolumeSource.HostPath = &corev1.HostPathVolumeSource{Path: "/x"}
		}, "may not specify more than 1 volume type"},
		{"csi without handle", func(v *corev1.PersistentVolume) { v.Spec.PersistentVolumeSource.Csi.VolumeHandle = "" }, "spec.csi.volumeHandle: Required value"},
		{"policy", func(v *corev1.PersistentVolume) { v.Spec.PersistentVolumeReclaimPolicy = "Keep" }, `spec.persistentVolumeReclaimPolicy: Unsupported value: "Keep"`},
		{"zero capacity", func(v *corev1.PersistentVolume) { v.Spec.Capacity["storage"].String_ = "0" }, "must be greater than zero"},
		{"RWOP alone", func(v *corev1.PersistentVolume) { v.Spec.AccessModes = []string{"ReadWriteOnce", "ReadWriteOncePod"} }, "may not use ReadWriteOncePod with other access modes"},
		{"empty node affinity", func(v *corev1.PersistentVolume) { v.Spec.NodeAffinity.Required.NodeSelectorTerms = nil }, "must have at least one node selector term"},
		{"volume mode", func(v *corev1.PersistentVolume) { v.Spec.VolumeMode = proto.String("Raw") }, `spec.volumeMode: Unsupported value: "Raw"`},
	}
	for _, tc := range cases {
		v := contractPV()
		if tc.mod != nil {
			tc.mod(v)
		}
		got := errText(persistentVolumeStorage(v, nil))
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%s: errors %q, want %q", tc.name, got, tc.want)
		}
	}
	// What the binder writes (claimRef, the policy) is mutable; the source is not.
	old, upd := contractPV(), contractPV()
	upd.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "default", Name: "data", Uid: "u"}
	upd.Spec.PersistentVolumeReclaimPolicy = "Retain"
	if errs := persistentVolumeStorage(upd, old); len(errs) > 0 {
		t.Errorf("binding update refused: %v", errs)
	}
	upd.Spec.PersistentVolumeSource.Csi.VolumeHandle = "other"
	if got := errText(persistentVolumeStorage(upd, old)); !strings.Contains(got, "spec.persistentvolumesource is immutable after creation") {
		t.Errorf("source change: %q", got)
	}
}

func TestPersistentVolumeClaim(t *testing.T) {
	claim := func() *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{Metadata: &metav1.ObjectMeta{Name: "data", Namespace: "default"},
			Spec: &corev1.PersistentVolumeClaimSpec{AccessModes: []string{"ReadWriteOnce"},
				Resources: &corev1.VolumeResourceRequirements{Requests: map[string]*metav1.Quantity{"storage": {String_: "1Gi"}}}}}
	}
	if errs := persistentVolumeClaimStorage(claim(), nil); len(errs) > 0 {
		t.Fatalf("valid claim refused: %v", errs)
	}
	bad := claim()
	bad.Spec.Resources.Requests["storage"].String_ = "0"
	bad.Spec.StorageClassName = proto.String("Not_A_Name")
	bad.Spec.VolumeMode = proto.String("Raw")
	got := errText(persistentVolumeClaimStorage(bad, nil))
	for _, want := range []string{"spec.resources.requests[storage]: Invalid value: \"0\": must be greater than zero",
		"spec.storageClassName: Invalid value", `spec.volumeMode: Unsupported value: "Raw"`} {
		if !strings.Contains(got, want) {
			t.Errorf("errors %q, want %q", got, want)
		}
	}
	// The binder's and the default class's updates are allowed.
	old, upd := claim(), claim()
	upd.Spec.VolumeName = "pvc-1"
	upd.Spec.StorageClassName = proto.String("local-path")
	upd.Spec.Resources.Requests["storage"].String_ = "2Gi"
	if errs := persistentVolumeClaimStorage(upd, old); len(errs) > 0 {
		t.Errorf("binding update refused: %v", errs)
	}
	// Changing what was asked is not.
	old2 := proto.Clone(upd).(*corev1.PersistentVolumeClaim)
	upd2 := proto.Clone(upd).(*corev1.PersistentVolumeClaim)
	upd2.Spec.StorageClassName = proto.String("fast")
	upd2.Spec.VolumeName = "pvc-2"
	if got := errText(persistentVolumeClaimStorage(upd2, old2)); !strings.Contains(got, "spec: Forbidden: spec is immutable after creation") {
		t.Errorf("class change: %q", got)
	}
}
