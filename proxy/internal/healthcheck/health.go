// Package healthcheck serves what load balancers and probes ask of
// skiff-proxy, as upstream's pkg/proxy/healthcheck: /healthz and /livez on
// the healthz address (10256), healthy unless a change has waited longer
// than the health timeout (twice the sync period) for its rules, /healthz
// also unhealthy while the node is being deleted so load balancers drain it
// first (this file); and each Local-policy Service's health check node
// port, with its count of local endpoints (service.go).
package healthcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"skiff.dev/client/component"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proxy/internal/metrics"
)

// ToBeDeletedTaint is the cluster autoscaler's mark on a node it will
// remove.
const ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// ProxierHealth is one family's health.
type ProxierHealth struct {
	LastUpdated time.Time `json:"lastUpdated"`
	Healthy     bool      `json:"healthy"`
}

// ProxyHealth is the JSON body of /healthz and /livez, upstream's shape.
type ProxyHealth struct {
	LastUpdated  time.Time                `json:"lastUpdated"`
	CurrentTime  time.Time                `json:"currentTime"`
	NodeEligible *bool                    `json:"nodeEligible,omitempty"`
	Healthy      bool                     `json:"healthy"`
	Status       map[string]ProxierHealth `json:"status,omitempty"`
}

// Server tracks sync health and serves it.
type Server struct {
	Addr    string
	Timeout time.Duration
	// Node returns the node as last seen (nil: not seen yet).
	Node    func() *corev1.Node
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	Now     func() time.Time

	mu            sync.RWMutex
	lastUpdated   map[string]time.Time
	oldestPending map[string]time.Time
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) init() {
	if s.lastUpdated == nil {
		s.lastUpdated = map[string]time.Time{}
		s.oldestPending = map[string]time.Time{}
	}
}

// Updated: family's rules reflect every change queued so far.
func (s *Server) Updated(family string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	delete(s.oldestPending, family)
	s.lastUpdated[family] = s.now()
}

// QueuedUpdate: family has a change not yet in its rules.
func (s *Server) QueuedUpdate(family string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if _, ok := s.oldestPending[family]; !ok {
		s.oldestPending[family] = s.now()
	}
}

// Health is the current health.
func (s *Server) Health() ProxyHealth {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := ProxyHealth{Healthy: true, Status: map[string]ProxierHealth{}, CurrentTime: s.now()}
	for fam, t := range s.lastUpdated {
		if t.After(h.LastUpdated) {
			h.LastUpdated = t
		}
		healthy := true
		if q, ok := s.oldestPending[fam]; ok && h.CurrentTime.Sub(q) >= s.Timeout {
			healthy = false
			h.Healthy = false
		}
		h.Status[fam] = ProxierHealth{LastUpdated: t, Healthy: healthy}
	}
	return h
}

// NodeEligible: the node exists and is not on its way out.
func (s *Server) NodeEligible() bool {
	if s.Node == nil {
		return true
	}
	n := s.Node()
	if n == nil || n.GetMetadata().GetDeletionTimestamp() != nil {
		return false
	}
	for _, t := range n.GetSpec().GetTaints() {
		if t.GetKey() == ToBeDeletedTaint {
			return false
		}
	}
	return true
}

// Handler serves /healthz and /livez.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		h := s.Health()
		eligible := s.NodeEligible()
		h.NodeEligible = &eligible
		s.write(w, h, h.Healthy && eligible, s.counter(true))
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		h := s.Health()
		s.write(w, h, h.Healthy, s.counter(false))
	})
	return mux
}

func (s *Server) counter(healthz bool) func(code string) {
	return func(code string) {
		if s.Metrics == nil {
			return
		}
		if healthz {
			s.Metrics.HealthzTotal.WithLabelValues(code).Inc()
		} else {
			s.Metrics.LivezTotal.WithLabelValues(code).Inc()
		}
	}
}

func (s *Server) write(w http.ResponseWriter, h ProxyHealth, healthy bool, count func(string)) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if healthy {
		// Upstream reports "now" when healthy: older clients read
		// lastUpdated as "the sync loop is alive".
		h.LastUpdated = s.now()
		count("200")
		w.WriteHeader(http.StatusOK)
	} else {
		count("503")
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	out, _ := json.Marshal(h)
	w.Write(out)
}

// Start serves on Addr until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("--healthz-bind-address: %w", err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	if s.Logger != nil {
		s.Logger.Info("serving proxy health", "address", l.Addr().String())
	}
	return component.ServeUntil(ctx, srv, l, 5*time.Second)
}
