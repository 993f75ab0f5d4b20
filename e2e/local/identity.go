package local

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"skiff.dev/client/config"
)

// Upstream's identities of the components (what RBAC's bootstrap policy
// grants to, once it exists): the user is the certificate's CN, the groups
// its O.
const (
	schedulerUser         = "system:kube-scheduler"
	controllerManagerUser = "system:kube-controller-manager"
	nodesGroup            = "system:nodes"
)

func nodeUser(name string) string { return "system:node:" + name }

// writeIdentityKubeconfig writes out, a client config for server whose
// user holds a client certificate for user in groups, signed by the
// cluster CA the apiserver made under <dir>/apiserver/pki.
func writeIdentityKubeconfig(dir, server, user string, groups []string, out string) error {
	pki := filepath.Join(dir, "apiserver", "pki")
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(filepath.Join(pki, "ca.key"))
	if err != nil {
		return err
	}
	cb, _ := pem.Decode(caPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return errors.New("cluster CA: no PEM block in ca.crt or ca.key")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return fmt.Errorf("cluster CA: %w", err)
	}
	caKey, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return fmt.Errorf("cluster CA key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: user, Organization: groups},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	k, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	cfg := config.NewAdmin(server, caPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: k}))
	cfg.Users[0].Name = user
	cfg.Contexts[0].Name = user + "@skiff"
	cfg.Contexts[0].Context.User = user
	cfg.CurrentContext = cfg.Contexts[0].Name
	return cfg.Write(out)
}
