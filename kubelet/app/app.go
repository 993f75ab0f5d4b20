// Package app is skiff-kubelet's command: flags into Options, the
// connections to the apiserver and the container runtime, the metrics and
// health endpoint, and the Kubelet's Run.
package app

import (
	"context"
	"os"

	"github.com/spf13/cobra"

	"skiff.dev/client"
	"skiff.dev/client/component"
	"skiff.dev/client/config"
	"skiff.dev/kubelet/internal/cri"
)

// NewCommand is the skiff-kubelet command line.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:           "skiff-kubelet",
		Short:         "Run the node agent: register the node and run its pods through the CRI",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			ctx, cancel := component.SignalContext()
			defer cancel()
			return Run(ctx, *o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// Run runs the kubelet until ctx ends or a part of it fails.
func Run(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	log, err := component.NewLogger(os.Stderr, o.LogFormat, o.Verbosity)
	if err != nil {
		return err
	}
	_, conn, err := config.Open(o.Kubeconfig)
	if err != nil {
		return err
	}
	defer conn.Close()
	rt, err := cri.Dial(ctx, o.ContainerRuntimeEndpoint, o.RuntimeRequestTimeout)
	if err != nil {
		return err
	}
	reg := component.NewRegistry()
	k, err := New(Config{Options: o, Client: client.New(conn), Runtime: rt, Registry: reg, Logger: log})
	if err != nil {
		return err
	}
	srv, err := k.APIServer(k.HealthChecks())
	if err != nil {
		return err
	}
	g, _ := component.NewGroup(ctx)
	g.Go("server", srv.Run)
	if o.MetricsBindAddress != "" {
		ms := &component.Server{Addr: o.MetricsBindAddress, Registry: reg, Logger: log, Health: k.HealthChecks()}
		g.Go("metrics", ms.Start)
	}
	g.Go("kubelet", k.Run)
	return g.Wait()
}
