// Package authorizer is the seam every request passes before it reaches the
// registry: who asks to do what to which object. The attributes are
// upstream's (k8s.io/apiserver/pkg/authorization/authorizer), so RBAC and the
// node authorizer can tell a pod's binding from its status and a read of one
// Secret from a list of all of them.
package authorizer

import (
	"context"
	"fmt"

	"skiff.dev/apiserver/internal/request"
	"skiff.dev/proto/apierrors"
)

// Attributes describe one resource request.
type Attributes struct {
	User        request.User
	Verb        string // get, list, watch, create, update, patch, delete
	APIGroup    string
	APIVersion  string
	Resource    string // plural
	Subresource string // status, binding, eviction, history
	Namespace   string // "" for cluster-scoped kinds and all-namespace lists
	Name        string // "" for lists, watches and creates of new objects
}

// Decision is an authorizer's verdict.
type Decision int

const (
	// DecisionDeny refuses the request; no later authorizer is asked.
	DecisionDeny Decision = iota
	// DecisionAllow admits the request; no later authorizer is asked.
	DecisionAllow
	// DecisionNoOpinion leaves the request to the next authorizer.
	DecisionNoOpinion
)

// Authorizer decides one request; reason explains a deny to the user.
type Authorizer interface {
	Authorize(ctx context.Context, a Attributes) (d Decision, reason string, err error)
}

// Func adapts a function to Authorizer.
type Func func(ctx context.Context, a Attributes) (Decision, string, error)

// Authorize calls f.
func (f Func) Authorize(ctx context.Context, a Attributes) (Decision, string, error) {
	return f(ctx, a)
}

// AlwaysAllow admits everything: upstream's --authorization-mode=AlwaysAllow,
// the mode until RBAC lands.
var AlwaysAllow Authorizer = Func(func(context.Context, Attributes) (Decision, string, error) {
	return DecisionAllow, "", nil
})

// Union asks each authorizer in turn until one allows or denies, as
// upstream's --authorization-mode=Node,RBAC does; nobody's opinion is a deny.
type Union []Authorizer

// Authorize asks each authorizer in order.
func (u Union) Authorize(ctx context.Context, a Attributes) (Decision, string, error) {
	var reasons string
	for _, z := range u {
		d, why, err := z.Authorize(ctx, a)
		if err != nil {
			return DecisionDeny, why, err
		}
		if d != DecisionNoOpinion {
			return d, why, nil
		}
		if why != "" {
			if reasons != "" {
				reasons += ", "
			}
			reasons += why
		}
	}
	return DecisionNoOpinion, reasons, nil
}

// Check is the request's verdict as an API error: nil when allowed, else
// upstream's Forbidden, e.g. `pods "web" is forbidden: User "bob" cannot get
// resource "pods" in API group "" in the namespace "default"`.
func Check(ctx context.Context, z Authorizer, a Attributes) error {
	d, why, err := z.Authorize(ctx, a)
	if err == nil && d == DecisionAllow {
		return nil
	}
	resource := a.Resource
	if a.Subresource != "" {
		resource += "/" + a.Subresource
	}
	scope := "at the cluster scope"
	if a.Namespace != "" {
		scope = "in the namespace " + fmt.Sprintf("%q", a.Namespace)
	}
	msg := fmt.Sprintf("User %q cannot %s resource %q in API group %q %s", a.User.Name, a.Verb, resource, a.APIGroup, scope)
	if err != nil {
		msg += ": " + err.Error()
	} else if why != "" {
		msg += ": " + why
	}
	gr := a.Resource
	if a.APIGroup != "" {
		gr += "." + a.APIGroup
	}
	return apierrors.NewForbidden(gr, a.Name, msg)
}
