package endpointslice

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/sets"

	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// plan is what one sync of a Service writes: upstream's reconciler output.
type plan struct {
	create, update, delete []*discoveryv1.EndpointSlice
	// added and removed count endpoints, for the per-sync histograms.
	added, removed int
	// efficiency is the Service's share of the slice gauges, by address
	// type and port set.
	efficiency map[string]efficiency
}

// planInput is everything a plan depends on; planSlices reads nothing else.
type planInput struct {
	service  *corev1.Service
	pods     []*corev1.Pod
	existing []*discoveryv1.EndpointSlice
	// zone returns the zone label of a node, and whether the node exists.
	zone        func(node string) (string, bool)
	maxPerSlice int
	// triggerTime is the last-change-trigger-time to stamp on written
	// slices; zero removes the annotation.
	triggerTime time.Time
}

// planSlices is upstream's Reconcile without the writes: it places the
// Service's desired endpoints into its existing slices with as little churn
// as it can. Unchanged endpoints stay in their slice; slices that lost or
// changed endpoints are refilled first, the fullest first; what remains goes
// into the one unchanged slice it fits best, else into new slices; slices
// left empty are deleted, except that a Service without endpoints keeps one
// empty placeholder slice per address type. Only slices whose content or
// labels change are updated, and a slice to delete is reused (updated) in
// place of one to create.
//
// The error lists pods skipped because their node is unknown (the caller
// writes the plan anyway and retries later, as upstream does).
func planSlices(in planInput) (plan, error) {
	p := plan{efficiency: map[string]efficiency{}}
	var errs []error
	types := AddressTypes(in.service)
	byType := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range in.existing {
		if !slices.Contains(types, s.GetAddressType()) {
			p.delete = append(p.delete, s)
			continue
		}
		byType[s.GetAddressType()] = append(byType[s.GetAddressType()], s)
	}
	for _, at := range types {
		c, u, d, err := p.planAddressType(in, at, byType[at])
		if err != nil {
			errs = append(errs, err)
		}
		p.create = append(p.create, c...)
		p.update = append(p.update, u...)
		p.delete = append(p.delete, d...)
	}
	p.reuseDeleted(in.service)
	for _, s := range slices.Concat(p.create, p.update) {
		setTriggerTime(s, in.triggerTime)
	}
	return p, errors.Join(errs...)
}

// portGroup is the desired endpoints sharing one resolved port set.
type portGroup struct {
	ports     []*discoveryv1.EndpointPort
	endpoints map[string]*discoveryv1.Endpoint
}

func (p *plan) planAddressType(in planInput, addressType string, existing []*discoveryv1.EndpointSlice) (create, update, del []*discoveryv1.EndpointSlice, err error) {
	svc := in.service
	existingByPorts := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		if ownedBy(s, svc) {
			k := portKey(s.GetPorts())
			existingByPorts[k] = append(existingByPorts[k], s)
		} else {
			del = append(del, s)
		}
	}

	desired := map[string]*portGroup{}
	var missing []string
	for _, pod := range in.pods {
		ep, ok := PodEndpoint(svc, pod, addressType)
		if !ok {
			continue
		}
		zone, found := in.zone(ep.NodeName)
		if !found && !svc.GetSpec().GetPublishNotReadyAddresses() {
			// Without the node the endpoint's topology is unknown; leave
			// the pod out rather than hold the whole Service back, and
			// retry. Publishing not-ready addresses means publish anyway.
			missing = append(missing, fmt.Sprintf("pod %s on node %s", pod.GetMetadata().GetName(), ep.NodeName))
			continue
		}
		k := portKey(ep.Ports)
		g := desired[k]
		if g == nil {
			g = &portGroup{ports: ep.Ports, endpoints: map[string]*discoveryv1.Endpoint{}}
			desired[k] = g
		}
		se := sliceEndpoint(ep, zone)
		g.endpoints[endpointKey(se)] = se
	}
	if len(missing) > 0 {
		err = fmt.Errorf("skipping pods of Service %s/%s whose node is not found: %s",
			svc.GetMetadata().GetNamespace(), svc.GetMetadata().GetName(), strings.Join(missing, ", "))
	}

	for _, k := range slices.Sorted(maps.Keys(desired)) {
		g := desired[k]
		n := len(g.endpoints)
		c, u, d, added, removed := placeEndpoints(svc, addressType, existingByPorts[k], g, in.maxPerSlice)
		p.added += added
		p.removed += removed
		p.efficiency[addressType+"/"+k] = efficiency{endpoints: n, slices: len(existingByPorts[k]) + len(c) - len(d)}
		create = append(create, c...)
		update = append(update, u...)
		del = append(del, d...)
	}
	// Port sets no pod has any more: their slices go. (Upstream leaves
	// their endpoints out of the removed count; they are removed.)
	for _, k := range slices.Sorted(maps.Keys(existingByPorts)) {
		if _, ok := desired[k]; !ok {
			for _, s := range existingByPorts[k] {
				p.removed += len(s.GetEndpoints())
			}
			del = append(del, existingByPorts[k]...)
		}
	}

	// A Service whose slices would all go keeps an empty placeholder, so
	// consumers can tell "no endpoints" from "not yet processed".
	if len(existing) == len(del) && len(create) == 0 {
		ph := newSlice(svc, addressType, []*discoveryv1.EndpointPort{})
		if len(del) == 1 && ownedBy(del[0], svc) && isPlaceholder(del[0], ph) {
			del = del[:0]
		} else {
			create = append(create, ph)
		}
		p.efficiency[addressType+"/"+portKey(nil)] = efficiency{slices: 1}
	}
	return create, update, del, err
}

// placeEndpoints is upstream's reconcileByPortMapping for one port set: it
// consumes g.endpoints.
func placeEndpoints(svc *corev1.Service, addressType string, existing []*discoveryv1.EndpointSlice, g *portGroup, maxPerSlice int) (create, update, del []*discoveryv1.EndpointSlice, added, removed int) {
	byName := map[string]*discoveryv1.EndpointSlice{}
	unchanged, toUpdate, toDelete := sets.New[string](), sets.New[string](), sets.New[string]()
	want := g.endpoints

	// 1. Keep each existing endpoint still desired, in its slice, taking
	// its desired version; drop the rest.
	for _, s := range sortedByName(existing) {
		name := s.GetMetadata().GetName()
		byName[name] = s
		kept := make([]*discoveryv1.Endpoint, 0, len(s.GetEndpoints()))
		changed := false
		for _, ep := range s.GetEndpoints() {
			k := endpointKey(ep)
			got, ok := want[k]
			if !ok {
				continue
			}
			kept = append(kept, got)
			if !endpointEqualBeyondKey(got, ep) {
				changed = true
			}
			delete(want, k)
		}
		labels, labelsChanged := sliceLabels(s, svc)
		switch {
		case changed || len(kept) != len(s.GetEndpoints()):
			removed += len(s.GetEndpoints()) - len(kept)
			if len(kept) == 0 {
				toDelete.Insert(name)
				continue
			}
			c := cloneSlice(s)
			c.Endpoints = kept
			c.Metadata.Labels = labels
			byName[name] = c
			toUpdate.Insert(name)
		case labelsChanged:
			c := cloneSlice(s)
			c.Metadata.Labels = labels
			byName[name] = c
			toUpdate.Insert(name)
		default:
			unchanged.Insert(name)
		}
	}
	added = len(want)
	pending := slices.Sorted(maps.Keys(want))
	pop := func() *discoveryv1.Endpoint {
		ep := want[pending[0]]
		pending = pending[1:]
		return ep
	}

	// 2. Top up the slices being written anyway, fullest first.
	if len(pending) > 0 && toUpdate.Len() > 0 {
		fill := make([]*discoveryv1.EndpointSlice, 0, toUpdate.Len())
		for _, n := range sets.List(toUpdate) {
			fill = append(fill, byName[n])
		}
		sort.SliceStable(fill, func(i, j int) bool { return len(fill[i].Endpoints) > len(fill[j].Endpoints) })
		for _, s := range fill {
			for len(pending) > 0 && len(s.Endpoints) < maxPerSlice {
				s.Endpoints = append(s.Endpoints, pop())
			}
		}
	}

	// 3. The rest: into the unchanged slice it fills best when it fits in
	// one, else into new slices.
	for len(pending) > 0 {
		var s *discoveryv1.EndpointSlice
		if len(pending) < maxPerSlice && unchanged.Len() > 0 {
			cands := make([]*discoveryv1.EndpointSlice, 0, unchanged.Len())
			for _, n := range sets.List(unchanged) {
				cands = append(cands, byName[n])
			}
			s = sliceToFill(cands, len(pending), maxPerSlice)
		}
		if s == nil {
			s = newSlice(svc, addressType, g.ports)
		} else {
			s = cloneSlice(s)
			byName[s.GetMetadata().GetName()] = s
		}
		for len(pending) > 0 && len(s.Endpoints) < maxPerSlice {
			s.Endpoints = append(s.Endpoints, pop())
		}
		if n := s.GetMetadata().GetName(); n != "" {
			toUpdate.Insert(n)
			unchanged.Delete(n)
		} else {
			create = append(create, s)
		}
	}
	for _, n := range sets.List(toUpdate) {
		update = append(update, byName[n])
	}
	for _, n := range sets.List(toDelete) {
		del = append(del, byName[n])
	}
	return create, update, del, added, removed
}

// sliceToFill is the slice closest to full once n endpoints are added, nil
// when none has room.
func sliceToFill(cands []*discoveryv1.EndpointSlice, n, maxPerSlice int) *discoveryv1.EndpointSlice {
	best, bestDiff := (*discoveryv1.EndpointSlice)(nil), maxPerSlice
	for _, s := range cands {
		diff := maxPerSlice - (n + len(s.GetEndpoints()))
		if diff >= 0 && diff < bestDiff {
			best, bestDiff = s, diff
			if diff == 0 {
				break
			}
		}
	}
	return best
}

// reuseDeleted turns creations into updates of slices about to be deleted
// (same address type, owned by this Service): fewer objects churn, and
// watchers see a change rather than a delete and an add.
func (p *plan) reuseDeleted(svc *corev1.Service) {
	for i := 0; i < len(p.delete) && len(p.create) > 0; {
		old, s := p.delete[i], p.create[len(p.create)-1]
		if old.GetAddressType() != s.GetAddressType() || !ownedBy(old, svc) {
			i++
			continue
		}
		s.Metadata.Name = old.GetMetadata().GetName()
		s.Metadata.GenerateName = ""
		s.Metadata.ResourceVersion = old.GetMetadata().GetResourceVersion()
		s.Metadata.Uid = old.GetMetadata().GetUid()
		p.create = p.create[:len(p.create)-1]
		p.update = append(p.update, s)
		p.delete = slices.Delete(p.delete, i, i+1)
	}
}

// newSlice is an empty slice for svc, named by the apiserver.
func newSlice(svc *corev1.Service, addressType string, ports []*discoveryv1.EndpointPort) *discoveryv1.EndpointSlice {
	m := svc.GetMetadata()
	s := &discoveryv1.EndpointSlice{
		Metadata: &metav1.ObjectMeta{
			GenerateName:    m.GetName() + "-",
			Namespace:       m.GetNamespace(),
			OwnerReferences: []*metav1.OwnerReference{metav1.NewControllerRef(svc, "v1", "Service")},
		},
		AddressType: addressType,
		Endpoints:   []*discoveryv1.Endpoint{},
		Ports:       clonePorts(ports),
	}
	s.Metadata.Labels, _ = sliceLabels(s, svc)
	return s
}

// sliceLabels are the labels s should carry: the Service's own (reserved
// keys excepted), the headless marker, and the service-name and managed-by
// labels; changed reports whether s's mirrored labels differ from the
// Service's.
func sliceLabels(s *discoveryv1.EndpointSlice, svc *corev1.Service) (map[string]string, bool) {
	have, want := map[string]string{}, map[string]string{}
	for k, v := range s.GetMetadata().GetLabels() {
		if !reservedLabel(k) {
			have[k] = v
		}
	}
	for k, v := range svc.GetMetadata().GetLabels() {
		if !reservedLabel(k) {
			want[k] = v
		}
	}
	changed := !maps.Equal(have, want)
	if IsHeadless(svc) {
		want[LabelHeadless] = ""
	}
	want[LabelServiceName] = svc.GetMetadata().GetName()
	want[LabelManagedBy] = ControllerName
	return want, changed
}

func reservedLabel(k string) bool {
	return k == LabelServiceName || k == LabelManagedBy || k == LabelHeadless
}

// ownedBy reports s controlled by this very Service (its uid), not by an
// earlier one of the same name.
func ownedBy(s *discoveryv1.EndpointSlice, svc *corev1.Service) bool {
	for _, r := range s.GetMetadata().GetOwnerReferences() {
		if r.GetUid() == svc.GetMetadata().GetUid() && r.GetKind() == "Service" && r.GetApiVersion() == "v1" {
			return true
		}
	}
	return false
}

// isPlaceholder reports an existing slice equivalent to the placeholder ph.
func isPlaceholder(s, ph *discoveryv1.EndpointSlice) bool {
	return s.GetMetadata().GetNamespace() == ph.GetMetadata().GetNamespace() &&
		maps.Equal(s.GetMetadata().GetLabels(), ph.GetMetadata().GetLabels()) &&
		s.GetAddressType() == ph.GetAddressType() &&
		len(s.GetEndpoints()) == 0 && len(s.GetPorts()) == 0
}

func setTriggerTime(s *discoveryv1.EndpointSlice, t time.Time) {
	if s.Metadata.Annotations == nil {
		s.Metadata.Annotations = map[string]string{}
	}
	if t.IsZero() {
		delete(s.Metadata.Annotations, AnnotationLastChangeTriggerTime)
		return
	}
	s.Metadata.Annotations[AnnotationLastChangeTriggerTime] = FormatTriggerTime(t)
}

// sliceEndpoint is ep as an EndpointSlice endpoint.
func sliceEndpoint(ep Endpoint, zone string) *discoveryv1.Endpoint {
	out := &discoveryv1.Endpoint{
		Addresses: slices.Clone(ep.Addresses),
		Conditions: &discoveryv1.EndpointConditions{
			Ready:       new(ep.Ready),
			Serving:     new(ep.Serving),
			Terminating: new(ep.Terminating),
		},
		TargetRef: proto.Clone(ep.TargetRef).(*corev1.ObjectReference),
	}
	if ep.Hostname != "" {
		out.Hostname = new(ep.Hostname)
	}
	if ep.NodeName != "" {
		out.NodeName = new(ep.NodeName)
	}
	if zone != "" {
		out.Zone = new(zone)
	}
	return out
}

// endpointKey identifies an endpoint across syncs by what makes it that
// endpoint, its addresses, hostname and pod, so that a change of anything
// else (conditions, zone) updates it in place.
func endpointKey(ep *discoveryv1.Endpoint) string {
	addrs := slices.Sorted(slices.Values(ep.GetAddresses()))
	return strings.Join(addrs, ",") + "|" + ep.GetHostname() + "|" + ep.GetTargetRef().GetNamespace() + "/" + ep.GetTargetRef().GetName()
}

// endpointEqualBeyondKey compares what endpointKey leaves out, ignoring the
// pod's resourceVersion in targetRef.
func endpointEqualBeyondKey(a, b *discoveryv1.Endpoint) bool {
	if !ptrEqual(a.NodeName, b.NodeName) || !ptrEqual(a.Zone, b.Zone) {
		return false
	}
	ac, bc := a.GetConditions(), b.GetConditions()
	if !ptrEqual(ac.Ready, bc.Ready) || !ptrEqual(ac.Serving, bc.Serving) || !ptrEqual(ac.Terminating, bc.Terminating) {
		return false
	}
	ar, br := a.GetTargetRef(), b.GetTargetRef()
	if (ar == nil) != (br == nil) {
		return false
	}
	return ar == nil || (ar.GetKind() == br.GetKind() && ar.GetNamespace() == br.GetNamespace() && ar.GetName() == br.GetName() &&
		ar.GetUid() == br.GetUid() && ar.GetApiVersion() == br.GetApiVersion() && ar.GetFieldPath() == br.GetFieldPath())
}

func ptrEqual[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// portKey identifies a set of endpoint ports, whatever their order.
func portKey(ports []*discoveryv1.EndpointPort) string {
	parts := make([]string, 0, len(ports))
	for _, p := range ports {
		parts = append(parts, strings.Join([]string{
			optString(p.Name), optString(p.Protocol), optInt(p.Port), optString(p.AppProtocol)}, "/"))
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

func optString(s *string) string {
	if s == nil {
		return "-"
	}
	return strconv.Quote(*s)
}

func optInt(n *int32) string {
	if n == nil {
		return "-"
	}
	return strconv.Itoa(int(*n))
}

func cloneSlice(s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	c := proto.Clone(s).(*discoveryv1.EndpointSlice)
	if c.Metadata == nil {
		c.Metadata = &metav1.ObjectMeta{}
	}
	return c
}

func clonePorts(ps []*discoveryv1.EndpointPort) []*discoveryv1.EndpointPort {
	out := make([]*discoveryv1.EndpointPort, 0, len(ps))
	for _, p := range ps {
		out = append(out, proto.Clone(p).(*discoveryv1.EndpointPort))
	}
	return out
}

func sortedByName(ss []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := slices.Clone(ss)
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int {
		return strings.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
	})
	return out
}
