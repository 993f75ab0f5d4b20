package app

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"skiff.dev/apiserver/internal/admission"
	"skiff.dev/apiserver/internal/admission/defaulttolerationseconds"
	"skiff.dev/apiserver/internal/admission/limitranger"
	"skiff.dev/apiserver/internal/admission/namespacelifecycle"
	"skiff.dev/apiserver/internal/admission/resourcequota"
	saadmission "skiff.dev/apiserver/internal/admission/serviceaccount"
	"skiff.dev/apiserver/internal/etcd"
	"skiff.dev/apiserver/internal/kubeletclient"
	"skiff.dev/apiserver/internal/kubernetesservice"
	"skiff.dev/apiserver/internal/metricsapi"
	"skiff.dev/apiserver/internal/pki"
	"skiff.dev/apiserver/internal/registry"
	"skiff.dev/apiserver/internal/server"
	"skiff.dev/apiserver/internal/serviceaccount"
	"skiff.dev/apiserver/internal/servicealloc"
	"skiff.dev/apiserver/internal/storage"
	"skiff.dev/apiserver/internal/validation"
	"skiff.dev/client/component"
	"skiff.dev/client/config"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// Server is a running apiserver.
type Server struct {
	opts     Options
	log      *slog.Logger
	Registry *prometheus.Registry

	ready    chan struct{}
	listener net.Listener
	metrics  net.Listener
	grpc     *grpc.Server
	health   *health.Server
	service  *server.Service
	reg      *registry.Registry
	store    *storage.Store
	etcdCli  *clientv3.Client
	etcd     *etcd.Server
	bundle   *pki.Bundle
	alloc    *servicealloc.Allocator
	// metricsAPI serves metrics.k8s.io (nil with --metric-resolution=0).
	metricsAPI *metricsapi.Server
	// advertise is where pods reach this apiserver (--advertise-address).
	advertise netip.Addr

	closeOnce sync.Once
}

// New prepares a server: certificates, etcd, listeners. Start serves.
func New(ctx context.Context, o Options, log *slog.Logger) (_ *Server, err error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Server{opts: o, log: log, ready: make(chan struct{}), Registry: prometheus.NewRegistry()}
	// s is not the named result: every failure returns nil for it, and
	// what was opened until then must still be closed.
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}

	certFile, keyFile, caFile := o.TLSCertFile, o.TLSPrivateKeyFile, o.ClientCAFile
	if certFile == "" {
		s.bundle, err = pki.Ensure(filepath.Join(o.DataDir, "pki"), append(slices.Clone(o.TLSSANs), kubernetesServiceSANs(o)...))
		if err != nil {
			return nil, fmt.Errorf("certificates: %w", err)
		}
		certFile, keyFile = s.bundle.ServerCert, s.bundle.ServerKey
		if caFile == "" {
			caFile = s.bundle.CACert
		}
	}
	tlsCfg, err := pki.ServerTLS(certFile, keyFile, caFile)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}

	endpoints := o.EtcdServers
	if len(endpoints) == 0 {
		s.etcd, err = etcd.Start(ctx, filepath.Join(o.DataDir, "etcd"))
		if err != nil {
			return nil, err
		}
		endpoints = []string{s.etcd.Endpoint}
		log.Info("embedded etcd started", "endpoint", s.etcd.Endpoint)
	}
	s.etcdCli, err = etcd.Dial(ctx, endpoints)
	if err != nil {
		return nil, err
	}
	s.store = storage.New(s.etcdCli, o.EtcdPrefix, s.Registry)
	issuer, verifyKeys, err := s.serviceAccountKeys()
	if err != nil {
		return nil, err
	}
	// Upstream's default plugins that apply to what Skiff serves, in
	// upstream's order; more arrive with RBAC and the node authorizer.
	saPlugin := saadmission.New()
	limitPlugin, quotaPlugin := limitranger.New(), resourcequota.New()
	var plugins []admission.Plugin
	for _, p := range []admission.Plugin{namespacelifecycle.New(), limitPlugin, saPlugin,
		defaulttolerationseconds.New(o.DefaultNotReadyTolerationSeconds, o.DefaultUnreachableTolerationSeconds), quotaPlugin} {
		if !slices.Contains(o.DisableAdmissionPlugins, p.Name()) {
			plugins = append(plugins, p)
		}
	}
	chain := admission.NewChain(s.Registry, plugins...)
	ranges, _ := o.serviceRanges() // Validate saw to both
	ports, _ := o.nodePortRange()
	if s.advertise, err = o.advertiseAddress(realHost); err != nil {
		return nil, err
	}
	if err := checkAdvertise(s.advertise); err != nil {
		return nil, err
	}
	s.alloc = servicealloc.New(servicealloc.Config{Store: s.store, IPRanges: ranges, NodePorts: ports,
		Registerer: s.Registry, Logger: log.With("component", "service-allocator")})
	s.reg = registry.New(registry.Config{Store: s.store, Admission: chain, Logger: log, Registerer: s.Registry,
		Tokens:     &registry.TokenIssuer{Issuer: issuer, APIAudiences: o.apiAudiences()},
		SideKeys:   map[*scheme.Kind]registry.SideKeys{serviceKind: s.alloc},
		Validation: validation.Options{NodePortMin: int32(ports.Base), NodePortMax: int32(ports.Last())}})
	saPlugin.SetServiceAccountGetter(s.reg)
	limitPlugin.SetStore(limitranger.RegistryStore(s.reg))
	quotaPlugin.SetStore(resourcequota.RegistryStore(s.reg))
	tokens, err := serviceaccount.NewAuthenticator(o.ServiceAccountIssuers, verifyKeys, s.reg)
	if err != nil {
		return nil, fmt.Errorf("--service-account-key-file: %w", err)
	}
	authn := &server.Authentication{Tokens: tokens, APIAudiences: o.apiAudiences()}
	s.service = server.NewService(s.reg, nil, log, s.Registry)
	s.service.SetAuthentication(authn)
	kcert, kkey := o.KubeletClientCertificate, o.KubeletClientKey
	if kcert == "" && s.bundle != nil {
		kcert, kkey = s.bundle.KubeletClientCert, s.bundle.KubeletClientKey
	}
	kubelets := kubeletclient.New(kubeletclient.Config{CertFile: kcert, KeyFile: kkey, CAFile: o.KubeletCertificateAuthority})
	s.service.SetKubeletClient(kubelets)
	if o.MetricResolution > 0 {
		s.metricsAPI = metricsapi.New(metricsapi.Config{Objects: metricsapi.RegistryObjects(s.reg),
			Scraper: metricsapi.KubeletScraper{Client: kubelets}, Resolution: o.MetricResolution,
			Logger: log.With("component", "metrics-api"), Registerer: s.Registry})
		s.service.SetMetrics(s.metricsAPI)
	}

	s.grpc = grpc.NewServer(append(server.ServerOptions(log, s.Registry, authn), grpc.Creds(credentials.NewTLS(tlsCfg)))...)
	apipb.RegisterAPIServer(s.grpc, s.service)
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)

	s.listener, err = net.Listen("tcp", o.secureAddr())
	if err != nil {
		return nil, fmt.Errorf("--secure-port: %w", err)
	}
	if o.MetricsBindAddress != "" {
		s.metrics, err = net.Listen("tcp", o.MetricsBindAddress)
		if err != nil {
			return nil, fmt.Errorf("--metrics-bind-address: %w", err)
		}
	}
	return s, nil
}

var serviceKind, _ = scheme.ForResource("", "services")

// kubernetesServiceSANs are upstream's extra serving names: in-cluster
// clients dial the kubernetes Service by its IP (KUBERNETES_SERVICE_HOST)
// or its names and check the certificate against them.
func kubernetesServiceSANs(o Options) []string {
	sans := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if ranges, err := o.serviceRanges(); err == nil {
		for _, r := range ranges {
			sans = append(sans, r.KubernetesServiceIP().String())
		}
	}
	return sans
}

// admissionPlugins are the default-on plugins, in upstream's order.
var admissionPlugins = []string{namespacelifecycle.PluginName, limitranger.PluginName, saadmission.PluginName,
	defaulttolerationseconds.PluginName, resourcequota.PluginName}

// serviceAccountKeys loads the token signing key (generating
// <data-dir>/pki/sa.key when no file is given) and the keys that verify
// tokens: the signing key's public half and every --service-account-key-file.
func (s *Server) serviceAccountKeys() (*serviceaccount.Issuer, []crypto.PublicKey, error) {
	o := s.opts
	path := o.ServiceAccountSigningKeyFile
	if path == "" {
		var err error
		if path, err = pki.EnsureServiceAccountKey(filepath.Join(o.DataDir, "pki")); err != nil {
			return nil, nil, fmt.Errorf("service-account key: %w", err)
		}
	}
	key, err := pki.LoadSigner(path)
	if err != nil {
		return nil, nil, fmt.Errorf("--service-account-signing-key-file: %w", err)
	}
	issuer, err := serviceaccount.NewIssuer(o.ServiceAccountIssuers[0], key)
	if err != nil {
		return nil, nil, fmt.Errorf("--service-account-signing-key-file: %w", err)
	}
	keys := []crypto.PublicKey{key.Public()}
	for _, f := range o.ServiceAccountKeyFiles {
		ks, err := pki.LoadPublicKeys(f)
		if err != nil {
			return nil, nil, fmt.Errorf("--service-account-key-file: %w", err)
		}
		keys = append(keys, ks...)
	}
	return issuer, keys, nil
}

// Addr is the API's listening address.
func (s *Server) Addr() net.Addr { return s.listener.Addr() }

// MetricsAddr is the metrics endpoint's address (nil when disabled).
func (s *Server) MetricsAddr() net.Addr {
	if s.metrics == nil {
		return nil
	}
	return s.metrics.Addr()
}

// Ready is closed once the caches are filled and the API answers.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// AdminConfig is the path of the admin client config written when ready.
func (s *Server) AdminConfig() string { return filepath.Join(s.opts.DataDir, "admin.conf") }

// Start serves until ctx ends or a part of the server fails, then shuts
// down gracefully and releases everything New took. It returns why it
// stopped: nil after ctx ended, else the first failure (etcd gone, the
// listener lost, a start-up step that could not be done).
func (s *Server) Start(ctx context.Context) error {
	defer s.Close()
	g, _ := component.NewGroup(ctx)
	g.Go("registry", s.reg.Start)
	g.Go("service allocations", s.alloc.Start)
	g.Go("compactor", func(ctx context.Context) error {
		return s.store.RunCompactor(ctx, s.opts.EtcdCompactionInterval, s.log)
	})
	if s.metrics != nil {
		ms := &component.Server{Registry: s.Registry, Logger: s.log, Profiling: s.opts.Profiling, Ready: map[string]func(context.Context) error{
			"etcd":     s.etcdReady,
			"registry": s.registryReady,
		}}
		g.Go("metrics", func(ctx context.Context) error { return ms.Serve(ctx, s.metrics) })
	}
	if s.etcd != nil {
		g.Go("embedded etcd", func(ctx context.Context) error {
			select {
			case err := <-s.etcd.Err():
				return err
			case <-ctx.Done():
				return nil
			}
		})
	}
	g.Go("grpc", s.serve)
	g.Go("start-up", func(ctx context.Context) error {
		if err := s.reg.WaitReady(ctx); err != nil {
			return err
		}
		if err := s.writeAdminConfig(); err != nil {
			return fmt.Errorf("writing %s: %w", s.AdminConfig(), err)
		}
		// The bootstrap controllers write through the registry, so they
		// start once its caches are filled.
		repair := &servicealloc.Repair{Store: s.store, Allocator: s.alloc, Events: s.reg,
			Interval: s.opts.ServiceAllocationRepairInterval, Logger: s.log.With("component", "service-allocation-repair")}
		g.Go("service allocation repair", repair.Start)
		kube := kubernetesservice.New(kubernetesservice.Config{Registry: s.reg, Store: s.store,
			ServiceIP: s.alloc.KubernetesServiceIP(), PublicIP: s.advertise, PublicPort: int32(s.listener.Addr().(*net.TCPAddr).Port),
			LeaseTTL: s.opts.EndpointLeaseTTL, Interval: s.opts.EndpointReconcileInterval,
			Logger: s.log.With("component", "kubernetes-service")})
		g.Go("kubernetes service", kube.Start)
		if s.metricsAPI != nil {
			g.Go("metrics api", s.metricsAPI.Start)
		}
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		close(s.ready)
		s.log.Info("skiff-apiserver ready", "address", s.Addr().String(), "admin-config", s.AdminConfig())
		<-ctx.Done()
		return nil
	})
	return g.Wait()
}

// serve answers gRPC until ctx ends, then refuses new requests and gives
// in-flight ones --shutdown-timeout to finish.
func (s *Server) serve(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- s.grpc.Serve(s.listener) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down: refusing new requests, draining in-flight ones")
	s.health.Shutdown()
	s.service.Stop()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.opts.ShutdownTimeout):
		s.grpc.Stop()
	}
	<-served
	return nil
}

func (s *Server) etcdReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := s.store.CurrentRevision(ctx)
	return err
}

func (s *Server) registryReady(context.Context) error {
	select {
	case <-s.ready:
		return nil
	default:
		return errors.New("watch caches not yet filled")
	}
}

// writeAdminConfig writes <data-dir>/admin.conf, the admin's client config,
// when the apiserver made its own certificates.
func (s *Server) writeAdminConfig() error {
	if s.bundle == nil {
		return nil
	}
	read := func(p string) ([]byte, error) { return os.ReadFile(p) }
	ca, err := read(s.bundle.CACert)
	if err != nil {
		return err
	}
	cert, err := read(s.bundle.AdminCert)
	if err != nil {
		return err
	}
	key, err := read(s.bundle.AdminKey)
	if err != nil {
		return err
	}
	host := s.opts.BindAddress
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	port := s.listener.Addr().(*net.TCPAddr).Port
	server := "https://" + net.JoinHostPort(host, strconv.Itoa(port))
	return config.NewAdmin(server, ca, cert, key).Write(s.AdminConfig())
}

// Close releases what New took: listeners, the etcd client and the
// embedded etcd. Start calls it on its way out; call it yourself only for a
// server that was never started. Safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.grpc != nil {
			s.grpc.Stop()
		}
		if s.listener != nil {
			s.listener.Close()
		}
		if s.metrics != nil {
			s.metrics.Close()
		}
		if s.etcdCli != nil {
			s.etcdCli.Close()
		}
		if s.etcd != nil {
			s.etcd.Close()
		}
	})
}
