package skiff

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"

	"skiff.dev/client/config"
	"skiff.dev/dns/internal/testpki"
)

func TestParseCorefile(t *testing.T) {
	for _, tc := range []struct {
		name, corefile string
		check          func(t *testing.T, s *Skiff)
	}{
		{"defaults", "skiff cluster.local", func(t *testing.T, s *Skiff) {
			if s.podMode != podModeDisabled || s.ttl != 5 || !s.watchEndpoints || s.startupTimeout != 5*time.Second ||
				len(s.Namespaces) != 0 || s.conn != (connection{}) {
				t.Errorf("defaults: %+v", s)
			}
		}},
		{"the addon's block", `skiff cluster.local in-addr.arpa ip6.arpa {
			pods insecure
			fallthrough in-addr.arpa ip6.arpa
			ttl 30
		}`, func(t *testing.T, s *Skiff) {
			if !reflect.DeepEqual(s.Zones, []string{"cluster.local.", "in-addr.arpa.", "ip6.arpa."}) || s.primaryZone() != "cluster.local." {
				t.Errorf("zones %v, primary %q", s.Zones, s.primaryZone())
			}
			if s.podMode != podModeInsecure || s.ttl != 30 {
				t.Errorf("pods %q ttl %d", s.podMode, s.ttl)
			}
			if !s.Fall.Through("4.3.2.1.in-addr.arpa.") || !s.Fall.Through("1.ip6.arpa.") || s.Fall.Through("x.cluster.local.") {
				t.Errorf("fallthrough %v", s.Fall)
			}
		}},
		{"reverse zone first", "skiff in-addr.arpa cluster.local", func(t *testing.T, s *Skiff) {
			if s.primaryZone() != "cluster.local." {
				t.Errorf("primary zone %q", s.primaryZone())
			}
		}},
		{"every option", `skiff cluster.local {
			pods verified
			namespaces a b
			endpoint_pod_names
			kubeconfig /etc/skiff/dns.conf dns
			ignore empty_service
			noendpoints
			startup_timeout 30s
			ttl 0
		}`, func(t *testing.T, s *Skiff) {
			want := connection{kubeconfig: "/etc/skiff/dns.conf", context: "dns"}
			if s.podMode != podModeVerified || len(s.Namespaces) != 2 || !s.endpointNameMode || s.conn != want ||
				!s.ignoreEmptyService || s.watchEndpoints || s.startupTimeout != 30*time.Second || s.ttl != 0 {
				t.Errorf("parsed %+v", s)
			}
		}},
		{"endpoint and tls", `skiff cluster.local {
			endpoint https://10.0.0.1:6443
			tls cert.pem key.pem ca.pem
		}`, func(t *testing.T, s *Skiff) {
			want := connection{endpoint: "https://10.0.0.1:6443", tlsCert: "cert.pem", tlsKey: "key.pem", tlsCA: "ca.pem"}
			if s.conn != want {
				t.Errorf("connection %+v", s.conn)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parse(caddy.NewTestController("dns", tc.corefile))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			tc.check(t, s)
		})
	}
}

func TestParseCorefileErrors(t *testing.T) {
	for _, tc := range []struct{ corefile, want string }{
		{"skiff in-addr.arpa ip6.arpa", "non-reverse zone name must be used"},
		{"skiff cluster.local {\n pods sometimes\n}", "wrong value for pods: sometimes, must be one of: disabled, verified, insecure"},
		{"skiff cluster.local {\n pods\n}", "Wrong argument count"},
		{"skiff cluster.local {\n ttl 3601\n}", "ttl must be in range [0, 3600]: 3601"},
		{"skiff cluster.local {\n ttl -1\n}", "ttl must be in range [0, 3600]: -1"},
		{"skiff cluster.local {\n ttl soon\n}", `ttl must be a number of seconds: "soon"`},
		{"skiff cluster.local {\n namespaces\n}", "Wrong argument count"},
		{"skiff cluster.local {\n kubeconfig\n}", "Wrong argument count"},
		{"skiff cluster.local {\n kubeconfig a b c\n}", "Wrong argument count"},
		{"skiff cluster.local {\n tls cert key\n}", "Wrong argument count"},
		{"skiff cluster.local {\n tls a b c\n}", "tls needs an endpoint"},
		{"skiff cluster.local {\n kubeconfig a\n endpoint https://x:6443\n}", "kubeconfig and endpoint cannot both be set"},
		{"skiff cluster.local {\n ignore everything\n}", "unable to parse ignore value"},
		{"skiff cluster.local {\n startup_timeout forever\n}", "failed to parse startup_timeout"},
		{"skiff cluster.local {\n labels app=web\n}", "option 'labels' of the kubernetes plugin is not supported by skiff (label selectors)"},
		{"skiff cluster.local {\n multicluster clusterset.local\n}", "option 'multicluster' of the kubernetes plugin is not supported by skiff"},
		{"skiff cluster.local {\n upstream\n}", "unknown property 'upstream'"},
		{"skiff cluster.local\nskiff cluster.local", "plugin"}, // ErrOnce: "this plugin can only be used once per Server Block"
	} {
		t.Run(strings.SplitN(tc.want, " ", 2)[0], func(t *testing.T) {
			_, err := parse(caddy.NewTestController("dns", tc.corefile))
			if err == nil {
				t.Fatalf("parse(%q) accepted it", tc.corefile)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parse(%q) = %q, want it to say %q", tc.corefile, err, tc.want)
			}
		})
	}
}

// The connection is resolved when the Corefile is read, so a wrong path
// or a missing ServiceAccount stops the server with its reason.
func TestResolveConnection(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	ca := testpki.New(t).CertPEM
	if err := config.NewAdmin("127.0.0.1:6443", ca, nil, nil).Write(kc); err != nil {
		t.Fatal(err)
	}

	r, err := connection{kubeconfig: kc}.resolve()
	if err != nil || r.Server != "127.0.0.1:6443" {
		t.Errorf("kubeconfig: %+v, %v", r, err)
	}
	if _, err := (connection{kubeconfig: kc, context: "nosuch"}).resolve(); err == nil || !strings.Contains(err.Error(), `context "nosuch" not found`) {
		t.Errorf("unknown context: %v", err)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := (connection{kubeconfig: missing}).resolve(); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing kubeconfig: %v", err)
	}

	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err = connection{endpoint: "https://10.0.0.1:6443/", tlsCA: caFile}.resolve()
	if err != nil || r.Server != "10.0.0.1:6443" || r.TLS.RootCAs == nil {
		t.Errorf("endpoint: %+v, %v", r, err)
	}

	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if _, err := (connection{}).resolve(); !errors.Is(err, config.ErrNotInCluster) {
		t.Errorf("in-cluster outside a pod: %v", err)
	}
}
