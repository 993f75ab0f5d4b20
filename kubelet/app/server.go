package app

import (
	"context"
	"net"
	"path/filepath"
	"strconv"

	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/kubelet/internal/nodestatus"
	"skiff.dev/kubelet/internal/server"
	"skiff.dev/kubelet/internal/stats"
	"skiff.dev/kubelet/internal/streaming"
	corev1 "skiff.dev/proto/api/core/v1"
)

// pod finds one of the node's pods: a mirror pod's name finds its static
// pod, whose UID the containers run under.
func (k *Kubelet) pod(namespace, name string) (*corev1.Pod, bool) {
	if w, ok := k.workers.(*podParts); ok {
		return w.Pod(namespace, name)
	}
	p, err := k.podLister.Get(namespace, name)
	return p, err == nil
}

// nodePods are the pods the node runs, static ones in place of their mirrors.
func (k *Kubelet) nodePods() []*corev1.Pod {
	if w, ok := k.workers.(*podParts); ok {
		return w.Pods()
	}
	return k.podLister.List(labels.Everything())
}

// APIServer is the kubelet's HTTPS API on --address:--port. The command
// runs it; embedders (many hollow nodes in one process) need not.
func (k *Kubelet) APIServer(health map[string]func(context.Context) error) (*server.Server, error) {
	o := k.cfg.Options
	hosts := []string{k.nodeName, "localhost", "127.0.0.1"}
	hosts = append(hosts, o.NodeIPs...)
	if len(o.NodeIPs) == 0 {
		if ip, err := nodestatus.HostIP(); err == nil {
			hosts = append(hosts, ip)
		}
	}
	return server.New(server.Config{
		Addr:     net.JoinHostPort(o.Address, strconv.Itoa(int(o.Port))),
		CertFile: o.TLSCertFile, KeyFile: o.TLSPrivateKeyFile,
		CertDir: filepath.Join(o.RootDir, "pki"), Hosts: hosts,
		ClientCAFile: o.ClientCAFile,
		Runtime:      k.cfg.Runtime,
		Pod:          k.pod,
		Pods:         k.nodePods,
		Stats:        stats.New(k.cfg.Runtime, k.nodePods, k.nodeName).WithDirs(o.RootDir, o.PodLogsDir),
		PodLogsDir:   o.PodLogsDir,
		Registry:     k.cfg.Registry,
		Health:       health,
		Streaming:    streaming.Handler(k.cfg.Runtime, k.pod, k.log.With("component", "streaming")),
		Logger:       k.log.With("component", "server"),
	})
}
