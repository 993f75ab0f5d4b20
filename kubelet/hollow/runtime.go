package hollow

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

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
//
// A hollow container runs until it is stopped, as kubemark's do, except
// one whose command is `true` or `false`: it exits as soon as it starts,
// with 0 or 1, so that Jobs complete on hollow nodes.
type runtime struct {
	*cri.Fake

	mu    sync.Mutex
	pools []*pool             // one per podCIDR, in the kubelet's order
	ips   map[string][]string // sandbox ID → its addresses
	exits map[string]int32    // created container ID → the code it exits with
}

func newRuntime() *runtime {
	return &runtime{Fake: cri.NewFake(), ips: map[string][]string{}, exits: map[string]int32{}}
}

// exitCode is what a container running command exits with at once, if it
// does.
func exitCode(command []string) (int32, bool) {
	if len(command) != 1 {
		return 0, false
	}
	switch command[0] {
	case "true", "/bin/true":
		return 0, true
	case "false", "/bin/false":
		return 1, true
	}
	return 0, false
}

// CreateContainer notes the containers that will exit at once.
func (r *runtime) CreateContainer(ctx context.Context, sandboxID string, config *runtimeapi.ContainerConfig, sandbox *runtimeapi.PodSandboxConfig) (string, error) {
	id, err := r.Fake.CreateContainer(ctx, sandboxID, config, sandbox)
	if code, ok := exitCode(config.GetCommand()); err == nil && ok {
		r.mu.Lock()
		r.exits[id] = code
		r.mu.Unlock()
	}
	return id, err
}

// StartContainer starts the container; one that exits at once is left
// exited, as the kubelet's next relist finds a real one.
func (r *runtime) StartContainer(ctx context.Context, id string) error {
	if err := r.Fake.StartContainer(ctx, id); err != nil {
		return err
	}
	r.mu.Lock()
	code, ok := r.exits[id]
	delete(r.exits, id)
	r.mu.Unlock()
	if !ok {
		return nil
	}
	f := r.FakeRuntimeService
	f.Lock()
	defer f.Unlock()
	if c := f.Containers[id]; c != nil {
		c.State, c.FinishedAt, c.ExitCode = runtimeapi.ContainerState_CONTAINER_EXITED, time.Now().UnixNano(), code
		c.Reason = "Completed"
		if code != 0 {
			c.Reason = "Error"
		}
	}
	return nil
}

// RemoveContainer forgets a container that never started.
func (r *runtime) RemoveContainer(ctx context.Context, id string) error {
	r.mu.Lock()
	delete(r.exits, id)
	r.mu.Unlock()
	return r.Fake.RemoveContainer(ctx, id)
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
