package cmd

import (
	"encoding/json"
	"fmt"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/spf13/cobra"

	"skiff.dev/client"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
)

// LastApplied is the annotation apply keeps the applied configuration in.
const LastApplied = "kubectl.kubernetes.io/last-applied-configuration"

func newApply(o *Options) *cobra.Command {
	var files []string
	var recursive bool
	var dryRun string
	c := &cobra.Command{
		Use:   "apply -f FILENAME",
		Short: "Apply a configuration to a resource by file name or stdin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			suffix := ""
			switch dryRun {
			case "none", "":
			case "client", "server":
				suffix = " (" + dryRun + " dry run)"
			default:
				return fmt.Errorf(`Invalid dry-run value (%s). Must be "none", "server", or "client".`, dryRun)
			}
			return o.eachObject(cmd, files, recursive, func(d *client.Dynamic, ob object) (string, error) {
				verb, err := apply(cmd, d, ob, dryRun)
				return verb + suffix, err
			})
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "The files that contain the configurations to apply.")
	c.Flags().BoolVarP(&recursive, "recursive", "R", false, "Process the directory used in -f recursively.")
	c.Flags().StringVar(&dryRun, "dry-run", "none", `Must be "none", "server", or "client".`)
	return c
}

type dynamic = *client.Dynamic

// apply creates the object, or patches the live one with the difference
// between the last applied configuration and this one (fields removed from
// the file are removed from the object; fields others set are kept).
// dryRun "client" computes the answer without writing; "server" has the
// apiserver run everything but the write.
func apply(cmd *cobra.Command, d dynamic, ob object, dryRun string) (string, error) {
	serverDryRun := dryRun == "server"
	ctx := cmd.Context()
	m := ob.obj.GetMetadata()
	self, modified, err := withLastApplied(ob)
	if err != nil {
		return "", err
	}
	live, err := d.Get(ctx, m.GetName())
	if apierrors.IsNotFound(err) {
		obj := ob.kind.New()
		if err := codec.DecodeInto(modified, obj, codec.Options{}); err != nil {
			return "", err
		}
		if dryRun == "client" {
			return "created", nil
		}
		if _, err := d.Create(ctx, obj, serverDryRun); err != nil {
			return "", err
		}
		return "created", nil
	}
	if err != nil {
		return "", err
	}
	original := []byte("{}")
	if la := live.GetMetadata().GetAnnotations()[LastApplied]; la != "" {
		original = []byte(la)
	}
	if string(compactJSON(original)) == string(compactJSON(self)) {
		return "unchanged", nil
	}
	patch, err := mergePatch(original, modified)
	if err != nil {
		return "", fmt.Errorf("computing the patch for %s: %w", resourceName(ob.kind, m.GetName()), err)
	}
	if dryRun == "client" {
		return "configured", nil
	}
	if _, err := d.Patch(ctx, m.GetName(), "merge", patch, "", serverDryRun); err != nil {
		return "", err
	}
	return "configured", nil
}

// withLastApplied returns the configuration as the file gives it (with its
// namespace settled) and the object carrying it in the annotation, as
// kubectl keeps it.
func withLastApplied(ob object) (self, modified []byte, err error) {
	var doc map[string]any
	if err := json.Unmarshal(ob.json, &doc); err != nil {
		return nil, nil, err
	}
	md, _ := doc["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		doc["metadata"] = md
	}
	if ns := ob.obj.GetMetadata().GetNamespace(); ns != "" {
		md["namespace"] = ns
	}
	ann, _ := md["annotations"].(map[string]any)
	if ann != nil {
		delete(ann, LastApplied)
		if len(ann) == 0 {
			delete(md, "annotations")
		}
	}
	if self, err = json.Marshal(doc); err != nil {
		return nil, nil, err
	}
	if ann == nil {
		ann = map[string]any{}
	}
	md["annotations"] = ann
	ann[LastApplied] = string(self) + "\n"
	modified, err = json.Marshal(doc)
	return self, modified, err
}

// mergePatch is the JSON merge patch from the last applied configuration to
// the new one: fields removed from the file become nulls.
func mergePatch(original, modified []byte) ([]byte, error) {
	return jsonpatch.CreateMergePatch(original, modified)
}
