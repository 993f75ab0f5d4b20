package cmd

import (
	"fmt"
	"io"
	"strings"
	"time"

	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	rbacv1 "skiff.dev/proto/api/rbac/v1"
	schedulingv1 "skiff.dev/proto/api/scheduling/v1"
	"skiff.dev/proto/scheme"
)

func init() {
	describers["Role"] = func(w io.Writer, o scheme.Object, _ time.Time) { describeRules(w, o, o.(*rbacv1.Role).Rules, true) }
	describers["ClusterRole"] = func(w io.Writer, o scheme.Object, _ time.Time) {
		describeRules(w, o, o.(*rbacv1.ClusterRole).Rules, false)
	}
	describers["RoleBinding"] = func(w io.Writer, o scheme.Object, _ time.Time) {
		b := o.(*rbacv1.RoleBinding)
		describeBinding(w, o, b.RoleRef, b.Subjects, true)
	}
	describers["ClusterRoleBinding"] = func(w io.Writer, o scheme.Object, _ time.Time) {
		b := o.(*rbacv1.ClusterRoleBinding)
		describeBinding(w, o, b.RoleRef, b.Subjects, false)
	}
	describers["ServiceAccount"] = describeServiceAccount
	describers["PriorityClass"] = describePriorityClass
	describers["PodDisruptionBudget"] = describePDB
	describers["HorizontalPodAutoscaler"] = describeHPA
	describers["Endpoints"] = describeEndpoints
}

func describeRules(w io.Writer, o scheme.Object, rules []*rbacv1.PolicyRule, namespaced bool) {
	header(lines{w: w}, o.GetMetadata(), namespaced)
	fmt.Fprintln(w, "PolicyRule:")
	fmt.Fprintln(w, "  Resources\tNon-Resource URLs\tResource Names\tVerbs")
	fmt.Fprintln(w, "  ---------\t-----------------\t--------------\t-----")
	list := func(s []string) string { return "[" + strings.Join(s, " ") + "]" }
	for _, r := range rules {
		var res []string
		for _, g := range r.ApiGroups {
			for _, x := range r.Resources {
				if g == "" {
					res = append(res, x)
				} else {
					res = append(res, x+"."+g)
				}
			}
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", strings.Join(res, ", "), list(r.NonResourceURLs), list(r.ResourceNames), list(r.Verbs))
	}
}

func describeBinding(w io.Writer, o scheme.Object, ref *rbacv1.RoleRef, subjects []*rbacv1.Subject, namespaced bool) {
	l := lines{w: w}
	header(l, o.GetMetadata(), namespaced)
	fmt.Fprintln(w, "Role:")
	l.in().kv("Kind", ref.GetKind())
	l.in().kv("Name", ref.GetName())
	fmt.Fprintln(w, "Subjects:")
	fmt.Fprintln(w, "  Kind\tName\tNamespace")
	fmt.Fprintln(w, "  ----\t----\t---------")
	for _, s := range subjects {
		fmt.Fprintf(w, "  %s\t%s\t%s\n", s.Kind, s.Name, s.Namespace)
	}
}

func describeServiceAccount(w io.Writer, o scheme.Object, _ time.Time) {
	sa := o.(*corev1.ServiceAccount)
	l := lines{w: w}
	header(l, sa.Metadata, true)
	var pulls, secrets []string
	for _, s := range sa.ImagePullSecrets {
		pulls = append(pulls, s.Name)
	}
	for _, s := range sa.Secrets {
		secrets = append(secrets, s.Name)
	}
	l.multi("Image pull secrets", pulls)
	l.multi("Mountable secrets", secrets)
	l.kv("Tokens", "<none>")
}

func describePriorityClass(w io.Writer, o scheme.Object, _ time.Time) {
	pc := o.(*schedulingv1.PriorityClass)
	l := lines{w: w}
	l.kv("Name", pc.Metadata.Name)
	l.kv("Value", pc.Value)
	l.kv("GlobalDefault", pc.GlobalDefault)
	l.kv("PreemptionPolicy", pc.GetPreemptionPolicy())
	l.kv("Description", pc.Description)
	l.multi("Annotations", annotations(pc.Metadata))
}

func describePDB(w io.Writer, o scheme.Object, _ time.Time) {
	p := o.(*policyv1.PodDisruptionBudget)
	sp, st := p.GetSpec(), p.GetStatus()
	l := lines{w: w}
	identity(l, p.Metadata, true)
	if sp.MinAvailable != nil {
		l.kv("Min available", sp.MinAvailable.Text())
	}
	if sp.MaxUnavailable != nil {
		l.kv("Max unavailable", sp.MaxUnavailable.Text())
	}
	l.kv("Selector", metav1.FormatLabelSelector(sp.GetSelector()))
	fmt.Fprintln(w, "Status:")
	sl := l.in()
	sl.kv("Allowed disruptions", st.GetDisruptionsAllowed())
	sl.kv("Current", st.GetCurrentHealthy())
	sl.kv("Desired", st.GetDesiredHealthy())
	sl.kv("Total", st.GetExpectedPods())
}

func describeHPA(w io.Writer, o scheme.Object, _ time.Time) {
	h := o.(*autoscalingv2.HorizontalPodAutoscaler)
	sp, st := h.GetSpec(), h.GetStatus()
	l := lines{w: w}
	header(l, h.Metadata, true)
	l.kv("CreationTimestamp", h.Metadata.GetCreationTimestamp().AsTime().Format(time.RFC1123Z))
	ref := sp.GetScaleTargetRef()
	l.kv("Reference", ref.GetKind()+"/"+ref.GetName())
	l.kv("Metrics", "( current / target )")
	cur := st.GetCurrentMetrics()
	for i, m := range sp.GetMetrics() {
		if r := m.GetResource(); r != nil {
			// As kubectl: the status metric at the same index is the
			// current value, "0% (1m)" for a utilization.
			var c *autoscalingv2.MetricValueStatus
			if i < len(cur) && cur[i].GetResource() != nil {
				c = cur[i].GetResource().GetCurrent()
			}
			if u := r.GetTarget().AverageUtilization; u != nil {
				current := "<unknown>"
				if c != nil && c.AverageUtilization != nil {
					current = fmt.Sprintf("%d%% (%s)", *c.AverageUtilization, c.GetAverageValue().GetString_())
				}
				fmt.Fprintf(w, "  resource %s on pods  (as a percentage of request):\t%s / %d%%\n", r.Name, current, *u)
			} else {
				current := "<unknown>"
				if c != nil && c.GetAverageValue() != nil {
					current = c.GetAverageValue().GetString_()
				}
				fmt.Fprintf(w, "  resource %s on pods:\t%s / %s\n", r.Name, current, r.GetTarget().GetAverageValue().GetString_())
			}
			continue
		}
		fmt.Fprintf(w, "  %s metric:\t<unknown>\n", m.Type)
	}
	l.kv("Min replicas", sp.GetMinReplicas())
	l.kv("Max replicas", sp.GetMaxReplicas())
	l.kv(ref.GetKind()+" pods", fmt.Sprintf("%d current / %d desired", st.GetCurrentReplicas(), st.GetDesiredReplicas()))
}

func describeEndpoints(w io.Writer, o scheme.Object, _ time.Time) {
	e := o.(*corev1.Endpoints)
	l := lines{w: w}
	header(l, e.Metadata, true)
	fmt.Fprintln(w, "Subsets:")
	for _, ss := range e.Subsets {
		var ready, notReady []string
		for _, a := range ss.Addresses {
			ready = append(ready, a.Ip)
		}
		for _, a := range ss.NotReadyAddresses {
			notReady = append(notReady, a.Ip)
		}
		l.in().kv("Addresses", orNone(strings.Join(ready, ",")))
		l.in().kv("NotReadyAddresses", orNone(strings.Join(notReady, ",")))
		fmt.Fprintln(w, "  Ports:")
		fmt.Fprintln(w, "    Name\tPort\tProtocol")
		fmt.Fprintln(w, "    ----\t----\t--------")
		for _, p := range ss.Ports {
			n := p.Name
			if n == "" {
				n = "<unset>"
			}
			fmt.Fprintf(w, "    %s\t%d\t%s\n", n, p.Port, p.Protocol)
		}
	}
}
