package statefulset

import (
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client/controller"
	"skiff.dev/controller-manager/internal/controllers/history"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Upstream's labels on a set's pods.
const (
	podNameLabel  = "statefulset.kubernetes.io/pod-name"
	podIndexLabel = "apps.kubernetes.io/pod-index"

	retain = "Retain"
	del    = "Delete"
)

var podNameRE = regexp.MustCompile(`^(.*)-([0-9]+)$`)

// parentAndOrdinal is upstream's getParentNameAndOrdinal: "web-3" is web, 3;
// -1 for a name of no set.
func parentAndOrdinal(pod *corev1.Pod) (string, int) {
	m := podNameRE.FindStringSubmatch(pod.GetMetadata().GetName())
	if m == nil {
		return "", -1
	}
	n, err := strconv.Atoi(m[2])
	if err != nil {
		return "", -1
	}
	return m[1], n
}

func ordinal(pod *corev1.Pod) int { _, o := parentAndOrdinal(pod); return o }

func isMemberOf(set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	p, _ := parentAndOrdinal(pod)
	return p == set.GetMetadata().GetName()
}

func podName(set *appsv1.StatefulSet, ord int) string {
	return fmt.Sprintf("%s-%d", set.GetMetadata().GetName(), ord)
}

func claimName(set *appsv1.StatefulSet, claim *corev1.PersistentVolumeClaim, ord int) string {
	return fmt.Sprintf("%s-%s-%d", claim.GetMetadata().GetName(), set.GetMetadata().GetName(), ord)
}

func replicaCount(set *appsv1.StatefulSet) int {
	if r := set.GetSpec().Replicas; r != nil {
		return int(*r)
	}
	return 1
}

func startOrdinal(set *appsv1.StatefulSet) int { return int(set.GetSpec().GetOrdinals().GetStart()) }

func inOrdinalRange(set *appsv1.StatefulSet, ord int) bool {
	return ord >= startOrdinal(set) && ord < startOrdinal(set)+replicaCount(set)
}

func isTerminating(p *corev1.Pod) bool { return p.GetMetadata().GetDeletionTimestamp() != nil }
func isFailed(p *corev1.Pod) bool      { return p.GetStatus().GetPhase() == "Failed" }
func isSucceeded(p *corev1.Pod) bool   { return p.GetStatus().GetPhase() == "Succeeded" }

func readyCondition(p *corev1.Pod) *corev1.PodCondition {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c
		}
	}
	return nil
}

func isRunningAndReady(p *corev1.Pod) bool {
	c := readyCondition(p)
	return p.GetStatus().GetPhase() == "Running" && c != nil && c.GetStatus() == "True"
}

func isRunningAndAvailable(p *corev1.Pod, minReadySeconds int32, now time.Time) bool {
	if !isRunningAndReady(p) {
		return false
	}
	if minReadySeconds == 0 {
		return true
	}
	t := readyCondition(p).GetLastTransitionTime()
	return !t.IsZero() && !t.AsTime().Add(time.Duration(minReadySeconds)*time.Second).After(now)
}

func isHealthy(p *corev1.Pod) bool { return isRunningAndReady(p) && !isTerminating(p) }

func podRevision(p *corev1.Pod) string {
	return p.GetMetadata().GetLabels()[history.ControllerRevisionHashLabel]
}

// claimsFor are the PVCs pod ord's templates make, by template name.
func claimsFor(set *appsv1.StatefulSet, ord int) map[string]*corev1.PersistentVolumeClaim {
	out := map[string]*corev1.PersistentVolumeClaim{}
	for _, t := range set.GetSpec().GetVolumeClaimTemplates() {
		c := proto.Clone(t).(*corev1.PersistentVolumeClaim)
		if c.Metadata == nil {
			c.Metadata = &metav1.ObjectMeta{}
		}
		c.Metadata.Name = claimName(set, t, ord)
		c.Metadata.Namespace = set.GetMetadata().GetNamespace()
		l := maps.Clone(c.Metadata.Labels)
		if l == nil {
			l = map[string]string{}
		}
		maps.Copy(l, set.GetSpec().GetSelector().GetMatchLabels())
		c.Metadata.Labels = l
		c.Status = nil
		out[t.GetMetadata().GetName()] = c
	}
	return out
}

// updateIdentity is upstream's: name-derived labels, hostname, subdomain.
func updateIdentity(set *appsv1.StatefulSet, pod *corev1.Pod) {
	_, ord := parentAndOrdinal(pod)
	m := pod.Metadata
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	m.Labels[podNameLabel] = m.GetName()
	m.Labels[podIndexLabel] = strconv.Itoa(ord)
	if pod.Spec == nil {
		pod.Spec = &corev1.PodSpec{}
	}
	pod.Spec.Hostname = m.GetName()
	pod.Spec.Subdomain = set.GetSpec().GetServiceName()
}

func identityMatches(set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	_, ord := parentAndOrdinal(pod)
	l := pod.GetMetadata().GetLabels()
	return ord >= 0 && isMemberOf(set, pod) && l[podNameLabel] == pod.GetMetadata().GetName() &&
		l[podIndexLabel] == strconv.Itoa(ord) && pod.GetSpec().GetHostname() == pod.GetMetadata().GetName() &&
		pod.GetSpec().GetSubdomain() == set.GetSpec().GetServiceName()
}

// updateStorage points the pod's volumes named after claim templates at
// the pod's own claims.
func updateStorage(set *appsv1.StatefulSet, pod *corev1.Pod) {
	claims := claimsFor(set, ordinal(pod))
	if len(claims) == 0 {
		return
	}
	var vols []*corev1.Volume
	for _, t := range set.GetSpec().GetVolumeClaimTemplates() {
		n := t.GetMetadata().GetName()
		vols = append(vols, &corev1.Volume{Name: n, VolumeSource: &corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claims[n].GetMetadata().GetName()}}})
	}
	for _, v := range pod.GetSpec().GetVolumes() {
		if _, ok := claims[v.GetName()]; !ok {
			vols = append(vols, v)
		}
	}
	pod.Spec.Volumes = vols
}

func storageMatches(set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	claims := claimsFor(set, ordinal(pod))
	found := 0
	for _, v := range pod.GetSpec().GetVolumes() {
		c, ok := claims[v.GetName()]
		if !ok {
			continue
		}
		if v.GetVolumeSource().GetPersistentVolumeClaim().GetClaimName() != c.GetMetadata().GetName() {
			return false
		}
		found++
	}
	return found == len(claims)
}

// newPod is upstream's newStatefulSetPod: the template's pod named for its
// ordinal, with its identity and storage, controlled by the set.
func newPod(set *appsv1.StatefulSet, ord int) *corev1.Pod {
	t := set.GetSpec().GetTemplate()
	tm := t.GetMetadata()
	spec := proto.Clone(t.GetSpec()).(*corev1.PodSpec)
	if spec == nil {
		spec = &corev1.PodSpec{}
	}
	pod := &corev1.Pod{
		Metadata: &metav1.ObjectMeta{
			Name:            podName(set, ord),
			Namespace:       set.GetMetadata().GetNamespace(),
			Labels:          maps.Clone(tm.GetLabels()),
			Annotations:     maps.Clone(tm.GetAnnotations()),
			Finalizers:      append([]string(nil), tm.GetFinalizers()...),
			OwnerReferences: []*metav1.OwnerReference{controller.NewControllerRef(set, setKind)},
		},
		Spec: spec,
	}
	updateIdentity(set, pod)
	updateStorage(set, pod)
	return pod
}

// newVersionedPod is upstream's newVersionedStatefulSetPod: ordinals below
// the partition keep the current revision, the others get the update one.
func newVersionedPod(currentSet, updateSet *appsv1.StatefulSet, currentRev, updateRev string, ord int, currentReplicas int) *corev1.Pod {
	st := currentSet.GetSpec().GetUpdateStrategy()
	rolling := st.GetType() == "" || st.GetType() == "RollingUpdate"
	if rolling {
		bound := startOrdinal(currentSet) + currentReplicas
		if st.GetRollingUpdate() != nil {
			bound = startOrdinal(currentSet) + int(st.GetRollingUpdate().GetPartition())
		}
		if ord < bound {
			p := newPod(currentSet, ord)
			p.Metadata.Labels[history.ControllerRevisionHashLabel] = currentRev
			return p
		}
	}
	p := newPod(updateSet, ord)
	p.Metadata.Labels[history.ControllerRevisionHashLabel] = updateRev
	return p
}

// retentionPolicy is the set's policy with upstream's defaults.
func retentionPolicy(set *appsv1.StatefulSet) (whenDeleted, whenScaled string) {
	p := set.GetSpec().GetPersistentVolumeClaimRetentionPolicy()
	whenDeleted, whenScaled = p.GetWhenDeleted(), p.GetWhenScaled()
	if whenDeleted == "" {
		whenDeleted = retain
	}
	if whenScaled == "" {
		whenScaled = retain
	}
	return whenDeleted, whenScaled
}

func hasOwner(m *metav1.ObjectMeta, uid string) bool {
	for _, r := range m.GetOwnerReferences() {
		if r.GetUid() == uid {
			return true
		}
	}
	return false
}

func setOwner(m *metav1.ObjectMeta, ref *metav1.OwnerReference) bool {
	if hasOwner(m, ref.GetUid()) {
		return false
	}
	m.OwnerReferences = append(m.OwnerReferences, ref)
	return true
}

func removeOwner(m *metav1.ObjectMeta, uid string) bool {
	if !hasOwner(m, uid) {
		return false
	}
	var out []*metav1.OwnerReference
	for _, r := range m.GetOwnerReferences() {
		if r.GetUid() != uid {
			out = append(out, r)
		}
	}
	m.OwnerReferences = out
	return true
}

// ownerRef is a plain (not controller) owner reference.
func ownerRef(apiVersion, kind string, m *metav1.ObjectMeta) *metav1.OwnerReference {
	return &metav1.OwnerReference{ApiVersion: apiVersion, Kind: kind, Name: m.GetName(), Uid: m.GetUid()}
}

// applyRetentionPolicy is upstream's updateClaimOwnerRefForSetAndPod: the
// claim's owner references that carry out the policy; whether they changed.
func applyRetentionPolicy(claim *corev1.PersistentVolumeClaim, set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	whenDeleted, whenScaled := retentionPolicy(set)
	sm, pm := set.GetMetadata(), pod.GetMetadata()
	setRef := ownerRef(setKind.APIVersion(), setKind.Kind, sm)
	podRef := ownerRef("v1", "Pod", pm)
	scaledDown := !inOrdinalRange(set, ordinal(pod))
	changed := false
	or := func(b bool) { changed = b || changed }
	switch {
	case whenDeleted == retain && whenScaled == retain:
		or(removeOwner(claim.Metadata, sm.GetUid()))
		or(removeOwner(claim.Metadata, pm.GetUid()))
	case whenDeleted == del && whenScaled == retain:
		or(setOwner(claim.Metadata, setRef))
		or(removeOwner(claim.Metadata, pm.GetUid()))
	case whenDeleted == retain && whenScaled == del:
		or(removeOwner(claim.Metadata, sm.GetUid()))
		if scaledDown && pm.GetUid() != "" {
			or(setOwner(claim.Metadata, podRef))
		} else {
			or(removeOwner(claim.Metadata, pm.GetUid()))
		}
	default: // both Delete
		if scaledDown && pm.GetUid() != "" {
			or(setOwner(claim.Metadata, podRef))
		} else {
			or(setOwner(claim.Metadata, setRef))
			or(removeOwner(claim.Metadata, pm.GetUid()))
		}
	}
	return changed
}
