package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func readAll(t *testing.T, b *Bundle) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range []string{b.CACert, b.CAKey, b.ServerCert, b.ServerKey, b.AdminCert, b.AdminKey} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = string(data)
	}
	return out
}

func parse(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	c, _, err := loadPair(file, file[:len(file)-len(".crt")]+".key")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEnsureKeepsFilesAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	b, err := Ensure(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := readAll(t, b)
	b2, err := Ensure(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	second := readAll(t, b2)
	for name, data := range first {
		if second[name] != data {
			t.Errorf("%s changed on the second Ensure", name)
		}
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v (%v), want 0700", st.Mode().Perm(), err)
	}
	for _, k := range []string{b.CAKey, b.ServerKey, b.AdminKey} {
		if st, err := os.Stat(k); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v (%v), want 0600", k, st.Mode().Perm(), err)
		}
	}
	ca := parse(t, b.CACert)
	if !ca.IsCA || ca.Subject.CommonName != "skiff-ca" || time.Until(ca.NotAfter) < 9*365*24*time.Hour {
		t.Errorf("CA: IsCA %v CN %q NotAfter %v", ca.IsCA, ca.Subject.CommonName, ca.NotAfter)
	}
	admin := parse(t, b.AdminCert)
	if u := UserFromCert(admin); u.Name != "admin" || !slices.Equal(u.Groups, []string{"system:masters"}) {
		t.Errorf("admin user = %+v", u)
	}
	if !slices.Equal(admin.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("admin usage = %v, want clientAuth", admin.ExtKeyUsage)
	}
}

func TestEnsureSANs(t *testing.T) {
	dir := t.TempDir()
	b, err := Ensure(dir, []string{"10.9.8.7", "api.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	srv := parse(t, b.ServerCert)
	if srv.Subject.CommonName != "skiff-apiserver" || !slices.Contains(srv.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("serving cert CN %q usage %v", srv.Subject.CommonName, srv.ExtKeyUsage)
	}
	names := []string{"127.0.0.1", "::1", "localhost", "10.9.8.7", "api.example.com"}
	if h, err := os.Hostname(); err == nil {
		names = append(names, h)
	}
	for _, n := range names {
		if err := srv.VerifyHostname(n); err != nil {
			t.Errorf("serving cert does not cover %s: %v", n, err)
		}
	}
	if err := srv.CheckSignatureFrom(parse(t, b.CACert)); err != nil {
		t.Errorf("serving cert not signed by the CA: %v", err)
	}

	// A new name re-issues the serving cert from the same CA and leaves the
	// rest alone.
	before := readAll(t, b)
	if _, err := Ensure(dir, []string{"10.9.8.7", "api.example.com", "10.0.0.99"}); err != nil {
		t.Fatal(err)
	}
	after := readAll(t, b)
	for _, n := range []string{"ca.crt", "ca.key", "admin.crt", "admin.key"} {
		if before[n] != after[n] {
			t.Errorf("%s changed when only a SAN was added", n)
		}
	}
	if before["apiserver.crt"] == after["apiserver.crt"] {
		t.Fatal("serving cert not re-issued for a new SAN")
	}
	if err := parse(t, b.ServerCert).VerifyHostname("10.0.0.99"); err != nil {
		t.Errorf("re-issued cert lacks the new SAN: %v", err)
	}
}

// handshake runs one TLS handshake over a loopback connection and returns
// the server's view of it; the server's error is what counts, since in TLS
// 1.3 the client finishes before the server has judged its certificate.
func handshake(t *testing.T, srv *tls.Config, client *tls.Config) (tls.ConnectionState, *x509.Certificate, error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, srv)
		err = tc.Handshake()
		done <- result{tc.ConnectionState(), err}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cc := tls.Client(c, client)
	var served *x509.Certificate
	if err := cc.Handshake(); err == nil {
		served = cc.ConnectionState().PeerCertificates[0]
	}
	r := <-done
	return r.state, served, r.err
}

func clientConfig(t *testing.T, caFile string, certPEM, keyPEM []byte) *tls.Config {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if certPEM != nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

func TestServerTLSClients(t *testing.T) {
	b, err := Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ServerTLS(b.ServerCert, b.ServerKey, b.CACert)
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) []byte {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	nodeCert, nodeKey, err := IssueClient(b, "system:node:n1", []string{"system:nodes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		cert, key  []byte
		wantUser   *User
		wantReject bool
	}{
		{"admin", read(b.AdminCert), read(b.AdminKey), &User{Name: "admin", Groups: []string{"system:masters"}}, false},
		{"issued client", nodeCert, nodeKey, &User{Name: "system:node:n1", Groups: []string{"system:nodes"}}, false},
		{"no certificate is let through for the server to refuse", nil, nil, nil, false},
		{"certificate from another CA", read(other.AdminCert), read(other.AdminKey), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, _, err := handshake(t, srv, clientConfig(t, b.CACert, tt.cert, tt.key))
			if tt.wantReject {
				var uerr x509.UnknownAuthorityError
				if err == nil || !errors.As(err, &uerr) {
					t.Fatalf("handshake err = %v, want unknown authority", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantUser == nil {
				if len(state.VerifiedChains) != 0 {
					t.Errorf("verified chains without a client cert")
				}
				return
			}
			if len(state.VerifiedChains) == 0 {
				t.Fatal("no verified client chain")
			}
			u := UserFromCert(state.VerifiedChains[0][0])
			if u.Name != tt.wantUser.Name || !slices.Equal(u.Groups, tt.wantUser.Groups) {
				t.Errorf("user = %+v, want %+v", u, *tt.wantUser)
			}
		})
	}
}

func TestServerTLSRotation(t *testing.T) {
	dir := t.TempDir()
	b, err := Ensure(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ServerTLS(b.ServerCert, b.ServerKey, b.CACert)
	if err != nil {
		t.Fatal(err)
	}
	cli := clientConfig(t, b.CACert, nil, nil)
	_, served, err := handshake(t, srv, cli)
	if err != nil || served == nil {
		t.Fatalf("first handshake: %v", err)
	}
	oldSerial := served.SerialNumber
	// A new SAN makes Ensure write a new serving pair in place.
	if _, err := Ensure(dir, []string{"rotated.example.com"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, served, err = handshake(t, srv, cli)
		if err != nil || served == nil {
			t.Fatalf("handshake during rotation: %v", err)
		}
		if served.SerialNumber.Cmp(oldSerial) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server still serves the old certificate 5s after rotation")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := served.VerifyHostname("rotated.example.com"); err != nil {
		t.Errorf("rotated cert lacks the new SAN: %v", err)
	}
}

func TestServerTLSErrors(t *testing.T) {
	b, err := Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ServerTLS(b.ServerCert, b.ServerKey, filepath.Join(t.TempDir(), "none.crt")); err == nil {
		t.Error("missing client CA accepted")
	}
	if _, err := ServerTLS(b.ServerCert, b.AdminKey, b.CACert); err == nil {
		t.Error("mismatched key accepted")
	}
	if _, err := ServerTLS(b.ServerCert, b.ServerKey, b.ServerKey); err == nil {
		t.Error("a key file as client CA accepted")
	}
}

func TestExpiry(t *testing.T) {
	dir := t.TempDir()
	if _, err := Ensure(dir, nil); err != nil {
		t.Fatal(err)
	}
	got, err := Expiry(dir)
	if err != nil {
		t.Fatal(err)
	}
	year := 365 * 24 * time.Hour
	want := map[string]struct {
		ca       bool
		min, max time.Duration
	}{
		"ca":        {true, 9 * year, 11 * year},
		"apiserver": {false, year - 24*time.Hour, year + 24*time.Hour},
		"admin":     {false, year - 24*time.Hour, year + 24*time.Hour},

		"apiserver-kubelet-client": {false, year - 24*time.Hour, year + 24*time.Hour},
	}
	if len(got) != len(want) {
		t.Fatalf("Expiry = %+v, want %d entries", got, len(want))
	}
	for _, e := range got {
		w, ok := want[e.Name]
		if !ok {
			t.Errorf("unexpected entry %q", e.Name)
			continue
		}
		if left := time.Until(e.NotAfter); e.CA != w.ca || left < w.min || left > w.max {
			t.Errorf("%s: CA %v, %v left; want CA %v, between %v and %v", e.Name, e.CA, left, w.ca, w.min, w.max)
		}
	}
	if _, err := Expiry(filepath.Join(dir, "missing")); err == nil {
		t.Error("Expiry of a missing directory returned no error")
	}
}

// The apiserver's certificate to kubelets is a client certificate of the
// cluster CA (the kubelets' --client-ca-file), CN and O as kubeadm's.
func TestKubeletClientCertificate(t *testing.T) {
	dir := t.TempDir()
	b, err := Ensure(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := loadPair(b.KubeletClientCert, b.KubeletClientKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _, err := loadPair(b.CACert, b.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("not a client certificate of the CA: %v", err)
	}
	if u := UserFromCert(c); u.Name != "kube-apiserver-kubelet-client" || len(u.Groups) != 1 || u.Groups[0] != "system:masters" {
		t.Errorf("user = %+v", u)
	}
	// A second Ensure keeps it.
	before, _ := os.ReadFile(b.KubeletClientCert)
	if _, err := Ensure(dir, nil); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(b.KubeletClientCert); string(after) != string(before) {
		t.Error("Ensure re-issued a valid kubelet client certificate")
	}
}
