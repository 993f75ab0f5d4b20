package envvars

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// PodField returns a pod field as the downward API shows it (fieldRef in env
// and in downwardAPI volumes). Addresses come from src because the pod's
// status may not carry them yet while its containers are created.
func PodField(pod *corev1.Pod, fieldPath string, src Sources) (string, error) {
	md := pod.GetMetadata()
	if path, key, ok := splitSubscript(fieldPath); ok {
		var m map[string]string
		switch path {
		case "metadata.annotations":
			m = md.GetAnnotations()
		case "metadata.labels":
			m = md.GetLabels()
		default:
			return "", fmt.Errorf("fieldPath %q does not support subscript", fieldPath)
		}
		if errs := validation.IsQualifiedName(strings.ToLower(key)); len(errs) != 0 {
			return "", fmt.Errorf("invalid key subscript in %s: %s", fieldPath, strings.Join(errs, ";"))
		}
		return m[key], nil
	}
	switch fieldPath {
	case "metadata.annotations":
		return FormatMap(md.GetAnnotations()), nil
	case "metadata.labels":
		return FormatMap(md.GetLabels()), nil
	case "metadata.name":
		return md.GetName(), nil
	case "metadata.namespace":
		return md.GetNamespace(), nil
	case "metadata.uid":
		return md.GetUid(), nil
	case "spec.nodeName":
		if n := pod.GetSpec().GetNodeName(); n != "" {
			return n, nil
		}
		return src.NodeName, nil
	case "spec.serviceAccountName":
		return pod.GetSpec().GetServiceAccountName(), nil
	case "status.hostIP":
		if ips := hostIPs(pod, src); len(ips) > 0 {
			return ips[0], nil
		}
		return "", nil
	case "status.hostIPs":
		return strings.Join(hostIPs(pod, src), ","), nil
	case "status.podIP":
		if ips := podIPs(pod, src); len(ips) > 0 {
			return ips[0], nil
		}
		return "", nil
	case "status.podIPs":
		return strings.Join(podIPs(pod, src), ","), nil
	}
	return "", fmt.Errorf("unsupported fieldPath: %v", fieldPath)
}

// hostIPs and podIPs prefer what the caller knows now (Sources: the
// node's addresses, the sandbox's) and fall back to the pod's status.
func hostIPs(pod *corev1.Pod, src Sources) []string {
	if len(src.HostIPs) > 0 {
		return src.HostIPs
	}
	if src.HostIP != "" {
		return []string{src.HostIP}
	}
	var ips []string
	for _, ip := range pod.GetStatus().GetHostIPs() {
		ips = append(ips, ip.GetIp())
	}
	if len(ips) == 0 && pod.GetStatus().GetHostIP() != "" {
		ips = []string{pod.GetStatus().GetHostIP()}
	}
	return ips
}

func podIPs(pod *corev1.Pod, src Sources) []string {
	if len(src.PodIPs) > 0 {
		return src.PodIPs
	}
	if src.PodIP != "" {
		return []string{src.PodIP}
	}
	var ips []string
	for _, ip := range pod.GetStatus().GetPodIPs() {
		ips = append(ips, ip.GetIp())
	}
	if len(ips) == 0 && pod.GetStatus().GetPodIP() != "" {
		ips = []string{pod.GetStatus().GetPodIP()}
	}
	return ips
}

// splitSubscript splits "metadata.labels['key']" into its path and key.
func splitSubscript(fieldPath string) (path, key string, ok bool) {
	if !strings.HasSuffix(fieldPath, "']") {
		return "", "", false
	}
	path, key, ok = strings.Cut(strings.TrimSuffix(fieldPath, "']"), "['")
	if !ok || path == "" {
		return "", "", false
	}
	return path, key, true
}

// FormatMap is upstream's rendering of a whole labels or annotations map:
// one key="value" per line, keys sorted, no trailing newline.
func FormatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%v=%q", k, m[k])
	}
	return b.String()
}

// ContainerResource returns a resourceFieldRef's value: the container named
// by the selector (c when it names none), its limits defaulted to the node's
// allocatable where unset, divided by the divisor (default 1) and rounded up.
func ContainerResource(pod *corev1.Pod, c *corev1.Container, sel *corev1.ResourceFieldSelector, allocatable map[string]*metav1.Quantity) (string, error) {
	if name := sel.GetContainerName(); name != "" {
		c = findContainer(pod, name)
		if c == nil {
			return "", fmt.Errorf("container %s not found", name)
		}
	}
	if c == nil {
		return "", fmt.Errorf("resourceFieldRef %q needs a containerName", sel.GetResource())
	}
	divisor := resource.MustParse("1")
	if d := sel.GetDivisor(); d != nil && d.GetString_() != "" {
		q, err := resource.ParseQuantity(d.GetString_())
		if err != nil {
			return "", fmt.Errorf("invalid divisor %q: %v", d.GetString_(), err)
		}
		if !q.IsZero() {
			divisor = q
		}
	}

	kind, name, ok := strings.Cut(sel.GetResource(), ".")
	if !ok || (kind != "limits" && kind != "requests") ||
		(name != "cpu" && name != "memory" && name != "ephemeral-storage" && !strings.HasPrefix(name, "hugepages-")) {
		return "", fmt.Errorf("unsupported container resource : %v", sel.GetResource())
	}
	list := c.GetResources().GetRequests()
	if kind == "limits" {
		list = c.GetResources().GetLimits()
	}
	q, err := quantity(list[name])
	if err != nil {
		return "", err
	}
	if kind == "limits" && q.IsZero() && (name == "cpu" || name == "memory" || name == "ephemeral-storage") {
		if q, err = quantity(allocatable[name]); err != nil {
			return "", err
		}
	}
	if name == "cpu" {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

func quantity(q *metav1.Quantity) (resource.Quantity, error) {
	if q.GetString_() == "" {
		return resource.Quantity{}, nil
	}
	v, err := resource.ParseQuantity(q.GetString_())
	if err != nil {
		return resource.Quantity{}, fmt.Errorf("invalid quantity %q: %v", q.GetString_(), err)
	}
	return v, nil
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	for _, c := range pod.GetSpec().GetContainers() {
		if c.GetName() == name {
			return c
		}
	}
	for _, c := range pod.GetSpec().GetInitContainers() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}
