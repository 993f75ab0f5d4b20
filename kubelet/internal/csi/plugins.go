package csi

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/apierrors"
)

// Config is what Plugins needs.
type Config struct {
	// Client writes the node's CSINode; nil keeps the registry local
	// (tests of the volume manager).
	Client   *client.Client
	NodeName string
	Logger   *slog.Logger
}

// Plugins is the node's registry of CSI drivers: upstream's csiDrivers map
// and its nodeinfomanager. It is the plugin manager's handler for plugins of
// type CSIPlugin.
type Plugins struct {
	cfg Config
	log *slog.Logger

	mu      sync.RWMutex
	drivers map[string]*driver
	// csiNodeMu orders the read-modify-writes of the CSINode.
	csiNodeMu sync.Mutex
}

type driver struct {
	endpoint string
	client   *Client
	info     NodeInfo
}

// NewPlugins returns an empty registry.
func NewPlugins(cfg Config) *Plugins {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Plugins{cfg: cfg, log: log, drivers: map[string]*driver{}}
}

// Get is the client of a registered driver, worded as upstream when there
// is none.
func (p *Plugins) Get(name string) (*Client, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d, ok := p.drivers[name]
	if !ok {
		return nil, fmt.Errorf("driver name %s not found in the list of registered CSI drivers", name)
	}
	return d.client, nil
}

// Registered lists the registered drivers' names, sorted.
func (p *Plugins) Registered() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []string
	for n := range p.drivers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ValidatePlugin accepts a driver that speaks a 1.x version of the CSI
// spec, as upstream's (which knows no other major version).
func (p *Plugins) ValidatePlugin(name, endpoint string, versions []string) error {
	if name == "" {
		return fmt.Errorf("plugin name is empty")
	}
	if _, err := SocketPath(endpoint); err != nil {
		return err
	}
	for _, v := range versions {
		major, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
		if n, err := strconv.Atoi(major); err == nil && n == 1 {
			return nil
		}
	}
	return fmt.Errorf("none of the versions specified %q are supported by this kubelet (1.x)", versions)
}

// RegisterPlugin connects to the driver, asks NodeGetInfo, and adds it to
// the registry and to the node's CSINode. A driver registering again (a
// new socket) replaces its old entry. If the CSINode cannot be written the
// driver is not registered, as upstream.
func (p *Plugins) RegisterPlugin(ctx context.Context, name, endpoint string, versions []string) error {
	if err := p.ValidatePlugin(name, endpoint, versions); err != nil {
		return err
	}
	c, err := Dial(endpoint)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := c.NodeGetInfo(ctx)
	if err != nil {
		c.Close()
		return fmt.Errorf("error during CSI NodeGetInfo() call: %w", err)
	}
	if err := p.updateCSINode(ctx, func(drivers []*storagev1.CSINodeDriver) []*storagev1.CSINodeDriver {
		return setDriver(drivers, name, info)
	}); err != nil {
		c.Close()
		return fmt.Errorf("error updating CSINode object with CSI driver node info: %w", err)
	}
	p.mu.Lock()
	old := p.drivers[name]
	p.drivers[name] = &driver{endpoint: endpoint, client: c, info: info}
	p.mu.Unlock()
	if old != nil {
		old.client.Close()
	}
	p.log.Info("Registered CSI driver", "driver", name, "endpoint", endpoint, "nodeID", info.NodeID)
	return nil
}

// DeRegisterPlugin removes the driver from the registry and from the
// CSINode (a failed write is logged; the next registration rewrites it).
// A call for an endpoint the driver no longer uses is ignored.
func (p *Plugins) DeRegisterPlugin(ctx context.Context, name, endpoint string) {
	p.mu.Lock()
	d, ok := p.drivers[name]
	if ok && endpoint != "" && d.endpoint != endpoint {
		ok = false
	}
	if ok {
		delete(p.drivers, name)
	}
	p.mu.Unlock()
	if !ok {
		return
	}
	d.client.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.updateCSINode(ctx, func(drivers []*storagev1.CSINodeDriver) []*storagev1.CSINodeDriver {
		return slices.DeleteFunc(drivers, func(d *storagev1.CSINodeDriver) bool { return d.GetName() == name })
	}); err != nil {
		p.log.Error("Removing the CSI driver from the CSINode", "driver", name, "err", err)
	}
	p.log.Info("Deregistered CSI driver", "driver", name)
}

// Run makes the node's CSINode (with no drivers) once the Node exists, as
// upstream's kubelet does at start, so that the scheduler and the
// controllers find it for every node; it retries every 5 s, then waits for
// ctx.
func (p *Plugins) Run(ctx context.Context) error {
	if p.cfg.Client == nil {
		<-ctx.Done()
		return nil
	}
	for {
		err := p.updateCSINode(ctx, func(d []*storagev1.CSINodeDriver) []*storagev1.CSINodeDriver { return d })
		if err == nil {
			break
		}
		p.log.Debug("Initializing the CSINode", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
	<-ctx.Done()
	return nil
}

func setDriver(drivers []*storagev1.CSINodeDriver, name string, info NodeInfo) []*storagev1.CSINodeDriver {
	keys := make([]string, 0, len(info.Topology))
	for k := range info.Topology {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	d := &storagev1.CSINodeDriver{Name: name, NodeID: info.NodeID, TopologyKeys: keys}
	if info.MaxVolumes > 0 {
		n := int32(info.MaxVolumes)
		d.Allocatable = &storagev1.VolumeNodeResources{Count: &n}
	}
	out := slices.DeleteFunc(drivers, func(d *storagev1.CSINodeDriver) bool { return d.GetName() == name })
	return append(out, d)
}

// updateCSINode applies mutate to the CSINode's drivers, creating the
// CSINode (owned by the Node, as upstream, so it goes with it) when it is
// missing; a write that loses a race is tried again.
func (p *Plugins) updateCSINode(ctx context.Context, mutate func([]*storagev1.CSINodeDriver) []*storagev1.CSINodeDriver) error {
	if p.cfg.Client == nil {
		return nil
	}
	p.csiNodeMu.Lock()
	defer p.csiNodeMu.Unlock()
	nodes := client.For[*storagev1.CSINode](p.cfg.Client, "")
	var err error
	for range 5 {
		var cur *storagev1.CSINode
		cur, err = nodes.Get(ctx, p.cfg.NodeName)
		if apierrors.IsNotFound(err) {
			var node *corev1.Node
			node, err = client.For[*corev1.Node](p.cfg.Client, "").Get(ctx, p.cfg.NodeName)
			if err != nil {
				return fmt.Errorf("the Node %q is needed for its CSINode: %w", p.cfg.NodeName, err)
			}
			cn := &storagev1.CSINode{
				Metadata: &metav1.ObjectMeta{Name: p.cfg.NodeName, OwnerReferences: []*metav1.OwnerReference{{
					ApiVersion: "v1", Kind: "Node", Name: p.cfg.NodeName, Uid: node.GetMetadata().GetUid()}}},
				Spec: &storagev1.CSINodeSpec{Drivers: mutate(nil)},
			}
			if _, err = nodes.Create(ctx, cn); err == nil || !apierrors.IsAlreadyExists(err) {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if cur.Spec == nil {
			cur.Spec = &storagev1.CSINodeSpec{}
		}
		before := slices.Clone(cur.Spec.Drivers)
		cur.Spec.Drivers = mutate(slices.Clone(cur.Spec.Drivers))
		if driversEqual(before, cur.Spec.Drivers) {
			return nil
		}
		if _, err = nodes.Update(ctx, cur); err == nil || !apierrors.IsConflict(err) {
			return err
		}
	}
	return err
}

func driversEqual(a, b []*storagev1.CSINodeDriver) bool {
	return slices.EqualFunc(a, b, func(x, y *storagev1.CSINodeDriver) bool {
		return x.GetName() == y.GetName() && x.GetNodeID() == y.GetNodeID() &&
			slices.Equal(x.GetTopologyKeys(), y.GetTopologyKeys()) &&
			x.GetAllocatable().GetCount() == y.GetAllocatable().GetCount()
	})
}
