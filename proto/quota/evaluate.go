package quota

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// Upstream's resource names.
const (
	Pods                     = "pods"
	CPU                      = "cpu"
	Memory                   = "memory"
	EphemeralStorage         = "ephemeral-storage"
	RequestsCPU              = "requests.cpu"
	RequestsMemory           = "requests.memory"
	RequestsEphemeralStorage = "requests.ephemeral-storage"
	RequestsStorage          = "requests.storage"
	LimitsCPU                = "limits.cpu"
	LimitsMemory             = "limits.memory"
	LimitsEphemeralStorage   = "limits.ephemeral-storage"
	Services                 = "services"
	ServicesNodePorts        = "services.nodeports"
	ServicesLoadBalancers    = "services.loadbalancers"
	PersistentVolumeClaims   = "persistentvolumeclaims"

	// StorageClassSuffix joins a storage class to a PVC resource:
	// "gold.storageclass.storage.k8s.io/requests.storage".
	StorageClassSuffix     = ".storageclass.storage.k8s.io/"
	storageClassAnnotation = "volume.beta.kubernetes.io/storage-class"
)

// Upstream's quota scopes.
const (
	ScopeTerminating               = "Terminating"
	ScopeNotTerminating            = "NotTerminating"
	ScopeBestEffort                = "BestEffort"
	ScopeNotBestEffort             = "NotBestEffort"
	ScopePriorityClass             = "PriorityClass"
	ScopeCrossNamespacePodAffinity = "CrossNamespacePodAffinity"
)

// Operation is the write being admitted.
type Operation string

const (
	Create Operation = "CREATE"
	Update Operation = "UPDATE"
)

// ObjectCountName is the count/<resource>[.<group>] name of a kind.
func ObjectCountName(k *scheme.Kind) string {
	if k.Group == "" {
		return "count/" + k.Resource
	}
	return "count/" + k.Resource + "." + k.Group
}

// KindForCountName is the kind a count/<resource>[.<group>] name counts.
func KindForCountName(name string) (*scheme.Kind, bool) {
	rest, ok := strings.CutPrefix(name, "count/")
	if !ok {
		return nil, false
	}
	res, group, _ := strings.Cut(rest, ".")
	k, ok := scheme.ForResource(group, res)
	if !ok || !k.Namespaced || k.CreateOnly {
		return nil, false
	}
	return k, true
}

// legacyCountNames are the core kinds counted under a bare name too.
var legacyCountNames = map[string]string{
	"configmaps":             "configmaps",
	"secrets":                "secrets",
	"replicationcontrollers": "replicationcontrollers",
	"resourcequotas":         "resourcequotas",
	"services":               Services,
	"persistentvolumeclaims": PersistentVolumeClaims,
}

var podResources = []string{"count/pods", CPU, Memory, EphemeralStorage, RequestsCPU, RequestsMemory,
	RequestsEphemeralStorage, LimitsCPU, LimitsMemory, LimitsEphemeralStorage, Pods}

// podValidationSet are the resources each container must state when a quota
// tracks them (upstream's backward-compatible requirement).
var podValidationSet = sets.New(CPU, Memory, RequestsCPU, RequestsMemory, LimitsCPU, LimitsMemory)

func isCore(k *scheme.Kind, resource string) bool { return k.Group == "" && k.Resource == resource }

// Handles says whether a write of the kind is charged: creates of every
// kind, and updates of pods (in-place resize), services (a change of type)
// and claims (expansion), charged by what they add.
func Handles(k *scheme.Kind, op Operation) bool {
	if op == Create {
		return true
	}
	return op == Update && (isCore(k, "pods") || isCore(k, "services") || isCore(k, "persistentvolumeclaims"))
}

// MatchingResources are those of names an object of the kind is measured in.
func MatchingResources(k *scheme.Kind, names []string) []string {
	var out []string
	count := ObjectCountName(k)
	for _, n := range names {
		switch {
		case n == count:
			out = append(out, n)
		case isCore(k, "pods"):
			if slices.Contains(podResources, n) || strings.HasPrefix(n, "hugepages-") ||
				strings.HasPrefix(n, "requests.hugepages-") || isExtendedRequest(n) {
				out = append(out, n)
			}
		case isCore(k, "services"):
			if n == Services || n == ServicesNodePorts || n == ServicesLoadBalancers {
				out = append(out, n)
			}
		case isCore(k, "persistentvolumeclaims"):
			if n == PersistentVolumeClaims || n == RequestsStorage ||
				strings.HasSuffix(n, StorageClassSuffix+PersistentVolumeClaims) || strings.HasSuffix(n, StorageClassSuffix+RequestsStorage) {
				out = append(out, n)
			}
		case k.Group == "":
			if legacy, ok := legacyCountNames[k.Resource]; ok && n == legacy {
				out = append(out, n)
			}
		}
	}
	return out
}

// isExtendedRequest is "requests.<extended resource>": a name with a
// domain outside kubernetes.io.
func isExtendedRequest(n string) bool {
	rest, ok := strings.CutPrefix(n, "requests.")
	if !ok || !strings.Contains(rest, "/") {
		return false
	}
	return !strings.HasPrefix(rest, "kubernetes.io/") && !strings.Contains(strings.SplitN(rest, "/", 2)[0], ".kubernetes.io")
}

// Usage is what obj, of kind k, uses; now decides whether a pod stuck
// terminating still counts.
func Usage(k *scheme.Kind, obj scheme.Object, now time.Time) List {
	one := *resource.NewQuantity(1, resource.DecimalSI)
	out := List{ObjectCountName(k): one.DeepCopy()}
	switch o := obj.(type) {
	case *corev1.Pod:
		if !PodCounted(o, now) {
			return out
		}
		return Add(out, podComputeUsage(PodRequests(o), PodLimits(o)))
	case *corev1.Service:
		return Add(out, serviceUsage(o))
	case *corev1.PersistentVolumeClaim:
		return Add(out, claimUsage(o))
	}
	if k.Group == "" {
		if legacy, ok := legacyCountNames[k.Resource]; ok {
			out[legacy] = one.DeepCopy()
		}
	}
	return out
}

// PodCounted is upstream's QuotaV1Pod: terminal pods, and pods past their
// deletion grace period (a lost node's), use no compute resources.
func PodCounted(p *corev1.Pod, now time.Time) bool {
	m := p.GetMetadata()
	if m.GetDeletionTimestamp() != nil && m.DeletionGracePeriodSeconds != nil {
		end := m.GetDeletionTimestamp().AsTime().Add(time.Duration(m.GetDeletionGracePeriodSeconds()) * time.Second)
		if now.After(end) {
			return false
		}
	}
	ph := p.GetStatus().GetPhase()
	return ph != "Succeeded" && ph != "Failed"
}

func podComputeUsage(requests, limits List) List {
	out := List{Pods: *resource.NewQuantity(1, resource.DecimalSI)}
	for _, r := range []struct{ name, req, lim string }{
		{CPU, RequestsCPU, LimitsCPU},
		{Memory, RequestsMemory, LimitsMemory},
		{EphemeralStorage, RequestsEphemeralStorage, LimitsEphemeralStorage},
	} {
		if q, ok := requests[r.name]; ok {
			out[r.name] = q.DeepCopy()
			out[r.req] = q.DeepCopy()
		}
		if q, ok := limits[r.name]; ok {
			out[r.lim] = q.DeepCopy()
		}
	}
	for n, q := range requests {
		if strings.HasPrefix(n, "hugepages-") {
			out[n] = q.DeepCopy()
			out["requests."+n] = q.DeepCopy()
		}
		if isExtendedRequest("requests." + n) {
			out["requests."+n] = q.DeepCopy()
		}
	}
	return out
}

// PodRequests is upstream's PodRequests: the containers' sum, or the
// largest init phase if more (sidecars, restartPolicy Always, run beside
// everything after them), plus the overhead; pod-level resources replace
// what they state.
func PodRequests(p *corev1.Pod) List {
	return podResources2(p, func(c *corev1.Container) List { return FromProto(c.GetResources().GetRequests()) },
		FromProto(p.GetSpec().GetResources().GetRequests()))
}

// PodLimits is PodRequests for limits.
func PodLimits(p *corev1.Pod) List {
	return podResources2(p, func(c *corev1.Container) List { return FromProto(c.GetResources().GetLimits()) },
		FromProto(p.GetSpec().GetResources().GetLimits()))
}

func podResources2(p *corev1.Pod, of func(*corev1.Container) List, podLevel List) List {
	spec := p.GetSpec()
	sum := List{}
	for _, c := range spec.GetContainers() {
		sum = Add(sum, of(c))
	}
	sidecars, initMax := List{}, List{}
	for _, c := range spec.GetInitContainers() {
		r := of(c)
		if c.GetRestartPolicy() == "Always" {
			sum = Add(sum, r)
			sidecars = Add(sidecars, r)
			r = sidecars
		} else {
			r = Add(r, sidecars)
		}
		initMax = Max(initMax, r)
	}
	out := Max(sum, initMax)
	if len(spec.GetOverhead()) > 0 {
		out = Add(out, FromProto(spec.GetOverhead()))
	}
	for _, n := range []string{CPU, Memory} {
		if q, ok := podLevel[n]; ok {
			out[n] = q
		}
	}
	return out
}

func serviceUsage(s *corev1.Service) List {
	out := List{
		Services:              *resource.NewQuantity(1, resource.DecimalSI),
		ServicesLoadBalancers: {Format: resource.DecimalSI},
		ServicesNodePorts:     {Format: resource.DecimalSI},
	}
	ports := int64(len(s.GetSpec().GetPorts()))
	switch s.GetSpec().GetType() {
	case "NodePort":
		out[ServicesNodePorts] = *resource.NewQuantity(ports, resource.DecimalSI)
	case "LoadBalancer":
		if a := s.GetSpec().AllocateLoadBalancerNodePorts; a != nil && !*a {
			ports = 0
			for _, p := range s.GetSpec().GetPorts() {
				if p.GetNodePort() != 0 {
					ports++
				}
			}
		}
		out[ServicesNodePorts] = *resource.NewQuantity(ports, resource.DecimalSI)
		out[ServicesLoadBalancers] = *resource.NewQuantity(1, resource.DecimalSI)
	}
	return out
}

// ClaimStorageClass is upstream's GetPersistentVolumeClaimClass: the beta
// annotation first, then spec.storageClassName.
func ClaimStorageClass(c *corev1.PersistentVolumeClaim) string {
	if v, ok := c.GetMetadata().GetAnnotations()[storageClassAnnotation]; ok {
		return v
	}
	return c.GetSpec().GetStorageClassName()
}

func claimUsage(c *corev1.PersistentVolumeClaim) List {
	out := List{PersistentVolumeClaims: *resource.NewQuantity(1, resource.DecimalSI)}
	class := ClaimStorageClass(c)
	if class != "" {
		out[class+StorageClassSuffix+PersistentVolumeClaims] = *resource.NewQuantity(1, resource.DecimalSI)
	}
	// The larger of what is asked and what was allocated (an expansion
	// being lowered still holds the allocation).
	storage := Max(Mask(FromProto(c.GetSpec().GetResources().GetRequests()), []string{"storage"}),
		Mask(FromProto(c.GetStatus().GetAllocatedResources()), []string{"storage"}))
	if q, ok := storage["storage"]; ok {
		out[RequestsStorage] = q.DeepCopy()
		if class != "" {
			out[class+StorageClassSuffix+RequestsStorage] = q.DeepCopy()
		}
	}
	return out
}

// ScopeSelectors are a quota's scopes (each an Exists requirement) and its
// scopeSelector's expressions.
func ScopeSelectors(q *corev1.ResourceQuota) []*corev1.ScopedResourceSelectorRequirement {
	var out []*corev1.ScopedResourceSelectorRequirement
	for _, s := range q.GetSpec().GetScopes() {
		out = append(out, &corev1.ScopedResourceSelectorRequirement{ScopeName: s, Operator: "Exists"})
	}
	return append(out, q.GetSpec().GetScopeSelector().GetMatchExpressions()...)
}

// Matches says whether quota q governs obj: its hard limits name a
// resource obj is measured in, and each of its scopes selects obj. Scopes
// select only pods.
func Matches(q *corev1.ResourceQuota, k *scheme.Kind, obj scheme.Object) (bool, error) {
	hard := FromProto(q.GetStatus().GetHard())
	if len(MatchingResources(k, hard.Names())) == 0 {
		return false, nil
	}
	return MatchesScopes(ScopeSelectors(q), obj)
}

// MatchesScopes says whether every scope selects obj.
func MatchesScopes(scopes []*corev1.ScopedResourceSelectorRequirement, obj scheme.Object) (bool, error) {
	for _, s := range scopes {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return false, nil
		}
		m, err := PodMatchesScope(s, pod)
		if err != nil || !m {
			return false, err
		}
	}
	return true, nil
}

// PodMatchesScope is upstream's podMatchesScopeFunc.
func PodMatchesScope(s *corev1.ScopedResourceSelectorRequirement, p *corev1.Pod) (bool, error) {
	switch s.GetScopeName() {
	case ScopeTerminating:
		return isTerminating(p), nil
	case ScopeNotTerminating:
		return !isTerminating(p), nil
	case ScopeBestEffort:
		return IsBestEffort(p), nil
	case ScopeNotBestEffort:
		return !IsBestEffort(p), nil
	case ScopePriorityClass:
		pc := p.GetSpec().GetPriorityClassName()
		if s.GetOperator() == "Exists" {
			return pc != "", nil
		}
		sel, err := scopeAsSelector(s)
		if err != nil {
			return false, err
		}
		set := labels.Set{}
		if pc != "" {
			set[ScopePriorityClass] = pc
		}
		return sel.Matches(set), nil
	case ScopeCrossNamespacePodAffinity:
		return crossNamespaceAffinity(p), nil
	}
	return false, nil
}

func scopeAsSelector(s *corev1.ScopedResourceSelectorRequirement) (labels.Selector, error) {
	op, ok := metav1.SelectorOperator(s.GetOperator())
	if !ok {
		return nil, fmt.Errorf("%q is not a valid scope selector operator", s.GetOperator())
	}
	r, err := labels.NewRequirement(s.GetScopeName(), op, s.GetValues())
	if err != nil {
		return nil, err
	}
	return labels.NewSelector().Add(*r), nil
}

func isTerminating(p *corev1.Pod) bool {
	return p.GetSpec().ActiveDeadlineSeconds != nil && p.GetSpec().GetActiveDeadlineSeconds() >= 0
}

// IsBestEffort is upstream's QoS BestEffort: no container (nor the pod)
// requests or limits cpu or memory.
func IsBestEffort(p *corev1.Pod) bool {
	any := func(m map[string]*metav1.Quantity) bool {
		for n, q := range m {
			if n != CPU && n != Memory {
				continue
			}
			if v, err := resource.ParseQuantity(q.GetString_()); err == nil && !v.IsZero() {
				return true
			}
		}
		return false
	}
	spec := p.GetSpec()
	if any(spec.GetResources().GetRequests()) || any(spec.GetResources().GetLimits()) {
		return false
	}
	for _, c := range append(slices.Clone(spec.GetContainers()), spec.GetInitContainers()...) {
		if any(c.GetResources().GetRequests()) || any(c.GetResources().GetLimits()) {
			return false
		}
	}
	return true
}

func crossNamespaceAffinity(p *corev1.Pod) bool {
	a := p.GetSpec().GetAffinity()
	for _, t := range a.GetPodAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution() {
		if len(t.GetNamespaces()) > 0 || t.GetNamespaceSelector() != nil {
			return true
		}
	}
	for _, w := range a.GetPodAffinity().GetPreferredDuringSchedulingIgnoredDuringExecution() {
		if t := w.GetPodAffinityTerm(); len(t.GetNamespaces()) > 0 || t.GetNamespaceSelector() != nil {
			return true
		}
	}
	for _, t := range a.GetPodAntiAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution() {
		if len(t.GetNamespaces()) > 0 || t.GetNamespaceSelector() != nil {
			return true
		}
	}
	for _, w := range a.GetPodAntiAffinity().GetPreferredDuringSchedulingIgnoredDuringExecution() {
		if t := w.GetPodAffinityTerm(); len(t.GetNamespaces()) > 0 || t.GetNamespaceSelector() != nil {
			return true
		}
	}
	return false
}

// Constraints is upstream's pod evaluator Constraints: when a quota
// tracks cpu or memory (requests or limits), every container must state
// it. Other kinds have no constraints.
func Constraints(required []string, obj scheme.Object) error {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return nil
	}
	req := sets.New(required...).Intersection(podValidationSet)
	if req.Len() == 0 {
		return nil
	}
	missing := map[string]sets.Set[string]{}
	check := func(c *corev1.Container) {
		have := podComputeUsage(FromProto(c.GetResources().GetRequests()), FromProto(c.GetResources().GetLimits()))
		for _, r := range sets.List(req) {
			if _, ok := have[r]; !ok {
				if missing[r] == nil {
					missing[r] = sets.New[string]()
				}
				missing[r].Insert(c.GetName())
			}
		}
	}
	for _, c := range p.GetSpec().GetContainers() {
		check(c)
	}
	for _, c := range p.GetSpec().GetInitContainers() {
		check(c)
	}
	if len(missing) == 0 {
		return nil
	}
	names := make([]string, 0, len(missing))
	for r := range missing {
		names = append(names, r)
	}
	slices.Sort(names)
	msgs := make([]string, len(names))
	for i, r := range names {
		msgs[i] = fmt.Sprintf("%s for: %s", r, strings.Join(sets.List(missing[r]), ","))
	}
	return fmt.Errorf("must specify %s", strings.Join(msgs, "; "))
}

// Tally is what objs (all of kind k, in the quota's namespace) use of the
// resources hard names, for a quota with the given scopes: every such
// resource is present, zero when nothing uses it. The second result says
// whether the kind is measured in any of them.
func Tally(hard []string, scopes []*corev1.ScopedResourceSelectorRequirement, k *scheme.Kind, objs []scheme.Object, now time.Time) (List, bool, error) {
	names := MatchingResources(k, hard)
	if len(names) == 0 {
		return nil, false, nil
	}
	out := List{}
	for _, n := range names {
		out[n] = resource.Quantity{Format: resource.DecimalSI}
	}
	for _, o := range objs {
		m, err := MatchesScopes(scopes, o)
		if err != nil {
			return nil, true, err
		}
		if !m {
			continue
		}
		out = Add(out, Mask(Usage(k, o, now), names))
	}
	return out, true, nil
}

// TrackedKinds are the kinds quota hard names point to: the core kinds of
// the named resources, and the kinds of count/ names.
func TrackedKinds(hard []string) []*scheme.Kind {
	seen := map[*scheme.Kind]bool{}
	var out []*scheme.Kind
	add := func(k *scheme.Kind) {
		if k != nil && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, n := range hard {
		if k, ok := KindForCountName(n); ok {
			add(k)
			continue
		}
		for _, res := range []string{"pods", "services", "persistentvolumeclaims", "configmaps", "secrets", "replicationcontrollers", "resourcequotas"} {
			k, ok := scheme.ForResource("", res)
			if ok && len(MatchingResources(k, []string{n})) > 0 {
				add(k)
			}
		}
	}
	return out
}
