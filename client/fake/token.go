package fake

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	authenticationv1 "skiff.dev/proto/api/authentication/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

var serviceAccountKind, _ = scheme.ForResource("", "serviceaccounts")

// FakeToken is the token the fake's serviceaccounts/token answers with when
// no reactor does; it is opaque, like a real one, and verifies nowhere.
const FakeToken = "fake-service-account-token"

// CreateToken records a "create" of serviceaccounts/token and, unless a
// reactor answers, issues FakeToken for an existing service account, with
// upstream's default lifetime of an hour.
func (s *server) CreateToken(_ context.Context, req *apipb.CreateTokenRequest) (*anypb.Any, error) {
	tr := proto.Clone(req.GetTokenRequest()).(*authenticationv1.TokenRequest)
	if tr == nil {
		tr = &authenticationv1.TokenRequest{}
	}
	scheme.Meta(tr)
	ns := requestNamespace(serviceAccountKind, req.GetNamespace())
	a := Action{Verb: "create", Resource: "serviceaccounts", Subresource: "token", Namespace: ns, Name: req.GetName(), Object: clone(tr)}
	if handled, ret, err := s.react(a); handled {
		return answer(serviceAccountKind, a, ret, err)
	}
	if _, err := s.tracker().get(serviceAccountKind, ns, req.GetName(), ""); err != nil {
		return nil, err
	}
	if tr.Spec == nil {
		tr.Spec = &authenticationv1.TokenRequestSpec{}
	}
	exp := tr.Spec.GetExpirationSeconds()
	if exp == 0 {
		exp = 3600
		tr.Spec.ExpirationSeconds = &exp
	}
	tr.Metadata.Name, tr.Metadata.Namespace = req.GetName(), ns
	tr.Status = &authenticationv1.TokenRequestStatus{
		Token:               FakeToken,
		ExpirationTimestamp: metav1.NewTime(time.Now().Add(time.Duration(exp) * time.Second).Truncate(time.Second)),
	}
	return anypb.New(tr)
}
