package dns

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func pod(policy string, hostNet bool, dc *corev1.PodDNSConfig) *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: "web-0", Namespace: "shop", Uid: "u1"},
		Spec:     &corev1.PodSpec{DnsPolicy: policy, HostNetwork: hostNet, DnsConfig: dc},
	}
}

func TestConfig(t *testing.T) {
	resolv := writeFile(t, "resolv.conf", `# host
nameserver 192.168.0.1
nameserver 192.168.0.2
search old.example
search corp.example. example.com
options timeout:2 attempts:3
`)
	cluster := Options{ClusterDNS: []string{"10.96.0.10"}, ClusterDomain: "cluster.local", ResolvConf: resolv}
	for _, tc := range []struct {
		name string
		o    Options
		pod  *corev1.Pod
		want *runtimeapi.DNSConfig
	}{
		{"ClusterFirst", cluster, pod("ClusterFirst", false, nil), &runtimeapi.DNSConfig{
			Servers:  []string{"10.96.0.10"},
			Searches: []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example", "example.com"},
			Options:  []string{"ndots:5"},
		}},
		{"empty policy is ClusterFirst", cluster, pod("", false, nil), &runtimeapi.DNSConfig{
			Servers:  []string{"10.96.0.10"},
			Searches: []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example", "example.com"},
			Options:  []string{"ndots:5"},
		}},
		{"ClusterFirst on host network is Default", cluster, pod("ClusterFirst", true, nil), &runtimeapi.DNSConfig{
			Servers:  []string{"192.168.0.1", "192.168.0.2"},
			Searches: []string{"corp.example", "example.com"},
			Options:  []string{"timeout:2", "attempts:3"},
		}},
		{"ClusterFirstWithHostNet", cluster, pod("ClusterFirstWithHostNet", true, nil), &runtimeapi.DNSConfig{
			Servers:  []string{"10.96.0.10"},
			Searches: []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example", "example.com"},
			Options:  []string{"ndots:5"},
		}},
		{"Default", cluster, pod("Default", false, nil), &runtimeapi.DNSConfig{
			Servers:  []string{"192.168.0.1", "192.168.0.2"},
			Searches: []string{"corp.example", "example.com"},
			Options:  []string{"timeout:2", "attempts:3"},
		}},
		{"Default without a host resolv.conf", Options{ClusterDNS: []string{"10.96.0.10"}}, pod("Default", false, nil), &runtimeapi.DNSConfig{
			Servers: []string{"127.0.0.1"}, Searches: []string{"."},
		}},
		{"ClusterFirst without cluster DNS falls back", Options{ClusterDomain: "cluster.local", ResolvConf: resolv}, pod("ClusterFirst", false, nil), &runtimeapi.DNSConfig{
			Servers:  []string{"192.168.0.1", "192.168.0.2"},
			Searches: []string{"corp.example", "example.com"},
			Options:  []string{"timeout:2", "attempts:3"},
		}},
		{"None with dnsConfig", cluster, pod("None", false, &corev1.PodDNSConfig{
			Nameservers: []string{"1.2.3.4", "1.2.3.4"},
			Searches:    []string{"ns1.svc.cluster-domain.example", "my.dns.search.suffix"},
			Options:     []*corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("2")}, {Name: "edns0"}},
		}), &runtimeapi.DNSConfig{
			Servers:  []string{"1.2.3.4"},
			Searches: []string{"ns1.svc.cluster-domain.example", "my.dns.search.suffix"},
			Options:  []string{"ndots:2", "edns0"},
		}},
		{"ClusterFirst plus dnsConfig", cluster, pod("ClusterFirst", false, &corev1.PodDNSConfig{
			Nameservers: []string{"10.96.0.10", "9.9.9.9"},
			Searches:    []string{"cluster.local", "extra.example"},
			Options:     []*corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("1")}, {Name: "single-request-reopen"}},
		}), &runtimeapi.DNSConfig{
			Servers:  []string{"10.96.0.10", "9.9.9.9"},
			Searches: []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example", "example.com", "extra.example"},
			Options:  []string{"ndots:1", "single-request-reopen"},
		}},
		{"at most 3 nameservers", cluster, pod("None", false, &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"}}),
			&runtimeapi.DNSConfig{Servers: []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"}, Searches: []string{}, Options: []string{}}},
	} {
		got, err := tc.o.Config(tc.pod)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		norm := func(c *runtimeapi.DNSConfig) [3][]string {
			n := func(s []string) []string {
				if len(s) == 0 {
					return nil
				}
				return s
			}
			return [3][]string{n(c.GetServers()), n(c.GetSearches()), n(c.GetOptions())}
		}
		if !reflect.DeepEqual(norm(got), norm(tc.want)) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, norm(got), norm(tc.want))
		}
	}
}

func TestConfigEvents(t *testing.T) {
	var events []string
	o := Options{ClusterDomain: "cluster.local", Event: func(_ *corev1.Pod, typ, reason, msg string) { events = append(events, typ+" "+reason+": "+msg) }}
	if _, err := o.Config(pod("ClusterFirst", false, nil)); err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || !strings.HasPrefix(events[0], `Warning MissingClusterDNS: pod: "web-0_shop(u1)". kubelet does not have ClusterDNS IP configured`) {
		t.Errorf("events = %q", events)
	}
	if _, err := (Options{ResolvConf: "/nonexistent/resolv.conf"}).Config(pod("Default", false, nil)); err == nil {
		t.Error("unreadable resolv.conf: want an error")
	}
}

func TestSearchLimits(t *testing.T) {
	var many []string
	for i := 0; i < 40; i++ {
		many = append(many, strings.Repeat("a", 10)+string(rune('a'+i%26))+strings.Repeat("x", i))
	}
	var events []string
	o := Options{Event: func(_ *corev1.Pod, _, reason, msg string) { events = append(events, reason) }}
	got, err := o.Config(pod("None", false, &corev1.PodDNSConfig{Searches: many}))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Searches) > MaxSearchPaths || len(strings.Join(got.Searches, " ")) > MaxSearchListChars {
		t.Errorf("search line over the limits: %d domains, %d chars", len(got.Searches), len(strings.Join(got.Searches, " ")))
	}
	if len(got.Searches) != MaxSearchPaths {
		t.Errorf("got %d domains, want the first %d", len(got.Searches), MaxSearchPaths)
	}
	if !reflect.DeepEqual(events, []string{"DNSConfigForming"}) {
		t.Errorf("events = %v", events)
	}

	// Long domains: ones over 253 are dropped, then the line is cut to 2048.
	long := []string{strings.Repeat("l", 254)}
	for i := 0; i < 10; i++ {
		long = append(long, strings.Repeat(string(rune('a'+i)), 250))
	}
	got, _ = Options{}.Config(pod("None", false, &corev1.PodDNSConfig{Searches: long}))
	if len(got.Searches) != 8 || got.Searches[0] != long[1] {
		t.Errorf("got %d domains (first %d chars), want 8 of 250", len(got.Searches), len(got.Searches[0]))
	}
}

func TestParseAndRenderResolvConf(t *testing.T) {
	cfg, err := ParseResolvConf([]byte("nameserver 1.1.1.1\n; comment\nsearch a.example.\noptions ndots:1\nnameserver 8.8.8.8\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := "nameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch a.example\noptions ndots:1\n"
	if got := string(ResolvConf(cfg)); got != want {
		t.Errorf("ResolvConf = %q, want %q", got, want)
	}
	if _, err := ParseResolvConf([]byte("nameserver\n")); err == nil {
		t.Error("empty nameserver line: want an error")
	}
}

func TestHosts(t *testing.T) {
	base := "# Kubernetes-managed hosts file.\n" +
		"127.0.0.1\tlocalhost\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\n" +
		"fe00::0\tip6-mcastprefix\n" +
		"fe00::1\tip6-allnodes\n" +
		"fe00::2\tip6-allrouters\n"
	o := Options{ClusterDomain: "cluster.local"}

	p := pod("", false, nil)
	if got, want := string(o.Hosts(p, []string{"10.244.0.5"})), base+"10.244.0.5\tweb-0\n"; got != want {
		t.Errorf("plain pod:\n%s\nwant\n%s", got, want)
	}

	p.Spec.Hostname, p.Spec.Subdomain = "db", "backend"
	p.Spec.HostAliases = []*corev1.HostAlias{{Ip: "127.0.0.1", Hostnames: []string{"foo.local", "bar.local"}}, {Ip: "10.1.2.3", Hostnames: []string{"foo.remote"}}}
	want := base +
		"10.244.0.5\tdb.backend.shop.svc.cluster.local\tdb\n" +
		"fd00::5\tdb.backend.shop.svc.cluster.local\tdb\n" +
		"\n# Entries added by HostAliases.\n" +
		"127.0.0.1\tfoo.local\tbar.local\n" +
		"10.1.2.3\tfoo.remote\n"
	if got := string(o.Hosts(p, []string{"10.244.0.5", "fd00::5"})); got != want {
		t.Errorf("hostname, subdomain, aliases:\n%s\nwant\n%s", got, want)
	}

	hostFile := writeFile(t, "hosts", "127.0.0.1 localhost\n192.168.0.9 node-1")
	hp := pod("", true, nil)
	hp.Spec.HostAliases = []*corev1.HostAlias{{Ip: "1.2.3.4", Hostnames: []string{"x"}}}
	want = "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.168.0.9 node-1\n\n# Entries added by HostAliases.\n1.2.3.4\tx\n"
	if got := string(Options{HostsFile: hostFile}.Hosts(hp, []string{"192.168.0.9"})); got != want {
		t.Errorf("host network:\n%q\nwant\n%q", got, want)
	}
}

func TestHostnameAndDomain(t *testing.T) {
	p := pod("", false, nil)
	p.Metadata.Name = strings.Repeat("a", 62) + "-b-c"
	h, d, err := HostnameAndDomain(p, "cluster.local")
	if err != nil || h != strings.Repeat("a", 62) || d != "" {
		t.Errorf("long name: %q %q %v", h, d, err)
	}
	p.Spec.Hostname = "Bad_Name"
	if _, _, err := HostnameAndDomain(p, "cluster.local"); err == nil || !strings.HasPrefix(err.Error(), `pod Hostname "Bad_Name" is not a valid DNS label`) {
		t.Errorf("invalid hostname: %v", err)
	}
	p.Spec.Hostname, p.Spec.Subdomain = "h", "sub"
	if h, d, _ := HostnameAndDomain(p, "k8s.test"); h != "h" || d != "sub.shop.svc.k8s.test" {
		t.Errorf("subdomain: %q %q", h, d)
	}
}
