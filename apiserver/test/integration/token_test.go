package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/apiserver/app"
	"skiff.dev/apiserver/internal/pki"
	"skiff.dev/apiserver/internal/serviceaccount"
	"skiff.dev/client"
	"skiff.dev/client/config"
	authenticationv1 "skiff.dev/proto/api/authentication/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// withServiceAccounts is apitest with upstream's default plugins, the
// ServiceAccount plugin included.
func withServiceAccounts(o *app.Options) { o.DisableAdmissionPlugins = nil }

// tokenClient is a client that authenticates by bearer token alone, as a pod does.
func tokenClient(t *testing.T, s *apitest.Server, token string) *client.Client {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(s.Opts.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	r := &config.Resolved{Server: s.Server.Addr().String(), TLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, BearerToken: token}
	conn, err := r.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return client.New(conn)
}

func listPods(ctx context.Context, c *client.Client) error {
	_, err := client.For[*corev1.Pod](c, "default").List(ctx, client.ListOptions{})
	return err
}

func TestServiceAccountTokens(t *testing.T) {
	s := apitest.Start(t, withServiceAccounts)
	ctx := ctxT(t)
	admin := client.New(s.Conn)
	sas := client.For[*corev1.ServiceAccount](admin, "default")
	pods := client.For[*corev1.Pod](admin, "default")
	for _, name := range []string{"default", "builder"} {
		if _, err := sas.Create(ctx, &corev1.ServiceAccount{Metadata: &metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	pod := func(name, sa string) *corev1.Pod {
		return &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: name}, Spec: &corev1.PodSpec{
			ServiceAccountName: sa, Containers: []*corev1.Container{{Name: "app", Image: "skiff.local/agnhost:2.53"}}}}
	}

	_, err := pods.Create(ctx, pod("ghostly", "ghost"))
	if want := `pods "ghostly" is forbidden: error looking up service account default/ghost: serviceaccount "ghost" not found`; !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("pod of a missing service account: %v, want Forbidden %q", err, want)
	}

	web, err := pods.Create(ctx, pod("web", "builder"))
	if err != nil {
		t.Fatal(err)
	}
	vols := web.Spec.Volumes
	if len(vols) != 1 || !strings.HasPrefix(vols[0].Name, "kube-api-access-") || len(vols[0].Name) != len("kube-api-access-")+5 || vols[0].GetVolumeSource().GetProjected() == nil {
		t.Fatalf("admitted pod's volumes %v, want one kube-api-access-xxxxx projection", vols)
	}
	if m := web.Spec.Containers[0].VolumeMounts; len(m) != 1 || m[0].MountPath != "/var/run/secrets/kubernetes.io/serviceaccount" || !m[0].ReadOnly {
		t.Fatalf("mounts %v", m)
	}
	defaulted, err := pods.Create(ctx, pod("plain", ""))
	if err != nil || defaulted.Spec.ServiceAccountName != "default" {
		t.Fatalf("pod without a service account: %v, %v", defaulted.GetSpec().GetServiceAccountName(), err)
	}

	bound := func(exp int64, uid string) *authenticationv1.TokenRequest {
		return &authenticationv1.TokenRequest{Spec: &authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", ApiVersion: "v1", Name: "web", UID: uid},
		}}
	}
	_, err = admin.CreateToken(ctx, "default", "builder", bound(60, ""))
	if want := "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"; !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), want) {
		t.Errorf("60 s token: %v, want Invalid %q", err, want)
	}
	if _, err := admin.CreateToken(ctx, "default", "builder", bound(3600, "not-the-uid")); !apierrors.IsConflict(err) {
		t.Errorf("token for a stale pod UID: %v, want Conflict", err)
	}
	_, err = admin.CreateToken(ctx, "default", "default", bound(3600, ""))
	if want := `cannot bind token for serviceaccount "default" to pod running with different serviceaccount name.`; apierrors.ReasonOf(err) != apierrors.ReasonBadRequest || !strings.Contains(err.Error(), want) {
		t.Errorf("token for another account's pod: %v, want BadRequest %q", err, want)
	}
	if _, err := admin.CreateToken(ctx, "default", "nobody", nil); !apierrors.IsNotFound(err) {
		t.Errorf("token for a missing account: %v, want NotFound", err)
	}

	before := time.Now().Truncate(time.Second)
	tr, err := admin.CreateToken(ctx, "default", "builder", &authenticationv1.TokenRequest{Spec: &authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", ApiVersion: "v1", Name: "web", UID: web.Metadata.Uid},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if exp := tr.GetStatus().GetExpirationTimestamp().AsTime(); exp.Before(before.Add(time.Hour)) || exp.After(time.Now().Add(time.Hour)) {
		t.Errorf("expirationTimestamp %v, want an hour from now (the default)", exp)
	}
	if got := tr.GetSpec().GetAudiences(); !slices.Equal(got, []string{serviceaccount.DefaultIssuer}) {
		t.Errorf("audiences %v, want the API's [%s]", got, serviceaccount.DefaultIssuer)
	}
	token := tr.GetStatus().GetToken()

	// The token is an identity of its own.
	pc := tokenClient(t, s, token)
	if err := listPods(ctx, pc); err != nil {
		t.Fatalf("list with the pod's token: %v", err)
	}

	review := func(tok string, auds ...string) *authenticationv1.TokenReview {
		t.Helper()
		k := kindOf(t, &authenticationv1.TokenReview{})
		out, err := admin.Resource(k, "").Create(ctx, &authenticationv1.TokenReview{Metadata: &metav1.ObjectMeta{},
			Spec: &authenticationv1.TokenReviewSpec{Token: tok, Audiences: auds}}, false)
		if err != nil {
			t.Fatalf("TokenReview: %v", err)
		}
		return out.(*authenticationv1.TokenReview)
	}
	rv := review(token)
	st := rv.GetStatus()
	if !st.Authenticated || st.GetUser().GetUsername() != "system:serviceaccount:default:builder" {
		t.Fatalf("review: %v", st)
	}
	for _, g := range []string{"system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"} {
		if !slices.Contains(st.User.Groups, g) {
			t.Errorf("groups %v lack %s", st.User.Groups, g)
		}
	}
	if got := st.User.Extra[serviceaccount.PodNameKey].GetItems(); !slices.Equal(got, []string{"web"}) {
		t.Errorf("extra pod-name %v", got)
	}
	if got := st.User.Extra[serviceaccount.PodUIDKey].GetItems(); !slices.Equal(got, []string{web.Metadata.Uid}) {
		t.Errorf("extra pod-uid %v", got)
	}
	if !slices.Equal(st.Audiences, []string{serviceaccount.DefaultIssuer}) {
		t.Errorf("review audiences %v", st.Audiences)
	}
	if st := review(token, "vault").GetStatus(); st.Authenticated || !strings.Contains(st.Error, "invalid for the target audiences") {
		t.Errorf("review for another audience: %v", st)
	}
	if _, err := admin.Resource(kindOf(t, &authenticationv1.TokenReview{}), "").Get(ctx, "x"); status.Code(err) != codes.Unimplemented {
		t.Errorf("get tokenreviews: %v, want Unimplemented: it is create-only", err)
	}

	// Tokens this apiserver never issued, or issued long ago, are refused.
	unauthenticated := func(what, tok string) {
		t.Helper()
		if err := listPods(ctx, tokenClient(t, s, tok)); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", what, err)
		}
	}
	req := serviceaccount.Request{Namespace: "default", Audiences: []string{serviceaccount.DefaultIssuer}, Expiration: time.Hour,
		ServiceAccount: serviceaccount.Ref{Name: "builder", UID: mustGetSA(t, sas, "builder")},
		Pod:            &serviceaccount.Ref{Name: "web", UID: web.Metadata.Uid}}
	key, err := pki.LoadSigner(filepath.Join(s.Opts.DataDir, "pki", "sa.key"))
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := serviceaccount.NewIssuer(serviceaccount.DefaultIssuer, key)
	expired, _, _ := ours.Issue(req, time.Now().Add(-2*time.Hour))
	unauthenticated("expired token", expired)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forger, _ := serviceaccount.NewIssuer(serviceaccount.DefaultIssuer, other)
	forged, _, _ := forger.Issue(req, time.Now())
	unauthenticated("forged token", forged)
	if st := review(forged).GetStatus(); st.Authenticated || st.Error != "invalid signature" {
		t.Errorf("review of a forged token: %v", st)
	}
	unauthenticated("garbage", "not-a-token")

	// Once its pod is gone, the token is worth nothing.
	zero := int64(0)
	if _, err := pods.Delete(ctx, "web", client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := listPods(ctx, pc)
		if status.Code(err) == codes.Unauthenticated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("token of a deleted pod still answers: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := review(token).GetStatus(); st.Authenticated || st.Error != "service account token has been invalidated" {
		t.Errorf("review after the pod's deletion: %v", st)
	}
}

func mustGetSA(t *testing.T, sas *client.Typed[*corev1.ServiceAccount], name string) string {
	t.Helper()
	sa, err := sas.Get(ctxT(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return sa.Metadata.Uid
}

func TestDiscoveryListsTokenSubresources(t *testing.T) {
	s := apitest.Start(t)
	d, err := client.New(s.Conn).Discovery(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var sawReview, sawToken bool
	for _, r := range d.Resources {
		if r.Group == "authentication.k8s.io" && r.Resource == "tokenreviews" {
			sawReview = slices.Equal(r.Verbs, []string{"create"}) && !r.Namespaced
		}
		if r.Group == "" && r.Resource == "serviceaccounts" {
			sawToken = slices.Contains(r.Subresources, "token")
		}
	}
	if !sawReview || !sawToken {
		t.Errorf("discovery: tokenreviews create-only %v, serviceaccounts/token %v", sawReview, sawToken)
	}
}
