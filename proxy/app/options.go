package app

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Options are skiff-proxy's flags, upstream's names and defaults.
type Options struct {
	Kubeconfig        string
	HostnameOverride  string
	ProxyMode         string
	ClusterCIDR       string
	NodePortAddresses []string
	MasqueradeAll     bool

	MetricsBindAddress string
	HealthzBindAddress string

	SyncPeriod    time.Duration
	MinSyncPeriod time.Duration
	IPVSScheduler string

	Cleanup bool

	LogFormat string
	Verbosity int
}

// NewOptions returns upstream's defaults.
func NewOptions() *Options {
	return &Options{ProxyMode: "nftables", MetricsBindAddress: "127.0.0.1:10249", HealthzBindAddress: "0.0.0.0:10256",
		SyncPeriod: 30 * time.Second, MinSyncPeriod: time.Second, IPVSScheduler: "rr", LogFormat: "text",
		NodePortAddresses: []string{"primary"}}
}

// AddFlags registers the flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Client config file (default $SKIFFCONFIG, then ~/.skiff/config).")
	fs.StringVar(&o.HostnameOverride, "hostname-override", o.HostnameOverride, "The node's name, as its Node object and EndpointSlices spell it (default: the host name).")
	fs.StringVar(&o.ProxyMode, "proxy-mode", o.ProxyMode, "Dataplane: nftables, or ipvs where the kernel has IPVS.")
	fs.StringVar(&o.ClusterCIDR, "cluster-cidr", o.ClusterCIDR, "The pods' CIDR (one per family, comma-separated): traffic to a ClusterIP from outside it is masqueraded.")
	fs.StringSliceVar(&o.NodePortAddresses, "nodeport-addresses", o.NodePortAddresses, "Which local addresses accept NodePort traffic: 'primary' (the node's IPs from its Node object) or CIDRs (0.0.0.0/0, ::/0: every address).")
	fs.BoolVar(&o.MasqueradeAll, "masquerade-all", o.MasqueradeAll, "Masquerade all traffic to ClusterIPs, not only what comes from outside --cluster-cidr.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Plain-HTTP address of /metrics (empty disables).")
	fs.StringVar(&o.HealthzBindAddress, "healthz-bind-address", o.HealthzBindAddress, "Address of /healthz and /livez, for load balancers and liveness probes (empty disables).")
	fs.DurationVar(&o.SyncPeriod, "sync-period", o.SyncPeriod, "Longest time between syncs; each checks the table was not changed behind our back. A full rewrite happens hourly.")
	fs.DurationVar(&o.MinSyncPeriod, "min-sync-period", o.MinSyncPeriod, "Shortest time between syncs once a burst of two is spent: changes arriving meanwhile are batched.")
	fs.StringVar(&o.IPVSScheduler, "ipvs-scheduler", o.IPVSScheduler, "IPVS scheduler (rr, wrr, lc, sh, ...) in --proxy-mode ipvs.")
	fs.BoolVar(&o.Cleanup, "cleanup", o.Cleanup, "Remove everything skiff-proxy programmed (its nftables tables, IPVS services and dummy interface) and exit.")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "Log format: text or json.")
	fs.IntVarP(&o.Verbosity, "v", "v", o.Verbosity, "Log verbosity.")
}

// Validate checks the flags, naming the one at fault.
func (o *Options) Validate() error {
	if o.Cleanup {
		return nil
	}
	switch o.ProxyMode {
	case "nftables", "ipvs":
	default:
		return fmt.Errorf("--proxy-mode: %q is not nftables or ipvs", o.ProxyMode)
	}
	if _, err := o.clusterCIDRs(); err != nil {
		return err
	}
	if _, _, err := o.nodePortAddresses(); err != nil {
		return err
	}
	for _, f := range []struct{ flag, v string }{{"metrics-bind-address", o.MetricsBindAddress}, {"healthz-bind-address", o.HealthzBindAddress}} {
		if f.v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(f.v); err != nil {
			return fmt.Errorf("--%s: %q is not host:port", f.flag, f.v)
		}
	}
	if o.SyncPeriod <= 0 {
		return fmt.Errorf("--sync-period: must be positive, got %s", o.SyncPeriod)
	}
	if o.MinSyncPeriod < 0 || o.MinSyncPeriod > o.SyncPeriod {
		return fmt.Errorf("--min-sync-period: must lie between 0 and --sync-period (%s), got %s", o.SyncPeriod, o.MinSyncPeriod)
	}
	if o.IPVSScheduler == "" {
		return fmt.Errorf("--ipvs-scheduler: must not be empty")
	}
	if o.HostnameOverride != "" && strings.ContainsAny(o.HostnameOverride, " /") {
		return fmt.Errorf("--hostname-override: %q is not a node name", o.HostnameOverride)
	}
	return nil
}

func (o *Options) clusterCIDRs() ([]netip.Prefix, error) {
	var out []netip.Prefix
	families := map[bool]bool{}
	for _, s := range strings.Split(o.ClusterCIDR, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--cluster-cidr: %q is not a CIDR", s)
		}
		if families[p.Addr().Is4()] {
			return nil, fmt.Errorf("--cluster-cidr: at most one CIDR per IP family, got %q", o.ClusterCIDR)
		}
		families[p.Addr().Is4()] = true
		out = append(out, p.Masked())
	}
	return out, nil
}

// nodePortAddresses is "primary", or CIDRs.
func (o *Options) nodePortAddresses() (primary bool, cidrs []netip.Prefix, err error) {
	for _, s := range o.NodePortAddresses {
		s = strings.TrimSpace(s)
		if s == "primary" {
			primary = true
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return false, nil, fmt.Errorf("--nodeport-addresses: %q is neither 'primary' nor a CIDR", s)
		}
		cidrs = append(cidrs, p.Masked())
	}
	if primary && len(cidrs) > 0 {
		return false, nil, fmt.Errorf("--nodeport-addresses: 'primary' cannot be combined with CIDRs")
	}
	if !primary && len(cidrs) == 0 {
		primary = true
	}
	return primary, cidrs, nil
}

func (o *Options) hostname() (string, error) {
	if o.HostnameOverride != "" {
		return strings.ToLower(o.HostnameOverride), nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("--hostname-override not set and the host name is unknown: %w", err)
	}
	return strings.ToLower(h), nil
}
