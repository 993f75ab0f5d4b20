// Command skiff-hollow-nodes runs many simulated nodes in one process,
// kubemark's hollow nodes: real kubelets over in-memory CRI runtimes, for
// scale tests of the control plane.
//
//	skiff-hollow-nodes --kubeconfig /etc/skiff/admin.conf --hollow-nodes 100
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"skiff.dev/client/component"
	"skiff.dev/kubelet/hollow"
)

func main() {
	o := hollow.NewOptions()
	cmd := &cobra.Command{
		Use:           "skiff-hollow-nodes",
		Short:         "Run simulated nodes (real kubelets over fake container runtimes) for scale tests",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			ctx, cancel := component.SignalContext()
			defer cancel()
			return hollow.Run(ctx, *o)
		},
	}
	o.AddFlags(cmd.Flags())
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
