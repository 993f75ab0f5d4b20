// Package limitranger is upstream's LimitRanger admission plugin: the
// LimitRanges of a namespace give its containers default requests and
// limits, and bound what containers, pods and claims may ask for.
//
//   - Admit (pods, on create): each container and init container without
//     a request or limit for a resource a Container-type LimitRange
//     defaults gets the default, and the pod is annotated
//     kubernetes.io/limit-ranger with what was set.
//   - Validate: min, max and maxLimitRequestRatio of Container items per
//     container, of Pod items over the pod's total, and min and max of
//     PersistentVolumeClaim items over a claim's storage request, with
//     upstream's messages ("maximum cpu usage per Container is 1, but
//     limit is 2").
//
// Upstream defaults a LimitRangeItem of type Container when it is stored
// (a max is the default limit, a default limit the default request, a min
// the default request); Skiff stores items as written and applies that
// defaulting here, when the defaults are used, to the same effect on pods.
package limitranger

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"

	"skiff.dev/apiserver/internal/admission"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/quota"
)

// PluginName is upstream's name for it.
const PluginName = "LimitRanger"

// Annotation records the defaults the plugin set on a pod.
const Annotation = "kubernetes.io/limit-ranger"

// The LimitRangeItem types.
const (
	TypeContainer = "Container"
	TypePod       = "Pod"
	TypeClaim     = "PersistentVolumeClaim"
)

// Store lists a namespace's LimitRanges (shared objects: not modified).
type Store interface {
	LimitRanges(ctx context.Context, namespace string) ([]*corev1.LimitRange, error)
}

// Plugin is the LimitRanger plugin.
type Plugin struct {
	store Store
}

// New returns the plugin; SetStore must be called before it admits.
func New() *Plugin { return &Plugin{} }

// SetStore is the server's hook, once the registry exists.
func (p *Plugin) SetStore(s Store) { p.store = s }

// Name is PluginName.
func (p *Plugin) Name() string { return PluginName }

// Handles creates and updates.
func (p *Plugin) Handles(op admission.Operation) bool {
	return op == admission.Create || op == admission.Update
}

// supports is upstream's SupportsAttributes: pods (not their updates,
// whose containers cannot change) and claims, no subresources.
func supports(a *admission.Attributes) bool {
	if a.Subresource != "" || a.Kind == nil || a.Kind.Group != "" || a.Object == nil {
		return false
	}
	switch a.Kind.Kind {
	case "Pod":
		return a.Operation == admission.Create
	case "PersistentVolumeClaim":
		return true
	}
	return false
}

func (p *Plugin) ranges(ctx context.Context, ns string) ([]*corev1.LimitRange, error) {
	if p.store == nil {
		return nil, apierrors.NewInternal(fmt.Errorf("%s: no LimitRange store", PluginName))
	}
	return p.store.LimitRanges(ctx, ns)
}

// Admit sets default requests and limits on a new pod's containers.
func (p *Plugin) Admit(ctx context.Context, a *admission.Attributes) error {
	pod, ok := a.Object.(*corev1.Pod)
	if !ok || !supports(a) {
		return nil
	}
	lrs, err := p.ranges(ctx, a.Namespace)
	if err != nil {
		return err
	}
	for _, lr := range lrs {
		SetDefaults(lr, pod)
	}
	return nil
}

// Validate checks the object against every LimitRange of its namespace.
func (p *Plugin) Validate(ctx context.Context, a *admission.Attributes) error {
	if !supports(a) {
		return nil
	}
	lrs, err := p.ranges(ctx, a.Namespace)
	if err != nil {
		return err
	}
	var errs []error
	for _, lr := range lrs {
		switch o := a.Object.(type) {
		case *corev1.Pod:
			errs = append(errs, ValidatePod(lr, o)...)
		case *corev1.PersistentVolumeClaim:
			errs = append(errs, ValidateClaim(lr, o)...)
		}
	}
	if err := utilerrors.NewAggregate(errs); err != nil {
		return apierrors.NewForbidden(a.Kind.GroupResource(), a.Name, err.Error())
	}
	return nil
}

// containerDefaults are the default requests and limits of lr's Container
// items, with upstream's defaulting of the items applied.
func containerDefaults(lr *corev1.LimitRange) (requests, limits quota.List) {
	requests, limits = quota.List{}, quota.List{}
	for _, it := range lr.GetSpec().GetLimits() {
		if it.GetType() != TypeContainer {
			continue
		}
		def := quota.FromProto(it.GetDefault())
		for k, v := range quota.FromProto(it.GetMax()) {
			if _, ok := def[k]; !ok {
				def[k] = v
			}
		}
		defReq := quota.FromProto(it.GetDefaultRequest())
		for k, v := range def {
			if _, ok := defReq[k]; !ok {
				defReq[k] = v
			}
		}
		for k, v := range quota.FromProto(it.GetMin()) {
			if _, ok := defReq[k]; !ok {
				defReq[k] = v
			}
		}
		maps(limits, def)
		maps(requests, defReq)
	}
	return requests, limits
}

func maps(dst, src quota.List) {
	for k, v := range src {
		dst[k] = v
	}
}

// SetDefaults is upstream's mergePodResourceRequirements.
func SetDefaults(lr *corev1.LimitRange, pod *corev1.Pod) {
	reqs, lims := containerDefaults(lr)
	if len(reqs)+len(lims) == 0 || pod.GetSpec() == nil {
		return
	}
	var notes []string
	merge := func(c *corev1.Container, what string) {
		if c.Resources == nil {
			c.Resources = &corev1.ResourceRequirements{}
		}
		var setReq, setLim []string
		if c.Resources.Limits == nil {
			c.Resources.Limits = map[string]*metav1.Quantity{}
		}
		if c.Resources.Requests == nil {
			c.Resources.Requests = map[string]*metav1.Quantity{}
		}
		for _, k := range lims.Names() {
			if _, ok := c.Resources.Limits[k]; !ok {
				v := lims[k]
				c.Resources.Limits[k] = &metav1.Quantity{String_: v.String()}
				setLim = append(setLim, k)
			}
		}
		for _, k := range reqs.Names() {
			if _, ok := c.Resources.Requests[k]; !ok {
				v := reqs[k]
				c.Resources.Requests[k] = &metav1.Quantity{String_: v.String()}
				setReq = append(setReq, k)
			}
		}
		if len(setReq) > 0 {
			notes = append(notes, strings.Join(setReq, ", ")+fmt.Sprintf(" request for %s %s", what, c.GetName()))
		}
		if len(setLim) > 0 {
			notes = append(notes, strings.Join(setLim, ", ")+fmt.Sprintf(" limit for %s %s", what, c.GetName()))
		}
	}
	for _, c := range pod.Spec.Containers {
		merge(c, "container")
	}
	for _, c := range pod.Spec.InitContainers {
		merge(c, "init container")
	}
	if len(notes) > 0 {
		if pod.Metadata.Annotations == nil {
			pod.Metadata.Annotations = map[string]string{}
		}
		pod.Metadata.Annotations[Annotation] = "LimitRanger plugin set: " + strings.Join(notes, "; ")
	}
}

// ValidatePod is upstream's PodValidateLimitFunc.
func ValidatePod(lr *corev1.LimitRange, pod *corev1.Pod) []error {
	var errs []error
	for _, it := range lr.GetSpec().GetLimits() {
		typ := it.GetType()
		switch typ {
		case TypeContainer:
			all := append(slices.Clone(pod.GetSpec().GetContainers()), pod.GetSpec().GetInitContainers()...)
			for _, c := range all {
				errs = append(errs, checkItem(it, typ, quota.FromProto(c.GetResources().GetRequests()), quota.FromProto(c.GetResources().GetLimits()))...)
			}
		case TypePod:
			errs = append(errs, checkItem(it, typ, quota.PodRequests(pod), quota.PodLimits(pod))...)
		}
	}
	return errs
}

func checkItem(it *corev1.LimitRangeItem, typ string, req, lim quota.List) []error {
	var errs []error
	mins, maxs, ratios := quota.FromProto(it.GetMin()), quota.FromProto(it.GetMax()), quota.FromProto(it.GetMaxLimitRequestRatio())
	for _, k := range mins.Names() {
		if err := minConstraint(typ, k, mins[k], req, lim); err != nil {
			errs = append(errs, err)
		}
	}
	for _, k := range maxs.Names() {
		if err := maxConstraint(typ, k, maxs[k], req, lim); err != nil {
			errs = append(errs, err)
		}
	}
	for _, k := range ratios.Names() {
		if err := ratioConstraint(typ, k, ratios[k], req, lim); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// ValidateClaim is upstream's PersistentVolumeClaimValidateLimitFunc:
// bounds on what a claim requests (its limits are not user input).
func ValidateClaim(lr *corev1.LimitRange, c *corev1.PersistentVolumeClaim) []error {
	var errs []error
	req := quota.FromProto(c.GetSpec().GetResources().GetRequests())
	for _, it := range lr.GetSpec().GetLimits() {
		if it.GetType() != TypeClaim {
			continue
		}
		mins, maxs := quota.FromProto(it.GetMin()), quota.FromProto(it.GetMax())
		for _, k := range mins.Names() {
			if err := minConstraint(TypeClaim, k, mins[k], req, quota.List{}); err != nil {
				errs = append(errs, err)
			}
		}
		for _, k := range maxs.Names() {
			if err := maxRequestConstraint(TypeClaim, k, maxs[k], req); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// values compares in milli-units when none overflows them, as upstream.
func values(req, lim, enforced resource.Quantity) (int64, int64, int64) {
	r, l, e := req.Value(), lim.Value(), enforced.Value()
	if r <= resource.MaxMilliValue && l <= resource.MaxMilliValue && e <= resource.MaxMilliValue {
		return req.MilliValue(), lim.MilliValue(), enforced.MilliValue()
	}
	return r, l, e
}

func minConstraint(typ, name string, enforced resource.Quantity, req, lim quota.List) error {
	rq, hasReq := req[name]
	lq, hasLim := lim[name]
	r, l, e := values(rq, lq, enforced)
	if !hasReq {
		return fmt.Errorf("minimum %s usage per %s is %s.  No request is specified", name, typ, enforced.String())
	}
	if r < e {
		return fmt.Errorf("minimum %s usage per %s is %s, but request is %s", name, typ, enforced.String(), rq.String())
	}
	if hasLim && l < e {
		return fmt.Errorf("minimum %s usage per %s is %s, but limit is %s", name, typ, enforced.String(), lq.String())
	}
	return nil
}

func maxConstraint(typ, name string, enforced resource.Quantity, req, lim quota.List) error {
	rq, hasReq := req[name]
	lq, hasLim := lim[name]
	r, l, e := values(rq, lq, enforced)
	if !hasLim {
		return fmt.Errorf("maximum %s usage per %s is %s.  No limit is specified", name, typ, enforced.String())
	}
	if l > e {
		return fmt.Errorf("maximum %s usage per %s is %s, but limit is %s", name, typ, enforced.String(), lq.String())
	}
	if hasReq && r > e {
		return fmt.Errorf("maximum %s usage per %s is %s, but request is %s", name, typ, enforced.String(), rq.String())
	}
	return nil
}

func maxRequestConstraint(typ, name string, enforced resource.Quantity, req quota.List) error {
	rq, hasReq := req[name]
	r, _, e := values(rq, resource.Quantity{}, enforced)
	if !hasReq {
		return fmt.Errorf("maximum %s usage per %s is %s.  No request is specified", name, typ, enforced.String())
	}
	if r > e {
		return fmt.Errorf("maximum %s usage per %s is %s, but request is %s", name, typ, enforced.String(), rq.String())
	}
	return nil
}

func ratioConstraint(typ, name string, enforced resource.Quantity, req, lim quota.List) error {
	rq, hasReq := req[name]
	lq, hasLim := lim[name]
	r, l, _ := values(rq, lq, enforced)
	if !hasReq || r == 0 {
		return fmt.Errorf("%s max limit to request ratio per %s is %s, but no request is specified or request is 0", name, typ, enforced.String())
	}
	if !hasLim || l == 0 {
		return fmt.Errorf("%s max limit to request ratio per %s is %s, but no limit is specified or limit is 0", name, typ, enforced.String())
	}
	observed := float64(l) / float64(r)
	shown := observed
	max := float64(enforced.Value())
	if enforced.Value() <= resource.MaxMilliValue {
		observed *= 1000
		max = float64(enforced.MilliValue())
	}
	if observed > max {
		return fmt.Errorf("%s max limit to request ratio per %s is %s, but provided ratio is %f", name, typ, enforced.String(), shown)
	}
	return nil
}
