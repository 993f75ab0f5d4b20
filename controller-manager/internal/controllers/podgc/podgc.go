// Package podgc is upstream's pod garbage collector, a periodic sweep
// rather than a queue, as upstream: it force-deletes terminated pods above
// --terminated-pod-gc-threshold (oldest first), pods bound to nodes that no
// longer exist (after a quarantine, and confirmed by a live read), pods
// terminating on out-of-service nodes, and terminating pods never
// scheduled, which no kubelet will ever finish.
package podgc

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/controller-manager/internal/controllers"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// Name is upstream's --controllers alias.
const Name = "podgc"

// Upstream's periods.
const (
	gcCheckPeriod  = 20 * time.Second
	quarantineTime = 40 * time.Second
)

// Force-delete reasons, upstream's metric label values.
const (
	reasonTerminated   = "terminated"
	reasonOrphaned     = "orphaned"
	reasonOutOfService = "terminating_out_of_service"
	reasonUnscheduled  = "unscheduled"
)

// Controller sweeps pods.
type Controller struct {
	client    *client.Client
	pods      informers.Lister[*corev1.Pod]
	nodes     informers.Lister[*corev1.Node]
	synced    []informer.Registration
	threshold int
	now       func() time.Time
	period    time.Duration
	log       *slog.Logger

	// missing is when each absent node was first seen missing: its pods go
	// only after the quarantine, since a node informer may lag a new node.
	mu      sync.Mutex
	missing map[string]time.Time

	deleted, errors *prometheus.CounterVec
}

// New builds the collector.
func New(cc controllers.Context) (controllers.Controller, error) {
	pods := informers.For[*corev1.Pod](cc.Informers)
	nodes := informers.For[*corev1.Node](cc.Informers)
	c := &Controller{client: cc.Client, pods: pods.Lister(), nodes: nodes.Lister(),
		threshold: cc.Options.TerminatedPodGCThreshold, now: cc.Clock(), period: gcCheckPeriod, log: cc.Log(),
		missing: map[string]time.Time{},
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "pod_gc_collector", Name: "force_delete_pods_total",
			Help: "Number of pods that are being forcefully deleted since the Pod GC Controller started."}, []string{"namespace", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "pod_gc_collector", Name: "force_delete_pod_errors_total",
			Help: "Number of errors encountered when forcefully deleting the pods since the Pod GC Controller started."}, []string{"namespace", "reason"}),
	}
	if cc.Registerer != nil {
		cc.Registerer.MustRegister(c.deleted, c.errors)
	}
	// Listers need the caches; registrations without callbacks say when
	// they are full.
	c.synced = []informer.Registration{pods.Informer().AddHandler(informer.Handler{}), nodes.Informer().AddHandler(informer.Handler{})}
	return c, nil
}

func (c *Controller) Name() string { return Name }

// Run sweeps every gcCheckPeriod.
func (c *Controller) Run(ctx context.Context) error {
	if !informers.WaitForCacheSync(ctx, c.synced...) {
		return nil
	}
	t := time.NewTicker(c.period)
	defer t.Stop()
	for {
		c.gc(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *Controller) gc(ctx context.Context) {
	pods := c.pods.List(nil)
	if c.threshold > 0 {
		c.gcTerminated(ctx, pods)
	}
	c.gcTerminatingOutOfService(ctx, pods)
	c.gcOrphaned(ctx, pods)
	c.gcUnscheduledTerminating(ctx, pods)
}

func terminal(p *corev1.Pod) bool {
	ph := p.GetStatus().GetPhase()
	return ph == "Succeeded" || ph == "Failed"
}

// gcTerminated keeps the newest threshold terminated pods; evicted ones go
// first, then the oldest, as upstream.
func (c *Controller) gcTerminated(ctx context.Context, pods []*corev1.Pod) {
	var done []*corev1.Pod
	for _, p := range pods {
		if terminal(p) {
			done = append(done, p)
		}
	}
	excess := len(done) - c.threshold
	if excess <= 0 {
		return
	}
	slices.SortFunc(done, func(a, b *corev1.Pod) int {
		ea, eb := a.GetStatus().GetReason() == "Evicted", b.GetStatus().GetReason() == "Evicted"
		if ea != eb {
			if ea {
				return -1
			}
			return 1
		}
		return a.GetMetadata().GetCreationTimestamp().AsTime().Compare(b.GetMetadata().GetCreationTimestamp().AsTime())
	})
	c.log.Info("garbage collecting terminated pods", "count", excess, "threshold", c.threshold)
	for _, p := range done[:excess] {
		c.forceDelete(ctx, p, reasonTerminated, "")
	}
}

// gcTerminatingOutOfService frees pods stuck terminating on a node an
// operator marked out of service (the node.kubernetes.io/out-of-service
// taint) that is not Ready: no kubelet will finish them.
func (c *Controller) gcTerminatingOutOfService(ctx context.Context, pods []*corev1.Pod) {
	for _, p := range pods {
		if p.GetMetadata().GetDeletionTimestamp() == nil || p.GetSpec().GetNodeName() == "" {
			continue
		}
		n, err := c.nodes.Get("", p.GetSpec().GetNodeName())
		if err != nil || ready(n) || !outOfService(n) {
			continue
		}
		c.forceDelete(ctx, p, reasonOutOfService, "")
	}
}

func ready(n *corev1.Node) bool {
	for _, cond := range n.GetStatus().GetConditions() {
		if cond.GetType() == "Ready" {
			return cond.GetStatus() == "True"
		}
	}
	return false
}

func outOfService(n *corev1.Node) bool {
	for _, t := range n.GetSpec().GetTaints() {
		if t.GetKey() == "node.kubernetes.io/out-of-service" && t.GetEffect() == "NoExecute" {
			return true
		}
	}
	return false
}

// gcOrphaned deletes pods of nodes that are gone: seen missing from the
// cache for the quarantine, then confirmed absent by a live Get.
func (c *Controller) gcOrphaned(ctx context.Context, pods []*corev1.Pod) {
	now := c.now()
	byNode := map[string][]*corev1.Pod{}
	for _, p := range pods {
		if n := p.GetSpec().GetNodeName(); n != "" {
			byNode[n] = append(byNode[n], p)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.missing {
		if _, still := byNode[name]; !still {
			delete(c.missing, name)
		}
	}
	for name, ps := range byNode {
		if _, err := c.nodes.Get("", name); err == nil {
			delete(c.missing, name)
			continue
		}
		first, seen := c.missing[name]
		if !seen {
			c.missing[name] = now
			continue
		}
		if now.Sub(first) < quarantineTime {
			continue
		}
		_, err := client.For[*corev1.Node](c.client, "").Get(ctx, name)
		if err == nil {
			delete(c.missing, name) // the cache lagged: the node exists
			continue
		}
		if !apierrors.IsNotFound(err) {
			c.log.Info("checking whether a node exists", "node", name, "err", err)
			continue
		}
		for _, p := range ps {
			c.forceDelete(ctx, p, reasonOrphaned, "PodGC: node no longer exists")
		}
		delete(c.missing, name)
	}
}

// gcUnscheduledTerminating deletes pods being deleted that no node ever
// took: nothing else would finish their deletion.
func (c *Controller) gcUnscheduledTerminating(ctx context.Context, pods []*corev1.Pod) {
	for _, p := range pods {
		if p.GetMetadata().GetDeletionTimestamp() != nil && p.GetSpec().GetNodeName() == "" {
			c.forceDelete(ctx, p, reasonUnscheduled, "")
		}
	}
}

// forceDelete deletes with grace 0. A pod still running first gets phase
// Failed and the DisruptionTarget condition (why it went), as upstream's
// markFailedAndDeletePod; the UID precondition keeps a recreated pod of the
// same name safe.
func (c *Controller) forceDelete(ctx context.Context, p *corev1.Pod, reason, message string) {
	ns, name := p.GetMetadata().GetNamespace(), p.GetMetadata().GetName()
	pods := client.For[*corev1.Pod](c.client, ns)
	if message != "" && !terminal(p) {
		now := metav1.NewTime(c.now())
		patch, _ := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": p.GetMetadata().GetResourceVersion()},
			"status": map[string]any{"phase": "Failed", "conditions": append(conditionsJSON(p), map[string]any{
				"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC", "message": message,
				"lastTransitionTime": now.AsTime().UTC().Format(time.RFC3339)})},
		})
		if _, err := pods.Patch(ctx, name, "merge", patch, "status"); err != nil && !apierrors.IsNotFound(err) {
			c.log.Info("marking a pod failed before deleting it", "pod", ns+"/"+name, "err", err)
		}
	}
	zero := int64(0)
	uid := p.GetMetadata().GetUid()
	_, err := pods.Delete(ctx, name, client.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: preconditionUID(uid)})
	switch {
	case err == nil:
		c.deleted.WithLabelValues(ns, reason).Inc()
		c.log.Info("force-deleted pod", "pod", ns+"/"+name, "reason", reason)
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		// Gone already, or replaced by a pod of the same name.
	default:
		c.errors.WithLabelValues(ns, reason).Inc()
		c.log.Info("force-deleting pod", "pod", ns+"/"+name, "reason", reason, "err", err)
	}
}

// conditionsJSON keeps the pod's other conditions: a merge patch replaces
// the list whole.
func conditionsJSON(p *corev1.Pod) []any {
	var out []any
	for _, cond := range p.GetStatus().GetConditions() {
		if cond.GetType() == "DisruptionTarget" {
			continue
		}
		m := map[string]any{"type": cond.GetType(), "status": cond.GetStatus()}
		if cond.GetReason() != "" {
			m["reason"] = cond.GetReason()
		}
		if cond.GetMessage() != "" {
			m["message"] = cond.GetMessage()
		}
		if t := cond.GetLastTransitionTime(); t != nil {
			m["lastTransitionTime"] = t.AsTime().UTC().Format(time.RFC3339)
		}
		out = append(out, m)
	}
	return out
}

func preconditionUID(uid string) *apipb.Preconditions {
	if uid == "" {
		return nil
	}
	return &apipb.Preconditions{Uid: &uid}
}
