package app

import (
	"os"

	"github.com/spf13/cobra"

	"skiff.dev/client/component"
)

// NewCommand is the skiff-apiserver command line.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:           "skiff-apiserver",
		Short:         "Serve Skiff's API over gRPC with its objects in etcd",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			log, err := component.NewLogger(os.Stderr, o.LogFormat, o.Verbosity)
			if err != nil {
				return err
			}
			ctx, cancel := component.SignalContext()
			defer cancel()
			s, err := New(ctx, *o, log)
			if err != nil {
				return err
			}
			return s.Start(ctx)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
