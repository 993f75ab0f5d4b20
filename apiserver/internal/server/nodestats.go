package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"

	"skiff.dev/apiserver/internal/kubeletclient"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// nodeProxyPaths are the kubelet paths NodeProxy relays: reads of the
// node's usage, metrics, pods and health. Upstream's nodes/proxy reaches
// any path, exec and logs included; those have subresources of their own
// here, authorized per pod, so the node proxy stays read-only.
var nodeProxyPaths = map[string]bool{
	"/stats/summary":    true,
	"/metrics":          true,
	"/metrics/resource": true,
	"/pods":             true,
	"/healthz":          true,
}

// maxNodeProxyBody bounds a kubelet's answer, which travels as one message.
const maxNodeProxyBody = 64 << 20

// NodeProxy is nodes/proxy for reads: GET of one of nodeProxyPaths on the
// node's kubelet, authorized as upstream's "get nodes/proxy", and the
// kubelet's answer returned whole.
func (s *Service) NodeProxy(ctx context.Context, req *apipb.NodeProxyRequest) (*apipb.NodeProxyResponse, error) {
	c, err := s.begin("get", nodesRef, "proxy")
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, "", req.GetName()); err != nil {
		return nil, err
	}
	path := req.GetPath()
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if !nodeProxyPaths[path] {
		allowed := make([]string, 0, len(nodeProxyPaths))
		for p := range nodeProxyPaths {
			allowed = append(allowed, p)
		}
		sort.Strings(allowed)
		return nil, c.done(apierrors.NewBadRequest(fmt.Sprintf("path %q is not served by the node proxy; it serves %s", req.GetPath(), strings.Join(allowed, ", "))))
	}
	q, err := url.ParseQuery(req.GetQuery())
	if err != nil {
		return nil, c.done(apierrors.NewBadRequest(fmt.Sprintf("query %q: %v", req.GetQuery(), err)))
	}
	if req.GetName() == "" {
		return nil, c.done(apierrors.NewBadRequest("a node name is required"))
	}
	node, err := s.node(ctx, req.GetName())
	if err != nil {
		return nil, c.done(err)
	}
	kc, err := s.kubeletClient()
	if err != nil {
		return nil, c.done(err)
	}
	resp, err := kc.Get(ctx, node, path, q)
	if err != nil {
		var refused *kubeletclient.Error
		if !errors.As(err, &refused) && ctx.Err() == nil && apierrors.ReasonOf(err) == apierrors.ReasonUnknown {
			// Not reached at all: upstream's proxy answers 503.
			return nil, c.done(apierrors.NewUnavailable(err.Error()))
		}
		return nil, c.done(kubeletError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxNodeProxyBody+1))
	if err != nil {
		return nil, c.done(apierrors.NewInternal(fmt.Errorf("reading %s from the kubelet on node %s: %w", path, req.GetName(), err)))
	}
	if len(body) > maxNodeProxyBody {
		return nil, c.done(apierrors.NewTooLarge(fmt.Sprintf("the kubelet on node %s answered %s with more than %d bytes", req.GetName(), path, maxNodeProxyBody)))
	}
	return &apipb.NodeProxyResponse{ContentType: resp.Header.Get("Content-Type"), Body: body}, c.done(nil)
}

// node reads a Node from the registry.
func (s *Service) node(ctx context.Context, name string) (*corev1.Node, error) {
	nk, err := scheme.ForRef(nodesRef)
	if err != nil {
		return nil, err
	}
	o, err := s.reg.Get(ctx, nk, "", name, "")
	if err != nil {
		return nil, err
	}
	node, ok := o.Msg.(*corev1.Node)
	if !ok {
		return nil, apierrors.NewInternal(fmt.Errorf("node %s decoded as %T", name, o.Msg))
	}
	return node, nil
}
