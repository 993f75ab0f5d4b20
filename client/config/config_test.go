package config

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

// testCA is a throwaway CA that signs the test's server and client pairs.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage, ips ...net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func TestLoadKubectlFile(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, "admin", x509.ExtKeyUsageClientAuth)
	dir := t.TempDir()
	// Shaped as `kubectl config view --raw` prints it, with relative paths
	// for the client pair to check they resolve against the file's dir.
	if err := os.WriteFile(filepath.Join(dir, "admin.crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin.key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	file := `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: ` + base64.StdEncoding.EncodeToString(ca.pem) + `
    server: https://127.0.0.1:6443
  name: skiff
contexts:
- context:
    cluster: skiff
    namespace: web
    user: admin
  name: admin@skiff
current-context: admin@skiff
kind: Config
preferences: {}
users:
- name: admin
  user:
    client-certificate: admin.crt
    client-key: admin.key
`
	path := filepath.Join(dir, "config")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(c.Clusters[0].Cluster.CertificateAuthorityData); got != string(ca.pem) {
		t.Errorf("certificate-authority-data not decoded: %q", got)
	}
	r, err := c.Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	if r.Server != "127.0.0.1:6443" || r.Namespace != "web" || r.Context != "admin@skiff" {
		t.Errorf("Resolve = server %q namespace %q context %q", r.Server, r.Namespace, r.Context)
	}
	if len(r.TLS.Certificates) != 1 || r.TLS.RootCAs == nil || r.TLS.ServerName != "127.0.0.1" {
		t.Errorf("TLS: %d client certs, roots %v, server name %q", len(r.TLS.Certificates), r.TLS.RootCAs != nil, r.TLS.ServerName)
	}
	if string(r.CA) != string(ca.pem) {
		t.Errorf("Resolved.CA = %q, want the cluster's CA", r.CA)
	}

	// Round trip: what Write produces, Load reads back the same.
	out := filepath.Join(dir, "sub", "copy")
	if err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "certificate-authority-data: "+base64.StdEncoding.EncodeToString(ca.pem)) {
		t.Errorf("written file lacks base64 certificate-authority-data:\n%s", data)
	}
	back, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if back.CurrentContext != "admin@skiff" || back.Contexts[0].Context.Namespace != "web" ||
		back.Users[0].User.ClientCertificate != "admin.crt" || back.Clusters[0].Cluster.Server != "https://127.0.0.1:6443" {
		t.Errorf("round trip lost fields: %+v", back)
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("clusters: [unterminated"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{bad, filepath.Join(dir, "missing")} {
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("Load(%s) = %v, want an error naming the file", p, err)
		}
	}
}

func TestPath(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	sep := string(os.PathListSeparator)
	tests := []struct {
		name, flag, env, want string
	}{
		{"flag wins", "/flag/config", "/env/a" + sep + "/env/b", "/flag/config"},
		{"first env entry", "", "/env/a" + sep + "/env/b", "/env/a"},
		{"home default", "", "", filepath.Join(home, ".skiff", "config")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvVar, tt.env)
			if got := Path(tt.flag); got != tt.want {
				t.Errorf("Path(%q) = %q, want %q", tt.flag, got, tt.want)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	base := func() *Config { return NewAdmin("https://127.0.0.1:6443", nil, nil, nil) }
	tests := []struct {
		name    string
		edit    func(*Config)
		context string
		want    string
	}{
		{"unknown context", func(*Config) {}, "x", `context "x" not found`},
		{"no current context", func(c *Config) { c.CurrentContext = "" }, "", "no current context"},
		{"missing cluster", func(c *Config) { c.Clusters = nil }, "", `cluster "skiff" not found`},
		{"missing user", func(c *Config) { c.Users = nil }, "", `user "admin" not found`},
		{"no server", func(c *Config) { c.Clusters[0].Cluster.Server = "" }, "", "has no server"},
		{"bad CA", func(c *Config) { c.Clusters[0].Cluster.CertificateAuthorityData = []byte("junk") }, "", "no certificates found"},
		{"missing cert file", func(c *Config) { c.Users[0].User.ClientCertificate = "/nonexistent/admin.crt" }, "", "/nonexistent/admin.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.edit(c)
			_, err := c.Resolve(tt.context)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Resolve = %v, want error containing %q", err, tt.want)
			}
		})
	}
	r, err := base().Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	if r.Namespace != "default" {
		t.Errorf("namespace = %q, want default", r.Namespace)
	}
}

func TestDial(t *testing.T) {
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue(t, "server", x509.ExtKeyUsageServerAuth, net.ParseIP("127.0.0.1"))
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
	})))
	clientCN := make(chan string, 1)
	healthpb.RegisterHealthServer(gs, healthChecker{health.NewServer(), clientCN})
	go gs.Serve(lis)
	defer gs.Stop()

	cliCert, cliKey := ca.issue(t, "admin", x509.ExtKeyUsageClientAuth)
	r, err := NewAdmin("https://"+lis.Addr().String(), ca.pem, cliCert, cliKey).Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := r.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("status %v, want SERVING", resp.Status)
	}
	// The handler sends before it answers, so the name is here by now.
	select {
	case cn := <-clientCN:
		if cn != "admin" {
			t.Errorf("server saw client %q, want admin", cn)
		}
	default:
		t.Error("server saw no client certificate")
	}

	// A client that trusts another CA must not get through.
	other := newTestCA(t)
	r2, err := NewAdmin("https://"+lis.Addr().String(), other.pem, cliCert, cliKey).Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	conn2, err := r2.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if _, err := healthpb.NewHealthClient(conn2).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("a client trusting another CA reached the server")
	}
}

// healthChecker records the client certificate's CN the server saw.
type healthChecker struct {
	*health.Server
	cn chan<- string
}

func (h healthChecker) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			select {
			case h.cn <- ti.State.PeerCertificates[0].Subject.CommonName:
			default:
			}
		}
	}
	return h.Server.Check(ctx, req)
}
