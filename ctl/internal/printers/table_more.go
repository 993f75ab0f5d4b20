package printers

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "skiff.dev/proto/api/apps/v1"
	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	rbacv1 "skiff.dev/proto/api/rbac/v1"
	schedulingv1 "skiff.dev/proto/api/scheduling/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/scheme"
)

// moreColumns are upstream's tables for the less common kinds.
func moreColumns(k *scheme.Kind) []column {
	nameCol := column{name: "NAME", cell: name}
	ageCol := column{name: "AGE", cell: age}
	createdAt := column{name: "CREATED AT", cell: func(o scheme.Object, _ time.Time) string {
		return o.GetMetadata().GetCreationTimestamp().AsTime().Format(time.RFC3339)
	}}
	switch k.Kind {
	case "Event":
		ev := func(o scheme.Object) *corev1.Event { return o.(*corev1.Event) }
		return []column{
			{name: "LAST SEEN", cell: func(o scheme.Object, now time.Time) string { return Age(ev(o).GetLastTimestamp(), now) }},
			{name: "TYPE", cell: func(o scheme.Object, _ time.Time) string { return ev(o).Type }},
			{name: "REASON", cell: func(o scheme.Object, _ time.Time) string { return ev(o).Reason }},
			{name: "OBJECT", cell: func(o scheme.Object, _ time.Time) string {
				io := ev(o).GetInvolvedObject()
				return strings.ToLower(io.Kind) + "/" + io.Name
			}},
			{name: "MESSAGE", cell: func(o scheme.Object, _ time.Time) string { return strings.TrimSpace(ev(o).Message) }},
		}
	case "Endpoints":
		return []column{nameCol, {name: "ENDPOINTS", cell: func(o scheme.Object, _ time.Time) string {
			var eps []string
			for _, ss := range o.(*corev1.Endpoints).Subsets {
				for _, a := range ss.Addresses {
					for _, p := range ss.Ports {
						eps = append(eps, fmt.Sprintf("%s:%d", a.Ip, p.Port))
					}
					if len(ss.Ports) == 0 {
						eps = append(eps, a.Ip)
					}
				}
			}
			return formatList(eps, 3)
		}}, ageCol}
	case "EndpointSlice":
		es := func(o scheme.Object) *discoveryv1.EndpointSlice { return o.(*discoveryv1.EndpointSlice) }
		return []column{nameCol,
			{name: "ADDRESSTYPE", cell: func(o scheme.Object, _ time.Time) string { return es(o).AddressType }},
			{name: "PORTS", cell: func(o scheme.Object, _ time.Time) string {
				var ps []string
				for _, p := range es(o).Ports {
					ps = append(ps, strconv.Itoa(int(p.GetPort())))
				}
				return formatList(ps, 3)
			}},
			{name: "ENDPOINTS", cell: func(o scheme.Object, _ time.Time) string {
				var as []string
				for _, e := range es(o).Endpoints {
					as = append(as, e.Addresses...)
				}
				return formatList(as, 3)
			}},
			ageCol}
	case "Lease":
		return []column{nameCol, {name: "HOLDER", cell: func(o scheme.Object, _ time.Time) string {
			return o.(*coordinationv1.Lease).GetSpec().GetHolderIdentity()
		}}, ageCol}
	case "PersistentVolume":
		pv := func(o scheme.Object) *corev1.PersistentVolume { return o.(*corev1.PersistentVolume) }
		return []column{nameCol,
			{name: "CAPACITY", cell: func(o scheme.Object, _ time.Time) string {
				return pv(o).GetSpec().GetCapacity()["storage"].GetString_()
			}},
			{name: "ACCESS MODES", cell: func(o scheme.Object, _ time.Time) string { return accessModes(pv(o).GetSpec().GetAccessModes()) }},
			{name: "RECLAIM POLICY", cell: func(o scheme.Object, _ time.Time) string { return pv(o).GetSpec().GetPersistentVolumeReclaimPolicy() }},
			{name: "STATUS", cell: func(o scheme.Object, _ time.Time) string { return pv(o).GetStatus().GetPhase() }},
			{name: "CLAIM", cell: func(o scheme.Object, _ time.Time) string {
				if r := pv(o).GetSpec().GetClaimRef(); r != nil {
					return r.Namespace + "/" + r.Name
				}
				return ""
			}},
			{name: "STORAGECLASS", cell: func(o scheme.Object, _ time.Time) string { return pv(o).GetSpec().GetStorageClassName() }},
			{name: "VOLUMEATTRIBUTESCLASS", cell: func(o scheme.Object, _ time.Time) string { return "<unset>" }},
			{name: "REASON", cell: func(o scheme.Object, _ time.Time) string { return pv(o).GetStatus().GetReason() }},
			ageCol}
	case "PersistentVolumeClaim":
		pvc := func(o scheme.Object) *corev1.PersistentVolumeClaim { return o.(*corev1.PersistentVolumeClaim) }
		return []column{nameCol,
			{name: "STATUS", cell: func(o scheme.Object, _ time.Time) string { return pvc(o).GetStatus().GetPhase() }},
			{name: "VOLUME", cell: func(o scheme.Object, _ time.Time) string { return pvc(o).GetSpec().GetVolumeName() }},
			{name: "CAPACITY", cell: func(o scheme.Object, _ time.Time) string {
				return pvc(o).GetStatus().GetCapacity()["storage"].GetString_()
			}},
			{name: "ACCESS MODES", cell: func(o scheme.Object, _ time.Time) string { return accessModes(pvc(o).GetStatus().GetAccessModes()) }},
			{name: "STORAGECLASS", cell: func(o scheme.Object, _ time.Time) string { return pvc(o).GetSpec().GetStorageClassName() }},
			{name: "VOLUMEATTRIBUTESCLASS", cell: func(o scheme.Object, _ time.Time) string { return "<unset>" }},
			ageCol}
	case "Role", "ClusterRole", "LimitRange":
		return []column{nameCol, createdAt}
	case "RoleBinding":
		return []column{nameCol, {name: "ROLE", cell: func(o scheme.Object, _ time.Time) string {
			r := o.(*rbacv1.RoleBinding).GetRoleRef()
			return r.GetKind() + "/" + r.GetName()
		}}, ageCol}
	case "ClusterRoleBinding":
		return []column{nameCol, {name: "ROLE", cell: func(o scheme.Object, _ time.Time) string {
			r := o.(*rbacv1.ClusterRoleBinding).GetRoleRef()
			return r.GetKind() + "/" + r.GetName()
		}}, ageCol}
	case "HorizontalPodAutoscaler":
		h := func(o scheme.Object) *autoscalingv2.HorizontalPodAutoscaler {
			return o.(*autoscalingv2.HorizontalPodAutoscaler)
		}
		return []column{nameCol,
			{name: "REFERENCE", cell: func(o scheme.Object, _ time.Time) string {
				r := h(o).GetSpec().GetScaleTargetRef()
				return r.GetKind() + "/" + r.GetName()
			}},
			{name: "TARGETS", cell: func(o scheme.Object, _ time.Time) string { return hpaTargets(h(o)) }},
			{name: "MINPODS", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(int(h(o).GetSpec().GetMinReplicas())) }},
			{name: "MAXPODS", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(int(h(o).GetSpec().GetMaxReplicas())) }},
			{name: "REPLICAS", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(int(h(o).GetStatus().GetCurrentReplicas()))
			}},
			ageCol}
	case "PodDisruptionBudget":
		p := func(o scheme.Object) *policyv1.PodDisruptionBudget { return o.(*policyv1.PodDisruptionBudget) }
		na := func(v *metav1.IntOrString) string {
			if v == nil {
				return "N/A"
			}
			return v.Text()
		}
		return []column{nameCol,
			{name: "MIN AVAILABLE", cell: func(o scheme.Object, _ time.Time) string { return na(p(o).GetSpec().GetMinAvailable()) }},
			{name: "MAX UNAVAILABLE", cell: func(o scheme.Object, _ time.Time) string { return na(p(o).GetSpec().GetMaxUnavailable()) }},
			{name: "ALLOWED DISRUPTIONS", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(int(p(o).GetStatus().GetDisruptionsAllowed()))
			}},
			ageCol}
	case "StorageClass":
		sc := func(o scheme.Object) *storagev1.StorageClass { return o.(*storagev1.StorageClass) }
		return []column{{name: "NAME", cell: func(o scheme.Object, now time.Time) string {
			if IsDefaultClass(o.GetMetadata()) {
				return name(o, now) + " (default)"
			}
			return name(o, now)
		}},
			{name: "PROVISIONER", cell: func(o scheme.Object, _ time.Time) string { return sc(o).Provisioner }},
			{name: "RECLAIMPOLICY", cell: func(o scheme.Object, _ time.Time) string { return orDefault(sc(o).GetReclaimPolicy(), "Delete") }},
			{name: "VOLUMEBINDINGMODE", cell: func(o scheme.Object, _ time.Time) string {
				return orDefault(sc(o).GetVolumeBindingMode(), "Immediate")
			}},
			{name: "ALLOWVOLUMEEXPANSION", cell: func(o scheme.Object, _ time.Time) string { return strconv.FormatBool(sc(o).GetAllowVolumeExpansion()) }},
			ageCol}
	case "CSIDriver":
		d := func(o scheme.Object) *storagev1.CSIDriverSpec { return o.(*storagev1.CSIDriver).GetSpec() }
		return []column{nameCol,
			{name: "ATTACHREQUIRED", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.FormatBool(d(o).AttachRequired == nil || *d(o).AttachRequired)
			}},
			{name: "PODINFOONMOUNT", cell: func(o scheme.Object, _ time.Time) string { return strconv.FormatBool(d(o).GetPodInfoOnMount()) }},
			{name: "STORAGECAPACITY", cell: func(o scheme.Object, _ time.Time) string { return strconv.FormatBool(d(o).GetStorageCapacity()) }},
			{name: "TOKENREQUESTS", cell: func(o scheme.Object, _ time.Time) string {
				var auds []string
				for _, t := range d(o).GetTokenRequests() {
					auds = append(auds, t.GetAudience())
				}
				return orDefault(strings.Join(auds, ","), "<unset>")
			}},
			{name: "REQUIRESREPUBLISH", cell: func(o scheme.Object, _ time.Time) string { return strconv.FormatBool(d(o).GetRequiresRepublish()) }},
			{name: "MODES", cell: func(o scheme.Object, _ time.Time) string {
				return orDefault(strings.Join(d(o).GetVolumeLifecycleModes(), ","), "Persistent")
			}},
			ageCol}
	case "CSINode":
		return []column{nameCol,
			{name: "DRIVERS", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(len(o.(*storagev1.CSINode).GetSpec().GetDrivers()))
			}},
			ageCol}
	case "VolumeAttachment":
		va := func(o scheme.Object) *storagev1.VolumeAttachment { return o.(*storagev1.VolumeAttachment) }
		return []column{nameCol,
			{name: "ATTACHER", cell: func(o scheme.Object, _ time.Time) string { return va(o).GetSpec().GetAttacher() }},
			{name: "PV", cell: func(o scheme.Object, _ time.Time) string {
				return va(o).GetSpec().GetSource().GetPersistentVolumeName()
			}},
			{name: "NODE", cell: func(o scheme.Object, _ time.Time) string { return va(o).GetSpec().GetNodeName() }},
			{name: "ATTACHED", cell: func(o scheme.Object, _ time.Time) string { return strconv.FormatBool(va(o).GetStatus().GetAttached()) }},
			ageCol}
	case "PriorityClass":
		pc := func(o scheme.Object) *schedulingv1.PriorityClass { return o.(*schedulingv1.PriorityClass) }
		return []column{nameCol,
			{name: "VALUE", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(int(pc(o).Value)) }},
			{name: "GLOBAL-DEFAULT", cell: func(o scheme.Object, _ time.Time) string { return strconv.FormatBool(pc(o).GlobalDefault) }},
			ageCol,
			{name: "PREEMPTIONPOLICY", cell: func(o scheme.Object, _ time.Time) string { return pc(o).GetPreemptionPolicy() }}}
	case "ControllerRevision":
		return []column{nameCol,
			{name: "CONTROLLER", cell: func(o scheme.Object, _ time.Time) string {
				if r := metav1.GetControllerOf(o.GetMetadata()); r != nil {
					g := r.ApiVersion
					if i := strings.Index(g, "/"); i >= 0 {
						g = g[:i]
					} else {
						g = ""
					}
					n := strings.ToLower(r.Kind)
					if g != "" {
						n += "." + g
					}
					return n + "/" + r.Name
				}
				return "<none>"
			}},
			{name: "REVISION", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.FormatInt(o.(*appsv1.ControllerRevision).Revision, 10)
			}},
			ageCol}
	case "ReplicationController":
		rc := func(o scheme.Object) *corev1.ReplicationController { return o.(*corev1.ReplicationController) }
		return []column{nameCol,
			{name: "DESIRED", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(int(rc(o).GetSpec().GetReplicas())) }},
			{name: "CURRENT", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(int(rc(o).GetStatus().GetReplicas())) }},
			{name: "READY", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(int(rc(o).GetStatus().GetReadyReplicas()))
			}},
			ageCol}
	case "ResourceQuota":
		return []column{nameCol, ageCol, {name: "REQUEST", cell: func(o scheme.Object, _ time.Time) string {
			q := o.(*corev1.ResourceQuota)
			var parts []string
			keys := make([]string, 0)
			for k := range q.GetSpec().GetHard() {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				used := q.GetStatus().GetUsed()[k].GetString_()
				if used == "" {
					used = "0"
				}
				parts = append(parts, fmt.Sprintf("%s: %s/%s", k, used, q.GetSpec().GetHard()[k].GetString_()))
			}
			return strings.Join(parts, ", ")
		}}}
	}
	return nil
}

// formatList is kubectl's "a,b,c + 2 more...".
func formatList(items []string, n int) string {
	if len(items) == 0 {
		return "<none>"
	}
	if len(items) <= n {
		return strings.Join(items, ",")
	}
	return strings.Join(items[:n], ",") + fmt.Sprintf(" + %d more...", len(items)-n)
}

func accessModes(ms []string) string {
	short := map[string]string{"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
	var out []string
	for _, m := range ms {
		out = append(out, short[m])
	}
	return strings.Join(out, ",")
}

func hpaTargets(h *autoscalingv2.HorizontalPodAutoscaler) string {
	// kubectl pairs each spec metric with the status metric at its index.
	current := h.GetStatus().GetCurrentMetrics()
	var out []string
	for i, m := range h.GetSpec().GetMetrics() {
		r := m.GetResource()
		if r == nil {
			out = append(out, "<unknown>")
			continue
		}
		var cur *autoscalingv2.MetricValueStatus
		if i < len(current) && current[i].GetResource() != nil {
			cur = current[i].GetResource().GetCurrent()
		}
		switch t := r.GetTarget(); {
		case t.AverageUtilization != nil:
			got := "<unknown>"
			if cur != nil && cur.AverageUtilization != nil {
				got = fmt.Sprintf("%d%%", *cur.AverageUtilization)
			}
			out = append(out, fmt.Sprintf("%s: %s/%d%%", r.Name, got, *t.AverageUtilization))
		case t.GetAverageValue() != nil:
			got := "<unknown>"
			if cur != nil && cur.GetAverageValue() != nil {
				got = cur.GetAverageValue().GetString_()
			}
			out = append(out, fmt.Sprintf("%s: %s/%s", r.Name, got, t.GetAverageValue().GetString_()))
		default:
			out = append(out, "<unknown>")
		}
	}
	if len(out) == 0 {
		return "<none>"
	}
	return strings.Join(out, ", ")
}

// IsDefaultClass reports the annotation that makes a StorageClass the one
// claims without a class get, as kubectl reads it (the beta key too).
func IsDefaultClass(m *metav1.ObjectMeta) bool {
	a := m.GetAnnotations()
	return a["storageclass.kubernetes.io/is-default-class"] == "true" || a["storageclass.beta.kubernetes.io/is-default-class"] == "true"
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
