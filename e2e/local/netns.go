package local

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Node networking, flannel's host-gw scheme without flannel: every node is a
// network namespace joined to the host by a veth pair with a /30 of its own,
// and the host routes each node's pod CIDR to that node's end of the pair.
//
// Node N (1-based) gets 10.250.N.0/30: the host side skiff-N is 10.250.N.1,
// the node's eth0 is 10.250.N.2. 10.250.0.0/16 keeps clear of the cluster
// CIDR (10.244.0.0/16) and of the service range (10.96.0.0/12).
const (
	nodeNetPrefix = "10.250"
	// nftTable holds the forward guard: nodes may talk to each other and to
	// the host, never through the host to anywhere else, so nothing a pod
	// sends can leave the machine.
	nftTable = "skiff-local"
	// hostIfPrefix names the host side of every node's veth; the guard
	// matches on it.
	hostIfPrefix = "skiff-"
)

// hostIfName is node i's host-side interface.
func hostIfName(i int) string { return hostIfPrefix + strconv.Itoa(i) }

// nodeAddrs are the host's and node i's ends of its /30.
func nodeAddrs(i int) (host, node string) {
	return fmt.Sprintf("%s.%d.1", nodeNetPrefix, i), fmt.Sprintf("%s.%d.2", nodeNetPrefix, i)
}

// run runs a command and folds its output into the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// output runs a command and returns its stdout.
func output(name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// inNetNS runs a command in node's network namespace only; enough for
// sysctls under /proc/sys/net, which follow the caller's namespace.
func inNetNS(n *Node, name string, args ...string) error {
	return run("nsenter", append([]string{"--net=" + n.NetNS(), "--", name}, args...)...)
}

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// setupNodeNetwork makes node n's network namespace and veth pair, addresses
// them, and routes the node's default through the host.
func setupNodeNetwork(n *Node) error {
	if _, err := os.Stat(n.NetNS()); err == nil {
		return fmt.Errorf("network namespace %s exists already: another multi-node skiff cluster runs on this machine, or an earlier one was not torn down (skiff-local down --dir DIR)", n.Name)
	}
	if _, err := net.InterfaceByName(n.HostIf); err == nil {
		return fmt.Errorf("link %s exists already: another multi-node skiff cluster runs on this machine, or an earlier one was not torn down", n.HostIf)
	}
	ns := n.Name
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "link", "add", n.HostIf, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "addr", "add", n.HostIP + "/30", "dev", n.HostIf},
		{"ip", "link", "set", n.HostIf, "up"},
		{"ip", "-n", ns, "addr", "add", n.IP + "/30", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "route", "add", "default", "via", n.HostIP, "dev", "eth0"},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return inNetNS(n, "sh", "-c", "echo 1 > "+ipForward)
}

// nftRules is the forward guard, and with apiPort > 0 the input rule that
// keeps the apiserver (which then listens on every address so that nodes
// can reach it) to loopback and the node veths.
func nftRules(apiPort int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", nftTable)
	fmt.Fprintf(&b, "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\tiifname \"%s*\" oifname \"%s*\" accept\n", hostIfPrefix, hostIfPrefix)
	fmt.Fprintf(&b, "\t\tiifname \"%s*\" drop\n", hostIfPrefix)
	fmt.Fprintf(&b, "\t\toifname \"%s*\" drop\n\t}\n", hostIfPrefix)
	if apiPort > 0 {
		fmt.Fprintf(&b, "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n")
		for _, r := range hostPortRules(apiPort) {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// hostPortRules admit a host TCP port from loopback and the node veths and
// drop it from everywhere else: what the host serves to its nodes stays
// unreachable from outside the machine even when it listens on 0.0.0.0.
func hostPortRules(port int) []string {
	return []string{
		fmt.Sprintf("iifname \"lo\" tcp dport %d accept", port),
		fmt.Sprintf("iifname \"%s*\" tcp dport %d accept", hostIfPrefix, port),
		fmt.Sprintf("tcp dport %d drop", port),
	}
}

// AllowHostPort opens the host's TCP port to the nodes, as the apiserver's
// is, for a server a test runs on the host (say a registry on 0.0.0.0:port,
// reached by node N at its gateway 10.250.N.1); the port stays closed to
// everything but loopback and the nodes. The rules go with the table at Down.
func (c *Cluster) AllowHostPort(port int) error {
	if !c.NFTable || len(c.Nodes) == 0 {
		return errors.New("AllowHostPort: the cluster has no nodes, so no nftables guard to open")
	}
	if port <= 0 || port > 65535 {
		return fmt.Errorf("AllowHostPort: port %d out of range", port)
	}
	var b strings.Builder
	for _, r := range hostPortRules(port) {
		fmt.Fprintf(&b, "add rule inet %s input %s\n", nftTable, r)
	}
	// One nft transaction: the three rules land together or not at all.
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// setupGuard installs the nftables table (replacing one left behind) and
// turns on forwarding in the host, remembering what it was.
func (c *Cluster) setupGuard(apiPort int) error {
	_ = run("nft", "delete", "table", "inet", nftTable)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nftRules(apiPort))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, bytes.TrimSpace(out))
	}
	c.NFTable = true
	was, err := os.ReadFile(ipForward)
	if err != nil {
		return err
	}
	if c.IPForwardWas == "" {
		c.IPForwardWas = strings.TrimSpace(string(was))
	}
	return os.WriteFile(ipForward, []byte("1\n"), 0o644)
}

// teardownGuard removes the table and gives ip_forward back its old value.
func (c *Cluster) teardownGuard() error {
	var errs []error
	if c.NFTable {
		if err := run("nft", "delete", "table", "inet", nftTable); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
		c.NFTable = false
	}
	if c.IPForwardWas != "" {
		if err := os.WriteFile(ipForward, []byte(c.IPForwardWas+"\n"), 0o644); err != nil {
			errs = append(errs, err)
		}
		c.IPForwardWas = ""
	}
	return errors.Join(errs...)
}

// AddPodRoutes routes podCIDR, the pod range of node nodeName, from the host
// to that node and from every other node through the host; host-gw, so pod
// source addresses survive across nodes. Call it once the node has its
// spec.podCIDR. Idempotent; the routes are recorded so Down removes them.
func (c *Cluster) AddPodRoutes(nodeName, podCIDR string) error {
	if _, _, err := net.ParseCIDR(podCIDR); err != nil {
		return fmt.Errorf("pod CIDR of %s: %w", nodeName, err)
	}
	var target *Node
	for _, n := range c.Nodes {
		if n.Name == nodeName {
			target = n
		}
	}
	if target == nil {
		return fmt.Errorf("no node %s in this cluster", nodeName)
	}
	if err := run("ip", "route", "replace", podCIDR, "via", target.IP, "dev", target.HostIf); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if n == target {
			continue
		}
		if err := run("ip", "-n", n.Name, "route", "replace", podCIDR, "via", n.HostIP, "dev", "eth0"); err != nil {
			return err
		}
	}
	target.PodCIDR = podCIDR
	return c.save()
}

// teardownNodeNetwork deletes node n's routes, veth and network namespace;
// missing pieces are not errors.
func (c *Cluster) teardownNodeNetwork(n *Node) error {
	var errs []error
	if n.PodCIDR != "" {
		_ = run("ip", "route", "del", n.PodCIDR, "via", n.IP)
		for _, m := range c.Nodes {
			if m != n {
				_ = run("ip", "-n", m.Name, "route", "del", n.PodCIDR)
			}
		}
	}
	if _, err := net.InterfaceByName(n.HostIf); err == nil {
		if err := run("ip", "link", "del", n.HostIf); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat(n.NetNS()); err == nil {
		if err := run("ip", "netns", "del", n.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
