package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"skiff.dev/proto/apierrors"
)

// errPanicked is what the client sees of a panic: upstream's apiserver
// answers 500 with a pointer to its log and nothing of the panic itself,
// since the value and the stack may carry other users' data.
var errPanicked = errors.New("this request caused apiserver to panic, look in the logs for details")

// Recovery returns the interceptors that turn a panic in a handler into an
// Internal answer, so that one bad request costs one request and not the
// apiserver and the embedded etcd with it (upstream's WithPanicRecovery).
// They belong outermost in the chain, before authentication, so a panic in
// any interceptor is caught too. Panics in goroutines a handler starts are
// not caught: those still end the process.
//
// Upstream counts no recovered panics (apiserver_request_terminations_total
// and apiserver_request_aborts_total are for requests the server itself
// cut short), so the counter has a name of our own:
// apiserver_panics_total{method}.
func Recovery(log *slog.Logger, reg prometheus.Registerer) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	if log == nil {
		log = slog.Default()
	}
	panics := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "apiserver_panics_total",
		Help: "Counter of panics recovered while serving a request, broken out by gRPC method.",
	}, []string{"method"})
	if reg != nil {
		reg.MustRegister(panics)
	}
	// recovered runs deferred in the panicking goroutine, before the stack
	// unwinds, so debug.Stack shows where the panic happened.
	recovered := func(ctx context.Context, method string, p any) error {
		panics.WithLabelValues(method).Inc()
		// fmt survives a value whose String or Error method panics too.
		log.ErrorContext(ctx, "apiserver panic'd", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return apierrors.NewInternal(errPanicked)
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				resp, err = nil, recovered(ctx, info.FullMethod, p)
			}
		}()
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				// Events already sent stay sent; the status ends the stream.
				err = recovered(ss.Context(), info.FullMethod, p)
			}
		}()
		return handler(srv, ss)
	}
	return unary, stream
}
