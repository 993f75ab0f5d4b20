// Package registrar is the node-driver-registrar's part folded into the
// driver: a pluginregistration/v1 Registration service on
// <registration-dir>/<driver>-reg.sock that tells the kubelet's plugin
// manager the driver's name, its CSI endpoint and the CSI versions it
// speaks, and hears back whether the kubelet registered it.
package registrar

import (
	"context"
	"log/slog"
	"sync"

	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Server is the Registration service of one CSI driver.
type Server struct {
	registerapi.UnimplementedRegistrationServer
	Name     string
	Endpoint string // the driver's CSI socket path
	Log      *slog.Logger

	mu     sync.Mutex
	status *registerapi.RegistrationStatus
	// Notified receives every status the kubelet sends (buffered, newest
	// kept); nil sends none.
	Notified chan *registerapi.RegistrationStatus
}

// GetInfo answers the plugin manager.
func (s *Server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: s.Name, Endpoint: s.Endpoint,
		SupportedVersions: []string{"1.0.0"}}, nil
}

// NotifyRegistrationStatus records (and logs) the kubelet's verdict.
// Upstream's registrar exits on a refusal so that its pod restarts; this
// one keeps serving, and the kubelet tries again.
func (s *Server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	s.mu.Lock()
	s.status = st
	s.mu.Unlock()
	if s.Log != nil {
		if st.GetPluginRegistered() {
			s.Log.Info("Registered with the kubelet", "driver", s.Name)
		} else {
			s.Log.Error("The kubelet refused the registration", "driver", s.Name, "err", st.GetError())
		}
	}
	if s.Notified != nil {
		select {
		case s.Notified <- st:
		default:
		}
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Registered says whether the kubelet's last word was a registration.
func (s *Server) Registered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status.GetPluginRegistered()
}
