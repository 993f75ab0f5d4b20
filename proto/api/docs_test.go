package api

import (
	"strings"
	"testing"
)

func TestDocsCarryUpstreamComments(t *testing.T) {
	deploy := message(t, "skiff.api.apps.v1.DeploymentSpec")
	if !strings.HasPrefix(deploy.Doc, "DeploymentSpec is the specification of the desired behavior") {
		t.Errorf("DeploymentSpec doc = %q", deploy.Doc)
	}
	replicas := field(t, deploy, "replicas")
	if replicas.Type != "int32" || replicas.Repeated || !strings.HasPrefix(replicas.Doc, "Number of desired pods.") {
		t.Errorf("replicas: %+v", replicas)
	}

	pod := message(t, "skiff.api.core.v1.PodSpec")
	if pod.Doc != "PodSpec is a description of a pod." {
		t.Errorf("PodSpec doc = %q", pod.Doc)
	}
	// A field whose type is in the same package gets the package prefixed,
	// and the trailing field option must not hide the field.
	containers := field(t, pod, "containers")
	if !containers.Repeated || containers.Type != "skiff.api.core.v1.Container" || !strings.HasPrefix(containers.Doc, "List of containers belonging to the pod.") {
		t.Errorf("containers: %+v", containers)
	}

	labels := field(t, message(t, "skiff.api.meta.v1.ObjectMeta"), "labels")
	if labels.Type != "map<string, string>" || labels.Repeated || !strings.HasPrefix(labels.Doc, "Map of string keys and values") {
		t.Errorf("labels: %+v", labels)
	}

	if _, ok := Docs("skiff.api.core.v1.NoSuchMessage"); ok {
		t.Error("Docs found a message that does not exist")
	}
}

// message returns a message's docs, failing the test when there are none, so
// an assertion on it cannot pass vacuously.
func message(t *testing.T, fullName string) *MessageDoc {
	t.Helper()
	d, ok := Docs(fullName)
	if !ok || d == nil {
		t.Fatalf("no docs for %s", fullName)
	}
	return d
}

// field returns the named field of d, failing the test when d lacks it.
func field(t *testing.T, d *MessageDoc, name string) FieldDoc {
	t.Helper()
	for _, f := range d.Fields {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("%s has no field %q (fields: %d)", d.Name, name, len(d.Fields))
	return FieldDoc{}
}
