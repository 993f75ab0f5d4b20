// Package kubeletclient is how the apiserver reaches a node's kubelet for
// pods/log, exec, attach and portforward: HTTPS to the node's address and
// kubelet port, presenting the apiserver's kubelet client certificate, as
// upstream's --kubelet-client-certificate does.
package kubeletclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	corev1 "skiff.dev/proto/api/core/v1"
)

// DefaultPort is the kubelet's port when a node does not report one
// (upstream's ports.KubeletPort).
const DefaultPort = 10250

// Config is how to reach kubelets; upstream's flag names are in the comments.
type Config struct {
	// CertFile and KeyFile are the client certificate presented to
	// kubelets (--kubelet-client-certificate, --kubelet-client-key); empty
	// presents none.
	CertFile, KeyFile string
	// CAFile verifies the kubelets' serving certificates
	// (--kubelet-certificate-authority); empty does not verify them, as
	// upstream, since kubelets serve self-signed certificates by default.
	CAFile string
	// DialTimeout bounds connecting and the TLS handshake; 0 means 10s.
	DialTimeout time.Duration
}

// Client makes requests to kubelets. It is safe for concurrent use.
type Client struct {
	cfg  Config
	tls  *tls.Config
	err  error // a bad CA file, reported on every request
	http *http.Client

	mu    sync.Mutex
	cert  *tls.Certificate
	mtime time.Time
}

// New builds a client. Problems with the files are reported by each
// request rather than here, so a missing certificate fails the streams that
// need it and not the apiserver's start; the client certificate is re-read
// when its file changes, so it rotates without a restart.
func New(cfg Config) *Client {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	c := &Client{cfg: cfg}
	c.tls = &tls.Config{MinVersion: tls.VersionTLS12, GetClientCertificate: c.clientCert}
	if cfg.CAFile == "" {
		c.tls.InsecureSkipVerify = true
	} else if pem, err := os.ReadFile(cfg.CAFile); err != nil {
		c.err = fmt.Errorf("kubelet certificate authority: %w", err)
	} else {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			c.err = fmt.Errorf("kubelet certificate authority %s: no certificates found", cfg.CAFile)
		}
		c.tls.RootCAs = pool
	}
	c.http = &http.Client{Transport: &http.Transport{
		TLSClientConfig:     c.tls,
		DialContext:         (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: cfg.DialTimeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}}
	return c
}

func (c *Client) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c.cfg.CertFile == "" {
		return &tls.Certificate{}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := os.Stat(c.cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("kubelet client certificate: %w", err)
	}
	if c.cert != nil && st.ModTime().Equal(c.mtime) {
		return c.cert, nil
	}
	pair, err := tls.LoadX509KeyPair(c.cfg.CertFile, c.cfg.KeyFile)
	if err != nil {
		if c.cert != nil {
			return c.cert, nil // keep the last good pair while a rotation is half written
		}
		return nil, fmt.Errorf("kubelet client certificate: %w", err)
	}
	c.cert, c.mtime = &pair, st.ModTime()
	return c.cert, nil
}

// Error is a kubelet's refusal: its HTTP status and the message it sent.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("kubelet: %s", http.StatusText(e.Code))
	}
	return e.Message
}

// Address is the host:port of node's kubelet: its first InternalIP (then
// ExternalIP, then Hostname) and status.daemonEndpoints.kubeletEndpoint.Port.
func Address(node *corev1.Node) (string, error) {
	if node == nil {
		return "", errors.New("no node")
	}
	var host string
	for _, t := range []string{"InternalIP", "ExternalIP", "Hostname"} {
		for _, a := range node.GetStatus().GetAddresses() {
			if a.GetType() == t && a.GetAddress() != "" {
				host = a.GetAddress()
				break
			}
		}
		if host != "" {
			break
		}
	}
	if host == "" {
		return "", fmt.Errorf("node %q has no address", node.GetMetadata().GetName())
	}
	port := int(node.GetStatus().GetDaemonEndpoints().GetKubeletEndpoint().GetPort())
	if port <= 0 {
		port = DefaultPort
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// URL is the https URL of path on node's kubelet.
func URL(node *corev1.Node, path string, query url.Values) (*url.URL, error) {
	addr, err := Address(node)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return &url.URL{Scheme: "https", Host: addr, Path: path, RawQuery: query.Encode()}, nil
}

// Get sends GET path?query to node's kubelet. A 2xx response is returned
// for the caller to read and close; any other status is an *Error carrying
// the kubelet's message. Cancelling ctx ends the request, a followed log
// included.
func (c *Client) Get(ctx context.Context, node *corev1.Node, path string, query url.Values) (*http.Response, error) {
	if c.err != nil {
		return nil, c.err
	}
	u, err := URL(node, path, query)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kubelet on node %q: %w", node.GetMetadata().GetName(), err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, statusError(resp)
	}
	return resp, nil
}

// Dial opens a websocket to path?query on node's kubelet, asking for
// subprotocols (the kubelet picks one: conn.Subprotocol()). A refused
// upgrade is an *Error carrying the kubelet's message. ctx bounds the
// handshake only; close the connection to end the stream.
func (c *Client) Dial(ctx context.Context, node *corev1.Node, path string, query url.Values, subprotocols []string) (*websocket.Conn, error) {
	if c.err != nil {
		return nil, c.err
	}
	u, err := URL(node, path, query)
	if err != nil {
		return nil, err
	}
	u.Scheme = "wss"
	d := &websocket.Dialer{
		TLSClientConfig:  c.tls,
		HandshakeTimeout: c.cfg.DialTimeout,
		Subprotocols:     subprotocols,
		NetDialContext:   (&net.Dialer{Timeout: c.cfg.DialTimeout}).DialContext,
	}
	conn, resp, err := d.DialContext(ctx, u.String(), nil)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			defer resp.Body.Close()
			return nil, statusError(resp)
		}
		return nil, fmt.Errorf("kubelet on node %q: %w", node.GetMetadata().GetName(), err)
	}
	return conn, nil
}

func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return &Error{Code: resp.StatusCode, Message: strings.TrimSpace(string(b))}
}
