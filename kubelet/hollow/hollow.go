// Package hollow runs many simulated nodes in one process, kubemark's
// hollow nodes, for scale tests of the control plane: each is a real
// kubelet (kubelet/app's New: registration, node status and Lease, the
// field-selected pod informer, pod workers, PLEG and pod status) over an
// in-memory CRI runtime of its own, and all of them share one client, so
// one gRPC connection to the apiserver.
//
// A hollow node differs from a real one only below the CRI: its sandboxes
// and containers are cri-api's fakes (they start at once and run until
// stopped), its addresses come from its podCIDR without CNI, and its machine
// is fixed by Options (4 CPUs, 16Gi, 110 pods unless told otherwise). It
// serves no kubelet API (logs, exec and port-forward are not simulated).
package hollow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"skiff.dev/client"
	"skiff.dev/client/component"
	"skiff.dev/kubelet/app"
	"skiff.dev/kubelet/internal/nodestatus"
)

// Options are skiff-hollow-nodes' flags.
type Options struct {
	Kubeconfig string
	// Nodes is how many hollow nodes run (--hollow-nodes).
	Nodes int
	// NamePrefix names them: <prefix>0 … <prefix>N-1.
	NamePrefix string
	// The machine every node reports, as kubemark's fake cAdvisor does.
	CPU              int
	Memory           string
	EphemeralStorage string
	MaxPods          int
	// RootDir holds each node's kubelet directory (<root>/<node>: volumes,
	// /etc/hosts files, logs, CNI conflist); empty is a temporary directory
	// that Run removes when it returns.
	RootDir                   string
	NodeStatusUpdateFrequency time.Duration
	MetricsBindAddress        string
	LogFormat                 string
	Verbosity                 int
}

// NewOptions returns the defaults: 10 nodes named hollow-node-<i>, each
// 4 CPUs, 16Gi of memory and 110 pods.
func NewOptions() *Options {
	return &Options{
		Nodes:                     10,
		NamePrefix:                "hollow-node-",
		CPU:                       4,
		Memory:                    "16Gi",
		EphemeralStorage:          "100Gi",
		MaxPods:                   110,
		NodeStatusUpdateFrequency: 10 * time.Second,
		MetricsBindAddress:        "127.0.0.1:10248",
		LogFormat:                 "text",
	}
}

// AddFlags registers the flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Client config file (default $SKIFFCONFIG, then ~/.skiff/config).")
	fs.IntVar(&o.Nodes, "hollow-nodes", o.Nodes, "Number of hollow nodes to run.")
	fs.StringVar(&o.NamePrefix, "name-prefix", o.NamePrefix, "Prefix of the nodes' names, followed by their index from 0.")
	fs.IntVar(&o.CPU, "node-cpu", o.CPU, "CPUs each node reports.")
	fs.StringVar(&o.Memory, "node-memory", o.Memory, "Memory each node reports.")
	fs.StringVar(&o.EphemeralStorage, "node-ephemeral-storage", o.EphemeralStorage, "Ephemeral storage each node reports.")
	fs.IntVar(&o.MaxPods, "max-pods", o.MaxPods, "Number of pods each node runs at most.")
	fs.StringVar(&o.RootDir, "root-dir", o.RootDir, "Directory of the nodes' kubelet directories (default: a temporary directory, removed at exit).")
	fs.DurationVar(&o.NodeStatusUpdateFrequency, "node-status-update-frequency", o.NodeStatusUpdateFrequency, "How often each node's status is computed (and written if it changed).")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Plain-HTTP address of /metrics (every node's, labelled node), /healthz, /readyz (empty disables).")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "Log format: text or json.")
	fs.IntVarP(&o.Verbosity, "v", "v", o.Verbosity, "Log verbosity.")
}

// Validate checks the options, naming the flag at fault.
func (o *Options) Validate() error {
	if o.Nodes < 1 {
		return fmt.Errorf("--hollow-nodes: must be at least 1, got %d", o.Nodes)
	}
	if errs := validation.IsDNS1123Subdomain(o.NamePrefix + strconv.Itoa(o.Nodes-1)); len(errs) > 0 {
		return fmt.Errorf("--name-prefix: %q does not make node names: %v", o.NamePrefix, errs)
	}
	if o.CPU < 1 {
		return fmt.Errorf("--node-cpu: must be at least 1, got %d", o.CPU)
	}
	for flag, v := range map[string]string{"--node-memory": o.Memory, "--node-ephemeral-storage": o.EphemeralStorage} {
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			return fmt.Errorf("%s: %q is not a positive quantity", flag, v)
		}
	}
	if o.MaxPods < 1 {
		return fmt.Errorf("--max-pods: must be at least 1, got %d", o.MaxPods)
	}
	if o.NodeStatusUpdateFrequency <= 0 {
		return errors.New("--node-status-update-frequency: must be positive")
	}
	if o.RootDir != "" && !filepath.IsAbs(o.RootDir) {
		return fmt.Errorf("--root-dir: %q is not an absolute path", o.RootDir)
	}
	return nil
}

// Run runs the nodes against the apiserver of o.Kubeconfig until ctx ends.
func Run(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	log, err := component.NewLogger(os.Stderr, o.LogFormat, o.Verbosity)
	if err != nil {
		return err
	}
	conn, err := dial(o.Kubeconfig)
	if err != nil {
		return err
	}
	defer conn.Close()
	n, err := New(Config{Options: o, Client: client.New(conn), Logger: log})
	if err != nil {
		return err
	}
	g, _ := component.NewGroup(ctx)
	if o.MetricsBindAddress != "" {
		g.Go("metrics", func(ctx context.Context) error { return serveMetrics(ctx, o.MetricsBindAddress, n, log) })
	}
	g.Go("nodes", n.Run)
	return g.Wait()
}

// Config is a set of hollow nodes: the options and the client they share.
type Config struct {
	Options Options
	Client  *client.Client
	// Logger is every node's, with the attribute node=<name> (none if nil).
	Logger *slog.Logger
}

// Nodes are the hollow nodes of one process.
type Nodes struct {
	log     *slog.Logger
	root    string
	ownRoot bool // a temporary directory Run removes
	nodes   []*node
}

type node struct {
	name     string
	kubelet  *app.Kubelet
	runtime  *runtime
	registry *prometheus.Registry
}

// New builds the nodes; Run runs them. With no Options.RootDir it creates
// a temporary directory, which Run removes when it returns.
func New(cfg Config) (*Nodes, error) {
	o := cfg.Options
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		return nil, errors.New("hollow: a client is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	machine, err := fixedMachine(o)
	if err != nil {
		return nil, err
	}
	n := &Nodes{log: log, root: o.RootDir}
	if n.root == "" {
		if n.root, err = os.MkdirTemp("", "skiff-hollow-nodes-"); err != nil {
			return nil, err
		}
		n.ownRoot = true
	}
	// The nodes share the host's address, as kubemark's hollow nodes of one
	// pod would; detected once rather than by each node at each update.
	var nodeIPs []string
	if ip, err := nodestatus.HostIP(); err == nil {
		nodeIPs = []string{ip}
	}
	for i := range o.Nodes {
		name := o.NamePrefix + strconv.Itoa(i)
		dir := filepath.Join(n.root, name)
		ko := *app.NewOptions()
		ko.HostnameOverride = name
		ko.NodeIPs = nodeIPs
		ko.RootDir = dir
		ko.PodLogsDir = filepath.Join(dir, "logs")
		ko.CNIConfDir = filepath.Join(dir, "cni")
		ko.MaxPods = o.MaxPods
		ko.NodeStatusUpdateFrequency = o.NodeStatusUpdateFrequency
		ko.MetricsBindAddress = ""
		// A fake runtime has no image filesystem to collect.
		ko.ImageGCHighThresholdPercent = 100
		rt := newRuntime()
		reg := prometheus.NewRegistry()
		k, err := app.New(app.Config{Options: ko, NodeName: name, Client: cfg.Client, Runtime: rt, Registry: reg, NoMounts: true,
			Logger: log.With("node", name), Machine: machine(name)})
		if err != nil {
			n.cleanup()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		n.nodes = append(n.nodes, &node{name: name, kubelet: k, runtime: rt, registry: reg})
	}
	return n, nil
}

// fixedMachine is the host every node reports, told apart by its IDs.
func fixedMachine(o Options) (func(name string) func() (*app.Machine, error), error) {
	mem, err := resource.ParseQuantity(o.Memory)
	if err != nil {
		return nil, err
	}
	storage, err := resource.ParseQuantity(o.EphemeralStorage)
	if err != nil {
		return nil, err
	}
	var kernel string
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		kernel = unix.ByteSliceToString(u.Release[:])
	}
	return func(name string) func() (*app.Machine, error) {
		return func() (*app.Machine, error) {
			return &app.Machine{NumCores: o.CPU, MemoryBytes: mem.Value(), EphemeralStorageBytes: storage.Value(),
				HugePages: map[string]int64{}, MachineID: name, SystemUUID: name, BootID: name,
				KernelVersion: kernel, OSImage: "Skiff hollow node"}, nil
		}
	}, nil
}

// Names are the nodes' names, in index order.
func (n *Nodes) Names() []string {
	names := make([]string, len(n.nodes))
	for i, nd := range n.nodes {
		names[i] = nd.name
	}
	return names
}

// Sandboxes is the number of pod sandboxes each node's runtime holds, by
// node name: what the nodes really run, whatever the apiserver says.
func (n *Nodes) Sandboxes() map[string]int {
	out := make(map[string]int, len(n.nodes))
	for _, nd := range n.nodes {
		out[nd.name] = nd.runtime.sandboxes()
	}
	return out
}

// forgetEvery is how often the fakes' call logs are dropped.
const forgetEvery = 10 * time.Second

// Run runs every node until ctx ends or one fails (which stops the others).
func (n *Nodes) Run(ctx context.Context) error {
	defer n.cleanup()
	n.log.Info("Starting hollow nodes", "nodes", len(n.nodes), "rootDir", n.root)
	g, _ := component.NewGroup(ctx)
	for _, nd := range n.nodes {
		g.Go(nd.name, nd.kubelet.Run)
	}
	g.Go("forget-calls", func(ctx context.Context) error {
		t := time.NewTicker(forgetEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				for _, nd := range n.nodes {
					nd.runtime.forgetCalls()
				}
			}
		}
	})
	return g.Wait()
}

func (n *Nodes) cleanup() {
	if n.ownRoot {
		if err := os.RemoveAll(n.root); err != nil {
			n.log.Error("Removing the hollow nodes' directory", "dir", n.root, "err", err)
		}
	}
}

// HealthChecks are one check of every node's PLEG.
func (n *Nodes) HealthChecks() map[string]func(context.Context) error {
	return map[string]func(context.Context) error{"pleg": func(ctx context.Context) error {
		var errs []error
		for _, nd := range n.nodes {
			for _, check := range nd.kubelet.HealthChecks() {
				if err := check(ctx); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", nd.name, err))
				}
			}
		}
		return errors.Join(errs...)
	}}
}
