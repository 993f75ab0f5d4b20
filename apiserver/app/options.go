// Package app assembles skiff-apiserver: certificates, etcd (embedded or
// external), storage, the registry and its watch caches, the gRPC service and
// the metrics/health endpoint. It is embeddable: tests and skiff-local run it
// in-process on 127.0.0.1:0.
package app

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"skiff.dev/apiserver/internal/serviceaccount"
	"skiff.dev/apiserver/internal/servicealloc"
)

// Options are skiff-apiserver's flags (upstream's names where upstream has one).
type Options struct {
	DataDir                string
	BindAddress            string
	SecurePort             int
	MetricsBindAddress     string
	EtcdServers            []string
	EtcdPrefix             string
	EtcdCompactionInterval time.Duration
	TLSCertFile            string
	TLSPrivateKeyFile      string
	ClientCAFile           string
	TLSSANs                []string
	// How the apiserver reaches kubelets for logs, exec, attach and
	// port-forward, upstream's flags.
	KubeletClientCertificate    string
	KubeletClientKey            string
	KubeletCertificateAuthority string
	LogFormat                   string
	Verbosity                   int
	ShutdownTimeout             time.Duration
	Profiling                   bool
	// Service-account tokens, upstream's flags: the key that signs them,
	// the keys that verify them, who issues them and who they are for.
	ServiceAccountSigningKeyFile string
	ServiceAccountKeyFiles       []string
	ServiceAccountIssuers        []string
	APIAudiences                 []string
	// DisableAdmissionPlugins turns off default-on plugins by upstream's
	// names (upstream's integration tests disable ServiceAccount, as
	// apitest does: they run no controller-manager to create service accounts).
	DisableAdmissionPlugins []string
	// DefaultTolerationSeconds' defaults, upstream's flags.
	DefaultNotReadyTolerationSeconds    int64
	DefaultUnreachableTolerationSeconds int64
	// Services, upstream's flags: the ranges cluster IPs and node ports are
	// drawn from, and where pods reach this apiserver.
	ServiceClusterIPRange  string
	ServiceNodePortRange   string
	AdvertiseAddress       string
	EndpointReconcilerType string
	// EndpointLeaseTTL and EndpointReconcileInterval time the kubernetes
	// Service's endpoints: how long a stopped apiserver stays listed, how
	// often a live one says it is.
	EndpointLeaseTTL          time.Duration
	EndpointReconcileInterval time.Duration
	// ServiceAllocationRepairInterval is how often the cluster IP and node
	// port allocations are checked against the Services (upstream: 3m).
	ServiceAllocationRepairInterval time.Duration
	// MetricResolution is how often the built-in metrics.k8s.io server
	// scrapes the kubelets (metrics-server's --metric-resolution); 0 turns
	// metrics.k8s.io off.
	MetricResolution time.Duration
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		DataDir:                "/var/lib/skiff",
		BindAddress:            "0.0.0.0",
		SecurePort:             6443,
		MetricsBindAddress:     "127.0.0.1:6080",
		EtcdPrefix:             "/registry",
		EtcdCompactionInterval: 5 * time.Minute,
		LogFormat:              "text",
		ShutdownTimeout:        15 * time.Second,
		ServiceAccountIssuers:  []string{serviceaccount.DefaultIssuer},

		DefaultNotReadyTolerationSeconds:    300,
		DefaultUnreachableTolerationSeconds: 300,

		ServiceClusterIPRange:           "10.96.0.0/12",
		ServiceNodePortRange:            "30000-32767",
		EndpointReconcilerType:          "lease",
		EndpointLeaseTTL:                15 * time.Second,
		EndpointReconcileInterval:       5 * time.Second,
		ServiceAllocationRepairInterval: 3 * time.Minute,
		MetricResolution:                15 * time.Second,
	}
}

// AddFlags registers the flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.Int64Var(&o.DefaultNotReadyTolerationSeconds, "default-not-ready-toleration-seconds", o.DefaultNotReadyTolerationSeconds,
		"The tolerationSeconds of the node.kubernetes.io/not-ready:NoExecute toleration added to every pod without one.")
	fs.Int64Var(&o.DefaultUnreachableTolerationSeconds, "default-unreachable-toleration-seconds", o.DefaultUnreachableTolerationSeconds,
		"The tolerationSeconds of the node.kubernetes.io/unreachable:NoExecute toleration added to every pod without one.")
	fs.StringVar(&o.ServiceAccountSigningKeyFile, "service-account-signing-key-file", o.ServiceAccountSigningKeyFile,
		"PEM private key (RSA or ECDSA) that signs service-account tokens; empty uses <data-dir>/pki/sa.key, generated if missing.")
	fs.StringSliceVar(&o.ServiceAccountKeyFiles, "service-account-key-file", o.ServiceAccountKeyFiles,
		"PEM files of public keys (or certificates, or private keys) that verify service-account tokens (repeatable); the signing key is always one.")
	fs.StringSliceVar(&o.ServiceAccountIssuers, "service-account-issuer", o.ServiceAccountIssuers,
		"The iss claim of issued tokens (repeatable: the first signs, all are accepted, for migrating issuers).")
	fs.StringSliceVar(&o.APIAudiences, "api-audiences", o.APIAudiences,
		"Audiences a token must carry to authenticate to the API, and the default audiences of token requests; empty means the first --service-account-issuer.")
	fs.StringSliceVar(&o.DisableAdmissionPlugins, "disable-admission-plugins", o.DisableAdmissionPlugins,
		"Admission plugins to turn off, comma separated, of: "+strings.Join(admissionPlugins, ", ")+".")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "Directory for the embedded etcd, generated certificates and admin.conf.")
	fs.StringVar(&o.BindAddress, "bind-address", o.BindAddress, "The IP address on which to listen for the --secure-port port.")
	fs.IntVar(&o.SecurePort, "secure-port", o.SecurePort, "The port on which to serve the gRPC API with TLS (0 picks a free port).")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Plain-HTTP address of /metrics, /healthz, /livez and /readyz (empty disables).")
	fs.StringSliceVar(&o.EtcdServers, "etcd-servers", o.EtcdServers, "External etcd endpoints, comma separated; empty runs an embedded etcd in <data-dir>/etcd.")
	fs.StringVar(&o.EtcdPrefix, "etcd-prefix", o.EtcdPrefix, "The prefix of every key in etcd.")
	fs.DurationVar(&o.EtcdCompactionInterval, "etcd-compaction-interval", o.EtcdCompactionInterval, "The interval of etcd compaction requests (0 disables).")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "Serving certificate; empty uses <data-dir>/pki/apiserver.crt, generated if missing.")
	fs.StringVar(&o.TLSPrivateKeyFile, "tls-private-key-file", o.TLSPrivateKeyFile, "Serving certificate's key.")
	fs.StringVar(&o.ClientCAFile, "client-ca-file", o.ClientCAFile, "CA bundle that signs client certificates; empty uses <data-dir>/pki/ca.crt.")
	fs.StringSliceVar(&o.TLSSANs, "tls-san", o.TLSSANs, "Extra names or IPs for the generated serving certificate (repeatable).")
	fs.StringVar(&o.KubeletClientCertificate, "kubelet-client-certificate", o.KubeletClientCertificate,
		"Client certificate presented to kubelets; empty uses <data-dir>/pki/apiserver-kubelet-client.crt, generated if missing.")
	fs.StringVar(&o.KubeletClientKey, "kubelet-client-key", o.KubeletClientKey, "The kubelet client certificate's key.")
	fs.StringVar(&o.KubeletCertificateAuthority, "kubelet-certificate-authority", o.KubeletCertificateAuthority,
		"CA bundle that verifies kubelets' serving certificates; empty does not verify them (kubelets serve self-signed ones by default).")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "Log format: text or json.")
	fs.IntVarP(&o.Verbosity, "v", "v", o.Verbosity, "Log verbosity (0 info, 1+ debug).")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "How long SIGTERM waits for in-flight requests.")
	fs.BoolVar(&o.Profiling, "profiling", o.Profiling, "Serve /debug/pprof/ on the metrics address. Off by default: that address is plain HTTP with no authentication.")
	fs.StringVar(&o.ServiceClusterIPRange, "service-cluster-ip-range", o.ServiceClusterIPRange,
		"A CIDR notation IP range from which to assign service cluster IPs, or two of different IP families, comma separated, for dual-stack (the first is the default family). At most 2^20 addresses each.")
	fs.StringVar(&o.ServiceNodePortRange, "service-node-port-range", o.ServiceNodePortRange,
		"A port range to reserve for services with NodePort visibility, inclusive at both ends: 30000-32767 or 30000+2767.")
	fs.StringVar(&o.AdvertiseAddress, "advertise-address", o.AdvertiseAddress,
		"The IP address on which to advertise the apiserver to members of the cluster (the kubernetes Service's endpoints); must be reachable by pods. Empty: --bind-address when it is one non-loopback address, else the host's default interface.")
	fs.StringVar(&o.EndpointReconcilerType, "endpoint-reconciler-type", o.EndpointReconcilerType,
		"How the kubernetes Service's endpoints are kept: lease (the only type).")
	fs.DurationVar(&o.EndpointLeaseTTL, "endpoint-lease-ttl", o.EndpointLeaseTTL,
		"How long a stopped apiserver stays among the kubernetes Service's endpoints (its etcd lease).")
	fs.DurationVar(&o.EndpointReconcileInterval, "endpoint-reconcile-interval", o.EndpointReconcileInterval,
		"How often an apiserver renews its endpoint lease and reconciles the kubernetes Service's endpoints; below --endpoint-lease-ttl.")
	fs.DurationVar(&o.MetricResolution, "metric-resolution", o.MetricResolution,
		"The interval at which the built-in metrics.k8s.io server scrapes the kubelets' /metrics/resource (metrics-server's flag); 0 disables metrics.k8s.io.")
	fs.DurationVar(&o.ServiceAllocationRepairInterval, "service-allocation-repair-interval", o.ServiceAllocationRepairInterval,
		"How often cluster IP and node port allocations are checked against the Services, and leaks, gaps and duplicates repaired or reported.")
}

// Validate reports every bad flag at once.
func (o *Options) Validate() error {
	var errs []error
	if o.DataDir == "" {
		errs = append(errs, errors.New("--data-dir: must not be empty"))
	}
	if o.DefaultNotReadyTolerationSeconds < 0 {
		errs = append(errs, fmt.Errorf("--default-not-ready-toleration-seconds: must not be negative, got %d", o.DefaultNotReadyTolerationSeconds))
	}
	if o.DefaultUnreachableTolerationSeconds < 0 {
		errs = append(errs, fmt.Errorf("--default-unreachable-toleration-seconds: must not be negative, got %d", o.DefaultUnreachableTolerationSeconds))
	}
	if len(o.ServiceAccountIssuers) == 0 || o.ServiceAccountIssuers[0] == "" {
		errs = append(errs, errors.New("--service-account-issuer: must not be empty"))
	}
	for _, p := range o.DisableAdmissionPlugins {
		if !slices.Contains(admissionPlugins, p) {
			errs = append(errs, fmt.Errorf("--disable-admission-plugins: unknown plugin %q (known: %s)", p, strings.Join(admissionPlugins, ", ")))
		}
	}
	if net.ParseIP(o.BindAddress) == nil {
		errs = append(errs, fmt.Errorf("--bind-address: %q is not an IP address", o.BindAddress))
	}
	if o.SecurePort < 0 || o.SecurePort > 65535 {
		errs = append(errs, fmt.Errorf("--secure-port: %d is not in 0-65535", o.SecurePort))
	}
	if (o.TLSCertFile == "") != (o.TLSPrivateKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-private-key-file: give both or neither"))
	}
	if o.TLSCertFile != "" && o.ClientCAFile == "" {
		errs = append(errs, errors.New("--client-ca-file: required with --tls-cert-file"))
	}
	if o.MetricResolution < 0 || (o.MetricResolution > 0 && o.MetricResolution < time.Second) {
		errs = append(errs, fmt.Errorf("--metric-resolution: %v must be 0 (off) or at least 1s", o.MetricResolution))
	}
	if (o.KubeletClientCertificate == "") != (o.KubeletClientKey == "") {
		errs = append(errs, errors.New("--kubelet-client-certificate and --kubelet-client-key: give both or neither"))
	}
	if !strings.HasPrefix(o.EtcdPrefix, "/") {
		errs = append(errs, fmt.Errorf("--etcd-prefix: %q must start with /", o.EtcdPrefix))
	}
	if o.LogFormat != "text" && o.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format: %q is not text or json", o.LogFormat))
	}
	if _, err := o.serviceRanges(); err != nil {
		errs = append(errs, err)
	}
	if _, err := o.nodePortRange(); err != nil {
		errs = append(errs, err)
	}
	if o.AdvertiseAddress != "" {
		if a, err := netip.ParseAddr(o.AdvertiseAddress); err != nil {
			errs = append(errs, fmt.Errorf("--advertise-address: %q is not an IP address", o.AdvertiseAddress))
		} else if err := checkAdvertise(a.Unmap()); err != nil {
			errs = append(errs, err)
		}
	}
	if o.EndpointReconcilerType != "lease" {
		errs = append(errs, fmt.Errorf("--endpoint-reconciler-type: %q is not supported (supported: lease)", o.EndpointReconcilerType))
	}
	if o.EndpointReconcileInterval <= 0 || o.EndpointLeaseTTL <= o.EndpointReconcileInterval {
		errs = append(errs, fmt.Errorf("--endpoint-reconcile-interval: %v must be positive and below --endpoint-lease-ttl (%v)", o.EndpointReconcileInterval, o.EndpointLeaseTTL))
	}
	if o.ServiceAllocationRepairInterval <= 0 {
		errs = append(errs, fmt.Errorf("--service-allocation-repair-interval: %v must be positive", o.ServiceAllocationRepairInterval))
	}
	return errors.Join(errs...)
}

func (o *Options) serviceRanges() ([]servicealloc.IPRange, error) {
	r, err := servicealloc.ParseIPRanges(strings.Split(o.ServiceClusterIPRange, ","))
	if err != nil {
		return nil, fmt.Errorf("--service-cluster-ip-range: %w", err)
	}
	return r, nil
}

func (o *Options) nodePortRange() (servicealloc.PortRange, error) {
	r, err := servicealloc.ParsePortRange(o.ServiceNodePortRange)
	if err != nil {
		return r, fmt.Errorf("--service-node-port-range: %w", err)
	}
	return r, nil
}

// apiAudiences are --api-audiences, else the signing issuer, as upstream.
func (o *Options) apiAudiences() []string {
	if len(o.APIAudiences) > 0 {
		return o.APIAudiences
	}
	return o.ServiceAccountIssuers[:1]
}

func (o *Options) secureAddr() string {
	return net.JoinHostPort(o.BindAddress, strconv.Itoa(o.SecurePort))
}
