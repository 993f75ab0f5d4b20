package app

import (
	"fmt"
	"net"
	"time"

	"github.com/spf13/pflag"

	"skiff.dev/controller-manager/internal/controllers"
	"skiff.dev/controller-manager/internal/manager"
)

// Options are skiff-controller-manager's flags, upstream's names and
// defaults.
type Options struct {
	Kubeconfig  string
	Controllers []string

	LeaderElect    bool
	LeaseNamespace string
	LeaseName      string
	LeaseDuration  time.Duration
	RenewDeadline  time.Duration
	RetryPeriod    time.Duration

	MetricsBindAddress string
	Profiling          bool
	RootCAFile         string
	LogFormat          string
	Verbosity          int

	// Worker counts by controller alias.
	ConcurrentSyncs map[string]*int

	NodeMonitorGracePeriod    time.Duration
	NodeMonitorPeriod         time.Duration
	NodeStartupGracePeriod    time.Duration
	NodeEvictionRate          float64
	SecondaryNodeEvictionRate float64
	LargeClusterSizeThreshold int32
	UnhealthyZoneThreshold    float64

	ClusterCIDR       string
	AllocateNodeCIDRs bool
	NodeCIDRMaskSize  int

	TerminatedPodGCThreshold int
	MaxEndpointsPerSlice     int

	ResourceQuotaSyncPeriod time.Duration
	HPA                     controllers.HPAOptions
}

// concurrencyFlags are upstream's --concurrent-* flags: the controller they
// size and the default.
var concurrencyFlags = []struct {
	flag, controller string
	def              int
}{
	{"concurrent-deployment-syncs", "deployment", 5},
	{"concurrent-replicaset-syncs", "replicaset", 5},
	{"concurrent-rc-syncs", "replicationcontroller", 5},
	{"concurrent-gc-syncs", "garbagecollector", 20},
	{"concurrent-namespace-syncs", "namespace", 10},
	{"concurrent-endpoint-syncs", "endpoint", 5},
	{"concurrent-service-endpoint-syncs", "endpointslice", 5},
	{"concurrent-cron-job-syncs", "cronjob", 5},
	{"concurrent-daemonset-syncs", "daemonset", 2},
	{"concurrent-statefulset-syncs", "statefulset", 5},
	{"concurrent-job-syncs", "job", 5},
	{"concurrent-ttl-after-finished-syncs", "ttl-after-finished", 5},
	{"concurrent-resource-quota-syncs", "resourcequota", 5},
	{"concurrent-horizontal-pod-autoscaler-syncs", "horizontalpodautoscaler", 5},
}

// NewOptions returns upstream's defaults.
func NewOptions() *Options {
	o := &Options{
		Controllers: []string{"*"},
		LeaderElect: true, LeaseNamespace: "kube-system", LeaseName: "kube-controller-manager",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		MetricsBindAddress: "127.0.0.1:10257", LogFormat: "text",
		ConcurrentSyncs:        map[string]*int{},
		NodeMonitorGracePeriod: 40 * time.Second, NodeMonitorPeriod: 5 * time.Second, NodeStartupGracePeriod: time.Minute,
		NodeEvictionRate: 0.1, SecondaryNodeEvictionRate: 0.01, LargeClusterSizeThreshold: 50, UnhealthyZoneThreshold: 0.55,
		ClusterCIDR: "10.244.0.0/16", NodeCIDRMaskSize: 24,
		TerminatedPodGCThreshold: 12500, MaxEndpointsPerSlice: 100,
		ResourceQuotaSyncPeriod: 5 * time.Minute,
		HPA: controllers.HPAOptions{SyncPeriod: 15 * time.Second, Tolerance: 0.1, DownscaleStabilization: 5 * time.Minute,
			CPUInitializationPeriod: 5 * time.Minute, InitialReadinessDelay: 30 * time.Second},
	}
	for _, f := range concurrencyFlags {
		n := f.def
		o.ConcurrentSyncs[f.controller] = &n
	}
	return o
}

// AddFlags registers the flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Client config file (default $SKIFFCONFIG, then ~/.skiff/config).")
	fs.StringSliceVar(&o.Controllers, "controllers", o.Controllers, "Controllers to run: '*' enables every controller on by default, 'foo' enables foo, '-foo' disables foo.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect a leader among replicas on a Lease before running controllers.")
	fs.StringVar(&o.LeaseNamespace, "leader-elect-resource-namespace", o.LeaseNamespace, "Namespace of the leader election Lease.")
	fs.StringVar(&o.LeaseName, "leader-elect-resource-name", o.LeaseName, "Name of the leader election Lease.")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", o.LeaseDuration, "How long a lease holds without renewal.")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", o.RenewDeadline, "How long the leader retries renewing before giving up.")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", o.RetryPeriod, "How often candidates try to acquire or renew.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Plain-HTTP address of /metrics, /healthz, /readyz (empty disables).")
	fs.BoolVar(&o.Profiling, "profiling", o.Profiling, "Serve /debug/pprof/ on the metrics address. Off by default: that address is plain HTTP with no authentication.")
	fs.StringVar(&o.RootCAFile, "root-ca-file", o.RootCAFile, "CA bundle published to every namespace as kube-root-ca.crt (default: the CA of the client config).")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "Log format: text or json.")
	fs.IntVarP(&o.Verbosity, "v", "v", o.Verbosity, "Log verbosity.")
	for _, f := range concurrencyFlags {
		fs.IntVar(o.ConcurrentSyncs[f.controller], f.flag, *o.ConcurrentSyncs[f.controller],
			fmt.Sprintf("How many %s objects are synced at once.", f.controller))
	}
	fs.DurationVar(&o.NodeMonitorGracePeriod, "node-monitor-grace-period", o.NodeMonitorGracePeriod, "How long a node may go without renewing its Lease before it is marked unhealthy.")
	fs.DurationVar(&o.NodeMonitorPeriod, "node-monitor-period", o.NodeMonitorPeriod, "How often node health is checked.")
	fs.DurationVar(&o.NodeStartupGracePeriod, "node-startup-grace-period", o.NodeStartupGracePeriod, "How long a new node may go unready before it is marked unhealthy.")
	fs.Float64Var(&o.NodeEvictionRate, "node-eviction-rate", o.NodeEvictionRate, "Nodes per second whose pods are evicted when a zone is healthy.")
	fs.Float64Var(&o.SecondaryNodeEvictionRate, "secondary-node-eviction-rate", o.SecondaryNodeEvictionRate, "Nodes per second whose pods are evicted when a zone is unhealthy.")
	fs.Int32Var(&o.LargeClusterSizeThreshold, "large-cluster-size-threshold", o.LargeClusterSizeThreshold, "Zones with at most this many nodes stop evicting when unhealthy.")
	fs.Float64Var(&o.UnhealthyZoneThreshold, "unhealthy-zone-threshold", o.UnhealthyZoneThreshold, "Fraction of not-ready nodes that makes a zone unhealthy.")
	fs.StringVar(&o.ClusterCIDR, "cluster-cidr", o.ClusterCIDR, "CIDR range of the cluster's pods.")
	fs.BoolVar(&o.AllocateNodeCIDRs, "allocate-node-cidrs", o.AllocateNodeCIDRs, "Give every Node a podCIDR from --cluster-cidr.")
	fs.IntVar(&o.NodeCIDRMaskSize, "node-cidr-mask-size", o.NodeCIDRMaskSize, "Prefix length of each node's podCIDR.")
	fs.IntVar(&o.MaxEndpointsPerSlice, "max-endpoints-per-slice", o.MaxEndpointsPerSlice, "Endpoints in one EndpointSlice at most (1-1000).")
	fs.IntVar(&o.TerminatedPodGCThreshold, "terminated-pod-gc-threshold", o.TerminatedPodGCThreshold, "Terminated pods kept before the pod garbage collector deletes the oldest (0 disables).")
	fs.DurationVar(&o.ResourceQuotaSyncPeriod, "resource-quota-sync-period", o.ResourceQuotaSyncPeriod, "Period for recounting every quota's usage.")
	fs.DurationVar(&o.HPA.SyncPeriod, "horizontal-pod-autoscaler-sync-period", o.HPA.SyncPeriod, "Period for syncing the number of pods in a horizontal pod autoscaler.")
	fs.Float64Var(&o.HPA.Tolerance, "horizontal-pod-autoscaler-tolerance", o.HPA.Tolerance, "The minimum change (from 1.0) in the desired-to-actual metrics ratio for the autoscaler to act.")
	fs.DurationVar(&o.HPA.DownscaleStabilization, "horizontal-pod-autoscaler-downscale-stabilization", o.HPA.DownscaleStabilization, "How far back the autoscaler looks at its recommendations before scaling down.")
	fs.DurationVar(&o.HPA.CPUInitializationPeriod, "horizontal-pod-autoscaler-cpu-initialization-period", o.HPA.CPUInitializationPeriod, "After a pod starts, how long its CPU samples may be skipped.")
	fs.DurationVar(&o.HPA.InitialReadinessDelay, "horizontal-pod-autoscaler-initial-readiness-delay", o.HPA.InitialReadinessDelay, "After a pod starts, how long readiness changes count as its first readiness.")
}

// Validate checks the flags' values, naming the flag at fault, before
// anything connects.
func (o *Options) Validate() error {
	if _, err := manager.Select(o.Controllers, manager.Available()); err != nil {
		return err
	}
	for _, f := range concurrencyFlags {
		if *o.ConcurrentSyncs[f.controller] < 1 {
			return fmt.Errorf("--%s: must be at least 1, got %d", f.flag, *o.ConcurrentSyncs[f.controller])
		}
	}
	if o.NodeMonitorGracePeriod <= 0 {
		return fmt.Errorf("--node-monitor-grace-period: must be positive, got %s", o.NodeMonitorGracePeriod)
	}
	if o.NodeMonitorPeriod <= 0 {
		return fmt.Errorf("--node-monitor-period: must be positive, got %s", o.NodeMonitorPeriod)
	}
	if o.MaxEndpointsPerSlice < 1 || o.MaxEndpointsPerSlice > 1000 {
		return fmt.Errorf("--max-endpoints-per-slice: must lie between 1 and 1000, got %d", o.MaxEndpointsPerSlice)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"resource-quota-sync-period", o.ResourceQuotaSyncPeriod}, {"horizontal-pod-autoscaler-sync-period", o.HPA.SyncPeriod}} {
		if d.v <= 0 {
			return fmt.Errorf("--%s: must be positive, got %s", d.flag, d.v)
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"horizontal-pod-autoscaler-downscale-stabilization", o.HPA.DownscaleStabilization},
		{"horizontal-pod-autoscaler-cpu-initialization-period", o.HPA.CPUInitializationPeriod},
		{"horizontal-pod-autoscaler-initial-readiness-delay", o.HPA.InitialReadinessDelay}} {
		if d.v < 0 {
			return fmt.Errorf("--%s: must not be negative, got %s", d.flag, d.v)
		}
	}
	if o.HPA.Tolerance < 0 {
		return fmt.Errorf("--horizontal-pod-autoscaler-tolerance: must not be negative, got %v", o.HPA.Tolerance)
	}
	if o.TerminatedPodGCThreshold < 0 {
		return fmt.Errorf("--terminated-pod-gc-threshold: must not be negative, got %d", o.TerminatedPodGCThreshold)
	}
	if o.AllocateNodeCIDRs {
		_, n, err := net.ParseCIDR(o.ClusterCIDR)
		if err != nil {
			return fmt.Errorf("--cluster-cidr: %q is not a CIDR", o.ClusterCIDR)
		}
		ones, bits := n.Mask.Size()
		if o.NodeCIDRMaskSize < ones || o.NodeCIDRMaskSize > bits {
			return fmt.Errorf("--node-cidr-mask-size: %d must lie between the cluster CIDR's prefix (%d) and %d", o.NodeCIDRMaskSize, ones, bits)
		}
	}
	return nil
}

// ControllerOptions are the values controllers read.
func (o *Options) ControllerOptions(rootCA []byte) controllers.Options {
	cs := map[string]int{}
	for k, v := range o.ConcurrentSyncs {
		cs[k] = *v
	}
	return controllers.Options{
		ConcurrentSyncs:        cs,
		NodeMonitorGracePeriod: o.NodeMonitorGracePeriod, NodeMonitorPeriod: o.NodeMonitorPeriod,
		NodeStartupGracePeriod: o.NodeStartupGracePeriod,
		NodeEvictionRate:       o.NodeEvictionRate, SecondaryNodeEvictionRate: o.SecondaryNodeEvictionRate,
		LargeClusterSizeThreshold: o.LargeClusterSizeThreshold, UnhealthyZoneThreshold: o.UnhealthyZoneThreshold,
		ClusterCIDR: o.ClusterCIDR, AllocateNodeCIDRs: o.AllocateNodeCIDRs, NodeCIDRMaskSize: o.NodeCIDRMaskSize,
		TerminatedPodGCThreshold: o.TerminatedPodGCThreshold,
		MaxEndpointsPerSlice:     o.MaxEndpointsPerSlice,
		RootCA:                   rootCA,
		ResourceQuotaSyncPeriod:  o.ResourceQuotaSyncPeriod,
		HPA:                      o.HPA,
	}
}
