package cmd

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"skiff.dev/ctl/internal/printers"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// kindDescriber prints a kind the way kubectl's describer for it does.
type kindDescriber func(w io.Writer, obj scheme.Object, now time.Time)

var describers = map[string]kindDescriber{
	"Pod":        describePod,
	"Deployment": describeDeployment,
	"Service":    describeService,
	"Node":       describeNode,
}

// field writes "Key:<tab>value" lines at an indent; tabwriter aligns them.
type lines struct {
	w   io.Writer
	pad string
}

func (l lines) kv(k string, v any) { fmt.Fprintf(l.w, "%s%s:\t%v\n", l.pad, k, v) }
func (l lines) in() lines          { return lines{l.w, l.pad + "  "} }

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func kvList(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + m[k]
	}
	return out
}

// multi writes a key whose values go one per line, aligned.
func (l lines) multi(k string, vals []string) {
	if len(vals) == 0 {
		l.kv(k, "<none>")
		return
	}
	for i, v := range vals {
		if i == 0 {
			l.kv(k, v)
		} else {
			fmt.Fprintf(l.w, "%s\t%s\n", l.pad, v)
		}
	}
}

func identity(l lines, m *metav1.ObjectMeta, namespaced bool) {
	l.kv("Name", m.GetName())
	if namespaced {
		l.kv("Namespace", m.GetNamespace())
	}
}

func annotations(m *metav1.ObjectMeta) []string {
	out := map[string]string{}
	for k, v := range m.GetAnnotations() {
		if k != LastApplied && k != diagnosisAnnotation {
			out[k] = v
		}
	}
	return kvList(out)
}

func resourceList(l lines, title string, rl map[string]*metav1.Quantity) {
	if len(rl) == 0 {
		return
	}
	l.kv(title, "")
	keys := make([]string, 0, len(rl))
	for k := range rl {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		l.in().kv(k, rl[k].GetString_())
	}
}

func containers(l lines, cs []*corev1.Container, statuses []*corev1.ContainerStatus, now time.Time) {
	byName := map[string]*corev1.ContainerStatus{}
	for _, s := range statuses {
		byName[s.Name] = s
	}
	for _, c := range cs {
		fmt.Fprintf(l.w, "%s%s:\n", l.pad, c.Name)
		cl := l.in()
		if s := byName[c.Name]; s != nil && s.ContainerID != "" {
			cl.kv("Container ID", s.ContainerID)
		}
		cl.kv("Image", c.Image)
		if s := byName[c.Name]; s != nil && s.ImageID != "" {
			cl.kv("Image ID", s.ImageID)
		}
		var ports, hostPorts []string
		for _, p := range c.Ports {
			ports = append(ports, fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol))
			hostPorts = append(hostPorts, fmt.Sprintf("%d/%s", p.HostPort, p.Protocol))
		}
		cl.kv("Port", orNone(strings.Join(ports, ", ")))
		cl.kv("Host Port", orNone(strings.Join(hostPorts, ", ")))
		if len(c.Command) > 0 {
			cl.multi("Command", c.Command)
		}
		if len(c.Args) > 0 {
			cl.multi("Args", c.Args)
		}
		if s := byName[c.Name]; s != nil {
			switch st := s.GetState(); {
			case st.GetRunning() != nil:
				cl.kv("State", "Running")
				cl.in().kv("Started", st.GetRunning().GetStartedAt().AsTime().Format(time.RFC1123Z))
			case st.GetWaiting() != nil:
				cl.kv("State", "Waiting")
				cl.in().kv("Reason", st.GetWaiting().GetReason())
			case st.GetTerminated() != nil:
				cl.kv("State", "Terminated")
				cl.in().kv("Reason", st.GetTerminated().GetReason())
				cl.in().kv("Exit Code", st.GetTerminated().GetExitCode())
			}
			cl.kv("Ready", titleBool(s.Ready))
			cl.kv("Restart Count", s.RestartCount)
		}
		resourceList(cl, "Limits", c.GetResources().GetLimits())
		resourceList(cl, "Requests", c.GetResources().GetRequests())
		var env []string
		for _, e := range c.Env {
			v := e.Value
			if e.ValueFrom != nil {
				v = "<set from a reference>"
			}
			env = append(env, e.Name+":  "+v)
		}
		if len(env) == 0 {
			cl.kv("Environment", "<none>")
		} else {
			cl.kv("Environment", "")
			for _, e := range env {
				fmt.Fprintf(l.w, "%s    %s\n", l.pad, e)
			}
		}
		var mounts []string
		for _, m := range c.VolumeMounts {
			ro := "rw"
			if m.ReadOnly {
				ro = "ro"
			}
			mounts = append(mounts, fmt.Sprintf("%s from %s (%s)", m.MountPath, m.Name, ro))
		}
		cl.multi("Mounts", mounts)
	}
}

func titleBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func describePod(w io.Writer, obj scheme.Object, now time.Time) {
	p := obj.(*corev1.Pod)
	m, sp, st := p.Metadata, p.GetSpec(), p.GetStatus()
	l := lines{w: w}
	identity(l, m, true)
	l.kv("Priority", sp.GetPriority())
	if sp.PriorityClassName != "" {
		l.kv("Priority Class Name", sp.PriorityClassName)
	}
	l.kv("Service Account", orNone(sp.ServiceAccountName))
	node := "<none>"
	if sp.NodeName != "" {
		node = sp.NodeName
		if st.GetHostIP() != "" {
			node += "/" + st.GetHostIP()
		}
	}
	l.kv("Node", node)
	if !st.GetStartTime().IsZero() {
		l.kv("Start Time", st.GetStartTime().AsTime().Format(time.RFC1123Z))
	}
	l.multi("Labels", kvList(m.GetLabels()))
	l.multi("Annotations", annotations(m))
	if m.DeletionTimestamp != nil {
		l.kv("Status", fmt.Sprintf("Terminating (lasts %s)", printers.Age(m.DeletionTimestamp, now)))
	} else {
		l.kv("Status", st.GetPhase())
	}
	if st.GetReason() != "" {
		l.kv("Reason", st.GetReason())
	}
	l.kv("IP", st.GetPodIP())
	if ref := metav1.GetControllerOf(m); ref != nil {
		l.kv("Controlled By", ref.Kind+"/"+ref.Name)
	}
	if len(sp.InitContainers) > 0 {
		fmt.Fprintln(w, "Init Containers:")
		containers(l.in(), sp.InitContainers, st.GetInitContainerStatuses(), now)
	}
	fmt.Fprintln(w, "Containers:")
	containers(l.in(), sp.Containers, st.GetContainerStatuses(), now)
	if len(st.GetConditions()) > 0 {
		fmt.Fprintln(w, "Conditions:")
		fmt.Fprintf(w, "  Type\tStatus\n")
		for _, c := range st.GetConditions() {
			fmt.Fprintf(w, "  %s \t%s \n", c.Type, c.Status)
		}
	}
	var vols []string
	for _, v := range sp.Volumes {
		vols = append(vols, v.Name)
	}
	l.multi("Volumes", vols)
	l.kv("QoS Class", st.GetQosClass())
	l.multi("Node-Selectors", kvList(sp.NodeSelector))
	var tols []string
	for _, t := range sp.Tolerations {
		s := t.Key
		if t.Operator == "Exists" && t.Key == "" {
			s = "op=Exists"
		} else if t.Value != "" {
			s += "=" + t.Value
		}
		if t.Effect != "" {
			s += ":" + t.Effect
		}
		if t.TolerationSeconds != nil {
			s += fmt.Sprintf(" for %ds", *t.TolerationSeconds)
		}
		tols = append(tols, s)
	}
	l.multi("Tolerations", tols)
}

func describeDeployment(w io.Writer, obj scheme.Object, now time.Time) {
	d := obj.(*appsv1.Deployment)
	m, sp, st := d.Metadata, d.GetSpec(), d.GetStatus()
	l := lines{w: w}
	identity(l, m, true)
	l.kv("CreationTimestamp", m.GetCreationTimestamp().AsTime().Format(time.RFC1123Z))
	l.multi("Labels", kvList(m.GetLabels()))
	l.multi("Annotations", annotations(m))
	l.kv("Selector", metav1.FormatLabelSelector(sp.GetSelector()))
	l.kv("Replicas", fmt.Sprintf("%d desired | %d updated | %d total | %d available | %d unavailable",
		sp.GetReplicas(), st.GetUpdatedReplicas(), st.GetReplicas(), st.GetAvailableReplicas(), st.GetUnavailableReplicas()))
	l.kv("StrategyType", sp.GetStrategy().GetType())
	l.kv("MinReadySeconds", sp.GetMinReadySeconds())
	if ru := sp.GetStrategy().GetRollingUpdate(); ru != nil {
		l.kv("RollingUpdateStrategy", fmt.Sprintf("%s max unavailable, %s max surge", ru.MaxUnavailable.Text(), ru.MaxSurge.Text()))
	}
	fmt.Fprintln(w, "Pod Template:")
	t := sp.GetTemplate()
	tl := l.in()
	tl.multi("Labels", kvList(t.GetMetadata().GetLabels()))
	fmt.Fprintln(w, "  Containers:")
	containers(lines{w, "   "}, t.GetSpec().GetContainers(), nil, now)
	var vols []string
	for _, v := range t.GetSpec().GetVolumes() {
		vols = append(vols, v.Name)
	}
	tl.multi("Volumes", vols)
	if len(st.GetConditions()) > 0 {
		fmt.Fprintln(w, "Conditions:")
		fmt.Fprintf(w, "  Type\tStatus\tReason\n")
		fmt.Fprintf(w, "  ----\t------\t------\n")
		for _, c := range st.GetConditions() {
			fmt.Fprintf(w, "  %s \t%s \t%s\n", c.Type, c.Status, c.Reason)
		}
	}
}

func describeService(w io.Writer, obj scheme.Object, _ time.Time) {
	s := obj.(*corev1.Service)
	m, sp := s.Metadata, s.GetSpec()
	l := lines{w: w}
	identity(l, m, true)
	l.multi("Labels", kvList(m.GetLabels()))
	l.multi("Annotations", annotations(m))
	l.kv("Selector", orNone(strings.Join(kvList(sp.Selector), ",")))
	l.kv("Type", sp.Type)
	if sp.IpFamilyPolicy != nil {
		l.kv("IP Family Policy", *sp.IpFamilyPolicy)
	}
	if len(sp.IpFamilies) > 0 {
		l.kv("IP Families", strings.Join(sp.IpFamilies, ","))
	}
	l.kv("IP", orNone(sp.ClusterIP))
	if len(sp.ClusterIPs) > 0 {
		l.kv("IPs", strings.Join(sp.ClusterIPs, ","))
	}
	for _, p := range sp.Ports {
		name := p.Name
		if name == "" {
			name = "<unset>"
		}
		l.kv("Port", fmt.Sprintf("%s  %d/%s", name, p.Port, p.Protocol))
		if p.TargetPort != nil {
			l.kv("TargetPort", fmt.Sprintf("%s/%s", p.TargetPort.Text(), p.Protocol))
		}
		if p.NodePort != 0 {
			l.kv("NodePort", fmt.Sprintf("%s  %d/%s", name, p.NodePort, p.Protocol))
		}
	}
	l.kv("Session Affinity", sp.SessionAffinity)
	if sp.ExternalTrafficPolicy != "" {
		l.kv("External Traffic Policy", sp.ExternalTrafficPolicy)
	}
	if sp.InternalTrafficPolicy != nil {
		l.kv("Internal Traffic Policy", *sp.InternalTrafficPolicy)
	}
}

func describeNode(w io.Writer, obj scheme.Object, _ time.Time) {
	n := obj.(*corev1.Node)
	m, sp, st := n.Metadata, n.GetSpec(), n.GetStatus()
	l := lines{w: w}
	identity(l, m, false)
	var roles []string
	for k := range m.GetLabels() {
		if r, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && r != "" {
			roles = append(roles, r)
		}
	}
	sort.Strings(roles)
	l.kv("Roles", orNone(strings.Join(roles, ",")))
	l.multi("Labels", kvList(m.GetLabels()))
	l.multi("Annotations", annotations(m))
	l.kv("CreationTimestamp", m.GetCreationTimestamp().AsTime().Format(time.RFC1123Z))
	var taints []string
	for _, t := range sp.Taints {
		s := t.Key
		if t.Value != "" {
			s += "=" + t.Value
		}
		taints = append(taints, s+":"+t.Effect)
	}
	l.multi("Taints", taints)
	l.kv("Unschedulable", sp.Unschedulable)
	fmt.Fprintln(w, "Conditions:")
	fmt.Fprintf(w, "  Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage\n")
	fmt.Fprintf(w, "  ----\t------\t-----------------\t------------------\t------\t-------\n")
	for _, c := range st.GetConditions() {
		fmt.Fprintf(w, "  %s \t%s \t%s \t%s \t%s \t%s\n", c.Type, c.Status,
			c.GetLastHeartbeatTime().AsTime().Format(time.RFC1123Z), c.GetLastTransitionTime().AsTime().Format(time.RFC1123Z), c.Reason, c.Message)
	}
	fmt.Fprintln(w, "Addresses:")
	for _, a := range st.GetAddresses() {
		l.in().kv(a.Type, a.Address)
	}
	resourceList(l, "Capacity", st.GetCapacity())
	resourceList(l, "Allocatable", st.GetAllocatable())
	if info := st.GetNodeInfo(); info != nil {
		fmt.Fprintln(w, "System Info:")
		il := l.in()
		il.kv("Machine ID", info.MachineID)
		il.kv("Kernel Version", info.KernelVersion)
		il.kv("OS Image", info.OsImage)
		il.kv("Operating System", info.OperatingSystem)
		il.kv("Architecture", info.Architecture)
		il.kv("Container Runtime Version", info.ContainerRuntimeVersion)
		il.kv("Kubelet Version", info.KubeletVersion)
	}
	if len(sp.PodCIDRs) > 0 {
		l.kv("PodCIDRs", strings.Join(sp.PodCIDRs, ","))
	}
}
