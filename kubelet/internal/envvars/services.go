package envvars

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "skiff.dev/proto/api/core/v1"
)

// masterServices are the Services of `default` every pod gets variables for,
// whatever its enableServiceLinks says (upstream's getServiceEnvVarMap).
var masterServices = map[string]bool{"kubernetes": true}

// ServiceEnv returns the service variables a pod of namespace ns sees: the
// `kubernetes` Service of `default` always, and, when links is true, every
// Service of ns with a ClusterIP (which wins over `default`'s of the same
// name, as upstream).
func ServiceEnv(ns string, links bool, services []*corev1.Service) map[string]string {
	chosen := map[string]*corev1.Service{}
	for _, s := range services {
		if !hasClusterIP(s) {
			continue
		}
		name := s.GetMetadata().GetName()
		switch {
		case s.GetMetadata().GetNamespace() == "default" && masterServices[name]:
			if _, ok := chosen[name]; !ok {
				chosen[name] = s
			}
		case s.GetMetadata().GetNamespace() == ns && links:
			chosen[name] = s
		}
	}
	names := make([]string, 0, len(chosen))
	for n := range chosen {
		names = append(names, n)
	}
	sort.Strings(names)
	m := map[string]string{}
	for _, n := range names {
		for _, kv := range FromService(chosen[n]) {
			m[kv[0]] = kv[1]
		}
	}
	return m
}

func hasClusterIP(s *corev1.Service) bool {
	ip := s.GetSpec().GetClusterIP()
	return ip != "" && ip != "None" && len(s.GetSpec().GetPorts()) > 0
}

// FromService returns the variables of one Service in upstream's order:
// <SVC>_SERVICE_HOST, <SVC>_SERVICE_PORT (first port), one
// <SVC>_SERVICE_PORT_<NAME> per named port, then Docker's link variables
// (<SVC>_PORT, <SVC>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}).
func FromService(s *corev1.Service) [][2]string {
	if !hasClusterIP(s) {
		return nil
	}
	prefix := envName(s.GetMetadata().GetName())
	ip := s.GetSpec().GetClusterIP()
	ports := s.GetSpec().GetPorts()
	out := [][2]string{
		{prefix + "_SERVICE_HOST", ip},
		{prefix + "_SERVICE_PORT", strconv.Itoa(int(ports[0].GetPort()))},
	}
	for _, p := range ports {
		if p.GetName() != "" {
			out = append(out, [2]string{prefix + "_SERVICE_PORT_" + envName(p.GetName()), strconv.Itoa(int(p.GetPort()))})
		}
	}
	for i, p := range ports {
		proto := p.GetProtocol()
		if proto == "" {
			proto = "TCP"
		}
		lower := strings.ToLower(proto)
		url := fmt.Sprintf("%s://%s", lower, joinHostPort(ip, p.GetPort()))
		if i == 0 {
			out = append(out, [2]string{prefix + "_PORT", url})
		}
		pp := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.GetPort(), strings.ToUpper(proto))
		out = append(out,
			[2]string{pp, url},
			[2]string{pp + "_PROTO", lower},
			[2]string{pp + "_PORT", strconv.Itoa(int(p.GetPort()))},
			[2]string{pp + "_ADDR", ip},
		)
	}
	return out
}

// joinHostPort brackets IPv6 addresses, as upstream's net.JoinHostPort use.
func joinHostPort(ip string, port int32) string {
	if strings.Contains(ip, ":") {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

// envName is upstream's makeEnvVariableName: upper case, '-' and '.' to '_',
// and a leading '_' before a digit.
func envName(s string) string {
	n := strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(s))
	if n != "" && n[0] >= '0' && n[0] <= '9' {
		n = "_" + n
	}
	return n
}
