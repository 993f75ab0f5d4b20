package cri

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// server serves a Fake over gRPC: cri-api ships no server, so the few
// calls under test are wired by hand and the rest answer Unimplemented.
type server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer
	f        *Fake
	exitCode int32
	auth     *runtimeapi.AuthConfig
}

func (s *server) Version(ctx context.Context, r *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return s.f.FakeRuntimeService.Version(ctx, r.Version)
}
func (s *server) RunPodSandbox(ctx context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	id, err := s.f.RunPodSandbox(ctx, r.Config, r.RuntimeHandler)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, err
}
func (s *server) ListPodSandbox(ctx context.Context, r *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	items, err := s.f.ListPodSandbox(ctx, r.Filter)
	return &runtimeapi.ListPodSandboxResponse{Items: items}, err
}
func (s *server) ExecSync(ctx context.Context, r *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	return &runtimeapi.ExecSyncResponse{Stdout: []byte(strings.Join(r.Cmd, " ")), ExitCode: s.exitCode}, nil
}
func (s *server) PullImage(ctx context.Context, r *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	s.auth = r.Auth
	ref, err := s.f.PullImage(ctx, r.Image, r.Auth, r.SandboxConfig)
	return &runtimeapi.PullImageResponse{ImageRef: ref}, err
}
func (s *server) ImageStatus(ctx context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return s.f.ImageStatus(ctx, r.Image, r.Verbose)
}

func serve(t *testing.T) (string, *server) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{f: NewFake()}
	g := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	runtimeapi.RegisterImageServiceServer(g, s)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	return sock, s
}

func TestDialAndCalls(t *testing.T) {
	sock, s := serve(t)
	ctx := context.Background()
	for _, ep := range []string{"unix://" + sock, sock} {
		r, err := Dial(ctx, ep, 5*time.Second)
		if err != nil {
			t.Fatalf("Dial(%s): %v", ep, err)
		}
		v, err := r.Version(ctx, "v1")
		if err != nil || v.RuntimeName != "fakeRuntime" {
			t.Fatalf("Version = %v, %v", v, err)
		}
		r.Close(ctx)
	}
	r, err := Dial(ctx, sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)

	md := &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "u1"}
	id, err := r.RunPodSandbox(ctx, &runtimeapi.PodSandboxConfig{Metadata: md, Labels: map[string]string{"io.kubernetes.pod.uid": "u1"}}, "")
	if err != nil || id == "" {
		t.Fatalf("RunPodSandbox = %q, %v", id, err)
	}
	items, err := r.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"io.kubernetes.pod.uid": "u1"}})
	if err != nil || len(items) != 1 || items[0].Id != id {
		t.Fatalf("ListPodSandbox = %v, %v", items, err)
	}

	out, _, err := r.ExecSync(ctx, "c1", []string{"echo", "hi"}, time.Second)
	if err != nil || string(out) != "echo hi" {
		t.Fatalf("ExecSync = %q, %v", out, err)
	}
	s.exitCode = 3
	_, _, err = r.ExecSync(ctx, "c1", []string{"false"}, time.Second)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 3 {
		t.Fatalf("ExecSync exit 3: err = %v, want an ExitError with code 3", err)
	}

	img := &runtimeapi.ImageSpec{Image: "skiff.local/pause:3.10"}
	st, err := r.ImageStatus(ctx, img, false)
	if err != nil || st.Image != nil {
		t.Fatalf("ImageStatus before pull = %v, %v; want no image", st, err)
	}
	ref, err := r.PullImage(ctx, img, &runtimeapi.AuthConfig{Username: "u", Password: "p"}, nil)
	if err != nil || ref != img.Image {
		t.Fatalf("PullImage = %q, %v", ref, err)
	}
	if s.auth.GetUsername() != "u" || s.auth.GetPassword() != "p" {
		t.Errorf("PullImage auth at the runtime = %v, want u/p", s.auth)
	}

	if _, err := r.ListContainers(ctx, nil); err == nil || !strings.Contains(err.Error(), "Unimplemented") {
		t.Fatalf("ListContainers on a server without it: err = %v, want Unimplemented", err)
	}
}

func TestDialErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Dial(ctx, "tcp://127.0.0.1:1", time.Second); err == nil {
		t.Error("Dial tcp:// succeeded; only unix sockets are supported")
	}
	if _, err := Dial(ctx, "", time.Second); err == nil {
		t.Error("Dial of an empty endpoint succeeded")
	}
	start := time.Now()
	_, err := Dial(ctx, filepath.Join(t.TempDir(), "absent.sock"), 200*time.Millisecond)
	if err == nil {
		t.Fatal("Dial of a missing socket succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Dial of a missing socket took %v, want about its 200ms timeout", d)
	}
}
