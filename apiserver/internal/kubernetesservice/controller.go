// Package kubernetesservice keeps the `kubernetes` Service in `default`,
// through which pods reach the API, and its endpoints: upstream's bootstrap
// controller (pkg/controlplane/controller/kubernetesservice) with its lease
// endpoint reconciler (pkg/controlplane/reconcilers, the only type Skiff has).
//
// Every apiserver keeps a key <prefix>/masterleases/<advertise-address>
// alive under an etcd lease, and writes the Endpoints and the EndpointSlice
// named `kubernetes` from the keys it finds, so they list every apiserver
// that is alive: one that stops cleanly revokes its lease at once; one that
// dies is dropped when its lease expires.
package kubernetesservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/internal/registry"
	"skiff.dev/apiserver/internal/storage"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

const (
	// Name is the Service's, its Endpoints' and its EndpointSlice's name.
	Name      = "kubernetes"
	namespace = "default"
	portName  = "https"
	// LeasePrefix holds one key per live apiserver.
	LeasePrefix = "masterleases/"
	// labelSkipMirror keeps upstream's mirroring controller off the
	// Endpoints: the slice is written here, beside it.
	labelSkipMirror  = "endpointslice.kubernetes.io/skip-mirror"
	labelServiceName = "kubernetes.io/service-name"
)

var (
	serviceKind, _   = scheme.ForResource("", "services")
	endpointsKind, _ = scheme.ForResource("", "endpoints")
	sliceKind, _     = scheme.ForResource("discovery.k8s.io", "endpointslices")
)

// Config wires a Controller.
type Config struct {
	Registry *registry.Registry
	Store    *storage.Store
	// ServiceIP is the Service's cluster IP: the service range's first
	// usable address.
	ServiceIP netip.Addr
	// PublicIP is --advertise-address, PublicPort the secure port: where
	// pods reach this apiserver.
	PublicIP   netip.Addr
	PublicPort int32
	// LeaseTTL is how long a silent apiserver stays listed; Interval how
	// often each one renews its lease and reconciles (well below LeaseTTL).
	LeaseTTL, Interval time.Duration
	Logger             *slog.Logger
}

// Controller keeps the Service and its endpoints.
type Controller struct {
	cfg   Config
	lease int64
}

// New returns a controller; Start runs it.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Controller{cfg: cfg}
}

// Start creates (or, on this first pass, corrects) the Service, then every
// Interval renews this apiserver's lease and reconciles the endpoints, and
// recreates the Service if someone deleted it. When ctx ends it revokes the
// lease and reconciles once more, so the others stop sending traffic here
// without waiting for the lease to expire.
func (c *Controller) Start(ctx context.Context) error {
	first, firstEndpoints := true, true
	for ctx.Err() == nil {
		if err := c.ensureService(ctx, first); err == nil {
			first = false
		} else if ctx.Err() == nil {
			c.cfg.Logger.Error("unable to sync kubernetes service", "err", err)
		}
		if err := c.reconcile(ctx, firstEndpoints); err == nil {
			firstEndpoints = false
		} else if ctx.Err() == nil {
			c.cfg.Logger.Error("unable to reconcile kubernetes service endpoints", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(c.cfg.Interval):
		}
	}
	c.stop(context.WithoutCancel(ctx))
	return nil
}

func (c *Controller) stop(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*c.cfg.Interval)
	defer cancel()
	if err := c.cfg.Store.RevokeLease(ctx, c.lease); err != nil {
		c.cfg.Logger.Error("unable to remove this apiserver's endpoint lease", "err", err)
		return
	}
	c.lease = 0
	if err := c.reconcileEndpoints(ctx, false); err != nil && !errors.Is(err, errNoLeases) {
		c.cfg.Logger.Error("unable to remove endpoints from kubernetes service", "err", err)
	}
}

// reconcile renews the lease, then writes the endpoints; ports are put
// back to this apiserver's only on its first pass, as upstream, so
// apiservers that disagree on them do not write in turn forever.
func (c *Controller) reconcile(ctx context.Context, ports bool) error {
	// The lease first, whatever happens below, so that at least the other
	// apiservers list this one.
	lease, err := c.cfg.Store.KeepLeased(ctx, c.leaseKey(), []byte(c.cfg.PublicIP.String()), c.cfg.LeaseTTL, c.lease)
	c.lease = lease
	if err != nil {
		return fmt.Errorf("renew endpoint lease: %w", err)
	}
	return c.reconcileEndpoints(ctx, ports)
}

func (c *Controller) leaseKey() string { return LeasePrefix + c.cfg.PublicIP.String() }

func (c *Controller) desiredService() *corev1.Service {
	single := "SingleStack"
	return &corev1.Service{
		Metadata: &metav1.ObjectMeta{Name: Name, Namespace: namespace,
			Labels: map[string]string{"provider": "kubernetes", "component": "apiserver"}},
		Spec: &corev1.ServiceSpec{
			Ports:           c.servicePorts(),
			ClusterIP:       c.cfg.ServiceIP.String(),
			IpFamilyPolicy:  &single,
			SessionAffinity: "None",
			Type:            "ClusterIP",
		},
	}
}

func (c *Controller) servicePorts() []*corev1.ServicePort {
	return []*corev1.ServicePort{{Name: portName, Protocol: "TCP", Port: 443, TargetPort: metav1.IntOrStringFromInt(c.cfg.PublicPort)}}
}

// ensureService creates the Service when it is missing; on the first pass
// it also puts back its ports and type, as upstream's controller does at
// start, so a changed --secure-port reaches it.
func (c *Controller) ensureService(ctx context.Context, reconcile bool) error {
	// From the watch cache: this runs every few seconds on every apiserver,
	// and a stale answer only costs a refused write, retried next round.
	cur, err := c.cfg.Registry.Get(ctx, serviceKind, namespace, Name, "0")
	if apierrors.IsNotFound(err) {
		_, err = c.cfg.Registry.Create(ctx, serviceKind, namespace, c.desiredService(), false)
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	if err != nil || !reconcile {
		return err
	}
	svc := proto.Clone(cur.Msg).(*corev1.Service)
	want := c.servicePorts()
	if svc.GetSpec().GetType() == "ClusterIP" && slices.EqualFunc(svc.GetSpec().GetPorts(), want, func(a, b *corev1.ServicePort) bool {
		return a.Name == b.Name && a.Protocol == b.Protocol && a.Port == b.Port && a.NodePort == 0 && proto.Equal(a.TargetPort, b.TargetPort)
	}) {
		return nil
	}
	c.cfg.Logger.Warn("resetting the kubernetes service's ports and type", "ports", "443->"+fmt.Sprint(c.cfg.PublicPort))
	svc.Spec.Ports, svc.Spec.Type = want, "ClusterIP"
	_, err = c.cfg.Registry.Update(ctx, serviceKind, namespace, svc, false)
	return err
}

// leasedIPs are the addresses of the apiservers whose lease is alive,
// sorted as upstream sorts them.
func (c *Controller) leasedIPs(ctx context.Context) ([]netip.Addr, error) {
	kvs, _, _, err := c.cfg.Store.List(ctx, LeasePrefix, "", 0, 0)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, kv := range kvs {
		a, err := netip.ParseAddr(strings.TrimSpace(string(kv.Value)))
		if err != nil {
			a, err = netip.ParseAddr(strings.TrimPrefix(kv.Key, LeasePrefix))
		}
		if err == nil {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out), nil
}

var errNoLeases = errors.New("no master IPs were listed in storage, refusing to erase all endpoints for the kubernetes service")

// reconcileEndpoints writes the Endpoints and the EndpointSlice from the
// leases. No lease at all is refused, as upstream refuses it: right after a
// renewal it is a fault, not a fact, and the last apiserver to stop leaves
// its address for the next to start to replace.
func (c *Controller) reconcileEndpoints(ctx context.Context, ports bool) error {
	ips, err := c.leasedIPs(ctx)
	if err != nil {
		return fmt.Errorf("list endpoint leases: %w", err)
	}
	if len(ips) == 0 {
		return errNoLeases
	}
	ep, err := c.writeEndpoints(ctx, ips, ports)
	if err != nil {
		return err
	}
	return c.writeSlice(ctx, ips, ep)
}

func (c *Controller) endpointPorts() []*corev1.EndpointPort {
	return []*corev1.EndpointPort{{Name: portName, Port: c.cfg.PublicPort, Protocol: "TCP"}}
}

// writeEndpoints writes the Endpoints: one subset, every leased address,
// the ports kept unless ports asks for this apiserver's (or the format is
// wrong). It returns the Endpoints as written, which the slice mirrors.
func (c *Controller) writeEndpoints(ctx context.Context, ips []netip.Addr, ports bool) (*corev1.Endpoints, error) {
	var written *corev1.Endpoints
	err := c.apply(ctx, endpointsKind, func(cur scheme.Object) (scheme.Object, bool) {
		e, _ := cur.(*corev1.Endpoints)
		if e == nil {
			e = &corev1.Endpoints{Metadata: &metav1.ObjectMeta{Name: Name, Namespace: namespace}}
		}
		var subsets []*corev1.EndpointSubset
		if len(ips) > 0 {
			ss := &corev1.EndpointSubset{Ports: c.endpointPorts()}
			if len(e.Subsets) == 1 && len(e.Subsets[0].Ports) > 0 && !ports {
				ss.Ports = e.Subsets[0].Ports
			}
			for _, ip := range ips {
				ss.Addresses = append(ss.Addresses, &corev1.EndpointAddress{Ip: ip.String()})
			}
			subsets = []*corev1.EndpointSubset{ss}
		}
		changed := e.GetMetadata().GetLabels()[labelSkipMirror] != "true" ||
			!slices.EqualFunc(e.Subsets, subsets, func(a, b *corev1.EndpointSubset) bool { return proto.Equal(a, b) })
		if e.Metadata.Labels == nil {
			e.Metadata.Labels = map[string]string{}
		}
		e.Metadata.Labels[labelSkipMirror] = "true"
		e.Subsets = subsets
		written = e
		return e, changed
	})
	return written, err
}

// writeSlice is upstream's endpointSliceFromEndpoints: one slice named as
// the Service, IPv4 unless every address is IPv6, every address ready.
func (c *Controller) writeSlice(ctx context.Context, ips []netip.Addr, ep *corev1.Endpoints) error {
	family := "IPv4"
	if len(ips) > 0 && !slices.ContainsFunc(ips, func(a netip.Addr) bool { return a.Unmap().Is4() }) {
		family = "IPv6"
	}
	var eps []*discoveryv1.Endpoint
	for _, ip := range ips {
		if (family == "IPv4") == ip.Unmap().Is4() {
			ready := true
			eps = append(eps, &discoveryv1.Endpoint{Addresses: []string{ip.String()}, Conditions: &discoveryv1.EndpointConditions{Ready: &ready}})
		}
	}
	var ports []*discoveryv1.EndpointPort
	if ep != nil && len(ep.Subsets) > 0 {
		for _, p := range ep.Subsets[0].Ports {
			name, protocol, port := p.Name, p.Protocol, p.Port
			ports = append(ports, &discoveryv1.EndpointPort{Name: &name, Protocol: &protocol, Port: &port})
		}
	}
	return c.apply(ctx, sliceKind, func(cur scheme.Object) (scheme.Object, bool) {
		s, _ := cur.(*discoveryv1.EndpointSlice)
		if s == nil {
			s = &discoveryv1.EndpointSlice{Metadata: &metav1.ObjectMeta{Name: Name, Namespace: namespace}}
		}
		changed := s.AddressType != family || s.GetMetadata().GetLabels()[labelServiceName] != Name ||
			!slices.EqualFunc(s.Endpoints, eps, func(a, b *discoveryv1.Endpoint) bool { return proto.Equal(a, b) }) ||
			!slices.EqualFunc(s.Ports, ports, func(a, b *discoveryv1.EndpointPort) bool { return proto.Equal(a, b) })
		if s.Metadata.Labels == nil {
			s.Metadata.Labels = map[string]string{}
		}
		s.Metadata.Labels[labelServiceName] = Name
		s.Endpoints, s.Ports = eps, ports
		if s.AddressType != family && s.AddressType != "" {
			// addressType is immutable: the slice is made again below.
			return nil, true
		}
		s.AddressType = family
		return s, changed
	})
}

// apply reads the object of kind k named `kubernetes`, lets mutate say what
// it should be, and writes it when it changed, guarded by the version read.
// mutate returning nil asks for the object to be deleted and made again.
func (c *Controller) apply(ctx context.Context, k *scheme.Kind, mutate func(cur scheme.Object) (scheme.Object, bool)) error {
	reg := c.cfg.Registry
	cur, err := reg.Get(ctx, k, namespace, Name, "0")
	if apierrors.IsNotFound(err) {
		obj, _ := mutate(nil)
		_, err = reg.Create(ctx, k, namespace, obj, false)
		if apierrors.IsAlreadyExists(err) {
			return nil // another apiserver made it; the next round compares
		}
		return err
	}
	if err != nil {
		return err
	}
	obj, changed := mutate(proto.Clone(cur.Msg).(scheme.Object))
	if !changed {
		return nil
	}
	if obj == nil {
		rv := cur.Msg.(scheme.Object).GetMetadata().GetResourceVersion()
		if _, err := reg.Delete(ctx, k, namespace, Name, registry.DeleteOptions{Preconditions: preconditions(rv)}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		return c.apply(ctx, k, mutate)
	}
	_, err = reg.Update(ctx, k, namespace, obj, false)
	if apierrors.IsConflict(err) {
		return nil // another apiserver wrote it meanwhile; the next round compares
	}
	return err
}

func preconditions(rv string) *apipb.Preconditions { return &apipb.Preconditions{ResourceVersion: &rv} }
