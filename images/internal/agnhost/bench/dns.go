package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// DNSConfig is a bench-dns run: A queries for Name at Direct (the DNS
// pod's address) against the same at Service (its ClusterIP), each of
// which must answer WantA alone. Each query is on a socket of its own, as
// a pod's resolver makes one per lookup, so every query is a new conntrack
// flow, DNAT'd afresh through the ClusterIP.
type DNSConfig struct {
	Direct, Service string
	Name            string
	WantA           netip.Addr
	Bounds
}

// ParseDNS reads bench-dns's flags.
func ParseDNS(args []string, stderr io.Writer) (DNSConfig, error) {
	var c DNSConfig
	fs := newFlagSet("bench-dns", "--direct IP[:PORT] --service IP[:PORT] --name NAME --want-a IP [flags]", stderr)
	fs.StringVar(&c.Direct, "direct", "", "the DNS server straight at its pod IP, IP or IP:PORT (port 53 by default)")
	fs.StringVar(&c.Service, "service", "", "the same server through its Service's ClusterIP, IP or IP:PORT (port 53 by default)")
	fs.StringVar(&c.Name, "name", "", "the name whose A record is asked for")
	want := fs.String("want-a", "", "the one A record that is a right answer")
	c.Bounds.addFlags(fs, "queries", 2*time.Second)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("bench-dns takes no arguments, got %q", fs.Args())
	}
	var err error
	if c.Direct, err = dnsAddr("direct", c.Direct); err != nil {
		return c, err
	}
	if c.Service, err = dnsAddr("service", c.Service); err != nil {
		return c, err
	}
	if c.Name == "" {
		return c, errors.New("--name is required")
	}
	c.Name = dns.Fqdn(c.Name)
	if _, ok := dns.IsDomainName(c.Name); !ok {
		return c, fmt.Errorf("--name %q is not a domain name", c.Name)
	}
	if *want == "" {
		return c, errors.New("--want-a is required")
	}
	if c.WantA, err = netip.ParseAddr(*want); err != nil || !c.WantA.Is4() {
		return c, fmt.Errorf("--want-a %q is not an IPv4 address", *want)
	}
	return c, c.Bounds.validate("queries")
}

// dnsAddr is IP or IP:PORT as IP:PORT; an IP, so that queries go where
// they are told without a lookup first.
func dnsAddr(flag, v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("--%s is required", flag)
	}
	if ip, err := netip.ParseAddr(v); err == nil {
		return netip.AddrPortFrom(ip, 53).String(), nil
	}
	ap, err := netip.ParseAddrPort(v)
	if err != nil || ap.Port() == 0 {
		return "", fmt.Errorf("--%s %q: want IP or IP:PORT", flag, v)
	}
	return ap.String(), nil
}

// DNSMain runs `agnhost bench-dns`.
func DNSMain(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	c, err := ParseDNS(args, os.Stderr)
	if err != nil {
		return err
	}
	r, err := RunDNS(ctx, c, os.Stderr)
	if err != nil {
		return err
	}
	return writeReport(os.Stdout, r)
}

// RunDNS waits for both addresses to answer right, then compares them.
func RunDNS(ctx context.Context, c DNSConfig, stderr io.Writer) (Report, error) {
	want := net.IP(c.WantA.AsSlice())
	directPorts, servicePorts, err := halves()
	if err != nil {
		return Report{}, err
	}
	// The DNS server learns of the Service from its watch, and the proxy
	// of the server's endpoints from theirs.
	if err := waitReady(ctx, c.Wait, stderr, func(ctx context.Context) string {
		for _, t := range []struct {
			addr  string
			ports portRange
		}{{c.Direct, directPorts}, {c.Service, servicePorts}} {
			wrong, err := exchangeA(ctx, t.addr, t.ports, c.Name, want, c.Timeout)
			if err != nil {
				return err.Error()
			}
			if wrong != "" {
				return wrong
			}
		}
		return ""
	}); err != nil {
		return Report{}, err
	}
	query := func(addr string, ports portRange) attempt {
		return func(ctx context.Context, _ int64) (string, error) {
			return exchangeA(ctx, addr, ports, c.Name, want, c.Timeout)
		}
	}
	d, s, err := compare(ctx, c.Bounds, query(c.Direct, directPorts), query(c.Service, servicePorts))
	if err != nil {
		return Report{}, err
	}
	return newReport("dns", "", c.Bounds, d.result([]string{c.Direct}), s.result([]string{c.Service})), nil
}

// exchangeA sends one A query for name to addr over UDP on a socket of its
// own, from a port within ports, and says why the answer is not exactly want ("" when it is); err is
// a query that got no answer at all.
func exchangeA(ctx context.Context, addr string, ports portRange, name string, want net.IP, timeout time.Duration) (wrong string, err error) {
	nd := net.Dialer{Timeout: timeout, Control: ports.control}
	conn, err := nd.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	co := &dns.Conn{Conn: conn}
	if err := co.WriteMsg(q); err != nil {
		return "", err
	}
	r, err := co.ReadMsg()
	if err != nil {
		return "", err
	}
	if r.Id != q.Id {
		return fmt.Sprintf("%s: answer id %d to query id %d", addr, r.Id, q.Id), nil
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return fmt.Sprintf("%s: %s with %d answers: %v", addr, dns.RcodeToString[r.Rcode], len(r.Answer), r.Answer), nil
	}
	if a, ok := r.Answer[0].(*dns.A); !ok || !a.A.Equal(want) {
		return fmt.Sprintf("%s: answer %v, want A %s", addr, r.Answer[0], want), nil
	}
	return "", nil
}
