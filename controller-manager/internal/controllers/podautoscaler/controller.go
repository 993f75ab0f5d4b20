// Package podautoscaler is upstream's horizontal pod autoscaler
// controller for autoscaling/v2: every sync period it reads each HPA's
// target scale and its pods' resource metrics (metrics.k8s.io), computes
// ceil(currentReplicas × current/target) with upstream's replica
// calculator, stabilizes and rate-limits the proposal by the HPA's
// behavior, scales the target and writes the HPA's status.
package podautoscaler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Name is upstream's canonical controller name.
const Name = "horizontal-pod-autoscaler-controller"

const component = "horizontal-pod-autoscaler"

// Options are upstream's --horizontal-pod-autoscaler-* flags.
type Options struct {
	SyncPeriod              time.Duration // --horizontal-pod-autoscaler-sync-period
	Tolerance               float64       // --horizontal-pod-autoscaler-tolerance
	DownscaleStabilization  time.Duration // --horizontal-pod-autoscaler-downscale-stabilization
	CPUInitializationPeriod time.Duration // --horizontal-pod-autoscaler-cpu-initialization-period
	InitialReadinessDelay   time.Duration // --horizontal-pod-autoscaler-initial-readiness-delay
	Workers                 int           // --concurrent-horizontal-pod-autoscaler-syncs
}

// DefaultOptions are upstream's defaults.
func DefaultOptions() Options {
	return Options{SyncPeriod: 15 * time.Second, Tolerance: 0.1, DownscaleStabilization: 5 * time.Minute,
		CPUInitializationPeriod: 5 * time.Minute, InitialReadinessDelay: 30 * time.Second, Workers: 5}
}

// Controller is the HPA controller.
type Controller struct {
	client   *client.Client
	hpas     informers.Lister[*autoscalingv2.HorizontalPodAutoscaler]
	synced   []informer.Registration
	queue    workqueue.Queue
	recorder record.Recorder
	log      *slog.Logger
	now      func() time.Time
	opts     Options

	scales ScaleClient
	calc   *ReplicaCalculator
	rec    *recommender
}

// New is the Constructor with upstream's default flags.
func New(cc controllers.Context) (controllers.Controller, error) {
	o := DefaultOptions()
	o.Workers = cc.WorkersFor("horizontalpodautoscaler", o.Workers)
	if cc.Options != nil {
		h := cc.Options.HPA
		if h.SyncPeriod > 0 {
			o.SyncPeriod = h.SyncPeriod
		}
		if h.DownscaleStabilization > 0 {
			o.DownscaleStabilization = h.DownscaleStabilization
		}
		if h.CPUInitializationPeriod > 0 {
			o.CPUInitializationPeriod = h.CPUInitializationPeriod
		}
		if h.InitialReadinessDelay > 0 {
			o.InitialReadinessDelay = h.InitialReadinessDelay
		}
		// A tolerance is only ever set from the flag, whose default is
		// upstream's: zero is a choice, not an absence.
		if h != (controllers.HPAOptions{}) {
			o.Tolerance = h.Tolerance
		}
	}
	return NewWithOptions(cc, o, nil, nil)
}

// NewWithOptions builds the controller; metrics and scales nil read
// metrics.k8s.io and the targets through cc.Client.
func NewWithOptions(cc controllers.Context, o Options, metrics MetricsClient, scales ScaleClient) (*Controller, error) {
	d := DefaultOptions()
	if o.SyncPeriod <= 0 {
		o.SyncPeriod = d.SyncPeriod
	}
	if o.Workers <= 0 {
		o.Workers = d.Workers
	}
	if o.Tolerance < 0 {
		return nil, fmt.Errorf("--horizontal-pod-autoscaler-tolerance: %v must not be negative", o.Tolerance)
	}
	log := cc.Log()
	now := cc.Clock()
	if metrics == nil {
		metrics = NewMetricsClient(cc.Client)
	}
	if scales == nil {
		scales = objectScales{cc.Client}
	}
	hpas := informers.For[*autoscalingv2.HorizontalPodAutoscaler](cc.Informers)
	pods := informers.For[*corev1.Pod](cc.Informers)
	podLister := pods.Lister()
	c := &Controller{
		client: cc.Client, hpas: hpas.Lister(), recorder: cc.EventRecorder(component), log: log, now: now, opts: o,
		queue:  workqueue.NewWithMetrics("horizontalpodautoscaler", cc.Registerer),
		scales: scales,
		calc: &ReplicaCalculator{metrics: metrics, now: now,
			pods:                          func(ns string, sel labels.Selector) []*corev1.Pod { return podLister.Namespace(ns).List(sel) },
			cpuInitializationPeriod:       o.CPUInitializationPeriod,
			delayOfInitialReadinessStatus: o.InitialReadinessDelay},
		rec: newRecommender(now, o.DownscaleStabilization),
	}
	enqueue := func(obj scheme.Object) { c.queue.Add(controller.KeyFunc(obj)) }
	c.synced = []informer.Registration{
		hpas.Informer().AddHandler(informer.Handler{
			OnAdd: enqueue,
			OnUpdate: func(old, cur scheme.Object) {
				// Our own status writes need no sync; spec changes do.
				if !proto.Equal(old.(*autoscalingv2.HorizontalPodAutoscaler).GetSpec(), cur.(*autoscalingv2.HorizontalPodAutoscaler).GetSpec()) {
					enqueue(cur)
				}
			},
			OnDelete: func(obj scheme.Object) {
				key := controller.KeyFunc(obj)
				c.rec.forget(key)
			},
		}),
		pods.Informer().AddHandler(informer.Handler{}),
	}
	return c, nil
}

// Name is upstream's controller name.
func (c *Controller) Name() string { return Name }

// Run syncs every HPA each sync period until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	go controllers.ResyncEvery(ctx, c.opts.SyncPeriod, c.queue, c.hpas)
	return controllers.RunQueue(ctx, c.log, c.queue, c.opts.Workers, c.reconcile, c.synced...)
}

func (c *Controller) reconcile(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	cached, err := c.hpas.Get(ns, name)
	if apierrors.ReasonOf(err) == apierrors.ReasonNotFound {
		c.rec.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	hpa := proto.Clone(cached).(*autoscalingv2.HorizontalPodAutoscaler)
	return c.reconcileAutoscaler(ctx, hpa, key)
}

// reconcileAutoscaler is upstream's: read the scale, compute, normalize,
// rescale, write status.
func (c *Controller) reconcileAutoscaler(ctx context.Context, hpa *autoscalingv2.HorizontalPodAutoscaler, key string) error {
	original := proto.Clone(hpa.GetStatus()).(*autoscalingv2.HorizontalPodAutoscalerStatus)
	if hpa.Status == nil {
		hpa.Status = &autoscalingv2.HorizontalPodAutoscalerStatus{}
	}
	ref := hpa.GetSpec().GetScaleTargetRef()
	reference := fmt.Sprintf("%s/%s/%s", ref.GetKind(), hpa.GetMetadata().GetNamespace(), ref.GetName())
	ns := hpa.GetMetadata().GetNamespace()

	k, ok := scheme.ForGVK(ref.GetApiVersion(), ref.GetKind())
	if !ok || !hasScale(k) {
		err := fmt.Errorf("no scale subresource for %s %s", ref.GetApiVersion(), ref.GetKind())
		return c.failGetScale(ctx, hpa, original, reference, err)
	}
	scale, err := c.scales.Get(ctx, k, ns, ref.GetName())
	if err != nil {
		return c.failGetScale(ctx, hpa, original, reference, err)
	}
	c.setCondition(hpa, "AbleToScale", "True", "SucceededGetScale", "the HPA controller was able to get the target's current scale")
	currentReplicas := scale.SpecReplicas
	c.rec.recordInitial(key, currentReplicas)

	var (
		metricStatuses  []*autoscalingv2.MetricStatus
		desiredReplicas int32
		rescaleReason   string
		retErr          error
	)
	minReplicas := int32(1)
	if hpa.GetSpec().MinReplicas != nil {
		minReplicas = hpa.GetSpec().GetMinReplicas()
	}
	maxReplicas := hpa.GetSpec().GetMaxReplicas()
	rescale := true
	switch {
	case scale.SpecReplicas == 0 && minReplicas != 0:
		desiredReplicas, rescale = 0, false
		c.setCondition(hpa, "ScalingActive", "False", "ScalingDisabled", "scaling is disabled since the replica count of the target is zero")
	case currentReplicas > maxReplicas:
		rescaleReason = "Current number of replicas above Spec.MaxReplicas"
		desiredReplicas = maxReplicas
	case currentReplicas < minReplicas:
		rescaleReason = "Current number of replicas below Spec.MinReplicas"
		desiredReplicas = minReplicas
	default:
		metricDesired, metricName, statuses, err := c.computeReplicasForMetrics(ctx, hpa, scale, hpa.GetSpec().GetMetrics())
		metricStatuses = statuses
		if err != nil && metricDesired == -1 {
			c.setStatus(hpa, currentReplicas, hpa.GetStatus().GetDesiredReplicas(), metricStatuses, false)
			if uerr := c.updateStatusIfNeeded(ctx, original, hpa); uerr != nil {
				retErr = uerr
			}
			c.recorder.Event(hpa, record.Warning, "FailedComputeMetricsReplicas", err.Error())
			return errors.Join(fmt.Errorf("failed to compute desired number of replicas based on listed metrics for %s: %w", reference, err), retErr)
		}
		if err != nil {
			retErr = err // some metrics failed; act on the others
		}
		rescaleMetric := ""
		if metricDesired > desiredReplicas {
			desiredReplicas, rescaleMetric = metricDesired, metricName
		}
		if desiredReplicas > currentReplicas {
			rescaleReason = fmt.Sprintf("%s above target", rescaleMetric)
		}
		if desiredReplicas < currentReplicas {
			rescaleReason = "All metrics below target"
		}
		if hpa.GetSpec().GetBehavior() == nil {
			desiredReplicas = c.normalizeDesiredReplicas(hpa, key, currentReplicas, desiredReplicas, minReplicas)
		} else {
			desiredReplicas = c.normalizeDesiredReplicasWithBehaviors(hpa, key, currentReplicas, desiredReplicas, minReplicas)
		}
		rescale = desiredReplicas != currentReplicas
	}

	if rescale {
		next := *scale
		next.SpecReplicas = desiredReplicas
		if err := c.scales.Update(ctx, k, ns, ref.GetName(), &next); err != nil {
			c.recorder.Eventf(hpa, record.Warning, "FailedRescale", "New size: %d; reason: %s; error: %v", desiredReplicas, rescaleReason, err.Error())
			c.setCondition(hpa, "AbleToScale", "False", "FailedUpdateScale", fmt.Sprintf("the HPA controller was unable to update the target scale: %v", err))
			c.setStatus(hpa, currentReplicas, hpa.GetStatus().GetDesiredReplicas(), metricStatuses, false)
			if uerr := c.updateStatusIfNeeded(ctx, original, hpa); uerr != nil {
				return errors.Join(fmt.Errorf("failed to rescale %s: %w", reference, err), uerr)
			}
			return fmt.Errorf("failed to rescale %s: %w", reference, err)
		}
		c.setCondition(hpa, "AbleToScale", "True", "SucceededRescale", fmt.Sprintf("the HPA controller was able to update the target scale to %d", desiredReplicas))
		c.recorder.Eventf(hpa, record.Normal, "SuccessfulRescale", "New size: %d; reason: %s", desiredReplicas, rescaleReason)
		c.rec.storeScaleEvent(c.behavior(hpa), key, currentReplicas, desiredReplicas)
		c.log.Info("Successful rescale", "hpa", key, "currentReplicas", currentReplicas, "desiredReplicas", desiredReplicas, "reason", rescaleReason)
	} else {
		desiredReplicas = currentReplicas
	}
	c.setStatus(hpa, currentReplicas, desiredReplicas, metricStatuses, rescale)
	return errors.Join(retErr, c.updateStatusIfNeeded(ctx, original, hpa))
}

func (c *Controller) failGetScale(ctx context.Context, hpa *autoscalingv2.HorizontalPodAutoscaler, original *autoscalingv2.HorizontalPodAutoscalerStatus, reference string, err error) error {
	c.recorder.Event(hpa, record.Warning, "FailedGetScale", err.Error())
	c.setCondition(hpa, "AbleToScale", "False", "FailedGetScale", fmt.Sprintf("the HPA controller was unable to get the target's current scale: %v", err))
	uerr := c.updateStatusIfNeeded(ctx, original, hpa)
	return errors.Join(fmt.Errorf("unable to determine resource for scale target reference: %w", err), uerr)
}

func hasScale(k *scheme.Kind) bool {
	for _, s := range k.Subresources {
		if s == "scale" {
			return true
		}
	}
	return false
}

// behavior is the HPA's behavior with defaults filled in, nil without one.
func (c *Controller) behavior(hpa *autoscalingv2.HorizontalPodAutoscaler) *autoscalingv2.HorizontalPodAutoscalerBehavior {
	if hpa.GetSpec().GetBehavior() == nil {
		return nil
	}
	return withDefaults(hpa.GetSpec().GetBehavior(), c.opts.DownscaleStabilization)
}

// tolerances are the flag's, or behavior's per direction where set.
func (c *Controller) tolerances(hpa *autoscalingv2.HorizontalPodAutoscaler) tolerances {
	t := tolerances{c.opts.Tolerance, c.opts.Tolerance}
	parse := func(q *metav1.Quantity, into *float64) {
		if q == nil {
			return
		}
		if v, err := resource.ParseQuantity(q.GetString_()); err == nil {
			*into = v.AsApproximateFloat64()
		}
	}
	b := hpa.GetSpec().GetBehavior()
	parse(b.GetScaleDown().GetTolerance(), &t.scaleDown)
	parse(b.GetScaleUp().GetTolerance(), &t.scaleUp)
	return t
}

func (c *Controller) computeReplicasForMetrics(ctx context.Context, hpa *autoscalingv2.HorizontalPodAutoscaler, scale *Scale, specs []*autoscalingv2.MetricSpec) (int32, string, []*autoscalingv2.MetricStatus, error) {
	selector, err := c.validateAndParseSelector(hpa, scale.Selector)
	if err != nil {
		return -1, "", nil, err
	}
	statuses := make([]*autoscalingv2.MetricStatus, len(specs))
	var (
		replicas      int32
		metric        string
		invalidCount  int
		invalidErr    error
		invalidReason string
		invalidMsg    string
	)
	for i, spec := range specs {
		statuses[i] = &autoscalingv2.MetricStatus{}
		proposal, name, reason, msg, err := c.computeReplicasForMetric(ctx, hpa, spec, scale.SpecReplicas, selector, statuses[i])
		if err != nil {
			if invalidCount == 0 {
				invalidErr, invalidReason, invalidMsg = err, reason, msg
			}
			invalidCount++
			continue
		}
		if replicas == 0 || proposal > replicas {
			replicas, metric = proposal, name
		}
	}
	if invalidErr != nil {
		invalidErr = fmt.Errorf("invalid metrics (%v invalid out of %v), first error is: %w", invalidCount, len(specs), invalidErr)
	}
	// All invalid, or some invalid while the others would scale down.
	if invalidCount >= len(specs) || (invalidCount > 0 && replicas < scale.SpecReplicas) {
		c.setCondition(hpa, "ScalingActive", "False", invalidReason, invalidMsg)
		return -1, "", statuses, invalidErr
	}
	c.setCondition(hpa, "ScalingActive", "True", "ValidMetricFound", fmt.Sprintf("the HPA was able to successfully calculate a replica count from %s", metric))
	return replicas, metric, statuses, invalidErr
}

func (c *Controller) validateAndParseSelector(hpa *autoscalingv2.HorizontalPodAutoscaler, selector string) (labels.Selector, error) {
	if selector == "" {
		msg := "selector is required"
		c.recorder.Event(hpa, record.Warning, "SelectorRequired", msg)
		c.setCondition(hpa, "ScalingActive", "False", "InvalidSelector", "the HPA target's scale is missing a selector")
		return nil, errors.New(msg)
	}
	sel, err := labels.Parse(selector)
	if err != nil {
		msg := fmt.Sprintf("couldn't convert selector into a corresponding internal selector object: %v", err)
		c.recorder.Event(hpa, record.Warning, "InvalidSelector", msg)
		c.setCondition(hpa, "ScalingActive", "False", "InvalidSelector", msg)
		return nil, errors.New(msg)
	}
	return sel, nil
}

// computeReplicasForMetric handles Resource and ContainerResource metrics;
// on failure it returns the ScalingActive reason and message to set.
func (c *Controller) computeReplicasForMetric(ctx context.Context, hpa *autoscalingv2.HorizontalPodAutoscaler, spec *autoscalingv2.MetricSpec, specReplicas int32, selector labels.Selector, status *autoscalingv2.MetricStatus) (int32, string, string, string, error) {
	unable := func(reason string, err error) (int32, string, string, string, error) {
		c.recorder.Event(hpa, record.Warning, reason, err.Error())
		return 0, "", reason, fmt.Sprintf("the HPA was unable to compute the replica count: %v", err), err
	}
	switch spec.GetType() {
	case "Resource":
		r := spec.GetResource()
		proposal, value, name, err := c.computeResource(ctx, hpa, specReplicas, r.GetTarget(), r.GetName(), "", selector)
		if err != nil {
			return unable("FailedGetResourceMetric", fmt.Errorf("failed to get %s resource metric value: %w", r.GetName(), err))
		}
		*status = autoscalingv2.MetricStatus{Type: "Resource", Resource: &autoscalingv2.ResourceMetricStatus{Name: r.GetName(), Current: value}}
		return proposal, name, "", "", nil
	case "ContainerResource":
		r := spec.GetContainerResource()
		proposal, value, name, err := c.computeResource(ctx, hpa, specReplicas, r.GetTarget(), r.GetName(), r.GetContainer(), selector)
		if err != nil {
			return unable("FailedGetContainerResourceMetric", fmt.Errorf("failed to get %s container metric value: %w", r.GetName(), err))
		}
		*status = autoscalingv2.MetricStatus{Type: "ContainerResource", ContainerResource: &autoscalingv2.ContainerResourceMetricStatus{
			Name: r.GetName(), Container: r.GetContainer(), Current: value}}
		return proposal, name, "", "", nil
	}
	// Pods, Object and External metrics need a custom or external
	// metrics API, which Skiff does not serve.
	return unable("InvalidMetricSourceType", fmt.Errorf("unknown metric source type %q", spec.GetType()))
}

func (c *Controller) computeResource(ctx context.Context, hpa *autoscalingv2.HorizontalPodAutoscaler, specReplicas int32, target *autoscalingv2.MetricTarget, res, container string, selector labels.Selector) (int32, *autoscalingv2.MetricValueStatus, string, error) {
	ns := hpa.GetMetadata().GetNamespace()
	tol := c.tolerances(hpa)
	if target.GetAverageValue() != nil {
		q, err := resource.ParseQuantity(target.GetAverageValue().GetString_())
		if err != nil {
			return 0, nil, "", fmt.Errorf("invalid average value target %q: %w", target.GetAverageValue().GetString_(), err)
		}
		proposal, usage, _, err := c.calc.GetRawResourceReplicas(ctx, specReplicas, q.MilliValue(), res, tol, ns, selector, container)
		if err != nil {
			return 0, nil, "", fmt.Errorf("failed to get %s usage: %w", res, err)
		}
		return proposal, &autoscalingv2.MetricValueStatus{AverageValue: milliQuantity(usage)}, fmt.Sprintf("%s resource", res), nil
	}
	if target.AverageUtilization == nil {
		return 0, nil, "", errors.New("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set")
	}
	proposal, utilization, raw, _, err := c.calc.GetResourceReplicas(ctx, specReplicas, target.GetAverageUtilization(), res, tol, ns, selector, container)
	if err != nil {
		return 0, nil, "", fmt.Errorf("failed to get %s utilization: %w", res, err)
	}
	name := fmt.Sprintf("%s resource utilization (percentage of request)", res)
	if container != "" {
		name = fmt.Sprintf("%s container resource utilization (percentage of request)", res)
	}
	return proposal, &autoscalingv2.MetricValueStatus{AverageUtilization: &utilization, AverageValue: milliQuantity(raw)}, name, nil
}

func milliQuantity(v int64) *metav1.Quantity {
	return &metav1.Quantity{String_: resource.NewMilliQuantity(v, resource.DecimalSI).String()}
}

// normalizeDesiredReplicas is upstream's path without behavior.
func (c *Controller) normalizeDesiredReplicas(hpa *autoscalingv2.HorizontalPodAutoscaler, key string, current, prenormalized, minReplicas int32) int32 {
	stabilized := c.rec.stabilize(key, prenormalized)
	if stabilized != prenormalized {
		c.setCondition(hpa, "AbleToScale", "True", "ScaleDownStabilized", "recent recommendations were higher than current one, applying the highest recent recommendation")
	} else {
		c.setCondition(hpa, "AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
	}
	desired, reason, msg := convertWithRules(current, stabilized, minReplicas, hpa.GetSpec().GetMaxReplicas())
	limited := "False"
	if desired != stabilized {
		limited = "True"
	}
	c.setCondition(hpa, "ScalingLimited", limited, reason, msg)
	return desired
}

// normalizeDesiredReplicasWithBehaviors is upstream's path with behavior.
func (c *Controller) normalizeDesiredReplicasWithBehaviors(hpa *autoscalingv2.HorizontalPodAutoscaler, key string, current, prenormalized, minReplicas int32) int32 {
	b := c.behavior(hpa)
	arg := normalizationArg{key: key, scaleUp: b.GetScaleUp(), scaleDown: b.GetScaleDown(), minReplicas: minReplicas,
		maxReplicas: hpa.GetSpec().GetMaxReplicas(), currentReplicas: current, desiredReplicas: prenormalized}
	stabilized, reason, msg := c.rec.stabilizeWithBehaviors(arg)
	arg.desiredReplicas = stabilized
	if stabilized != prenormalized {
		c.setCondition(hpa, "AbleToScale", "True", reason, msg)
	} else {
		c.setCondition(hpa, "AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
	}
	desired, reason, msg := c.rec.convertWithBehaviorRate(arg)
	limited := "False"
	if desired != stabilized {
		limited = "True"
	}
	c.setCondition(hpa, "ScalingLimited", limited, reason, msg)
	return desired
}

func (c *Controller) setStatus(hpa *autoscalingv2.HorizontalPodAutoscaler, current, desired int32, metrics []*autoscalingv2.MetricStatus, rescale bool) {
	st := hpa.GetStatus()
	gen := hpa.GetMetadata().GetGeneration()
	hpa.Status = &autoscalingv2.HorizontalPodAutoscalerStatus{
		ObservedGeneration: &gen, CurrentReplicas: current, DesiredReplicas: desired,
		LastScaleTime: st.GetLastScaleTime(), CurrentMetrics: metrics, Conditions: st.GetConditions(),
	}
	if rescale {
		hpa.Status.LastScaleTime = metav1.NewTime(c.now())
	}
}

// setCondition is upstream's setConditionInList: the transition time
// moves only when the status does.
func (c *Controller) setCondition(hpa *autoscalingv2.HorizontalPodAutoscaler, typ, status, reason, message string) {
	if hpa.Status == nil {
		hpa.Status = &autoscalingv2.HorizontalPodAutoscalerStatus{}
	}
	var cond *autoscalingv2.HorizontalPodAutoscalerCondition
	for _, cd := range hpa.Status.Conditions {
		if cd.GetType() == typ {
			cond = cd
		}
	}
	if cond == nil {
		cond = &autoscalingv2.HorizontalPodAutoscalerCondition{Type: typ}
		hpa.Status.Conditions = append(hpa.Status.Conditions, cond)
	}
	if cond.Status != status || cond.LastTransitionTime == nil {
		cond.LastTransitionTime = metav1.NewTime(c.now())
	}
	cond.Status, cond.Reason, cond.Message = status, reason, message
}

func (c *Controller) updateStatusIfNeeded(ctx context.Context, old *autoscalingv2.HorizontalPodAutoscalerStatus, hpa *autoscalingv2.HorizontalPodAutoscaler) error {
	if proto.Equal(old, hpa.GetStatus()) {
		return nil
	}
	_, err := client.For[*autoscalingv2.HorizontalPodAutoscaler](c.client, hpa.GetMetadata().GetNamespace()).UpdateStatus(ctx, hpa)
	if err != nil {
		c.recorder.Event(hpa, record.Warning, "FailedUpdateStatus", err.Error())
		return fmt.Errorf("failed to update status for %s: %w", hpa.GetMetadata().GetName(), err)
	}
	return nil
}
