// Package metricsapi serves metrics.k8s.io/v1beta1, the role metrics-server
// plays upstream: it scrapes every Ready node's kubelet /metrics/resource on
// a period (--metric-resolution), keeps the two newest samples of each node
// and container, and answers get and list of NodeMetrics and PodMetrics
// from that cache, the CPU as the rate between the two samples.
package metricsapi

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/apiserver/internal/kubeletclient"
	"skiff.dev/apiserver/internal/registry"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	metricsv1beta1 "skiff.dev/proto/api/metrics/v1beta1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// DefaultResolution is metrics-server's --metric-resolution.
const DefaultResolution = 15 * time.Second

// maxConcurrentScrapes bounds the kubelets asked at once.
const maxConcurrentScrapes = 32

// Scraper reads one node's kubelet.
type Scraper interface {
	Scrape(ctx context.Context, node *corev1.Node) (*Batch, error)
}

// Objects are the nodes and pods the metrics describe, read from the
// registry's caches.
type Objects interface {
	Nodes(ctx context.Context, labelSelector, fieldSelector string) ([]*corev1.Node, error)
	Node(ctx context.Context, name string) (*corev1.Node, error)
	Pods(ctx context.Context, namespace, labelSelector, fieldSelector string) ([]*corev1.Pod, error)
	Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// Config builds a Server.
type Config struct {
	Objects Objects
	Scraper Scraper
	// Resolution is the scrape period; 0 means DefaultResolution.
	Resolution time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now dates the objects served (their creationTimestamp); nil is time.Now.
	Now func() time.Time
}

// Server scrapes and answers.
type Server struct {
	cfg   Config
	store *store
	log   *slog.Logger

	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

// New builds a server; Start scrapes.
func New(cfg Config) *Server {
	if cfg.Resolution <= 0 {
		cfg.Resolution = DefaultResolution
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, store: newStore(), log: cfg.Logger,
		// metrics-server's names.
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metrics_server_kubelet_request_total",
			Help: "Number of requests sent to Kubelet API",
		}, []string{"success"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "metrics_server_kubelet_request_duration_seconds",
			Help:    "Duration of requests to Kubelet API in seconds",
			Buckets: prometheus.DefBuckets,
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.requests, s.duration)
	}
	return s
}

// Start scrapes every Resolution until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Resolution)
	defer t.Stop()
	for {
		s.ScrapeOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ScrapeOnce scrapes every Ready node once and stores what answered.
func (s *Server) ScrapeOnce(ctx context.Context) {
	nodes, err := s.cfg.Objects.Nodes(ctx, "", "")
	if err != nil {
		s.log.Error("Failed to list nodes for scraping", "err", err)
		return
	}
	// metrics-server gives a round 90% of the period.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Resolution*9/10)
	defer cancel()
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		sem     = make(chan struct{}, maxConcurrentScrapes)
		batches = map[string]*Batch{}
	)
	for _, n := range nodes {
		if !nodeReady(n) {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			b, err := s.cfg.Scraper.Scrape(ctx, n)
			s.duration.Observe(time.Since(start).Seconds())
			s.requests.WithLabelValues(fmt.Sprint(err == nil)).Inc()
			if err != nil {
				s.log.Info("Failed to scrape node", "node", n.GetMetadata().GetName(), "err", err)
				return
			}
			mu.Lock()
			batches[n.GetMetadata().GetName()] = b
			mu.Unlock()
		})
	}
	wg.Wait()
	s.store.Store(batches)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

var (
	nodeMetricsKind, _ = scheme.ForResource("metrics.k8s.io", "nodes")
	podMetricsKind, _  = scheme.ForResource("metrics.k8s.io", "pods")
)

// Get answers get of one NodeMetrics or PodMetrics; an object without two
// samples yet is NotFound, as metrics-server answers.
func (s *Server) Get(ctx context.Context, k *scheme.Kind, ns, name string) (scheme.Object, error) {
	switch k {
	case nodeMetricsKind:
		n, err := s.cfg.Objects.Node(ctx, name)
		if err != nil {
			if apierrors.ReasonOf(err) == apierrors.ReasonNotFound {
				return nil, apierrors.NewNotFound("nodemetrics.metrics.k8s.io", name)
			}
			return nil, err
		}
		m, ok := s.nodeMetrics(n)
		if !ok {
			return nil, apierrors.NewNotFound("nodemetrics.metrics.k8s.io", name)
		}
		return m, nil
	case podMetricsKind:
		if ns == "" {
			ns = "default"
		}
		p, err := s.cfg.Objects.Pod(ctx, ns, name)
		if err != nil {
			if apierrors.ReasonOf(err) == apierrors.ReasonNotFound {
				return nil, apierrors.NewNotFound("podmetrics.metrics.k8s.io", ns+"/"+name)
			}
			return nil, err
		}
		m, ok := s.podMetrics(p)
		if !ok {
			return nil, apierrors.NewNotFound("podmetrics.metrics.k8s.io", ns+"/"+name)
		}
		return m, nil
	}
	return nil, apierrors.NewNotFound("resource", k.GroupResource())
}

// List answers list: the metrics of the nodes or pods the selectors pick
// that have them, in name order (namespace, then name, for pods).
func (s *Server) List(ctx context.Context, k *scheme.Kind, ns, labelSelector, fieldSelector string) ([]scheme.Object, error) {
	var out []scheme.Object
	switch k {
	case nodeMetricsKind:
		nodes, err := s.cfg.Objects.Nodes(ctx, labelSelector, fieldSelector)
		if err != nil {
			return nil, err
		}
		sort.Slice(nodes, func(i, j int) bool { return nodes[i].GetMetadata().GetName() < nodes[j].GetMetadata().GetName() })
		for _, n := range nodes {
			if m, ok := s.nodeMetrics(n); ok {
				out = append(out, m)
			}
		}
	case podMetricsKind:
		pods, err := s.cfg.Objects.Pods(ctx, ns, labelSelector, fieldSelector)
		if err != nil {
			return nil, err
		}
		sort.Slice(pods, func(i, j int) bool {
			a, b := pods[i].GetMetadata(), pods[j].GetMetadata()
			if a.GetNamespace() != b.GetNamespace() {
				return a.GetNamespace() < b.GetNamespace()
			}
			return a.GetName() < b.GetName()
		})
		for _, p := range pods {
			if m, ok := s.podMetrics(p); ok {
				out = append(out, m)
			}
		}
	default:
		return nil, apierrors.NewNotFound("resource", k.GroupResource())
	}
	return out, nil
}

func (s *Server) nodeMetrics(n *corev1.Node) (*metricsv1beta1.NodeMetrics, bool) {
	u, ok := s.store.Node(n.GetMetadata().GetName())
	if !ok {
		return nil, false
	}
	return &metricsv1beta1.NodeMetrics{
		Metadata: &metav1.ObjectMeta{Name: n.GetMetadata().GetName(), Labels: n.GetMetadata().GetLabels(),
			CreationTimestamp: metav1.NewTime(s.cfg.Now())},
		Timestamp: metav1.NewTime(u.Timestamp),
		Window:    duration(u.Window),
		Usage:     u.ResourceList(),
	}, true
}

func (s *Server) podMetrics(p *corev1.Pod) (*metricsv1beta1.PodMetrics, bool) {
	m := p.GetMetadata()
	ctrs, pod, ok := s.store.Pod(PodRef{Namespace: m.GetNamespace(), Name: m.GetName()})
	if !ok {
		return nil, false
	}
	// Containers in the pod's own order, as metrics-server lists them.
	order := map[string]int{}
	for i, c := range p.GetSpec().GetContainers() {
		order[c.GetName()] = i
	}
	sort.Slice(ctrs, func(i, j int) bool {
		oi, iok := order[ctrs[i].Name]
		oj, jok := order[ctrs[j].Name]
		if iok != jok {
			return iok
		}
		if oi != oj {
			return oi < oj
		}
		return ctrs[i].Name < ctrs[j].Name
	})
	out := &metricsv1beta1.PodMetrics{
		Metadata: &metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), Labels: m.GetLabels(),
			CreationTimestamp: metav1.NewTime(s.cfg.Now())},
		Timestamp: metav1.NewTime(pod.Timestamp),
		Window:    duration(pod.Window),
	}
	for _, c := range ctrs {
		out.Containers = append(out.Containers, &metricsv1beta1.ContainerMetrics{Name: c.Name, Usage: c.ResourceList()})
	}
	return out, true
}

func duration(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: int64(d)} }

// KubeletScraper reads /metrics/resource through the apiserver's kubelet
// client.
type KubeletScraper struct {
	Client *kubeletclient.Client
}

// Scrape reads and decodes one kubelet's resource metrics.
func (k KubeletScraper) Scrape(ctx context.Context, node *corev1.Node) (*Batch, error) {
	resp, err := k.Client.Get(ctx, node, "/metrics/resource", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := Decode(resp.Body, time.Now())
	if err != nil {
		return nil, fmt.Errorf("decoding /metrics/resource of node %s: %w", node.GetMetadata().GetName(), err)
	}
	return b, nil
}

// RegistryObjects reads nodes and pods from the registry's watch cache.
func RegistryObjects(r *registry.Registry) Objects { return registryObjects{r} }

type registryObjects struct{ r *registry.Registry }

var (
	nodeKind, _ = scheme.ForResource("", "nodes")
	podKind, _  = scheme.ForResource("", "pods")
)

func (o registryObjects) Nodes(ctx context.Context, labelSelector, fieldSelector string) ([]*corev1.Node, error) {
	l, err := o.r.List(ctx, nodeKind, "", registry.ListOptions{LabelSelector: labelSelector, FieldSelector: fieldSelector})
	if err != nil {
		return nil, err
	}
	out := make([]*corev1.Node, 0, len(l.Items))
	for _, it := range l.Items {
		if n, ok := it.Msg.(*corev1.Node); ok {
			out = append(out, n)
		}
	}
	return out, nil
}

func (o registryObjects) Node(ctx context.Context, name string) (*corev1.Node, error) {
	it, err := o.r.Get(ctx, nodeKind, "", name, "")
	if err != nil {
		return nil, err
	}
	n, ok := it.Msg.(*corev1.Node)
	if !ok {
		return nil, apierrors.NewInternal(fmt.Errorf("node %s decoded as %T", name, it.Msg))
	}
	return n, nil
}

func (o registryObjects) Pods(ctx context.Context, namespace, labelSelector, fieldSelector string) ([]*corev1.Pod, error) {
	l, err := o.r.List(ctx, podKind, namespace, registry.ListOptions{LabelSelector: labelSelector, FieldSelector: fieldSelector})
	if err != nil {
		return nil, err
	}
	out := make([]*corev1.Pod, 0, len(l.Items))
	for _, it := range l.Items {
		if p, ok := it.Msg.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func (o registryObjects) Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	it, err := o.r.Get(ctx, podKind, namespace, name, "")
	if err != nil {
		return nil, err
	}
	p, ok := it.Msg.(*corev1.Pod)
	if !ok {
		return nil, apierrors.NewInternal(fmt.Errorf("pod %s/%s decoded as %T", namespace, name, it.Msg))
	}
	return p, nil
}
