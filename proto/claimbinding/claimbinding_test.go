package claimbinding

import (
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func pv(name, class, size, node string, ref *corev1.ObjectReference) *corev1.PersistentVolume {
	v := &corev1.PersistentVolume{Metadata: &metav1.ObjectMeta{Name: name}, Spec: &corev1.PersistentVolumeSpec{
		StorageClassName: class, AccessModes: []string{"ReadWriteOnce"}, ClaimRef: ref,
		Capacity: map[string]*metav1.Quantity{"storage": {String_: size}}}, Status: &corev1.PersistentVolumeStatus{Phase: "Available"}}
	if node != "" {
		v.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []*corev1.NodeSelectorTerm{{
			MatchExpressions: []*corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: "In", Values: []string{node}}}}}}}
	}
	return v
}

func TestFindMatchingVolume(t *testing.T) {
	claim := &corev1.PersistentVolumeClaim{Metadata: &metav1.ObjectMeta{Namespace: "ns", Name: "data", Uid: "u1"},
		Spec: &corev1.PersistentVolumeClaimSpec{StorageClassName: new("fast"), AccessModes: []string{"ReadWriteOnce"},
			Resources: &corev1.VolumeResourceRequirements{Requests: map[string]*metav1.Quantity{"storage": {String_: "1Gi"}}}}}
	n1 := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"kubernetes.io/hostname": "n1"}}}
	prebound := pv("mine", "fast", "5Gi", "", &corev1.ObjectReference{Namespace: "ns", Name: "data"})
	all := []*corev1.PersistentVolume{pv("big", "fast", "10Gi", "", nil), pv("small", "fast", "2Gi", "", nil),
		pv("tiny", "fast", "500Mi", "", nil), pv("other-class", "slow", "1Gi", "", nil), pv("on-n2", "fast", "1Gi", "n2", nil)}
	for _, tc := range []struct {
		name    string
		volumes []*corev1.PersistentVolume
		m       Match
		want    string
	}{
		{"the smallest that holds the request, of the class", all, Match{}, "on-n2"},
		{"on the node asked about", all, Match{Node: n1}, "small"},
		{"a pre-bound volume wins over a smaller one", append(all, prebound), Match{}, "mine"},
		{"delayed binding: only the pre-bound one", all, Match{DelayBinding: true}, ""},
		{"delayed binding with a pre-bound one", append(all, prebound), Match{DelayBinding: true}, "mine"},
		{"taken volumes are skipped", all, Match{Node: n1, Taken: func(n string) bool { return n == "small" }}, "big"},
		{"reserved ones too, unless pre-bound", append(all, prebound), Match{Reserved: func(string) bool { return true }}, "mine"},
	} {
		got, err := FindMatchingVolume(claim, tc.volumes, tc.m)
		name := ""
		if got != nil {
			name = got.Metadata.Name
		}
		if err != nil || name != tc.want {
			t.Errorf("%s: %q (%v), want %q", tc.name, name, err, tc.want)
		}
	}
}
