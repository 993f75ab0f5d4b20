package fake

import (
	"testing"
	"time"

	authenticationv1 "skiff.dev/proto/api/authentication/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

func TestCreateToken(t *testing.T) {
	ctx := testContext(t)
	cs := newClientset(t, &corev1.ServiceAccount{Metadata: meta("ns1", "builder")})
	exp := int64(7200)
	tr, err := cs.Client.CreateToken(ctx, "ns1", "builder", &authenticationv1.TokenRequest{Spec: &authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp, BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", ApiVersion: "v1", Name: "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	if tr.GetStatus().GetToken() != FakeToken {
		t.Errorf("token %q", tr.GetStatus().GetToken())
	}
	if left := time.Until(tr.GetStatus().GetExpirationTimestamp().AsTime()); left < 2*time.Hour-5*time.Second || left > 2*time.Hour {
		t.Errorf("expires in %v, want the 2h asked for", left)
	}
	acts := cs.Actions()
	last := acts[len(acts)-1]
	if last.Verb != "create" || last.Resource != "serviceaccounts" || last.Subresource != "token" || last.Namespace != "ns1" || last.Name != "builder" {
		t.Errorf("action %+v", last)
	}
	if ref := last.Object.(*authenticationv1.TokenRequest).GetSpec().GetBoundObjectRef(); ref.GetName() != "web" {
		t.Errorf("recorded request lost its bound object: %v", ref)
	}
	if _, err := cs.Client.CreateToken(ctx, "ns1", "nobody", nil); !apierrors.IsNotFound(err) {
		t.Errorf("token for a missing account: %v, want NotFound", err)
	}

	// A reactor can answer in its place, as for every other verb.
	cs.PrependReactor("create", "serviceaccounts", func(a Action) (bool, scheme.Object, error) {
		return true, &authenticationv1.TokenRequest{Metadata: &metav1.ObjectMeta{}, Status: &authenticationv1.TokenRequestStatus{Token: "from-reactor"}}, nil
	})
	if tr, err := cs.Client.CreateToken(ctx, "ns1", "builder", nil); err != nil || tr.GetStatus().GetToken() != "from-reactor" {
		t.Errorf("reactor: %v, %v", tr, err)
	}
}
