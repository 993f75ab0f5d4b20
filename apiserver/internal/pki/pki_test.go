package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"slices"
	"testing"
	"time"
)

func handshake(t *testing.T, server *tls.Config, client *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer := make(chan *x509.Certificate, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			peer <- nil
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if tc.Handshake() != nil || len(tc.ConnectionState().VerifiedChains) == 0 {
			peer <- nil
			return
		}
		peer <- tc.ConnectionState().VerifiedChains[0][0]
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), client)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.Write([]byte("x"))
	return <-peer, nil
}

func TestEnsureHandshakeAndUser(t *testing.T) {
	dir := t.TempDir()
	b, err := Ensure(dir, []string{"skiff.example", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(b.CAKey)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("ca.key mode %v", st.Mode())
	}
	before, _ := os.ReadFile(b.ServerCert)
	if _, err := Ensure(dir, []string{"skiff.example", "10.1.2.3"}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(b.ServerCert)
	if string(before) != string(after) {
		t.Error("Ensure re-issued a serving certificate that was fine")
	}
	srv, _, _ := loadPair(b.ServerCert, b.ServerKey)
	if !slices.Contains(srv.DNSNames, "skiff.example") || !slices.ContainsFunc(srv.IPAddresses, net.ParseIP("10.1.2.3").Equal) {
		t.Errorf("SANs: %v %v", srv.DNSNames, srv.IPAddresses)
	}
	serverTLS, err := ServerTLS(b.ServerCert, b.ServerKey, b.CACert)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(b.CACert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	admin, err := tls.LoadX509KeyPair(b.AdminCert, b.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := handshake(t, serverTLS, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{admin}})
	if err != nil || cert == nil {
		t.Fatalf("handshake with the admin certificate: %v", err)
	}
	if u := UserFromCert(cert); u.Name != "admin" || !slices.Equal(u.Groups, []string{"system:masters"}) {
		t.Errorf("user %+v", u)
	}
	// A certificate from another CA is not verified.
	other, _ := Ensure(t.TempDir(), nil)
	stranger, _ := tls.LoadX509KeyPair(other.AdminCert, other.AdminKey)
	if cert, _ := handshake(t, serverTLS, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{stranger}}); cert != nil {
		t.Error("a certificate of another CA was accepted")
	}
	// A new SAN re-issues the serving certificate; the server picks it up.
	if _, err := Ensure(dir, []string{"new.example"}); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2 * time.Second)
	os.Chtimes(b.ServerCert, later, later)
	time.Sleep(1100 * time.Millisecond)
	got, err := serverTLS.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(got.Certificate[0])
	if !slices.Contains(leaf.DNSNames, "new.example") {
		t.Errorf("rotated certificate not served: %v", leaf.DNSNames)
	}
	exp, err := Expiry(dir)
	if err != nil || len(exp) != 3 {
		t.Fatalf("expiry: %v %v", exp, err)
	}
}
