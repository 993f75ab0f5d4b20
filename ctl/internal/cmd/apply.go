package cmd

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/jsonmergepatch"
	"k8s.io/apimachinery/pkg/util/mergepatch"

	"skiff.dev/client"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
	"skiff.dev/proto/strategic"
)

// LastApplied is the annotation apply keeps the applied configuration in.
const LastApplied = "kubectl.kubernetes.io/last-applied-configuration"

func newApply(o *Options) *cobra.Command {
	var files []string
	var recursive, prune bool
	var dryRun, selector string
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
			if prune && selector == "" {
				return fmt.Errorf("all resources selected for prune without explicitly passing --all. To prune all resources, pass the --all flag. If you did not mean to prune all resources, specify a label selector")
			}
			applied := map[string]bool{}
			kinds := map[*client.Dynamic]bool{}
			err := o.eachObject(cmd, "apply", files, recursive, func(d *client.Dynamic, ob object) (string, error) {
				applied[kindName(d.Kind())+"/"+ob.obj.GetMetadata().GetNamespace()+"/"+ob.obj.GetMetadata().GetName()] = true
				kinds[d] = true
				verb, err := apply(cmd, d, ob, dryRun)
				return verb + suffix, err
			})
			if err != nil || !prune {
				return err
			}
			return o.prune(cmd, kinds, applied, selector, dryRun, suffix)
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "The files that contain the configurations to apply.")
	c.Flags().BoolVarP(&recursive, "recursive", "R", false, "Process the directory used in -f recursively.")
	c.Flags().StringVar(&dryRun, "dry-run", "none", `Must be "none", "server", or "client".`)
	c.Flags().BoolVar(&prune, "prune", false, "Automatically delete resource objects, that do not appear in the configs and are created by either apply or create --save-config. Should be used with -l.")
	c.Flags().StringVarP(&selector, "selector", "l", "", "Selector (label query) to filter on, supports '=', '==', and '!='.")
	return c
}

type dynamic = *client.Dynamic

// apply creates the object, or patches the live one as kubectl apply does:
// fields removed from the file since the last apply are removed, fields the
// file sets are set (a hand edit of them is undone), fields only others set
// are kept. dryRun "client" computes the answer without writing; "server"
// has the apiserver run everything but the write.
func apply(cmd *cobra.Command, d dynamic, ob object, dryRun string) (string, error) {
	serverDryRun := dryRun == "server"
	ctx := cmd.Context()
	m := ob.obj.GetMetadata()
	_, modified, err := withLastApplied(ob)
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
	patchType, patch, err := applyPatch(ob.kind, modified, live)
	if err != nil {
		return "", fmt.Errorf("computing the patch for %s: %w", resourceName(ob.kind, m.GetName()), err)
	}
	if string(compactJSON(patch)) == "{}" {
		return "unchanged", nil
	}
	if dryRun == "client" {
		return "configured", nil
	}
	out, err := d.Patch(ctx, m.GetName(), patchType, patch, "", serverDryRun)
	if err != nil {
		return "", err
	}
	// A patch can be non-empty and still change nothing: a replace-strategy
	// selector is always sent whole, a file's `false` is absent from the
	// live JSON, stringData folds into data, defaults fill a list the file
	// owns. The apiserver writes nothing then, so what it answers is the
	// live object itself; kubectl would say "configured", but that is
	// not what happened.
	if proto.Equal(out, live) {
		return "unchanged", nil
	}
	return "configured", nil
}

// applyPatch is the patch apply sends to bring live to the file (modified,
// carrying its last-applied annotation): kubectl's three-way patch between
// the last applied configuration, the file and the live object.
func applyPatch(k *scheme.Kind, modified []byte, live scheme.Object) (patchType string, patch []byte, err error) {
	var original []byte // never applied: nothing to remove
	if la := live.GetMetadata().GetAnnotations()[LastApplied]; la != "" {
		original = []byte(la)
	}
	current, err := codec.MarshalJSON(live)
	if err != nil {
		return "", nil, err
	}
	return threeWayPatch(k, original, modified, current)
}

// threeWayPatch is a strategic merge patch, whose lists merge by key
// (containers and env by name, …), for every kind upstream has a type for,
// and a JSON merge patch, whose lists are replaced whole, for any other,
// as kubectl sends for custom resources.
func threeWayPatch(k *scheme.Kind, original, modified, current []byte) (patchType string, patch []byte, err error) {
	patch, err = strategic.ThreeWay(k, original, modified, current, true)
	if errors.Is(err, strategic.ErrNoSchema) {
		patch, err = jsonmergepatch.CreateThreeWayJSONMergePatch(original, modified, current,
			mergepatch.RequireKeyUnchanged("apiVersion"), mergepatch.RequireKeyUnchanged("kind"), mergepatch.RequireMetadataKeyUnchanged("name"))
		return "merge", patch, err
	}
	return "strategic", patch, err
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

// prune deletes objects of the applied kinds that match the selector, were
// created by apply (they carry its annotation) and are no longer in the files.
func (o *Options) prune(cmd *cobra.Command, kinds map[*client.Dynamic]bool, applied map[string]bool, selector, dryRun, suffix string) error {
	seen := map[string]bool{}
	for d := range kinds {
		if seen[d.Kind().GroupResource()] {
			continue
		}
		seen[d.Kind().GroupResource()] = true
		l, err := d.List(cmd.Context(), client.ListOptions{LabelSelector: selector})
		if err != nil {
			return o.printError(err)
		}
		for _, it := range l.Items {
			m := it.GetMetadata()
			if m.GetAnnotations()[LastApplied] == "" || applied[kindName(d.Kind())+"/"+m.GetNamespace()+"/"+m.GetName()] {
				continue
			}
			if dryRun != "client" {
				if _, err := d.Delete(cmd.Context(), m.GetName(), client.DeleteOptions{PropagationPolicy: "Background", DryRun: dryRun == "server"}); err != nil && !apierrors.IsNotFound(err) {
					return o.printError(err)
				}
			}
			fmt.Fprintf(o.streams.Out, "%s pruned%s\n", resourceName(d.Kind(), m.GetName()), suffix)
		}
	}
	return nil
}
