package serviceaccount

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// objects is a Getter over a fixed set of service accounts and pods.
type objects struct {
	sas  map[string]*corev1.ServiceAccount
	pods map[string]*corev1.Pod
}

func (o *objects) ServiceAccount(_ context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	if sa, ok := o.sas[ns+"/"+name]; ok {
		return sa, nil
	}
	return nil, apierrors.NewNotFound("serviceaccounts", name)
}

func (o *objects) Pod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	if p, ok := o.pods[ns+"/"+name]; ok {
		return p, nil
	}
	return nil, apierrors.NewNotFound("pods", name)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type fixture struct {
	issuer *Issuer
	authn  *Authenticator
	objs   *objects
	now    time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	key := ecKey(t)
	iss, err := NewIssuer(DefaultIssuer, key)
	if err != nil {
		t.Fatal(err)
	}
	objs := &objects{
		sas:  map[string]*corev1.ServiceAccount{"ns1/builder": {Metadata: &metav1.ObjectMeta{Namespace: "ns1", Name: "builder", Uid: "sa-uid"}}},
		pods: map[string]*corev1.Pod{"ns1/web": {Metadata: &metav1.ObjectMeta{Namespace: "ns1", Name: "web", Uid: "pod-uid"}}},
	}
	a, err := NewAuthenticator([]string{DefaultIssuer}, []crypto.PublicKey{key.Public()}, objs)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{issuer: iss, authn: a, objs: objs, now: t0}
	a.Now = func() time.Time { return f.now }
	return f
}

func (f *fixture) podRequest() Request {
	return Request{
		Namespace: "ns1", ServiceAccount: Ref{Name: "builder", UID: "sa-uid"},
		Pod: &Ref{Name: "web", UID: "pod-uid"}, Node: &Ref{Name: "node-1", UID: "node-uid"},
		Audiences: []string{"api", "vault"}, Expiration: time.Hour,
	}
}

func (f *fixture) issue(t *testing.T, r Request) string {
	t.Helper()
	tok, exp, err := f.issuer.Issue(r, f.now)
	if err != nil {
		t.Fatal(err)
	}
	if want := f.now.Add(r.Expiration); !exp.Equal(want) {
		t.Fatalf("expiry %v, want %v", exp, want)
	}
	return tok
}

func payload(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestIssuedTokenCarriesUpstreamClaims(t *testing.T) {
	f := newFixture(t)
	tok := f.issue(t, f.podRequest())
	c := payload(t, tok)
	jti, _ := c["jti"].(string)
	if len(jti) != 36 {
		t.Errorf("jti = %q, want a UUID", jti)
	}
	delete(c, "jti")
	want := map[string]any{
		"iss": DefaultIssuer,
		"sub": "system:serviceaccount:ns1:builder",
		"aud": []any{"api", "vault"},
		"iat": float64(t0.Unix()), "nbf": float64(t0.Unix()), "exp": float64(t0.Add(time.Hour).Unix()),
		"kubernetes.io": map[string]any{
			"namespace":      "ns1",
			"serviceaccount": map[string]any{"name": "builder", "uid": "sa-uid"},
			"pod":            map[string]any{"name": "web", "uid": "pod-uid"},
			"node":           map[string]any{"name": "node-1", "uid": "node-uid"},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("claims:\n got %v\nwant %v", c, want)
	}
	hb, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var h map[string]any
	json.Unmarshal(hb, &h)
	if h["alg"] != "ES256" || h["kid"] == "" {
		t.Errorf("header %v, want alg ES256 and a kid", h)
	}
}

func TestAuthenticateBoundToken(t *testing.T) {
	f := newFixture(t)
	tok := f.issue(t, f.podRequest())
	resp, ok, err := f.authn.Authenticate(context.Background(), tok, []string{"api"})
	if err != nil || !ok {
		t.Fatalf("authenticate: ok=%v err=%v", ok, err)
	}
	u := resp.User
	if u.Name != "system:serviceaccount:ns1:builder" || u.UID != "sa-uid" {
		t.Errorf("user %q uid %q", u.Name, u.UID)
	}
	if want := []string{"system:serviceaccounts", "system:serviceaccounts:ns1"}; !reflect.DeepEqual(u.Groups, want) {
		t.Errorf("groups %v, want %v", u.Groups, want)
	}
	for k, v := range map[string]string{PodNameKey: "web", PodUIDKey: "pod-uid", NodeNameKey: "node-1", NodeUIDKey: "node-uid"} {
		if got := u.Extra[k]; len(got) != 1 || got[0] != v {
			t.Errorf("extra %s = %v, want [%s]", k, got, v)
		}
	}
	if got := u.Extra[CredentialIDKey]; len(got) != 1 || !strings.HasPrefix(got[0], "JTI=") {
		t.Errorf("credential id %v", got)
	}
	if !reflect.DeepEqual(resp.Audiences, []string{"api"}) {
		t.Errorf("audiences %v, want [api]", resp.Audiences)
	}
}

func TestAuthenticateRefuses(t *testing.T) {
	other := ecKey(t)
	for _, tc := range []struct {
		name    string
		prepare func(f *fixture) string
		auds    []string
		wantErr string // "" means: not ours, no error
	}{
		{name: "expired, past the minute of leeway", prepare: func(f *fixture) string {
			tok := f.issue(t, f.podRequest())
			f.now = t0.Add(time.Hour + 61*time.Second)
			return tok
		}, wantErr: "service account token has expired"},
		{name: "signed by another key", prepare: func(f *fixture) string {
			forger, _ := NewIssuer(DefaultIssuer, other)
			tok, _, _ := forger.Issue(f.podRequest(), f.now)
			return tok
		}, wantErr: "invalid signature"},
		{name: "tampered payload", prepare: func(f *fixture) string {
			parts := strings.Split(f.issue(t, f.podRequest()), ".")
			c := payload(t, strings.Join(parts, "."))
			c["sub"] = "system:serviceaccount:kube-system:admin"
			b, _ := json.Marshal(c)
			parts[1] = base64.RawURLEncoding.EncodeToString(b)
			return strings.Join(parts, ".")
		}, wantErr: "invalid signature"},
		{name: "for another audience", auds: []string{"elsewhere"}, prepare: func(f *fixture) string {
			return f.issue(t, f.podRequest())
		}, wantErr: `token audiences ["api" "vault"] is invalid for the target audiences ["elsewhere"]`},
		{name: "pod deleted", prepare: func(f *fixture) string {
			tok := f.issue(t, f.podRequest())
			delete(f.objs.pods, "ns1/web")
			return tok
		}, wantErr: "service account token has been invalidated"},
		{name: "pod recreated with another uid", prepare: func(f *fixture) string {
			tok := f.issue(t, f.podRequest())
			f.objs.pods["ns1/web"] = &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web", Uid: "new-uid"}}
			return tok
		}, wantErr: "service account token has been invalidated"},
		{name: "pod deleting for more than a minute", prepare: func(f *fixture) string {
			tok := f.issue(t, f.podRequest())
			f.objs.pods["ns1/web"].Metadata.DeletionTimestamp = metav1.NewTime(t0.Add(-61 * time.Second))
			return tok
		}, wantErr: "service account token has been invalidated"},
		{name: "service account recreated", prepare: func(f *fixture) string {
			tok := f.issue(t, f.podRequest())
			f.objs.sas["ns1/builder"] = &corev1.ServiceAccount{Metadata: &metav1.ObjectMeta{Name: "builder", Uid: "other"}}
			return tok
		}, wantErr: "service account token has been invalidated"},
		{name: "another issuer's token is not ours", prepare: func(f *fixture) string {
			elsewhere, _ := NewIssuer("https://elsewhere.example", other)
			tok, _, _ := elsewhere.Issue(f.podRequest(), f.now)
			return tok
		}},
		{name: "not a JWT", prepare: func(*fixture) string { return "abcdef.0123456789abcdef" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tok := tc.prepare(f)
			auds := tc.auds
			if auds == nil {
				auds = []string{"api"}
			}
			resp, ok, err := f.authn.Authenticate(context.Background(), tok, auds)
			if ok || resp != nil {
				t.Fatalf("authenticated as %+v", resp)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("err = %v, want none (not our token)", err)
			case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestPodDeletingWithinTheMinuteStillAuthenticates(t *testing.T) {
	f := newFixture(t)
	tok := f.issue(t, f.podRequest())
	f.objs.pods["ns1/web"].Metadata.DeletionTimestamp = metav1.NewTime(t0.Add(-30 * time.Second))
	if _, ok, err := f.authn.Authenticate(context.Background(), tok, []string{"api"}); !ok {
		t.Fatalf("refused during graceful deletion: %v", err)
	}
}

func TestRSAKeysSignRS256AndExtraKeysVerify(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	old := ecKey(t)
	iss, err := NewIssuer(DefaultIssuer, rk)
	if err != nil {
		t.Fatal(err)
	}
	objs := &objects{sas: map[string]*corev1.ServiceAccount{"ns1/builder": {Metadata: &metav1.ObjectMeta{Uid: "sa-uid"}}}}
	// A rotated-out key still verifies what it signed.
	a, _ := NewAuthenticator([]string{DefaultIssuer}, []crypto.PublicKey{rk.Public(), old.Public()}, objs)
	a.Now = func() time.Time { return t0 }
	req := Request{Namespace: "ns1", ServiceAccount: Ref{Name: "builder", UID: "sa-uid"}, Audiences: []string{"api"}, Expiration: time.Hour}
	oldIss, _ := NewIssuer(DefaultIssuer, old)
	for name, i := range map[string]*Issuer{"rsa": iss, "old ecdsa": oldIss} {
		tok, _, err := i.Issue(req, t0)
		if err != nil {
			t.Fatal(err)
		}
		resp, ok, err := a.Authenticate(context.Background(), tok, []string{"api"})
		if !ok {
			t.Fatalf("%s: refused: %v", name, err)
		}
		if _, bound := resp.User.Extra[PodNameKey]; bound {
			t.Errorf("%s: unbound token has pod extra", name)
		}
	}
}
