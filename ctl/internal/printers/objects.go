package printers

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"

	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// JSON prints one object as `kubectl get -o json`, or several as a v1 List.
func JSON(w io.Writer, objs []scheme.Object, single bool) error {
	doc, err := document(objs, single)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(doc, "", "    ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// YAML prints as `kubectl get -o yaml`.
func YAML(w io.Writer, objs []scheme.Object, single bool) error {
	doc, err := document(objs, single)
	if err != nil {
		return err
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(b)
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}

// document is the object's upstream JSON, or a List of them. Key order
// follows encoding/json's map ordering (alphabetical), as kubectl's does.
func document(objs []scheme.Object, single bool) (any, error) {
	items := make([]any, len(objs))
	for i, o := range objs {
		b, err := codec.MarshalJSON(o)
		if err != nil {
			return nil, err
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		items[i] = v
	}
	if single && len(items) == 1 {
		return items[0], nil
	}
	return map[string]any{
		"apiVersion": "v1",
		"kind":       "List",
		"items":      items,
		"metadata":   map[string]any{"resourceVersion": ""},
	}, nil
}

// Name prints `deployment.apps/web` lines.
func Name(w io.Writer, objs []scheme.Object) error {
	for _, o := range objs {
		k, _ := scheme.ForMessage(o)
		n := k.Singular
		if k.Group != "" {
			n += "." + k.Group
		}
		if _, err := fmt.Fprintf(w, "%s/%s\n", n, o.GetMetadata().GetName()); err != nil {
			return err
		}
	}
	return nil
}
