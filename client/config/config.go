// Package config reads and writes Skiff's client configuration, in
// kubeconfig's format (clusters, users, contexts, current-context), so the
// file the apiserver writes as admin.conf is one kubectl users can read.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"sigs.k8s.io/yaml"
)

// Config is a kubeconfig file.
type Config struct {
	APIVersion     string         `json:"apiVersion"`
	Kind           string         `json:"kind"`
	Clusters       []NamedCluster `json:"clusters"`
	Users          []NamedUser    `json:"users"`
	Contexts       []NamedContext `json:"contexts"`
	CurrentContext string         `json:"current-context"`
	// dir resolves relative certificate paths, as kubectl does.
	dir string
}

// NamedCluster is one entry of clusters.
type NamedCluster struct {
	Name    string  `json:"name"`
	Cluster Cluster `json:"cluster"`
}

// Cluster says where an apiserver is and which CA vouches for it.
type Cluster struct {
	Server                   string `json:"server"`
	CertificateAuthority     string `json:"certificate-authority,omitempty"`
	CertificateAuthorityData []byte `json:"certificate-authority-data,omitempty"`
	TLSServerName            string `json:"tls-server-name,omitempty"`
}

// NamedUser is one entry of users.
type NamedUser struct {
	Name string `json:"name"`
	User User   `json:"user"`
}

// User holds a client certificate and key, inline (…-data) or as files,
// and/or a bearer token, inline or as a file re-read as it rotates.
type User struct {
	ClientCertificate     string `json:"client-certificate,omitempty"`
	ClientCertificateData []byte `json:"client-certificate-data,omitempty"`
	ClientKey             string `json:"client-key,omitempty"`
	ClientKeyData         []byte `json:"client-key-data,omitempty"`
	Token                 string `json:"token,omitempty"`
	TokenFile             string `json:"tokenFile,omitempty"`
}

// NamedContext is one entry of contexts.
type NamedContext struct {
	Name    string  `json:"name"`
	Context Context `json:"context"`
}

// Context pairs a cluster with a user and a default namespace.
type Context struct {
	Cluster   string `json:"cluster"`
	User      string `json:"user"`
	Namespace string `json:"namespace,omitempty"`
}

// EnvVar names the environment variable that points at the config file.
const EnvVar = "SKIFFCONFIG"

// Path picks the file: the flag, else the first entry of $SKIFFCONFIG, else
// ~/.skiff/config.
func Path(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv(EnvVar); env != "" {
		return strings.Split(env, string(os.PathListSeparator))[0]
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".skiff", "config")
}

// Load reads a config file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	var c Config
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	c.dir = filepath.Dir(path)
	return &c, nil
}

// Write stores the config with mode 0600, replacing the file atomically.
func (c *Config) Write(path string) error {
	if c.APIVersion == "" {
		c.APIVersion = "v1"
	}
	if c.Kind == "" {
		c.Kind = "Config"
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("client config %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	// A temporary file in the same directory, renamed over the target, so a
	// reader never sees half a file and two writers never share a temp name.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("client config: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("client config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	return nil
}

// NewAdmin is the admin's config for one cluster: cluster "skiff", user
// "admin", context "admin@skiff".
func NewAdmin(server string, caPEM, certPEM, keyPEM []byte) *Config {
	return &Config{
		APIVersion: "v1", Kind: "Config",
		Clusters:       []NamedCluster{{Name: "skiff", Cluster: Cluster{Server: server, CertificateAuthorityData: caPEM}}},
		Users:          []NamedUser{{Name: "admin", User: User{ClientCertificateData: certPEM, ClientKeyData: keyPEM}}},
		Contexts:       []NamedContext{{Name: "admin@skiff", Context: Context{Cluster: "skiff", User: "admin"}}},
		CurrentContext: "admin@skiff",
	}
}

// Resolved is a context ready to dial.
type Resolved struct {
	Context   string
	Server    string // host:port
	Namespace string
	User      string
	TLS       *tls.Config
	// CA is the PEM bundle that vouches for the server (what the
	// controller-manager publishes as kube-root-ca.crt when it has no
	// --root-ca-file).
	CA []byte
	// BearerToken, or else BearerTokenFile (re-read every minute, as
	// client-go does, so a token the kubelet rotates is picked up), is sent
	// as "authorization: Bearer …" on every call.
	BearerToken     string
	BearerTokenFile string

	creds *tokenCredentials // shared by every Dial of this Resolved
}

// Context returns the named context ("" = current).
func (c *Config) Context(name string) (*NamedContext, error) {
	if name == "" {
		name = c.CurrentContext
	}
	if name == "" {
		return nil, errors.New("no current context is set in the client config; use --context")
	}
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i], nil
		}
	}
	return nil, fmt.Errorf("context %q not found in the client config", name)
}

// Resolve loads a context's server and credentials.
func (c *Config) Resolve(context string) (*Resolved, error) {
	ctx, err := c.Context(context)
	if err != nil {
		return nil, err
	}
	var cl *Cluster
	for i := range c.Clusters {
		if c.Clusters[i].Name == ctx.Context.Cluster {
			cl = &c.Clusters[i].Cluster
		}
	}
	if cl == nil {
		return nil, fmt.Errorf("context %q: cluster %q not found", ctx.Name, ctx.Context.Cluster)
	}
	var u *User
	for i := range c.Users {
		if c.Users[i].Name == ctx.Context.User {
			u = &c.Users[i].User
		}
	}
	if u == nil {
		return nil, fmt.Errorf("context %q: user %q not found", ctx.Name, ctx.Context.User)
	}
	server := cl.Server
	for _, p := range []string{"https://", "http://"} {
		server = strings.TrimPrefix(server, p)
	}
	server = strings.TrimSuffix(server, "/")
	if server == "" {
		return nil, fmt.Errorf("context %q: cluster %q has no server", ctx.Name, ctx.Context.Cluster)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cl.TLSServerName}
	ca, err := c.bytes(cl.CertificateAuthorityData, cl.CertificateAuthority)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: certificate-authority: %w", ctx.Context.Cluster, err)
	}
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("cluster %q: certificate-authority: no certificates found", ctx.Context.Cluster)
		}
		tc.RootCAs = pool
	}
	cert, err := c.bytes(u.ClientCertificateData, u.ClientCertificate)
	if err != nil {
		return nil, fmt.Errorf("user %q: client-certificate: %w", ctx.Context.User, err)
	}
	key, err := c.bytes(u.ClientKeyData, u.ClientKey)
	if err != nil {
		return nil, fmt.Errorf("user %q: client-key: %w", ctx.Context.User, err)
	}
	if len(cert) > 0 {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", ctx.Context.User, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	if tc.ServerName == "" {
		host := server
		if h, _, err := net.SplitHostPort(server); err == nil {
			host = h
		}
		tc.ServerName = strings.Trim(host, "[]")
	}
	ns := ctx.Context.Namespace
	if ns == "" {
		ns = "default"
	}
	tokenFile := u.TokenFile
	if tokenFile != "" && !filepath.IsAbs(tokenFile) && c.dir != "" {
		tokenFile = filepath.Join(c.dir, tokenFile)
	}
	return &Resolved{Context: ctx.Name, Server: server, Namespace: ns, User: ctx.Context.User, TLS: tc, CA: ca,
		BearerToken: u.Token, BearerTokenFile: tokenFile}, nil
}

func (c *Config) bytes(data []byte, file string) ([]byte, error) {
	if len(data) > 0 || file == "" {
		return data, nil
	}
	if !filepath.IsAbs(file) && c.dir != "" {
		file = filepath.Join(c.dir, file)
	}
	return os.ReadFile(file)
}

// Dial opens a gRPC connection over TLS; it does not block.
func (r *Resolved) Dial(opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(r.TLS)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(512 << 20)),
	}
	if r.BearerToken != "" || r.BearerTokenFile != "" {
		base = append(base, grpc.WithPerRPCCredentials(r.tokenCreds()))
	}
	opts = append(base, opts...)
	return grpc.NewClient(r.Server, opts...)
}

// Open loads the client config at flag's path (Path: $SKIFFCONFIG, then
// ~/.skiff/config when flag is empty), resolves its current context and
// dials it: what each component's Run does first.
func Open(flag string, opts ...grpc.DialOption) (*Resolved, *grpc.ClientConn, error) {
	c, err := Load(Path(flag))
	if err != nil {
		return nil, nil, err
	}
	r, err := c.Resolve("")
	if err != nil {
		return nil, nil, err
	}
	conn, err := r.Dial(opts...)
	if err != nil {
		return nil, nil, err
	}
	return r, conn, nil
}
