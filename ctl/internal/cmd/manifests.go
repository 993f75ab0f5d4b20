package cmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// object is one object read from -f, with where it came from.
type object struct {
	source string
	kind   *scheme.Kind
	obj    scheme.Object
	json   []byte
}

// readFiles reads -f arguments as kubectl does: files, directories (their
// .yaml, .yml and .json files; recursively with -R) and "-" for stdin.
func (o *Options) readFiles(files []string, recursive bool) ([]object, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("must specify one of -f and -k")
	}
	var out []object
	for _, f := range files {
		paths, err := expand(f, recursive)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			var r io.Reader
			source := p
			if p == "-" {
				r, source = o.streams.In, "STDIN"
			} else {
				data, err := os.ReadFile(p)
				if err != nil {
					return nil, fmt.Errorf("the path %q does not exist", p)
				}
				r = bytes.NewReader(data)
			}
			docs, err := codec.ReadManifests(r, codec.Options{Strict: true})
			if err != nil {
				return nil, fmt.Errorf("error validating %q: %w", source, err)
			}
			for _, d := range docs {
				obj, ok := d.Object.(scheme.Object)
				if !ok {
					return nil, fmt.Errorf("%s: document %d is not an object", source, d.Index)
				}
				k, ok := scheme.ForMessage(obj)
				if !ok {
					return nil, fmt.Errorf("%s: document %d: no kind for %T", source, d.Index, obj)
				}
				// Every verb needs to know which object it is about; finding
				// out here refuses the input before any of it is sent.
				if m := obj.GetMetadata(); m.GetName() == "" && m.GetGenerateName() == "" {
					return nil, fmt.Errorf("error validating %q: document %d: metadata.name: Required value: name or generateName is required", source, d.Index)
				}
				out = append(out, object{source: source, kind: k, obj: obj, json: d.JSON})
			}
		}
	}
	return out, nil
}

// named refuses, before anything is sent, objects known only by a
// generateName to a verb that needs the name of an existing object.
func named(objs []object, verb string) error {
	for _, ob := range objs {
		if ob.obj.GetMetadata().GetName() != "" {
			continue
		}
		if verb == "apply" {
			return fmt.Errorf("from %s: cannot use generate name with apply", ob.source)
		}
		return fmt.Errorf("resource name may not be empty")
	}
	return nil
}

func expand(f string, recursive bool) ([]string, error) {
	if f == "-" {
		return []string{f}, nil
	}
	st, err := os.Stat(f)
	if err != nil {
		return nil, fmt.Errorf("the path %q does not exist", f)
	}
	if !st.IsDir() {
		return []string{f}, nil
	}
	var out []string
	err = filepath.WalkDir(f, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != f && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// namespaceFor settles an object's namespace: the file's, else -n/the
// context's; -n different from the file's is an error, as kubectl says.
func (o *Options) namespaceFor(ob object) (string, error) {
	if !ob.kind.Namespaced {
		ob.obj.GetMetadata().Namespace = ""
		return "", nil
	}
	m := ob.obj.GetMetadata()
	if m.Namespace == "" {
		m.Namespace = o.namespace()
	} else if o.Namespace != "" && o.Namespace != m.Namespace {
		return "", fmt.Errorf("the namespace from the provided object %q does not match the namespace %q. You must pass '--namespace=%s' to perform this operation.", m.Namespace, o.Namespace, m.Namespace)
	}
	return m.Namespace, nil
}

// kindName is kubectl's "deployment.apps" (or "service" in the core group).
func kindName(k *scheme.Kind) string {
	n := strings.ToLower(k.Kind)
	if k.Group != "" {
		n += "." + k.Group
	}
	return n
}

// resourceName is kubectl's "deployment.apps/web".
func resourceName(k *scheme.Kind, name string) string { return kindName(k) + "/" + name }

// compactJSON normalises JSON so equal documents compare equal.
func compactJSON(b []byte) []byte {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return b
	}
	out, _ := json.Marshal(v)
	return out
}
