// Package nodelifecycle is upstream's node lifecycle controller, with the
// taint eviction controller it runs alongside (upstream's default before
// SeparateTaintEvictionController; here a second loop of the same
// controller, logged as "taint-eviction-controller").
//
// Every --node-monitor-period it reads each node's heartbeat: the newer of
// its Lease in kube-node-lease and its Ready condition's lastHeartbeatTime,
// each timed by when this controller saw it change, so the kubelet's clock
// does not matter. A node silent for --node-monitor-grace-period
// (--node-startup-grace-period if it never reported) gets Ready,
// MemoryPressure, DiskPressure and PIDPressure Unknown, and its pods
// Ready=False. Nodes not Ready get node.kubernetes.io/not-ready or
// /unreachable NoExecute taints, no faster than each zone's rate
// (--node-eviction-rate; --secondary-node-eviction-rate or none in a
// partially disrupted zone; none at all when every zone is fully
// disrupted), and the NoSchedule taints of their conditions and of
// spec.unschedulable at once. The taint eviction loop deletes the pods a
// NoExecute taint is not tolerated by: at once, after the least
// tolerationSeconds of the tolerations used, or never.
//
// Kept from upstream: the health bookkeeping, ComputeZoneState, the
// rate-limited timed queue, master disruption mode, the events and
// metrics. Differences: a node's Unknown status written here is taken as
// Ready again once its Lease is seen renewed (its taints go, though its
// conditions stay as they are until the kubelet posts them), where upstream
// waits for the kubelet's status; tolerationSeconds count from the taint's
// timeAdded (or from when it was first seen without one), so a restarted
// controller keeps the deadlines; and a restart leaves existing NoExecute
// taints in place instead of removing them from every node. Left out: the
// beta OS and arch label reconciliation, and the DaemonSet lookup of the
// long-removed non-taint eviction path.
package nodelifecycle

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/wait"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Name is upstream's --controllers alias.
const Name = "nodelifecycle"

// taintEvictionName is the taint eviction controller's upstream name, for
// its logs and as its events' source.
const taintEvictionName = "taint-eviction-controller"

const (
	nodeLeaseNamespace = "kube-node-lease"
	// nodeNameIndex is upstream's pod index by spec.nodeName.
	nodeNameIndex = "spec.nodeName"
	// Upstream's worker counts: node passes for NoSchedule taints and
	// health updates, and pods assigned to nodes the cache already knows
	// are not Ready.
	nodeUpdateWorkers = 8
	podUpdateWorkers  = 4
	// noExecuteTaintingPeriod is upstream's NodeEvictionPeriod: how often
	// the zone queues are tried.
	noExecuteTaintingPeriod = 100 * time.Millisecond
	// nodeHealthUpdateRetry is upstream's NodeHealthUpdateRetry.
	nodeHealthUpdateRetry = 5
)

// Upstream's defaults, for options left zero.
const (
	defaultMonitorPeriod = 5 * time.Second
	defaultMonitorGrace  = 40 * time.Second
	defaultStartupGrace  = time.Minute
)

// Controller watches node heartbeats, taints nodes and evicts their pods.
type Controller struct {
	client      *client.Client
	nodes       informers.Lister[*corev1.Node]
	leases      informers.Lister[*coordinationv1.Lease]
	pods        informers.Lister[*corev1.Pod]
	podInformer *informer.Informer
	synced      []informer.Registration
	recorder    record.Recorder
	log         *slog.Logger
	now         func() time.Time
	metrics     *metrics

	monitorPeriod, monitorGrace, startupGrace time.Duration
	evictionQPS, secondaryEvictionQPS         float64
	largeClusterThreshold                     int32
	unhealthyZoneThreshold                    float64

	health *healthMap

	// Owned by the monitor loop.
	knownNodes map[string]*corev1.Node
	zoneStates map[string]zoneState

	tainterMu sync.Mutex
	tainters  map[string]*rateLimitedTimedQueue // NoExecute tainting, by zone

	// nodesToRetry are nodes whose pods could not all be marked not Ready.
	nodesToRetry sync.Map

	nodeQueue workqueue.Queue // NoSchedule taints, by node name
	podQueue  workqueue.Queue // pods newly assigned to a node, by key

	eviction *taintEviction
}

// New builds the controller and its taint eviction loop.
func New(cc controllers.Context) (controllers.Controller, error) {
	o := cc.Options
	nodes := informers.For[*corev1.Node](cc.Informers)
	pods := informers.For[*corev1.Pod](cc.Informers)
	leases := informers.For[*coordinationv1.Lease](cc.Informers)
	// The informer is shared: another controller may have added upstream's
	// index already, which is then the same index.
	if err := pods.Informer().AddIndexers(map[string]informer.IndexFunc{nodeNameIndex: podNodeName}); err != nil &&
		!strings.Contains(err.Error(), "already exists") {
		return nil, err
	}
	now := cc.Clock()
	c := &Controller{
		client: cc.Client, nodes: nodes.Lister(), leases: leases.Lister(), pods: pods.Lister(), podInformer: pods.Informer(),
		recorder: cc.EventRecorder("node-controller"), log: cc.Log(), now: now,
		metrics:       newMetrics(cc.Registerer),
		monitorPeriod: orDefault(o.NodeMonitorPeriod, defaultMonitorPeriod),
		monitorGrace:  orDefault(o.NodeMonitorGracePeriod, defaultMonitorGrace),
		startupGrace:  orDefault(o.NodeStartupGracePeriod, defaultStartupGrace),
		evictionQPS:   o.NodeEvictionRate, secondaryEvictionQPS: o.SecondaryNodeEvictionRate,
		largeClusterThreshold: o.LargeClusterSizeThreshold, unhealthyZoneThreshold: o.UnhealthyZoneThreshold,
		health:     &healthMap{m: map[string]*nodeHealth{}},
		knownNodes: map[string]*corev1.Node{},
		zoneStates: map[string]zoneState{},
		tainters:   map[string]*rateLimitedTimedQueue{},
		nodeQueue:  workqueue.NewWithMetrics("node_lifecycle_controller", cc.Registerer),
		podQueue:   workqueue.NewWithMetrics("node_lifecycle_controller_pods", cc.Registerer),
	}
	c.synced = append(c.synced,
		pods.Informer().AddHandler(informer.Handler{
			OnAdd:    func(o scheme.Object) { c.podUpdated(nil, o.(*corev1.Pod)) },
			OnUpdate: func(old, o scheme.Object) { c.podUpdated(old.(*corev1.Pod), o.(*corev1.Pod)) },
		}),
		nodes.Informer().AddHandler(informer.Handler{
			OnAdd:    func(o scheme.Object) { c.nodeQueue.Add(o.GetMetadata().GetName()) },
			OnUpdate: func(_, o scheme.Object) { c.nodeQueue.Add(o.GetMetadata().GetName()) },
			OnDelete: func(o scheme.Object) { c.nodesToRetry.Delete(o.GetMetadata().GetName()) },
		}),
		// The lease lister needs its cache.
		leases.Informer().AddHandler(informer.Handler{}))
	c.eviction = newTaintEviction(cc, nodes, pods, c.metrics, now)
	c.synced = append(c.synced, c.eviction.synced...)
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func podNodeName(o scheme.Object) []string {
	if n := o.(*corev1.Pod).GetSpec().GetNodeName(); n != "" {
		return []string{n}
	}
	return nil
}

func (c *Controller) Name() string { return Name }

// Run starts the loops once the caches are full and blocks until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	// The loops shut their queues down when ctx ends; these are for a
	// Run that ends before they start.
	defer c.nodeQueue.ShutDown()
	defer c.podQueue.ShutDown()
	defer c.eviction.queue.ShutDown()
	if !informers.WaitForCacheSync(ctx, c.synced...) {
		return nil
	}
	c.log.Info("starting controller")
	defer c.log.Info("shutting down controller")
	var wg sync.WaitGroup
	goRun := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	goRun(func() { c.eviction.run(ctx) })
	goRun(func() { controller.Run(ctx, c.nodeQueue, nodeUpdateWorkers, c.doNoScheduleTaintingPass, c.log) })
	goRun(func() { controller.Run(ctx, c.podQueue, podUpdateWorkers, c.processPod, c.log) })
	// Taints rather than evictions are rate-limited: the eviction loop
	// acts on every NoExecute taint at once, whoever set it.
	goRun(func() { wait.UntilWithContext(ctx, c.doNoExecuteTaintingPass, noExecuteTaintingPeriod) })
	goRun(func() {
		wait.UntilWithContext(ctx, func(ctx context.Context) {
			if err := c.monitorNodeHealth(ctx); err != nil {
				c.log.Error("monitoring node health", "err", err)
			}
		}, c.monitorPeriod)
	})
	wg.Wait()
	return nil
}

// podUpdated queues a pod newly assigned to a node: if the node is known
// not to be Ready, the pod is marked so without waiting for the next pass.
func (c *Controller) podUpdated(old, pod *corev1.Pod) {
	n := pod.GetSpec().GetNodeName()
	if n != "" && (old == nil || old.GetSpec().GetNodeName() != n) {
		c.podQueue.Add(informer.Key(pod))
	}
}

// processPod is upstream's: a pod assigned to a node whose last seen Ready
// condition is not True is marked not Ready.
func (c *Controller) processPod(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := c.pods.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	nodeName := pod.GetSpec().GetNodeName()
	h := c.health.get(nodeName)
	if h == nil {
		return nil // not monitored yet, or gone: the node's pass handles it
	}
	node, err := c.nodes.Get("", nodeName)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	cond := readyCondition(h.status)
	if cond == nil || c.effectiveReady(node, cond) == condTrue {
		return nil
	}
	return c.markPodsNotReady(ctx, []*corev1.Pod{pod}, nodeName)
}

// podsOnNode reads the pods bound to a node from the cache.
func (c *Controller) podsOnNode(name string) []*corev1.Pod {
	objs := c.podInformer.ByIndex(nodeNameIndex, name)
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Pod))
	}
	return out
}

// markPodsNotReady is upstream's MarkPodsNotReady: each pod's Ready
// condition becomes False (the rest of the condition kept), written with
// the pod's resourceVersion so a kubelet's newer status wins.
func (c *Controller) markPodsNotReady(ctx context.Context, pods []*corev1.Pod, nodeName string) error {
	var errs []error
	for _, p := range pods {
		if p.GetSpec().GetNodeName() != nodeName {
			continue
		}
		i := podConditionIndex(p, "Ready")
		if i < 0 || p.GetStatus().GetConditions()[i].GetStatus() == condFalse {
			continue
		}
		pod := proto.Clone(p).(*corev1.Pod)
		cond := pod.Status.Conditions[i]
		cond.Status = condFalse
		cond.LastTransitionTime = metav1.NewTime(c.now())
		_, err := client.For[*corev1.Pod](c.client, pod.GetMetadata().GetNamespace()).UpdateStatus(ctx, pod)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			c.log.Info("failed to update status for pod", "pod", informer.Key(pod), "err", err)
			errs = append(errs, err)
			continue
		}
		c.recorder.Event(pod, record.Warning, "NodeNotReady", "Node is not ready")
	}
	return errors.Join(errs...)
}

func podConditionIndex(p *corev1.Pod, typ string) int {
	for i, c := range p.GetStatus().GetConditions() {
		if c.GetType() == typ {
			return i
		}
	}
	return -1
}

// parallelize runs f(0..n-1) on up to workers goroutines, as client-go's
// ParallelizeUntil: marking pods not Ready is one write per pod, so nodes
// are worked on side by side.
func parallelize(ctx context.Context, workers, n int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}
