package client

import (
	"context"
	"net/url"

	"skiff.dev/proto/apipb"
)

// NodeProxy reads path from node's kubelet through the apiserver (the read
// side of nodes/proxy, as `kubectl get --raw /api/v1/nodes/NAME/proxy/PATH`):
// one of /stats/summary, /metrics, /metrics/resource, /pods and /healthz.
// It returns the kubelet's body; a kubelet's refusal is the error, with the
// kubelet's message.
func (c *Client) NodeProxy(ctx context.Context, node, path string, query url.Values) ([]byte, error) {
	resp, err := c.API.NodeProxy(ctx, &apipb.NodeProxyRequest{Name: node, Path: path, Query: query.Encode()})
	if err != nil {
		return nil, err
	}
	return resp.GetBody(), nil
}

// NodeStatsSummary is node's kubelet's /stats/summary, the Summary API's
// JSON (k8s.io/kubelet/pkg/apis/stats/v1alpha1), cut to CPU and memory
// when onlyCPUAndMemory, as metrics-server asks.
func (c *Client) NodeStatsSummary(ctx context.Context, node string, onlyCPUAndMemory bool) ([]byte, error) {
	var q url.Values
	if onlyCPUAndMemory {
		q = url.Values{"only_cpu_and_memory": {"true"}}
	}
	return c.NodeProxy(ctx, node, "/stats/summary", q)
}
