package validation

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	appsv1 "skiff.dev/proto/api/apps/v1"
	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	batchv1 "skiff.dev/proto/api/batch/v1"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	rbacv1 "skiff.dev/proto/api/rbac/v1"
	schedulingv1 "skiff.dev/proto/api/scheduling/v1"
	"skiff.dev/proto/scheme"
)

var (
	metaPath = field.NewPath("metadata")
	specPath = field.NewPath("spec")
)

// ValidateCreate validates a new object (defaulted by the apiserver).
func ValidateCreate(obj proto.Message, opts Options) field.ErrorList {
	return validateNew(obj, nil, opts)
}

// validateNew is what create checks; old, the object an update replaces,
// exempts what was already stored from checks of the cluster's current
// configuration (a node port outside a since-narrowed range).
func validateNew(obj, old proto.Message, opts Options) field.ErrorList {
	o, ok := obj.(scheme.Object)
	if !ok {
		return field.ErrorList{field.InternalError(nil, fmt.Errorf("%T is not an object", obj))}
	}
	k, ok := scheme.ForMessage(obj)
	if !ok {
		return field.ErrorList{field.InternalError(nil, fmt.Errorf("%T is not a kind Skiff serves", obj))}
	}
	names := dnsSubdomain
	switch obj.(type) {
	case *corev1.Namespace, *corev1.Service:
		names = dnsLabel
	case *rbacv1.Role, *rbacv1.ClusterRole, *rbacv1.RoleBinding, *rbacv1.ClusterRoleBinding:
		names = pathSegment
	}
	errs := objectMeta(o.GetMetadata(), k.Namespaced, names, metaPath)
	return append(errs, validateKind(obj, old, opts)...)
}

// ValidateUpdate validates obj replacing old: what create checks, plus the
// fields upstream keeps immutable.
func ValidateUpdate(obj, old proto.Message, opts Options) field.ErrorList {
	errs := validateNew(obj, old, opts)
	o, _ := obj.(scheme.Object)
	p, _ := old.(scheme.Object)
	if o == nil || p == nil {
		return errs
	}
	errs = append(errs, metaUpdate(o.GetMetadata(), p.GetMetadata(), metaPath)...)
	switch n := obj.(type) {
	case *appsv1.Deployment:
		errs = append(errs, immutable(!equal(n.GetSpec().GetSelector(), p.(*appsv1.Deployment).GetSpec().GetSelector()), specPath.Child("selector"), metav1.FormatLabelSelector(n.GetSpec().GetSelector()))...)
	case *appsv1.ReplicaSet:
		errs = append(errs, immutable(!equal(n.GetSpec().GetSelector(), p.(*appsv1.ReplicaSet).GetSpec().GetSelector()), specPath.Child("selector"), metav1.FormatLabelSelector(n.GetSpec().GetSelector()))...)
	case *appsv1.DaemonSet:
		errs = append(errs, immutable(!equal(n.GetSpec().GetSelector(), p.(*appsv1.DaemonSet).GetSpec().GetSelector()), specPath.Child("selector"), metav1.FormatLabelSelector(n.GetSpec().GetSelector()))...)
	case *appsv1.StatefulSet:
		os := p.(*appsv1.StatefulSet).GetSpec()
		a, b := proto.Clone(n.GetSpec()).(*appsv1.StatefulSetSpec), proto.Clone(os).(*appsv1.StatefulSetSpec)
		for _, s := range []*appsv1.StatefulSetSpec{a, b} {
			if s != nil {
				s.Replicas, s.Template, s.UpdateStrategy, s.PersistentVolumeClaimRetentionPolicy, s.MinReadySeconds, s.Ordinals = nil, nil, nil, nil, 0, nil
			}
		}
		if !equal(a, b) {
			errs = append(errs, field.Forbidden(specPath, "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"))
		}
	case *batchv1.Job:
		oj := p.(*batchv1.Job).GetSpec()
		errs = append(errs, immutable(!equal(n.GetSpec().GetSelector(), oj.GetSelector()), specPath.Child("selector"), metav1.FormatLabelSelector(n.GetSpec().GetSelector()))...)
		errs = append(errs, immutable(n.GetSpec().GetCompletionMode() != oj.GetCompletionMode(), specPath.Child("completionMode"), n.GetSpec().GetCompletionMode())...)
		a, b := proto.Clone(n.GetSpec().GetTemplate()).(*corev1.PodTemplateSpec), proto.Clone(oj.GetTemplate()).(*corev1.PodTemplateSpec)
		if !n.GetSpec().GetSuspend() && !equal(a, b) {
			errs = append(errs, field.Invalid(specPath.Child("template"), "", "field is immutable"))
		}
	case *corev1.Service:
		errs = append(errs, serviceUpdate(n, p.(*corev1.Service))...)
	case *corev1.ConfigMap:
		oc := p.(*corev1.ConfigMap)
		if oc.GetImmutable() {
			if !n.GetImmutable() {
				errs = append(errs, field.Forbidden(field.NewPath("immutable"), "field is immutable when `immutable` is set"))
			}
			if !equal(&corev1.ConfigMap{Data: n.Data, BinaryData: n.BinaryData}, &corev1.ConfigMap{Data: oc.Data, BinaryData: oc.BinaryData}) {
				errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
			}
		}
	case *corev1.Secret:
		os := p.(*corev1.Secret)
		errs = append(errs, immutable(n.Type != os.Type, field.NewPath("type"), n.Type)...)
		if os.GetImmutable() && !equal(&corev1.Secret{Data: n.Data}, &corev1.Secret{Data: os.Data}) {
			errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
		}
	case *corev1.Pod:
		errs = append(errs, podUpdate(n, p.(*corev1.Pod))...)
	case *rbacv1.RoleBinding:
		errs = append(errs, immutable(!equal(n.RoleRef, p.(*rbacv1.RoleBinding).RoleRef), field.NewPath("roleRef"), n.GetRoleRef().GetName())...)
	case *rbacv1.ClusterRoleBinding:
		errs = append(errs, immutable(!equal(n.RoleRef, p.(*rbacv1.ClusterRoleBinding).RoleRef), field.NewPath("roleRef"), n.GetRoleRef().GetName())...)
	case *schedulingv1.PriorityClass:
		errs = append(errs, immutable(n.Value != p.(*schedulingv1.PriorityClass).Value, field.NewPath("value"), n.Value)...)
	}
	return errs
}

// podUpdate: a pod's spec is fixed once created except images,
// activeDeadlineSeconds, added tolerations and the scheduler's nodeName.
func podUpdate(n, o *corev1.Pod) field.ErrorList {
	a, b := proto.Clone(n.GetSpec()).(*corev1.PodSpec), proto.Clone(o.GetSpec()).(*corev1.PodSpec)
	if a == nil || b == nil {
		return nil
	}
	for i, c := range a.Containers {
		if i < len(b.Containers) {
			c.Image = b.Containers[i].Image
		}
	}
	for i, c := range a.InitContainers {
		if i < len(b.InitContainers) {
			c.Image = b.InitContainers[i].Image
		}
	}
	a.ActiveDeadlineSeconds, b.ActiveDeadlineSeconds = nil, nil
	if len(a.Tolerations) >= len(b.Tolerations) {
		a.Tolerations = b.Tolerations
	}
	if b.NodeName == "" {
		a.NodeName = ""
	}
	a.TerminationGracePeriodSeconds = b.TerminationGracePeriodSeconds
	if !equal(a, b) {
		return field.ErrorList{field.Forbidden(specPath, "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")}
	}
	return nil
}

func validateKind(obj, old proto.Message, opts Options) field.ErrorList {
	switch o := obj.(type) {
	case *corev1.Pod:
		return podSpec(o.Spec, specPath)
	case *appsv1.Deployment:
		return deployment(o)
	case *appsv1.ReplicaSet:
		s := nonNil(o.GetSpec())
		return workload(s.GetReplicas(), s.Replicas != nil, s.GetSelector(), s.GetTemplate(), true, "Always")
	case *corev1.ReplicationController:
		s := nonNil(o.GetSpec())
		errs := nonNegative(int64(s.GetReplicas()), specPath.Child("replicas"))
		if t := s.GetTemplate(); t != nil {
			errs = append(errs, podTemplate(t, specPath.Child("template"))...)
		}
		return errs
	case *appsv1.StatefulSet:
		s := nonNil(o.GetSpec())
		var claims []string
		for _, c := range s.GetVolumeClaimTemplates() {
			claims = append(claims, c.GetMetadata().GetName())
		}
		errs := workloadWithClaims(s.GetReplicas(), s.Replicas != nil, s.GetSelector(), s.GetTemplate(), true, claims, "Always")
		if s.PodManagementPolicy != "" {
			errs = append(errs, oneOf(s.PodManagementPolicy, specPath.Child("podManagementPolicy"), "OrderedReady", "Parallel")...)
		}
		if t := s.GetUpdateStrategy().GetType(); t != "" {
			errs = append(errs, oneOf(t, specPath.Child("updateStrategy", "type"), "RollingUpdate", "OnDelete")...)
		}
		if p := nonNil(s.GetUpdateStrategy().GetRollingUpdate()).Partition; p != nil {
			errs = append(errs, nonNegative(int64(*p), specPath.Child("updateStrategy", "rollingUpdate", "partition"))...)
		}
		if h := s.RevisionHistoryLimit; h != nil {
			errs = append(errs, nonNegative(int64(*h), specPath.Child("revisionHistoryLimit"))...)
		}
		return errs
	case *appsv1.DaemonSet:
		s := nonNil(o.GetSpec())
		errs := workload(0, false, s.GetSelector(), s.GetTemplate(), true, "Always")
		if t := s.GetUpdateStrategy().GetType(); t != "" {
			errs = append(errs, oneOf(t, specPath.Child("updateStrategy", "type"), "RollingUpdate", "OnDelete")...)
		}
		if h := s.RevisionHistoryLimit; h != nil {
			errs = append(errs, nonNegative(int64(*h), specPath.Child("revisionHistoryLimit"))...)
		}
		return errs
	case *appsv1.ControllerRevision:
		return nonNegative(o.Revision, field.NewPath("revision"))
	case *batchv1.Job:
		return jobSpec(o.GetSpec(), specPath, o.GetSpec().GetManualSelector())
	case *batchv1.CronJob:
		return cronJob(o)
	case *corev1.Service:
		oldSvc, _ := old.(*corev1.Service)
		return service(o, oldSvc, opts)
	case *corev1.ConfigMap:
		return configMap(o)
	case *corev1.Secret:
		return secret(o)
	case *corev1.Node:
		return node(o)
	case *corev1.Endpoints:
		return endpoints(o)
	case *discoveryv1.EndpointSlice:
		return endpointSlice(o)
	case *corev1.Event:
		var errs field.ErrorList
		if o.GetInvolvedObject().GetName() == "" && o.GetInvolvedObject().GetKind() == "" {
			errs = append(errs, field.Required(field.NewPath("involvedObject"), ""))
		}
		if t := o.Type; t != "" {
			errs = append(errs, oneOf(t, field.NewPath("type"), "Normal", "Warning")...)
		}
		return errs
	case *coordinationv1.Lease:
		s := nonNil(o.GetSpec())
		var errs field.ErrorList
		if d := s.LeaseDurationSeconds; d != nil && *d <= 0 {
			errs = append(errs, field.Invalid(specPath.Child("leaseDurationSeconds"), *d, "must be greater than 0"))
		}
		if t := s.LeaseTransitions; t != nil {
			errs = append(errs, nonNegative(int64(*t), specPath.Child("leaseTransitions"))...)
		}
		return errs
	case *rbacv1.Role:
		return rules(o.Rules)
	case *rbacv1.ClusterRole:
		return rules(o.Rules)
	case *rbacv1.RoleBinding:
		return binding(o.RoleRef, o.Subjects, true)
	case *rbacv1.ClusterRoleBinding:
		return binding(o.RoleRef, o.Subjects, false)
	case *autoscalingv2.HorizontalPodAutoscaler:
		return hpa(o)
	case *policyv1.PodDisruptionBudget:
		return pdb(o)
	case *schedulingv1.PriorityClass:
		var errs field.ErrorList
		if o.Value > 1000000000 {
			errs = append(errs, field.Forbidden(field.NewPath("value"), "maximum allowed value of a user defined priority is 1000000000"))
		}
		if p := o.PreemptionPolicy; p != nil {
			errs = append(errs, oneOf(*p, field.NewPath("preemptionPolicy"), "Never", "PreemptLowerPriority")...)
		}
		return errs
	case *corev1.PersistentVolumeClaim:
		s := nonNil(o.GetSpec())
		var errs field.ErrorList
		if len(s.GetAccessModes()) == 0 {
			errs = append(errs, field.Required(specPath.Child("accessModes"), "at least 1 access mode is required"))
		}
		for i, m := range s.GetAccessModes() {
			errs = append(errs, oneOf(m, specPath.Child("accessModes").Index(i), "ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")...)
		}
		if q, ok := s.GetResources().GetRequests()["storage"]; !ok {
			errs = append(errs, field.Required(specPath.Child("resources").Key("storage"), ""))
		} else {
			errs = append(errs, quantity(q, specPath.Child("resources", "requests").Key("storage"))...)
		}
		oldPVC, _ := old.(*corev1.PersistentVolumeClaim)
		return append(errs, persistentVolumeClaimStorage(o, oldPVC)...)
	case *corev1.PersistentVolume:
		s := nonNil(o.GetSpec())
		var errs field.ErrorList
		if len(s.GetAccessModes()) == 0 {
			errs = append(errs, field.Required(specPath.Child("accessModes"), "must specify at least 1 access mode"))
		}
		if _, ok := s.GetCapacity()["storage"]; !ok {
			errs = append(errs, field.Required(specPath.Child("capacity"), ""))
		}
		oldPV, _ := old.(*corev1.PersistentVolume)
		return append(errs, persistentVolumeStorage(o, oldPV)...)
	case *corev1.ResourceQuota:
		var errs field.ErrorList
		for k, q := range o.GetSpec().GetHard() {
			errs = append(errs, quantity(q, specPath.Child("hard").Key(k))...)
		}
		return errs
	case *corev1.LimitRange:
		var errs field.ErrorList
		for i, l := range o.GetSpec().GetLimits() {
			p := specPath.Child("limits").Index(i)
			errs = append(errs, oneOf(l.Type, p.Child("type"), "Container", "Pod", "PersistentVolumeClaim")...)
			for k, q := range l.Max {
				errs = append(errs, quantity(q, p.Child("max").Key(k))...)
			}
			for k, q := range l.Min {
				errs = append(errs, quantity(q, p.Child("min").Key(k))...)
			}
		}
		return errs
	default:
		if errs := storageKind(obj, old); len(errs) > 0 {
			return errs
		}
	}
	return nil
}

// workload checks replicas, the selector and that it selects the template.
func workload(replicas int32, hasReplicas bool, sel *metav1.LabelSelector, t *corev1.PodTemplateSpec, requireSelector bool, restart ...string) field.ErrorList {
	return workloadWithClaims(replicas, hasReplicas, sel, t, requireSelector, nil, restart...)
}

func workloadWithClaims(replicas int32, hasReplicas bool, sel *metav1.LabelSelector, t *corev1.PodTemplateSpec, requireSelector bool, claims []string, restart ...string) field.ErrorList {
	var errs field.ErrorList
	if hasReplicas {
		errs = append(errs, nonNegative(int64(replicas), specPath.Child("replicas"))...)
	}
	errs = append(errs, selectorMatchesTemplate(sel, t, requireSelector)...)
	errs = append(errs, podTemplate(t, specPath.Child("template"), claims...)...)
	if t != nil && len(restart) > 0 && t.GetSpec().GetRestartPolicy() != "" {
		errs = append(errs, oneOf(t.GetSpec().GetRestartPolicy(), specPath.Child("template", "spec", "restartPolicy"), restart...)...)
	}
	return errs
}

func selectorMatchesTemplate(sel *metav1.LabelSelector, t *corev1.PodTemplateSpec, required bool) field.ErrorList {
	var errs field.ErrorList
	if sel == nil {
		if required {
			errs = append(errs, field.Required(specPath.Child("selector"), ""))
		}
		return errs
	}
	errs = append(errs, labelSelector(sel, specPath.Child("selector"))...)
	if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		errs = append(errs, field.Invalid(specPath.Child("selector"), sel.String(), "empty selector is invalid for deployment"))
		return errs
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || t == nil {
		return errs
	}
	tl := t.GetMetadata().GetLabels()
	if !s.Matches(labels.Set(tl)) {
		errs = append(errs, field.Invalid(specPath.Child("template", "metadata", "labels"), tl, "`selector` does not match template `labels`"))
	}
	return errs
}

func deployment(d *appsv1.Deployment) field.ErrorList {
	s := nonNil(d.GetSpec())
	if s == nil {
		return field.ErrorList{field.Required(specPath, "")}
	}
	errs := workload(s.GetReplicas(), s.Replicas != nil, s.Selector, s.Template, true, "Always")
	if st := s.Strategy; st != nil {
		p := specPath.Child("strategy")
		errs = append(errs, oneOf(st.Type, p.Child("type"), "Recreate", "RollingUpdate")...)
		ru := st.RollingUpdate
		if st.Type == "Recreate" && ru != nil {
			errs = append(errs, field.Forbidden(p.Child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'"))
		}
		if st.Type == "RollingUpdate" && ru != nil {
			errs = append(errs, intOrPercent(ru.MaxUnavailable, p.Child("rollingUpdate", "maxUnavailable"))...)
			errs = append(errs, intOrPercent(ru.MaxSurge, p.Child("rollingUpdate", "maxSurge"))...)
			if isZero(ru.MaxUnavailable) && isZero(ru.MaxSurge) {
				errs = append(errs, field.Invalid(p.Child("rollingUpdate", "maxUnavailable"), ru.MaxUnavailable.Text(), "may not be 0 when `maxSurge` is 0"))
			}
			if ru.MaxUnavailable.IsString() {
				if v, err := ru.MaxUnavailable.ScaledValue(100, false); err == nil && v > 100 {
					errs = append(errs, field.Invalid(p.Child("rollingUpdate", "maxUnavailable"), ru.MaxUnavailable.StrVal, "must not be greater than 100%"))
				}
			}
		}
	}
	if h := s.RevisionHistoryLimit; h != nil {
		errs = append(errs, nonNegative(int64(*h), specPath.Child("revisionHistoryLimit"))...)
	}
	errs = append(errs, nonNegative(int64(s.MinReadySeconds), specPath.Child("minReadySeconds"))...)
	if pd := s.ProgressDeadlineSeconds; pd != nil {
		errs = append(errs, nonNegative(int64(*pd), specPath.Child("progressDeadlineSeconds"))...)
		if *pd <= s.MinReadySeconds {
			errs = append(errs, field.Invalid(specPath.Child("progressDeadlineSeconds"), *pd, "must be greater than minReadySeconds"))
		}
	}
	return errs
}

func isZero(v *metav1.IntOrString) bool {
	if v == nil {
		return false
	}
	if v.IsString() {
		return v.StrVal == "0%"
	}
	return v.IntVal == 0
}

func intOrPercent(v *metav1.IntOrString, path *field.Path) field.ErrorList {
	if v == nil {
		return nil
	}
	if v.IsString() {
		for _, msg := range validation.IsValidPercent(v.StrVal) {
			return field.ErrorList{field.Invalid(path, v.StrVal, msg)}
		}
		return nil
	}
	return nonNegative(int64(v.IntVal), path)
}

func jobSpec(s *batchv1.JobSpec, path *field.Path, manual bool) field.ErrorList {
	if s == nil {
		return field.ErrorList{field.Required(path, "")}
	}
	var errs field.ErrorList
	for name, v := range map[string]*int32{"parallelism": s.Parallelism, "completions": s.Completions, "backoffLimit": s.BackoffLimit} {
		if v != nil {
			errs = append(errs, nonNegative(int64(*v), path.Child(name))...)
		}
	}
	if a := s.ActiveDeadlineSeconds; a != nil {
		errs = append(errs, positive(*a, path.Child("activeDeadlineSeconds"))...)
	}
	if t := s.TtlSecondsAfterFinished; t != nil {
		errs = append(errs, nonNegative(int64(*t), path.Child("ttlSecondsAfterFinished"))...)
	}
	if m := s.CompletionMode; m != nil {
		errs = append(errs, oneOf(*m, path.Child("completionMode"), "NonIndexed", "Indexed")...)
	}
	if s.Selector != nil {
		errs = append(errs, labelSelector(s.Selector, path.Child("selector"))...)
		if sel, err := metav1.LabelSelectorAsSelector(s.Selector); err == nil && s.Template != nil && !sel.Matches(labels.Set(s.Template.GetMetadata().GetLabels())) {
			errs = append(errs, field.Invalid(path.Child("template", "metadata", "labels"), s.Template.GetMetadata().GetLabels(), "`selector` does not match template `labels`"))
		}
	}
	errs = append(errs, podTemplate(s.Template, path.Child("template"))...)
	if rp := s.GetTemplate().GetSpec().GetRestartPolicy(); rp != "" {
		errs = append(errs, oneOf(rp, path.Child("template", "spec", "restartPolicy"), "OnFailure", "Never")...)
	}
	return errs
}

func cronJob(c *batchv1.CronJob) field.ErrorList {
	s := nonNil(c.GetSpec())
	if s == nil {
		return field.ErrorList{field.Required(specPath, "")}
	}
	var errs field.ErrorList
	// Job names are "<name>-<minutes since the epoch>", at most 63 characters.
	if name := c.GetMetadata().GetName(); len(name) > 52 {
		errs = append(errs, field.Invalid(metaPath.Child("name"), name, "must be no more than 52 characters"))
	}
	if s.Schedule == "" {
		errs = append(errs, field.Required(specPath.Child("schedule"), ""))
	} else {
		if _, err := cron.ParseStandard(s.Schedule); err != nil {
			errs = append(errs, field.Invalid(specPath.Child("schedule"), s.Schedule, err.Error()))
		}
		// Upstream lets an update keep a TZ= it already had; this function
		// does not see the old object, so any TZ= or CRON_TZ= is refused.
		if strings.Contains(s.Schedule, "TZ") {
			errs = append(errs, field.Invalid(specPath.Child("schedule"), s.Schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
		}
	}
	if tz := s.TimeZone; tz != nil {
		// As upstream's validateTimeZone: a tz database name (each part of
		// [A-Za-z0-9._+-]{1,14}, not "." or ".." nor starting with "-"),
		// never "Local", that this binary can load.
		tzPath := specPath.Child("timeZone")
		badPart := func(p string) bool {
			return p == "." || p == ".." || strings.HasPrefix(p, "-") || len(p) < 1 || len(p) > 14 ||
				strings.IndexFunc(p, func(r rune) bool {
					return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+", r))
				}) >= 0
		}
		bad := false
		for _, p := range strings.Split(*tz, "/") {
			bad = bad || badPart(p)
		}
		switch {
		case *tz == "":
			errs = append(errs, field.Invalid(tzPath, *tz, "timeZone must be nil or non-empty string"))
		case bad:
			errs = append(errs, field.Invalid(tzPath, *tz, "unknown time zone "+*tz))
		case strings.EqualFold(*tz, "Local"):
			errs = append(errs, field.Invalid(tzPath, *tz, "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"))
		default:
			if _, err := time.LoadLocation(*tz); err != nil {
				errs = append(errs, field.Invalid(tzPath, *tz, "unknown time zone "+*tz))
			}
		}
	}
	if s.ConcurrencyPolicy != "" {
		errs = append(errs, oneOf(s.ConcurrencyPolicy, specPath.Child("concurrencyPolicy"), "Allow", "Forbid", "Replace")...)
	}
	if v := s.SuccessfulJobsHistoryLimit; v != nil {
		errs = append(errs, nonNegative(int64(*v), specPath.Child("successfulJobsHistoryLimit"))...)
	}
	if v := s.FailedJobsHistoryLimit; v != nil {
		errs = append(errs, nonNegative(int64(*v), specPath.Child("failedJobsHistoryLimit"))...)
	}
	if v := s.StartingDeadlineSeconds; v != nil {
		errs = append(errs, nonNegative(*v, specPath.Child("startingDeadlineSeconds"))...)
	}
	jt := s.GetJobTemplate()
	if jt == nil {
		return append(errs, field.Required(specPath.Child("jobTemplate"), ""))
	}
	return append(errs, jobSpec(jt.Spec, specPath.Child("jobTemplate", "spec"), true)...)
}

const maxDataSize = 1 << 20

// dataTooLong is upstream's error for ConfigMap and Secret data over 1 MiB,
// in upstream's words: `data: Too long: must have at most 1048576 bytes`.
func dataTooLong() *field.Error {
	return &field.Error{Type: field.ErrorTypeTooLong, Field: "data", BadValue: "", Detail: fmt.Sprintf("must have at most %d bytes", maxDataSize)}
}

func configMap(c *corev1.ConfigMap) field.ErrorList {
	var errs field.ErrorList
	size := 0
	for k, v := range c.Data {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(field.NewPath("data").Key(k), k, msg))
		}
		size += len(k) + len(v)
	}
	for k, v := range c.BinaryData {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(field.NewPath("binaryData").Key(k), k, msg))
		}
		if _, ok := c.Data[k]; ok {
			errs = append(errs, field.Invalid(field.NewPath("data").Key(k), k, "duplicate of key present in binaryData"))
		}
		size += len(k) + len(v)
	}
	if size > maxDataSize {
		errs = append(errs, dataTooLong())
	}
	return errs
}

func secret(s *corev1.Secret) field.ErrorList {
	var errs field.ErrorList
	size := 0
	for k, v := range s.Data {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(field.NewPath("data").Key(k), k, msg))
		}
		size += len(v)
	}
	if size > maxDataSize {
		errs = append(errs, dataTooLong())
	}
	need := map[string][]string{
		"kubernetes.io/tls":              {"tls.crt", "tls.key"},
		"kubernetes.io/dockerconfigjson": {".dockerconfigjson"},
		"kubernetes.io/dockercfg":        {".dockercfg"},
		"kubernetes.io/basic-auth":       nil,
		"kubernetes.io/ssh-auth":         {"ssh-privatekey"},
	}
	for _, k := range need[s.Type] {
		if _, ok := s.Data[k]; !ok {
			errs = append(errs, field.Required(field.NewPath("data").Key(k), ""))
		}
	}
	return errs
}

func node(n *corev1.Node) field.ErrorList {
	var errs field.ErrorList
	s := nonNil(n.GetSpec())
	for i, c := range s.GetPodCIDRs() {
		if _, _, err := net.ParseCIDR(c); err != nil {
			errs = append(errs, field.Invalid(specPath.Child("podCIDRs").Index(i), c, "must be a valid CIDR"))
		}
	}
	if c := s.GetPodCIDR(); c != "" {
		if _, _, err := net.ParseCIDR(c); err != nil {
			errs = append(errs, field.Invalid(specPath.Child("podCIDR"), c, "must be a valid CIDR"))
		}
	}
	for i, t := range s.GetTaints() {
		p := specPath.Child("taints").Index(i)
		for _, msg := range validation.IsQualifiedName(t.Key) {
			errs = append(errs, field.Invalid(p.Child("key"), t.Key, msg))
		}
		if t.Value != "" {
			for _, msg := range validation.IsValidLabelValue(t.Value) {
				errs = append(errs, field.Invalid(p.Child("value"), t.Value, msg))
			}
		}
		errs = append(errs, oneOf(t.Effect, p.Child("effect"), "NoSchedule", "PreferNoSchedule", "NoExecute")...)
	}
	for k, q := range n.GetStatus().GetCapacity() {
		errs = append(errs, quantity(q, field.NewPath("status", "capacity").Key(k))...)
	}
	for k, q := range n.GetStatus().GetAllocatable() {
		errs = append(errs, quantity(q, field.NewPath("status", "allocatable").Key(k))...)
	}
	return errs
}

func endpoints(e *corev1.Endpoints) field.ErrorList {
	var errs field.ErrorList
	for i, ss := range e.Subsets {
		p := field.NewPath("subsets").Index(i)
		for j, a := range append(append([]*corev1.EndpointAddress{}, ss.Addresses...), ss.NotReadyAddresses...) {
			if net.ParseIP(a.Ip) == nil {
				errs = append(errs, field.Invalid(p.Child("addresses").Index(j).Child("ip"), a.Ip, "must be a valid IP address"))
			}
		}
		for j, port := range ss.Ports {
			for _, msg := range validation.IsValidPortNum(int(port.Port)) {
				errs = append(errs, field.Invalid(p.Child("ports").Index(j).Child("port"), port.Port, msg))
			}
		}
	}
	return errs
}

func endpointSlice(e *discoveryv1.EndpointSlice) field.ErrorList {
	errs := oneOf(e.AddressType, field.NewPath("addressType"), "IPv4", "IPv6", "FQDN")
	for i, ep := range e.Endpoints {
		p := field.NewPath("endpoints").Index(i)
		if len(ep.Addresses) == 0 {
			errs = append(errs, field.Required(p.Child("addresses"), "must contain at least 1 address"))
		}
		for j, a := range ep.Addresses {
			if e.AddressType != "FQDN" && net.ParseIP(a) == nil {
				errs = append(errs, field.Invalid(p.Child("addresses").Index(j), a, "must be a valid IP address"))
			}
		}
	}
	for i, port := range e.Ports {
		if port.Port != nil {
			for _, msg := range validation.IsValidPortNum(int(*port.Port)) {
				errs = append(errs, field.Invalid(field.NewPath("ports").Index(i).Child("port"), *port.Port, msg))
			}
		}
	}
	return errs
}

func rules(rs []*rbacv1.PolicyRule) field.ErrorList {
	var errs field.ErrorList
	for i, r := range rs {
		p := field.NewPath("rules").Index(i)
		if len(r.Verbs) == 0 {
			errs = append(errs, field.Required(p.Child("verbs"), "verbs must contain at least one value"))
		}
		if len(r.NonResourceURLs) == 0 && len(r.ApiGroups) == 0 {
			errs = append(errs, field.Required(p.Child("apiGroups"), "resource rules must supply at least one api group"))
		}
		if len(r.NonResourceURLs) == 0 && len(r.Resources) == 0 {
			errs = append(errs, field.Required(p.Child("resources"), "resource rules must supply at least one resource"))
		}
	}
	return errs
}

func binding(ref *rbacv1.RoleRef, subjects []*rbacv1.Subject, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	rp := field.NewPath("roleRef")
	if ref == nil {
		return field.ErrorList{field.Required(rp, "")}
	}
	if ref.ApiGroup != "rbac.authorization.k8s.io" {
		errs = append(errs, field.NotSupported(rp.Child("apiGroup"), ref.ApiGroup, []string{"rbac.authorization.k8s.io"}))
	}
	kinds := []string{"ClusterRole"}
	if namespaced {
		kinds = []string{"ClusterRole", "Role"}
	}
	errs = append(errs, oneOf(ref.Kind, rp.Child("kind"), kinds...)...)
	if ref.Name == "" {
		errs = append(errs, field.Required(rp.Child("name"), ""))
	}
	for i, s := range subjects {
		p := field.NewPath("subjects").Index(i)
		errs = append(errs, oneOf(s.Kind, p.Child("kind"), "Group", "ServiceAccount", "User")...)
		if s.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		}
		if s.Kind == "ServiceAccount" && s.Namespace == "" && !namespaced {
			errs = append(errs, field.Required(p.Child("namespace"), ""))
		}
	}
	return errs
}

func hpa(h *autoscalingv2.HorizontalPodAutoscaler) field.ErrorList {
	s := nonNil(h.GetSpec())
	var errs field.ErrorList
	ref := s.GetScaleTargetRef()
	if ref.GetKind() == "" {
		errs = append(errs, field.Required(specPath.Child("scaleTargetRef", "kind"), ""))
	}
	if ref.GetName() == "" {
		errs = append(errs, field.Required(specPath.Child("scaleTargetRef", "name"), ""))
	}
	min := int32(1)
	if s.MinReplicas != nil {
		min = *s.MinReplicas
		if min < 1 {
			errs = append(errs, field.Invalid(specPath.Child("minReplicas"), min, "must be greater than or equal to 1"))
		}
	}
	if s.MaxReplicas < 1 {
		errs = append(errs, field.Invalid(specPath.Child("maxReplicas"), s.MaxReplicas, "must be greater than 0"))
	} else if s.MaxReplicas < min {
		errs = append(errs, field.Invalid(specPath.Child("maxReplicas"), s.MaxReplicas, "must be greater than or equal to `minReplicas`"))
	}
	for i, m := range s.Metrics {
		p := specPath.Child("metrics").Index(i)
		errs = append(errs, oneOf(m.Type, p.Child("type"), "ContainerResource", "External", "Object", "Pods", "Resource")...)
		if r := m.Resource; r != nil {
			if t := r.GetTarget().GetType(); t != "" {
				errs = append(errs, oneOf(t, p.Child("resource", "target", "type"), "AverageValue", "Utilization", "Value")...)
			}
		}
	}
	return errs
}

func pdb(p *policyv1.PodDisruptionBudget) field.ErrorList {
	s := nonNil(p.GetSpec())
	var errs field.ErrorList
	if s.MinAvailable != nil && s.MaxUnavailable != nil {
		errs = append(errs, field.Invalid(specPath, "", "minAvailable and maxUnavailable cannot be both set"))
	}
	errs = append(errs, intOrPercent(s.MinAvailable, specPath.Child("minAvailable"))...)
	errs = append(errs, intOrPercent(s.MaxUnavailable, specPath.Child("maxUnavailable"))...)
	errs = append(errs, labelSelector(s.Selector, specPath.Child("selector"))...)
	return errs
}
