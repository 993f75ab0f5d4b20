// Package local runs a whole Skiff cluster on this machine from the built
// binaries: each component a child process with its log in <dir>/logs, started
// in order and waited on until ready. skiff-local and the e2e tests use it.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options say where the cluster lives.
type Options struct {
	Dir    string // state, logs, data
	BinDir string // where the skiff-* binaries are
	Port   int    // the apiserver's secure port (0 picks a free one)
	Log    io.Writer
	// Nodes is how many nodes (skiff-node-1 … N) to start, each in network
	// and mount namespaces of its own with its own containerd and kubelet.
	// 0 starts the control plane alone. Nodes need root.
	Nodes int
	// NoKubelet starts the nodes' containerd only (tests of the node
	// plumbing itself).
	NoKubelet bool
	// ExtraKubeletArgs go after every node's kubelet flags, so a flag
	// given here wins over the default one.
	ExtraKubeletArgs []string
	// AddonsDir holds the addon manifests applied once the nodes are up
	// (default: manifests/addons beside BinDir); NoAddons applies none.
	AddonsDir string
	NoAddons  bool
}

// Component is one process of the cluster.
type Component struct {
	Name   string
	Binary string
	Args   []string
	// Ready is polled until it answers 200.
	Ready string
}

// Process is a started component.
type Process struct {
	Name    string `json:"name"`
	PID     int    `json:"pid"`
	Log     string `json:"log"`
	Metrics string `json:"metrics,omitempty"`
	cmd     *exec.Cmd
	exited  chan error
}

// Cluster is a running local cluster.
type Cluster struct {
	Dir       string     `json:"dir"`
	Port      int        `json:"port"`
	Processes []*Process `json:"processes"`
	Nodes     []*Node    `json:"nodes,omitempty"`
	// NFTable says the forward guard is installed; IPForwardWas is the
	// host's ip_forward before Up turned it on, restored by Down.
	NFTable      bool   `json:"nftable,omitempty"`
	IPForwardWas string `json:"ipForwardWas,omitempty"`
	// MadeRunNetns says /run/netns was no mount point before the nodes.
	MadeRunNetns bool `json:"madeRunNetns,omitempty"`
	// Supervisor is the process that waits on the cluster and tears it
	// down when it ends (skiff-local up in the foreground): Down from
	// another process asks it to, rather than racing it.
	Supervisor int `json:"supervisor,omitempty"`
	// opts are Up's and components the control plane's, for
	// RestartKubelet and Start: only a cluster this process started can
	// start its components again.
	opts       Options
	components []Component
}

// Kubeconfig is the admin client config of the cluster.
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.Dir, "admin.conf") }

// APIServerDataDir is the apiserver's --data-dir.
func (c *Cluster) APIServerDataDir() string { return filepath.Join(c.Dir, "apiserver") }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// components lists the cluster's processes in start order. Later issues add
// the kubelet and proxy here.
func components(o Options, nodes []*Node, port, metricsPort, schedulerPort, cmPort int) []Component {
	apiserverArgs := []string{
		"--data-dir", filepath.Join(o.Dir, "apiserver"),
		"--bind-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(port),
		"--metrics-bind-address", "127.0.0.1:" + strconv.Itoa(metricsPort),
	}
	if len(nodes) > 0 {
		// Nodes cannot reach the host's 127.0.0.1, and the apiserver binds
		// one address: it listens on all of them, and the nftables input
		// rule (nftRules) admits its port only from loopback and the node
		// veths. Each node dials its own gateway, so every gateway is a SAN.
		apiserverArgs[3] = "0.0.0.0"
		for _, n := range nodes {
			apiserverArgs = append(apiserverArgs, "--tls-san", n.HostIP)
		}
		// The kubernetes Service's endpoint: a host address every node
		// reaches (each routes the host's addresses through its veth).
		apiserverArgs = append(apiserverArgs, "--advertise-address", nodes[0].HostIP)
	}
	return []Component{{
		Name:   "skiff-apiserver",
		Binary: "skiff-apiserver",
		Args:   apiserverArgs,
		Ready:  fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort),
	}, {
		Name:   "skiff-scheduler",
		Binary: "skiff-scheduler",
		Args: []string{
			"--kubeconfig", schedulerKubeconfig(o.Dir),
			"--metrics-bind-address", "127.0.0.1:" + strconv.Itoa(schedulerPort),
		},
		Ready: fmt.Sprintf("http://127.0.0.1:%d/readyz", schedulerPort),
	}, {
		Name:   "skiff-controller-manager",
		Binary: "skiff-controller-manager",
		Args: []string{
			"--kubeconfig", controllerManagerKubeconfig(o.Dir),
			"--metrics-bind-address", "127.0.0.1:" + strconv.Itoa(cmPort),
			"--allocate-node-cidrs", "--cluster-cidr", ClusterCIDR,
		},
		Ready: fmt.Sprintf("http://127.0.0.1:%d/readyz", cmPort),
	}}
}

func schedulerKubeconfig(dir string) string { return filepath.Join(dir, "scheduler.conf") }

func controllerManagerKubeconfig(dir string) string {
	return filepath.Join(dir, "controller-manager.conf")
}

// Up starts the cluster and returns once every component is ready.
func Up(ctx context.Context, o Options) (*Cluster, error) {
	if o.Dir == "" {
		return nil, errors.New("--dir: required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	o.Dir = dir
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	if c, err := load(dir); err == nil && c.alive() {
		return nil, fmt.Errorf("a cluster is already running in %s (skiff-local down --dir %s)", dir, dir)
	}
	port := o.Port
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	schedulerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cmPort, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Port: port, opts: o}
	if err := c.setupNodes(o, port); err != nil {
		if derr := c.Down(); derr != nil {
			err = fmt.Errorf("%w (and tearing down: %v)", err, derr)
		}
		return nil, err
	}
	c.components = components(o, c.Nodes, port, metricsPort, schedulerPort, cmPort)
	for _, comp := range c.components {
		p, err := start(o, comp)
		if err != nil {
			c.Down()
			return nil, err
		}
		p.Metrics = strings.TrimSuffix(comp.Ready, "/readyz")
		c.Processes = append(c.Processes, p)
		if err := c.save(); err != nil {
			c.Down()
			return nil, err
		}
		if err := waitReady(ctx, p, comp.Ready, 60*time.Second); err != nil {
			c.Down()
			return nil, fmt.Errorf("%s: %w\n%s", comp.Name, err, tail(p.Log, 20))
		}
		fmt.Fprintf(o.Log, "%s ready (pid %d, log %s)\n", comp.Name, p.PID, p.Log)
		if comp.Binary == "skiff-apiserver" {
			// The apiserver made the cluster CA: each component gets a
			// client certificate with upstream's identity.
			server := "https://127.0.0.1:" + strconv.Itoa(port)
			for _, id := range []struct{ user, path string }{
				{schedulerUser, schedulerKubeconfig(dir)}, {controllerManagerUser, controllerManagerKubeconfig(dir)},
			} {
				if err := writeIdentityKubeconfig(dir, server, id.user, nil, id.path); err != nil {
					c.Down()
					return nil, fmt.Errorf("%s: %w", id.user, err)
				}
			}
		}
	}
	src := filepath.Join(dir, "apiserver", "admin.conf")
	data, err := os.ReadFile(src)
	if err != nil {
		c.Down()
		return nil, err
	}
	if err := os.WriteFile(c.Kubeconfig(), data, 0o600); err != nil {
		c.Down()
		return nil, err
	}
	if err := c.waitDefaultServiceAccount(ctx, 30*time.Second); err != nil {
		c.Down()
		return nil, err
	}
	if err := c.startNodes(ctx, o); err != nil {
		if derr := c.Down(); derr != nil {
			err = fmt.Errorf("%w (and tearing down: %v)", err, derr)
		}
		return nil, err
	}
	return c, nil
}

func start(o Options, comp Component) (*Process, error) {
	bin := filepath.Join(o.BinDir, comp.Binary)
	if comp.Binary == "nsenter" {
		// Node processes run inside their node through nsenter.
		var err error
		if bin, err = exec.LookPath("nsenter"); err != nil {
			return nil, errors.New("nsenter is not installed (hack/install-deps.sh)")
		}
	} else if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s not found in %s: run `make build` first", comp.Binary, o.BinDir)
	}
	logPath := filepath.Join(o.Dir, "logs", comp.Name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, comp.Args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: Ctrl-C in the terminal reaches skiff-local, which
	// stops the children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", comp.Name, err)
	}
	p := &Process{Name: comp.Name, PID: cmd.Process.Pid, Log: logPath, cmd: cmd, exited: make(chan error, 1)}
	go func() {
		p.exited <- cmd.Wait()
		logf.Close()
	}()
	return p, nil
}

func waitReady(ctx context.Context, p *Process, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case err := <-p.exited:
			p.exited <- err
			return fmt.Errorf("exited before it was ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func (c *Cluster) save() error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(statePath(c.Dir), data, 0o644)
}

func load(dir string) (*Cluster, error) {
	data, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var c Cluster
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return &c, nil
}

func (c *Cluster) alive() bool {
	for _, p := range c.allProcesses() {
		if pidAlive(p.PID) {
			return true
		}
	}
	return false
}

// allProcesses are the control plane's processes and the nodes'.
func (c *Cluster) allProcesses() []*Process {
	ps := slices.Clone(c.Processes)
	for _, n := range c.Nodes {
		for _, p := range []*Process{n.Containerd, n.Kubelet, n.Proxy, n.LocalPath} {
			if p != nil {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// Down tears the nodes down (see downNodes), then stops the control plane
// in reverse order: SIGTERM, then SIGKILL after ten seconds. The error
// names whatever of the nodes is left on the machine.
func (c *Cluster) Down() error {
	err := c.downNodes()
	for i := len(c.Processes) - 1; i >= 0; i-- {
		stop(c.Processes[i], 10*time.Second)
	}
	os.Remove(statePath(c.Dir))
	return err
}

// Kill kills the control-plane component called name at once (SIGKILL),
// as a crash or an OOM kill would, and waits until it is gone.
func (c *Cluster) Kill(name string) error {
	for _, p := range c.Processes {
		if p.Name == name {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
			stop(p, 10*time.Second)
			return nil
		}
	}
	return fmt.Errorf("no component %q in the cluster", name)
}

// Start starts the stopped or killed control-plane component called name
// again, with the flags it had, and waits until it is ready.
func (c *Cluster) Start(ctx context.Context, name string) error {
	for _, comp := range c.components {
		if comp.Name != name {
			continue
		}
		for i, old := range c.Processes {
			if old.Name != name {
				continue
			}
			if pidAlive(old.PID) {
				return fmt.Errorf("%s is running (pid %d)", name, old.PID)
			}
			p, err := start(c.opts, comp)
			if err != nil {
				return err
			}
			p.Metrics = old.Metrics
			c.Processes[i] = p
			if err := c.save(); err != nil {
				return err
			}
			if err := waitReady(ctx, p, comp.Ready, 60*time.Second); err != nil {
				return fmt.Errorf("%s: %w\n%s", name, err, tail(p.Log, 20))
			}
			return nil
		}
	}
	return fmt.Errorf("no component %q in the cluster", name)
}

// Stop stops the control-plane component called name (tests of what must
// run without it); Down later skips it.
func (c *Cluster) Stop(name string) error {
	for _, p := range c.Processes {
		if p.Name == name {
			stop(p, 10*time.Second)
			return nil
		}
	}
	return fmt.Errorf("no component %q in the cluster", name)
}

func stop(p *Process, grace time.Duration) {
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if p.exited != nil {
			select {
			case err := <-p.exited:
				// Put back for the next stop or Wait: a process is
				// stopped once, however often it is asked.
				p.exited <- err
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		if !pidAlive(p.PID) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
}

// Supervise records the calling process as the cluster's supervisor.
func (c *Cluster) Supervise() error {
	c.Supervisor = os.Getpid()
	return c.save()
}

// Down stops the cluster recorded in dir by an earlier Up. A live
// supervisor is sent SIGTERM and waited for, so that one teardown runs.
func Down(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	c, err := load(abs)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no cluster recorded in %s", abs)
	}
	if err != nil {
		return err
	}
	if sup := c.Supervisor; sup > 0 && sup != os.Getpid() && pidAlive(sup) {
		if err := syscall.Kill(sup, syscall.SIGTERM); err == nil {
			deadline := time.Now().Add(2 * time.Minute)
			for pidAlive(sup) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if !pidAlive(sup) {
				if _, err := os.Stat(statePath(abs)); errors.Is(err, os.ErrNotExist) {
					return c.Leftovers()
				}
			}
		}
	}
	return c.Down()
}

// Wait blocks until ctx ends or a component exits; it returns which.
func (c *Cluster) Wait(ctx context.Context) error {
	ps := c.allProcesses()
	exited := make(chan error, len(ps))
	for _, p := range ps {
		go func() {
			if p.exited == nil {
				return
			}
			err := <-p.exited
			p.exited <- err
			exited <- fmt.Errorf("%s exited: %v (log %s)", p.Name, err, p.Log)
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-exited:
		return err
	}
}
