package cmd

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/ctl/internal/printers"
	"skiff.dev/proto/scheme"
)

// newHistory is beyond kubectl: an object's past revisions, from etcd's
// MVCC history, until compaction removes them.
func newHistory(o *Options) *cobra.Command {
	var limit int64
	c := &cobra.Command{
		Use:   "history TYPE NAME",
		Short: "List the past revisions of an object still held in etcd",
		Long: "List the past revisions of an object still held in etcd, newest first.\n" +
			"Show one with: skiffctl get TYPE NAME --revision REVISION -o yaml",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			targets, err := parseTargets(args)
			if err != nil {
				return err
			}
			if len(targets) != 1 || len(targets[0].names) != 1 {
				return fmt.Errorf("history takes one object: TYPE NAME or TYPE/NAME")
			}
			t := targets[0]
			cl, err := o.client(cmd.Context())
			if err != nil {
				return err
			}
			revs, compacted, err := cl.Resource(t.kind, o.namespace()).History(cmd.Context(), t.names[0], limit)
			if err != nil {
				return o.printError(err)
			}
			tw := printers.NewTabWriter(o.streams.Out)
			fmt.Fprintln(tw, "REVISION\tGENERATION\tCHANGE\tAGE")
			now := time.Now()
			for i, r := range revs {
				change := "updated"
				switch {
				case r.Deleted:
					change = "deleted"
				case i == len(revs)-1 && compacted == 0:
					change = "created"
				case r.Object.GetMetadata().GetDeletionTimestamp() != nil:
					change = "terminating"
				}
				age := "<unknown>"
				if i == len(revs)-1 && change == "created" {
					age = printers.Age(r.Object.GetMetadata().GetCreationTimestamp(), now)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.ResourceVersion, r.Object.GetMetadata().GetGeneration(), change, age)
			}
			if compacted > 0 {
				fmt.Fprintf(o.streams.Err, "Revisions before %d were compacted away.\n", compacted)
			}
			return tw.Flush()
		},
	}
	c.Flags().Int64Var(&limit, "limit", 0, "Show at most this many revisions (0: all).")
	return c
}

// getAtRevision serves `get TYPE NAME --revision N`.
func (o *Options) getAtRevision(cmd *cobra.Command, t target, rev string) (scheme.Object, error) {
	cl, err := o.client(cmd.Context())
	if err != nil {
		return nil, err
	}
	return cl.Resource(t.kind, o.namespace()).GetAt(cmd.Context(), t.names[0], rev)
}
