package server

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// LogContainerHeader is the response header naming the container whose
// log PodLogs streams (the one chosen when the request named none).
const LogContainerHeader = "skiff-log-container"

// logChunk is the most one PodLogsChunk carries: a followed log arrives
// as it is written, a finished one in pieces of this size.
const logChunk = 32 << 10

// PodLogs is the pods/log subresource: the pod's node's kubelet serves
// /containerLogs and the body is relayed as it arrives, as upstream's
// LocationStreamer does.
func (s *Service) PodLogs(req *apipb.PodLogsRequest, stream grpc.ServerStreamingServer[apipb.PodLogsChunk]) error {
	ctx := stream.Context()
	c, err := s.begin("get", podsRef, "log")
	if err != nil {
		return err
	}
	if err := c.authorize(ctx, req.GetNamespace(), req.GetName()); err != nil {
		return err
	}
	q, err := logQuery(req)
	if err != nil {
		return c.done(err)
	}
	ns := req.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	t, err := s.target(ctx, ns, req.GetName())
	if err != nil {
		return c.done(err)
	}
	container, err := containerFor(t.pod, req.GetContainer())
	if err != nil {
		return c.done(err)
	}
	kc, err := s.kubeletClient()
	if err != nil {
		return c.done(err)
	}
	resp, err := kc.Get(ctx, t.node, "/containerLogs/"+url.PathEscape(ns)+"/"+url.PathEscape(req.GetName())+"/"+url.PathEscape(container), q)
	if err != nil {
		return c.done(kubeletError(err))
	}
	defer resp.Body.Close()
	// The header tells the client the log is open (and whose it is)
	// before any line arrives: a followed, quiet log sends none for long.
	if err := stream.SendHeader(metadata.Pairs(LogContainerHeader, container)); err != nil {
		return err
	}
	// Counted once the kubelet answers: a followed log has no end to time.
	c.done(nil)
	buf := make([]byte, logChunk)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if serr := stream.Send(&apipb.PodLogsChunk{Data: append([]byte(nil), buf[:n]...)}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // the client went away
			}
			return apierrors.NewInternal(fmt.Errorf("reading the log from the kubelet on node %s: %w", t.node.GetMetadata().GetName(), err))
		}
	}
}

// logQuery is the request as the kubelet's query, checked as upstream
// validates PodLogOptions.
func logQuery(req *apipb.PodLogsRequest) (url.Values, error) {
	q := url.Values{}
	if req.GetFollow() {
		q.Set("follow", "true")
	}
	if req.GetPrevious() {
		q.Set("previous", "true")
	}
	if req.GetTimestamps() {
		q.Set("timestamps", "true")
	}
	if req.TailLines != nil {
		if req.GetTailLines() < 0 {
			return nil, apierrors.NewBadRequest("tailLines: Invalid value: " + strconv.FormatInt(req.GetTailLines(), 10) + ": must be greater than or equal to 0")
		}
		q.Set("tailLines", strconv.FormatInt(req.GetTailLines(), 10))
	}
	if req.LimitBytes != nil {
		if req.GetLimitBytes() < 1 {
			return nil, apierrors.NewBadRequest("limitBytes: Invalid value: " + strconv.FormatInt(req.GetLimitBytes(), 10) + ": must be greater than 0")
		}
		q.Set("limitBytes", strconv.FormatInt(req.GetLimitBytes(), 10))
	}
	if req.SinceSeconds != nil && req.GetSinceTime() != "" {
		return nil, apierrors.NewBadRequest("at most one of `sinceTime` or `sinceSeconds` may be specified")
	}
	if req.SinceSeconds != nil {
		if req.GetSinceSeconds() < 1 {
			return nil, apierrors.NewBadRequest("sinceSeconds: Invalid value: " + strconv.FormatInt(req.GetSinceSeconds(), 10) + ": must be greater than 0")
		}
		q.Set("sinceSeconds", strconv.FormatInt(req.GetSinceSeconds(), 10))
	}
	if st := req.GetSinceTime(); st != "" {
		t, err := time.Parse(time.RFC3339, st)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("sinceTime: Invalid value: %q: must be an RFC 3339 time", st))
		}
		q.Set("sinceTime", t.UTC().Format(time.RFC3339))
	}
	return q, nil
}
