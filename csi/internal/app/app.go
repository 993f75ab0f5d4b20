// Package app is skiff-local-path's Options and Run.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"skiff.dev/client"
	"skiff.dev/client/config"
	"skiff.dev/csi/internal/localpath"
	"skiff.dev/csi/internal/registrar"
	corev1 "skiff.dev/proto/api/core/v1"
)

// Options are skiff-local-path's flags.
type Options struct {
	Endpoint        string
	RegistrationDir string
	Root            string
	NodeID          string
	Kubeconfig      string
	CleanupInterval time.Duration
	LogFormat       string
	Verbosity       int
}

// NewOptions returns the defaults: upstream's kubelet paths.
func NewOptions() *Options {
	return &Options{
		Endpoint:        "unix:///var/lib/kubelet/plugins/" + localpath.DriverName + "/csi.sock",
		RegistrationDir: "/var/lib/kubelet/plugins_registry",
		Root:            "/var/lib/skiff/local-path",
		CleanupInterval: time.Minute,
		LogFormat:       "text",
	}
}

// AddFlags registers the flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Endpoint, "endpoint", o.Endpoint, "The CSI socket to serve (unix:///path or /path).")
	fs.StringVar(&o.RegistrationDir, "registration-dir", o.RegistrationDir, "The kubelet's plugin registry directory, where the registration socket goes; empty registers with no kubelet.")
	fs.StringVar(&o.Root, "root", o.Root, "Directory of the volumes' data, one subdirectory per volume handle.")
	fs.StringVar(&o.NodeID, "node-id", o.NodeID, "The node's name, reported as the CSI node ID and its kubernetes.io/hostname topology (default: the host name).")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Client config for reading PersistentVolumes, to remove the directories of deleted ones; empty: no cleanup.")
	fs.DurationVar(&o.CleanupInterval, "cleanup-interval", o.CleanupInterval, "How often directories of deleted PersistentVolumes are looked for.")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "text or json.")
	fs.IntVarP(&o.Verbosity, "v", "v", o.Verbosity, "Log verbosity (1 and more: debug).")
}

func socketPath(endpoint string) (string, error) {
	p := strings.TrimPrefix(endpoint, "unix://")
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("--endpoint %q: want unix:///path or an absolute path", endpoint)
	}
	if len(p) > 107 {
		return "", fmt.Errorf("--endpoint %q: a unix socket path is at most 107 bytes", endpoint)
	}
	return p, nil
}

// listen removes a stale socket and listens on path.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if len(path) <= 107 {
		return net.Listen("unix", path)
	}
	// Longer than sun_path holds: bind through the directory's fd.
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return net.Listen("unix", fmt.Sprintf("/proc/self/fd/%d/%s", fd, filepath.Base(path)))
}

// Run serves the CSI socket and the registration socket until ctx ends,
// and removes directories of deleted PVs every CleanupInterval when a
// kubeconfig is given. Both sockets are removed on the way out, so the
// kubelet deregisters the driver.
func Run(ctx context.Context, o *Options, log *slog.Logger) error {
	if o.NodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		o.NodeID = strings.ToLower(h)
	}
	sock, err := socketPath(o.Endpoint)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.Root, 0o755); err != nil {
		return fmt.Errorf("--root: %w", err)
	}
	d := localpath.New(o.NodeID, o.Root, log)
	srv := grpc.NewServer()
	csipb.RegisterIdentityServer(srv, d)
	csipb.RegisterControllerServer(srv, d)
	csipb.RegisterNodeServer(srv, d)
	l, err := listen(sock)
	if err != nil {
		return fmt.Errorf("--endpoint: %w", err)
	}
	defer os.Remove(sock)
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(l) }()
	defer srv.Stop()
	log.Info("Serving CSI", "driver", localpath.DriverName, "endpoint", sock, "node", o.NodeID, "root", o.Root)

	if o.RegistrationDir != "" {
		reg := filepath.Join(o.RegistrationDir, localpath.DriverName+"-reg.sock")
		rl, err := listen(reg)
		if err != nil {
			return fmt.Errorf("--registration-dir: %w", err)
		}
		defer os.Remove(reg)
		rs := grpc.NewServer()
		registerapi.RegisterRegistrationServer(rs, &registrar.Server{Name: localpath.DriverName, Endpoint: sock, Log: log})
		go func() { errc <- rs.Serve(rl) }()
		defer rs.Stop()
		log.Info("Serving registration", "socket", reg)
	}

	if o.Kubeconfig != "" {
		_, conn, err := config.Open(o.Kubeconfig)
		if err != nil {
			return fmt.Errorf("--kubeconfig: %w", err)
		}
		defer conn.Close()
		c := client.New(conn)
		go cleanupLoop(ctx, d, c, o.CleanupInterval, log)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return err
	}
}

// cleanupLoop removes the directories of volumes whose PV is gone: only
// after a successful, complete List, and only of PVs of this driver.
func cleanupLoop(ctx context.Context, d *localpath.Driver, c *client.Client, every time.Duration, log *slog.Logger) {
	if every <= 0 {
		every = time.Minute
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		keep, err := KeepSet(ctx, c)
		if err != nil {
			log.Info("Listing PersistentVolumes for cleanup", "err", err)
			continue
		}
		if _, err := d.Cleanup(keep); err != nil {
			log.Error("Cleanup", "err", err)
		}
	}
}

// KeepSet is the volume handles of the driver's existing PVs.
func KeepSet(ctx context.Context, c *client.Client) (map[string]bool, error) {
	list, err := client.For[*corev1.PersistentVolume](c, "").List(ctx, client.ListOptions{})
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, pv := range list.Items {
		if s := pv.GetSpec().GetPersistentVolumeSource().GetCsi(); s.GetDriver() == localpath.DriverName {
			keep[s.GetVolumeHandle()] = true
		}
	}
	return keep, nil
}
