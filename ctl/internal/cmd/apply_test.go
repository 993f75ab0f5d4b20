package cmd

import (
	"encoding/json"
	"testing"

	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// TestApplyMerge is the three-way merge apply relies on: last applied →
// file, on top of what the server holds.
func TestApplyMerge(t *testing.T) {
	cases := []struct {
		name, lastApplied, file string
		want                    string // the patch, compacted
	}{
		{"unchanged", `{"data":{"a":"1"}}`, `{"data":{"a":"1"}}`, `{}`},
		{"field removed from the file becomes null", `{"data":{"a":"1","b":"2"}}`, `{"data":{"a":"1"}}`, `{"data":{"b":null}}`},
		{"field added", `{"data":{"a":"1"}}`, `{"data":{"a":"1","c":"3"}}`, `{"data":{"c":"3"}}`},
		{"field changed", `{"data":{"a":"1"}}`, `{"data":{"a":"9"}}`, `{"data":{"a":"9"}}`},
		{"never applied: everything set, nothing removed", `{}`, `{"data":{"a":"1"}}`, `{"data":{"a":"1"}}`},
		{"lists are replaced whole", `{"spec":{"ports":[{"port":80},{"port":81}]}}`, `{"spec":{"ports":[{"port":80}]}}`, `{"spec":{"ports":[{"port":80}]}}`},
	}
	for _, tc := range cases {
		p, err := mergePatch([]byte(tc.lastApplied), []byte(tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(compactJSON(p)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
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
