package cmd

import (
	"cmp"
	"encoding/json"
	"testing"

	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
	"skiff.dev/proto/strategic"
)

// TestApplyThreeWay is kubectl apply's patch: from the last applied
// configuration to the file, computed against the live object, and the live
// object it leaves once applied.
func TestApplyThreeWay(t *testing.T) {
	cm, _ := scheme.ForResource("", "configmaps")
	deploy, _ := scheme.ForResource("apps", "deployments")
	widget := &scheme.Kind{Group: "example.com", Version: "v1", Kind: "Widget", Resource: "widgets"}
	containers := func(cs string) string { return `{"spec":{"template":{"spec":{"containers":[` + cs + `]}}}}` }
	cases := []struct {
		name                     string
		kind                     *scheme.Kind
		lastApplied, file, live  string
		wantType, wantPatch, got string // got: the live object after the patch
	}{
		{name: "unchanged", kind: cm,
			lastApplied: `{"data":{"a":"1"}}`, file: `{"data":{"a":"1"}}`, live: `{"data":{"a":"1"},"metadata":{"uid":"u"}}`,
			wantPatch: `{}`},
		{name: "a hand edit of a field the file sets is reverted", kind: cm,
			lastApplied: `{"data":{"a":"1"}}`, file: `{"data":{"a":"1"}}`, live: `{"data":{"a":"by hand"}}`,
			wantPatch: `{"data":{"a":"1"}}`, got: `{"data":{"a":"1"}}`},
		{name: "a field only the live object has is kept", kind: cm,
			lastApplied: `{"data":{"a":"1"}}`, file: `{"data":{"a":"2"}}`, live: `{"data":{"a":"1","b":"others"}}`,
			wantPatch: `{"data":{"a":"2"}}`, got: `{"data":{"a":"2","b":"others"}}`},
		{name: "a field removed from the file is removed", kind: cm,
			lastApplied: `{"data":{"a":"1","b":"2"}}`, file: `{"data":{"a":"1"}}`, live: `{"data":{"a":"1","b":"2","c":"others"}}`,
			wantPatch: `{"data":{"b":null}}`, got: `{"data":{"a":"1","c":"others"}}`},
		{name: "never applied: the file's fields are set, nothing is removed", kind: cm,
			lastApplied: ``, file: `{"data":{"a":"1"}}`, live: `{"data":{"a":"0","b":"2"}}`,
			got: `{"data":{"a":"1","b":"2"}}`},
		{name: "a sidecar someone else added is kept", kind: deploy,
			lastApplied: containers(`{"name":"web","image":"nginx:1"}`),
			file:        containers(`{"name":"web","image":"nginx:2"}`),
			live:        containers(`{"name":"web","image":"nginx:1"},{"name":"sidecar","image":"envoy"}`),
			got:         containers(`{"image":"nginx:2","name":"web"},{"image":"envoy","name":"sidecar"}`)},
		{name: "env removed from the file is removed by name, others' env kept", kind: deploy,
			lastApplied: containers(`{"name":"web","image":"nginx:1","env":[{"name":"A","value":"1"},{"name":"B","value":"2"}]}`),
			file:        containers(`{"name":"web","image":"nginx:1","env":[{"name":"A","value":"1"}]}`),
			live:        containers(`{"name":"web","image":"nginx:1","env":[{"name":"A","value":"1"},{"name":"B","value":"2"},{"name":"C","value":"others"}]}`),
			got:         containers(`{"env":[{"name":"A","value":"1"},{"name":"C","value":"others"}],"image":"nginx:1","name":"web"}`)},
		{name: "a kind upstream has no type for: a JSON merge patch, lists replaced whole", kind: widget,
			lastApplied: `{"spec":{"ports":[{"port":80},{"port":81}]}}`, file: `{"spec":{"ports":[{"port":80}]}}`,
			live:     `{"spec":{"ports":[{"port":80},{"port":81}],"size":3}}`,
			wantType: "merge", wantPatch: `{"spec":{"ports":[{"port":80}]}}`},
	}
	for _, tc := range cases {
		var original []byte
		if tc.lastApplied != "" {
			original = []byte(tc.lastApplied)
		}
		typ, p, err := threeWayPatch(tc.kind, original, []byte(tc.file), []byte(tc.live))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if want := cmp.Or(tc.wantType, "strategic"); typ != want {
			t.Errorf("%s: a %s patch, want %s", tc.name, typ, want)
		}
		if tc.wantPatch != "" && string(compactJSON(p)) != tc.wantPatch {
			t.Errorf("%s: patch %s, want %s", tc.name, compactJSON(p), tc.wantPatch)
		}
		if tc.got == "" {
			continue
		}
		got, err := strategic.Apply(tc.kind, []byte(tc.live), p)
		if err != nil {
			t.Errorf("%s: applying %s: %v", tc.name, p, err)
			continue
		}
		if string(compactJSON(got)) != tc.got {
			t.Errorf("%s: patch %s leaves\n%s\nwant\n%s", tc.name, p, compactJSON(got), tc.got)
		}
	}
}

func TestLastAppliedIsTheFileWithItsNamespace(t *testing.T) {
	js := []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"old"}},"data":{"a":"1"}}`)
	obj, err := codec.DecodeObject(js, codec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	obj.GetMetadata().Namespace = "team"
	k, _ := scheme.ForMessage(obj)
	self, modified, err := withLastApplied(object{kind: k, obj: obj, json: js})
	if err != nil {
		t.Fatal(err)
	}
	if string(self) != `{"apiVersion":"v1","data":{"a":"1"},"kind":"ConfigMap","metadata":{"name":"c","namespace":"team"}}` {
		t.Fatalf("last applied: %s", self)
	}
	var doc map[string]any
	json.Unmarshal(modified, &doc)
	ann := doc["metadata"].(map[string]any)["annotations"].(map[string]any)
	if ann[LastApplied] != string(self)+"\n" {
		t.Fatalf("annotation: %v", ann)
	}
}
