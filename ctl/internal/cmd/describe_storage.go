package cmd

import (
	"fmt"
	"io"
	"strings"
	"time"

	"skiff.dev/ctl/internal/printers"
	appsv1 "skiff.dev/proto/api/apps/v1"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/scheme"
)

func init() {
	describers["PersistentVolume"] = describePV
	describers["PersistentVolumeClaim"] = describePVC
	describers["Event"] = describeEvent
	describers["Lease"] = describeLease
	describers["EndpointSlice"] = describeEndpointSlice
	describers["ResourceQuota"] = describeQuota
	describers["LimitRange"] = describeLimitRange
	describers["ControllerRevision"] = describeControllerRevision
	describers["ReplicationController"] = describeRC
	describers["StorageClass"] = describeStorageClass
	describers["CSIDriver"] = describeCSIDriver
	describers["CSINode"] = describeCSINode
	describers["VolumeAttachment"] = describeVolumeAttachment
}

func describePV(w io.Writer, o scheme.Object, _ time.Time) {
	pv := o.(*corev1.PersistentVolume)
	sp, st := pv.GetSpec(), pv.GetStatus()
	l := lines{w: w}
	header(l, pv.Metadata, false)
	l.multi("Finalizers", pv.Metadata.Finalizers)
	l.kv("StorageClass", sp.GetStorageClassName())
	l.kv("Status", st.GetPhase())
	claim := ""
	if r := sp.GetClaimRef(); r != nil {
		claim = r.Namespace + "/" + r.Name
	}
	l.kv("Claim", claim)
	l.kv("Reclaim Policy", sp.GetPersistentVolumeReclaimPolicy())
	l.kv("Access Modes", accessModeList(sp.GetAccessModes()))
	l.kv("VolumeMode", sp.GetVolumeMode())
	l.kv("Capacity", sp.GetCapacity()["storage"].GetString_())
	l.kv("Message", st.GetMessage())
	if hp := sp.GetPersistentVolumeSource().GetHostPath(); hp != nil {
		fmt.Fprintln(w, "Source:")
		l.in().kv("Type", "HostPath (bare host directory volume)")
		l.in().kv("Path", hp.Path)
	}
}

func accessModeList(ms []string) string {
	short := map[string]string{"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
	var out []string
	for _, m := range ms {
		out = append(out, short[m])
	}
	return strings.Join(out, ",")
}

func describePVC(w io.Writer, o scheme.Object, _ time.Time) {
	c := o.(*corev1.PersistentVolumeClaim)
	sp, st := c.GetSpec(), c.GetStatus()
	l := lines{w: w}
	identity(l, c.Metadata, true)
	l.kv("StorageClass", sp.GetStorageClassName())
	l.kv("Status", st.GetPhase())
	l.kv("Volume", sp.GetVolumeName())
	l.multi("Labels", kvList(c.Metadata.GetLabels()))
	l.multi("Annotations", annotations(c.Metadata))
	l.multi("Finalizers", c.Metadata.Finalizers)
	l.kv("Capacity", st.GetCapacity()["storage"].GetString_())
	l.kv("Access Modes", accessModeList(st.GetAccessModes()))
	l.kv("VolumeMode", sp.GetVolumeMode())
	l.kv("Used By", "<none>")
}

func describeEvent(w io.Writer, o scheme.Object, now time.Time) {
	e := o.(*corev1.Event)
	l := lines{w: w}
	header(l, e.Metadata, true)
	io := e.GetInvolvedObject()
	fmt.Fprintln(w, "Involved Object:")
	il := l.in()
	il.kv("API Version", io.ApiVersion)
	il.kv("Kind", io.Kind)
	il.kv("Name", io.Name)
	il.kv("Namespace", io.Namespace)
	l.kv("Type", e.Type)
	l.kv("Reason", e.Reason)
	l.kv("Message", e.Message)
	l.kv("Count", e.Count)
	if !e.GetFirstTimestamp().IsZero() {
		l.kv("First Timestamp", e.GetFirstTimestamp().AsTime().Format(time.RFC1123Z))
		l.kv("Last Timestamp", e.GetLastTimestamp().AsTime().Format(time.RFC1123Z))
	}
	fmt.Fprintln(w, "Source:")
	l.in().kv("Component", e.GetSource().GetComponent())
	l.in().kv("Host", e.GetSource().GetHost())
}

func describeLease(w io.Writer, o scheme.Object, _ time.Time) {
	ls := o.(*coordinationv1.Lease)
	sp := ls.GetSpec()
	l := lines{w: w}
	header(l, ls.Metadata, true)
	fmt.Fprintln(w, "Spec:")
	sl := l.in()
	sl.kv("Holder Identity", sp.GetHolderIdentity())
	sl.kv("Lease Duration Seconds", sp.GetLeaseDurationSeconds())
	sl.kv("Lease Transitions", sp.GetLeaseTransitions())
	if t := sp.GetRenewTime(); t != nil {
		sl.kv("Renew Time", time.Unix(t.Seconds, int64(t.Nanos)).UTC().Format(time.RFC3339Nano))
	}
	if t := sp.GetAcquireTime(); t != nil {
		sl.kv("Acquire Time", time.Unix(t.Seconds, int64(t.Nanos)).UTC().Format(time.RFC3339Nano))
	}
}

func describeEndpointSlice(w io.Writer, o scheme.Object, _ time.Time) {
	es := o.(*discoveryv1.EndpointSlice)
	l := lines{w: w}
	header(l, es.Metadata, true)
	l.kv("AddressType", es.AddressType)
	fmt.Fprintln(w, "Ports:")
	fmt.Fprintln(w, "  Name\tPort\tProtocol")
	fmt.Fprintln(w, "  ----\t----\t--------")
	for _, p := range es.Ports {
		n := p.GetName()
		if n == "" {
			n = "<unset>"
		}
		fmt.Fprintf(w, "  %s\t%d\t%s\n", n, p.GetPort(), p.GetProtocol())
	}
	fmt.Fprintln(w, "Endpoints:")
	for _, e := range es.Endpoints {
		fmt.Fprintf(w, "  - Addresses:\t%s\n", strings.Join(e.Addresses, ","))
		el := lines{w, "    "}
		fmt.Fprintln(w, "    Conditions:")
		el.in().kv("Ready", e.GetConditions().GetReady())
		if r := e.GetTargetRef(); r != nil {
			el.kv("TargetRef", r.Kind+"/"+r.Name)
		}
		el.kv("NodeName", e.GetNodeName())
		el.kv("Zone", orNone(e.GetZone()))
	}
}

func describeQuota(w io.Writer, o scheme.Object, _ time.Time) {
	q := o.(*corev1.ResourceQuota)
	l := lines{w: w}
	identity(l, q.Metadata, true)
	fmt.Fprintln(w, "Resource\tUsed\tHard")
	fmt.Fprintln(w, "--------\t----\t----")
	hard := q.GetSpec().GetHard()
	for _, k := range sortedKeys(hard) {
		used := q.GetStatus().GetUsed()[k].GetString_()
		if used == "" {
			used = "0"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", k, used, hard[k].GetString_())
	}
}

func describeLimitRange(w io.Writer, o scheme.Object, _ time.Time) {
	lr := o.(*corev1.LimitRange)
	l := lines{w: w}
	identity(l, lr.Metadata, true)
	fmt.Fprintln(w, "Type\tResource\tMin\tMax\tDefault Request\tDefault Limit\tMax Limit/Request Ratio")
	fmt.Fprintln(w, "----\t--------\t---\t---\t---------------\t-------------\t-----------------------")
	for _, it := range lr.GetSpec().GetLimits() {
		names := map[string]bool{}
		for _, m := range []map[string]*metav1.Quantity{it.Min, it.Max, it.DefaultRequest, it.Default, it.MaxLimitRequestRatio} {
			for k := range m {
				names[k] = true
			}
		}
		for _, n := range sortedKeys(names) {
			get := func(m map[string]*metav1.Quantity) string {
				if q, ok := m[n]; ok {
					return q.GetString_()
				}
				return "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.Type, n, get(it.Min), get(it.Max), get(it.DefaultRequest), get(it.Default), get(it.MaxLimitRequestRatio))
		}
	}
}

func describeControllerRevision(w io.Writer, o scheme.Object, _ time.Time) {
	cr := o.(*appsv1.ControllerRevision)
	l := lines{w: w}
	header(l, cr.Metadata, true)
	controlledBy(l, cr.Metadata)
	l.kv("Revision", cr.Revision)
	l.kv("Data", string(cr.GetData().GetRaw()))
}

func describeRC(w io.Writer, o scheme.Object, now time.Time) {
	rc := o.(*corev1.ReplicationController)
	l := lines{w: w}
	identity(l, rc.Metadata, true)
	l.kv("Selector", strings.Join(kvList(rc.GetSpec().GetSelector()), ","))
	l.multi("Labels", kvList(rc.Metadata.GetLabels()))
	l.multi("Annotations", annotations(rc.Metadata))
	l.kv("Replicas", fmt.Sprintf("%d current / %d desired", rc.GetStatus().GetReplicas(), rc.GetSpec().GetReplicas()))
	if t := rc.GetSpec().GetTemplate(); t != nil {
		podTemplate(w, t, now)
	}
}

func describeStorageClass(w io.Writer, o scheme.Object, _ time.Time) {
	sc := o.(*storagev1.StorageClass)
	l := lines{w: w}
	l.kv("Name", sc.Metadata.GetName())
	l.kv("IsDefaultClass", map[bool]string{true: "Yes", false: "No"}[printers.IsDefaultClass(sc.Metadata)])
	l.multi("Annotations", annotations(sc.Metadata))
	l.kv("Provisioner", sc.Provisioner)
	l.kv("Parameters", orNone(strings.Join(kvList(sc.GetParameters()), ",")))
	expand := "<unset>"
	if sc.AllowVolumeExpansion != nil {
		expand = fmt.Sprint(*sc.AllowVolumeExpansion)
	}
	l.kv("AllowVolumeExpansion", expand)
	l.kv("MountOptions", orNone(strings.Join(sc.GetMountOptions(), ", ")))
	l.kv("ReclaimPolicy", sc.GetReclaimPolicy())
	l.kv("VolumeBindingMode", sc.GetVolumeBindingMode())
}

func describeCSIDriver(w io.Writer, o scheme.Object, _ time.Time) {
	d := o.(*storagev1.CSIDriver)
	sp := d.GetSpec()
	l := lines{w: w}
	header(l, d.Metadata, false)
	fmt.Fprintln(w, "Spec:")
	sl := l.in()
	sl.kv("Attach Required", sp.AttachRequired == nil || *sp.AttachRequired)
	sl.kv("Pod Info On Mount", sp.GetPodInfoOnMount())
	sl.kv("Storage Capacity", sp.GetStorageCapacity())
	sl.kv("Fs Group Policy", sp.GetFsGroupPolicy())
	sl.multi("Volume Lifecycle Modes", sp.GetVolumeLifecycleModes())
}

func describeCSINode(w io.Writer, o scheme.Object, _ time.Time) {
	n := o.(*storagev1.CSINode)
	l := lines{w: w}
	header(l, n.Metadata, false)
	fmt.Fprintln(w, "Spec:")
	fmt.Fprintln(w, "  Drivers:")
	for _, d := range n.GetSpec().GetDrivers() {
		fmt.Fprintf(w, "    %s:\n", d.Name)
		dl := l.in().in().in()
		dl.kv("Node ID", d.NodeID)
		if c := d.GetAllocatable().GetCount(); d.GetAllocatable() != nil {
			dl.kv("Allocatables", fmt.Sprintf("Count: %d", c))
		}
		dl.multi("Topology Keys", d.GetTopologyKeys())
	}
}

func describeVolumeAttachment(w io.Writer, o scheme.Object, _ time.Time) {
	va := o.(*storagev1.VolumeAttachment)
	sp, st := va.GetSpec(), va.GetStatus()
	l := lines{w: w}
	header(l, va.Metadata, false)
	fmt.Fprintln(w, "Spec:")
	sl := l.in()
	sl.kv("Attacher", sp.GetAttacher())
	sl.kv("Node Name", sp.GetNodeName())
	sl.kv("Persistent Volume Name", sp.GetSource().GetPersistentVolumeName())
	fmt.Fprintln(w, "Status:")
	l.in().kv("Attached", st.GetAttached())
	if e := st.GetAttachError(); e != nil {
		l.in().kv("Attach Error", e.GetMessage())
	}
}
