package pluginmanager

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// fakePlugin serves the Registration service on a socket, as a CSI
// driver's registrar does.
type fakePlugin struct {
	registerapi.UnimplementedRegistrationServer
	info     *registerapi.PluginInfo
	statuses chan *registerapi.RegistrationStatus
	srv      *grpc.Server
}

func (f *fakePlugin) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return f.info, nil
}

func (f *fakePlugin) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	f.statuses <- s
	return &registerapi.RegistrationStatusResponse{}, nil
}

func startPlugin(t *testing.T, sock string, info *registerapi.PluginInfo) *fakePlugin {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePlugin{info: info, statuses: make(chan *registerapi.RegistrationStatus, 10), srv: grpc.NewServer()}
	registerapi.RegisterRegistrationServer(f.srv, f)
	go f.srv.Serve(l) //nolint:errcheck // ends with Stop
	t.Cleanup(f.srv.Stop)
	return f
}

type event struct{ op, name, endpoint string }

type fakeHandler struct {
	mu      sync.Mutex
	events  []event
	refuse  error
	changed chan struct{}
}

func (h *fakeHandler) ValidatePlugin(name, endpoint string, versions []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refuse
}

func (h *fakeHandler) RegisterPlugin(_ context.Context, name, endpoint string, versions []string) error {
	h.add(event{"register", name, endpoint})
	return nil
}

func (h *fakeHandler) DeRegisterPlugin(_ context.Context, name, endpoint string) {
	h.add(event{"deregister", name, endpoint})
}

func (h *fakeHandler) add(e event) {
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

func (h *fakeHandler) wait(t *testing.T, n int) []event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		h.mu.Lock()
		ev := append([]event(nil), h.events...)
		h.mu.Unlock()
		if len(ev) >= n {
			return ev
		}
		select {
		case <-h.changed:
		case <-deadline:
			t.Fatalf("waited for %d handler events, have %v", n, ev)
		}
	}
}

func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func run(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

func waitStatus(t *testing.T, f *fakePlugin) *registerapi.RegistrationStatus {
	t.Helper()
	select {
	case s := <-f.statuses:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("the plugin was never told its registration status")
		return nil
	}
}

func TestPluginRegistersAndDeregistersWithItsSocket(t *testing.T) {
	dir := filepath.Join(shortDir(t), "plugins_registry") // made by Run
	h := &fakeHandler{changed: make(chan struct{}, 1)}
	m := run(t, Config{Dir: dir, Handlers: map[string]Handler{registerapi.CSIPlugin: h}, Resync: time.Hour})
	// Wait until the directory is watched: Run makes it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(dir); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)

	sock := filepath.Join(dir, "fake.csi.dev-reg.sock")
	f := startPlugin(t, sock, &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: "fake.csi.dev",
		Endpoint: "/run/fake/csi.sock", SupportedVersions: []string{"1.0.0"}})
	ev := h.wait(t, 1)
	if ev[0] != (event{"register", "fake.csi.dev", "/run/fake/csi.sock"}) {
		t.Fatalf("first event %v", ev[0])
	}
	if s := waitStatus(t, f); !s.GetPluginRegistered() {
		t.Fatalf("status %v, want registered", s)
	}
	if r := m.Registered(); len(r) != 1 || r[0].Name != "fake.csi.dev" || r[0].Socket != sock {
		t.Errorf("Registered() = %v", r)
	}

	// The socket goes: the plugin is deregistered (fsnotify, not the hour-long resync).
	f.srv.Stop()
	os.Remove(sock)
	ev = h.wait(t, 2)
	if ev[1] != (event{"deregister", "fake.csi.dev", "/run/fake/csi.sock"}) {
		t.Fatalf("second event %v", ev[1])
	}
	if r := m.Registered(); len(r) != 0 {
		t.Errorf("Registered() after removal = %v", r)
	}
}

func TestExistingSocketRegistersAtStartAndEmptyEndpointIsTheSocket(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "p.sock")
	f := startPlugin(t, sock, &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: "p", SupportedVersions: []string{"1.0.0"}})
	h := &fakeHandler{changed: make(chan struct{}, 1)}
	run(t, Config{Dir: dir, Handlers: map[string]Handler{registerapi.CSIPlugin: h}})
	if ev := h.wait(t, 1); ev[0] != (event{"register", "p", sock}) {
		t.Fatalf("event %v", ev[0])
	}
	waitStatus(t, f)
}

func TestRefusedPluginIsToldWhyAndRetried(t *testing.T) {
	dir := shortDir(t)
	h := &fakeHandler{changed: make(chan struct{}, 1), refuse: errors.New("no 1.x version")}
	unknown := startPlugin(t, filepath.Join(dir, "dev.sock"), &registerapi.PluginInfo{Type: "DevicePlugin", Name: "gpu"})
	refused := startPlugin(t, filepath.Join(dir, "csi.sock"), &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: "old", SupportedVersions: []string{"0.3.0"}})
	m := run(t, Config{Dir: dir, Handlers: map[string]Handler{registerapi.CSIPlugin: h}, Resync: 50 * time.Millisecond})

	if s := waitStatus(t, unknown); s.GetPluginRegistered() || s.GetError() == "" {
		t.Errorf("plugin of an unknown type: status %v, want refused with a reason", s)
	}
	s := waitStatus(t, refused)
	if s.GetPluginRegistered() || s.GetError() == "" {
		t.Fatalf("refused plugin: status %v", s)
	}
	if len(m.Registered()) != 0 {
		t.Errorf("Registered() = %v", m.Registered())
	}
	// Once the handler accepts it, the retry registers it.
	h.mu.Lock()
	h.refuse = nil
	h.mu.Unlock()
	if ev := h.wait(t, 1); ev[0].name != "old" {
		t.Fatalf("event %v", ev[0])
	}
	for {
		if s := waitStatus(t, refused); s.GetPluginRegistered() {
			break
		}
	}
}
