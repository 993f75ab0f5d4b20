package hollow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"skiff.dev/client/component"
	"skiff.dev/client/config"
)

// dial connects to the apiserver of the kubeconfig at path (the default
// path if empty).
func dial(path string) (*grpc.ClientConn, error) {
	_, conn, err := config.Open(path)
	return conn, err
}

// Gatherer is every node's metrics, each series labelled node=<name>.
// Each kubelet has a registry of its own (app.Config takes a
// *prometheus.Registry, and the nodes' series have the same names), so
// they are merged here rather than registered in one.
func (n *Nodes) Gatherer() prometheus.Gatherer {
	gs := make(prometheus.Gatherers, len(n.nodes))
	for i, nd := range n.nodes {
		gs[i] = labelled{nd.registry, nd.name}
	}
	return gs
}

// labelled adds node=<name> to the series of a node's registry that lack
// a node label (kubelet_node_name has its own).
type labelled struct {
	g    prometheus.Gatherer
	node string
}

func (l labelled) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := l.g.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if slices.ContainsFunc(m.GetLabel(), func(p *dto.LabelPair) bool { return p.GetName() == "node" }) {
				continue
			}
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String("node"), Value: proto.String(l.node)})
			slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
		}
	}
	return mfs, err
}

// serveMetrics serves the process's and the nodes' metrics and the nodes'
// health on addr until ctx ends. component.Server takes one registry, so
// only /metrics is served here and the rest by its handler.
func serveMetrics(ctx context.Context, addr string, n *Nodes, log *slog.Logger) error {
	proc := prometheus.NewRegistry()
	proc.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	health := n.HealthChecks()
	ready := map[string]func(context.Context) error{"registered": func(context.Context) error {
		var missing []string
		for _, nd := range n.nodes {
			if nd.kubelet.Node() == nil {
				missing = append(missing, nd.name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d nodes not registered yet (%s…)", len(missing), missing[0])
		}
		return nil
	}}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{proc, n.Gatherer()}, promhttp.HandlerOpts{}))
	mux.Handle("/", (&component.Server{Health: health, Ready: ready}).Handler())
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("serving metrics and health", "address", l.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
