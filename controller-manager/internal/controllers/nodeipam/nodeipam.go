// Package nodeipam is upstream's node-ipam-controller with the range
// allocator: every Node gets spec.podCIDR and spec.podCIDRs, one subnet of
// each --cluster-cidr (a second, IPv6, range makes nodes dual-stack). The
// allocation lives in the Node objects themselves: at start the allocator
// marks every subnet nodes already hold before it hands out a new one, so
// it is kept across restarts, and a deleted node's subnets are released.
package nodeipam

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Name is upstream's --controllers alias.
const Name = "nodeipam"

// ipv6Mask is upstream's default --node-cidr-mask-size-ipv6.
const ipv6Mask = 64

// Controller allocates node pod CIDRs.
type Controller struct {
	client   *client.Client
	nodes    informers.Lister[*corev1.Node]
	queue    workqueue.Queue
	synced   informer.Registration
	recorder record.Recorder
	log      *slog.Logger
	sets     []*cidrSet
	m        *metrics

	mu sync.Mutex
	// owner is which node holds each allocated subnet, so a delete
	// releases only what that node held, and a subnet claimed by two nodes
	// is noticed.
	owner map[netip.Prefix]string
}

type metrics struct {
	allocations, releases *prometheus.CounterVec
	usage                 *prometheus.GaugeVec
}

// New builds the allocator; without --allocate-node-cidrs it is off, as
// upstream, and New returns no controller.
func New(cc controllers.Context) (controllers.Controller, error) {
	o := cc.Options
	if !o.AllocateNodeCIDRs {
		return nil, nil
	}
	c := &Controller{client: cc.Client, recorder: cc.EventRecorder("cidrAllocator"), log: cc.Log(),
		queue: workqueue.NewWithMetrics("nodeipam", cc.Registerer), owner: map[netip.Prefix]string{}}
	for _, s := range strings.Split(o.ClusterCIDR, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--cluster-cidr: %q is not a CIDR", s)
		}
		mask := o.NodeCIDRMaskSize
		if p.Addr().Is6() {
			mask = ipv6Mask
		}
		set, err := newCIDRSet(p, mask)
		if err != nil {
			return nil, fmt.Errorf("--node-cidr-mask-size: %w", err)
		}
		c.sets = append(c.sets, set)
	}
	if len(c.sets) > 2 || len(c.sets) == 2 && c.sets[0].cluster.Addr().Is6() == c.sets[1].cluster.Addr().Is6() {
		return nil, fmt.Errorf("--cluster-cidr: %q: at most one IPv4 and one IPv6 range", o.ClusterCIDR)
	}
	c.m = &metrics{
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "cidrset", Name: "cidrs_allocations_total",
			Help: "Counter measuring total number of CIDR allocations."}, []string{"clusterCIDR"}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "cidrset", Name: "cidrs_releases_total",
			Help: "Counter measuring total number of CIDR releases."}, []string{"clusterCIDR"}),
		usage: prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "cidrset", Name: "usage_cidrs",
			Help: "Gauge measuring percentage of allocated CIDRs."}, []string{"clusterCIDR"}),
	}
	if cc.Registerer != nil {
		cc.Registerer.MustRegister(c.m.allocations, c.m.releases, c.m.usage)
	}
	nodes := informers.For[*corev1.Node](cc.Informers)
	c.nodes = nodes.Lister()
	enqueue := func(o scheme.Object) { c.queue.Add(o.GetMetadata().GetName()) }
	c.synced = nodes.Informer().AddHandler(informer.Handler{
		OnAdd:    enqueue,
		OnUpdate: func(_, o scheme.Object) { enqueue(o) },
		OnDelete: func(o scheme.Object) { c.release(o.(*corev1.Node)) },
	})
	return c, nil
}

func (c *Controller) Name() string { return Name }

// Run first marks every subnet the nodes already hold, so nothing is
// handed out twice after a restart, then allocates.
func (c *Controller) Run(ctx context.Context) error {
	if !informers.WaitForCacheSync(ctx, c.synced) {
		return nil
	}
	for _, n := range c.nodes.List(nil) {
		c.occupy(n)
	}
	controller.Run(ctx, c.queue, 1, c.reconcile, c.log)
	return nil
}

func nodeCIDRs(n *corev1.Node) []string {
	if cs := n.GetSpec().GetPodCIDRs(); len(cs) > 0 {
		return cs
	}
	if c := n.GetSpec().GetPodCIDR(); c != "" {
		return []string{c}
	}
	return nil
}

// setFor is the range p belongs to.
func (c *Controller) setFor(p netip.Prefix) *cidrSet {
	for _, s := range c.sets {
		if s.cluster.Contains(p.Addr()) {
			return s
		}
	}
	return nil
}

// occupy records the subnets a node holds; it reports a subnet that
// another node holds too.
func (c *Controller) occupy(n *corev1.Node) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	name := n.GetMetadata().GetName()
	for _, s := range nodeCIDRs(n) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("node %s: podCIDR %q: %w", name, s, err)
		}
		if other, ok := c.owner[p]; ok && other != name {
			return fmt.Errorf("node %s: podCIDR %s is also allocated to node %s", name, p, other)
		}
		set := c.setFor(p)
		if set == nil {
			continue // outside our ranges: someone else's to manage
		}
		if _, err := set.occupy(p); err != nil {
			return fmt.Errorf("node %s: podCIDR %s: %w", name, p, err)
		}
		c.owner[p] = name
		c.m.usage.WithLabelValues(set.cluster.String()).Set(set.usage())
	}
	return nil
}

func (c *Controller) release(n *corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range nodeCIDRs(n) {
		p, err := netip.ParsePrefix(s)
		if err != nil || c.owner[p] != n.GetMetadata().GetName() {
			continue
		}
		delete(c.owner, p)
		if set := c.setFor(p); set != nil {
			set.release(p)
			c.m.releases.WithLabelValues(set.cluster.String()).Inc()
			c.m.usage.WithLabelValues(set.cluster.String()).Set(set.usage())
		}
		c.log.Info("released pod CIDR", "node", n.GetMetadata().GetName(), "podCIDR", p)
	}
}

func (c *Controller) reconcile(ctx context.Context, name string) error {
	n, err := c.nodes.Get("", name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(nodeCIDRs(n)) > 0 {
		if err := c.occupy(n); err != nil {
			c.log.Error("pod CIDR conflict", "err", err)
			c.recorder.Event(n, record.Warning, "CIDRAssignmentFailed", err.Error())
		}
		return nil
	}
	var got []netip.Prefix
	undo := func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, p := range got {
			c.setFor(p).release(p)
		}
	}
	for _, set := range c.sets {
		p, err := set.allocate()
		if err != nil {
			undo()
			c.recorder.Event(n, record.Normal, "CIDRNotAvailable", fmt.Sprintf("Node %s status is now: CIDRNotAvailable", name))
			return fmt.Errorf("node %s: %w", name, err)
		}
		got = append(got, p)
	}
	cidrs := make([]string, len(got))
	for i, p := range got {
		cidrs[i] = p.String()
	}
	// The cache's resourceVersion guards the patch: if the node changed,
	// and perhaps got a podCIDR from elsewhere, the retry reads it.
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": n.GetMetadata().GetResourceVersion()},
		"spec":     map[string]any{"podCIDR": cidrs[0], "podCIDRs": cidrs},
	})
	if _, err := client.For[*corev1.Node](c.client, "").Patch(ctx, name, "merge", patch, ""); err != nil {
		undo()
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case apierrors.IsConflict(err):
			// The kubelet wrote the node meanwhile (its status, at
			// registration): the retry reads it; nothing failed.
			return err
		}
		c.recorder.Event(n, record.Warning, "CIDRAssignmentFailed", fmt.Sprintf("Node %s: updating podCIDRs: %v", name, err))
		return err
	}
	c.mu.Lock()
	for _, p := range got {
		c.owner[p] = name
		set := c.setFor(p)
		c.m.allocations.WithLabelValues(set.cluster.String()).Inc()
		c.m.usage.WithLabelValues(set.cluster.String()).Set(set.usage())
	}
	c.mu.Unlock()
	c.log.Info("allocated pod CIDRs", "node", name, "podCIDRs", cidrs)
	return nil
}
