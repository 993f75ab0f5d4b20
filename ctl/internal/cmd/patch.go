package cmd

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"skiff.dev/client"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// resolveTargets turns TYPE NAME... or TYPE/NAME... arguments into clients
// and names, with -l selecting instead of names.
func (o *Options) resolveTargets(cmd *cobra.Command, args []string, selector string, all bool) ([]*client.Dynamic, [][]string, error) {
	if len(args) == 0 {
		return nil, nil, fmt.Errorf("you must specify the type of resource")
	}
	targets, err := parseTargets(args)
	if err != nil {
		return nil, nil, err
	}
	cl, err := o.client(cmd.Context())
	if err != nil {
		return nil, nil, err
	}
	var ds []*client.Dynamic
	var names [][]string
	for _, t := range targets {
		d := cl.Resource(t.kind, o.namespace())
		n := t.names
		if len(n) == 0 {
			if selector == "" && !all {
				return nil, nil, fmt.Errorf("resource(s) were provided, but no name was specified")
			}
			l, err := d.List(cmd.Context(), client.ListOptions{LabelSelector: selector})
			if err != nil {
				return nil, nil, o.printError(err)
			}
			for _, it := range l.Items {
				n = append(n, it.GetMetadata().GetName())
			}
		}
		ds = append(ds, d)
		names = append(names, n)
	}
	return ds, names, nil
}

// patchEach sends one merge patch per object and prints kubectl's line.
func (o *Options) patchEach(cmd *cobra.Command, ds []*client.Dynamic, names [][]string, verb string, patchFor func(obj scheme.Object) ([]byte, string, error)) error {
	failed := false
	for i, d := range ds {
		for _, n := range names[i] {
			cur, err := d.Get(cmd.Context(), n)
			if err != nil {
				o.printError(err)
				failed = true
				continue
			}
			patch, how, err := patchFor(cur)
			if err != nil {
				fmt.Fprintln(o.streams.Err, "error: "+err.Error())
				failed = true
				continue
			}
			result := verb
			if patch == nil {
				result = "not " + verb
				if how != "" {
					result = how
				}
			} else if _, err := d.Patch(cmd.Context(), n, "merge", patch, "", false); err != nil {
				o.printError(err)
				failed = true
				continue
			}
			fmt.Fprintf(o.streams.Out, "%s %s\n", resourceName(d.Kind(), n), result)
		}
	}
	if failed {
		return exitError{code: 1}
	}
	return nil
}

// keyValueChanges parses "k=v" and "k-" arguments, as label and annotate take.
func keyValueChanges(args []string) (map[string]any, error) {
	out := map[string]any{}
	for _, a := range args {
		if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
			out[k] = nil
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid argument %q: expected KEY=VALUE or KEY-", a)
		}
		out[k] = v
	}
	return out, nil
}

func newMetaCommand(o *Options, name, field, verb string) *cobra.Command {
	var selector string
	var overwrite, all bool
	c := &cobra.Command{
		Use:   name + " [--overwrite] (TYPE NAME | TYPE/NAME | TYPE -l selector) KEY_1=VAL_1 ... KEY_N=VAL_N",
		Short: fmt.Sprintf("Update the %s on a resource", field),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res, kv []string
			for _, a := range args {
				if strings.Contains(a, "=") || (strings.HasSuffix(a, "-") && len(res) > 0) {
					kv = append(kv, a)
				} else {
					res = append(res, a)
				}
			}
			changes, err := keyValueChanges(kv)
			if err != nil {
				return err
			}
			if len(changes) == 0 {
				return fmt.Errorf("at least one %s update is required", strings.TrimSuffix(field, "s"))
			}
			ds, names, err := o.resolveTargets(cmd, res, selector, all)
			if err != nil {
				return err
			}
			return o.patchEach(cmd, ds, names, verb, func(obj scheme.Object) ([]byte, string, error) {
				m := obj.GetMetadata()
				cur := m.GetLabels()
				if field == "annotations" {
					cur = m.GetAnnotations()
				}
				changed := false
				for k, v := range changes {
					old, has := cur[k]
					if v != nil && has && old != v && !overwrite {
						return nil, "", fmt.Errorf("'%s' already has a value (%s), and --overwrite is false", k, old)
					}
					if (v == nil && has) || (v != nil && old != v) {
						changed = true
					}
				}
				if !changed {
					return nil, "", nil
				}
				p, err := json.Marshal(map[string]any{"metadata": map[string]any{field: changes, "resourceVersion": m.GetResourceVersion()}})
				return p, "", err
			})
		},
	}
	c.Flags().StringVarP(&selector, "selector", "l", "", "Selector (label query) to filter on.")
	c.Flags().BoolVar(&overwrite, "overwrite", false, "If true, allow labels to be overwritten, otherwise reject label updates that overwrite existing labels.")
	c.Flags().BoolVar(&all, "all", false, "Select all resources, in the namespace of the specified resource types")
	return c
}

func newPatch(o *Options) *cobra.Command {
	var patch, typ, sub string
	c := &cobra.Command{
		Use:   "patch (TYPE NAME | TYPE/NAME) [-p PATCH] [--type merge|json] [--subresource status]",
		Short: "Update fields of a resource",
		RunE: func(cmd *cobra.Command, args []string) error {
			if patch == "" {
				return fmt.Errorf("must specify -p to patch")
			}
			if typ == "strategic" {
				typ = "merge"
			}
			ds, names, err := o.resolveTargets(cmd, args, "", false)
			if err != nil {
				return err
			}
			data, err := yamlOrJSON(patch)
			if err != nil {
				return fmt.Errorf("unable to parse %q: %w", patch, err)
			}
			for i, d := range ds {
				for _, n := range names[i] {
					before, err := d.Get(cmd.Context(), n)
					if err != nil {
						return o.printError(err)
					}
					after, err := d.Patch(cmd.Context(), n, typ, data, sub, false)
					if err != nil {
						return o.printError(err)
					}
					verb := "patched"
					if before.GetMetadata().GetResourceVersion() == after.GetMetadata().GetResourceVersion() {
						verb = "patched (no change)"
					}
					fmt.Fprintf(o.streams.Out, "%s %s\n", resourceName(d.Kind(), n), verb)
				}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&patch, "patch", "p", "", "The patch to be applied to the resource JSON file.")
	c.Flags().StringVar(&typ, "type", "merge", "The type of patch being provided; one of [json merge].")
	c.Flags().StringVar(&sub, "subresource", "", "If specified, patch will operate on the subresource of the requested object (status).")
	return c
}

func yamlOrJSON(s string) ([]byte, error) {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err == nil {
		return []byte(s), nil
	}
	return yaml.YAMLToJSON([]byte(s))
}

func newScale(o *Options) *cobra.Command {
	var replicas, current int
	var selector string
	var all bool
	c := &cobra.Command{
		Use:   "scale [--current-replicas=count] --replicas=COUNT (TYPE NAME | TYPE/NAME)",
		Short: "Set a new size for a deployment, replica set, replication controller, or stateful set",
		RunE: func(cmd *cobra.Command, args []string) error {
			if replicas < 0 {
				return fmt.Errorf("The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0")
			}
			ds, names, err := o.resolveTargets(cmd, args, selector, all)
			if err != nil {
				return err
			}
			for _, d := range ds {
				if !hasSub(d.Kind(), "scale") {
					return fmt.Errorf("cannot scale %s: it has no scale subresource", d.Kind().GroupResource())
				}
			}
			return o.patchEach(cmd, ds, names, "scaled", func(obj scheme.Object) ([]byte, string, error) {
				js, err := codec.MarshalJSON(obj)
				if err != nil {
					return nil, "", err
				}
				var doc struct {
					Spec struct {
						Replicas *int `json:"replicas"`
					} `json:"spec"`
				}
				json.Unmarshal(js, &doc)
				have := 1
				if doc.Spec.Replicas != nil {
					have = *doc.Spec.Replicas
				}
				if current >= 0 && have != current {
					return nil, "", apierrors.NewConflict(obj.GetMetadata().GetName(), obj.GetMetadata().GetName(), fmt.Sprintf("expected replicas to be %d, was %d", current, have))
				}
				patch := map[string]any{"spec": map[string]any{"replicas": replicas}}
				if current >= 0 {
					// --current-replicas is a precondition: the size it was
					// checked against must still be the object's.
					patch["metadata"] = map[string]any{"resourceVersion": obj.GetMetadata().GetResourceVersion()}
				}
				p, err := json.Marshal(patch)
				return p, "", err
			})
		},
	}
	c.Flags().IntVar(&replicas, "replicas", -1, "The new desired number of replicas. Required.")
	c.Flags().IntVar(&current, "current-replicas", -1, "Precondition for current size. Requires that the current size of the resource match this value in order to scale.")
	c.Flags().StringVarP(&selector, "selector", "l", "", "Selector (label query) to filter on.")
	c.Flags().BoolVar(&all, "all", false, "Select all resources in the namespace of the specified resource types")
	return c
}

func hasSub(k *scheme.Kind, sub string) bool {
	for _, s := range k.Subresources {
		if s == sub {
			return true
		}
	}
	return false
}

func newCordon(o *Options, unschedulable bool) *cobra.Command {
	name, verb := "cordon", "cordoned"
	if !unschedulable {
		name, verb = "uncordon", "uncordoned"
	}
	var selector string
	c := &cobra.Command{
		Use:   name + " NODE",
		Short: fmt.Sprintf("Mark node as %sschedulable", map[bool]string{true: "un", false: ""}[unschedulable]),
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, names, err := o.resolveTargets(cmd, append([]string{"nodes"}, args...), selector, false)
			if err != nil {
				return err
			}
			return o.patchEach(cmd, ds, names, verb, func(obj scheme.Object) ([]byte, string, error) {
				js, _ := codec.MarshalJSON(obj)
				already := strings.Contains(string(js), `"unschedulable":true`)
				if already == unschedulable {
					return nil, "already " + verb, nil
				}
				return []byte(`{"spec":{"unschedulable":` + strconv.FormatBool(unschedulable) + `}}`), "", nil
			})
		},
	}
	c.Flags().StringVarP(&selector, "selector", "l", "", "Selector (label query) to filter on")
	return c
}

// deleteOptionsFor is what delete and drain send.
func deleteOptionsFor(grace int64, cascade string) (client.DeleteOptions, error) {
	opts := client.DeleteOptions{}
	if grace >= 0 {
		opts.GracePeriodSeconds = &grace
	}
	switch cascade {
	case "background", "true", "":
		opts.PropagationPolicy = "Background"
	case "foreground":
		opts.PropagationPolicy = "Foreground"
	case "orphan", "false":
		opts.PropagationPolicy = "Orphan"
	default:
		return opts, fmt.Errorf(`invalid cascade value (%s). Must be "background", "foreground", or "orphan"`, cascade)
	}
	return opts, nil
}
