// Package patches validates a patch once and applies it to documents: merge,
// JSON and strategic merge patches over an object's upstream JSON form,
// with the apiserver's bounds and error messages, for the registry and the
// fake clientset alike.
package patches

import (
	"bytes"
	"encoding/json"
	"fmt"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
	"skiff.dev/proto/strategic"
)

// Bounds on a patch's shape: merging costs time in the nesting depth of
// both documents, and no object of ours nests anywhere near this deep.
const (
	maxPatchDepth = 100
	maxPatchOps   = 10000 // upstream's bound on JSON patch operations
)

// Patcher validates a patch once and returns the function that applies it
// to a document.
func Patcher(k *scheme.Kind, patchType string, patch []byte) (func(doc []byte) ([]byte, error), error) {
	// One pass checks the patch and says where it stops being JSON.
	var valid json.RawMessage
	if err := json.Unmarshal(patch, &valid); err != nil {
		return nil, apierrors.NewBadRequest("the patch is not valid JSON: " + err.Error())
	}
	if d := jsonDepth(patch); d > maxPatchDepth {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the patch nests %d levels deep; at most %d are allowed", d, maxPatchDepth))
	}
	applyErr := func(err error) error {
		return apierrors.NewBadRequest("the patch could not be applied: " + err.Error())
	}
	isObject := func(what string) error {
		if !bytes.HasPrefix(bytes.TrimSpace(patch), []byte("{")) {
			return apierrors.NewBadRequest(fmt.Sprintf("a %s patch must be a JSON object", what))
		}
		return nil
	}
	switch patchType {
	case "", "merge", "application/merge-patch+json":
		if err := isObject("merge"); err != nil {
			return nil, err
		}
		return func(doc []byte) ([]byte, error) {
			out, err := jsonpatch.MergePatch(doc, patch)
			if err != nil {
				return nil, applyErr(err)
			}
			return out, nil
		}, nil
	case "strategic", "application/strategic-merge-patch+json":
		if err := isObject("strategic merge"); err != nil {
			return nil, err
		}
		if _, err := strategic.Schema(k); err != nil {
			return nil, apierrors.New(apierrors.ReasonUnsupported, fmt.Sprintf("strategic merge patch is not supported for %s: use merge or json", k.GroupResource()), nil)
		}
		return func(doc []byte) ([]byte, error) {
			out, err := strategic.Apply(k, doc, patch)
			if err != nil {
				return nil, applyErr(err)
			}
			return out, nil
		}, nil
	case "json", "application/json-patch+json":
		p, err := jsonpatch.DecodePatch(patch)
		if err != nil {
			return nil, apierrors.NewBadRequest("the JSON patch is not a list of operations: " + err.Error())
		}
		if len(p) > maxPatchOps {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the JSON patch has %d operations; at most %d are allowed", len(p), maxPatchOps))
		}
		return func(doc []byte) ([]byte, error) {
			out, err := p.Apply(doc)
			if err != nil {
				return nil, applyErr(err)
			}
			return out, nil
		}, nil
	}
	return nil, apierrors.New(apierrors.ReasonUnsupported, fmt.Sprintf("patch type %q is not supported: use merge, strategic or json", patchType), nil)
}

// jsonDepth is the deepest nesting of objects and arrays in valid JSON.
func jsonDepth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}
