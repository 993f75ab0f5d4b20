package selection

import (
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func TestPodFields(t *testing.T) {
	k, _ := scheme.ForResource("", "pods")
	pod := &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: "web-0", Namespace: "prod"},
		Spec:     &corev1.PodSpec{NodeName: "node-1", HostNetwork: true},
		Status:   &corev1.PodStatus{Phase: "Running"},
	}
	f := Fields(k, pod)
	for key, want := range map[string]string{
		"metadata.name": "web-0", "metadata.namespace": "prod", "spec.nodeName": "node-1",
		"spec.hostNetwork": "true", "status.phase": "Running", "status.podIP": "",
	} {
		if f[key] != want {
			t.Errorf("%s = %q, want %q", key, f[key], want)
		}
	}
	sel, err := ParseFields(k, "spec.nodeName=node-1,status.phase!=Failed")
	if err != nil || !sel.Matches(f) {
		t.Errorf("selector: %v, matches %v", err, sel != nil && sel.Matches(f))
	}
}

func TestUnsupportedField(t *testing.T) {
	k, _ := scheme.ForResource("", "configmaps")
	_, err := ParseFields(k, "spec.nodeName=x")
	if err == nil || err.Error() != "field label not supported: spec.nodeName" {
		t.Fatalf("got %v", err)
	}
}

func TestEventSource(t *testing.T) {
	k, _ := scheme.ForResource("", "events")
	ev := &corev1.Event{Metadata: &metav1.ObjectMeta{Name: "e", Namespace: "d"},
		InvolvedObject: &corev1.ObjectReference{Kind: "Pod", Name: "web-0"},
		Source:         &corev1.EventSource{Component: "kubelet"}, Type: "Normal"}
	f := Fields(k, ev)
	if f["source"] != "kubelet" || f["involvedObject.name"] != "web-0" || f["type"] != "Normal" {
		t.Errorf("fields = %v", f)
	}
}
