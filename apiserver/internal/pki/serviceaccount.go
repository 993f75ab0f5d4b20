package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ServiceAccountKeyFile is the service-account signing key's name in a pki
// directory, kubeadm's.
const ServiceAccountKeyFile = "sa.key"

// EnsureServiceAccountKey returns the path of dir/sa.key, creating an ECDSA
// P-256 key there (mode 0600) on first use. It is a key of its own, not the
// CA's: tokens and certificates rotate independently, and a leaked token key
// cannot mint certificates.
func EnsureServiceAccountKey(dir string) (string, error) {
	path := filepath.Join(dir, ServiceAccountKeyFile)
	if exists(path) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("pki directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	if err := atomicWrite(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// LoadSigner reads the first private key (RSA or ECDSA; PKCS#1, SEC 1 or
// PKCS#8) of a PEM file: --service-account-signing-key-file.
func LoadSigner(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if k, err := parsePrivate(block); err == nil && k != nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s: no RSA or ECDSA private key found", path)
}

// LoadPublicKeys reads every public key of a PEM file, as upstream's
// --service-account-key-file: public keys, certificates, and private keys
// (whose public half is taken).
func LoadPublicKeys(path string) ([]crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []crypto.PublicKey
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		switch block.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			keys = append(keys, k)
		case "RSA PUBLIC KEY":
			k, err := x509.ParsePKCS1PublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			keys = append(keys, k)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			keys = append(keys, c.PublicKey)
		default:
			k, err := parsePrivate(block)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if k != nil {
				keys = append(keys, k.Public())
			}
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no public keys found", path)
	}
	return keys, nil
}

// parsePrivate decodes a private-key block; nil, nil for other blocks.
func parsePrivate(b *pem.Block) (crypto.Signer, error) {
	switch b.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, err
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		}
		return nil, errors.New("PKCS#8 key is neither RSA nor ECDSA")
	}
	return nil, nil
}
