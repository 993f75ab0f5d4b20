package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// HTTPConfig is a bench-http run: GETs round-robin over Direct, each of
// which must answer with its own body, against GETs to Service, which must
// answer with one of theirs.
type HTTPConfig struct {
	Direct  []Endpoint
	Service string
	// NewConn makes a connection per request rather than keep one per
	// worker: a Service's DNAT is decided once per connection, so this is
	// where its rules cost.
	NewConn bool
	Bounds
}

// Endpoint is a URL and the body that is the right answer from it.
type Endpoint struct{ URL, Body string }

// directFlag is the repeated --direct BODY=URL.
type directFlag []Endpoint

func (f *directFlag) String() string {
	var s []string
	for _, e := range *f {
		s = append(s, e.Body+"="+e.URL)
	}
	return strings.Join(s, " ")
}

func (f *directFlag) Set(v string) error {
	body, u, ok := strings.Cut(v, "=")
	if !ok || body == "" {
		return fmt.Errorf("want BODY=URL (the answer the URL must give, then the URL), got %q", v)
	}
	if err := checkURL(u); err != nil {
		return err
	}
	*f = append(*f, Endpoint{URL: u, Body: body})
	return nil
}

// checkURL accepts http URLs whose host is an IP address, so that every
// request goes to an address given without a name lookup first.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "http" {
		return fmt.Errorf("%q: want an http:// URL", raw)
	}
	if _, err := netip.ParseAddr(u.Hostname()); err != nil {
		return fmt.Errorf("%q: want an IP address as the host, got %q", raw, u.Hostname())
	}
	return nil
}

// ParseHTTP reads bench-http's flags.
func ParseHTTP(args []string, stderr io.Writer) (HTTPConfig, error) {
	var c HTTPConfig
	fs := newFlagSet("bench-http", "--direct BODY=URL [--direct BODY=URL ...] --service URL [flags]", stderr)
	fs.Var((*directFlag)(&c.Direct), "direct", "BODY=URL: a backend's URL straight at its pod IP, and the body it must answer with (repeat for each backend; requests go round-robin)")
	fs.StringVar(&c.Service, "service", "", "the same backends' URL through the Service's ClusterIP; it must answer with the --direct bodies, each of them while --wait lasts")
	conn := fs.String("conn", "keepalive", "keepalive (a connection per worker, reused) or newconn (a connection per request)")
	c.Bounds.addFlags(fs, "requests", 5*time.Second)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("bench-http takes no arguments, got %q", fs.Args())
	}
	switch *conn {
	case "keepalive":
	case "newconn":
		c.NewConn = true
	default:
		return c, fmt.Errorf("--conn must be keepalive or newconn, got %q", *conn)
	}
	if len(c.Direct) == 0 {
		return c, errors.New("--direct is required")
	}
	if c.Service == "" {
		return c, errors.New("--service is required")
	}
	if err := checkURL(c.Service); err != nil {
		return c, fmt.Errorf("--service: %w", err)
	}
	return c, c.Bounds.validate("requests")
}

// HTTPMain runs `agnhost bench-http`.
func HTTPMain(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	c, err := ParseHTTP(args, os.Stderr)
	if err != nil {
		return err
	}
	r, err := RunHTTP(ctx, c, os.Stderr)
	if err != nil {
		return err
	}
	return writeReport(os.Stdout, r)
}

// RunHTTP waits for the targets to answer right, then compares them.
func RunHTTP(ctx context.Context, c HTTPConfig, stderr io.Writer) (Report, error) {
	bodies := make([]string, len(c.Direct))
	for i, e := range c.Direct {
		bodies[i] = e.Body
	}
	slices.Sort(bodies)
	bodies = slices.Compact(bodies)
	directPorts, servicePorts, err := halves()
	if err != nil {
		return Report{}, err
	}
	probeTimeout := min(c.Timeout, 2*time.Second)
	if err := waitReady(ctx, c.Wait, stderr, func(ctx context.Context) string {
		return httpReady(ctx, newHTTPClient(true, 1, probeTimeout, directPorts), newHTTPClient(true, 1, probeTimeout, servicePorts),
			c.Direct, c.Service, bodies)
	}); err != nil {
		return Report{}, err
	}
	directClient := newHTTPClient(c.NewConn, c.Workers, c.Timeout, directPorts)
	serviceClient := newHTTPClient(c.NewConn, c.Workers, c.Timeout, servicePorts)
	defer directClient.CloseIdleConnections()
	defer serviceClient.CloseIdleConnections()
	direct := func(ctx context.Context, i int64) (string, error) {
		e := c.Direct[int(i)%len(c.Direct)]
		return check(ctx, directClient, e.URL, []string{e.Body})
	}
	service := func(ctx context.Context, i int64) (string, error) {
		return check(ctx, serviceClient, c.Service, bodies)
	}
	d, s, err := compare(ctx, c.Bounds, direct, service)
	if err != nil {
		return Report{}, err
	}
	urls := make([]string, len(c.Direct))
	for i, e := range c.Direct {
		urls[i] = e.URL
	}
	mode := "keepalive"
	if c.NewConn {
		mode = "newconn"
	}
	return newReport("http", mode, c.Bounds, d.result(urls), s.result([]string{c.Service})), nil
}

// httpReady says what is missing before measuring: a backend not
// answering with its body straight, or through the Service. The proxy
// programs a Service once it sees its EndpointSlice, and every backend
// must answer through it; the probes make a connection per request, so
// that each may be sent to another.
func httpReady(ctx context.Context, directProbe, serviceProbe *http.Client, direct []Endpoint, service string, bodies []string) string {
	for _, e := range direct {
		wrong, err := check(ctx, directProbe, e.URL, []string{e.Body})
		if err != nil {
			return err.Error()
		}
		if wrong != "" {
			return wrong
		}
	}
	var seen []string
	for range 10 * len(bodies) {
		body, err := get(ctx, serviceProbe, service)
		if err != nil {
			return err.Error()
		}
		if !slices.Contains(seen, body) {
			seen = append(seen, body)
		}
	}
	slices.Sort(seen)
	if !slices.Equal(seen, bodies) {
		return fmt.Sprintf("%s answers %q, want %q", service, seen, bodies)
	}
	return ""
}

func newHTTPClient(newConn bool, workers int, timeout time.Duration, ports portRange) *http.Client {
	return &http.Client{
		Timeout: timeout,
		// A redirect would be traffic to an address not given.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		// No Proxy: the environment's would be another address.
		Transport: &http.Transport{
			DialContext:       (&net.Dialer{Timeout: timeout, Control: ports.control}).DialContext,
			DisableKeepAlives: newConn, MaxIdleConnsPerHost: workers, DisableCompression: true,
		},
	}
}

// check GETs url and says why the body is none of accept.
func check(ctx context.Context, hc *http.Client, url string, accept []string) (wrong string, err error) {
	body, err := get(ctx, hc, url)
	if err != nil {
		return "", err
	}
	if !slices.Contains(accept, body) {
		return fmt.Sprintf("%s answered %q, want one of %q", url, body, accept), nil
	}
	return "", nil
}

// get reads the whole body, which a keep-alive connection needs before it
// goes back to the pool; anything but 200 is an error.
func get(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(data)), nil
}
