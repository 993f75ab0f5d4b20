package registry

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/serviceaccount"
	authenticationv1 "skiff.dev/proto/api/authentication/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

var (
	serviceAccountKind, _ = scheme.ForResource("", "serviceaccounts")
	nodeKind, _           = scheme.ForResource("", "nodes")
)

// Upstream's bounds on a TokenRequest's expirationSeconds.
const (
	DefaultTokenExpirationSeconds = 3600
	MinTokenExpirationSeconds     = 600
	MaxTokenExpirationSeconds     = 1 << 32
)

// TokenIssuer is what the serviceaccounts/token subresource needs: a signer,
// and the audiences a token gets when the request names none.
type TokenIssuer struct {
	Issuer *serviceaccount.Issuer
	// APIAudiences are the apiserver's own (--api-audiences).
	APIAudiences []string
}

// lookup reads one object from the kind's watch cache, else from etcd (an
// object created a moment ago may not have reached the cache).
func (r *Registry) lookup(ctx context.Context, k *scheme.Kind, ns, name string) (scheme.Object, error) {
	res := r.res(k)
	key := res.key(ns, name)
	if o, ok := res.cache.Get(key); ok {
		return o.Msg.(scheme.Object), nil
	}
	o, err := res.latest(ctx, key, name)
	if err != nil {
		return nil, err
	}
	return o.Msg.(scheme.Object), nil
}

// ServiceAccount reads a service account (shared: do not modify it).
func (r *Registry) ServiceAccount(ctx context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	o, err := r.lookup(ctx, serviceAccountKind, ns, name)
	if err != nil {
		return nil, err
	}
	return o.(*corev1.ServiceAccount), nil
}

// Pod reads a pod (shared: do not modify it).
func (r *Registry) Pod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	o, err := r.lookup(ctx, podKind, ns, name)
	if err != nil {
		return nil, err
	}
	return o.(*corev1.Pod), nil
}

// CreateToken is the serviceaccounts/token subresource: it signs a token
// for service account ns/name, optionally bound to a pod that runs as it,
// and returns the request with its status filled in. Nothing is stored.
func (r *Registry) CreateToken(ctx context.Context, ns, name string, tr *authenticationv1.TokenRequest, dryRun bool) (*authenticationv1.TokenRequest, error) {
	if r.cfg.Tokens == nil || r.cfg.Tokens.Issuer == nil {
		return nil, apierrors.NewNotFound("serviceaccounts/token", name)
	}
	ns, _, err := r.res(serviceAccountKind).requestKey(ns, name)
	if err != nil {
		return nil, err
	}
	if tr == nil {
		tr = &authenticationv1.TokenRequest{}
	}
	out := proto.Clone(tr).(*authenticationv1.TokenRequest)
	m := scheme.Meta(out)
	// As upstream, the body may name the service account only as the
	// request does.
	if m.Name != "" && m.Name != name {
		return nil, apierrors.NewInvalid("TokenRequest.authentication.k8s.io", name, field.ErrorList{
			field.Invalid(field.NewPath("metadata", "name"), m.Name, "must match the service account name if specified")})
	}
	if m.Namespace != "" && m.Namespace != ns {
		return nil, apierrors.NewInvalid("TokenRequest.authentication.k8s.io", name, field.ErrorList{
			field.Invalid(field.NewPath("metadata", "namespace"), m.Namespace, "must match the service account namespace if specified")})
	}
	sa, err := r.ServiceAccount(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	if out.Spec == nil {
		out.Spec = &authenticationv1.TokenRequestSpec{}
	}
	spec := out.Spec
	if spec.ExpirationSeconds == nil {
		s := int64(DefaultTokenExpirationSeconds)
		spec.ExpirationSeconds = &s
	}
	if len(spec.Audiences) == 0 {
		spec.Audiences = append([]string(nil), r.cfg.Tokens.APIAudiences...)
	}
	m.Name, m.Namespace = name, ns
	// The time is taken before signing, so the status's expiry is never
	// later than the token's own.
	now := r.cfg.Now()
	m.CreationTimestamp = metav1.NewTime(now)
	out.Status = nil
	if errs := validateTokenRequest(out); len(errs) > 0 {
		return nil, apierrors.NewInvalid("TokenRequest.authentication.k8s.io", "", errs)
	}
	a := admission.NewAttributes(admission.Create, serviceAccountKind, "token", ns, name, userOf(ctx), out, nil, dryRun)
	if err := r.cfg.Admission.Admit(ctx, a); err != nil {
		return nil, err
	}
	if err := r.cfg.Admission.Validate(ctx, a); err != nil {
		return nil, err
	}
	req := serviceaccount.Request{
		Namespace:      ns,
		ServiceAccount: serviceaccount.Ref{Name: name, UID: sa.GetMetadata().GetUid()},
		Audiences:      spec.Audiences,
		Expiration:     secondsToDuration(spec.GetExpirationSeconds()),
	}
	if ref := spec.BoundObjectRef; ref != nil {
		if err := r.bind(ctx, ns, name, ref, &req); err != nil {
			return nil, err
		}
	}
	if dryRun {
		return out, nil
	}
	tok, exp, err := r.cfg.Tokens.Issuer.Issue(req, now)
	if err != nil {
		return nil, err
	}
	out.Status = &authenticationv1.TokenRequestStatus{Token: tok, ExpirationTimestamp: metav1.NewTime(exp)}
	return out, nil
}

// bind checks the object a token is to be bound to, as upstream: a pod that
// exists, has the UID the reference gives (when it gives one) and runs as
// the service account.
func (r *Registry) bind(ctx context.Context, ns, saName string, ref *authenticationv1.BoundObjectReference, req *serviceaccount.Request) error {
	group := ""
	if g, _, ok := strings.Cut(ref.ApiVersion, "/"); ok {
		group = g
	}
	if group != "" || ref.Kind != "Pod" {
		return apierrors.NewBadRequest(fmt.Sprintf("cannot bind token to object of type %s", gvkString(ref.ApiVersion, ref.Kind)))
	}
	pod, err := r.Pod(ctx, ns, ref.Name)
	if err != nil {
		return err
	}
	if saName != pod.GetSpec().GetServiceAccountName() {
		return apierrors.NewBadRequest(fmt.Sprintf("cannot bind token for serviceaccount %q to pod running with different serviceaccount name.", saName))
	}
	uid := pod.GetMetadata().GetUid()
	if ref.UID != "" && ref.UID != uid {
		return apierrors.NewConflict("Pod", ref.Name, fmt.Sprintf("the UID in the bound object reference (%s) does not match the UID in record. The object might have been deleted and then recreated", ref.UID))
	}
	req.Pod = &serviceaccount.Ref{Name: ref.Name, UID: uid}
	if nodeName := pod.GetSpec().GetNodeName(); nodeName != "" {
		// Upstream adds the node when it can read it, and issues the token
		// anyway when it cannot.
		req.Node = &serviceaccount.Ref{Name: nodeName}
		if o, err := r.lookup(ctx, nodeKind, "", nodeName); err == nil {
			req.Node.UID = o.GetMetadata().GetUid()
		}
	}
	return nil
}

// gvkString is schema.GroupVersionKind's String: "/v1, Kind=Secret".
func gvkString(apiVersion, kind string) string {
	group, version, ok := strings.Cut(apiVersion, "/")
	if !ok {
		group, version = "", apiVersion
	}
	return group + "/" + version + ", Kind=" + kind
}

func secondsToDuration(s int64) time.Duration { return time.Duration(s) * time.Second }

// validateTokenRequest is upstream's ValidateTokenRequest.
func validateTokenRequest(tr *authenticationv1.TokenRequest) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	exp := tr.Spec.GetExpirationSeconds()
	if exp < MinTokenExpirationSeconds {
		errs = append(errs, field.Invalid(p.Child("expirationSeconds"), exp, "may not specify a duration less than 10 minutes"))
	}
	if exp > MaxTokenExpirationSeconds {
		errs = append(errs, field.Invalid(p.Child("expirationSeconds"), exp, "may not specify a duration larger than 2^32 seconds"))
	}
	return errs
}
