package strategic

import (
	"encoding/json"
	"errors"
	"testing"

	"skiff.dev/proto/scheme"
)

func kind(t *testing.T, group, resource string) *scheme.Kind {
	t.Helper()
	k, ok := scheme.ForResource(group, resource)
	if !ok {
		t.Fatalf("no kind %s.%s", resource, group)
	}
	return k
}

func compact(t *testing.T, s []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(s, &v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestEveryKindHasASchema(t *testing.T) {
	for _, k := range scheme.All() {
		if _, err := Schema(k); err != nil {
			t.Errorf("%s: %v", k.GroupResource(), err)
		}
	}
}

func TestThreeWayMergesListsByKey(t *testing.T) {
	deploy := kind(t, "apps", "deployments")
	original := `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1","env":[{"name":"A","value":"1"},{"name":"B","value":"2"}]}]}}}}`
	modified := `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:2","env":[{"name":"A","value":"1"}]}]}}}}`
	// Live: someone set the image by hand and a controller added a sidecar.
	current := `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:hand","env":[{"name":"A","value":"1"},{"name":"B","value":"2"}]},{"name":"proxy","image":"envoy"}]}}}}`
	patch, err := ThreeWay(deploy, []byte(original), []byte(modified), []byte(current), true)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Apply(deploy, []byte(current), patch)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"spec":{"template":{"spec":{"containers":[{"env":[{"name":"A","value":"1"}],"image":"nginx:2","name":"web"},{"image":"envoy","name":"proxy"}]}}}}`
	if compact(t, got) != want {
		t.Fatalf("patch %s gave\n%s\nwant\n%s", patch, compact(t, got), want)
	}
}

func TestThreeWayRevertsAHandChange(t *testing.T) {
	cm := kind(t, "", "configmaps")
	doc := `{"data":{"a":"1"}}`
	patch, err := ThreeWay(cm, []byte(doc), []byte(doc), []byte(`{"data":{"a":"by hand","b":"other"}}`), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := compact(t, patch); got != `{"data":{"a":"1"}}` {
		t.Fatalf("patch %s", got)
	}
}

func TestThreeWayRefusesAKindChange(t *testing.T) {
	cm := kind(t, "", "configmaps")
	_, err := ThreeWay(cm, []byte(`{"kind":"ConfigMap"}`), []byte(`{"kind":"Secret"}`), []byte(`{"kind":"ConfigMap"}`), true)
	if err == nil {
		t.Fatal("a patch that changes kind was computed")
	}
	if errors.Is(err, ErrNoSchema) {
		t.Fatal(err)
	}
}
