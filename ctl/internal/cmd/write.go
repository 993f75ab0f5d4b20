package cmd

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/client"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// eachObject runs fn on every object of -f for verb (apply, create, …),
// printing errors as kubectl does and going on with the next object.
func (o *Options) eachObject(cmd *cobra.Command, verb string, files []string, recursive bool, fn func(d *client.Dynamic, ob object) (string, error)) error {
	objs, err := o.readFiles(files, recursive)
	if err != nil {
		return err
	}
	switch {
	case len(objs) == 0 && verb == "delete":
		fmt.Fprintln(o.streams.Err, "No resources found")
		return nil
	case len(objs) == 0:
		return fmt.Errorf("no objects passed to %s", verb)
	}
	if verb != "create" {
		if err := named(objs, verb); err != nil {
			return err
		}
	}
	cl, err := o.client(cmd.Context())
	if err != nil {
		return err
	}
	failed := false
	for _, ob := range objs {
		ns, err := o.namespaceFor(ob)
		if err != nil {
			return err
		}
		verb, err := fn(cl.Resource(ob.kind, ns), ob)
		if err != nil {
			o.printError(err)
			failed = true
			continue
		}
		switch verb {
		case "":
		case "deleted":
			fmt.Fprintf(o.streams.Out, "%s %q deleted\n", kindName(ob.kind), ob.obj.GetMetadata().GetName())
		default:
			fmt.Fprintf(o.streams.Out, "%s %s\n", resourceName(ob.kind, ob.obj.GetMetadata().GetName()), verb)
		}
	}
	if failed {
		return exitError{code: 1}
	}
	return nil
}

func newCreate(o *Options) *cobra.Command {
	var files []string
	var recursive bool
	c := &cobra.Command{
		Use:   "create -f FILENAME",
		Short: "Create a resource from a file or from stdin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.eachObject(cmd, "create", files, recursive, func(d *client.Dynamic, ob object) (string, error) {
				created, err := d.Create(cmd.Context(), ob.obj, false)
				if err == nil {
					// A generateName's object is known by the name the server chose.
					ob.obj.GetMetadata().Name = created.GetMetadata().GetName()
				}
				return "created", err
			})
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "Files that contain the resources to create.")
	addCreateGenerators(o, c)
	c.Flags().BoolVarP(&recursive, "recursive", "R", false, "Process the directory used in -f recursively.")
	return c
}

func newReplace(o *Options) *cobra.Command {
	var files []string
	var recursive bool
	c := &cobra.Command{
		Use:   "replace -f FILENAME",
		Short: "Replace a resource by file name or stdin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.eachObject(cmd, "replace", files, recursive, func(d *client.Dynamic, ob object) (string, error) {
				m := ob.obj.GetMetadata()
				// Without a resourceVersion in the file, replace what is there now.
				if m.ResourceVersion == "" {
					live, err := d.Get(cmd.Context(), m.Name)
					if err != nil {
						return "", err
					}
					m.ResourceVersion = live.GetMetadata().GetResourceVersion()
				}
				_, err := d.Update(cmd.Context(), ob.obj, false)
				return "replaced", err
			})
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "Files that contain the configurations to replace.")
	c.Flags().BoolVarP(&recursive, "recursive", "R", false, "Process the directory used in -f recursively.")
	return c
}

func newDelete(o *Options) *cobra.Command {
	var files []string
	var recursive, all, ignoreNotFound, wait bool
	var timeout time.Duration
	var selector, cascade string
	grace := int64(-1)
	c := &cobra.Command{
		Use:   "delete ([-f FILENAME] | TYPE [(NAME | -l label | --all)])",
		Short: "Delete resources by file names, stdin, resources and names, or by resources and label selector",
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := deleteOptionsFor(grace, cascade)
			if err != nil {
				return err
			}
			del := func(d *client.Dynamic, name string) (string, error) {
				last, err := d.Delete(cmd.Context(), name, opts)
				if err != nil && ignoreNotFound && apierrors.IsNotFound(err) {
					return "", nil
				}
				if err == nil && wait && last.GetMetadata().GetDeletionTimestamp() != nil {
					// Finalizers or a graceful termination hold it: wait, as kubectl does.
					if err := waitGone(cmd, d, name, last.GetMetadata().GetUid(), timeout); err != nil {
						return "", err
					}
				}
				return "deleted", err
			}
			if len(files) > 0 {
				return o.eachObject(cmd, "delete", files, recursive, func(d *client.Dynamic, ob object) (string, error) {
					return del(d, ob.obj.GetMetadata().GetName())
				})
			}
			if len(args) == 0 {
				return fmt.Errorf("You must provide one or more resources by argument or filename.")
			}
			targets, err := parseTargets(args)
			if err != nil {
				return err
			}
			cl, err := o.client(cmd.Context())
			if err != nil {
				return err
			}
			failed, deleted := false, 0
			for _, t := range targets {
				d := cl.Resource(t.kind, o.namespace())
				names := t.names
				if len(names) == 0 {
					if selector == "" && !all {
						return fmt.Errorf("resource(s) were provided, but no name was specified")
					}
					l, err := d.List(cmd.Context(), client.ListOptions{LabelSelector: selector})
					if err != nil {
						return o.printError(err)
					}
					for _, it := range l.Items {
						names = append(names, it.GetMetadata().GetName())
					}
				}
				for _, n := range names {
					verb, err := del(d, n)
					if err != nil {
						o.printError(err)
						failed = true
						continue
					}
					if verb != "" {
						deleted++
						fmt.Fprintf(o.streams.Out, "%s %q %s\n", kindName(t.kind), n, verb)
					}
				}
			}
			if deleted == 0 && !failed && (selector != "" || all) {
				fmt.Fprintln(o.streams.Err, "No resources found")
			}
			if failed {
				return exitError{code: 1}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringSliceVarP(&files, "filename", "f", nil, "Files containing the resources to delete.")
	f.BoolVarP(&recursive, "recursive", "R", false, "Process the directory used in -f recursively.")
	f.StringVarP(&selector, "selector", "l", "", "Selector (label query) to filter on.")
	f.BoolVar(&all, "all", false, "Delete all resources, in the namespace of the specified resource types.")
	f.BoolVar(&ignoreNotFound, "ignore-not-found", false, "Treat \"resource not found\" as a successful delete.")
	f.Int64Var(&grace, "grace-period", -1, "Period of time in seconds given to the resource to terminate gracefully. Ignored if negative.")
	f.StringVar(&cascade, "cascade", "background", `Must be "background", "orphan", or "foreground".`)
	f.BoolVar(&wait, "wait", true, "If true, wait for resources to be gone before returning. This waits for finalizers.")
	f.DurationVar(&timeout, "timeout", 0, "The length of time to wait before giving up on a delete, zero means determine a timeout from the size of the object")
	return c
}

// target is a kind and the names asked for ("pods a b", "pod/a").
type target struct {
	kind  *scheme.Kind
	names []string
}

// parseTargets reads kubectl's argument forms: "TYPE[,TYPE...] [NAME...]" or
// "TYPE/NAME ...".
func parseTargets(args []string) ([]target, error) {
	if strings.Contains(args[0], "/") {
		var out []target
		for _, a := range args {
			kind, name, ok := strings.Cut(a, "/")
			if !ok || name == "" {
				return nil, fmt.Errorf("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'skiffctl get resource/<resource_name>' instead of 'skiffctl get resource resource/<resource_name>'")
			}
			k, err := scheme.Lookup(kind)
			if err != nil {
				return nil, err
			}
			out = append(out, target{kind: k, names: []string{name}})
		}
		return out, nil
	}
	var out []target
	for _, word := range strings.Split(args[0], ",") {
		if word == "all" {
			for _, k := range scheme.All() {
				for _, c := range k.Categories {
					if c == "all" {
						out = append(out, target{kind: k})
					}
				}
			}
			continue
		}
		k, err := scheme.Lookup(word)
		if err != nil {
			return nil, err
		}
		out = append(out, target{kind: k, names: args[1:]})
	}
	if len(out) > 1 && len(args) > 1 {
		return nil, fmt.Errorf("you may only specify a single resource type when naming resources")
	}
	return out, nil
}

// waitGone polls until the object (that uid) no longer exists.
func waitGone(cmd *cobra.Command, d *client.Dynamic, name, uid string, timeout time.Duration) error {
	deadline := time.Time{}
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		cur, err := d.Get(cmd.Context(), name)
		if apierrors.IsNotFound(err) || (err == nil && cur.GetMetadata().GetUid() != uid) {
			return nil
		}
		if err != nil {
			return err
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for the condition on %s", resourcePlural(d.Kind(), name))
		}
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
