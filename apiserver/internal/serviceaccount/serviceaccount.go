// Package serviceaccount issues and verifies the apiserver's service-account
// tokens: JWTs signed with the service-account key, bound to a pod, with
// upstream's claims (k8s.io/kubernetes/pkg/serviceaccount), so that tokens
// read by upstream tools (and TokenReviews) look the same.
package serviceaccount

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"

	"skiff.dev/apiserver/internal/request"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
)

// Upstream's names for a service account's identity.
const (
	UsernamePrefix   = "system:serviceaccount:"
	AllGroup         = "system:serviceaccounts"
	NamespaceGroupOf = "system:serviceaccounts:"

	// Extra keys of a pod-bound token's user.
	PodNameKey      = "authentication.kubernetes.io/pod-name"
	PodUIDKey       = "authentication.kubernetes.io/pod-uid"
	NodeNameKey     = "authentication.kubernetes.io/node-name"
	NodeUIDKey      = "authentication.kubernetes.io/node-uid"
	CredentialIDKey = "authentication.kubernetes.io/credential-id"
)

// DefaultIssuer is upstream's conventional --service-account-issuer.
const DefaultIssuer = "https://kubernetes.default.svc.cluster.local"

// Username is "system:serviceaccount:<ns>:<name>".
func Username(namespace, name string) string {
	return UsernamePrefix + namespace + ":" + name
}

// Ref names one object a token is bound to.
type Ref struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
}

// kubernetes is upstream's "kubernetes.io" private claim.
type kubernetes struct {
	Namespace      string           `json:"namespace,omitempty"`
	ServiceAccount Ref              `json:"serviceaccount,omitempty"`
	Pod            *Ref             `json:"pod,omitempty"`
	Node           *Ref             `json:"node,omitempty"`
	WarnAfter      *jwt.NumericDate `json:"warnafter,omitempty"`
}

type privateClaims struct {
	Kubernetes kubernetes `json:"kubernetes.io,omitempty"`
}

// Request is what a token is issued for.
type Request struct {
	Namespace      string
	ServiceAccount Ref
	// Pod and Node are set for a token bound to a pod (Node when the pod is
	// scheduled and its node exists).
	Pod, Node *Ref
	Audiences []string
	// Expiration is the token's lifetime.
	Expiration time.Duration
}

// Issuer signs tokens.
type Issuer struct {
	iss    string
	signer jose.Signer
}

// NewIssuer signs with key (RSA: RS256; ECDSA: ES256/384/512 by curve) as iss.
func NewIssuer(iss string, key crypto.Signer) (*Issuer, error) {
	alg, err := algorithm(key.Public())
	if err != nil {
		return nil, err
	}
	kid, err := KeyID(key.Public())
	if err != nil {
		return nil, err
	}
	s, err := jose.NewSigner(jose.SigningKey{
		Algorithm: alg,
		Key:       jose.JSONWebKey{Algorithm: string(alg), Key: key, KeyID: kid, Use: "sig"},
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("service-account signer: %w", err)
	}
	return &Issuer{iss: iss, signer: s}, nil
}

// Issue signs a token for r at now and returns it with its expiry.
func (i *Issuer) Issue(r Request, now time.Time) (string, time.Time, error) {
	now = now.Truncate(time.Second)
	exp := now.Add(r.Expiration)
	pub := jwt.Claims{
		Issuer:    i.iss,
		Subject:   Username(r.Namespace, r.ServiceAccount.Name),
		Audience:  jwt.Audience(r.Audiences),
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(exp),
		ID:        uuid.NewString(),
	}
	priv := privateClaims{Kubernetes: kubernetes{
		Namespace: r.Namespace, ServiceAccount: r.ServiceAccount, Pod: r.Pod, Node: r.Node,
	}}
	tok, err := jwt.Signed(i.signer).Claims(pub).Claims(priv).Serialize()
	if err != nil {
		return "", time.Time{}, apierrors.NewInternal(fmt.Errorf("failed to generate token: %w", err))
	}
	return tok, exp, nil
}

func algorithm(pub crypto.PublicKey) (jose.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return jose.RS256, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
		return "", errors.New("ECDSA key on an unsupported curve")
	}
	return "", fmt.Errorf("unsupported service-account key type %T", pub)
}

// KeyID is upstream's "kid": the unpadded base64url SHA-256 of the public
// key's PKIX encoding, so verifiers can pick the key without trying all.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// Getter reads the objects a token is bound to; an absent one is NotFound.
type Getter interface {
	ServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error)
	Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// Response is an authenticated token.
type Response struct {
	User request.User
	// Audiences are those of the token that the caller accepts.
	Audiences []string
}

// Authenticator verifies tokens.
type Authenticator struct {
	issuers map[string]bool
	keys    []verifyKey
	getter  Getter
	// Now is the clock (tests).
	Now func() time.Time
}

type verifyKey struct {
	kid string
	key crypto.PublicKey
}

// NewAuthenticator accepts tokens from any of issuers signed by any of keys,
// and checks the objects they are bound to through getter.
func NewAuthenticator(issuers []string, keys []crypto.PublicKey, getter Getter) (*Authenticator, error) {
	a := &Authenticator{issuers: map[string]bool{}, getter: getter, Now: time.Now}
	for _, iss := range issuers {
		a.issuers[iss] = true
	}
	for _, k := range keys {
		if _, err := algorithm(k); err != nil {
			return nil, err
		}
		kid, err := KeyID(k)
		if err != nil {
			return nil, err
		}
		a.keys = append(a.keys, verifyKey{kid: kid, key: k})
	}
	return a, nil
}

var algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.ES384, jose.ES512}

// invalidated is upstream's answer for a token whose objects are gone.
var errInvalidated = errors.New("service account token has been invalidated")

// Authenticate verifies token for a caller that accepts audiences. ok is
// false with a nil error for a token that is not one of ours (not a JWT, or
// another issuer's), so the caller can try other authenticators; it is false
// with an error for one of ours that does not pass.
func (a *Authenticator) Authenticate(ctx context.Context, token string, audiences []string) (resp *Response, ok bool, err error) {
	if strings.Count(token, ".") != 2 {
		return nil, false, nil
	}
	tok, err := jwt.ParseSigned(token, algorithms)
	if err != nil {
		return nil, false, nil
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil || !a.issuers[unverified.Issuer] {
		return nil, false, nil
	}
	var pub jwt.Claims
	var priv privateClaims
	if err := a.verify(tok, &pub, &priv); err != nil {
		return nil, false, err
	}
	now := a.Now()
	switch err := pub.Validate(jwt.Expected{Time: now}); {
	case err == nil:
	case errors.Is(err, jwt.ErrExpired):
		return nil, false, errors.New("service account token has expired")
	case errors.Is(err, jwt.ErrNotValidYet):
		return nil, false, errors.New("service account token is not valid yet")
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, false, errors.New("service account token is issued in the future")
	default:
		return nil, false, err
	}
	var accepted []string
	for _, want := range audiences {
		if pub.Audience.Contains(want) {
			accepted = append(accepted, want)
		}
	}
	if len(accepted) == 0 {
		return nil, false, fmt.Errorf("token audiences %q is invalid for the target audiences %q", []string(pub.Audience), audiences)
	}
	k := priv.Kubernetes
	if k.Namespace == "" || k.ServiceAccount.Name == "" || k.ServiceAccount.UID == "" {
		return nil, false, errors.New("service account token claims are incomplete")
	}
	if pub.Subject != Username(k.Namespace, k.ServiceAccount.Name) {
		return nil, false, errors.New("service account token's subject does not match its claims")
	}
	// Upstream keeps honouring a token for a minute after its objects
	// started going, so requests in flight at a graceful deletion finish.
	deletedBefore := now.Add(-time.Minute)
	sa, err := a.getter.ServiceAccount(ctx, k.Namespace, k.ServiceAccount.Name)
	if err != nil || sa.GetMetadata().GetUid() != k.ServiceAccount.UID || goneBefore(sa.GetMetadata().GetDeletionTimestamp().AsTime(), deletedBefore) {
		return nil, false, errInvalidated
	}
	u := request.User{
		Name:   pub.Subject,
		UID:    k.ServiceAccount.UID,
		Groups: []string{AllGroup, NamespaceGroupOf + k.Namespace},
		Extra:  map[string][]string{},
	}
	if k.Pod != nil {
		pod, err := a.getter.Pod(ctx, k.Namespace, k.Pod.Name)
		if err != nil || pod.GetMetadata().GetUid() != k.Pod.UID || goneBefore(pod.GetMetadata().GetDeletionTimestamp().AsTime(), deletedBefore) {
			return nil, false, errInvalidated
		}
		u.Extra[PodNameKey] = []string{k.Pod.Name}
		u.Extra[PodUIDKey] = []string{k.Pod.UID}
	}
	if k.Node != nil {
		u.Extra[NodeNameKey] = []string{k.Node.Name}
		if k.Node.UID != "" {
			u.Extra[NodeUIDKey] = []string{k.Node.UID}
		}
	}
	if pub.ID != "" {
		u.Extra[CredentialIDKey] = []string{"JTI=" + pub.ID}
	}
	return &Response{User: u, Audiences: accepted}, true, nil
}

// goneBefore: t is a deletion timestamp (zero when unset) before limit.
func goneBefore(t, limit time.Time) bool {
	return !t.IsZero() && t.Before(limit)
}

// verify checks the signature with the key the token names, or every key
// when it names none, as upstream.
func (a *Authenticator) verify(tok *jwt.JSONWebToken, out ...any) error {
	kid := ""
	if len(tok.Headers) > 0 {
		kid = tok.Headers[0].KeyID
	}
	for _, k := range a.keys {
		if kid != "" && k.kid != kid {
			continue
		}
		if err := tok.Claims(k.key, out...); err == nil {
			return nil
		}
	}
	return errors.New("invalid signature")
}
