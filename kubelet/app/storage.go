package app

import (
	"context"
	"path/filepath"

	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"skiff.dev/client"
	"skiff.dev/kubelet/internal/csi"
	"skiff.dev/kubelet/internal/pluginmanager"
	"skiff.dev/kubelet/internal/volumes"
	corev1 "skiff.dev/proto/api/core/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
)

// PluginsRegistryDir is where plugins put their registration sockets,
// upstream's <root-dir>/plugins_registry.
func (o *Options) PluginsRegistryDir() string { return filepath.Join(o.RootDir, "plugins_registry") }

// newStorage builds the CSI driver registry and, on a real node, the
// plugin manager that fills it from the plugin registry directory. Hollow
// nodes (NoMounts) get the registry alone: no driver registers with them.
func (k *Kubelet) newStorage() {
	k.csiPlugins = csi.NewPlugins(csi.Config{Client: k.cfg.Client, NodeName: k.nodeName, Logger: k.log.With("component", "csi")})
	if k.cfg.NoMounts {
		return
	}
	k.plugins = pluginmanager.New(pluginmanager.Config{Dir: k.cfg.Options.PluginsRegistryDir(),
		Handlers: map[string]pluginmanager.Handler{registerapi.CSIPlugin: k.csiPlugins},
		Logger:   k.log.With("component", "pluginmanager")})
}

// runStorage runs the CSINode initialization and the plugin manager.
func (k *Kubelet) runStorage(g interface {
	Go(string, func(context.Context) error)
}) {
	if k.plugins == nil {
		return
	}
	g.Go("csinode", k.csiPlugins.Run)
	g.Go("pluginmanager", k.plugins.Run)
}

// storageSources are what the volume manager reads for claims and CSI
// volumes: the API for claims, volumes and CSIDriver objects, the registry
// for drivers.
func (k *Kubelet) storageSources() volumes.StorageSources {
	c := k.cfg.Client
	return volumes.StorageSources{
		PersistentVolumeClaim: func(ns, name string) (*corev1.PersistentVolumeClaim, error) {
			return client.For[*corev1.PersistentVolumeClaim](c, ns).Get(context.Background(), name)
		},
		PersistentVolume: func(name string) (*corev1.PersistentVolume, error) {
			return client.For[*corev1.PersistentVolume](c, "").Get(context.Background(), name)
		},
		CSIDriver: func(name string) (*storagev1.CSIDriver, error) {
			return client.For[*storagev1.CSIDriver](c, "").Get(context.Background(), name)
		},
		CSI: func(driver string) (volumes.CSIClient, error) {
			cl, err := k.csiPlugins.Get(driver)
			if err != nil {
				return nil, err
			}
			return cl, nil
		},
	}
}
