package api

import (
	"strings"
	"testing"
)

func TestDocsCarryUpstreamComments(t *testing.T) {
	d, ok := Docs("skiff.api.apps.v1.DeploymentSpec")
	if !ok {
		t.Fatal("no docs for DeploymentSpec")
	}
	var replicas *FieldDoc
	for i := range d.Fields {
		if d.Fields[i].Name == "replicas" {
			replicas = &d.Fields[i]
		}
	}
	if replicas == nil || replicas.Type != "int32" || !strings.HasPrefix(replicas.Doc, "Number of desired pods.") {
		t.Fatalf("replicas: %+v", replicas)
	}
	pod, _ := Docs("skiff.api.core.v1.PodSpec")
	for _, f := range pod.Fields {
		if f.Name == "containers" && (!f.Repeated || f.Type != "skiff.api.core.v1.Container") {
			t.Fatalf("containers: %+v", f)
		}
	}
}
