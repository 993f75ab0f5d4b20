package podautoscaler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metricsv1beta1 "skiff.dev/proto/api/metrics/v1beta1"
)

// PodMetric is one pod's usage of a resource, in milli-units (millicores,
// or milli-bytes for memory, as upstream's MilliValue), and when and over
// which window it was measured.
type PodMetric struct {
	Timestamp time.Time
	Window    time.Duration
	Value     int64
}

// PodMetricsInfo is the usage by pod name.
type PodMetricsInfo map[string]PodMetric

// MetricsClient reads resource metrics (upstream's metricsclient).
type MetricsClient interface {
	// GetResourceMetric is the usage of resource by the pods selector
	// picks in namespace (of one container when container is set), and
	// the timestamp of the first.
	GetResourceMetric(ctx context.Context, resource, namespace string, selector labels.Selector, container string) (PodMetricsInfo, time.Time, error)
}

// restMetricsClient reads metrics.k8s.io PodMetrics through our client.
type restMetricsClient struct{ c *client.Client }

// NewMetricsClient reads metrics.k8s.io/v1beta1 PodMetrics through c.
func NewMetricsClient(c *client.Client) MetricsClient { return restMetricsClient{c} }

func (m restMetricsClient) GetResourceMetric(ctx context.Context, res, namespace string, selector labels.Selector, container string) (PodMetricsInfo, time.Time, error) {
	l, err := client.For[*metricsv1beta1.PodMetrics](m.c, namespace).List(ctx, client.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("unable to fetch metrics from resource metrics API: %w", err)
	}
	if len(l.Items) == 0 {
		return nil, time.Time{}, errors.New("no metrics returned from resource metrics API")
	}
	return podMetricsOf(l.Items, res, container), l.Items[0].GetTimestamp().AsTime(), nil
}

// podMetricsOf sums each pod's containers (or picks the one container); a
// pod missing the resource in any container it counts is left out.
func podMetricsOf(items []*metricsv1beta1.PodMetrics, res, container string) PodMetricsInfo {
	out := PodMetricsInfo{}
	for _, m := range items {
		var sum int64
		missing := len(m.GetContainers()) == 0
		found := container == ""
		for _, c := range m.GetContainers() {
			if container != "" && c.GetName() != container {
				continue
			}
			found = true
			q, ok := c.GetUsage()[res]
			if !ok {
				missing = true
				break
			}
			v, err := resource.ParseQuantity(q.GetString_())
			if err != nil {
				missing = true
				break
			}
			sum += v.MilliValue()
		}
		if !missing && found {
			out[m.GetMetadata().GetName()] = PodMetric{Timestamp: m.GetTimestamp().AsTime(),
				Window: time.Duration(m.GetWindow().GetDuration()), Value: sum}
		}
	}
	return out
}

// tolerances are how far the usage ratio may be from 1 before a scale down
// or up is proposed.
type tolerances struct{ scaleDown, scaleUp float64 }

func (t tolerances) within(ratio float64) bool {
	return (1.0-t.scaleDown) <= ratio && ratio <= (1.0+t.scaleUp)
}

// ReplicaCalculator is upstream's replica calculator for resource metrics.
type ReplicaCalculator struct {
	metrics MetricsClient
	pods    func(namespace string, sel labels.Selector) []*corev1.Pod
	now     func() time.Time
	// cpuInitializationPeriod and delayOfInitialReadinessStatus are
	// --horizontal-pod-autoscaler-cpu-initialization-period and
	// --horizontal-pod-autoscaler-initial-readiness-delay.
	cpuInitializationPeriod       time.Duration
	delayOfInitialReadinessStatus time.Duration
}

// GetResourceReplicas is the replica count for a utilization target (a
// percentage of the pods' requests), with the utilization and the raw
// average usage.
func (c *ReplicaCalculator) GetResourceReplicas(ctx context.Context, currentReplicas, targetUtilization int32, res string, tol tolerances, namespace string, selector labels.Selector, container string) (replicaCount int32, utilization int32, rawUtilization int64, timestamp time.Time, err error) {
	metrics, timestamp, err := c.metrics.GetResourceMetric(ctx, res, namespace, selector, container)
	if err != nil {
		return 0, 0, 0, time.Time{}, fmt.Errorf("unable to get metrics for resource %s: %w", res, err)
	}
	pods := c.pods(namespace, selector)
	if len(pods) == 0 {
		return 0, 0, 0, time.Time{}, errors.New("no pods returned by selector while calculating replica count")
	}
	readyPodCount, unreadyPods, missingPods, ignoredPods := c.groupPods(pods, metrics, res)
	removeMetricsForPods(metrics, ignoredPods)
	removeMetricsForPods(metrics, unreadyPods)
	requests, err := calculatePodRequests(pods, container, res)
	if err != nil {
		return 0, 0, 0, time.Time{}, err
	}
	if len(metrics) == 0 {
		return 0, 0, 0, time.Time{}, errors.New("did not receive metrics for targeted pods (pods might be unready)")
	}
	usageRatio, utilization, rawUtilization, err := utilizationRatio(metrics, requests, targetUtilization)
	if err != nil {
		return 0, 0, 0, time.Time{}, err
	}
	scaleUpWithUnready := len(unreadyPods) > 0 && usageRatio > 1.0
	if !scaleUpWithUnready && len(missingPods) == 0 {
		if tol.within(usageRatio) {
			return currentReplicas, utilization, rawUtilization, timestamp, nil
		}
		return int32(math.Ceil(usageRatio * float64(readyPodCount))), utilization, rawUtilization, timestamp, nil
	}
	if len(missingPods) > 0 {
		if usageRatio < 1.0 {
			// Scaling down: assume the missing pods use their whole
			// request (or the target, when above 100%), which dampens it.
			fallback := int64(max(100, targetUtilization))
			for name := range missingPods {
				metrics[name] = PodMetric{Value: requests[name] * fallback / 100}
			}
		} else if usageRatio > 1.0 {
			// Scaling up: assume they use nothing.
			for name := range missingPods {
				metrics[name] = PodMetric{Value: 0}
			}
		}
	}
	if scaleUpWithUnready {
		for name := range unreadyPods {
			metrics[name] = PodMetric{Value: 0}
		}
	}
	newRatio, _, _, err := utilizationRatio(metrics, requests, targetUtilization)
	if err != nil {
		return 0, 0, 0, time.Time{}, err
	}
	if tol.within(newRatio) || (usageRatio < 1.0 && newRatio > 1.0) || (usageRatio > 1.0 && newRatio < 1.0) {
		// The assumptions flipped the direction, or brought it within
		// tolerance: do nothing.
		return currentReplicas, utilization, rawUtilization, timestamp, nil
	}
	newReplicas := int32(math.Ceil(newRatio * float64(len(metrics))))
	if (newRatio < 1.0 && newReplicas > currentReplicas) || (newRatio > 1.0 && newReplicas < currentReplicas) {
		return currentReplicas, utilization, rawUtilization, timestamp, nil
	}
	return newReplicas, utilization, rawUtilization, timestamp, nil
}

// GetRawResourceReplicas is the replica count for an average value target
// (in milli-units), with the average usage.
func (c *ReplicaCalculator) GetRawResourceReplicas(ctx context.Context, currentReplicas int32, targetUsage int64, res string, tol tolerances, namespace string, selector labels.Selector, container string) (replicaCount int32, usage int64, timestamp time.Time, err error) {
	metrics, timestamp, err := c.metrics.GetResourceMetric(ctx, res, namespace, selector, container)
	if err != nil {
		return 0, 0, time.Time{}, fmt.Errorf("unable to get metrics for resource %s: %w", res, err)
	}
	pods := c.pods(namespace, selector)
	if len(pods) == 0 {
		return 0, 0, time.Time{}, errors.New("no pods returned by selector while calculating replica count")
	}
	readyPodCount, unreadyPods, missingPods, ignoredPods := c.groupPods(pods, metrics, res)
	removeMetricsForPods(metrics, ignoredPods)
	removeMetricsForPods(metrics, unreadyPods)
	if len(metrics) == 0 {
		return 0, 0, time.Time{}, errors.New("did not receive metrics for targeted pods (pods might be unready)")
	}
	usageRatio, usage := usageRatioOf(metrics, targetUsage)
	scaleUpWithUnready := len(unreadyPods) > 0 && usageRatio > 1.0
	if !scaleUpWithUnready && len(missingPods) == 0 {
		if tol.within(usageRatio) {
			return currentReplicas, usage, timestamp, nil
		}
		return int32(math.Ceil(usageRatio * float64(readyPodCount))), usage, timestamp, nil
	}
	if len(missingPods) > 0 {
		if usageRatio < 1.0 {
			for name := range missingPods {
				metrics[name] = PodMetric{Value: targetUsage}
			}
		} else {
			for name := range missingPods {
				metrics[name] = PodMetric{Value: 0}
			}
		}
	}
	if scaleUpWithUnready {
		for name := range unreadyPods {
			metrics[name] = PodMetric{Value: 0}
		}
	}
	newRatio, _ := usageRatioOf(metrics, targetUsage)
	if tol.within(newRatio) || (usageRatio < 1.0 && newRatio > 1.0) || (usageRatio > 1.0 && newRatio < 1.0) {
		return currentReplicas, usage, timestamp, nil
	}
	newReplicas := int32(math.Ceil(newRatio * float64(len(metrics))))
	if (newRatio < 1.0 && newReplicas > currentReplicas) || (newRatio > 1.0 && newReplicas < currentReplicas) {
		return currentReplicas, usage, timestamp, nil
	}
	return newReplicas, usage, timestamp, nil
}

// usageRatioOf is upstream's GetMetricUsageRatio: the average over the
// target.
func usageRatioOf(metrics PodMetricsInfo, target int64) (float64, int64) {
	var total int64
	for _, m := range metrics {
		total += m.Value
	}
	current := total / int64(len(metrics))
	return float64(current) / float64(target), current
}

// utilizationRatio is upstream's GetResourceUtilizationRatio.
func utilizationRatio(metrics PodMetricsInfo, requests map[string]int64, target int32) (ratio float64, utilization int32, rawAverage int64, err error) {
	var metricsTotal, requestsTotal, n int64
	for name, m := range metrics {
		req, ok := requests[name]
		if !ok {
			continue // a pod that appeared since the list
		}
		metricsTotal += m.Value
		requestsTotal += req
		n++
	}
	if requestsTotal == 0 {
		return 0, 0, 0, errors.New("no metrics returned matched known pods")
	}
	utilization = int32(metricsTotal * 100 / requestsTotal)
	return float64(utilization) / float64(target), utilization, metricsTotal / n, nil
}

// groupPods sorts the pods as upstream: deleted and failed ones are
// ignored, pending ones and (for cpu) ones not yet ready or still in their
// initialization are unready, ones without a metric are missing, the rest
// ready.
func (c *ReplicaCalculator) groupPods(pods []*corev1.Pod, metrics PodMetricsInfo, res string) (readyPodCount int, unready, missing, ignored map[string]bool) {
	unready, missing, ignored = map[string]bool{}, map[string]bool{}, map[string]bool{}
	now := c.now()
	for _, p := range pods {
		name := p.GetMetadata().GetName()
		if p.GetMetadata().GetDeletionTimestamp() != nil || p.GetStatus().GetPhase() == "Failed" {
			ignored[name] = true
			continue
		}
		if p.GetStatus().GetPhase() == "Pending" {
			unready[name] = true
			continue
		}
		metric, found := metrics[name]
		if !found {
			missing[name] = true
			continue
		}
		if res == "cpu" {
			var cond *corev1.PodCondition
			for _, pc := range p.GetStatus().GetConditions() {
				if pc.GetType() == "Ready" {
					cond = pc
				}
			}
			var isUnready bool
			start := p.GetStatus().GetStartTime()
			if cond == nil || start == nil {
				isUnready = true
			} else {
				transition := cond.GetLastTransitionTime().AsTime()
				if start.AsTime().Add(c.cpuInitializationPeriod).After(now) {
					// Within the initialization period: a sample counts only
					// when ready and taken a whole window after becoming so.
					isUnready = cond.GetStatus() == "False" || metric.Timestamp.Before(transition.Add(metric.Window))
				} else {
					// Afterwards: only a pod that has never been ready.
					isUnready = cond.GetStatus() == "False" && start.AsTime().Add(c.delayOfInitialReadinessStatus).After(transition)
				}
			}
			if isUnready {
				unready[name] = true
				continue
			}
		}
		readyPodCount++
	}
	return readyPodCount, unready, missing, ignored
}

func removeMetricsForPods(metrics PodMetricsInfo, pods map[string]bool) {
	for name := range pods {
		delete(metrics, name)
	}
}

// calculatePodRequests sums each pod's containers' requests of res (milli).
func calculatePodRequests(pods []*corev1.Pod, container, res string) (map[string]int64, error) {
	out := make(map[string]int64, len(pods))
	for _, p := range pods {
		var sum int64
		for _, c := range p.GetSpec().GetContainers() {
			if container != "" && c.GetName() != container {
				continue
			}
			q, ok := c.GetResources().GetRequests()[res]
			if !ok {
				return nil, fmt.Errorf("missing request for %s in container %s of Pod %s", res, c.GetName(), p.GetMetadata().GetName())
			}
			v, err := resource.ParseQuantity(q.GetString_())
			if err != nil {
				return nil, fmt.Errorf("request for %s in container %s of Pod %s: %w", res, c.GetName(), p.GetMetadata().GetName(), err)
			}
			sum += v.MilliValue()
		}
		out[p.GetMetadata().GetName()] = sum
	}
	return out, nil
}
