// Package deletion holds the API's rules for deleting an object, shared by
// the apiserver's registry and the fake clientset so that the fake behaves
// as the apiserver does: which finalizers a propagation policy records,
// the grace period a pod gets, and when an update completes a deletion.
package deletion

import (
	"slices"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/scheme"
)

// Finalizers the garbage collector acts on, recorded from a delete's
// propagation policy, and the namespace controller's spec finalizer.
const (
	FinalizerOrphan     = "orphan"
	FinalizerForeground = "foregroundDeletion"
	FinalizerNamespace  = "kubernetes"
)

// Propagate is fs with the finalizer a propagation policy records: Orphan
// and Foreground replace each other; Background and "" change nothing.
func Propagate(fs []string, policy string) []string {
	switch policy {
	case "Orphan":
		return AddFinalizer(RemoveFinalizer(fs, FinalizerForeground), FinalizerOrphan)
	case "Foreground":
		return AddFinalizer(RemoveFinalizer(fs, FinalizerOrphan), FinalizerForeground)
	}
	return fs
}

// PodGrace is the grace period a pod deletion gets: none for a pod no node
// runs (unscheduled or finished), else the request's or the pod's own.
func PodGrace(p *corev1.Pod, req *int64) int64 {
	if p.GetSpec().GetNodeName() == "" {
		return 0
	}
	switch p.GetStatus().GetPhase() {
	case "Succeeded", "Failed":
		return 0
	}
	if req != nil {
		return *req
	}
	if g := p.GetSpec().TerminationGracePeriodSeconds; g != nil {
		return *g
	}
	return 30
}

// AddFinalizer is fs with f, once.
func AddFinalizer(fs []string, f string) []string {
	if slices.Contains(fs, f) {
		return fs
	}
	return append(fs, f)
}

// RemoveFinalizer is fs without f.
func RemoveFinalizer(fs []string, f string) []string {
	return slices.DeleteFunc(fs, func(s string) bool { return s == f })
}

// DuringUpdate is upstream's shouldDeleteDuringUpdate: an update that
// leaves no finalizer on an object being deleted removes it, unless the
// object is still in its grace period (a pod the kubelet is stopping writes
// its status meanwhile; the kubelet's final delete removes it).
func DuringUpdate(next, old scheme.Object) bool {
	om := old.GetMetadata()
	if len(next.GetMetadata().GetFinalizers()) > 0 || om.GetDeletionTimestamp() == nil || NamespaceFinalizing(next) {
		return false
	}
	return om.DeletionGracePeriodSeconds == nil || *om.DeletionGracePeriodSeconds == 0
}

// NamespaceFinalizing says a namespace stays until its spec finalizers are
// gone too.
func NamespaceFinalizing(obj scheme.Object) bool {
	ns, ok := obj.(*corev1.Namespace)
	return ok && len(ns.GetSpec().GetFinalizers()) > 0
}
