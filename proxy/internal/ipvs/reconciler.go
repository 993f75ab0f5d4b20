// Package ipvs is skiff-proxy's IPVS dataplane, upstream's ipvs proxier in
// outline: a virtual server per ClusterIP (and external IP, load balancer
// IP, node IP for NodePorts) and port, a real server per endpoint, the VIPs
// held by a dummy interface so the kernel accepts their traffic, and a small
// nftables table for what IPVS does not do (masquerade, hairpin, rejecting
// Services without endpoints).
//
// IPVS is used only where the kernel has it (/proc/net/ip_vs): moby/ipvs
// reports no error where it is missing, so Available checks the file and
// the caller refuses with a clear error.
package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/moby/ipvs"

	"skiff.dev/proxy/internal/proxy"
)

// DummyInterface holds the VIPs.
const DummyInterface = "skiff-ipvs0"

// Available reports whether the kernel has IPVS; an error says why not.
func Available(procNetIPVS string) error {
	if procNetIPVS == "" {
		procNetIPVS = "/proc/net/ip_vs"
	}
	if _, err := os.Stat(procNetIPVS); err != nil {
		return fmt.Errorf("--proxy-mode ipvs: the kernel has no IPVS (%s: %v); load ip_vs or use --proxy-mode nftables", procNetIPVS, errors.Unwrap(err))
	}
	return nil
}

// Handle is the part of moby/ipvs's Handle the reconciler uses, so tests
// run it against a fake.
type Handle interface {
	GetServices() ([]*ipvs.Service, error)
	NewService(*ipvs.Service) error
	UpdateService(*ipvs.Service) error
	DelService(*ipvs.Service) error
	GetDestinations(*ipvs.Service) ([]*ipvs.Destination, error)
	NewDestination(*ipvs.Service, *ipvs.Destination) error
	UpdateDestination(*ipvs.Service, *ipvs.Destination) error
	DelDestination(*ipvs.Service, *ipvs.Destination) error
}

// Addresses manages the dummy interface's addresses.
type Addresses interface {
	EnsureInterface(name string) error
	List(name string) ([]netip.Addr, error)
	Add(name string, a netip.Addr) error
	Del(name string, a netip.Addr) error
}

// VirtualServer is one desired IPVS service and its real servers.
type VirtualServer struct {
	Addr     netip.Addr
	Protocol string // TCP, UDP, SCTP
	Port     int
	// Timeout > 0: ClientIP affinity (IPVS persistence) for that many
	// seconds.
	Timeout int
	Dests   []netip.AddrPort
	// Bind: the address goes on the dummy interface (not for node IPs).
	Bind bool
}

func (v *VirtualServer) key() string {
	return fmt.Sprintf("%s/%s", strings.ToLower(v.Protocol), netip.AddrPortFrom(v.Addr, uint16(v.Port)))
}

// Desired computes the virtual servers of one family's ServicePorts, with
// the same endpoint choice as the nftables proxier: internal traffic to the
// internal policy's endpoints, NodePort and external traffic to the
// external policy's.
func Desired(svcs proxy.ServicePortMap, eps proxy.EndpointsMap, nodeIPs []netip.Addr) []*VirtualServer {
	var out []*VirtualServer
	dests := func(list []*proxy.Endpoint) []netip.AddrPort {
		ds := make([]netip.AddrPort, 0, len(list))
		for _, e := range list {
			ds = append(ds, netip.AddrPortFrom(e.IP, uint16(e.Port)))
		}
		return ds
	}
	for name, sp := range svcs {
		cluster, local, _, _ := proxy.Categorize(eps[name], sp)
		internal, external := cluster, cluster
		if sp.InternalPolicyLocal {
			internal = local
		}
		if sp.ExternalPolicyLocal {
			external = local
		}
		timeout := 0
		if sp.SessionAffinityClientIP {
			timeout = sp.StickyMaxAgeSeconds
		}
		vs := func(a netip.Addr, port int, ds []*proxy.Endpoint, bind bool) {
			out = append(out, &VirtualServer{Addr: a, Protocol: sp.Name.Protocol, Port: port, Timeout: timeout, Dests: dests(ds), Bind: bind})
		}
		vs(sp.ClusterIP, sp.Port, internal, true)
		for _, a := range sp.ExternalIPs {
			vs(a, sp.Port, external, true)
		}
		for _, a := range sp.LoadBalancerVIPs {
			vs(a, sp.Port, external, true)
		}
		if sp.NodePort != 0 {
			for _, a := range nodeIPs {
				vs(a, sp.NodePort, external, false)
			}
		}
	}
	slices.SortFunc(out, func(a, b *VirtualServer) int { return strings.Compare(a.key(), b.key()) })
	return out
}

// Reconciler makes IPVS match the desired virtual servers.
type Reconciler struct {
	Handle    Handle
	Addresses Addresses
	Scheduler string
	// owned are the virtual servers this reconciler made: only those are
	// ever deleted, so IPVS services someone else configured survive.
	owned map[string]*ipvs.Service
}

func protoNumber(p string) uint16 {
	switch p {
	case "UDP":
		return syscall.IPPROTO_UDP
	case "SCTP":
		return syscall.IPPROTO_SCTP
	}
	return syscall.IPPROTO_TCP
}

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return syscall.AF_INET
	}
	return syscall.AF_INET6
}

// flagPersistent is IP_VS_SVC_F_PERSISTENT.
const flagPersistent = 0x1

func (r *Reconciler) service(v *VirtualServer) *ipvs.Service {
	s := &ipvs.Service{Address: net.IP(v.Addr.AsSlice()), Protocol: protoNumber(v.Protocol), Port: uint16(v.Port),
		SchedName: r.Scheduler, AddressFamily: family(v.Addr), Netmask: 0xffffffff}
	if v.Addr.Is6() {
		s.Netmask = 128
	}
	if v.Timeout > 0 {
		s.Flags |= flagPersistent
		s.Timeout = uint32(v.Timeout)
	}
	return s
}

func serviceKey(s *ipvs.Service) string {
	a, _ := netip.AddrFromSlice(s.Address)
	proto := "tcp"
	switch s.Protocol {
	case syscall.IPPROTO_UDP:
		proto = "udp"
	case syscall.IPPROTO_SCTP:
		proto = "sctp"
	}
	return fmt.Sprintf("%s/%s", proto, netip.AddrPortFrom(a.Unmap(), s.Port))
}

// Reconcile brings IPVS and the dummy interface to want; it goes on past
// errors and returns them all, so one bad service does not block the rest.
func (r *Reconciler) Reconcile(want []*VirtualServer) error {
	if r.owned == nil {
		r.owned = map[string]*ipvs.Service{}
	}
	if r.Scheduler == "" {
		r.Scheduler = "rr"
	}
	var errs []error
	// VIPs first: a virtual server on an address the node does not own
	// sees no traffic.
	var bound map[netip.Addr]bool
	if r.Addresses != nil {
		var aerrs []error
		bound, aerrs = r.reconcileAddresses(want)
		errs = append(errs, aerrs...)
	}
	current, err := r.Handle.GetServices()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("listing IPVS services: %w", err))...)
	}
	byKey := map[string]*ipvs.Service{}
	for _, s := range current {
		k := serviceKey(s)
		byKey[k] = s
		// A service on an address of our dummy interface is one a previous
		// run made: ours to delete when no longer wanted.
		if a, ok := netip.AddrFromSlice(s.Address); ok && bound[a.Unmap()] {
			if _, known := r.owned[k]; !known {
				r.owned[k] = s
			}
		}
	}
	wanted := map[string]bool{}
	for _, v := range want {
		k := v.key()
		wanted[k] = true
		svc := r.service(v)
		cur, exists := byKey[k]
		switch {
		case !exists:
			if err := r.Handle.NewService(svc); err != nil {
				errs = append(errs, fmt.Errorf("adding IPVS service %s: %w", k, err))
				continue
			}
		case cur.SchedName != svc.SchedName || cur.Flags&flagPersistent != svc.Flags&flagPersistent || cur.Timeout != svc.Timeout:
			if err := r.Handle.UpdateService(svc); err != nil {
				errs = append(errs, fmt.Errorf("updating IPVS service %s: %w", k, err))
				continue
			}
		}
		r.owned[k] = svc
		errs = append(errs, r.reconcileDests(k, svc, v.Dests)...)
	}
	for k, s := range r.owned {
		if wanted[k] {
			continue
		}
		if _, exists := byKey[k]; exists {
			if err := r.Handle.DelService(s); err != nil {
				errs = append(errs, fmt.Errorf("deleting IPVS service %s: %w", k, err))
				continue
			}
		}
		delete(r.owned, k)
	}
	return errors.Join(errs...)
}

func (r *Reconciler) reconcileDests(k string, svc *ipvs.Service, want []netip.AddrPort) []error {
	var errs []error
	cur, err := r.Handle.GetDestinations(svc)
	if err != nil {
		return []error{fmt.Errorf("listing real servers of %s: %w", k, err)}
	}
	have := map[netip.AddrPort]*ipvs.Destination{}
	for _, d := range cur {
		a, _ := netip.AddrFromSlice(d.Address)
		have[netip.AddrPortFrom(a.Unmap(), d.Port)] = d
	}
	keep := map[netip.AddrPort]bool{}
	for _, ap := range want {
		keep[ap] = true
		d := &ipvs.Destination{Address: net.IP(ap.Addr().AsSlice()), Port: ap.Port(), Weight: 1, AddressFamily: family(ap.Addr())}
		old, ok := have[ap]
		switch {
		case !ok:
			if err := r.Handle.NewDestination(svc, d); err != nil {
				errs = append(errs, fmt.Errorf("adding real server %s to %s: %w", ap, k, err))
			}
		case old.Weight != 1:
			if err := r.Handle.UpdateDestination(svc, d); err != nil {
				errs = append(errs, fmt.Errorf("updating real server %s of %s: %w", ap, k, err))
			}
		}
	}
	for ap, d := range have {
		if !keep[ap] {
			if err := r.Handle.DelDestination(svc, d); err != nil {
				errs = append(errs, fmt.Errorf("deleting real server %s of %s: %w", ap, k, err))
			}
		}
	}
	return errs
}

// reconcileAddresses returns the addresses the interface had before.
func (r *Reconciler) reconcileAddresses(want []*VirtualServer) (map[netip.Addr]bool, []error) {
	if err := r.Addresses.EnsureInterface(DummyInterface); err != nil {
		return nil, []error{fmt.Errorf("creating %s: %w", DummyInterface, err)}
	}
	cur, err := r.Addresses.List(DummyInterface)
	if err != nil {
		return nil, []error{fmt.Errorf("listing addresses of %s: %w", DummyInterface, err)}
	}
	have := map[netip.Addr]bool{}
	for _, a := range cur {
		have[a] = true
	}
	need := map[netip.Addr]bool{}
	var errs []error
	for _, v := range want {
		if !v.Bind || need[v.Addr] {
			continue
		}
		need[v.Addr] = true
		if !have[v.Addr] {
			if err := r.Addresses.Add(DummyInterface, v.Addr); err != nil {
				errs = append(errs, fmt.Errorf("adding %s to %s: %w", v.Addr, DummyInterface, err))
			}
		}
	}
	for a := range have {
		if !need[a] {
			if err := r.Addresses.Del(DummyInterface, a); err != nil {
				errs = append(errs, fmt.Errorf("removing %s from %s: %w", a, DummyInterface, err))
			}
		}
	}
	return have, errs
}
