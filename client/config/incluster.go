package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ServiceAccountDir is where the ServiceAccount admission plugin mounts a
// pod's token, ca.crt and namespace; a variable so tests can stand a
// directory of their own in for it.
var ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// ErrNotInCluster is client-go's answer outside a pod.
var ErrNotInCluster = errors.New("unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined")

// InClusterConfig is client-go's rest.InClusterConfig: the apiserver at
// $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, verified with the
// mounted ca.crt, authenticated by the mounted token (re-read as the
// kubelet rotates it), in the pod's namespace ($POD_NAMESPACE, else the
// mounted namespace file, else "default", as clientcmd does).
func InClusterConfig() (*Resolved, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, ErrNotInCluster
	}
	tokenFile := filepath.Join(ServiceAccountDir, "token")
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(string(token)) == "" {
		return nil, fmt.Errorf("%s is empty", tokenFile)
	}
	caFile := filepath.Join(ServiceAccountDir, "ca.crt")
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("in-cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no certificates found", caFile)
	}
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		if b, err := os.ReadFile(filepath.Join(ServiceAccountDir, "namespace")); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	}
	if ns == "" {
		ns = "default"
	}
	return &Resolved{
		Context:         "in-cluster",
		Server:          net.JoinHostPort(host, port),
		Namespace:       ns,
		TLS:             &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: strings.Trim(host, "[]")},
		CA:              ca,
		BearerTokenFile: tokenFile,
	}, nil
}

// tokenRefresh is how long a token read from a file is used before the file
// is read again: client-go's minute.
var tokenRefresh = time.Minute

// tokenCredentials send a bearer token with every call.
type tokenCredentials struct {
	static string
	path   string
	now    func() time.Time

	mu   sync.Mutex
	tok  string
	read time.Time
}

var credsMu sync.Mutex

// tokenCreds are r's bearer-token credentials, made on first use so that
// every connection of r reads the token file on the same schedule.
func (r *Resolved) tokenCreds() *tokenCredentials {
	credsMu.Lock()
	defer credsMu.Unlock()
	if r.creds == nil {
		r.creds = &tokenCredentials{static: r.BearerToken, path: r.BearerTokenFile, now: time.Now}
	}
	return r.creds
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c *tokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := c.token()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity: a token is a password; never send it in clear.
func (c *tokenCredentials) RequireTransportSecurity() bool { return true }

func (c *tokenCredentials) token() (string, error) {
	if c.path == "" {
		return c.static, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.tok != "" && now.Sub(c.read) < tokenRefresh {
		return c.tok, nil
	}
	b, err := os.ReadFile(c.path)
	tok := strings.TrimSpace(string(b))
	switch {
	case err == nil && tok != "":
		c.tok, c.read = tok, now
	case c.tok != "":
		// The kubelet swaps the file atomically, but a read can still
		// fail: keep the last token rather than fail the call, as
		// client-go's caching token source does.
	case err != nil:
		return "", fmt.Errorf("reading bearer token: %w", err)
	default:
		return "", fmt.Errorf("bearer token file %s is empty", c.path)
	}
	return c.tok, nil
}
