// Package app is skiff-proxy's command: flags into Options, then the proxy
// (New, Start, Ready) with its metrics and health endpoints.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"sigs.k8s.io/knftables"

	"skiff.dev/client"
	"skiff.dev/client/component"
	"skiff.dev/client/config"
	"skiff.dev/proxy/internal/ipvs"
	"skiff.dev/proxy/internal/nftables"
)

// NewCommand is the skiff-proxy command line.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:           "skiff-proxy",
		Short:         "Program this node's Service dataplane (nftables, or IPVS)",
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

// Run runs skiff-proxy until ctx ends, or, with --cleanup, removes what it
// programmed and returns.
func Run(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	log, err := component.NewLogger(os.Stderr, o.LogFormat, o.Verbosity)
	if err != nil {
		return fmt.Errorf("--log-format: %w", err)
	}
	if o.Cleanup {
		return Cleanup(ctx, log)
	}
	host, err := o.hostname()
	if err != nil {
		return err
	}
	if o.ProxyMode == "ipvs" {
		// Before connecting: a node without IPVS should hear so at once.
		if err := ipvs.Available(""); err != nil {
			return err
		}
	}
	cidrs, _ := o.clusterCIDRs()
	primary, npCIDRs, _ := o.nodePortAddresses()
	if len(cidrs) == 0 {
		log.Warn("no --cluster-cidr: traffic to ClusterIPs from outside the cluster is not masqueraded unless --masquerade-all")
	}
	_, conn, err := config.Open(o.Kubeconfig)
	if err != nil {
		return err
	}
	defer conn.Close()
	reg := component.NewRegistry()
	p, err := New(Config{Client: client.New(conn), Hostname: host, Mode: o.ProxyMode, ClusterCIDRs: cidrs,
		MasqueradeAll: o.MasqueradeAll, NodePortsPrimary: primary, NodePortCIDRs: npCIDRs,
		SyncPeriod: o.SyncPeriod, MinSyncPeriod: o.MinSyncPeriod, IPVSScheduler: o.IPVSScheduler,
		Registerer: reg, HealthzBindAddress: o.HealthzBindAddress, Logger: log})
	if err != nil {
		return err
	}
	g, _ := component.NewGroup(ctx)
	if o.MetricsBindAddress != "" {
		ms := &component.Server{Addr: o.MetricsBindAddress, Registry: reg, Logger: log,
			Health: map[string]func(context.Context) error{"proxy": func(context.Context) error {
				if !p.Health().Healthy {
					return errors.New("rules lag behind changes by more than twice --sync-period")
				}
				return nil
			}}}
		g.Go("metrics", ms.Start)
	}
	g.Go("proxy", p.Start)
	return g.Wait()
}

// Cleanup removes skiff-proxy's tables in both families and, where the
// kernel has IPVS, its virtual servers and dummy interface: a node reset
// leaves nothing behind.
func Cleanup(ctx context.Context, log *slog.Logger) error {
	var errs []error
	for _, fam := range []knftables.Family{knftables.IPv4Family, knftables.IPv6Family} {
		nft, err := knftables.New(fam, nftables.TableName)
		if err != nil {
			errs = append(errs, fmt.Errorf("nftables (%s): %w", fam, err))
			continue
		}
		if err := nftables.Cleanup(ctx, nft); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ipvs.Cleanup(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("removed skiff-proxy's rules", "table", nftables.TableName)
	return nil
}
