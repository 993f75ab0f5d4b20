package hollow

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/kubelet/internal/cri"
)

// errNoPodCIDR is containerd's answer to RunPodSandbox before the node's
// CNI configuration exists.
var errNoPodCIDR = errors.New("failed to setup network for sandbox: cni plugin not initialized")

// runtime is a hollow node's CRI: cri-api's in-memory fakes, with what a
// real runtime adds through CNI. The fake gives every sandbox the same
// address; here each gets its own from the node's podCIDR, as host-local
// would, and the network is ready only once the kubelet has handed the
// runtime that podCIDR (UpdateRuntimeConfig), so a hollow node is NotReady
// until the controller-manager allocates it one, as a real node is.
type runtime struct {
	*cri.Fake

	mu    sync.Mutex
	pools []*pool             // one per podCIDR, in the kubelet's order
	ips   map[string][]string // sandbox ID → its addresses
}

func newRuntime() *runtime {
	return &runtime{Fake: cri.NewFake(), ips: map[string][]string{}}
}

var _ cri.Runtime = (*runtime)(nil)

// Status is RuntimeReady, and NetworkReady once a podCIDR is known, with
// containerd's reason and message before.
func (r *runtime) Status(ctx context.Context, verbose bool) (*runtimeapi.StatusResponse, error) {
	if _, err := r.Fake.Status(ctx, verbose); err != nil {
		return nil, err
	}
	network := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	r.mu.Lock()
	if len(r.pools) == 0 {
		network = &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Reason: "NetworkPluginNotReady",
			Message: "Network plugin returns error: cni plugin not initialized"}
	}
	r.mu.Unlock()
	return &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true}, network}}}, nil
}

// UpdateRuntimeConfig takes the node's podCIDRs (comma-separated, one per
// family). Addresses already given stay with their sandboxes.
func (r *runtime) UpdateRuntimeConfig(ctx context.Context, c *runtimeapi.RuntimeConfig) error {
	if err := r.Fake.UpdateRuntimeConfig(ctx, c); err != nil {
		return err
	}
	var pools []*pool
	for s := range strings.SplitSeq(c.GetNetworkConfig().GetPodCidr(), ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("podCIDR %q: %w", s, err)
		}
		pools = append(pools, newPool(p.Masked()))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ips := range r.ips {
		for _, ip := range ips {
			for _, p := range pools {
				p.take(ip)
			}
		}
	}
	r.pools = pools
	return nil
}

// RunPodSandbox runs the fake sandbox and gives it an address of each
// podCIDR; with none known it fails as containerd does without CNI.
func (r *runtime) RunPodSandbox(ctx context.Context, config *runtimeapi.PodSandboxConfig, handler string) (string, error) {
	hostNetwork := config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
	r.mu.Lock()
	if len(r.pools) == 0 && !hostNetwork {
		r.mu.Unlock()
		return "", errNoPodCIDR
	}
	r.mu.Unlock()
	id, err := r.Fake.RunPodSandbox(ctx, config, handler)
	if err != nil {
		return id, err
	}
	r.mu.Lock()
	ips := r.ips[id]
	if ips == nil && !hostNetwork {
		for _, p := range r.pools {
			ip, err := p.next()
			if err != nil {
				r.release(ips)
				r.mu.Unlock()
				_ = r.Fake.RemovePodSandbox(ctx, id)
				return "", fmt.Errorf("failed to setup network for sandbox %q: %w", id, err)
			}
			ips = append(ips, ip)
		}
		r.ips[id] = ips
	}
	r.mu.Unlock()

	f := r.FakeRuntimeService
	f.Lock()
	defer f.Unlock()
	if sb, ok := f.Sandboxes[id]; ok {
		// A host-network sandbox has no address of its own (containerd
		// reports none; the kubelet uses the node's).
		sb.Network = &runtimeapi.PodSandboxNetworkStatus{}
		if len(ips) > 0 {
			sb.Network.Ip = ips[0]
		}
		for _, ip := range ips[1:] {
			sb.Network.AdditionalIps = append(sb.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	return id, nil
}

// RemovePodSandbox gives the sandbox's addresses back.
func (r *runtime) RemovePodSandbox(ctx context.Context, id string) error {
	if err := r.Fake.RemovePodSandbox(ctx, id); err != nil {
		return err
	}
	r.mu.Lock()
	r.release(r.ips[id])
	delete(r.ips, id)
	r.mu.Unlock()
	return nil
}

// release frees ips in the pools; r.mu is held.
func (r *runtime) release(ips []string) {
	for _, ip := range ips {
		for _, p := range r.pools {
			p.free(ip)
		}
	}
}

// sandboxes is the number of sandboxes the runtime holds.
func (r *runtime) sandboxes() int {
	f := r.FakeRuntimeService
	f.Lock()
	defer f.Unlock()
	return len(f.Sandboxes)
}

// forgetCalls drops the fakes' call logs: they record every call for
// tests' assertions and would otherwise grow with every relist.
func (r *runtime) forgetCalls() {
	r.FakeRuntimeService.Lock()
	r.FakeRuntimeService.Called = nil
	r.FakeRuntimeService.Unlock()
	r.FakeImageService.Lock()
	r.FakeImageService.Called = nil
	r.FakeImageService.Unlock()
}

// pool hands out a podCIDR's addresses as host-local does: the network
// address and the first host (the bridge's gateway) are never given, and
// the search resumes after the last address handed out, so a freed address
// is not reused at once.
type pool struct {
	prefix netip.Prefix
	last   netip.Addr
	used   map[netip.Addr]bool
}

func newPool(p netip.Prefix) *pool {
	return &pool{prefix: p, last: p.Addr().Next(), used: map[netip.Addr]bool{}}
}

// valid says a may be given: not the network address, not the gateway,
// not IPv4's broadcast address (IPv6 has none).
func (p *pool) valid(a netip.Addr) bool {
	if !p.prefix.Contains(a) || a == p.prefix.Addr() || a == p.prefix.Addr().Next() {
		return false
	}
	if a.Is4() {
		return p.prefix.Contains(a.Next()) // not the broadcast address
	}
	return true
}

func (p *pool) next() (string, error) {
	a := p.last
	for {
		a = a.Next()
		if !a.IsValid() || !p.prefix.Contains(a) {
			a = p.prefix.Addr()
		}
		if p.valid(a) && !p.used[a] {
			p.used[a], p.last = true, a
			return a.String(), nil
		}
		if a == p.last {
			return "", fmt.Errorf("no IP addresses available in range set: %s", p.prefix)
		}
	}
}

func (p *pool) take(ip string) {
	if a, err := netip.ParseAddr(ip); err == nil && p.prefix.Contains(a) {
		p.used[a] = true
	}
}

func (p *pool) free(ip string) {
	if a, err := netip.ParseAddr(ip); err == nil {
		delete(p.used, a)
	}
}
