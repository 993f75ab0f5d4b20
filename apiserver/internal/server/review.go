package server

import (
	"context"
	"fmt"
	"slices"

	"skiff.dev/apiserver/internal/request"
	authenticationv1 "skiff.dev/proto/api/authentication/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// createOnly answers a create of a kind that is never stored.
func (s *Service) createOnly(ctx context.Context, obj scheme.Object) (scheme.Object, error) {
	switch o := obj.(type) {
	case *authenticationv1.TokenReview:
		return s.reviewToken(ctx, o)
	}
	return nil, apierrors.NewInternal(fmt.Errorf("no handler for %T", obj))
}

// reviewToken is upstream's TokenReview: who a token authenticates as, for
// the audiences the review names (else the apiserver's own). A token that
// does not authenticate is an answer, not an error.
func (s *Service) reviewToken(ctx context.Context, tr *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error) {
	if tr.GetSpec().GetToken() == "" {
		return nil, apierrors.NewBadRequest("token is required for TokenReview in authentication")
	}
	out := &authenticationv1.TokenReview{
		Metadata: &metav1.ObjectMeta{Name: tr.GetMetadata().GetName(), Labels: tr.GetMetadata().GetLabels(), Annotations: tr.GetMetadata().GetAnnotations()},
		Spec:     tr.Spec,
		Status:   &authenticationv1.TokenReviewStatus{},
	}
	var authn Authentication
	if s.authn != nil {
		authn = *s.authn
	}
	auds := tr.Spec.Audiences
	if len(auds) == 0 {
		auds = authn.APIAudiences
	}
	if authn.Tokens == nil {
		return out, nil
	}
	resp, ok, err := authn.Tokens.Authenticate(ctx, tr.Spec.Token, auds)
	out.Status.Authenticated = ok
	if err != nil {
		out.Status.Error = err.Error()
	}
	if ok && resp != nil {
		out.Status.User = userInfo(resp.User)
		out.Status.Audiences = resp.Audiences
	}
	return out, nil
}

func userInfo(u request.User) *authenticationv1.UserInfo {
	groups := slices.Clone(u.Groups)
	if !slices.Contains(groups, AuthenticatedGroup) {
		groups = append(groups, AuthenticatedGroup)
	}
	ui := &authenticationv1.UserInfo{Username: u.Name, Uid: u.UID, Groups: groups}
	if len(u.Extra) > 0 {
		ui.Extra = map[string]*authenticationv1.ExtraValue{}
		for k, v := range u.Extra {
			ui.Extra[k] = &authenticationv1.ExtraValue{Items: slices.Clone(v)}
		}
	}
	return ui
}
