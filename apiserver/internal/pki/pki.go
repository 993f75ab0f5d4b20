// Package pki makes and loads the cluster's certificates: a CA, the
// apiserver's serving certificate and the admin's client certificate, in
// <data-dir>/pki, so a fresh apiserver speaks TLS and knows its clients from
// the first start. Serving certificates are reloaded when their files change,
// so they rotate without a restart.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"skiff.dev/apiserver/internal/request"
)

// Bundle names the certificate files in a pki directory.
type Bundle struct {
	Dir                   string
	CACert, CAKey         string
	ServerCert, ServerKey string
	AdminCert, AdminKey   string
	// KubeletClientCert is what the apiserver presents to kubelets
	// (kubeadm's apiserver-kubelet-client.crt).
	KubeletClientCert, KubeletClientKey string
}

func bundle(dir string) *Bundle {
	p := func(n string) string { return filepath.Join(dir, n) }
	return &Bundle{Dir: dir,
		CACert: p("ca.crt"), CAKey: p("ca.key"),
		ServerCert: p("apiserver.crt"), ServerKey: p("apiserver.key"),
		AdminCert: p("admin.crt"), AdminKey: p("admin.key"),
		KubeletClientCert: p("apiserver-kubelet-client.crt"), KubeletClientKey: p("apiserver-kubelet-client.key"),
	}
}

// Ensure creates what is missing in dir: the CA (10 years), the apiserver's
// serving certificate (1 year; SANs 127.0.0.1, ::1, localhost, the host's
// name and addresses, and extraSANs), the admin client certificate
// (CN admin, O system:masters, 1 year) and the apiserver's client
// certificate to kubelets (CN kube-apiserver-kubelet-client, O
// system:masters, 1 year). Existing files are kept, except a
// serving certificate that lacks a wanted name, which is re-issued.
func Ensure(dir string, extraSANs []string) (*Bundle, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki directory: %w", err)
	}
	b := bundle(dir)
	if !exists(b.CACert) || !exists(b.CAKey) {
		if err := newCA(b); err != nil {
			return nil, fmt.Errorf("create CA: %w", err)
		}
	}
	ca, caKey, err := loadPair(b.CACert, b.CAKey)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	ips, dns := wantedSANs(extraSANs)
	if cur, _, err := loadPair(b.ServerCert, b.ServerKey); err != nil || !covers(cur, ips, dns) || cur.CheckSignatureFrom(ca) != nil {
		tmpl := leaf("skiff-apiserver", nil, x509.ExtKeyUsageServerAuth, 365*24*time.Hour)
		tmpl.IPAddresses, tmpl.DNSNames = ips, dns
		if err := issue(tmpl, ca, caKey, b.ServerCert, b.ServerKey); err != nil {
			return nil, fmt.Errorf("issue serving certificate: %w", err)
		}
	}
	// An admin certificate from a CA that has since been replaced would
	// lock the admin out, so it is re-issued like the serving one.
	if cur, _, err := loadPair(b.AdminCert, b.AdminKey); err != nil || cur.CheckSignatureFrom(ca) != nil {
		tmpl := leaf("admin", []string{"system:masters"}, x509.ExtKeyUsageClientAuth, 365*24*time.Hour)
		if err := issue(tmpl, ca, caKey, b.AdminCert, b.AdminKey); err != nil {
			return nil, fmt.Errorf("issue admin certificate: %w", err)
		}
	}
	// The kubelets' client CA is this CA: a certificate from an older one
	// would be refused by every kubelet.
	if cur, _, err := loadPair(b.KubeletClientCert, b.KubeletClientKey); err != nil || cur.CheckSignatureFrom(ca) != nil || !time.Now().Before(cur.NotAfter.Add(-24*time.Hour)) {
		tmpl := leaf(KubeletClientUser, []string{"system:masters"}, x509.ExtKeyUsageClientAuth, 365*24*time.Hour)
		if err := issue(tmpl, ca, caKey, b.KubeletClientCert, b.KubeletClientKey); err != nil {
			return nil, fmt.Errorf("issue kubelet client certificate: %w", err)
		}
	}
	return b, nil
}

// KubeletClientUser is the apiserver's name to kubelets, kubeadm's.
const KubeletClientUser = "kube-apiserver-kubelet-client"

// IssueClient signs a client certificate for user in groups.
func IssueClient(b *Bundle, user string, groups []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if user == "" {
		return nil, nil, errors.New("issue client certificate: empty user name")
	}
	ca, caKey, err := loadPair(b.CACert, b.CAKey)
	if err != nil {
		return nil, nil, fmt.Errorf("load CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue client certificate: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf(user, groups, x509.ExtKeyUsageClientAuth, validity), ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("issue client certificate for %q: %w", user, err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue client certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

func leaf(cn string, orgs []string, usage x509.ExtKeyUsage, validity time.Duration) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
}

func newCA(b *Bundle) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "skiff-ca"},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	return write(der, key, b.CACert, b.CAKey)
}

func issue(tmpl, ca *x509.Certificate, caKey crypto.Signer, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	return write(der, key, certFile, keyFile)
}

// write stores the key first and the certificate last, each through a
// rename, so a reader never sees a certificate without its key.
func write(der []byte, key *ecdsa.PrivateKey, certFile, keyFile string) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := atomicWrite(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return atomicWrite(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// atomicWrite goes through a fresh temporary file (created 0600) so a key
// is never readable by others, not even for a moment.
func atomicWrite(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Chmod(mode), f.Close()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func loadPair(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	s, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("private key cannot sign")
	}
	return c, s, nil
}

func wantedSANs(extra []string) ([]net.IP, []string) {
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	dns := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" {
		dns = append(dns, h)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			// Link-local addresses are left out: they need a zone to be
			// dialled and would re-issue the certificate whenever they change.
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
				ips = append(ips, n.IP)
			}
		}
	}
	for _, s := range extra {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, s)
		}
	}
	return dedupIPs(ips), dedup(dns)
}

func dedup(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}

func dedupIPs(ips []net.IP) []net.IP {
	var out []net.IP
	for _, ip := range ips {
		if !slices.ContainsFunc(out, ip.Equal) {
			out = append(out, ip)
		}
	}
	return out
}

func covers(c *x509.Certificate, ips []net.IP, dns []string) bool {
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	for _, d := range dns {
		if !slices.Contains(c.DNSNames, d) {
			return false
		}
	}
	return time.Now().Before(c.NotAfter.Add(-24 * time.Hour))
}

// ServerTLS is the serving configuration: TLS 1.2+, client certificates
// verified against clientCAFile when given (the API itself refuses requests
// without one, so health checks and reflection can answer anonymously), and
// the serving pair reloaded when its files change.
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	r := &reloader{certFile: certFile, keyFile: keyFile}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("--client-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--client-ca-file %s: no certificates found", clientCAFile)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.get() },
		NextProtos:     []string{"h2"},
	}, nil
}

type reloader struct {
	certFile, keyFile string
	mu                sync.Mutex
	cert              *tls.Certificate
	mtime             time.Time
	checked           time.Time
}

func (r *reloader) load() (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	st, err := os.Stat(r.certFile)
	if err != nil {
		return nil, err
	}
	r.cert, r.mtime = &pair, st.ModTime()
	return r.cert, nil
}

func (r *reloader) get() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < time.Second {
		return r.cert, nil
	}
	r.checked = time.Now()
	if st, err := os.Stat(r.certFile); err == nil && !st.ModTime().Equal(r.mtime) {
		old := r.cert
		if _, err := r.load(); err != nil {
			r.cert = old // keep serving the last good pair
		}
	}
	return r.cert, nil
}

// User is a client certificate's identity.
type User = request.User

// UserFromCert maps a verified client certificate to a user: CN, O.
func UserFromCert(c *x509.Certificate) User {
	return User{Name: c.Subject.CommonName, Groups: append([]string(nil), c.Subject.Organization...)}
}

// CertExpiry is one certificate's end of validity.
type CertExpiry struct {
	Name     string
	NotAfter time.Time
	CA       bool
}

// Expiry lists the certificates in dir with their expiry.
func Expiry(dir string) ([]CertExpiry, error) {
	// Glob finds nothing in a missing directory; say so rather than report
	// an empty, healthy-looking list.
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("certificate directory: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.crt"))
	if err != nil {
		return nil, err
	}
	var out []CertExpiry
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		block, _ := pem.Decode(data)
		if block == nil {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, CertExpiry{Name: strings.TrimSuffix(filepath.Base(f), ".crt"), NotAfter: c.NotAfter, CA: c.IsCA})
	}
	return out, nil
}
