package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// panicky panics where a registry bug would: Get in the handler itself,
// Discovery with a runtime error, List with panic(nil), Watch after it has
// sent an event.
type panicky struct {
	apipb.UnimplementedAPIServer
}

func (panicky) Get(context.Context, *apipb.GetRequest) (*anypb.Any, error) {
	panic("unreachable")
}

func (panicky) Discovery(context.Context, *apipb.DiscoveryRequest) (*apipb.DiscoveryResponse, error) {
	// A runtime error, as the nil dereferences of issue 8 were.
	return &apipb.DiscoveryResponse{ServerVersion: (&apipb.DiscoveryResponse{}).GetResources()[0].GetKind()}, nil
}

func (panicky) List(context.Context, *apipb.ListRequest) (*apipb.ListResponse, error) {
	panic(nil)
}

func (panicky) Delete(context.Context, *apipb.DeleteRequest) (*anypb.Any, error) {
	return nil, apierrors.NewNotFound("pods", "web-0")
}

func (panicky) Watch(_ *apipb.WatchRequest, stream grpc.ServerStreamingServer[apipb.WatchEvent]) error {
	if err := stream.Send(&apipb.WatchEvent{Type: "ADDED", ResourceVersion: "7"}); err != nil {
		return err
	}
	panic("watch went wrong after an event")
}

// syncBuffer is a log sink the server's goroutines and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type recoveryFixture struct {
	api  apipb.APIClient
	logs *syncBuffer
	reg  *prometheus.Registry
}

func startRecovery(t *testing.T) *recoveryFixture {
	t.Helper()
	f := &recoveryFixture{logs: &syncBuffer{}, reg: prometheus.NewRegistry()}
	unary, stream := Recovery(slog.New(slog.NewTextHandler(f.logs, nil)), f.reg)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	apipb.RegisterAPIServer(srv, panicky{})
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f.api = apipb.NewAPIClient(conn)
	return f
}

func (f *recoveryFixture) panics(t *testing.T, method string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "apiserver_panics_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && l.GetValue() == method {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// wantInternal checks the one answer a panic gives: Internal, upstream's
// reason and message, nothing of the panic value.
func wantInternal(t *testing.T, err error, leak string) {
	t.Helper()
	if status.Code(err) != codes.Internal {
		t.Fatalf("error = %v, want code Internal", err)
	}
	if r := apierrors.ReasonOf(err); r != apierrors.ReasonInternal {
		t.Errorf("reason = %q, want %q", r, apierrors.ReasonInternal)
	}
	msg := apierrors.Message(err)
	if !strings.HasPrefix(msg, "Internal error occurred: ") {
		t.Errorf("message = %q, want upstream's \"Internal error occurred: ...\"", msg)
	}
	if leak != "" && strings.Contains(msg, leak) || strings.Contains(msg, "goroutine") || strings.Contains(msg, ".go:") {
		t.Errorf("message %q leaks the panic to the client", msg)
	}
}

// wantLogged checks the one Error line of a recovered panic: method, value
// and a stack that reaches the panicking handler.
func (f *recoveryFixture) wantLogged(t *testing.T, method, value, frame string) {
	t.Helper()
	var lines []string
	for l := range strings.SplitSeq(f.logs.String(), "\n") {
		if strings.Contains(l, "method="+method+" ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("want one log line for %s, got %d:\n%s", method, len(lines), f.logs.String())
	}
	l := lines[0]
	for _, want := range []string{"level=ERROR", `msg="apiserver panic'd"`, value, "stack=", frame} {
		if !strings.Contains(l, want) {
			t.Errorf("log line lacks %q:\n%s", want, l)
		}
	}
}

func TestRecoveryUnary(t *testing.T) {
	f := startRecovery(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name, method, value, frame string
		call                       func() error
	}{
		{"panic value", apipb.API_Get_FullMethodName, "panic=unreachable", "panicky.Get", func() error {
			_, err := f.api.Get(ctx, &apipb.GetRequest{Name: "x"})
			return err
		}},
		{"runtime error", apipb.API_Discovery_FullMethodName, `panic="runtime error: index out of range [0] with length 0"`, "panicky.Discovery", func() error {
			_, err := f.api.Discovery(ctx, &apipb.DiscoveryRequest{})
			return err
		}},
		{"panic(nil)", apipb.API_List_FullMethodName, "panic called with nil argument", "panicky.List", func() error {
			_, err := f.api.List(ctx, &apipb.ListRequest{})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantInternal(t, tt.call(), "unreachable")
			if n := f.panics(t, tt.method); n != 1 {
				t.Errorf("apiserver_panics_total{method=%q} = %v, want 1", tt.method, n)
			}
			f.wantLogged(t, tt.method, tt.value, tt.frame)
		})
	}

	t.Run("errors pass through", func(t *testing.T) {
		_, err := f.api.Delete(ctx, &apipb.DeleteRequest{Name: "web-0"})
		if !apierrors.IsNotFound(err) {
			t.Errorf("error = %v, want NotFound unchanged", err)
		}
		if n := f.panics(t, apipb.API_Delete_FullMethodName); n != 0 {
			t.Errorf("apiserver_panics_total{method=Delete} = %v, want 0", n)
		}
	})
	t.Run("server still serves", func(t *testing.T) {
		_, err := f.api.Get(ctx, &apipb.GetRequest{})
		wantInternal(t, err, "")
		if n := f.panics(t, apipb.API_Get_FullMethodName); n != 2 {
			t.Errorf("apiserver_panics_total{method=Get} = %v, want 2", n)
		}
	})
}

func TestRecoveryStream(t *testing.T) {
	f := startRecovery(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := f.api.Watch(ctx, &apipb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := w.Recv()
	if err != nil {
		t.Fatalf("first event: %v", err)
	}
	if ev.GetType() != "ADDED" || ev.GetResourceVersion() != "7" {
		t.Errorf("first event = %v, want the ADDED sent before the panic", ev)
	}
	_, err = w.Recv()
	if errors.Is(err, io.EOF) {
		t.Fatal("stream ended cleanly after a panic, want Internal")
	}
	wantInternal(t, err, "watch went wrong")
	if n := f.panics(t, apipb.API_Watch_FullMethodName); n != 1 {
		t.Errorf("apiserver_panics_total{method=Watch} = %v, want 1", n)
	}
	f.wantLogged(t, apipb.API_Watch_FullMethodName, `panic="watch went wrong after an event"`, "panicky.Watch")

	// The panic ended one stream, not the server.
	if _, err := f.api.Get(ctx, &apipb.GetRequest{}); status.Code(err) != codes.Internal {
		t.Errorf("Get after the stream's panic = %v, want the server still answering", err)
	}
}

func TestRecoveryNilDependencies(t *testing.T) {
	// A nil registerer and logger are allowed, as NewService allows them.
	unary, _ := Recovery(nil, nil)
	_, err := unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/Y"}, func(context.Context, any) (any, error) {
		panic("boom")
	})
	wantInternal(t, err, "boom")
}
