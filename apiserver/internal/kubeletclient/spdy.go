package kubeletclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"

	corev1 "skiff.dev/proto/api/core/v1"
)

// headerProtocolVersion is upstream's httpstream.HeaderProtocolVersion:
// the client offers its stream protocols in it and the server answers
// with the one it chose.
const headerProtocolVersion = "X-Stream-Protocol-Version"

// spdyPingPeriod keeps an idle stream's connection alive, as client-go's
// SPDY round tripper does for kubectl exec.
const spdyPingPeriod = 5 * time.Second

// DialSPDY upgrades POST path?query on node's kubelet to SPDY/3.1,
// offering protocols (X-Stream-Protocol-Version), and returns the
// connection and the protocol the far end chose ("" if it chose none).
// The caller creates the streams on it. SPDY, unlike the websocket, lets
// each stream be half-closed, so a command's stdin can end on its own. A
// refused upgrade is an *Error carrying the kubelet's message. ctx bounds
// the handshake only; close the connection to end the streams.
func (c *Client) DialSPDY(ctx context.Context, node *corev1.Node, path string, query url.Values, protocols []string) (httpstream.Connection, string, error) {
	if c.err != nil {
		return nil, "", c.err
	}
	u, err := URL(node, path, query)
	if err != nil {
		return nil, "", err
	}
	fail := func(err error) (httpstream.Connection, string, error) {
		return nil, "", fmt.Errorf("kubelet on node %q: %w", node.GetMetadata().GetName(), err)
	}
	hctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(hctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set(httpstream.HeaderConnection, httpstream.HeaderUpgrade)
	req.Header.Set(httpstream.HeaderUpgrade, spdy.HeaderSpdy31)
	for _, p := range protocols {
		req.Header.Add(headerProtocolVersion, p)
	}
	// SPDY runs over HTTP/1.1's upgrade: never let ALPN pick h2.
	cfg := c.tls.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: c.cfg.DialTimeout}, Config: cfg}
	conn, err := d.DialContext(hctx, "tcp", u.Host)
	if err != nil {
		return fail(err)
	}
	if dl, ok := hctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(hctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	br := bufio.NewReader(conn)
	resp, err := func() (*http.Response, error) {
		if err := req.Write(conn); err != nil {
			return nil, err
		}
		return http.ReadResponse(br, req)
	}()
	if !stop() || err != nil {
		conn.Close()
		if err == nil {
			err = hctx.Err()
		}
		return fail(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		defer resp.Body.Close()
		return nil, "", statusError(resp)
	}
	if !strings.EqualFold(resp.Header.Get(httpstream.HeaderUpgrade), spdy.HeaderSpdy31) {
		conn.Close()
		return fail(fmt.Errorf("the upgrade answered %q, want %s", resp.Header.Get(httpstream.HeaderUpgrade), spdy.HeaderSpdy31))
	}
	conn.SetDeadline(time.Time{})
	sc, err := spdy.NewClientConnectionWithPings(&bufferedConn{Conn: conn, r: br}, spdyPingPeriod)
	if err != nil {
		conn.Close()
		return fail(err)
	}
	return sc, resp.Header.Get(headerProtocolVersion), nil
}

// bufferedConn reads what the handshake's reader already buffered before
// the rest of the connection.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
