package prober

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"skiff.dev/client/record"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// outcome is one probe's answer (upstream's probe.Result).
type outcome int

const (
	oUnknown outcome = iota
	oSuccess
	oWarning // success, with something worth an event (a redirect not followed)
	oFailure
)

// maxProbeRetries is how often an erroring probe is tried before the worker
// gives up on this period, as upstream.
const maxProbeRetries = 3

// maxRespBodyLength bounds what an HTTP probe reads of a body (10 KiB).
const maxRespBodyLength = 10 << 10

// probe runs spec against the container and records upstream's events:
// Warning Unhealthy "<Type> probe failed: <output>" (or "errored: <err>"),
// and Warning ProbeWarning for a success with a warning.
func (m *Manager) probe(ctx context.Context, t probeType, pod *corev1.Pod, c *corev1.Container, spec *corev1.Probe, containerID, podIP string) (result, error) {
	if spec == nil {
		return success, nil
	}
	var (
		res outcome
		out string
		err error
	)
	for i := 0; i < maxProbeRetries; i++ {
		res, out, err = m.runProbe(ctx, spec, c, containerID, podIP)
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return unknown, ctx.Err() // stopped, not a verdict
	}
	if err != nil || (res != oSuccess && res != oWarning) {
		if err != nil {
			m.event(pod, record.Warning, "Unhealthy", fmt.Sprintf("%s probe errored: %v", t, err))
		} else {
			m.event(pod, record.Warning, "Unhealthy", fmt.Sprintf("%s probe failed: %s", t, out))
		}
		return failure, err
	}
	if res == oWarning {
		m.event(pod, record.Warning, "ProbeWarning", fmt.Sprintf("%s probe warning: %s", t, out))
	}
	return success, nil
}

func (m *Manager) event(pod *corev1.Pod, eventtype, reason, message string) {
	if m.recorder != nil {
		m.recorder.Event(pod, eventtype, reason, message)
	}
}

func (m *Manager) runProbe(ctx context.Context, p *corev1.Probe, c *corev1.Container, containerID, podIP string) (outcome, string, error) {
	timeout := time.Duration(orDefault(p.TimeoutSeconds, 1)) * time.Second
	h := p.GetHandler()
	switch {
	case h.GetExec() != nil:
		return m.execProbe(ctx, containerID, expand(h.GetExec().GetCommand(), c.GetEnv()), timeout)
	case h.GetHttpGet() != nil:
		g := h.GetHttpGet()
		port, err := resolvePort(g.GetPort(), c)
		if err != nil {
			return oUnknown, "", err
		}
		host := g.GetHost()
		if host == "" {
			host = podIP
		}
		scheme := strings.ToLower(g.GetScheme())
		if scheme == "" {
			scheme = "http"
		}
		req, err := newProbeRequest(ctx, probeURL(scheme, host, port, g.GetPath()), g.GetHttpHeaders())
		if err != nil {
			return oUnknown, "", err
		}
		return m.httpProbe(req, timeout)
	case h.GetTcpSocket() != nil:
		s := h.GetTcpSocket()
		port, err := resolvePort(s.GetPort(), c)
		if err != nil {
			return oUnknown, "", err
		}
		host := s.GetHost()
		if host == "" {
			host = podIP
		}
		return tcpProbe(ctx, net.JoinHostPort(host, strconv.Itoa(port)), timeout)
	case h.GetGrpc() != nil:
		g := h.GetGrpc()
		if g.GetPort() <= 0 || g.GetPort() > 65535 {
			return oUnknown, "", fmt.Errorf("invalid port number: %d", g.GetPort())
		}
		return grpcProbe(ctx, net.JoinHostPort(podIP, strconv.Itoa(int(g.GetPort()))), g.GetService(), timeout)
	}
	return oUnknown, "", errors.New("missing probe handler")
}

// execProbe is upstream's exec prober over the CRI: exit code 0 succeeds,
// any other fails with the command's output, a timeout fails.
func (m *Manager) execProbe(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (outcome, string, error) {
	if m.exec == nil {
		return oUnknown, "", errors.New("exec probes are not supported")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stdout, stderr, code, err := m.exec(ctx, containerID, cmd, timeout)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded || ctx.Err() == context.DeadlineExceeded {
			return oFailure, fmt.Sprintf("command %q timed out", strings.Join(cmd, " ")), nil
		}
		return oUnknown, "", err
	}
	out := string(stdout) + string(stderr)
	if code != 0 {
		return oFailure, out, nil
	}
	return oSuccess, out, nil
}

// expand is upstream's ExpandContainerCommandOnlyStatic: $(VAR) from the
// container's literal env values, $$ for a literal $, anything else kept.
func expand(cmd []string, env []*corev1.EnvVar) []string {
	vars := map[string]string{}
	for _, e := range env {
		if e.GetValueFrom() == nil {
			vars[e.GetName()] = e.GetValue()
		}
	}
	out := make([]string, len(cmd))
	for i, s := range cmd {
		var b strings.Builder
		for j := 0; j < len(s); j++ {
			if s[j] != '$' || j+1 >= len(s) {
				b.WriteByte(s[j])
				continue
			}
			switch s[j+1] {
			case '$':
				b.WriteByte('$')
				j++
			case '(':
				end := strings.IndexByte(s[j+2:], ')')
				if end < 0 {
					b.WriteString(s[j:])
					j = len(s)
					continue
				}
				name := s[j+2 : j+2+end]
				if v, ok := vars[name]; ok {
					b.WriteString(v)
				} else {
					b.WriteString(s[j : j+3+end])
				}
				j += 2 + end
			default:
				b.WriteByte('$')
			}
		}
		out[i] = b.String()
	}
	return out
}

// resolvePort is upstream's ResolveContainerPort: a number, or the name of
// one of the container's ports (or a number written as a string).
func resolvePort(p *metav1.IntOrString, c *corev1.Container) (int, error) {
	if p == nil {
		return 0, errors.New("probe has no port")
	}
	port := int(p.GetIntVal())
	if p.GetType() == 1 {
		port = -1
		for _, cp := range c.GetPorts() {
			if cp.GetName() == p.GetStrVal() {
				port = int(cp.GetContainerPort())
				break
			}
		}
		if port < 0 {
			n, err := strconv.Atoi(p.GetStrVal())
			if err != nil {
				return 0, fmt.Errorf("port %s not found", p.GetStrVal())
			}
			port = n
		}
	}
	if port <= 0 || port >= 65536 {
		return port, fmt.Errorf("invalid port number: %v", port)
	}
	return port, nil
}

func probeURL(scheme, host string, port int, path string) *url.URL {
	u, err := url.Parse(path)
	if err != nil {
		u = &url.URL{Path: path}
	}
	u.Scheme = scheme
	u.Host = net.JoinHostPort(host, strconv.Itoa(port))
	return u
}

// newProbeRequest is upstream's NewProbeRequest: the probe's headers, a
// Host header becoming the request's Host, User-Agent kube-probe/<version>
// and Accept */* unless the probe sets them (an empty Accept removes it).
func newProbeRequest(ctx context.Context, u *url.URL, headers []*corev1.HTTPHeader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	hdr := http.Header{}
	for _, h := range headers {
		hdr.Add(h.GetName(), h.GetValue())
	}
	if _, ok := hdr["User-Agent"]; !ok {
		hdr.Set("User-Agent", UserAgent)
	}
	if _, ok := hdr["Accept"]; !ok {
		hdr.Set("Accept", "*/*")
	} else if hdr.Get("Accept") == "" {
		hdr.Del("Accept")
	}
	req.Header = hdr
	if host := hdr.Get("Host"); host != "" {
		req.Host = host
	}
	return req, nil
}

func newTransport() *http.Transport {
	return &http.Transport{
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, // as upstream: probes do not verify the container's certificate
		DisableKeepAlives:  true,
		DisableCompression: true,
		Proxy:              nil, // never through a proxy from the environment
	}
}

// httpProbe is upstream's: 200-399 succeeds; redirects are followed only
// within the same host, and a redirect elsewhere is a success with a
// warning; anything else fails with the status code.
func (m *Manager) httpProbe(req *http.Request, timeout time.Duration) (outcome, string, error) {
	client := &http.Client{
		Timeout:   timeout,
		Transport: m.transport,
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if r.URL.Hostname() != via[0].URL.Hostname() {
				return http.ErrUseLastResponse
			}
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}
	res, err := client.Do(req)
	if err != nil {
		return oFailure, err.Error(), nil
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxRespBodyLength))
	if err != nil {
		return oFailure, "", err
	}
	body := string(b)
	if res.StatusCode >= http.StatusOK && res.StatusCode < http.StatusBadRequest {
		if res.StatusCode >= http.StatusMultipleChoices {
			return oWarning, fmt.Sprintf("Probe terminated redirects, Response body: %v", body), nil
		}
		return oSuccess, body, nil
	}
	return oFailure, fmt.Sprintf("HTTP probe failed with statuscode: %d", res.StatusCode), nil
}

// tcpProbe succeeds when a connection opens.
func tcpProbe(ctx context.Context, addr string, timeout time.Duration) (outcome, string, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return oFailure, err.Error(), nil
	}
	conn.Close()
	return oSuccess, "", nil
}

// grpcProbe calls grpc.health.v1.Health/Check with upstream's messages.
func grpcProbe(ctx context.Context, addr, service string, timeout time.Duration) (outcome, string, error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(UserAgent))
	if err != nil {
		return oFailure, fmt.Sprintf("error: failed to connect service at %q: %+v", addr, err), nil
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		st, _ := status.FromError(err)
		switch st.Code() {
		case codes.Unimplemented:
			return oFailure, fmt.Sprintf("this server does not implement the grpc health protocol (grpc.health.v1.Health): %s", st.Message()), nil
		case codes.DeadlineExceeded:
			return oFailure, fmt.Sprintf("timeout: health rpc did not complete within %v", timeout), nil
		case codes.Unavailable:
			return oFailure, fmt.Sprintf("error: failed to connect service at %q: %s", addr, st.Message()), nil
		}
		return oFailure, fmt.Sprintf("error: health rpc probe failed: %+v", err), nil
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return oFailure, fmt.Sprintf("service unhealthy (responded with %q)", resp.GetStatus().String()), nil
	}
	return oSuccess, "service is healthy", nil
}
