package app

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"

	"skiff.dev/kubelet/internal/eviction"
	"skiff.dev/kubelet/internal/imagegc"
	"skiff.dev/kubelet/internal/logrotate"
	"skiff.dev/kubelet/internal/nodestatus"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Options are skiff-kubelet's flags, upstream's names and defaults.
type Options struct {
	Kubeconfig       string
	HostnameOverride string
	NodeIPs          []string

	ContainerRuntimeEndpoint string
	RuntimeRequestTimeout    time.Duration
	RootDir                  string
	PodLogsDir               string
	CgroupRoot               string
	CgroupDriver             string
	PodInfraContainerImage   string

	// The pod and QoS cgroups (upstream's --cgroups-per-qos,
	// --enforce-node-allocatable, --pod-max-pids).
	CgroupsPerQOS          bool
	EnforceNodeAllocatable []string
	PodMaxPids             int64

	ClusterDNS    []string
	ClusterDomain string
	ResolvConf    string

	SystemReserved string
	KubeReserved   string
	MaxPods        int

	NodeLeaseDurationSeconds  int32
	NodeStatusReportFrequency time.Duration
	NodeStatusUpdateFrequency time.Duration

	PodManifestPath string
	ImagePreloadDir string
	Port            int32
	// The kubelet API's address and TLS (upstream's --address,
	// --tls-cert-file, --tls-private-key-file, --client-ca-file).
	Address           string
	TLSCertFile       string
	TLSPrivateKeyFile string
	ClientCAFile      string
	CNIConfDir        string
	CNIBinDir         string

	// Image garbage collection and container log rotation, upstream's.
	ImageGCHighThresholdPercent int
	ImageGCLowThresholdPercent  int
	ImageMinimumGCAge           time.Duration
	ImageMaximumGCAge           time.Duration
	ContainerLogMaxSize         string
	ContainerLogMaxFiles        int
	ContainerLogMonitorInterval time.Duration

	// The eviction manager's thresholds, upstream's flags.
	EvictionHard                     string
	EvictionSoft                     string
	EvictionSoftGracePeriod          string
	EvictionMinimumReclaim           string
	EvictionPressureTransitionPeriod time.Duration
	EvictionMaxPodGracePeriod        int32

	MetricsBindAddress string
	LogFormat          string
	Verbosity          int
}

// NewOptions returns upstream's defaults.
func NewOptions() *Options {
	return &Options{
		ContainerRuntimeEndpoint:  "unix:///run/containerd/containerd.sock",
		RuntimeRequestTimeout:     2 * time.Minute,
		RootDir:                   "/var/lib/kubelet",
		PodLogsDir:                "/var/log/pods",
		CgroupRoot:                "/",
		CgroupDriver:              "cgroupfs",
		CgroupsPerQOS:             true,
		EnforceNodeAllocatable:    []string{"pods"},
		PodMaxPids:                -1,
		PodInfraContainerImage:    "skiff.local/pause:3.10",
		ClusterDomain:             "cluster.local",
		ResolvConf:                "/etc/resolv.conf",
		MaxPods:                   110,
		NodeLeaseDurationSeconds:  40,
		NodeStatusReportFrequency: 5 * time.Minute,
		NodeStatusUpdateFrequency: 10 * time.Second,
		Port:                      10250,
		Address:                   "0.0.0.0",
		CNIConfDir:                "/etc/cni/net.d",
		CNIBinDir:                 "/usr/lib/cni",
		MetricsBindAddress:        "127.0.0.1:10248",
		LogFormat:                 "text",

		ImageGCHighThresholdPercent: imagegc.DefaultHighThresholdPercent, ImageGCLowThresholdPercent: imagegc.DefaultLowThresholdPercent,
		ImageMinimumGCAge:   imagegc.DefaultMinAge,
		ContainerLogMaxSize: logrotate.DefaultMaxSize, ContainerLogMaxFiles: logrotate.DefaultMaxFiles,
		ContainerLogMonitorInterval: logrotate.DefaultMonitorInterval,

		EvictionHard: eviction.DefaultHard, EvictionPressureTransitionPeriod: eviction.DefaultPressureTransitionPeriod,
	}
}

// AddFlags registers the flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.IntVar(&o.ImageGCHighThresholdPercent, "image-gc-high-threshold", o.ImageGCHighThresholdPercent, "Image filesystem usage (percent) at which unused images are removed; 100 disables.")
	fs.IntVar(&o.ImageGCLowThresholdPercent, "image-gc-low-threshold", o.ImageGCLowThresholdPercent, "Image filesystem usage (percent) image garbage collection frees down to.")
	fs.DurationVar(&o.ImageMinimumGCAge, "image-minimum-gc-age", o.ImageMinimumGCAge, "Minimum age of an unused image before it is removed.")
	fs.DurationVar(&o.ImageMaximumGCAge, "image-maximum-gc-age", o.ImageMaximumGCAge, "Unused images older than this are removed whatever the usage (0 disables).")
	fs.StringVar(&o.ContainerLogMaxSize, "container-log-max-size", o.ContainerLogMaxSize, "Size (a quantity, e.g. 10Mi) at which a container's log is rotated.")
	fs.IntVar(&o.ContainerLogMaxFiles, "container-log-max-files", o.ContainerLogMaxFiles, "Files a container's log spans at most, the current one included (at least 2).")
	fs.DurationVar(&o.ContainerLogMonitorInterval, "container-log-monitor-interval", o.ContainerLogMonitorInterval, "How often containers' logs are checked for rotation.")
	fs.StringVar(&o.EvictionHard, "eviction-hard", o.EvictionHard, "Thresholds that evict pods at once when crossed, signal<quantity or signal<percentage (memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available); empty for none.")
	fs.StringVar(&o.EvictionSoft, "eviction-soft", o.EvictionSoft, "Thresholds that evict pods once crossed for their --eviction-soft-grace-period, as --eviction-hard.")
	fs.StringVar(&o.EvictionSoftGracePeriod, "eviction-soft-grace-period", o.EvictionSoftGracePeriod, "How long each soft threshold must be crossed before pods are evicted (memory.available=1m30s).")
	fs.StringVar(&o.EvictionMinimumReclaim, "eviction-minimum-reclaim", o.EvictionMinimumReclaim, "How much more than its threshold a signal must have again before the pressure ends (memory.available=0Mi,nodefs.available=500Mi).")
	fs.DurationVar(&o.EvictionPressureTransitionPeriod, "eviction-pressure-transition-period", o.EvictionPressureTransitionPeriod, "How long a pressure condition stays true after its signals were last under a threshold.")
	fs.Int32Var(&o.EvictionMaxPodGracePeriod, "eviction-max-pod-grace-period", o.EvictionMaxPodGracePeriod, "Longest grace period (seconds) of a pod evicted for a soft threshold; negative: the pod's own.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Client config file (default $SKIFFCONFIG, then ~/.skiff/config).")
	fs.StringVar(&o.HostnameOverride, "hostname-override", o.HostnameOverride, "The node's name and Hostname address (default: the host name, lowercased).")
	fs.StringSliceVar(&o.NodeIPs, "node-ip", o.NodeIPs, "The node's InternalIP addresses, one per IP family (default: an address of the default route's interface).")
	fs.StringVar(&o.ContainerRuntimeEndpoint, "container-runtime-endpoint", o.ContainerRuntimeEndpoint, "The CRI runtime's socket (unix:///path or /path).")
	fs.DurationVar(&o.RuntimeRequestTimeout, "runtime-request-timeout", o.RuntimeRequestTimeout, "Timeout of every CRI request but long-running ones (pulls, logs, exec).")
	fs.StringVar(&o.RootDir, "root-dir", o.RootDir, "Directory of the kubelet's files: pods' volumes, plugins' state.")
	fs.StringVar(&o.PodLogsDir, "pod-logs-dir", o.PodLogsDir, "Directory of the containers' log files (upstream's podLogsDir setting).")
	fs.StringVar(&o.CgroupRoot, "cgroup-root", o.CgroupRoot, "Cgroup under which the kubepods hierarchy lives.")
	fs.StringVar(&o.CgroupDriver, "cgroup-driver", o.CgroupDriver, "Cgroup driver: cgroupfs (systemd is not supported).")
	fs.BoolVar(&o.CgroupsPerQOS, "cgroups-per-qos", o.CgroupsPerQOS, "Make the kubepods cgroup hierarchy: a cgroup per QoS class and per pod, with the pods' limits; false puts the pods' containers directly under --cgroup-root.")
	fs.StringSliceVar(&o.EnforceNodeAllocatable, "enforce-node-allocatable", o.EnforceNodeAllocatable, "Where node allocatable is enforced: 'pods' (the kubepods cgroup gets capacity less --system-reserved and --kube-reserved), or empty or 'none'.")
	fs.Int64Var(&o.PodMaxPids, "pod-max-pids", o.PodMaxPids, "Processes a pod may run at most (its pod cgroup's pids limit); -1 is no limit.")
	fs.StringVar(&o.PodInfraContainerImage, "pod-infra-container-image", o.PodInfraContainerImage, "The sandbox (pause) image; kept from image garbage collection.")
	fs.StringSliceVar(&o.ClusterDNS, "cluster-dns", o.ClusterDNS, "Cluster DNS server addresses for pods with dnsPolicy ClusterFirst.")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", o.ClusterDomain, "The cluster's DNS domain, searched by pods after their namespace's.")
	fs.StringVar(&o.ResolvConf, "resolv-conf", o.ResolvConf, "Resolver file the pods' DNS configuration starts from (empty: none).")
	fs.StringVar(&o.SystemReserved, "system-reserved", o.SystemReserved, "Resources kept for the system, as cpu=100m,memory=100Mi,ephemeral-storage=1Gi.")
	fs.StringVar(&o.KubeReserved, "kube-reserved", o.KubeReserved, "Resources kept for Kubernetes daemons, as cpu=100m,memory=100Mi,ephemeral-storage=1Gi.")
	fs.IntVar(&o.MaxPods, "max-pods", o.MaxPods, "Number of pods the node runs at most.")
	fs.Int32Var(&o.NodeLeaseDurationSeconds, "node-lease-duration-seconds", o.NodeLeaseDurationSeconds, "Duration of the node's Lease, renewed every quarter of it.")
	fs.DurationVar(&o.NodeStatusReportFrequency, "node-status-report-frequency", o.NodeStatusReportFrequency, "How often the node's status is written when nothing changed.")
	fs.DurationVar(&o.NodeStatusUpdateFrequency, "node-status-update-frequency", o.NodeStatusUpdateFrequency, "How often the node's status is computed (and written if it changed).")
	fs.StringVar(&o.PodManifestPath, "pod-manifest-path", o.PodManifestPath, "Directory of static pod manifests, run without the apiserver.")
	fs.StringVar(&o.ImagePreloadDir, "image-preload-dir", o.ImagePreloadDir, "Directory of image tarballs imported into the runtime at start (air-gapped nodes).")
	fs.Int32Var(&o.Port, "port", o.Port, "Port of the kubelet's HTTPS API.")
	fs.StringVar(&o.Address, "address", o.Address, "The IP address the kubelet's HTTPS API listens on (0.0.0.0 for all).")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "Serving certificate of the kubelet API; empty generates a self-signed one in <root-dir>/pki.")
	fs.StringVar(&o.TLSPrivateKeyFile, "tls-private-key-file", o.TLSPrivateKeyFile, "Serving certificate's key.")
	fs.StringVar(&o.ClientCAFile, "client-ca-file", o.ClientCAFile, "CA bundle that signs the client certificates the kubelet API requires (empty: clients are not authenticated).")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", o.CNIConfDir, "Directory the node's CNI conflist is written to (the runtime's CNI conf_dir).")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", o.CNIBinDir, "Directory of the CNI plugin binaries.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Plain-HTTP address of /metrics, /healthz, /readyz (empty disables).")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "Log format: text or json.")
	fs.IntVarP(&o.Verbosity, "v", "v", o.Verbosity, "Log verbosity.")
}

// NodeName is --hostname-override, else the host name, lowercased and
// trimmed as upstream's GetHostname.
func (o *Options) NodeName() (string, error) {
	name := o.HostnameOverride
	if strings.TrimSpace(name) == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("--hostname-override: none given and the host name is unreadable: %w", err)
		}
		name = h
	}
	return strings.ToLower(strings.TrimSpace(name)), nil
}

// Validate checks the flags' values, naming the flag at fault, before
// anything connects.
func (o *Options) Validate() error {
	name, err := o.NodeName()
	if err != nil {
		return err
	}
	if err := imagegc.Validate(o.ImageGCHighThresholdPercent, o.ImageGCLowThresholdPercent, o.ImageMinimumGCAge, o.ImageMaximumGCAge); err != nil {
		return fmt.Errorf("--image-gc-high-threshold/--image-gc-low-threshold/--image-minimum-gc-age/--image-maximum-gc-age: %w", err)
	}
	if err := logrotate.Validate(o.ContainerLogMaxSize, o.ContainerLogMaxFiles); err != nil {
		return fmt.Errorf("--container-log-max-size/--container-log-max-files: %w", err)
	}
	if o.ContainerLogMonitorInterval < 3*time.Second { // upstream's minimum
		return fmt.Errorf("--container-log-monitor-interval: must be at least 3s, got %s", o.ContainerLogMonitorInterval)
	}
	if _, err := o.evictionThresholds(); err != nil {
		return err
	}
	if o.EvictionPressureTransitionPeriod < 0 {
		return fmt.Errorf("--eviction-pressure-transition-period: must not be negative, got %s", o.EvictionPressureTransitionPeriod)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("--hostname-override: node name %q: %s", name, strings.Join(errs, "; "))
	}
	if err := validateIPs(o.NodeIPs); err != nil {
		return fmt.Errorf("--node-ip: %w", err)
	}
	if _, err := socketPath(o.ContainerRuntimeEndpoint); err != nil {
		return fmt.Errorf("--container-runtime-endpoint: %w", err)
	}
	if o.RuntimeRequestTimeout <= 0 {
		return fmt.Errorf("--runtime-request-timeout: must be positive, got %s", o.RuntimeRequestTimeout)
	}
	for _, d := range []struct{ flag, path string }{
		{"root-dir", o.RootDir}, {"pod-logs-dir", o.PodLogsDir}, {"cgroup-root", o.CgroupRoot},
		{"cni-conf-dir", o.CNIConfDir}, {"cni-bin-dir", o.CNIBinDir},
	} {
		if !filepath.IsAbs(d.path) {
			return fmt.Errorf("--%s: %q is not an absolute path", d.flag, d.path)
		}
	}
	switch o.CgroupDriver {
	case "cgroupfs":
	case "systemd":
		return fmt.Errorf("--cgroup-driver: systemd is not supported; use cgroupfs")
	default:
		return fmt.Errorf("--cgroup-driver: %q is not a cgroup driver; use cgroupfs", o.CgroupDriver)
	}
	if err := validateEnforceNodeAllocatable(o.EnforceNodeAllocatable); err != nil {
		return fmt.Errorf("--enforce-node-allocatable: %w", err)
	}
	if o.enforcePods() && !o.CgroupsPerQOS {
		return fmt.Errorf("--enforce-node-allocatable: pods is not supported unless --cgroups-per-qos is true")
	}
	if o.PodMaxPids < -1 {
		return fmt.Errorf("--pod-max-pids: must be -1 (no limit) or more, got %d", o.PodMaxPids)
	}
	if o.PodInfraContainerImage == "" {
		return fmt.Errorf("--pod-infra-container-image: must not be empty")
	}
	for _, s := range o.ClusterDNS {
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("--cluster-dns: %q is not an IP address", s)
		}
	}
	if o.ClusterDomain != "" {
		if errs := validation.IsDNS1123Subdomain(o.ClusterDomain); len(errs) > 0 {
			return fmt.Errorf("--cluster-domain: %q: %s", o.ClusterDomain, strings.Join(errs, "; "))
		}
	}
	if _, err := nodestatus.ParseResourceList(o.SystemReserved); err != nil {
		return fmt.Errorf("--system-reserved: %w", err)
	}
	if _, err := nodestatus.ParseResourceList(o.KubeReserved); err != nil {
		return fmt.Errorf("--kube-reserved: %w", err)
	}
	if o.MaxPods < 1 {
		return fmt.Errorf("--max-pods: must be at least 1, got %d", o.MaxPods)
	}
	if o.NodeLeaseDurationSeconds <= 0 {
		return fmt.Errorf("--node-lease-duration-seconds: must be positive, got %d", o.NodeLeaseDurationSeconds)
	}
	if o.NodeStatusUpdateFrequency <= 0 {
		return fmt.Errorf("--node-status-update-frequency: must be positive, got %s", o.NodeStatusUpdateFrequency)
	}
	if o.NodeStatusReportFrequency <= 0 {
		return fmt.Errorf("--node-status-report-frequency: must be positive, got %s", o.NodeStatusReportFrequency)
	}
	if o.Port < 1 || o.Port > 65535 {
		return fmt.Errorf("--port: %d is not a port (1-65535)", o.Port)
	}
	if net.ParseIP(o.Address) == nil {
		return fmt.Errorf("--address: %q is not an IP address", o.Address)
	}
	if (o.TLSCertFile == "") != (o.TLSPrivateKeyFile == "") {
		return fmt.Errorf("--tls-cert-file and --tls-private-key-file: give both or neither")
	}
	for _, f := range []struct{ flag, path string }{{"tls-cert-file", o.TLSCertFile}, {"tls-private-key-file", o.TLSPrivateKeyFile}, {"client-ca-file", o.ClientCAFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("--%s: %w", f.flag, err)
		}
	}
	if o.MetricsBindAddress != "" {
		if _, _, err := net.SplitHostPort(o.MetricsBindAddress); err != nil {
			return fmt.Errorf("--metrics-bind-address: %q is not host:port", o.MetricsBindAddress)
		}
	}
	switch o.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format: %q: want text or json", o.LogFormat)
	}
	return nil
}

// validateEnforceNodeAllocatable is upstream's rule for the values Skiff
// supports: pods, or none alone. system-reserved and kube-reserved need
// cgroups of their own, which the kubelet does not make.
func validateEnforceNodeAllocatable(vals []string) error {
	for _, v := range vals {
		switch v {
		case "pods":
		case "none", "":
			if len(vals) > 1 {
				return fmt.Errorf("%q must not be given with other values", v)
			}
		case "system-reserved", "kube-reserved":
			return fmt.Errorf("%q is not supported (no --system-reserved-cgroup or --kube-reserved-cgroup); use pods", v)
		default:
			return fmt.Errorf("%q: want pods or none", v)
		}
	}
	return nil
}

// enforcePods says the kubepods cgroup is held to node allocatable rather
// than capacity.
func (o *Options) enforcePods() bool { return slices.Contains(o.EnforceNodeAllocatable, "pods") }

// validateIPs is upstream's --node-ip rule: addresses, at most one per
// family.
func validateIPs(ips []string) error {
	if len(ips) > 2 {
		return fmt.Errorf("at most two addresses (one IPv4, one IPv6), got %d", len(ips))
	}
	var fams []bool
	for _, s := range ips {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not an IP address", s)
		}
		if a.IsUnspecified() || a.IsLoopback() {
			return fmt.Errorf("%q cannot be a node's address", s)
		}
		fams = append(fams, a.Is4())
	}
	if len(fams) == 2 && fams[0] == fams[1] {
		return fmt.Errorf("%v: two addresses must be of different IP families", ips)
	}
	return nil
}

// socketPath is the file of a unix:// endpoint or a bare absolute path.
func socketPath(endpoint string) (string, error) {
	p := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		p = rest
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("%q: only unix:// endpoints are supported", endpoint)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%q is not an absolute socket path", endpoint)
	}
	return p, nil
}

// reserved is a --*-reserved value as the API's ResourceList.
func reserved(s string) map[string]*metav1.Quantity {
	l, _ := nodestatus.ParseResourceList(s) // Validate checked it
	out := map[string]*metav1.Quantity{}
	for k, v := range l {
		out[k] = &metav1.Quantity{String_: v.String()}
	}
	return out
}

func secondsDuration(s int32) time.Duration { return time.Duration(s) * time.Second }

// evictionThresholds parses the --eviction-* thresholds, naming the flag
// at fault.
func (o *Options) evictionThresholds() ([]eviction.Threshold, error) {
	hard, err := eviction.ParseStatements(o.EvictionHard)
	if err != nil {
		return nil, fmt.Errorf("--eviction-hard: %w", err)
	}
	soft, err := eviction.ParseStatements(o.EvictionSoft)
	if err != nil {
		return nil, fmt.Errorf("--eviction-soft: %w", err)
	}
	grace, err := eviction.ParseGracePeriods(o.EvictionSoftGracePeriod)
	if err != nil {
		return nil, fmt.Errorf("--eviction-soft-grace-period: %w", err)
	}
	reclaim, err := eviction.ParseMinimumReclaims(o.EvictionMinimumReclaim)
	if err != nil {
		return nil, fmt.Errorf("--eviction-minimum-reclaim: %w", err)
	}
	t, err := eviction.Thresholds(hard, soft, grace, reclaim)
	if err != nil {
		return nil, fmt.Errorf("--eviction-soft/--eviction-soft-grace-period: %w", err)
	}
	return t, nil
}
