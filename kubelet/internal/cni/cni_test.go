package cni

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// parsed is the conflist as the plugins read it.
type parsed struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []struct {
		Type         string          `json:"type"`
		Bridge       string          `json:"bridge"`
		IsGateway    *bool           `json:"isGateway"`
		IPMasq       *bool           `json:"ipMasq"`
		HairpinMode  *bool           `json:"hairpinMode"`
		MTU          int             `json:"mtu"`
		Capabilities map[string]bool `json:"capabilities"`
		IPAM         *struct {
			Type    string `json:"type"`
			Ranges  [][]map[string]string
			Routes  []map[string]string
			DataDir string `json:"dataDir"`
		} `json:"ipam"`
	} `json:"plugins"`
}

func TestConflist(t *testing.T) {
	for _, tc := range []struct {
		name   string
		o      Options
		ranges [][]map[string]string
		routes []map[string]string
		err    string
	}{
		{
			name:   "ipv4",
			o:      Options{PodCIDRs: []string{"10.244.1.0/24"}, DataDir: "/var/lib/skiff/node-1/cni/networks"},
			ranges: [][]map[string]string{{{"subnet": "10.244.1.0/24"}}},
			routes: []map[string]string{{"dst": "0.0.0.0/0"}},
		},
		{
			name: "dual-stack",
			o:    Options{Name: "net", Bridge: "br9", PodCIDRs: []string{"10.244.2.0/24", "fd00:10:244:2::/64"}, DataDir: "/d", MTU: 1450},
			ranges: [][]map[string]string{
				{{"subnet": "10.244.2.0/24"}},
				{{"subnet": "fd00:10:244:2::/64"}},
			},
			routes: []map[string]string{{"dst": "0.0.0.0/0"}, {"dst": "::/0"}},
		},
		{name: "no cidr", o: Options{}, err: "no podCIDR"},
		{name: "bad cidr", o: Options{PodCIDRs: []string{"10.244.1.0"}}, err: `podCIDR "10.244.1.0"`},
		{name: "host bits", o: Options{PodCIDRs: []string{"10.244.1.5/24"}}, err: "not a network address (want 10.244.1.0/24)"},
		{name: "same family twice", o: Options{PodCIDRs: []string{"10.244.1.0/24", "10.245.1.0/24"}}, err: "two ranges of one family"},
		{name: "three", o: Options{PodCIDRs: []string{"10.1.0.0/24", "fd00::/64", "10.2.0.0/24"}}, err: "at most two"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Conflist(tc.o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var p parsed
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			wantName, wantBridge := tc.o.Name, tc.o.Bridge
			if wantName == "" {
				wantName, wantBridge = "skiff", "cni0"
			}
			if p.CNIVersion != "1.0.0" || p.Name != wantName || len(p.Plugins) != 2 {
				t.Fatalf("conflist %s", b)
			}
			br, pm := p.Plugins[0], p.Plugins[1]
			if br.Type != "bridge" || br.Bridge != wantBridge || br.IsGateway == nil || !*br.IsGateway ||
				br.IPMasq == nil || *br.IPMasq || br.HairpinMode == nil || !*br.HairpinMode || br.MTU != tc.o.MTU {
				t.Errorf("bridge %s", b)
			}
			if br.IPAM == nil || br.IPAM.Type != "host-local" || br.IPAM.DataDir != tc.o.DataDir ||
				!reflect.DeepEqual(br.IPAM.Ranges, tc.ranges) || !reflect.DeepEqual(br.IPAM.Routes, tc.routes) {
				t.Errorf("ipam %s", b)
			}
			if pm.Type != "portmap" || !reflect.DeepEqual(pm.Capabilities, map[string]bool{"portMappings": true}) {
				t.Errorf("portmap %s", b)
			}

			// libcni reads it as containerd will.
			list, err := libcni.ConfListFromBytes(b)
			if err != nil {
				t.Fatal(err)
			}
			if list.Name != wantName || list.CNIVersion != "1.0.0" || len(list.Plugins) != 2 ||
				list.Plugins[0].Network.Type != "bridge" || list.Plugins[1].Network.Type != "portmap" ||
				!list.Plugins[1].Network.Capabilities["portMappings"] {
				t.Errorf("libcni read %+v", list)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	o := Options{PodCIDRs: []string{"10.244.1.0/24"}, DataDir: "/d"}
	path, err := Write(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, "10-skiff.conflist") {
		t.Errorf("path %s", path)
	}
	// The file libcni finds in the directory is ours, and nothing else is left.
	list, err := libcni.LoadConfList(dir, "skiff")
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Plugins) != 2 {
		t.Errorf("plugins %d", len(list.Plugins))
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("stat %v %v", fi, err)
	}
	// Rewriting with a new podCIDR replaces the content.
	o.PodCIDRs = []string{"10.244.7.0/24"}
	if _, err := Write(dir, o); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "10.244.7.0/24") || strings.Contains(string(b), "10.244.1.0/24") {
		t.Errorf("rewritten %s", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d files in %s, want only the conflist", len(entries), dir)
	}
	// An invalid configuration writes nothing.
	if _, err := Write(dir, Options{}); err == nil {
		t.Error("Write without podCIDR succeeded")
	}
	if b2, _ := os.ReadFile(path); string(b2) != string(b) {
		t.Error("a failed Write changed the file")
	}
}

func TestCheckPlugins(t *testing.T) {
	dir := t.TempDir()
	// A plugin that answers VERSION like Debian's 1.1.1.
	script := "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\"]}'\n"
	if err := os.WriteFile(filepath.Join(dir, "bridge"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	o := Options{PodCIDRs: []string{"10.244.1.0/24"}, BinDir: dir}
	if _, err := Conflist(o); err == nil || err.Error() != `cni: plugin "host-local" not found in `+dir {
		t.Fatalf("error %v, want host-local missing", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "host-local"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Conflist(o); err == nil || err.Error() != `cni: plugin "portmap" not found in `+dir {
		t.Fatalf("error %v, want portmap missing", err)
	}
	old := "#!/bin/sh\necho '{\"cniVersion\":\"0.4.0\",\"supportedVersions\":[\"0.3.1\",\"0.4.0\"]}'\n"
	if err := os.WriteFile(filepath.Join(dir, "portmap"), []byte(old), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Conflist(o); err == nil || !strings.Contains(err.Error(), `plugin "portmap" does not support cniVersion 1.0.0`) {
		t.Fatalf("error %v, want portmap too old", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "portmap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Conflist(o); err != nil {
		t.Fatal(err)
	}
}

// The Debian plugins on this machine accept what we write.
func TestInstalledPlugins(t *testing.T) {
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			t.Skipf("/usr/lib/cni/%s missing (hack/install-deps.sh installs the CNI plugins)", p)
		}
	}
	b, err := Conflist(Options{PodCIDRs: []string{"10.244.1.0/24"}, BinDir: "/usr/lib/cni"})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := libcni.ConfListFromBytes(b)
	cfg := libcni.NewCNIConfig([]string{"/usr/lib/cni"}, nil)
	caps, err := cfg.ValidateNetworkList(context.Background(), list)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(caps, []string{"portMappings"}) {
		t.Errorf("capabilities %v", caps)
	}
}
