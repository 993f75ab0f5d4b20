// Package printers renders objects as kubectl does: the default table of a
// kind (its columns and their values computed as upstream's printers), and
// the object formats.
package printers

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"

	appsv1 "skiff.dev/proto/api/apps/v1"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// Options shape a table.
type Options struct {
	Wide          bool
	AllNamespaces bool // adds NAMESPACE first
	ShowLabels    bool
	NoHeaders     bool
	WithKind      bool // NAME as "deployment.apps/web", as kubectl does for several kinds
	LabelColumns  []string
	Now           time.Time
}

// NewTabWriter is kubectl's tab writer.
func NewTabWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
}

// column is one column of a kind's table.
type column struct {
	name string
	wide bool
	cell func(obj scheme.Object, now time.Time) string
}

func age(obj scheme.Object, now time.Time) string {
	return Age(obj.GetMetadata().GetCreationTimestamp(), now)
}

// Age is kubectl's age of a timestamp: 5s, 3m2s, 5h, 3d.
func Age(t *metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.AsTime()))
}

func name(obj scheme.Object, _ time.Time) string { return obj.GetMetadata().GetName() }

func columns(k *scheme.Kind) []column {
	nameCol := column{name: "NAME", cell: name}
	ageCol := column{name: "AGE", cell: age}
	switch k.Kind {
	case "Pod":
		return []column{nameCol,
			{name: "READY", cell: func(o scheme.Object, _ time.Time) string { return podReady(o.(*corev1.Pod)) }},
			{name: "STATUS", cell: func(o scheme.Object, _ time.Time) string { return PodStatus(o.(*corev1.Pod)) }},
			{name: "RESTARTS", cell: func(o scheme.Object, _ time.Time) string { return podRestarts(o.(*corev1.Pod)) }},
			ageCol,
			{name: "IP", wide: true, cell: func(o scheme.Object, _ time.Time) string { return none(o.(*corev1.Pod).GetStatus().GetPodIP()) }},
			{name: "NODE", wide: true, cell: func(o scheme.Object, _ time.Time) string { return none(o.(*corev1.Pod).GetSpec().GetNodeName()) }},
			{name: "NOMINATED NODE", wide: true, cell: func(o scheme.Object, _ time.Time) string {
				return none(o.(*corev1.Pod).GetStatus().GetNominatedNodeName())
			}},
			{name: "READINESS GATES", wide: true, cell: func(o scheme.Object, _ time.Time) string { return "<none>" }},
		}
	case "Deployment":
		return []column{nameCol,
			{name: "READY", cell: func(o scheme.Object, _ time.Time) string {
				d := o.(*appsv1.Deployment)
				return fmt.Sprintf("%d/%d", d.GetStatus().GetReadyReplicas(), d.GetSpec().GetReplicas())
			}},
			{name: "UP-TO-DATE", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(int(o.(*appsv1.Deployment).GetStatus().GetUpdatedReplicas()))
			}},
			{name: "AVAILABLE", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(int(o.(*appsv1.Deployment).GetStatus().GetAvailableReplicas()))
			}},
			ageCol,
			{name: "CONTAINERS", wide: true, cell: func(o scheme.Object, _ time.Time) string {
				return containerNames(o.(*appsv1.Deployment).GetSpec().GetTemplate())
			}},
			{name: "IMAGES", wide: true, cell: func(o scheme.Object, _ time.Time) string {
				return images(o.(*appsv1.Deployment).GetSpec().GetTemplate())
			}},
			{name: "SELECTOR", wide: true, cell: func(o scheme.Object, _ time.Time) string {
				return metav1.FormatLabelSelector(o.(*appsv1.Deployment).GetSpec().GetSelector())
			}},
		}
	case "ReplicaSet":
		return []column{nameCol,
			{name: "DESIRED", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(int(o.(*appsv1.ReplicaSet).GetSpec().GetReplicas()))
			}},
			{name: "CURRENT", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(int(o.(*appsv1.ReplicaSet).GetStatus().GetReplicas()))
			}},
			{name: "READY", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(int(o.(*appsv1.ReplicaSet).GetStatus().GetReadyReplicas()))
			}},
			ageCol,
		}
	case "StatefulSet":
		return []column{nameCol,
			{name: "READY", cell: func(o scheme.Object, _ time.Time) string {
				s := o.(*appsv1.StatefulSet)
				return fmt.Sprintf("%d/%d", s.GetStatus().GetReadyReplicas(), s.GetSpec().GetReplicas())
			}},
			ageCol,
		}
	case "DaemonSet":
		ds := func(o scheme.Object) *appsv1.DaemonSetStatus { return o.(*appsv1.DaemonSet).GetStatus() }
		return []column{nameCol,
			{name: "DESIRED", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(int(ds(o).GetDesiredNumberScheduled())) }},
			{name: "CURRENT", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(int(ds(o).GetCurrentNumberScheduled())) }},
			{name: "READY", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(int(ds(o).GetNumberReady())) }},
			{name: "UP-TO-DATE", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(int(ds(o).GetUpdatedNumberScheduled())) }},
			{name: "AVAILABLE", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(int(ds(o).GetNumberAvailable())) }},
			{name: "NODE SELECTOR", cell: func(o scheme.Object, _ time.Time) string {
				return labelsString(o.(*appsv1.DaemonSet).GetSpec().GetTemplate().GetSpec().GetNodeSelector())
			}},
			ageCol,
		}
	case "Job":
		return []column{nameCol,
			{name: "STATUS", cell: func(o scheme.Object, _ time.Time) string { return jobStatus(o.(*batchv1.Job)) }},
			{name: "COMPLETIONS", cell: func(o scheme.Object, _ time.Time) string {
				j := o.(*batchv1.Job)
				c := "1"
				if j.GetSpec().Completions != nil {
					c = strconv.Itoa(int(j.GetSpec().GetCompletions()))
				}
				return fmt.Sprintf("%d/%s", j.GetStatus().GetSucceeded(), c)
			}},
			{name: "DURATION", cell: func(o scheme.Object, now time.Time) string {
				st := o.(*batchv1.Job).GetStatus()
				if st.GetStartTime().IsZero() {
					return ""
				}
				end := now
				if !st.GetCompletionTime().IsZero() {
					end = st.GetCompletionTime().AsTime()
				}
				return duration.HumanDuration(end.Sub(st.GetStartTime().AsTime()))
			}},
			ageCol,
		}
	case "CronJob":
		return []column{nameCol,
			{name: "SCHEDULE", cell: func(o scheme.Object, _ time.Time) string { return o.(*batchv1.CronJob).GetSpec().GetSchedule() }},
			{name: "TIMEZONE", cell: func(o scheme.Object, _ time.Time) string { return none(o.(*batchv1.CronJob).GetSpec().GetTimeZone()) }},
			{name: "SUSPEND", cell: func(o scheme.Object, _ time.Time) string {
				if o.(*batchv1.CronJob).GetSpec().GetSuspend() {
					return "True"
				}
				return "False"
			}},
			{name: "ACTIVE", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(len(o.(*batchv1.CronJob).GetStatus().GetActive()))
			}},
			{name: "LAST SCHEDULE", cell: func(o scheme.Object, now time.Time) string {
				t := o.(*batchv1.CronJob).GetStatus().GetLastScheduleTime()
				if t.IsZero() {
					return "<none>"
				}
				return Age(t, now)
			}},
			ageCol,
		}
	case "Service":
		return []column{nameCol,
			{name: "TYPE", cell: func(o scheme.Object, _ time.Time) string { return o.(*corev1.Service).GetSpec().GetType() }},
			{name: "CLUSTER-IP", cell: func(o scheme.Object, _ time.Time) string { return none(o.(*corev1.Service).GetSpec().GetClusterIP()) }},
			{name: "EXTERNAL-IP", cell: func(o scheme.Object, _ time.Time) string { return externalIP(o.(*corev1.Service)) }},
			{name: "PORT(S)", cell: func(o scheme.Object, _ time.Time) string { return servicePorts(o.(*corev1.Service)) }},
			ageCol,
			{name: "SELECTOR", wide: true, cell: func(o scheme.Object, _ time.Time) string {
				return labelsString(o.(*corev1.Service).GetSpec().GetSelector())
			}},
		}
	case "Node":
		return []column{nameCol,
			{name: "STATUS", cell: func(o scheme.Object, _ time.Time) string { return nodeStatus(o.(*corev1.Node)) }},
			{name: "ROLES", cell: func(o scheme.Object, _ time.Time) string { return nodeRoles(o.(*corev1.Node)) }},
			ageCol,
			{name: "VERSION", cell: func(o scheme.Object, _ time.Time) string {
				return o.(*corev1.Node).GetStatus().GetNodeInfo().GetKubeletVersion()
			}},
			{name: "INTERNAL-IP", wide: true, cell: func(o scheme.Object, _ time.Time) string { return nodeAddress(o.(*corev1.Node), "InternalIP") }},
			{name: "EXTERNAL-IP", wide: true, cell: func(o scheme.Object, _ time.Time) string { return nodeAddress(o.(*corev1.Node), "ExternalIP") }},
			{name: "OS-IMAGE", wide: true, cell: func(o scheme.Object, _ time.Time) string {
				return unknown(o.(*corev1.Node).GetStatus().GetNodeInfo().GetOsImage())
			}},
			{name: "KERNEL-VERSION", wide: true, cell: func(o scheme.Object, _ time.Time) string {
				return unknown(o.(*corev1.Node).GetStatus().GetNodeInfo().GetKernelVersion())
			}},
			{name: "CONTAINER-RUNTIME", wide: true, cell: func(o scheme.Object, _ time.Time) string {
				return unknown(o.(*corev1.Node).GetStatus().GetNodeInfo().GetContainerRuntimeVersion())
			}},
		}
	case "Namespace":
		return []column{nameCol,
			{name: "STATUS", cell: func(o scheme.Object, _ time.Time) string { return o.(*corev1.Namespace).GetStatus().GetPhase() }},
			ageCol,
		}
	case "ConfigMap":
		return []column{nameCol,
			{name: "DATA", cell: func(o scheme.Object, _ time.Time) string {
				c := o.(*corev1.ConfigMap)
				return strconv.Itoa(len(c.Data) + len(c.BinaryData))
			}},
			ageCol,
		}
	case "Secret":
		return []column{nameCol,
			{name: "TYPE", cell: func(o scheme.Object, _ time.Time) string { return o.(*corev1.Secret).GetType() }},
			{name: "DATA", cell: func(o scheme.Object, _ time.Time) string { return strconv.Itoa(len(o.(*corev1.Secret).Data)) }},
			ageCol,
		}
	case "ServiceAccount":
		return []column{nameCol,
			{name: "SECRETS", cell: func(o scheme.Object, _ time.Time) string {
				return strconv.Itoa(len(o.(*corev1.ServiceAccount).Secrets))
			}},
			ageCol,
		}
	}
	if cols := moreColumns(k); cols != nil {
		return cols
	}
	return []column{nameCol, ageCol}
}

// Table prints objects of one kind as kubectl's default table.
func Table(w io.Writer, k *scheme.Kind, objs []scheme.Object, o Options) error {
	tw := NewTabWriter(w)
	cols := columns(k)
	var header []string
	if o.AllNamespaces && k.Namespaced {
		header = append(header, "NAMESPACE")
	}
	for _, c := range cols {
		if !c.wide || o.Wide {
			header = append(header, c.name)
		}
	}
	for _, l := range o.LabelColumns {
		header = append(header, strings.ToUpper(l[strings.LastIndex(l, "/")+1:]))
	}
	if o.ShowLabels {
		header = append(header, "LABELS")
	}
	if !o.NoHeaders {
		fmt.Fprintln(tw, strings.Join(header, "\t"))
	}
	for _, obj := range objs {
		var row []string
		if o.AllNamespaces && k.Namespaced {
			row = append(row, obj.GetMetadata().GetNamespace())
		}
		for i, c := range cols {
			if !c.wide || o.Wide {
				cell := c.cell(obj, o.Now)
				if i == 0 && o.WithKind {
					cell = strings.ToLower(k.Kind) + groupSuffix(k) + "/" + cell
				}
				row = append(row, cell)
			}
		}
		for _, l := range o.LabelColumns {
			row = append(row, obj.GetMetadata().GetLabels()[l])
		}
		if o.ShowLabels {
			row = append(row, labelsString(obj.GetMetadata().GetLabels()))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func none(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func unknown(s string) string {
	if s == "" {
		return "<unknown>"
	}
	return s
}

func labelsString(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func containerNames(t *corev1.PodTemplateSpec) string {
	var n []string
	for _, c := range t.GetSpec().GetContainers() {
		n = append(n, c.Name)
	}
	return strings.Join(n, ",")
}

func images(t *corev1.PodTemplateSpec) string {
	var n []string
	for _, c := range t.GetSpec().GetContainers() {
		n = append(n, c.Image)
	}
	return strings.Join(n, ",")
}

func podReady(p *corev1.Pod) string {
	r := summarizePod(p)
	return fmt.Sprintf("%d/%d", r.ready, r.total)
}

func podRestarts(p *corev1.Pod) string { return strconv.Itoa(summarizePod(p).restarts) }

// PodStatus is kubectl's STATUS column: the phase, refined by the reason of
// the first init container or container that is not running.
func PodStatus(p *corev1.Pod) string { return summarizePod(p).reason }

// podSummary is what kubectl's printPod derives for a pod's READY,
// RESTARTS and STATUS columns.
type podSummary struct {
	ready, total, restarts int
	reason                 string
}

// summarizePod follows upstream's printPod: sidecars (init containers with
// restartPolicy Always) count among the containers once started, and do not
// hold the pod at Init:N/M.
func summarizePod(p *corev1.Pod) podSummary {
	st := p.GetStatus()
	r := podSummary{total: len(p.GetSpec().GetContainers()), reason: st.GetPhase()}
	if st.GetReason() != "" {
		r.reason = st.GetReason()
	}
	for _, c := range st.GetConditions() {
		if c.Type == "PodScheduled" && c.Reason == "SchedulingGated" {
			r.reason = "SchedulingGated"
		}
	}
	sidecar := map[string]bool{}
	for _, c := range p.GetSpec().GetInitContainers() {
		if c.GetRestartPolicy() == "Always" {
			sidecar[c.Name] = true
			r.total++
		}
	}
	initializing := false
	sidecarRestarts := 0
	for i, c := range st.GetInitContainerStatuses() {
		r.restarts += int(c.RestartCount)
		if sidecar[c.Name] {
			sidecarRestarts += int(c.RestartCount)
		}
		switch {
		case c.GetState().GetTerminated() != nil && c.GetState().GetTerminated().GetExitCode() == 0:
			continue
		case sidecar[c.Name] && c.GetStarted():
			if c.Ready {
				r.ready++
			}
			continue
		case c.GetState().GetTerminated() != nil:
			t := c.GetState().GetTerminated()
			if t.Reason != "" {
				r.reason = "Init:" + t.Reason
			} else if t.Signal != 0 {
				r.reason = fmt.Sprintf("Init:Signal:%d", t.Signal)
			} else {
				r.reason = fmt.Sprintf("Init:ExitCode:%d", t.ExitCode)
			}
		case c.GetState().GetWaiting() != nil && c.GetState().GetWaiting().GetReason() != "" && c.GetState().GetWaiting().GetReason() != "PodInitializing":
			r.reason = "Init:" + c.GetState().GetWaiting().GetReason()
		default:
			r.reason = fmt.Sprintf("Init:%d/%d", i, len(p.GetSpec().GetInitContainers()))
		}
		initializing = true
		break
	}
	if !initializing || podCondition(p, "Initialized") {
		r.restarts = sidecarRestarts
		hasRunning := false
		cs := st.GetContainerStatuses()
		for i := len(cs) - 1; i >= 0; i-- {
			c := cs[i]
			r.restarts += int(c.RestartCount)
			switch {
			case c.GetState().GetWaiting() != nil && c.GetState().GetWaiting().GetReason() != "":
				r.reason = c.GetState().GetWaiting().GetReason()
			case c.GetState().GetTerminated() != nil && c.GetState().GetTerminated().GetReason() != "":
				r.reason = c.GetState().GetTerminated().GetReason()
			case c.GetState().GetTerminated() != nil:
				t := c.GetState().GetTerminated()
				if t.Signal != 0 {
					r.reason = fmt.Sprintf("Signal:%d", t.Signal)
				} else {
					r.reason = fmt.Sprintf("ExitCode:%d", t.ExitCode)
				}
			case c.Ready && c.GetState().GetRunning() != nil:
				hasRunning = true
				r.ready++
			}
		}
		if r.reason == "Completed" && hasRunning {
			r.reason = "Running"
			if !podIsReady(p) {
				r.reason = "NotReady"
			}
		}
	}
	if p.GetMetadata().GetDeletionTimestamp() != nil {
		switch {
		case st.GetReason() == "NodeLost":
			r.reason = "Unknown"
		case st.GetPhase() != "Succeeded" && st.GetPhase() != "Failed":
			r.reason = "Terminating"
		}
	}
	return r
}

func podCondition(p *corev1.Pod, typ string) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.Type == typ {
			return c.Status == "True"
		}
	}
	return false
}

func podIsReady(p *corev1.Pod) bool { return podCondition(p, "Ready") }

func jobStatus(j *batchv1.Job) string {
	for _, c := range j.GetStatus().GetConditions() {
		if c.Status != "True" {
			continue
		}
		switch c.Type {
		case "Complete":
			return "Complete"
		case "Failed":
			return "Failed"
		case "Suspended":
			return "Suspended"
		case "FailureTarget":
			return "FailureTarget"
		}
	}
	return "Running"
}

func externalIP(s *corev1.Service) string {
	sp := s.GetSpec()
	switch sp.GetType() {
	case "ClusterIP", "NodePort":
		if len(sp.ExternalIPs) > 0 {
			return strings.Join(sp.ExternalIPs, ",")
		}
		return "<none>"
	case "LoadBalancer":
		var ips []string
		for _, in := range s.GetStatus().GetLoadBalancer().GetIngress() {
			if in.Ip != "" {
				ips = append(ips, in.Ip)
			} else if in.Hostname != "" {
				ips = append(ips, in.Hostname)
			}
		}
		ips = append(ips, sp.ExternalIPs...)
		if len(ips) == 0 {
			return "<pending>"
		}
		return strings.Join(ips, ",")
	case "ExternalName":
		return sp.ExternalName
	}
	return "<unknown>"
}

func servicePorts(s *corev1.Service) string {
	var out []string
	for _, p := range s.GetSpec().GetPorts() {
		v := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.NodePort > 0 {
			v = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return "<none>"
	}
	return strings.Join(out, ",")
}

func nodeStatus(n *corev1.Node) string {
	status := "Unknown"
	for _, c := range n.GetStatus().GetConditions() {
		if c.Type == "Ready" {
			if c.Status == "True" {
				status = "Ready"
			} else {
				status = "NotReady"
			}
		}
	}
	if n.GetSpec().GetUnschedulable() {
		status += ",SchedulingDisabled"
	}
	return status
}

func nodeRoles(n *corev1.Node) string {
	var roles []string
	for k, v := range n.GetMetadata().GetLabels() {
		switch {
		case strings.HasPrefix(k, "node-role.kubernetes.io/"):
			if r := strings.TrimPrefix(k, "node-role.kubernetes.io/"); r != "" {
				roles = append(roles, r)
			}
		case k == "kubernetes.io/role" && v != "":
			roles = append(roles, v)
		}
	}
	if len(roles) == 0 {
		return "<none>"
	}
	sort.Strings(roles)
	return strings.Join(roles, ",")
}

func nodeAddress(n *corev1.Node, typ string) string {
	for _, a := range n.GetStatus().GetAddresses() {
		if a.Type == typ {
			return a.Address
		}
	}
	return "<none>"
}

func groupSuffix(k *scheme.Kind) string {
	if k.Group == "" {
		return ""
	}
	return "." + k.Group
}
