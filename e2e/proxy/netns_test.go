package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
	"sigs.k8s.io/knftables"

	proxyapp "skiff.dev/proxy/app"
)

var nsCounter atomic.Int32

// netNS is a scratch network namespace, deleted when the test ends.
type netNS struct {
	name string
	h    netns.NsHandle
}

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("the proxy's real-kernel tests need root (network namespaces, veths, nftables)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		tb.Skip("nft is not installed (apt-get install nftables)")
	}
}

func run(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// newNS makes skiff-proxytest-<pid>-<n>: unique across concurrent test
// binaries and within one.
func newNS(tb testing.TB) *netNS {
	tb.Helper()
	name := fmt.Sprintf("skiff-proxytest-%d-%d", os.Getpid(), nsCounter.Add(1))
	run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	n := &netNS{name: name, h: h}
	run(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return n
}

// do runs fn on an OS thread of its own that has entered the namespace:
// sockets fn opens and processes it starts (nft) live there. The thread is
// never handed back to the scheduler, so it dies when fn returns and no
// other goroutine ever runs in the namespace by accident.
func (n *netNS) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(n.h); err != nil {
			errc <- fmt.Errorf("entering %s: %w", n.name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// dial connects from inside the namespace.
func (n *netNS) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// link joins two namespaces with a veth pair and addresses both ends
// (CIDR notation).
func link(tb testing.TB, a *netNS, aIf, aAddr string, b *netNS, bIf, bAddr string) {
	tb.Helper()
	run(tb, "ip", "-n", a.name, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.name)
	run(tb, "ip", "-n", a.name, "addr", "add", aAddr, "dev", aIf)
	run(tb, "ip", "-n", b.name, "addr", "add", bAddr, "dev", bIf)
	run(tb, "ip", "-n", a.name, "link", "set", aIf, "up")
	run(tb, "ip", "-n", b.name, "link", "set", bIf, "up")
}

// nsNFT is knftables run inside a namespace: every call execs nft from a
// thread in it.
type nsNFT struct {
	ns    *netNS
	inner knftables.Interface
}

// newNSNFT is the interface skiff-proxy would have inside ns: knftables,
// with its transactions' elements coalesced (the Coalescing's own nft is
// started through nsenter, since it runs from no thread of ours).
func newNSNFT(tb testing.TB, ns *netNS, family knftables.Family, table string) knftables.Interface {
	tb.Helper()
	n := &nsNFT{ns: ns}
	if err := ns.do(func() error {
		var err error
		n.inner, err = knftables.New(family, table)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	return &proxyapp.CoalescingNFT{Interface: n, Command: func(ctx context.Context) *exec.Cmd {
		return exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+ns.name, "nft", "-f", "-")
	}}
}

func (n *nsNFT) NewTransaction() *knftables.Transaction { return n.inner.NewTransaction() }

func (n *nsNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	return n.ns.do(func() error { return n.inner.Run(ctx, tx) })
}

func (n *nsNFT) Check(ctx context.Context, tx *knftables.Transaction) error {
	return n.ns.do(func() error { return n.inner.Check(ctx, tx) })
}

func (n *nsNFT) ListAll(ctx context.Context) (out map[string][]string, err error) {
	err = n.ns.do(func() error { out, err = n.inner.ListAll(ctx); return err })
	return out, err
}

func (n *nsNFT) List(ctx context.Context, objectType string) (out []string, err error) {
	err = n.ns.do(func() error { out, err = n.inner.List(ctx, objectType); return err })
	return out, err
}

func (n *nsNFT) ListRules(ctx context.Context, chain string) (out []*knftables.Rule, err error) {
	err = n.ns.do(func() error { out, err = n.inner.ListRules(ctx, chain); return err })
	return out, err
}

func (n *nsNFT) ListElements(ctx context.Context, objectType, name string) (out []*knftables.Element, err error) {
	err = n.ns.do(func() error { out, err = n.inner.ListElements(ctx, objectType, name); return err })
	return out, err
}

func (n *nsNFT) ListCounters(ctx context.Context) (out []*knftables.Counter, err error) {
	err = n.ns.do(func() error { out, err = n.inner.ListCounters(ctx); return err })
	return out, err
}

// tables lists the namespace's nftables tables ("ip skiff-proxy", …).
func (n *netNS) tables(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.name, "nft", "list", "tables").CombinedOutput()
	if err != nil {
		tb.Fatalf("nft list tables: %v: %s", err, out)
	}
	return string(out)
}
