package server

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"skiff.dev/apiserver/internal/pki"
	"skiff.dev/apiserver/internal/request"
	"skiff.dev/apiserver/internal/serviceaccount"
	"skiff.dev/proto/apierrors"
)

// AuthenticatedGroup is upstream's group of every user a token names.
const AuthenticatedGroup = "system:authenticated"

// TokenAuthenticator verifies bearer tokens for callers that accept
// audiences (serviceaccount.Authenticator).
type TokenAuthenticator interface {
	Authenticate(ctx context.Context, token string, audiences []string) (*serviceaccount.Response, bool, error)
}

// Authentication is how requests are authenticated: always by a client
// certificate the cluster CA signed, and, with Tokens, by an
// "authorization: Bearer <token>" metadata entry (upstream's
// Authorization header), for clients that have a token and no certificate:
// pods.
type Authentication struct {
	Tokens TokenAuthenticator
	// APIAudiences are what a token must be issued for to be accepted here
	// (--api-audiences).
	APIAudiences []string
}

// public methods answer without a client certificate, so probes and
// grpcurl's reflection work before credentials are set up.
func public(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(method, "/grpc.reflection.")
}

// authenticate maps the verified client certificate, or else the bearer
// token, to a user; requests with neither are refused with Unauthenticated.
// A certificate wins over a token, as upstream tries x509 first.
func (a *Authentication) authenticate(ctx context.Context) (context.Context, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, apierrors.NewUnauthorized("Unauthorized: no peer")
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
		return request.WithUser(ctx, pki.UserFromCert(ti.State.VerifiedChains[0][0])), nil
	}
	if token, ok := bearer(ctx); ok && a != nil && a.Tokens != nil {
		resp, ok, err := a.Tokens.Authenticate(ctx, token, a.APIAudiences)
		if err != nil || !ok {
			// Upstream answers a bad token with a bare 401 and keeps the
			// reason for its log: the caller learns nothing to probe with.
			return nil, apierrors.NewUnauthorized("Unauthorized")
		}
		u := resp.User
		u.Groups = append(append([]string(nil), u.Groups...), AuthenticatedGroup)
		return request.WithUser(ctx, u), nil
	}
	return nil, apierrors.NewUnauthorized("Unauthorized: a client certificate signed by the cluster CA or a bearer token is required")
}

// bearer is the token of the request's "authorization: Bearer …" entry.
func bearer(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		scheme, token, ok := strings.Cut(strings.TrimSpace(v), " ")
		if ok && strings.EqualFold(scheme, "bearer") {
			if token = strings.TrimSpace(token); token != "" {
				return token, true
			}
		}
	}
	return "", false
}

func (a *Authentication) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if public(info.FullMethod) {
		return handler(ctx, req)
	}
	ctx, err := a.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *Authentication) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if public(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx, err := a.authenticate(ss.Context())
	if err != nil {
		return err
	}
	return handler(srv, &authedStream{ServerStream: ss, ctx: ctx})
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }
