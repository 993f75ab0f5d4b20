package servicealloc

import (
	"fmt"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Prepare is upstream's service strategy before defaulting: on update it
// keeps the values the server assigned that the client left out
// (patchAllocatedValues), keeps clusterIP and clusterIPs in step
// (normalizeClusterIPs) and drops what the new type no longer uses
// (dropTypeDependentFields); then it fills in the IP families and policy
// from the cluster's ranges, which plain defaulting cannot know.
func (a *Allocator) Prepare(obj, oldObj scheme.Object) {
	svc := obj.(*corev1.Service)
	if svc.Spec == nil {
		svc.Spec = &corev1.ServiceSpec{}
	}
	s := svc.Spec
	// old may be the watch cache's copy: it is read, never written.
	var o *corev1.ServiceSpec
	if oldObj != nil {
		if o = oldObj.(*corev1.Service).GetSpec(); o == nil {
			o = &corev1.ServiceSpec{}
		}
	}
	if o == nil {
		if s.ClusterIP != "" && len(s.ClusterIPs) == 0 {
			s.ClusterIPs = []string{s.ClusterIP}
		}
	} else {
		patchAllocatedValues(s, o)
		normalizeClusterIPs(s, o)
		dropTypeDependentFields(s, o)
	}
	a.defaultIPFamilies(s, o)
}

// typeOf is the Service's type, defaulted as it will be.
func typeOf(s *corev1.ServiceSpec) string {
	if t := s.GetType(); t != "" {
		return t
	}
	return "ClusterIP"
}

func needsClusterIP(s *corev1.ServiceSpec) bool { return typeOf(s) != "ExternalName" }

func needsNodePorts(s *corev1.ServiceSpec) bool {
	t := typeOf(s)
	return t == "NodePort" || t == "LoadBalancer"
}

// needsHealthCheck is upstream's NeedsHealthCheck: a LoadBalancer sending
// external traffic to local endpoints only.
func needsHealthCheck(s *corev1.ServiceSpec) bool {
	return typeOf(s) == "LoadBalancer" && s.GetExternalTrafficPolicy() == "Local"
}

func headless(s *corev1.ServiceSpec) bool {
	return s.GetClusterIP() == "None" || len(s.GetClusterIPs()) > 0 && s.ClusterIPs[0] == "None"
}

func headlessSelectorless(s *corev1.ServiceSpec) bool {
	return headless(s) && len(s.GetSelector()) == 0
}

func policyOf(s *corev1.ServiceSpec) string { return s.GetIpFamilyPolicy() }

func patchAllocatedValues(s, o *corev1.ServiceSpec) {
	if needsClusterIP(o) && needsClusterIP(s) {
		if s.ClusterIP == "" {
			s.ClusterIP = o.ClusterIP
		}
		if len(s.ClusterIPs) == 0 && len(o.ClusterIPs) > 0 {
			s.ClusterIPs = slices.Clone(o.ClusterIPs)
		}
	}
	if needsNodePorts(o) && needsNodePorts(s) {
		// Node ports both old and new name are spoken for; the others
		// go back, by port name, to ports that came without one.
		inNew := map[int32]bool{}
		for _, p := range s.Ports {
			inNew[p.NodePort] = true
		}
		byName := map[string]int32{}
		for _, p := range o.Ports {
			byName[p.Name] = p.NodePort
		}
		for _, p := range s.Ports {
			if p.NodePort == 0 {
				if v := byName[p.Name]; !inNew[v] {
					p.NodePort = v
				}
			}
		}
	}
	if needsHealthCheck(o) && needsHealthCheck(s) && s.HealthCheckNodePort == 0 {
		s.HealthCheckNodePort = o.HealthCheckNodePort
	}
}

func normalizeClusterIPs(s, o *corev1.ServiceSpec) {
	// An old client that sent clusterIP alone.
	if len(o.ClusterIPs) > 0 && len(s.ClusterIPs) == 0 && o.ClusterIP == s.ClusterIP {
		s.ClusterIPs = slices.Clone(o.ClusterIPs)
	}
	if o.ClusterIP != s.ClusterIP && slices.Equal(o.ClusterIPs, s.ClusterIPs) {
		if s.ClusterIP == "" {
			s.ClusterIPs = nil
		} else {
			s.ClusterIPs = []string{s.ClusterIP}
		}
	}
}

// dropTypeDependentFields wipes a field the new type does not use, but only
// when the client left it as it was (a change is the client's to explain,
// and validation says what is wrong with it).
func dropTypeDependentFields(s, o *corev1.ServiceSpec) {
	if needsClusterIP(o) && !needsClusterIP(s) {
		if o.ClusterIP == s.ClusterIP && slices.Equal(o.ClusterIPs, s.ClusterIPs) {
			s.ClusterIP, s.ClusterIPs = "", nil
		}
		if slices.Equal(o.IpFamilies, s.IpFamilies) {
			s.IpFamilies = nil
		}
		if policyOf(o) == policyOf(s) {
			s.IpFamilyPolicy = nil
		}
	}
	if needsNodePorts(o) && !needsNodePorts(s) {
		had := map[int32]bool{}
		for _, p := range o.Ports {
			had[p.NodePort] = true
		}
		same := true
		for _, p := range s.Ports {
			if p.NodePort != 0 && !had[p.NodePort] {
				same = false
			}
		}
		if same {
			for _, p := range s.Ports {
				p.NodePort = 0
			}
		}
	}
	if needsHealthCheck(o) && !needsHealthCheck(s) && o.HealthCheckNodePort == s.HealthCheckNodePort {
		s.HealthCheckNodePort = 0
	}
	if typeOf(o) == "LoadBalancer" && typeOf(s) != "LoadBalancer" &&
		s.AllocateLoadBalancerNodePorts != nil && o.AllocateLoadBalancerNodePorts != nil &&
		*s.AllocateLoadBalancerNodePorts == *o.AllocateLoadBalancerNodePorts {
		s.AllocateLoadBalancerNodePorts = nil
	}
	if needsNodePorts(o) && !needsNodePorts(s) && o.ExternalTrafficPolicy == s.ExternalTrafficPolicy {
		s.ExternalTrafficPolicy = ""
	}
}

func familyOf(ip string) (string, bool) {
	a, err := netip.ParseAddr(ip)
	switch {
	case err != nil:
		return "", false
	case a.Unmap().Is4():
		return "IPv4", true
	}
	return "IPv6", true
}

func otherFamily(f string) string {
	if f == "IPv4" {
		return "IPv6"
	}
	return "IPv4"
}

// matchingPreferDualStack is upstream's isMatchingPreferDualStackClusterIPFields:
// a PreferDualStack Service whose IP fields did not change is left as it is
// even after the cluster turned dual-stack (or back), so no update ever adds
// or drops an IP the client did not ask about.
func matchingPreferDualStack(s, o *corev1.ServiceSpec) bool {
	return o != nil && s.IpFamilyPolicy != nil && typeOf(o) == typeOf(s) && needsClusterIP(s) &&
		policyOf(s) == "PreferDualStack" && policyOf(o) == "PreferDualStack" &&
		slices.Equal(o.ClusterIPs, s.ClusterIPs) && slices.Equal(o.IpFamilies, s.IpFamilies)
}

// defaultIPFamilies is the defaulting half of upstream's initIPFamilyFields:
// a policy (the old one on update, SingleStack otherwise, RequireDualStack
// for a headless Service without selector), families inferred from the IPs
// given, then the primary family, then the other one for a dual-stack
// policy when the cluster has it.
func (a *Allocator) defaultIPFamilies(s, o *corev1.ServiceSpec) {
	if !needsClusterIP(s) || matchingPreferDualStack(s, o) {
		return
	}
	if s.IpFamilyPolicy == nil {
		p := "SingleStack"
		switch {
		case o != nil && o.IpFamilyPolicy != nil && needsClusterIP(o):
			p = *o.IpFamilyPolicy
		case headlessSelectorless(s):
			p = "RequireDualStack"
		}
		s.IpFamilyPolicy = &p
	}
	if o != nil && *s.IpFamilyPolicy == "SingleStack" {
		// Setting SingleStack on an otherwise unchanged Service asks for
		// its secondary IP to go.
		if slices.Equal(o.ClusterIPs, s.ClusterIPs) && len(s.ClusterIPs) > 1 {
			s.ClusterIPs = s.ClusterIPs[:1]
		}
		if slices.Equal(o.IpFamilies, s.IpFamilies) && len(s.IpFamilies) > 1 {
			s.IpFamilies = s.IpFamilies[:1]
		}
	}
	for i, ip := range s.ClusterIPs {
		if ip == "None" {
			break
		}
		f, ok := familyOf(ip)
		if !ok {
			break // validation says why
		}
		if i >= len(s.IpFamilies) {
			s.IpFamilies = append(s.IpFamilies, f)
		}
	}
	if len(s.IpFamilies) == 0 {
		s.IpFamilies = []string{a.cfg.IPRanges[0].Family()}
	}
	if *s.IpFamilyPolicy != "SingleStack" && len(s.IpFamilies) == 1 &&
		(headlessSelectorless(s) || len(a.cfg.IPRanges) == 2) {
		s.IpFamilies = append(s.IpFamilies, otherFamily(s.IpFamilies[0]))
	}
}

// checkFamilies is the checking half of upstream's initIPFamilyFields: the
// policy fits the IPs and families asked for, and the cluster has them.
func (a *Allocator) checkFamilies(svc, old *corev1.Service) error {
	s := svc.Spec
	if !needsClusterIP(s) || matchingPreferDualStack(s, old.GetSpec()) {
		return nil
	}
	var errs field.ErrorList
	policyPath := field.NewPath("spec", "ipFamilyPolicy")
	policy := policyOf(s)
	if policy == "SingleStack" {
		if len(s.ClusterIPs) == 2 {
			errs = append(errs, field.Invalid(policyPath, policy, "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"))
		}
		if len(s.IpFamilies) == 2 {
			errs = append(errs, field.Invalid(policyPath, policy, "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"))
		}
	}
	// A headless Service without selector may name families the cluster
	// lacks: it gets no IP, and its endpoints are someone else's.
	if len(errs) == 0 && !headlessSelectorless(s) {
		if policy == "RequireDualStack" && len(a.cfg.IPRanges) < 2 {
			errs = append(errs, field.Invalid(policyPath, policy, "this cluster is not configured for dual-stack services"))
		}
		for i, f := range s.IpFamilies {
			if _, ok := a.rangeOf(f); ok {
				continue
			}
			if i < len(s.ClusterIPs) && s.ClusterIPs[i] != "" {
				errs = append(errs, field.Invalid(field.NewPath("spec", "clusterIPs").Index(i), s.ClusterIPs[i], fmt.Sprintf("%s is not configured on this cluster", f)))
			} else {
				errs = append(errs, field.Invalid(field.NewPath("spec", "ipFamilies").Index(i), f, "not configured on this cluster"))
			}
		}
	}
	if len(errs) > 0 {
		return apierrors.NewInvalid("Service", svc.GetMetadata().GetName(), errs)
	}
	return nil
}
