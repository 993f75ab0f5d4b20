package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"skiff.dev/client"
	appsv1 "skiff.dev/proto/api/apps/v1"
)

// The cluster's Service network, as upstream's defaults: the apiserver's
// --service-cluster-ip-range is 10.96.0.0/12, and the DNS addon's Service
// (manifests/addons/coredns.yaml) takes its tenth address.
const (
	ClusterDNS    = "10.96.0.10"
	ClusterDomain = "cluster.local"
	ClusterCIDR   = "10.244.0.0/16"
	proxyUser     = "system:kube-proxy"
)

// proxyMetrics and proxyHealthz are on the node's address: the host reaches
// it over the veth, and its 127.0.0.1 is the node's own.
func proxyMetrics(n *Node) string { return n.IP + ":10249" }
func proxyHealthz(n *Node) string { return n.IP + ":10256" }

func (n *Node) proxyKubeconfig() string { return filepath.Join(n.Dir, "proxy.conf") }

// startProxies starts every node's skiff-proxy in the node's network
// namespace (its rules are the node's own, and go with the namespace at
// Down), once the nodes are registered so that NodePorts have the node's
// addresses from the start.
func (c *Cluster) startProxies(ctx context.Context, o Options) error {
	bin := filepath.Join(o.BinDir, "skiff-proxy")
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintf(o.Log, "nodes: %s is missing, so Services have no dataplane (make build)\n", bin)
		return nil
	}
	for _, n := range c.Nodes {
		server := "https://" + n.HostIP + ":" + strconv.Itoa(c.Port)
		if err := writeIdentityKubeconfig(c.Dir, server, proxyUser, nil, n.proxyKubeconfig()); err != nil {
			return fmt.Errorf("%s: %w", proxyUser, err)
		}
		p, err := start(o, Component{Name: "skiff-proxy-" + n.Name, Binary: "nsenter",
			Args: []string{"--net=" + n.NetNS(), "--", bin,
				"--kubeconfig", n.proxyKubeconfig(),
				"--hostname-override", n.Name,
				"--cluster-cidr", ClusterCIDR,
				"--metrics-bind-address", proxyMetrics(n),
				"--healthz-bind-address", proxyHealthz(n),
			}})
		if err != nil {
			return err
		}
		n.Proxy = p
		if err := c.save(); err != nil {
			return err
		}
		if err := waitReady(ctx, p, "http://"+proxyHealthz(n)+"/healthz", 30*time.Second); err != nil {
			return fmt.Errorf("%s: skiff-proxy: %w\n%s", n.Name, err, tail(p.Log, 20))
		}
		fmt.Fprintf(o.Log, "%s: skiff-proxy ready (pid %d, log %s)\n", n.Name, p.PID, p.Log)
	}
	return nil
}

// addonsDir is Options.AddonsDir, or the repository's manifests/addons
// beside the bin directory.
func (o Options) addonsDir() string {
	if o.AddonsDir != "" {
		return o.AddonsDir
	}
	return filepath.Join(o.BinDir, "..", "manifests", "addons")
}

// applyAddons applies the addon manifests with skiffctl, as a user would,
// and waits for cluster DNS to answer: upstream's addon manager, once.
func (c *Cluster) applyAddons(ctx context.Context, o Options) error {
	// Addons are pods: without nodes nothing would run them.
	if o.NoAddons || len(c.Nodes) == 0 {
		return nil
	}
	dir := o.addonsDir()
	if _, err := os.Stat(dir); err != nil {
		fmt.Fprintf(o.Log, "addons: %s not found, none applied\n", dir)
		return nil
	}
	ctl := filepath.Join(o.BinDir, "skiffctl")
	out, err := exec.CommandContext(ctx, ctl, "--kubeconfig", c.Kubeconfig(), "apply", "-f", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("skiffctl apply -f %s: %v\n%s", dir, err, out)
	}
	fmt.Fprintf(o.Log, "addons: applied %s\n", dir)
	return c.waitDeploymentAvailable(ctx, "kube-system", "coredns", 90*time.Second)
}

func (c *Cluster) waitDeploymentAvailable(ctx context.Context, ns, name string, timeout time.Duration) error {
	cl, done, err := c.client()
	if err != nil {
		return err
	}
	defer done()
	deployments := client.For[*appsv1.Deployment](cl, ns)
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		d, err := deployments.Get(ctx, name)
		switch {
		case err != nil:
			last = err.Error()
		case d.GetStatus().GetAvailableReplicas() >= 1:
			return nil
		default:
			last = fmt.Sprintf("%d of %d replicas available", d.GetStatus().GetAvailableReplicas(), d.GetSpec().GetReplicas())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return errors.New("deployment " + ns + "/" + name + " not available after " + timeout.String() + ": " + last)
}

// StopProxy stops n's skiff-proxy (tests of --cleanup); Down skips it.
func (c *Cluster) StopProxy(n *Node) error {
	if n.Proxy == nil {
		return fmt.Errorf("%s runs no skiff-proxy", n.Name)
	}
	stop(n.Proxy, 10*time.Second)
	return nil
}
