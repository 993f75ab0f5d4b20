package cmd

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/client"
	"skiff.dev/ctl/internal/printers"
	"skiff.dev/proto/scheme"
)

type getOptions struct {
	output        string
	selector      string
	fieldSelector string
	allNamespaces bool
	watch         bool
	watchOnly     bool
	showLabels    bool
	noHeaders     bool
	revision      string
	labelColumns  []string
	sortBy        string
}

func newGet(o *Options) *cobra.Command {
	g := &getOptions{}
	c := &cobra.Command{
		Use:   "get [(-o|--output=)json|yaml|name|wide] (TYPE[.VERSION][.GROUP] [NAME | -l label] | TYPE[.VERSION][.GROUP]/NAME ...)",
		Short: "Display one or many resources",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("you must specify the type of resource to get. Use \"skiffctl api-resources\" for a complete list of supported resources")
			}
			return o.get(cmd, g, args)
		},
	}
	f := c.Flags()
	f.StringVarP(&g.output, "output", "o", "", "Output format: json, yaml, name, wide.")
	f.StringVarP(&g.selector, "selector", "l", "", "Selector (label query) to filter on.")
	f.StringVar(&g.fieldSelector, "field-selector", "", "Selector (field query) to filter on.")
	f.BoolVarP(&g.allNamespaces, "all-namespaces", "A", false, "List the requested object(s) across all namespaces.")
	f.BoolVarP(&g.watch, "watch", "w", false, "After listing/getting the requested object, watch for changes.")
	f.BoolVar(&g.watchOnly, "watch-only", false, "Watch for changes to the requested object(s), without listing/getting first.")
	f.BoolVar(&g.showLabels, "show-labels", false, "When printing, show all labels as the last column.")
	f.BoolVar(&g.noHeaders, "no-headers", false, "When using the default output format, don't print headers.")
	f.StringVar(&g.revision, "revision", "", "Show the object as it was at this etcd revision (see skiffctl history).")
	f.StringSliceVarP(&g.labelColumns, "label-columns", "L", nil, "Accepts a comma separated list of labels that are going to be presented as columns.")
	f.StringVar(&g.sortBy, "sort-by", "", "If non-empty, sort list types using this field specification (a JSONPath expression, e.g. '{.metadata.name}').")
	return c
}

func (o *Options) get(cmd *cobra.Command, g *getOptions, args []string) error {
	switch {
	case g.output == "", g.output == "wide", g.output == "json", g.output == "yaml", g.output == "name",
		strings.HasPrefix(g.output, "jsonpath="), strings.HasPrefix(g.output, "custom-columns="):
	default:
		return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: custom-columns,json,jsonpath,name,wide,yaml", g.output)
	}
	targets, err := parseTargets(args)
	if err != nil {
		return err
	}
	cl, err := o.client(cmd.Context())
	if err != nil {
		return err
	}
	ns := o.namespace()
	if g.allNamespaces {
		ns = ""
	}
	if g.watch || g.watchOnly {
		switch {
		case len(targets) > 1:
			return fmt.Errorf("watch is only supported on individual resources and resource collections, but a list of resources is found")
		case len(targets[0].names) > 1:
			return fmt.Errorf("watch is only supported on individual resources and resource collections, but %d resources were found", len(targets[0].names))
		case g.revision != "":
			return fmt.Errorf("--revision cannot be used with --watch")
		}
		return o.watch(cmd.Context(), g, cl.Resource(targets[0].kind, ns), targets[0])
	}
	single := len(targets) == 1 && len(targets[0].names) == 1
	var all []scheme.Object
	failed := false
	printed, found := 0, 0
	for i, t := range targets {
		d := cl.Resource(t.kind, ns)
		var objs []scheme.Object
		if len(t.names) > 0 {
			if g.revision != "" && (len(targets) != 1 || len(t.names) != 1) {
				return fmt.Errorf("--revision needs exactly one object: TYPE NAME")
			}
			for _, n := range t.names {
				var obj scheme.Object
				var err error
				if g.revision != "" {
					obj, err = o.getAtRevision(cmd, t, g.revision)
				} else {
					obj, err = d.Get(cmd.Context(), n)
				}
				if err != nil {
					o.printError(err)
					failed = true
					continue
				}
				objs = append(objs, obj)
			}
		} else {
			l, err := d.List(cmd.Context(), client.ListOptions{LabelSelector: g.selector, FieldSelector: g.fieldSelector})
			if err != nil {
				return o.printError(err)
			}
			objs = l.Items
		}
		if g.sortBy != "" {
			if err := printers.SortBy(objs, g.sortBy); err != nil {
				return err
			}
		}
		switch {
		case g.output == "json", g.output == "yaml", strings.HasPrefix(g.output, "jsonpath="):
			all = append(all, objs...)
		case strings.HasPrefix(g.output, "custom-columns="):
			if err := printers.CustomColumns(o.streams.Out, strings.TrimPrefix(g.output, "custom-columns="), objs, g.noHeaders); err != nil {
				return err
			}
		case g.output == "name":
			if err := printers.Name(o.streams.Out, objs); err != nil {
				return err
			}
		default:
			if len(objs) == 0 {
				continue
			}
			if printed > 0 && i > 0 {
				fmt.Fprintln(o.streams.Out)
			}
			printed++
			opts := o.tableOptions(g)
			opts.WithKind = len(targets) > 1
			if err := printers.Table(o.streams.Out, t.kind, objs, opts); err != nil {
				return err
			}
		}
		found += len(objs)
	}
	switch {
	case strings.HasPrefix(g.output, "jsonpath="):
		if err := printers.JSONPath(o.streams.Out, strings.TrimPrefix(g.output, "jsonpath="), all, single); err != nil {
			return err
		}
	case g.output == "json":
		if err := printers.JSON(o.streams.Out, all, single); err != nil {
			return err
		}
	case g.output == "yaml":
		if err := printers.YAML(o.streams.Out, all, single); err != nil {
			return err
		}
	default:
		if found == 0 && !failed {
			if g.allNamespaces || !anyNamespaced(targets) {
				fmt.Fprintln(o.streams.Err, "No resources found")
			} else {
				fmt.Fprintf(o.streams.Err, "No resources found in %s namespace.\n", ns)
			}
		}
	}
	if failed {
		return exitError{code: 1}
	}
	return nil
}

func anyNamespaced(ts []target) bool {
	for _, t := range ts {
		if t.kind.Namespaced {
			return true
		}
	}
	return false
}

func (o *Options) tableOptions(g *getOptions) printers.Options {
	return printers.Options{Wide: g.output == "wide", AllNamespaces: g.allNamespaces, ShowLabels: g.showLabels, NoHeaders: g.noHeaders,
		LabelColumns: g.labelColumns, Now: time.Now()}
}
