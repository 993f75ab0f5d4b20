package healthcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"skiff.dev/proxy/internal/proxy"
)

// ServiceConfig builds a ServiceServer for one IP family.
type ServiceConfig struct {
	Family proxy.Family
	// Addresses are the node's NodePort addresses of Family, where the
	// health checks listen, as upstream's --nodeport-addresses decides:
	// a load balancer probes the node where it sends NodePort traffic.
	// Asked again on every SyncServices that has something to serve, so a
	// change of the node's addresses moves the listeners. nil: the
	// family's wildcard address (every address), as upstream listens when
	// --nodeport-addresses matches everything.
	Addresses func() ([]netip.Addr, error)
	// Listen opens a listener (default net.Listen): tests open theirs in
	// a network namespace, or fail on purpose.
	Listen func(network, address string) (net.Listener, error)
	// Proxy is the proxy's own health, answered as serviceProxyHealthy: a
	// proxy whose rules lag behind cannot vouch for its endpoints.
	Proxy  interface{ Health() ProxyHealth }
	Logger *slog.Logger
}

// ServiceServer is upstream's service health server for one family: on
// the health check node port of every Service it is told of (an
// externalTrafficPolicy=Local LoadBalancer), an HTTP server that answers
// any path with the Service's local endpoint count, 200 when there is one
// and the proxy is healthy, else 503. One per family, each on its own
// family's sockets (tcp4, tcp6), so that a dual-stack Service's two
// servers do not fight over one dual-stack wildcard socket (upstream's
// kubernetes#114702, fixed the same way).
type ServiceServer struct {
	cfg     ServiceConfig
	network string
	log     *slog.Logger

	mu       sync.RWMutex
	services map[proxy.NamespacedName]*hcInstance
	counts   map[proxy.NamespacedName]int
	closed   bool
}

// hcInstance is one Service's listeners.
type hcInstance struct {
	name    proxy.NamespacedName
	port    uint16
	addrs   string // the addresses listened on, sorted, as one key
	servers []*http.Server
}

// NewServiceServer builds the server; it listens on nothing until
// SyncServices names a Service.
func NewServiceServer(cfg ServiceConfig) *ServiceServer {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Listen == nil {
		cfg.Listen = net.Listen
	}
	network := "tcp4"
	if cfg.Family == proxy.IPv6 {
		network = "tcp6"
	}
	return &ServiceServer{cfg: cfg, network: network, log: cfg.Logger.With("ipFamily", string(cfg.Family)),
		services: map[proxy.NamespacedName]*hcInstance{}, counts: map[proxy.NamespacedName]int{}}
}

// SyncServices serves exactly ports: listeners of Services gone, or whose
// port or addresses changed, are closed, and new ones opened. A port that
// cannot be bound (taken by another process, say) is reported in the error
// and tried again on the next call; the other Services are served anyway.
func (s *ServiceServer) SyncServices(ports map[proxy.NamespacedName]uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	want := make(map[proxy.NamespacedName]uint16, len(ports))
	for nn, p := range ports {
		// Port 0 would listen where the kernel chooses, which no load
		// balancer knows.
		if p != 0 {
			want[nn] = p
		}
	}
	ports = want
	var addrs []string
	if len(ports) > 0 {
		var err error
		if addrs, err = s.addresses(); err != nil {
			// Listeners already open stay: a failed look at the
			// interfaces says nothing about where they should be.
			for nn, inst := range s.services {
				if p, ok := ports[nn]; !ok || p != inst.port {
					s.closeInstance(inst)
				}
			}
			return fmt.Errorf("service health checks: listing the NodePort addresses: %w", err)
		}
	}
	key := strings.Join(addrs, ",")
	// Close first: a port one Service gives up may be the one another
	// takes in the same sync.
	for nn, inst := range s.services {
		if p, ok := ports[nn]; !ok || p != inst.port || inst.addrs != key {
			s.closeInstance(inst)
		}
	}
	if len(ports) > 0 && len(addrs) == 0 {
		// Where the node has no NodePort address of this family, NodePorts
		// do not work either; a load balancer should hear nothing here.
		return fmt.Errorf("service health checks: no %s NodePort address to listen on yet", s.cfg.Family)
	}
	names := make([]proxy.NamespacedName, 0, len(ports))
	for nn := range ports {
		if s.services[nn] == nil {
			names = append(names, nn)
		}
	}
	// A fixed order, so that of two Services claiming one port the same
	// one wins every time.
	slices.SortFunc(names, func(a, b proxy.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	var errs []error
	for _, nn := range names {
		if err := s.open(nn, ports[nn], addrs, key); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// addresses are the hosts to listen on, sorted and each once.
func (s *ServiceServer) addresses() ([]string, error) {
	if s.cfg.Addresses == nil {
		if s.cfg.Family == proxy.IPv6 {
			return []string{"::"}, nil
		}
		return []string{"0.0.0.0"}, nil
	}
	as, err := s.cfg.Addresses()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range as {
		a = a.Unmap()
		if !a.IsValid() || proxy.FamilyOf(a) != s.cfg.Family {
			continue
		}
		out = append(out, a.String())
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// open listens on every address or none: half a Service's listeners would
// answer some probes and refuse others.
func (s *ServiceServer) open(nn proxy.NamespacedName, port uint16, addrs []string, key string) error {
	inst := &hcInstance{name: nn, port: port, addrs: key}
	var listeners []net.Listener
	for _, a := range addrs {
		l, err := s.cfg.Listen(s.network, net.JoinHostPort(a, strconv.Itoa(int(port))))
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("service health check of %s on port %d: %w", nn, port, err)
		}
		listeners = append(listeners, l)
	}
	s.log.Info("opening healthcheck", "service", nn.String(), "port", port, "addresses", addrs)
	s.services[nn] = inst
	for _, l := range listeners {
		srv := &http.Server{Handler: s.handler(inst), ReadHeaderTimeout: 10 * time.Second}
		inst.servers = append(inst.servers, srv)
		go s.serve(inst, srv, l)
	}
	return nil
}

func (s *ServiceServer) serve(inst *hcInstance, srv *http.Server, l net.Listener) {
	err := srv.Serve(l)
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		return
	}
	s.log.Error("healthcheck stopped serving", "service", inst.name.String(), "address", l.Addr().String(), "err", err)
	// Forgotten, the Service is opened again on the next sync.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.services[inst.name] == inst {
		s.closeInstance(inst)
	}
}

// closeInstance closes inst's listeners and forgets it; s.mu is held.
func (s *ServiceServer) closeInstance(inst *hcInstance) {
	s.log.Info("closing healthcheck", "service", inst.name.String(), "port", inst.port)
	for _, srv := range inst.servers {
		// Close, not Shutdown: it neither waits for requests in flight
		// (whose handlers need s.mu, held here) nor fails.
		srv.Close()
	}
	if s.services[inst.name] == inst {
		delete(s.services, inst.name)
	}
}

// SyncEndpoints takes the local endpoint counts, by Service; a Service
// missing from counts has none. Counts of Services not (yet) served are
// kept, so a listener opened later answers with them at once.
func (s *ServiceServer) SyncEndpoints(counts map[proxy.NamespacedName]int) error {
	cp := make(map[proxy.NamespacedName]int, len(counts))
	for nn, n := range counts {
		if n > 0 {
			cp[nn] = n
		}
	}
	s.mu.Lock()
	s.counts = cp
	s.mu.Unlock()
	return nil
}

// Close closes every listener; later syncs open none.
func (s *ServiceServer) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, inst := range s.services {
		s.closeInstance(inst)
	}
}

// serviceHealthBody is upstream's JSON answer.
type serviceHealthBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (s *ServiceServer) handler(inst *hcInstance) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.mu.RLock()
		count := 0
		// A request racing the listener's close hears "no endpoints", not
		// a count the Service no longer stands behind.
		if s.services[inst.name] == inst {
			count = s.counts[inst.name]
		}
		s.mu.RUnlock()
		healthy := true
		if s.cfg.Proxy != nil {
			healthy = s.cfg.Proxy.Health().Healthy
		}
		var body serviceHealthBody
		body.Service.Namespace, body.Service.Name = inst.name.Namespace, inst.name.Name
		body.LocalEndpoints, body.ServiceProxyHealthy = count, healthy
		out, _ := json.Marshal(body)
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("X-Content-Type-Options", "nosniff")
		// Load balancers that weigh nodes (GCE's WEIGHTED_MAGLEV) read
		// the count here.
		h.Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(count))
		if count > 0 && healthy {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write(out)
	})
}
