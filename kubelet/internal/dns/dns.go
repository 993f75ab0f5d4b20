// Package dns gives a pod its resolver configuration and its /etc/hosts the
// way upstream's kubelet does (pkg/kubelet/network/dns and kubelet_pods.go's
// managed hosts file).
package dns

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	corev1 "skiff.dev/proto/api/core/v1"
)

// Upstream's limits (ExpandedDNSConfig, GA): the resolver gets at most this
// many search domains and this long a search line, each domain at most 253
// characters, and at most 3 nameservers.
const (
	MaxSearchPaths     = 32
	MaxSearchListChars = 2048
	MaxNameservers     = 3
	maxDomainLength    = 253
)

// Options is the node's DNS configuration (--cluster-dns, --cluster-domain,
// --resolv-conf).
type Options struct {
	ClusterDNS    []string
	ClusterDomain string
	// ResolvConf is the host's resolver file, the base of dnsPolicy Default
	// (and of ClusterFirst's host search domains). Empty means none: such
	// pods get nameserver 127.0.0.1 and search ".", as upstream.
	ResolvConf string
	// HostsFile is the host's hosts file, the base of a hostNetwork pod's
	// /etc/hosts; empty means /etc/hosts.
	HostsFile string
	// Event, when set, receives upstream's warnings on the pod
	// (DNSConfigForming, MissingClusterDNS).
	Event func(pod *corev1.Pod, eventType, reason, message string)
}

// Config returns the pod's sandbox DNS configuration for its dnsPolicy.
func Config(pod *corev1.Pod, o Options) (*runtimeapi.DNSConfig, error) { return o.Config(pod) }

// Config is the package-level Config with these options.
func (o Options) Config(pod *corev1.Pod) (*runtimeapi.DNSConfig, error) {
	host, err := o.hostConfig()
	if err != nil {
		return nil, err
	}
	cfg := host
	switch policy(pod) {
	case "None":
		cfg = &runtimeapi.DNSConfig{}
	case "Cluster":
		if len(o.ClusterDNS) > 0 {
			// The cluster DNS is the only nameserver: it forwards what it
			// does not own itself.
			cfg = &runtimeapi.DNSConfig{
				Servers:  append([]string(nil), o.ClusterDNS...),
				Searches: o.clusterSearches(pod, host.Searches),
				Options:  []string{"ndots:5"},
			}
			break
		}
		msg := `kubelet does not have ClusterDNS IP configured and cannot create Pod using "ClusterFirst" policy. Falling back to "Default" policy.`
		o.event(pod, "Warning", "MissingClusterDNS", fmt.Sprintf("pod: %q. %s", podRef(pod), msg))
		cfg = o.defaultConfig(host)
	default:
		cfg = o.defaultConfig(host)
	}
	if dc := pod.GetSpec().GetDnsConfig(); dc != nil {
		cfg.Servers = omitDuplicates(append(cfg.Servers, dc.GetNameservers()...))
		cfg.Searches = omitDuplicates(append(cfg.Searches, dc.GetSearches()...))
		cfg.Options = mergeOptions(cfg.Options, dc.GetOptions())
	}
	cfg.Servers = o.fitNameservers(pod, cfg.Servers)
	cfg.Searches = o.fitSearches(pod, cfg.Searches)
	return cfg, nil
}

// policy maps dnsPolicy to what the pod's resolver is built from: "Cluster",
// "Host" or "None". ClusterFirst on the host network falls back to the
// host's, ClusterFirstWithHostNet does not; an unknown or empty policy is
// ClusterFirst, as upstream (the apiserver defaults it).
func policy(pod *corev1.Pod) string {
	switch pod.GetSpec().GetDnsPolicy() {
	case "None":
		return "None"
	case "ClusterFirstWithHostNet":
		return "Cluster"
	case "Default":
		return "Host"
	default:
		if pod.GetSpec().GetHostNetwork() {
			return "Host"
		}
		return "Cluster"
	}
}

func (o Options) defaultConfig(host *runtimeapi.DNSConfig) *runtimeapi.DNSConfig {
	if o.ResolvConf == "" {
		// No host resolver: the resolver library's own default ("the
		// nameserver on the local machine") without the host's search path.
		return &runtimeapi.DNSConfig{Servers: []string{"127.0.0.1"}, Searches: []string{"."}}
	}
	return host
}

func (o Options) hostConfig() (*runtimeapi.DNSConfig, error) {
	if o.ResolvConf == "" {
		return &runtimeapi.DNSConfig{}, nil
	}
	b, err := os.ReadFile(o.ResolvConf)
	if err != nil {
		return nil, err
	}
	return ParseResolvConf(b)
}

// clusterSearches is upstream's search path for ClusterFirst:
// <ns>.svc.<domain> svc.<domain> <domain>, then the host's, without repeats.
func (o Options) clusterSearches(pod *corev1.Pod, hostSearch []string) []string {
	if o.ClusterDomain == "" {
		return append([]string(nil), hostSearch...)
	}
	ns := pod.GetMetadata().GetNamespace()
	s := []string{ns + ".svc." + o.ClusterDomain, "svc." + o.ClusterDomain, o.ClusterDomain}
	return omitDuplicates(append(s, hostSearch...))
}

// ParseResolvConf reads a resolv.conf: nameserver lines accumulate, the last
// search and options lines win, search domains lose a trailing dot.
func ParseResolvConf(b []byte) (*runtimeapi.DNSConfig, error) {
	cfg := &runtimeapi.DNSConfig{Servers: []string{}, Searches: []string{}, Options: []string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 10<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) < 2 {
				return nil, fmt.Errorf("nameserver list is empty ")
			}
			cfg.Servers = append(cfg.Servers, f[1])
		case "search":
			cfg.Searches = []string{}
			for _, s := range f[1:] {
				cfg.Searches = append(cfg.Searches, strings.TrimSuffix(s, "."))
			}
		case "options":
			cfg.Options = append([]string{}, f[1:]...)
		}
	}
	return cfg, sc.Err()
}

// ResolvConf renders a DNSConfig as the resolv.conf the runtime writes.
func ResolvConf(cfg *runtimeapi.DNSConfig) []byte {
	var b bytes.Buffer
	for _, s := range cfg.GetServers() {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(cfg.GetSearches()) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(cfg.GetSearches(), " "))
	}
	if len(cfg.GetOptions()) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(cfg.GetOptions(), " "))
	}
	return b.Bytes()
}

func omitDuplicates(s []string) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// mergeOptions adds the pod's dnsConfig options to the existing ones; a
// name given again takes the pod's value. Upstream goes through a map (so
// its order is random); this keeps the existing order and appends new names.
func mergeOptions(existing []string, add []*corev1.PodDNSConfigOption) []string {
	var names []string
	values := map[string]string{}
	put := func(name, value string) {
		if _, ok := values[name]; !ok {
			names = append(names, name)
		}
		values[name] = value
	}
	for _, op := range existing {
		name, value, _ := strings.Cut(op, ":")
		put(name, value)
	}
	for _, op := range add {
		put(op.GetName(), op.GetValue())
	}
	out := []string{}
	for _, n := range names {
		if v := values[n]; v != "" {
			out = append(out, n+":"+v)
		} else {
			out = append(out, n)
		}
	}
	return out
}

func (o Options) fitNameservers(pod *corev1.Pod, servers []string) []string {
	if len(servers) <= MaxNameservers {
		return servers
	}
	servers = servers[:MaxNameservers]
	o.event(pod, "Warning", "DNSConfigForming", fmt.Sprintf("Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: %s", strings.Join(servers, " ")))
	return servers
}

// fitSearches applies upstream's limits: at most MaxSearchPaths domains,
// none longer than 253 characters, the line at most MaxSearchListChars
// (dropping domains from the end).
func (o Options) fitSearches(pod *corev1.Pod, search []string) []string {
	exceeded := false
	if len(search) > MaxSearchPaths {
		search = search[:MaxSearchPaths]
		exceeded = true
	}
	kept := search[:0:0]
	for _, s := range search {
		if len(s) > maxDomainLength {
			exceeded = true
			continue
		}
		kept = append(kept, s)
	}
	search = kept
	for len(search) > 0 && len(strings.Join(search, " ")) > MaxSearchListChars {
		search = search[:len(search)-1]
		exceeded = true
	}
	if exceeded {
		o.event(pod, "Warning", "DNSConfigForming", fmt.Sprintf("Search Line limits were exceeded, some search paths have been omitted, the applied search line is: %s", strings.Join(search, " ")))
	}
	return search
}

func (o Options) event(pod *corev1.Pod, eventType, reason, message string) {
	if o.Event != nil {
		o.Event(pod, eventType, reason, message)
	}
}

func podRef(pod *corev1.Pod) string {
	return pod.GetMetadata().GetName() + "_" + pod.GetMetadata().GetNamespace() + "(" + pod.GetMetadata().GetUid() + ")"
}

// HostnameAndDomain returns the pod's hostname (spec.hostname, else its name,
// cut to 63 characters) and its domain (<subdomain>.<ns>.svc.<clusterDomain>
// when spec.subdomain is set), as upstream's GeneratePodHostNameAndDomain.
func HostnameAndDomain(pod *corev1.Pod, clusterDomain string) (hostname, domain string, err error) {
	hostname = pod.GetMetadata().GetName()
	if h := pod.GetSpec().GetHostname(); h != "" {
		if msgs := validation.IsDNS1123Label(h); len(msgs) != 0 {
			return "", "", fmt.Errorf("pod Hostname %q is not a valid DNS label: %s", h, strings.Join(msgs, ";"))
		}
		hostname = h
	}
	if len(hostname) > validation.DNS1123LabelMaxLength {
		// As upstream's truncatePodHostnameIfNeeded: cut, then trim what a
		// label may not end with.
		hostname = strings.TrimRight(hostname[:validation.DNS1123LabelMaxLength], "-.")
		if hostname == "" {
			return "", "", fmt.Errorf("hostname for pod %q was invalid: %q", pod.GetMetadata().GetName(), hostname)
		}
	}
	if sd := pod.GetSpec().GetSubdomain(); sd != "" {
		if msgs := validation.IsDNS1123Label(sd); len(msgs) != 0 {
			return "", "", fmt.Errorf("pod Subdomain %q is not a valid DNS label: %s", sd, strings.Join(msgs, ";"))
		}
		domain = fmt.Sprintf("%s.%s.svc.%s", sd, pod.GetMetadata().GetNamespace(), clusterDomain)
	}
	return hostname, domain, nil
}
