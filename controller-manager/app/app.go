// Package app is skiff-controller-manager's command: flags into Options,
// leader election, metrics and health, and the controllers' Run.
package app

import (
	"context"
	"fmt"
	"os"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"skiff.dev/client"
	"skiff.dev/client/component"
	"skiff.dev/client/config"
	"skiff.dev/client/leaderelection"
	"skiff.dev/controller-manager/internal/manager"
)

// NewCommand is the skiff-controller-manager command line.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:           "skiff-controller-manager",
		Short:         "Run the controllers that drive the cluster toward its desired state",
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

// Run runs the controller-manager until ctx ends or its lease is lost.
func Run(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	log, err := component.NewLogger(os.Stderr, o.LogFormat, o.Verbosity)
	if err != nil {
		return err
	}
	r, conn, err := config.Open(o.Kubeconfig)
	if err != nil {
		return err
	}
	defer conn.Close()
	rootCA := r.CA
	if o.RootCAFile != "" {
		if rootCA, err = os.ReadFile(o.RootCAFile); err != nil {
			return fmt.Errorf("--root-ca-file: %w", err)
		}
	}
	c := client.New(conn)
	reg := component.NewRegistry()
	m, err := manager.New(manager.Config{Client: c, Controllers: o.Controllers, Options: o.ControllerOptions(rootCA),
		Registerer: reg, Logger: log})
	if err != nil {
		return err
	}
	g, _ := component.NewGroup(ctx)
	if o.MetricsBindAddress != "" {
		ms := &component.Server{Addr: o.MetricsBindAddress, Registry: reg, Logger: log, Profiling: o.Profiling,
			Health: m.HealthChecks()}
		g.Go("metrics", ms.Start)
	}
	if !o.LeaderElect {
		g.Go("controllers", m.Run)
		return g.Wait()
	}
	host, _ := os.Hostname()
	id := host + "_" + uuid.NewString()
	g.Go("leader-election", func(ctx context.Context) error {
		return leaderelection.Lead(ctx, leaderelection.Config{
			Client: c, Namespace: o.LeaseNamespace, Name: o.LeaseName, Identity: id,
			LeaseDuration: o.LeaseDuration, RenewDeadline: o.RenewDeadline, RetryPeriod: o.RetryPeriod, Logger: log,
		}, m.Run)
	})
	return g.Wait()
}
