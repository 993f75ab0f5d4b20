package dns

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	corev1 "skiff.dev/proto/api/core/v1"
)

const (
	managedHostsHeader            = "# Kubernetes-managed hosts file.\n"
	managedHostsHeaderHostNetwork = "# Kubernetes-managed hosts file (host network).\n"
	hostAliasesHeader             = "# Entries added by HostAliases.\n"
)

// DefaultClusterDomain is what Hosts assumes when no Options say otherwise.
const DefaultClusterDomain = "cluster.local"

// Hosts returns the pod's /etc/hosts for DefaultClusterDomain; the kubelet
// uses Options.Hosts with its --cluster-domain.
func Hosts(pod *corev1.Pod, podIPs []string) []byte {
	return Options{ClusterDomain: DefaultClusterDomain}.Hosts(pod, podIPs)
}

// Hosts returns the pod's /etc/hosts as upstream's kubelet writes it: the
// managed-by header, the localhost lines, one line per pod IP with its
// hostname (FQDN first when it has a subdomain), then the hostAliases. A
// hostNetwork pod gets the host's file under its own header, plus the
// hostAliases. A pod whose hostname or subdomain is invalid (the apiserver
// rejects those) gets its name as hostname.
func (o Options) Hosts(pod *corev1.Pod, podIPs []string) []byte {
	aliases := hostAliases(pod.GetSpec().GetHostAliases())
	if pod.GetSpec().GetHostNetwork() {
		path := o.HostsFile
		if path == "" {
			path = "/etc/hosts"
		}
		var b bytes.Buffer
		b.WriteString(managedHostsHeaderHostNetwork)
		if content, err := os.ReadFile(path); err == nil {
			b.Write(content)
			if len(content) > 0 && content[len(content)-1] != '\n' {
				b.WriteByte('\n')
			}
		}
		b.Write(aliases)
		return b.Bytes()
	}

	hostname, domain, err := HostnameAndDomain(pod, o.ClusterDomain)
	if err != nil {
		hostname, domain = pod.GetMetadata().GetName(), ""
	}
	var b bytes.Buffer
	b.WriteString(managedHostsHeader)
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	for _, ip := range podIPs {
		if domain != "" {
			fmt.Fprintf(&b, "%s\t%s.%s\t%s\n", ip, hostname, domain, hostname)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
		}
	}
	b.Write(aliases)
	return b.Bytes()
}

func hostAliases(aliases []*corev1.HostAlias) []byte {
	if len(aliases) == 0 {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("\n")
	b.WriteString(hostAliasesHeader)
	for _, a := range aliases {
		fmt.Fprintf(&b, "%s\t%s\n", a.GetIp(), strings.Join(a.GetHostnames(), "\t"))
	}
	return b.Bytes()
}
