package validation

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	corev1 "skiff.dev/proto/api/core/v1"
)

// Options are the parts of the cluster's configuration validation depends on.
type Options struct {
	// NodePortMin and NodePortMax are --service-node-port-range; zero is
	// upstream's default, 30000-32767.
	NodePortMin, NodePortMax int32
}

func (o Options) nodePorts() (int32, int32) {
	if o.NodePortMin == 0 && o.NodePortMax == 0 {
		return 30000, 32767
	}
	return o.NodePortMin, o.NodePortMax
}

// ipFamilyPolicies are upstream's, sorted as its NotSupported lists them.
var ipFamilyPolicies = []string{"PreferDualStack", "RequireDualStack", "SingleStack"}

// service validates a Service; old is the one an update replaces (nil on
// create), whose node ports stay valid though the range has since changed.
func service(svc, old *corev1.Service, opts Options) field.ErrorList {
	s := nonNil(svc.GetSpec())
	var errs field.ErrorList
	if s.Type != "" {
		errs = append(errs, oneOf(s.Type, specPath.Child("type"), "ClusterIP", "ExternalName", "LoadBalancer", "NodePort")...)
	}
	headless := s.ClusterIP == "None"
	if len(s.Ports) == 0 && s.Type != "ExternalName" && !headless {
		errs = append(errs, field.Required(specPath.Child("ports"), ""))
	}
	if s.Type == "ExternalName" {
		if s.ExternalName == "" {
			errs = append(errs, field.Required(specPath.Child("externalName"), ""))
		}
		if len(s.ClusterIPs) > 0 {
			errs = append(errs, field.Forbidden(specPath.Child("clusterIPs"), "may not be set for ExternalName services"))
		}
		if len(s.IpFamilies) > 0 {
			errs = append(errs, field.Forbidden(specPath.Child("ipFamilies"), "may not be set for ExternalName services"))
		}
		if s.IpFamilyPolicy != nil {
			errs = append(errs, field.Forbidden(specPath.Child("ipFamilyPolicy"), "may not be set for ExternalName services"))
		}
	}
	if s.ClusterIP != "" && !headless && net.ParseIP(s.ClusterIP) == nil {
		errs = append(errs, field.Invalid(specPath.Child("clusterIP"), s.ClusterIP, "must be empty, 'None', or a valid IP address"))
	}
	errs = append(errs, clusterIPs(s)...)
	min, max := opts.nodePorts()
	stored := map[int32]bool{}
	for _, p := range old.GetSpec().GetPorts() {
		stored[p.NodePort] = true
	}
	names := map[string]bool{}
	seen := map[string]bool{}
	nodePorts := map[string]bool{}
	for i, p := range s.Ports {
		pp := specPath.Child("ports").Index(i)
		if len(s.Ports) > 1 && p.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), ""))
		}
		if p.Name != "" {
			for _, msg := range validation.IsDNS1123Label(p.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
			}
			if names[p.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			names[p.Name] = true
		}
		for _, msg := range validation.IsValidPortNum(int(p.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, msg))
		}
		if p.Protocol != "" {
			errs = append(errs, oneOf(p.Protocol, pp.Child("protocol"), "SCTP", "TCP", "UDP")...)
		}
		key := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if seen[key] {
			errs = append(errs, field.Duplicate(pp, key))
		}
		seen[key] = true
		if p.TargetPort != nil {
			errs = append(errs, portRef(p.TargetPort, pp.Child("targetPort"))...)
		}
		if p.NodePort != 0 {
			if s.Type != "NodePort" && s.Type != "LoadBalancer" {
				errs = append(errs, field.Forbidden(pp.Child("nodePort"), "may not be used when `type` is 'ClusterIP'"))
			} else if (p.NodePort < min || p.NodePort > max) && !stored[p.NodePort] {
				errs = append(errs, field.Invalid(pp.Child("nodePort"), p.NodePort, fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %d-%d", min, max)))
			}
			// One node port may serve one port number over several
			// protocols, never one protocol twice.
			np := fmt.Sprintf("%d/%s", p.NodePort, p.Protocol)
			if nodePorts[np] {
				errs = append(errs, field.Duplicate(pp.Child("nodePort"), p.NodePort))
			}
			nodePorts[np] = true
		}
	}
	errs = append(errs, metavalidation.ValidateLabels(s.Selector, specPath.Child("selector"))...)
	if s.SessionAffinity != "" {
		errs = append(errs, oneOf(s.SessionAffinity, specPath.Child("sessionAffinity"), "ClientIP", "None")...)
	}
	if p := s.ExternalTrafficPolicy; p != "" {
		if s.Type != "NodePort" && s.Type != "LoadBalancer" {
			errs = append(errs, field.Invalid(specPath.Child("externalTrafficPolicy"), p, "may only be set when `type` is 'NodePort' or 'LoadBalancer'"))
		} else {
			errs = append(errs, oneOf(p, specPath.Child("externalTrafficPolicy"), "Cluster", "Local")...)
		}
	}
	if s.HealthCheckNodePort != 0 {
		if s.Type != "LoadBalancer" || s.ExternalTrafficPolicy != "Local" {
			errs = append(errs, field.Invalid(specPath.Child("healthCheckNodePort"), s.HealthCheckNodePort, "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))
		} else {
			for _, msg := range validation.IsValidPortNum(int(s.HealthCheckNodePort)) {
				errs = append(errs, field.Invalid(specPath.Child("healthCheckNodePort"), s.HealthCheckNodePort, msg))
			}
		}
	}
	return errs
}

// clusterIPs is upstream's ValidateServiceClusterIPsRelatedFields: clusterIP
// and clusterIPs agree, the IPs are at most one of each family and match
// ipFamilies, the families and the policy are known values.
func clusterIPs(s *corev1.ServiceSpec) field.ErrorList {
	if s.Type == "ExternalName" {
		return nil
	}
	var errs field.ErrorList
	ipsPath, famPath := specPath.Child("clusterIPs"), specPath.Child("ipFamilies")
	// A clusterIP without clusterIPs is fine: the registry fills them in
	// (upstream's normalizeClusterIPs) before anyone reads them.
	if s.ClusterIP != "" {
		if len(s.ClusterIPs) > 0 && s.ClusterIPs[0] != s.ClusterIP {
			errs = append(errs, field.Invalid(ipsPath, s.ClusterIPs, "first value must match `clusterIP`"))
		}
	} else if len(s.ClusterIPs) != 0 {
		errs = append(errs, field.Invalid(ipsPath, s.ClusterIPs, "must be empty when `clusterIP` is not specified"))
	}
	seen := map[string]bool{}
	for i, f := range s.IpFamilies {
		if f != "IPv4" && f != "IPv6" {
			errs = append(errs, field.NotSupported(famPath.Index(i), f, []string{"IPv4", "IPv6"}))
		}
		if seen[f] {
			errs = append(errs, field.Duplicate(famPath.Index(i), f))
		}
		seen[f] = true
	}
	if p := s.IpFamilyPolicy; p != nil && !slices.Contains(ipFamilyPolicies, *p) {
		errs = append(errs, field.NotSupported(specPath.Child("ipFamilyPolicy"), *p, ipFamilyPolicies))
	}
	bad := false
	for i, ip := range s.ClusterIPs {
		if i == 0 && ip == "None" {
			if len(s.ClusterIPs) > 1 {
				bad = true
				errs = append(errs, field.Invalid(ipsPath, s.ClusterIPs, "'None' must be the first and only value"))
			}
			continue
		}
		for _, msg := range validation.IsValidIP(ipsPath.Index(i), ip) {
			bad = true
			errs = append(errs, msg)
		}
	}
	if len(s.ClusterIPs) > 2 {
		errs = append(errs, field.Invalid(ipsPath, s.ClusterIPs, "may only hold up to 2 values"))
	}
	if bad {
		return errs
	}
	if len(s.ClusterIPs) == 2 && is6(s.ClusterIPs[0]) == is6(s.ClusterIPs[1]) {
		errs = append(errs, field.Invalid(ipsPath, s.ClusterIPs, "may specify no more than one IP for each IP family"))
	}
	if len(s.ClusterIPs) > 0 && s.ClusterIPs[0] != "None" {
		for i, ip := range s.ClusterIPs {
			if i >= len(s.IpFamilies) {
				break
			}
			if f := s.IpFamilies[i]; f == "IPv4" && is6(ip) || f == "IPv6" && !is6(ip) {
				errs = append(errs, field.Invalid(ipsPath.Index(i), ip, fmt.Sprintf("expected an %s value as indicated by `ipFamilies[%d]`", f, i)))
			}
		}
	}
	return errs
}

func is6(ip string) bool {
	a, err := netip.ParseAddr(ip)
	return err == nil && a.Is6() && !a.Is4In6()
}

// serviceUpdate is what a Service may not change: its cluster IPs and IP
// families once set, unless it becomes or stops being an ExternalName
// Service, and except adding or (as SingleStack) dropping the secondary.
func serviceUpdate(n, o *corev1.Service) field.ErrorList {
	ns, os := nonNil(n.GetSpec()), nonNil(o.GetSpec())
	var errs field.ErrorList
	if ip := os.ClusterIP; ip != "" && ns.ClusterIP != ip && ns.Type != "ExternalName" && os.Type != "ExternalName" {
		errs = append(errs, field.Invalid(specPath.Child("clusterIP"), ns.ClusterIP, "field is immutable"))
	}
	if ns.Type == "ExternalName" || os.Type == "ExternalName" {
		return errs
	}
	headless := func(s *corev1.ServiceSpec) bool { return len(s.ClusterIPs) == 1 && s.ClusterIPs[0] == "None" }
	if !(headless(ns) && headless(os)) {
		errs = append(errs, upgradeDowngrade(ns.ClusterIPs, os.ClusterIPs, ns.IpFamilyPolicy, specPath.Child("clusterIPs"), "clusterIP")...)
	}
	if headless(ns) == headless(os) && !headless(ns) {
		errs = append(errs, upgradeDowngrade(ns.IpFamilies, os.IpFamilies, ns.IpFamilyPolicy, specPath.Child("ipFamilies"), "ipFamily")...)
	}
	return errs
}

// upgradeDowngrade is upstream's validateUpgradeDowngradeClusterIPs and
// ...IPFamilies: the primary value is fixed once set, a secondary may be
// added, and dropped only with ipFamilyPolicy SingleStack.
func upgradeDowngrade(n, o []string, policy *string, path *field.Path, what string) field.ErrorList {
	var errs field.ErrorList
	switch {
	case len(o) == len(n):
		for i := range o {
			if o[i] != n[i] {
				errs = append(errs, field.Invalid(path.Index(i), n, "may not change once set"))
			}
		}
	case len(o) > len(n):
		if len(n) == 0 {
			errs = append(errs, field.Invalid(path.Index(0), n, fmt.Sprintf("primary %s can not be unset", what)))
		} else if n[0] != o[0] {
			errs = append(errs, field.Invalid(path.Index(0), n, "may not change once set"))
		}
		if len(n) == 1 && (policy == nil || *policy != "SingleStack") {
			errs = append(errs, field.Invalid(specPath.Child("ipFamilyPolicy"), policy, fmt.Sprintf("must be set to 'SingleStack' when releasing the secondary %s", what)))
		}
	case len(o) > 0 && n[0] != o[0]:
		errs = append(errs, field.Invalid(path.Index(0), n, "may not change once set"))
	}
	return errs
}
