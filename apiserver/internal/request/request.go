// Package request carries what the apiserver knows about a request through
// its layers: who made it. Upstream keeps the same in
// k8s.io/apiserver/pkg/endpoints/request.
package request

import "context"

// User is an authenticated identity: upstream's user.Info.
type User struct {
	Name   string
	UID    string
	Groups []string
	// Extra is what the authenticator adds beyond name and groups (a
	// service account token's pod: authentication.kubernetes.io/pod-name).
	Extra map[string][]string
}

type userKey struct{}

// WithUser returns ctx carrying u.
func WithUser(ctx context.Context, u User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserFrom returns the authenticated user of a request.
func UserFrom(ctx context.Context) (User, bool) {
	u, ok := ctx.Value(userKey{}).(User)
	return u, ok
}
