package skiff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/coredns/coredns/plugin/pkg/upstream"

	"skiff.dev/client"
	"skiff.dev/client/config"
)

var log = clog.NewWithPlugin(pluginName)

func init() { plugin.Register(pluginName, setup) }

func setup(c *caddy.Controller) error {
	s, err := parse(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	// Reading the kubeconfig or the ServiceAccount files here makes a bad
	// one fail the Corefile, with its reason, before anything listens.
	resolved, err := s.conn.resolve()
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	s.Upstream = upstream.New()
	var stop func()
	c.OnStartup(func() error {
		var err error
		stop, err = s.start(resolved)
		return err
	})
	c.OnShutdown(func() error {
		if stop != nil {
			stop()
		}
		return nil
	})
	c.OnStartup(func() error {
		s.localIPs = boundIPs(c)
		return nil
	})
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		s.Next = next
		return s
	})
	return nil
}

// start dials the apiserver and runs the informers, waiting for them up to
// startupTimeout as upstream does: a server that answers NXDOMAIN for
// every Service while its cache fills would be cached that way by clients,
// one that never starts would take the cluster's DNS down with the API.
// The returned stop ends them.
func (s *Skiff) start(r *config.Resolved) (func(), error) {
	conn, err := r.Dial()
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", r.Server, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.startCache(ctx, client.New(conn))
	stop := func() {
		cancel()
		s.cache.Shutdown()
		conn.Close()
	}
	if !s.waitForSync(ctx) {
		log.Warning("starting server with unsynced Skiff API")
	}
	return stop, nil
}

// startCache builds the cache over c and starts its informers until ctx
// ends.
func (s *Skiff) startCache(ctx context.Context, c *client.Client) {
	s.cache = newCache(c, cacheOptions{endpoints: s.watchEndpoints, pods: s.podMode == podModeVerified}, newSlogger(log))
	s.cache.Start(ctx)
}

// waitForSync waits for the cache, at most startupTimeout, saying every
// half second that it does.
func (s *Skiff) waitForSync(ctx context.Context) bool {
	timeout := time.NewTimer(s.startupTimeout)
	defer timeout.Stop()
	say := time.NewTicker(500 * time.Millisecond)
	defer say.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		if s.cache.HasSynced() {
			return true
		}
		select {
		case <-poll.C:
		case <-say.C:
			log.Info("waiting for Skiff API before starting server")
		case <-timeout.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// connection is how the plugin reaches the apiserver, as the Corefile says.
type connection struct {
	// kubeconfig and context: `kubeconfig PATH [CONTEXT]`.
	kubeconfig, context string
	// endpoint and tls: `endpoint URL` and `tls CERT KEY CACERT`.
	endpoint               string
	tlsCert, tlsKey, tlsCA string
}

// resolve picks the apiserver and credentials: the kubeconfig file, else
// the endpoint, else the pod's ServiceAccount (in-cluster), in the
// kubernetes plugin's order.
func (c connection) resolve() (*config.Resolved, error) {
	switch {
	case c.kubeconfig != "":
		cfg, err := config.Load(c.kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", c.kubeconfig, err)
		}
		r, err := cfg.Resolve(c.context)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", c.kubeconfig, err)
		}
		return r, nil
	case c.endpoint != "":
		cfg := &config.Config{
			Clusters:       []config.NamedCluster{{Name: pluginName, Cluster: config.Cluster{Server: c.endpoint, CertificateAuthority: c.tlsCA}}},
			Users:          []config.NamedUser{{Name: pluginName, User: config.User{ClientCertificate: c.tlsCert, ClientKey: c.tlsKey}}},
			Contexts:       []config.NamedContext{{Name: pluginName, Context: config.Context{Cluster: pluginName, User: pluginName}}},
			CurrentContext: pluginName,
		}
		r, err := cfg.Resolve("")
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: %w", c.endpoint, err)
		}
		return r, nil
	default:
		r, err := config.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (or give kubeconfig or endpoint): %w", err)
		}
		return r, nil
	}
}

// parse reads the plugin's block; it may appear once per server block.
func parse(c *caddy.Controller) (*Skiff, error) {
	var s *Skiff
	for c.Next() {
		if s != nil {
			return nil, plugin.ErrOnce
		}
		var err error
		if s, err = parseStanza(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// unsupported are options of the kubernetes plugin this one does not
// have, refused by name so a Corefile copied from upstream fails clearly.
var unsupported = map[string]string{
	"labels":                 "label selectors",
	"namespace_labels":       "namespace label selectors",
	"multicluster":           "multicluster (MCS) zones",
	"zonal":                  "zone-scoped names",
	"apiserver_qps":          "client rate limits",
	"apiserver_burst":        "client rate limits",
	"apiserver_max_inflight": "client rate limits",
}

// parseStanza reads one `skiff [ZONES...] { ... }` block with the
// kubernetes plugin's syntax.
func parseStanza(c *caddy.Controller) (*Skiff, error) {
	s := New(plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys))
	s.primaryZoneIndex = -1
	for i, z := range s.Zones {
		// IsReverse looks for ".in-addr.arpa.": the zone itself has no
		// leading dot.
		if dnsutil.IsReverse("."+z) == 0 {
			s.primaryZoneIndex = i
			break
		}
	}
	if s.primaryZoneIndex == -1 {
		return nil, errors.New("non-reverse zone name must be used")
	}

	for c.NextBlock() {
		opt := c.Val()
		args := c.RemainingArgs()
		switch opt {
		case "pods":
			if len(args) != 1 {
				return nil, c.ArgErr()
			}
			switch args[0] {
			case podModeDisabled, podModeInsecure, podModeVerified:
				s.podMode = args[0]
			default:
				return nil, c.Errf("wrong value for pods: %s, must be one of: disabled, verified, insecure", args[0])
			}
		case "namespaces":
			if len(args) == 0 {
				return nil, c.ArgErr()
			}
			for _, a := range args {
				s.Namespaces[a] = struct{}{}
			}
		case "endpoint_pod_names":
			if len(args) != 0 {
				return nil, c.ArgErr()
			}
			s.endpointNameMode = true
		case "endpoint":
			if len(args) == 0 {
				return nil, c.ArgErr()
			}
			if len(args) > 1 {
				log.Warningf("Multiple endpoints have been deprecated, only the first specified endpoint '%s' is used", args[0])
			}
			s.conn.endpoint = args[0]
		case "tls":
			if len(args) != 3 {
				return nil, c.ArgErr()
			}
			s.conn.tlsCert, s.conn.tlsKey, s.conn.tlsCA = args[0], args[1], args[2]
		case "kubeconfig":
			if len(args) != 1 && len(args) != 2 {
				return nil, c.ArgErr()
			}
			s.conn.kubeconfig = args[0]
			if len(args) == 2 {
				s.conn.context = args[1]
			}
		case "fallthrough":
			s.Fall.SetZonesFromArgs(args)
		case "ttl":
			if len(args) != 1 {
				return nil, c.ArgErr()
			}
			t, err := strconv.Atoi(args[0])
			if err != nil {
				return nil, c.Errf("ttl must be a number of seconds: %q", args[0])
			}
			if t < 0 || t > 3600 {
				return nil, c.Errf("ttl must be in range [0, 3600]: %d", t)
			}
			s.ttl = uint32(t)
		case "noendpoints":
			if len(args) != 0 {
				return nil, c.ArgErr()
			}
			s.watchEndpoints = false
		case "ignore":
			if len(args) != 1 || args[0] != "empty_service" {
				return nil, c.Errf("unable to parse ignore value: '%v'", args)
			}
			s.ignoreEmptyService = true
		case "startup_timeout":
			if len(args) != 1 {
				return nil, c.ArgErr()
			}
			d, err := time.ParseDuration(args[0])
			if err != nil {
				return nil, c.Errf("failed to parse startup_timeout: %v, %s", args[0], err)
			}
			s.startupTimeout = d
		default:
			if what, ok := unsupported[opt]; ok {
				return nil, c.Errf("option '%s' of the kubernetes plugin is not supported by skiff (%s)", opt, what)
			}
			return nil, c.Errf("unknown property '%s'", opt)
		}
	}
	if s.conn.kubeconfig != "" && s.conn.endpoint != "" {
		return nil, c.Err("kubeconfig and endpoint cannot both be set")
	}
	if s.conn.tlsCert != "" && s.conn.endpoint == "" {
		return nil, c.Err("tls needs an endpoint")
	}
	return s, nil
}

// boundIPs are the non-loopback addresses the server listens on (every
// interface's when it binds none), upstream's boundIPs.
func boundIPs(c *caddy.Controller) []net.IP {
	hosts := dnsserver.GetConfig(c).ListenHosts
	if len(hosts) == 0 || hosts[0] == "" {
		hosts = nil
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return nil
		}
		for _, a := range addrs {
			hosts = append(hosts, a.String())
		}
	}
	var ips []net.IP
	for _, h := range hosts {
		ip, _, err := net.ParseCIDR(h)
		if err != nil {
			ip = net.ParseIP(h)
		}
		if ip == nil || ip.IsLoopback() {
			continue
		}
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		}
		ips = append(ips, ip)
	}
	return ips
}
