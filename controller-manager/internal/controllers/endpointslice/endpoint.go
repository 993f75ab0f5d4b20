package endpointslice

import (
	"fmt"
	"net/netip"
	"reflect"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
)

// Well-known keys, as upstream spells them.
const (
	// LabelServiceName names the Service an EndpointSlice belongs to.
	LabelServiceName = "kubernetes.io/service-name"
	// LabelManagedBy names the controller managing an EndpointSlice.
	LabelManagedBy = "endpointslice.kubernetes.io/managed-by"
	// ControllerName is this controller's LabelManagedBy value.
	ControllerName = "endpointslice-controller.k8s.io"
	// LabelHeadless marks the endpoints of a Service without a cluster IP.
	LabelHeadless = "service.kubernetes.io/headless"
	// AnnotationLastChangeTriggerTime is when the change that led to the
	// object's last write happened (a pod becoming ready, a Service created).
	AnnotationLastChangeTriggerTime = "endpoints.kubernetes.io/last-change-trigger-time"
	// LabelTopologyZone is the Node label an endpoint's zone comes from.
	LabelTopologyZone = "topology.kubernetes.io/zone"

	AddressTypeIPv4 = "IPv4"
	AddressTypeIPv6 = "IPv6"
)

// Endpoint is what one pod contributes to a Service in one address family.
// Both the EndpointSlice and the Endpoints controller build theirs from it,
// so the two always agree on which pods back a Service and how.
type Endpoint struct {
	// Addresses are the pod's IPs of the family, in canonical form, in the
	// pod's order (an Endpoints address uses the first).
	Addresses []string
	// Ready: receives traffic. Serving and not terminating, or any pod when
	// the Service publishes not-ready addresses.
	Ready bool
	// Serving: the pod's Ready condition, whether or not it is terminating.
	Serving bool
	// Terminating: the pod has a deletionTimestamp.
	Terminating bool
	// Hostname is set when the pod's hostname and subdomain name it under
	// this Service (DNS A records for StatefulSet pods).
	Hostname string
	NodeName string
	// TargetRef points at the pod: kind, namespace, name and uid.
	TargetRef *corev1.ObjectReference
	// Ports are the Service's ports as this pod serves them: a named
	// targetPort resolved against this pod's containers. A Service port the
	// pod does not serve is left out.
	Ports []*discoveryv1.EndpointPort
}

// PodEndpoint decides whether pod backs svc in addressType and how. It is
// false for pods that belong in no endpoints at all: terminal ones
// (Succeeded, Failed), unscheduled ones, ones without an IP, or without an IP
// of the family. Terminating pods are included, marked Terminating; the
// Endpoints controller drops them unless the Service publishes not-ready
// addresses, as upstream's does.
func PodEndpoint(svc *corev1.Service, pod *corev1.Pod, addressType string) (Endpoint, bool) {
	if !ShouldPodBeInEndpoints(pod, true) || pod.GetSpec().GetNodeName() == "" {
		return Endpoint{}, false
	}
	addrs := podAddresses(pod, addressType)
	if len(addrs) == 0 {
		return Endpoint{}, false
	}
	m := pod.GetMetadata()
	serving := IsPodReady(pod)
	terminating := m.GetDeletionTimestamp() != nil
	ep := Endpoint{
		Addresses:   addrs,
		Serving:     serving,
		Terminating: terminating,
		// Ready never says true for a terminating pod, for compatibility
		// with consumers that only look at it, unless the Service asks
		// for every address to be published.
		Ready:     svc.GetSpec().GetPublishNotReadyAddresses() || (serving && !terminating),
		NodeName:  pod.GetSpec().GetNodeName(),
		TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()},
		Ports:     endpointPorts(svc, pod),
	}
	if ShouldSetHostname(pod, svc) {
		ep.Hostname = pod.GetSpec().GetHostname()
	}
	return ep, true
}

// ShouldPodBeInEndpoints is upstream's filter: not terminal, has an IP, and
// (unless includeTerminating) is not being deleted.
func ShouldPodBeInEndpoints(pod *corev1.Pod, includeTerminating bool) bool {
	switch pod.GetStatus().GetPhase() {
	case "Succeeded", "Failed":
		return false
	}
	if pod.GetStatus().GetPodIP() == "" && len(pod.GetStatus().GetPodIPs()) == 0 {
		return false
	}
	return includeTerminating || pod.GetMetadata().GetDeletionTimestamp() == nil
}

// IsPodReady reports the pod's Ready condition.
func IsPodReady(pod *corev1.Pod) bool {
	c := podReadyCondition(pod)
	return c != nil && c.GetStatus() == "True"
}

func podReadyCondition(pod *corev1.Pod) *corev1.PodCondition {
	for _, c := range pod.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c
		}
	}
	return nil
}

// ShouldSetHostname reports whether the pod's hostname belongs in svc's
// endpoints: the pod has one and its subdomain is the Service.
func ShouldSetHostname(pod *corev1.Pod, svc *corev1.Service) bool {
	return pod.GetSpec().GetHostname() != "" && pod.GetSpec().GetSubdomain() == svc.GetMetadata().GetName() &&
		pod.GetMetadata().GetNamespace() == svc.GetMetadata().GetNamespace()
}

// IsHeadless reports a Service without a cluster IP.
func IsHeadless(svc *corev1.Service) bool {
	ip := svc.GetSpec().GetClusterIP()
	return ip == "" || ip == "None"
}

// AddressTypes are the address families svc's endpoints are published in,
// from spec.ipFamilies (the apiserver defaults it). Without it, as from an
// old apiserver, the cluster IP's family, or both for a headless Service, as
// upstream assumes.
func AddressTypes(svc *corev1.Service) []string {
	var out []string
	seen := sets.New[string]()
	for _, f := range svc.GetSpec().GetIpFamilies() {
		if (f == AddressTypeIPv4 || f == AddressTypeIPv6) && !seen.Has(f) {
			seen.Insert(f)
			out = append(out, f)
		}
	}
	if len(out) > 0 {
		return out
	}
	if !IsHeadless(svc) {
		if a, err := netip.ParseAddr(svc.GetSpec().GetClusterIP()); err == nil && a.Is6() && !a.Is4In6() {
			return []string{AddressTypeIPv6}
		}
		return []string{AddressTypeIPv4}
	}
	return []string{AddressTypeIPv4, AddressTypeIPv6}
}

// podAddresses are the pod's IPs of addressType, canonical. status.podIPs
// is the list; status.podIP alone counts when the list is empty.
func podAddresses(pod *corev1.Pod, addressType string) []string {
	ips := make([]string, 0, 2)
	for _, p := range pod.GetStatus().GetPodIPs() {
		ips = append(ips, p.GetIp())
	}
	if len(ips) == 0 && pod.GetStatus().GetPodIP() != "" {
		ips = append(ips, pod.GetStatus().GetPodIP())
	}
	var out []string
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		a = a.Unmap()
		if (a.Is6() && addressType == AddressTypeIPv6) || (a.Is4() && addressType == AddressTypeIPv4) {
			out = append(out, a.String())
		}
	}
	return out
}

// endpointPorts are svc's ports resolved for pod. A headless Service may
// have none.
func endpointPorts(svc *corev1.Service, pod *corev1.Pod) []*discoveryv1.EndpointPort {
	out := []*discoveryv1.EndpointPort{}
	for _, sp := range svc.GetSpec().GetPorts() {
		n, err := FindPort(pod, sp)
		if err != nil {
			continue
		}
		out = append(out, &discoveryv1.EndpointPort{
			Name:        new(sp.GetName()),
			Protocol:    new(protocol(sp.GetProtocol())),
			Port:        new(n),
			AppProtocol: sp.AppProtocol,
		})
	}
	return out
}

// protocol is p with the apiserver's default filled in, so a port stored
// before defaulting (or by a test) compares equal to a defaulted one.
func protocol(p string) string {
	if p == "" {
		return "TCP"
	}
	return p
}

// FindPort is upstream's podutil.FindPort: a numeric targetPort as is, a
// named one looked up among the pod's containers' ports of the same
// protocol, then its sidecars' (init containers that always restart). An
// unset targetPort means the Service's port.
func FindPort(pod *corev1.Pod, sp *corev1.ServicePort) (int32, error) {
	tp := sp.GetTargetPort()
	if !tp.IsString() {
		if n := tp.GetIntVal(); n != 0 {
			return n, nil
		}
		return sp.GetPort(), nil
	}
	name, proto := tp.GetStrVal(), protocol(sp.GetProtocol())
	for _, c := range pod.GetSpec().GetContainers() {
		for _, p := range c.GetPorts() {
			if p.GetName() == name && protocol(p.GetProtocol()) == proto {
				return p.GetContainerPort(), nil
			}
		}
	}
	for _, c := range pod.GetSpec().GetInitContainers() {
		if c.GetRestartPolicy() != "Always" {
			continue
		}
		for _, p := range c.GetPorts() {
			if p.GetName() == name && protocol(p.GetProtocol()) == proto {
				return p.GetContainerPort(), nil
			}
		}
	}
	return 0, fmt.Errorf("no suitable port for manifest: %s", pod.GetMetadata().GetUid())
}

// SelectsPod reports whether svc's selector matches pod. A Service without
// a selector selects nothing (its endpoints are someone else's), an empty
// one everything.
func SelectsPod(svc *corev1.Service, pod *corev1.Pod) bool {
	sel := svc.GetSpec().GetSelector()
	return sel != nil && svc.GetMetadata().GetNamespace() == pod.GetMetadata().GetNamespace() &&
		labels.SelectorFromValidatedSet(sel).Matches(labels.Set(pod.GetMetadata().GetLabels()))
}

// ServicesForPod are the keys of the services among svcs that select pod.
func ServicesForPod(svcs []*corev1.Service, pod *corev1.Pod) sets.Set[string] {
	out := sets.New[string]()
	for _, s := range svcs {
		if SelectsPod(s, pod) {
			out.Insert(s.GetMetadata().GetNamespace() + "/" + s.GetMetadata().GetName())
		}
	}
	return out
}

// ServicesToUpdate are the keys of the services (among svcs, those of the
// pod's namespace) whose endpoints a pod update from old to cur may change:
// upstream's GetServicesToUpdateOnPodChange. A resync (same
// resourceVersion) and changes no endpoint reflects change nothing; a label
// or hostname change touches the services the pod joins or leaves, and all
// of them when the endpoint itself changed too.
func ServicesToUpdate(svcs []*corev1.Service, old, cur *corev1.Pod) sets.Set[string] {
	if old.GetMetadata().GetResourceVersion() == cur.GetMetadata().GetResourceVersion() {
		return nil
	}
	podChanged, labelsChanged := podEndpointsChanged(old, cur)
	if !podChanged && !labelsChanged {
		return nil
	}
	now := ServicesForPod(svcs, cur)
	if !labelsChanged {
		return now
	}
	before := ServicesForPod(svcs, old)
	if podChanged {
		return now.Union(before)
	}
	return now.SymmetricDifference(before)
}

// podEndpointsChanged: whether the pod's endpoint may differ, and whether
// the set of services selecting it may.
func podEndpointsChanged(old, cur *corev1.Pod) (podChanged, labelsChanged bool) {
	labelsChanged = !reflect.DeepEqual(old.GetMetadata().GetLabels(), cur.GetMetadata().GetLabels()) ||
		old.GetSpec().GetHostname() != cur.GetSpec().GetHostname() ||
		old.GetSpec().GetSubdomain() != cur.GetSpec().GetSubdomain()
	if !old.GetMetadata().GetDeletionTimestamp().AsTime().Equal(cur.GetMetadata().GetDeletionTimestamp().AsTime()) ||
		IsPodReady(old) != IsPodReady(cur) {
		return true, labelsChanged
	}
	// An IP arriving (pod started) or a phase turning terminal changes
	// membership too; upstream catches those through the IP list and the
	// Ready condition, we say it outright.
	if old.GetStatus().GetPodIP() != cur.GetStatus().GetPodIP() || old.GetStatus().GetPhase() != cur.GetStatus().GetPhase() ||
		old.GetSpec().GetNodeName() != cur.GetSpec().GetNodeName() {
		return true, labelsChanged
	}
	oi, ci := old.GetStatus().GetPodIPs(), cur.GetStatus().GetPodIPs()
	if len(oi) != len(ci) {
		return true, labelsChanged
	}
	for i := range oi {
		if oi[i].GetIp() != ci[i].GetIp() {
			return true, labelsChanged
		}
	}
	return false, labelsChanged
}
