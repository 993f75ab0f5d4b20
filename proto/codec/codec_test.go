package codec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// The documentation's examples must come back field for field: decode, encode,
// and compare with what the file said.
func TestDocumentationExamplesRoundTrip(t *testing.T) {
	files, err := filepath.Glob("../../manifests/examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			docs, err := ReadManifests(f, Options{Strict: true})
			if err != nil {
				t.Fatalf("ReadManifests: %v", err)
			}
			for _, d := range docs {
				out, err := MarshalJSON(d.Object)
				if err != nil {
					t.Fatalf("MarshalJSON: %v", err)
				}
				// Upstream writes what the file said plus the zero values Go
				// always writes (status: {}, resources: {}); nothing may differ.
				assertContains(t, d.JSON, out)
			}
		})
	}
}

func assertSameJSON(t *testing.T, want, got []byte) {
	t.Helper()
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, got)
	}
	if !reflect.DeepEqual(w, g) {
		t.Errorf("JSON differs\nwant %s\n got %s", want, got)
	}
}

func assertContains(t *testing.T, want, got []byte) {
	t.Helper()
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, got)
	}
	if path, ok := contains(w, g, ""); !ok {
		t.Errorf("output differs at %s\nwant %s\n got %s", path, want, got)
	}
}

// contains reports whether every field of want is in got with the same value.
func contains(want, got any, path string) (string, bool) {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return path, false
		}
		for k, v := range w {
			if _, present := g[k]; !present && isZero(v) {
				continue // omitempty: upstream leaves out false, 0 and "" too
			}
			if p, ok := contains(v, g[k], path+"."+k); !ok {
				return p, false
			}
		}
		return "", true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return path, false
		}
		for i := range w {
			if p, ok := contains(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); !ok {
				return p, false
			}
		}
		return "", true
	}
	return path, reflect.DeepEqual(want, got)
}

func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case float64:
		return x == 0
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

func TestEncodeFollowsUpstreamRules(t *testing.T) {
	replicas := int32(0)
	d := &appsv1.Deployment{
		Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "default", CreationTimestamp: &metav1.Time{Seconds: 1700000000}},
		Spec: &appsv1.DeploymentSpec{
			Replicas: &replicas, // a set pointer is written even when zero
			Strategy: &appsv1.DeploymentStrategy{Type: "RollingUpdate", RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxSurge: &metav1.IntOrString{Type: 1, StrVal: "25%"}, MaxUnavailable: &metav1.IntOrString{IntVal: 0},
			}},
			Template: &corev1.PodTemplateSpec{Spec: &corev1.PodSpec{
				Containers: []*corev1.Container{{Name: "c", Image: "nginx", Resources: &corev1.ResourceRequirements{
					Limits: map[string]*metav1.Quantity{"cpu": {String_: "500m"}},
				}}},
				TerminationGracePeriodSeconds: proto.Int64(30),
				Volumes:                       []*corev1.Volume{{Name: "v", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			}},
		},
		Status: &appsv1.DeploymentStatus{},
	}
	got, err := MarshalJSON(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"apiVersion":"apps/v1","kind":"Deployment",
	  "metadata":{"name":"web","namespace":"default","creationTimestamp":"2023-11-14T22:13:20Z"},
	  "spec":{"replicas":0,"selector":null,
	    "template":{"metadata":{},"spec":{
	      "volumes":[{"name":"v","emptyDir":{}}],
	      "containers":[{"name":"c","image":"nginx","resources":{"limits":{"cpu":"500m"}}}],
	      "terminationGracePeriodSeconds":30}},
	    "strategy":{"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":0,"maxSurge":"25%"}}},
	  "status":{}}`
	assertSameJSON(t, []byte(want), got)
	// apiVersion and kind lead, as upstream writes them.
	if !bytes.HasPrefix(got, []byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata"`)) {
		t.Errorf("unexpected field order: %s", got)
	}
}

func TestSecretDataIsBase64(t *testing.T) {
	s := &corev1.Secret{Metadata: &metav1.ObjectMeta{Name: "s"}, Data: map[string][]byte{"k": []byte("value-2\r\n\r\n")}}
	got, err := MarshalJSON(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), `"data":{"k":"dmFsdWUtMg0KDQo="}`) {
		t.Errorf("data not base64: %s", got)
	}
}

func TestDecodeErrorsNameEveryField(t *testing.T) {
	in := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x","labels":"no"},
	  "spec":{"replicas":"three","template":{"spec":{"containers":[{"name":"c","resources":{"limits":{"cpu":"lots"}}}]}}}}`
	_, err := Decode([]byte(in), Options{})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{
		`metadata.labels: expected an object, got string "no"`,
		`spec.replicas: expected an integer, got string "three"`,
		`spec.template.spec.containers[0].resources.limits["cpu"]: quantities must match`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\n does not contain %q", err, want)
		}
	}
}

func TestStrictUnknownFields(t *testing.T) {
	in := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","nmae":"y"},"dat":{}}`
	if _, err := Decode([]byte(in), Options{}); err != nil {
		t.Fatalf("lenient decode: %v", err)
	}
	_, err := Decode([]byte(in), Options{Strict: true})
	var u *UnknownFieldsError
	if !errorsAs(err, &u) || !reflect.DeepEqual(u.Fields, []string{"dat", "metadata.nmae"}) {
		t.Fatalf("got %v", err)
	}
}

func errorsAs(err error, u **UnknownFieldsError) bool {
	e, ok := err.(*UnknownFieldsError)
	*u = e
	return ok
}

func TestDecodeTypeMeta(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"kind":"Pod"}`, "Object 'apiVersion' is missing"},
		{`{"apiVersion":"v1"}`, "Object 'Kind' is missing"},
		{`{"apiVersion":"v1","kind":"Deployment"}`, `no matches for kind "Deployment" in version "v1"`},
		{`[1]`, "must be a JSON object"},
		{`{"apiVersion":"v1","kind":"Pod"} {}`, "data after"},
	} {
		_, err := Decode([]byte(tc.in), Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%s) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestReadManifestsListsAndSeparators(t *testing.T) {
	in := `
---
# nothing here
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: a}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: b}
--- # comment after the separator
{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}}
`
	docs, err := ReadManifests(strings.NewReader(in), Options{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range docs {
		names = append(names, d.Object.(interface{ GetMetadata() *metav1.ObjectMeta }).GetMetadata().GetName())
	}
	if !reflect.DeepEqual(names, []string{"a", "b", "c"}) {
		t.Errorf("names = %v", names)
	}
}

func TestQuantitiesAreCanonical(t *testing.T) {
	in := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i",
	  "resources":{"requests":{"cpu":0.5,"memory":"1Gi"}}}]}}`
	obj, err := Decode([]byte(in), Options{})
	if err != nil {
		t.Fatal(err)
	}
	req := obj.(*corev1.Pod).Spec.Containers[0].Resources.Requests
	if req["cpu"].String_ != "500m" || req["memory"].String_ != "1Gi" {
		t.Errorf("requests = %v", req)
	}
}

func FuzzReadManifests(f *testing.F) {
	files, _ := filepath.Glob("../../manifests/examples/*.yaml")
	for _, file := range files {
		b, _ := os.ReadFile(file)
		f.Add(b)
	}
	f.Add([]byte(`{"apiVersion":"v1","kind":"List","items":[{"kind":"List","items":[]}]}`))
	f.Add([]byte("apiVersion: v1\nkind: Secret\ndata: {a: '!!'}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := ReadManifests(bytes.NewReader(data), Options{Strict: true})
		if err != nil {
			return
		}
		for _, d := range docs {
			out, err := MarshalJSON(d.Object)
			if err != nil {
				continue // e.g. an embedded object that is not JSON
			}
			again, err := Decode(out, Options{Strict: true})
			if err != nil {
				t.Fatalf("re-decoding our own output failed: %v\n%s", err, out)
			}
			out2, err := MarshalJSON(again)
			if err != nil || !bytes.Equal(out, out2) {
				t.Fatalf("round trip changed the object (%v)\n%s\n%s", err, out, out2)
			}
		}
	})
}
