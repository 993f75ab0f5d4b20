package client

import (
	"context"
	"io"
	"time"

	"google.golang.org/grpc"

	"skiff.dev/proto/apipb"
)

// LogOptions are upstream's PodLogOptions: what of a container's log to
// read. Nil pointers are unset.
type LogOptions struct {
	// Container is the container's name; empty means the pod's only one.
	Container    string
	Follow       bool
	Previous     bool
	Timestamps   bool
	SinceSeconds *int64
	SinceTime    *time.Time
	TailLines    *int64
	LimitBytes   *int64
}

// PodLogs opens a container's log (pods/log), as client-go's
// GetLogs(...).Stream: it returns once the apiserver has reached the
// kubelet, so a refusal (no such container, a pod not yet running) is its
// error, and the log is then read from the reader until io.EOF (never,
// with Follow, until the container stops). Close the reader, or cancel
// ctx, to stop reading.
func (c *Client) PodLogs(ctx context.Context, namespace, name string, opts LogOptions) (io.ReadCloser, error) {
	req := &apipb.PodLogsRequest{Namespace: namespace, Name: name, Container: opts.Container,
		Follow: opts.Follow, Previous: opts.Previous, Timestamps: opts.Timestamps,
		SinceSeconds: opts.SinceSeconds, TailLines: opts.TailLines, LimitBytes: opts.LimitBytes}
	if opts.SinceTime != nil {
		req.SinceTime = opts.SinceTime.UTC().Format(time.RFC3339)
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.API.PodLogs(ctx, req)
	if err != nil {
		cancel()
		return nil, err
	}
	r := &logReader{stream: stream, cancel: cancel}
	// A stream that ends before its header is a refusal: its status is
	// the error.
	md, err := stream.Header()
	if err == nil && md == nil {
		chunk, rerr := stream.Recv()
		switch {
		case rerr == nil:
			r.buf = chunk.GetData()
		case rerr == io.EOF:
			r.err = io.EOF
		default:
			err = rerr
		}
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return r, nil
}

type logReader struct {
	stream grpc.ServerStreamingClient[apipb.PodLogsChunk]
	cancel context.CancelFunc
	buf    []byte
	err    error
}

func (r *logReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		chunk, err := r.stream.Recv()
		if err != nil {
			r.err = err
			continue
		}
		r.buf = chunk.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *logReader) Close() error {
	r.cancel()
	return nil
}
