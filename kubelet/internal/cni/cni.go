// Package cni writes the node's CNI network configuration: a bridge with
// host-local addresses from the node's podCIDRs and portmap for hostPorts,
// the conflist containerd's CRI plugin reads from its conf_dir.
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

// CNIVersion is the spec version of the conflist: libcni v1.3 implements up
// to 1.1.0 and Debian's plugins 1.1.1 accept 1.0.0.
const CNIVersion = "1.0.0"

// FileName is what Write names the conflist; "10-" sorts it first, and
// containerd (max_conf_num = 1) loads only the first.
const FileName = "10-skiff.conflist"

// Options describe the node's pod network.
type Options struct {
	Name     string   // network name, "skiff" when empty
	Bridge   string   // bridge device, "cni0" when empty
	PodCIDRs []string // the node's spec.podCIDRs: one IPv4 and/or one IPv6 range
	DataDir  string   // host-local's dataDir; per node, since the default /var/lib/cni/networks is shared
	MTU      int      // bridge and veth MTU; 0 leaves the plugin's default
	// BinDir, when set, makes Conflist check that every plugin exists there
	// and supports CNIVersion (it runs each binary's VERSION command).
	BinDir string
}

// bridgeConf is the bridge plugin's configuration (plugins/main/bridge).
// The plugins' own fields sit beside the common ones rather than embedding
// types.PluginConf, whose pointer MarshalJSON would drop them.
type bridgeConf struct {
	Type        string `json:"type"`
	Bridge      string `json:"bridge"`
	IsGateway   bool   `json:"isGateway"`
	IPMasq      bool   `json:"ipMasq"`
	HairpinMode bool   `json:"hairpinMode"`
	MTU         int    `json:"mtu,omitempty"`
	IPAM        ipam   `json:"ipam"`
}

// ipam is host-local's configuration (plugins/ipam/host-local).
type ipam struct {
	Type    string         `json:"type"`
	Ranges  [][]rangeEntry `json:"ranges"`
	Routes  []*types.Route `json:"routes"`
	DataDir string         `json:"dataDir,omitempty"`
}

type rangeEntry struct {
	Subnet string `json:"subnet"`
}

// portmapConf is the portmap plugin's configuration: hostPorts arrive as
// the portMappings capability (runtimeConfig) from containerd.
type portmapConf struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
}

type confList struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

// Conflist returns the node's conflist, validated with libcni.
func Conflist(o Options) ([]byte, error) {
	if o.Name == "" {
		o.Name = "skiff"
	}
	if o.Bridge == "" {
		o.Bridge = "cni0"
	}
	if len(o.PodCIDRs) == 0 {
		return nil, errors.New("cni: no podCIDR")
	}
	if len(o.PodCIDRs) > 2 {
		return nil, fmt.Errorf("cni: at most two podCIDRs (one per family), got %d", len(o.PodCIDRs))
	}
	if o.MTU < 0 {
		return nil, fmt.Errorf("cni: invalid MTU %d", o.MTU)
	}
	am := ipam{Type: "host-local", DataDir: o.DataDir}
	var families [2]bool
	for _, c := range o.PodCIDRs {
		ip, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, fmt.Errorf("cni: podCIDR %q: %w", c, err)
		}
		if !ip.Equal(n.IP) {
			return nil, fmt.Errorf("cni: podCIDR %q is not a network address (want %s)", c, n)
		}
		v6 := ip.To4() == nil
		fam := 0
		if v6 {
			fam = 1
		}
		if families[fam] {
			return nil, fmt.Errorf("cni: podCIDRs %v: two ranges of one family", o.PodCIDRs)
		}
		families[fam] = true
		// One ranges entry per family: host-local gives one address from each.
		am.Ranges = append(am.Ranges, []rangeEntry{{Subnet: n.String()}})
		def := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		if v6 {
			def = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		am.Routes = append(am.Routes, &types.Route{Dst: *def})
	}
	list := confList{
		CNIVersion: CNIVersion,
		Name:       o.Name,
		Plugins: []any{
			bridgeConf{
				Type:        "bridge",
				Bridge:      o.Bridge,
				IsGateway:   true,
				IPMasq:      false, // pod addresses are routed between nodes (host-gw), not hidden
				HairpinMode: true,  // a pod reaches itself through a Service's address
				MTU:         o.MTU,
				IPAM:        am,
			},
			portmapConf{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cni: %w", err)
	}
	parsed, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("cni: generated conflist does not parse: %w", err)
	}
	if o.BinDir != "" {
		if err := CheckPlugins(context.Background(), o.BinDir, parsed); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// CheckPlugins reports the first plugin of list (IPAM plugins included) that
// is missing from binDir or does not support the list's cniVersion.
func CheckPlugins(ctx context.Context, binDir string, list *libcni.NetworkConfigList) error {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
	var names []string
	for _, p := range list.Plugins {
		names = append(names, p.Network.Type)
		if t := p.Network.IPAM.Type; t != "" {
			names = append(names, t)
		}
	}
	for _, name := range names {
		path := filepath.Join(binDir, name)
		if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("cni: plugin %q not found in %s", name, binDir)
		}
		vi, err := invoke.GetVersionInfo(ctx, path, exec)
		if err != nil {
			return fmt.Errorf("cni: plugin %q: %w", name, err)
		}
		ok := false
		for _, v := range vi.SupportedVersions() {
			ok = ok || v == list.CNIVersion
		}
		if !ok {
			return fmt.Errorf("cni: plugin %q does not support cniVersion %s (supports %v)", name, list.CNIVersion, vi.SupportedVersions())
		}
	}
	return nil
}

// Write writes the conflist to <dir>/10-skiff.conflist atomically (a
// temporary file renamed over it), so containerd never reads half a file.
func Write(dir string, o Options) (string, error) {
	b, err := Conflist(o)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cni: %w", err)
	}
	path := filepath.Join(dir, FileName)
	if old, err := os.ReadFile(path); err == nil && string(old) == string(b) {
		return path, nil
	}
	f, err := os.CreateTemp(dir, "."+FileName+".*")
	if err != nil {
		return "", fmt.Errorf("cni: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return "", fmt.Errorf("cni: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("cni: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("cni: %w", err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return "", fmt.Errorf("cni: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("cni: %w", err)
	}
	return path, nil
}
