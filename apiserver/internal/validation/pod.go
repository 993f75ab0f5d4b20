package validation

import (
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/api/resource"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// podSpec is upstream's ValidatePodSpec, the rules a user meets. claims are
// volume names a StatefulSet's volumeClaimTemplates add to its pods.
func podSpec(s *corev1.PodSpec, path *field.Path, claims ...string) field.ErrorList {
	var errs field.ErrorList
	if s == nil {
		return field.ErrorList{field.Required(path, "")}
	}
	volumes, verrs := volumes(s.Volumes, path.Child("volumes"))
	volumes.Insert(claims...)
	errs = append(errs, verrs...)
	if len(s.Containers) == 0 {
		errs = append(errs, field.Required(path.Child("containers"), "must have at least one container"))
	}
	names := sets.New[string]()
	ports := sets.New[string]()
	for i, c := range s.InitContainers {
		errs = append(errs, container(c, names, ports, volumes, path.Child("initContainers").Index(i))...)
	}
	for i, c := range s.Containers {
		errs = append(errs, container(c, names, ports, volumes, path.Child("containers").Index(i))...)
	}
	if s.RestartPolicy != "" {
		errs = append(errs, oneOf(s.RestartPolicy, path.Child("restartPolicy"), "Always", "OnFailure", "Never")...)
	}
	if s.DnsPolicy != "" {
		errs = append(errs, oneOf(s.DnsPolicy, path.Child("dnsPolicy"), "ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")...)
	}
	if g := s.TerminationGracePeriodSeconds; g != nil {
		errs = append(errs, nonNegative(*g, path.Child("terminationGracePeriodSeconds"))...)
	}
	if a := s.ActiveDeadlineSeconds; a != nil && *a <= 0 {
		errs = append(errs, field.Invalid(path.Child("activeDeadlineSeconds"), *a, "must be between 1 and 2147483647, inclusive"))
	}
	errs = append(errs, metavalidation.ValidateLabels(s.NodeSelector, path.Child("nodeSelector"))...)
	if s.ServiceAccountName != "" {
		for _, msg := range dnsSubdomain(s.ServiceAccountName, false) {
			errs = append(errs, field.Invalid(path.Child("serviceAccountName"), s.ServiceAccountName, msg))
		}
	}
	if s.NodeName != "" {
		for _, msg := range dnsSubdomain(s.NodeName, false) {
			errs = append(errs, field.Invalid(path.Child("nodeName"), s.NodeName, msg))
		}
	}
	if s.PriorityClassName != "" {
		for _, msg := range dnsSubdomain(s.PriorityClassName, false) {
			errs = append(errs, field.Invalid(path.Child("priorityClassName"), s.PriorityClassName, msg))
		}
	}
	for i, t := range s.Tolerations {
		errs = append(errs, toleration(t, path.Child("tolerations").Index(i))...)
	}
	errs = append(errs, affinity(s.Affinity, path.Child("affinity"))...)
	for i, c := range s.TopologySpreadConstraints {
		p := path.Child("topologySpreadConstraints").Index(i)
		errs = append(errs, positive(int64(c.MaxSkew), p.Child("maxSkew"))...)
		if c.TopologyKey == "" {
			errs = append(errs, field.Required(p.Child("topologyKey"), "can not be empty"))
		}
		errs = append(errs, oneOf(c.WhenUnsatisfiable, p.Child("whenUnsatisfiable"), "DoNotSchedule", "ScheduleAnyway")...)
		if c.MinDomains != nil {
			if *c.MinDomains <= 0 {
				errs = append(errs, field.Invalid(p.Child("minDomains"), *c.MinDomains, "must be greater than 0"))
			} else if c.WhenUnsatisfiable != "DoNotSchedule" {
				errs = append(errs, field.Invalid(p.Child("minDomains"), *c.MinDomains, "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway"))
			}
		}
		if c.NodeAffinityPolicy != nil {
			errs = append(errs, oneOf(*c.NodeAffinityPolicy, p.Child("nodeAffinityPolicy"), "Honor", "Ignore")...)
		}
		if c.NodeTaintsPolicy != nil {
			errs = append(errs, oneOf(*c.NodeTaintsPolicy, p.Child("nodeTaintsPolicy"), "Honor", "Ignore")...)
		}
		errs = append(errs, labelSelector(c.LabelSelector, p.Child("labelSelector"))...)
	}
	for k, q := range s.Overhead {
		errs = append(errs, quantity(q, path.Child("overhead").Key(k))...)
	}
	return errs
}

func volumes(vs []*corev1.Volume, path *field.Path) (sets.Set[string], field.ErrorList) {
	var errs field.ErrorList
	names := sets.New[string]()
	for i, v := range vs {
		p := path.Index(i)
		if v.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		} else {
			for _, msg := range validation.IsDNS1123Label(v.Name) {
				errs = append(errs, field.Invalid(p.Child("name"), v.Name, msg))
			}
			if names.Has(v.Name) {
				errs = append(errs, field.Duplicate(p.Child("name"), v.Name))
			}
			names.Insert(v.Name)
		}
		n := 0
		if src := v.GetVolumeSource(); src != nil {
			m := src.ProtoReflect()
			m.Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { n++; return true })
		}
		switch {
		case n == 0:
			errs = append(errs, field.Required(p, "must specify a volume type"))
		case n > 1:
			errs = append(errs, field.Forbidden(p, "may not specify more than 1 volume type"))
		}
		if hp := v.GetVolumeSource().GetHostPath(); hp != nil && hp.Path == "" {
			errs = append(errs, field.Required(p.Child("hostPath", "path"), ""))
		}
		if s := v.GetVolumeSource().GetSecret(); s != nil && s.SecretName == "" {
			errs = append(errs, field.Required(p.Child("secret", "secretName"), ""))
		}
		if c := v.GetVolumeSource().GetPersistentVolumeClaim(); c != nil && c.ClaimName == "" {
			errs = append(errs, field.Required(p.Child("persistentVolumeClaim", "claimName"), ""))
		}
	}
	return names, errs
}

func container(c *corev1.Container, names, ports, volumes sets.Set[string], path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), ""))
	} else {
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			errs = append(errs, field.Invalid(path.Child("name"), c.Name, msg))
		}
		if names.Has(c.Name) {
			errs = append(errs, field.Duplicate(path.Child("name"), c.Name))
		}
		names.Insert(c.Name)
	}
	if c.Image == "" {
		errs = append(errs, field.Required(path.Child("image"), ""))
	}
	if c.ImagePullPolicy != "" {
		errs = append(errs, oneOf(c.ImagePullPolicy, path.Child("imagePullPolicy"), "Always", "IfNotPresent", "Never")...)
	}
	for i, p := range c.Ports {
		pp := path.Child("ports").Index(i)
		if p.Name != "" {
			for _, msg := range validation.IsValidPortName(p.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
			}
			if ports.Has(p.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			ports.Insert(p.Name)
		}
		if p.ContainerPort == 0 {
			errs = append(errs, field.Required(pp.Child("containerPort"), ""))
		} else {
			for _, msg := range validation.IsValidPortNum(int(p.ContainerPort)) {
				errs = append(errs, field.Invalid(pp.Child("containerPort"), p.ContainerPort, msg))
			}
		}
		if p.HostPort != 0 {
			for _, msg := range validation.IsValidPortNum(int(p.HostPort)) {
				errs = append(errs, field.Invalid(pp.Child("hostPort"), p.HostPort, msg))
			}
		}
		if p.Protocol != "" {
			errs = append(errs, oneOf(p.Protocol, pp.Child("protocol"), "SCTP", "TCP", "UDP")...)
		}
	}
	for i, e := range c.Env {
		ep := path.Child("env").Index(i)
		if e.Name == "" {
			errs = append(errs, field.Required(ep.Child("name"), ""))
		} else {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				errs = append(errs, field.Invalid(ep.Child("name"), e.Name, msg))
			}
		}
		if vf := e.ValueFrom; vf != nil {
			n := 0
			for _, set := range []bool{vf.FieldRef != nil, vf.ResourceFieldRef != nil, vf.ConfigMapKeyRef != nil, vf.SecretKeyRef != nil, vf.FileKeyRef != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				errs = append(errs, field.Invalid(ep.Child("valueFrom"), "", "may not have more than one field specified at a time"))
			}
			if e.Value != "" {
				errs = append(errs, field.Invalid(ep.Child("valueFrom"), "", "may not be specified when `value` is not empty"))
			}
		}
	}
	for i, m := range c.VolumeMounts {
		mp := path.Child("volumeMounts").Index(i)
		if m.Name == "" {
			errs = append(errs, field.Required(mp.Child("name"), ""))
		} else if !volumes.Has(m.Name) {
			errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
		}
		if m.MountPath == "" {
			errs = append(errs, field.Required(mp.Child("mountPath"), ""))
		}
	}
	errs = append(errs, resources(c.Resources, path.Child("resources"))...)
	errs = append(errs, probe(c.LivenessProbe, path.Child("livenessProbe"))...)
	errs = append(errs, probe(c.ReadinessProbe, path.Child("readinessProbe"))...)
	errs = append(errs, probe(c.StartupProbe, path.Child("startupProbe"))...)
	if c.TerminationMessagePolicy != "" {
		errs = append(errs, oneOf(c.TerminationMessagePolicy, path.Child("terminationMessagePolicy"), "File", "FallbackToLogsOnError")...)
	}
	return errs
}

func quantity(q *metav1.Quantity, path *field.Path) field.ErrorList {
	v, err := resource.ParseQuantity(q.GetString_())
	if err != nil {
		return field.ErrorList{field.Invalid(path, q.GetString_(), err.Error())}
	}
	if v.Sign() < 0 {
		return field.ErrorList{field.Invalid(path, q.GetString_(), "must be greater than or equal to 0")}
	}
	return nil
}

func resources(r *corev1.ResourceRequirements, path *field.Path) field.ErrorList {
	if r == nil {
		return nil
	}
	var errs field.ErrorList
	for k, q := range r.Limits {
		errs = append(errs, resourceName(k, path.Child("limits").Key(k))...)
		errs = append(errs, quantity(q, path.Child("limits").Key(k))...)
	}
	for k, q := range r.Requests {
		p := path.Child("requests").Key(k)
		errs = append(errs, resourceName(k, p)...)
		errs = append(errs, quantity(q, p)...)
		if l, ok := r.Limits[k]; ok {
			rv, err1 := resource.ParseQuantity(q.GetString_())
			lv, err2 := resource.ParseQuantity(l.GetString_())
			if err1 == nil && err2 == nil && rv.Cmp(lv) > 0 {
				errs = append(errs, field.Invalid(p, q.GetString_(), fmt.Sprintf("must be less than or equal to %s limit of %s", k, l.GetString_())))
			}
		}
	}
	return errs
}

func resourceName(k string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsQualifiedName(k) {
		errs = append(errs, field.Invalid(path, k, msg))
	}
	return errs
}

func probe(p *corev1.Probe, path *field.Path) field.ErrorList {
	if p == nil {
		return nil
	}
	var errs field.ErrorList
	h := p.GetHandler()
	n := 0
	for _, set := range []bool{h.GetExec() != nil, h.GetHttpGet() != nil, h.GetTcpSocket() != nil, h.GetGrpc() != nil} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		errs = append(errs, field.Required(path, "must specify a handler type"))
	case n > 1:
		errs = append(errs, field.Forbidden(path, "may not specify more than 1 handler type"))
	}
	if g := h.GetHttpGet(); g != nil {
		errs = append(errs, portRef(g.Port, path.Child("httpGet", "port"))...)
	}
	if t := h.GetTcpSocket(); t != nil {
		errs = append(errs, portRef(t.Port, path.Child("tcpSocket", "port"))...)
	}
	errs = append(errs, nonNegative(int64(p.InitialDelaySeconds), path.Child("initialDelaySeconds"))...)
	errs = append(errs, nonNegative(int64(p.TimeoutSeconds), path.Child("timeoutSeconds"))...)
	errs = append(errs, nonNegative(int64(p.PeriodSeconds), path.Child("periodSeconds"))...)
	errs = append(errs, nonNegative(int64(p.SuccessThreshold), path.Child("successThreshold"))...)
	errs = append(errs, nonNegative(int64(p.FailureThreshold), path.Child("failureThreshold"))...)
	return errs
}

// portRef is a port by number or IANA name (probes, targetPort).
func portRef(p *metav1.IntOrString, path *field.Path) field.ErrorList {
	if p == nil {
		return field.ErrorList{field.Required(path, "")}
	}
	var errs field.ErrorList
	if p.IsString() {
		for _, msg := range validation.IsValidPortName(p.StrVal) {
			errs = append(errs, field.Invalid(path, p.StrVal, msg))
		}
	} else {
		for _, msg := range validation.IsValidPortNum(int(p.IntVal)) {
			errs = append(errs, field.Invalid(path, p.IntVal, msg))
		}
	}
	return errs
}

func toleration(t *corev1.Toleration, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if t.Key != "" {
		for _, msg := range validation.IsQualifiedName(t.Key) {
			errs = append(errs, field.Invalid(path.Child("key"), t.Key, msg))
		}
	}
	switch t.Operator {
	case "Exists":
		if t.Value != "" {
			errs = append(errs, field.Invalid(path.Child("operator"), t.Value, "value must be empty when `operator` is 'Exists'"))
		}
	case "", "Equal":
		if t.Key == "" {
			errs = append(errs, field.Invalid(path.Child("operator"), t.Operator, "operator must be Exists when `key` is empty, which means \"match all values and all keys\""))
		}
		for _, msg := range validation.IsValidLabelValue(t.Value) {
			errs = append(errs, field.Invalid(path.Child("value"), t.Value, msg))
		}
	default:
		errs = append(errs, field.NotSupported(path.Child("operator"), t.Operator, []string{"Equal", "Exists"}))
	}
	if t.Effect != "" {
		errs = append(errs, oneOf(t.Effect, path.Child("effect"), "NoSchedule", "PreferNoSchedule", "NoExecute")...)
	}
	if t.TolerationSeconds != nil && t.Effect != "NoExecute" {
		errs = append(errs, field.Invalid(path.Child("effect"), t.Effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
	}
	return errs
}

func affinity(a *corev1.Affinity, path *field.Path) field.ErrorList {
	if a == nil {
		return nil
	}
	var errs field.ErrorList
	if na := a.NodeAffinity; na != nil {
		if r := na.RequiredDuringSchedulingIgnoredDuringExecution; r != nil {
			p := path.Child("nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
			if len(r.NodeSelectorTerms) == 0 {
				errs = append(errs, field.Required(p.Child("nodeSelectorTerms"), "must have at least one node selector term"))
			}
			for i, t := range r.NodeSelectorTerms {
				errs = append(errs, nodeSelectorTerm(t, p.Child("nodeSelectorTerms").Index(i))...)
			}
		}
		for i, t := range na.PreferredDuringSchedulingIgnoredDuringExecution {
			p := path.Child("nodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution").Index(i)
			if t.Weight < 1 || t.Weight > 100 {
				errs = append(errs, field.Invalid(p.Child("weight"), t.Weight, "must be in the range 1-100"))
			}
			errs = append(errs, nodeSelectorTerm(t.Preference, p.Child("preference"))...)
		}
	}
	for name, pa := range map[string]*corev1.PodAffinity{"podAffinity": a.PodAffinity} {
		if pa == nil {
			continue
		}
		errs = append(errs, podAffinityTerms(pa.RequiredDuringSchedulingIgnoredDuringExecution, pa.PreferredDuringSchedulingIgnoredDuringExecution, path.Child(name))...)
	}
	if pa := a.PodAntiAffinity; pa != nil {
		errs = append(errs, podAffinityTerms(pa.RequiredDuringSchedulingIgnoredDuringExecution, pa.PreferredDuringSchedulingIgnoredDuringExecution, path.Child("podAntiAffinity"))...)
	}
	return errs
}

func podAffinityTerms(req []*corev1.PodAffinityTerm, pref []*corev1.WeightedPodAffinityTerm, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	term := func(t *corev1.PodAffinityTerm, p *field.Path) {
		if t.TopologyKey == "" {
			errs = append(errs, field.Required(p.Child("topologyKey"), "can not be empty"))
		} else {
			for _, msg := range validation.IsQualifiedName(t.TopologyKey) {
				errs = append(errs, field.Invalid(p.Child("topologyKey"), t.TopologyKey, msg))
			}
		}
		errs = append(errs, labelSelector(t.LabelSelector, p.Child("labelSelector"))...)
	}
	for i, t := range req {
		term(t, path.Child("requiredDuringSchedulingIgnoredDuringExecution").Index(i))
	}
	for i, t := range pref {
		p := path.Child("preferredDuringSchedulingIgnoredDuringExecution").Index(i)
		if t.Weight < 1 || t.Weight > 100 {
			errs = append(errs, field.Invalid(p.Child("weight"), t.Weight, "must be in the range 1-100"))
		}
		if t.PodAffinityTerm != nil {
			term(t.PodAffinityTerm, p.Child("podAffinityTerm"))
		}
	}
	return errs
}

func nodeSelectorTerm(t *corev1.NodeSelectorTerm, path *field.Path) field.ErrorList {
	if t == nil {
		return nil
	}
	var errs field.ErrorList
	for i, r := range t.MatchExpressions {
		p := path.Child("matchExpressions").Index(i)
		for _, msg := range validation.IsQualifiedName(r.Key) {
			errs = append(errs, field.Invalid(p.Child("key"), r.Key, msg))
		}
		switch r.Operator {
		case "In", "NotIn":
			if len(r.Values) == 0 {
				errs = append(errs, field.Required(p.Child("values"), "must be specified when `operator` is 'In' or 'NotIn'"))
			}
		case "Exists", "DoesNotExist":
			if len(r.Values) > 0 {
				errs = append(errs, field.Forbidden(p.Child("values"), "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
			}
		case "Gt", "Lt":
			if len(r.Values) != 1 {
				errs = append(errs, field.Required(p.Child("values"), "must be specified single value when `operator` is 'Lt' or 'Gt'"))
			} else if _, err := fmt.Sscanf(r.Values[0], "%d", new(int64)); err != nil {
				errs = append(errs, field.Invalid(p.Child("values").Index(0), r.Values[0], "must be an integer"))
			}
		default:
			errs = append(errs, field.Invalid(p.Child("operator"), r.Operator, "not a valid selector operator"))
		}
	}
	return errs
}

// podTemplate validates a workload's template: its labels and spec.
func podTemplate(t *corev1.PodTemplateSpec, path *field.Path, claims ...string) field.ErrorList {
	if t == nil {
		return field.ErrorList{field.Required(path, "")}
	}
	var errs field.ErrorList
	if m := t.Metadata; m != nil {
		errs = append(errs, metavalidation.ValidateLabels(m.Labels, path.Child("metadata", "labels"))...)
	}
	errs = append(errs, podSpec(t.Spec, path.Child("spec"), claims...)...)
	return errs
}
