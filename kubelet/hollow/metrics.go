package hollow

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
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

// serveMetrics serves the process's and the nodes' metrics, and the
// nodes' health, on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, n *Nodes, log *slog.Logger) error {
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
	s := &component.Server{Addr: addr, Gatherer: prometheus.Gatherers{component.NewRegistry(), n.Gatherer()},
		Health: n.HealthChecks(), Ready: ready, Logger: log}
	return s.Start(ctx)
}
