// Package app is skiff-scheduler's command: flags into Options, the
// configuration file, leader election, metrics, and the scheduler's Run.
package app

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"skiff.dev/client"
	"skiff.dev/client/component"
	"skiff.dev/client/config"
	"skiff.dev/client/leaderelection"
	"skiff.dev/scheduler/internal/scheduler"
)

// Options are skiff-scheduler's flags.
type Options struct {
	Kubeconfig         string
	Config             string
	LeaderElect        bool
	LeaseNamespace     string
	LeaseName          string
	LeaseDuration      time.Duration
	RenewDeadline      time.Duration
	RetryPeriod        time.Duration
	MetricsBindAddress string
	Profiling          bool
	Parallelism        int
	LogFormat          string
	Verbosity          int
}

// NewOptions returns upstream's defaults.
func NewOptions() *Options {
	return &Options{LeaderElect: true, LeaseNamespace: "kube-system", LeaseName: "kube-scheduler",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		MetricsBindAddress: "127.0.0.1:10259", Parallelism: 16, LogFormat: "text"}
}

// AddFlags registers the flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Client config file (default $SKIFFCONFIG, then ~/.skiff/config).")
	fs.StringVar(&o.Config, "config", o.Config, "KubeSchedulerConfiguration-like file: profiles, plugins, pluginConfig, percentageOfNodesToScore.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect a leader among replicas on a Lease before scheduling.")
	fs.StringVar(&o.LeaseNamespace, "leader-elect-resource-namespace", o.LeaseNamespace, "Namespace of the leader election Lease.")
	fs.StringVar(&o.LeaseName, "leader-elect-resource-name", o.LeaseName, "Name of the leader election Lease.")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", o.LeaseDuration, "How long a lease holds without renewal.")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", o.RenewDeadline, "How long the leader retries renewing before giving up.")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", o.RetryPeriod, "How often candidates try to acquire or renew.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Plain-HTTP address of /metrics, /healthz, /readyz (empty disables).")
	fs.BoolVar(&o.Profiling, "profiling", o.Profiling, "Serve /debug/pprof/ on the metrics address. Off by default: that address is plain HTTP with no authentication.")
	fs.IntVar(&o.Parallelism, "parallelism", o.Parallelism, "How many goroutines filter nodes at once.")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "Log format: text or json.")
	fs.IntVarP(&o.Verbosity, "v", "v", o.Verbosity, "Log verbosity.")
}

// Configuration is the --config file (KubeSchedulerConfiguration's shape).
type Configuration struct {
	APIVersion               string              `json:"apiVersion,omitempty"`
	Kind                     string              `json:"kind,omitempty"`
	PercentageOfNodesToScore *int32              `json:"percentageOfNodesToScore,omitempty"`
	Parallelism              *int                `json:"parallelism,omitempty"`
	Profiles                 []scheduler.Profile `json:"profiles,omitempty"`
}

// LoadConfiguration reads and checks a --config file.
func LoadConfiguration(path string) (*Configuration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var c Configuration
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	if p := c.PercentageOfNodesToScore; p != nil && (*p < 0 || *p > 100) {
		return nil, fmt.Errorf("--config %s: percentageOfNodesToScore: Invalid value: %d: not in valid range [0-100]", path, *p)
	}
	return &c, nil
}

// NewCommand is the skiff-scheduler command line.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:           "skiff-scheduler",
		Short:         "Assign pending pods to nodes",
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

// Run runs the scheduler until ctx ends.
func Run(ctx context.Context, o Options) error {
	log, err := component.NewLogger(os.Stderr, o.LogFormat, o.Verbosity)
	if err != nil {
		return err
	}
	cfg := &Configuration{}
	if o.Config != "" {
		if cfg, err = LoadConfiguration(o.Config); err != nil {
			return err
		}
	}
	_, conn, err := config.Open(o.Kubeconfig)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := client.New(conn)
	reg := component.NewRegistry()
	sc := scheduler.Config{Client: c, Profiles: cfg.Profiles, Parallelism: o.Parallelism, Registerer: reg, Logger: log}
	if cfg.PercentageOfNodesToScore != nil {
		sc.PercentageOfNodesToScore = *cfg.PercentageOfNodesToScore
	}
	if cfg.Parallelism != nil {
		sc.Parallelism = *cfg.Parallelism
	}
	s, err := scheduler.New(sc)
	if err != nil {
		return err
	}
	g, _ := component.NewGroup(ctx)
	if o.MetricsBindAddress != "" {
		ms := &component.Server{Addr: o.MetricsBindAddress, Registry: reg, Logger: log, Profiling: o.Profiling}
		g.Go("metrics", ms.Start)
	}
	if !o.LeaderElect {
		g.Go("scheduler", s.Run)
		return g.Wait()
	}
	host, _ := os.Hostname()
	id := host + "_" + uuid.NewString()
	g.Go("leader-election", func(ctx context.Context) error {
		return leaderelection.Lead(ctx, leaderelection.Config{
			Client: c, Namespace: o.LeaseNamespace, Name: o.LeaseName, Identity: id,
			LeaseDuration: o.LeaseDuration, RenewDeadline: o.RenewDeadline, RetryPeriod: o.RetryPeriod, Logger: log,
		}, s.Run)
	})
	return g.Wait()
}
