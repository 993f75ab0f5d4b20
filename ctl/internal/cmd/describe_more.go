package cmd

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	appsv1 "skiff.dev/proto/api/apps/v1"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

func init() {
	describers["ConfigMap"] = describeConfigMap
	describers["Secret"] = describeSecret
	describers["Namespace"] = describeNamespace
	describers["ReplicaSet"] = describeReplicaSet
	describers["StatefulSet"] = describeStatefulSet
	describers["DaemonSet"] = describeDaemonSet
	describers["Job"] = describeJob
	describers["CronJob"] = describeCronJob
}

func header(l lines, m *metav1.ObjectMeta, namespaced bool) {
	identity(l, m, namespaced)
	l.multi("Labels", kvList(m.GetLabels()))
	l.multi("Annotations", annotations(m))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func describeConfigMap(w io.Writer, obj scheme.Object, _ time.Time) {
	c := obj.(*corev1.ConfigMap)
	header(lines{w: w}, c.Metadata, true)
	fmt.Fprintln(w, "\nData\n====")
	for _, k := range sortedKeys(c.Data) {
		fmt.Fprintf(w, "%s:\n----\n%s\n\n", k, c.Data[k])
	}
	fmt.Fprintln(w, "\nBinaryData\n====")
	for _, k := range sortedKeys(c.BinaryData) {
		fmt.Fprintf(w, "%s: %d bytes\n", k, len(c.BinaryData[k]))
	}
	fmt.Fprintln(w)
}

func describeSecret(w io.Writer, obj scheme.Object, _ time.Time) {
	s := obj.(*corev1.Secret)
	l := lines{w: w}
	header(l, s.Metadata, true)
	fmt.Fprintf(w, "\nType:\t%s\n\nData\n====\n", s.Type)
	for _, k := range sortedKeys(s.Data) {
		l.kv(k, fmt.Sprintf("%d bytes", len(s.Data[k])))
	}
}

func describeNamespace(w io.Writer, obj scheme.Object, _ time.Time) {
	n := obj.(*corev1.Namespace)
	l := lines{w: w}
	header(l, n.Metadata, false)
	l.kv("Status", n.GetStatus().GetPhase())
	fmt.Fprintln(w, "\nNo resource quota.\n\nNo LimitRange resource.")
}

// podTemplate writes a workload's "Pod Template:" section.
func podTemplate(w io.Writer, t *corev1.PodTemplateSpec, now time.Time) {
	fmt.Fprintln(w, "Pod Template:")
	tl := lines{w, "  "}
	tl.multi("Labels", kvList(t.GetMetadata().GetLabels()))
	if sa := t.GetSpec().GetServiceAccountName(); sa != "" {
		tl.kv("Service Account", sa)
	}
	if len(t.GetSpec().GetInitContainers()) > 0 {
		fmt.Fprintln(w, "  Init Containers:")
		containers(lines{w, "   "}, t.GetSpec().GetInitContainers(), nil, now)
	}
	fmt.Fprintln(w, "  Containers:")
	containers(lines{w, "   "}, t.GetSpec().GetContainers(), nil, now)
	var vols []string
	for _, v := range t.GetSpec().GetVolumes() {
		vols = append(vols, v.Name)
	}
	tl.multi("Volumes", vols)
	tl.multi("Node-Selectors", kvList(t.GetSpec().GetNodeSelector()))
	var tols []string
	for _, t := range t.GetSpec().GetTolerations() {
		tols = append(tols, strings.TrimSuffix(t.Key+"="+t.Value, "=")+":"+t.Effect)
	}
	tl.multi("Tolerations", tols)
}

func controlledBy(l lines, m *metav1.ObjectMeta) {
	if ref := metav1.GetControllerOf(m); ref != nil {
		l.kv("Controlled By", ref.Kind+"/"+ref.Name)
	}
}

func describeReplicaSet(w io.Writer, obj scheme.Object, now time.Time) {
	rs := obj.(*appsv1.ReplicaSet)
	l := lines{w: w}
	identity(l, rs.Metadata, true)
	l.kv("Selector", metav1.FormatLabelSelector(rs.GetSpec().GetSelector()))
	l.multi("Labels", kvList(rs.Metadata.GetLabels()))
	l.multi("Annotations", annotations(rs.Metadata))
	controlledBy(l, rs.Metadata)
	l.kv("Replicas", fmt.Sprintf("%d current / %d desired", rs.GetStatus().GetReplicas(), rs.GetSpec().GetReplicas()))
	podTemplate(w, rs.GetSpec().GetTemplate(), now)
}

func describeStatefulSet(w io.Writer, obj scheme.Object, now time.Time) {
	s := obj.(*appsv1.StatefulSet)
	l := lines{w: w}
	identity(l, s.Metadata, true)
	l.kv("CreationTimestamp", s.Metadata.GetCreationTimestamp().AsTime().Format(time.RFC1123Z))
	l.kv("Selector", metav1.FormatLabelSelector(s.GetSpec().GetSelector()))
	l.multi("Labels", kvList(s.Metadata.GetLabels()))
	l.multi("Annotations", annotations(s.Metadata))
	l.kv("Replicas", fmt.Sprintf("%d desired | %d total", s.GetSpec().GetReplicas(), s.GetStatus().GetReplicas()))
	l.kv("Update Strategy", s.GetSpec().GetUpdateStrategy().GetType())
	if p := s.GetSpec().GetUpdateStrategy().GetRollingUpdate(); p != nil {
		l.in().kv("Partition", p.GetPartition())
	}
	podTemplate(w, s.GetSpec().GetTemplate(), now)
	if vcts := s.GetSpec().GetVolumeClaimTemplates(); len(vcts) > 0 {
		fmt.Fprintln(w, "Volume Claims:")
		for _, c := range vcts {
			vl := lines{w, "  "}
			vl.kv("Name", c.GetMetadata().GetName())
			vl.kv("StorageClass", c.GetSpec().GetStorageClassName())
			vl.kv("Capacity", c.GetSpec().GetResources().GetRequests()["storage"].GetString_())
			vl.kv("Access Modes", strings.Join(c.GetSpec().GetAccessModes(), ","))
		}
	} else {
		l.kv("Volume Claims", "<none>")
	}
}

func describeDaemonSet(w io.Writer, obj scheme.Object, now time.Time) {
	d := obj.(*appsv1.DaemonSet)
	st := d.GetStatus()
	l := lines{w: w}
	identity(l, d.Metadata, true)
	l.kv("Selector", metav1.FormatLabelSelector(d.GetSpec().GetSelector()))
	l.multi("Node-Selector", kvList(d.GetSpec().GetTemplate().GetSpec().GetNodeSelector()))
	l.multi("Labels", kvList(d.Metadata.GetLabels()))
	l.multi("Annotations", annotations(d.Metadata))
	l.kv("Desired Number of Nodes Scheduled", st.GetDesiredNumberScheduled())
	l.kv("Current Number of Nodes Scheduled", st.GetCurrentNumberScheduled())
	l.kv("Number of Nodes Scheduled with Up-to-date Pods", st.GetUpdatedNumberScheduled())
	l.kv("Number of Nodes Scheduled with Available Pods", st.GetNumberAvailable())
	l.kv("Number of Nodes Misscheduled", st.GetNumberMisscheduled())
	podTemplate(w, d.GetSpec().GetTemplate(), now)
}

func describeJob(w io.Writer, obj scheme.Object, now time.Time) {
	j := obj.(*batchv1.Job)
	sp, st := j.GetSpec(), j.GetStatus()
	l := lines{w: w}
	identity(l, j.Metadata, true)
	l.kv("Selector", metav1.FormatLabelSelector(sp.GetSelector()))
	l.multi("Labels", kvList(j.Metadata.GetLabels()))
	l.multi("Annotations", annotations(j.Metadata))
	controlledBy(l, j.Metadata)
	l.kv("Parallelism", sp.GetParallelism())
	if sp.Completions != nil {
		l.kv("Completions", sp.GetCompletions())
	} else {
		l.kv("Completions", "<unset>")
	}
	l.kv("Completion Mode", sp.GetCompletionMode())
	l.kv("Suspend", sp.GetSuspend())
	l.kv("Backoff Limit", sp.GetBackoffLimit())
	if !st.GetStartTime().IsZero() {
		l.kv("Start Time", st.GetStartTime().AsTime().Format(time.RFC1123Z))
	}
	l.kv("Pods Statuses", fmt.Sprintf("%d Active (%d Ready) / %d Succeeded / %d Failed", st.GetActive(), st.GetReady(), st.GetSucceeded(), st.GetFailed()))
	podTemplate(w, sp.GetTemplate(), now)
}

func describeCronJob(w io.Writer, obj scheme.Object, now time.Time) {
	c := obj.(*batchv1.CronJob)
	sp := c.GetSpec()
	l := lines{w: w}
	header(l, c.Metadata, true)
	l.kv("Schedule", sp.GetSchedule())
	l.kv("Concurrency Policy", sp.GetConcurrencyPolicy())
	l.kv("Suspend", titleBool(sp.GetSuspend()))
	l.kv("Successful Job History Limit", sp.GetSuccessfulJobsHistoryLimit())
	l.kv("Failed Job History Limit", sp.GetFailedJobsHistoryLimit())
	if sp.StartingDeadlineSeconds != nil {
		l.kv("Starting Deadline Seconds", fmt.Sprintf("%ds", *sp.StartingDeadlineSeconds))
	} else {
		l.kv("Starting Deadline Seconds", "<unset>")
	}
	jt := sp.GetJobTemplate().GetSpec()
	l.kv("Parallelism", orUnset(jt.Parallelism))
	l.kv("Completions", orUnset(jt.Completions))
	podTemplate(w, jt.GetTemplate(), now)
	if t := c.GetStatus().GetLastScheduleTime(); !t.IsZero() {
		l.kv("Last Schedule Time", t.AsTime().Format(time.RFC1123Z))
	} else {
		l.kv("Last Schedule Time", "<unset>")
	}
	var active []string
	for _, a := range c.GetStatus().GetActive() {
		active = append(active, a.Name)
	}
	l.kv("Active Jobs", orNone(strings.Join(active, ", ")))
}

func orUnset(v *int32) string {
	if v == nil {
		return "<unset>"
	}
	return fmt.Sprint(*v)
}
