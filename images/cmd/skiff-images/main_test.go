package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"skiff.dev/images/internal/imagebuild"
)

func TestTarballName(t *testing.T) {
	for ref, want := range map[string]string{PauseRef: "pause-3.10.tar", AgnhostRef: "agnhost-2.53.tar", BusyboxRef: "busybox-1.35.tar",
		CoreDNSRef: "coredns-1.15.tar"} {
		if got := TarballName(ref); got != want {
			t.Errorf("TarballName(%q) = %q, want %q", ref, got, want)
		}
	}
}

// files lists a spec's layer: path to symlink target, or "" for other types.
func files(t *testing.T, spec imagebuild.Spec) map[string]string {
	t.Helper()
	b, err := imagebuild.LayerTar(spec.Entries)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out["/"+hdr.Name] = hdr.Linkname
	}
}

func TestSpecs(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"pause", "agnhost", "busybox"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	specs := Specs(filepath.Join(dir, "pause"), filepath.Join(dir, "agnhost"), filepath.Join(dir, "busybox"),
		[]string{"sh", "wget", "busybox"}, "amd64")
	byRef := map[string]imagebuild.Spec{}
	for _, s := range specs {
		byRef[s.Ref] = s
		if s.Architecture != "amd64" || s.OS != "linux" || s.WorkingDir != "/" || !reflect.DeepEqual(s.Env, []string{imagebuild.DefaultPath}) {
			t.Errorf("%s: platform/env/workdir %+v", s.Ref, s)
		}
	}

	pause := files(t, byRef[PauseRef])
	if _, ok := pause["/pause"]; !ok || len(pause) != 1 || !reflect.DeepEqual(byRef[PauseRef].Entrypoint, []string{"/pause"}) {
		t.Errorf("pause image holds %v, entrypoint %v; want only /pause", pause, byRef[PauseRef].Entrypoint)
	}
	agnhost := files(t, byRef[AgnhostRef])
	if !reflect.DeepEqual(byRef[AgnhostRef].Entrypoint, []string{"/agnhost"}) {
		t.Errorf("agnhost entrypoint %v", byRef[AgnhostRef].Entrypoint)
	}
	busybox := files(t, byRef[BusyboxRef])
	if !reflect.DeepEqual(byRef[BusyboxRef].Cmd, []string{"sh"}) || byRef[BusyboxRef].Entrypoint != nil {
		t.Errorf("busybox entrypoint %v cmd %v, want none and sh", byRef[BusyboxRef].Entrypoint, byRef[BusyboxRef].Cmd)
	}
	for name, fs := range map[string]map[string]string{"agnhost": agnhost, "busybox": busybox} {
		for _, p := range []string{"/bin/busybox", "/etc/passwd", "/tmp/"} {
			if _, ok := fs[p]; !ok {
				t.Errorf("%s image lacks %s", name, p)
			}
		}
		if fs["/bin/sh"] != "busybox" || fs["/bin/wget"] != "busybox" {
			t.Errorf("%s image: /bin/sh -> %q, /bin/wget -> %q; want busybox", name, fs["/bin/sh"], fs["/bin/wget"])
		}
	}
	if _, ok := agnhost["/agnhost"]; !ok {
		t.Error("agnhost image lacks /agnhost")
	}
}

func TestCoreDNSSpec(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "skiff-dns")
	if err := os.WriteFile(bin, []byte("skiff-dns"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := CoreDNSSpec(bin, "amd64")
	fs := files(t, spec)
	if _, ok := fs["/coredns"]; !ok || len(fs) != 3 { // /coredns, /etc/, /etc/coredns/
		t.Errorf("coredns image holds %v, want /coredns and /etc/coredns", fs)
	}
	if spec.Ref != CoreDNSRef || !reflect.DeepEqual(spec.Entrypoint, []string{"/coredns"}) ||
		!reflect.DeepEqual(spec.Cmd, []string{"-conf", "/etc/coredns/Corefile"}) {
		t.Errorf("coredns image %s entrypoint %v cmd %v", spec.Ref, spec.Entrypoint, spec.Cmd)
	}
	if !reflect.DeepEqual(spec.ExposedPorts, []string{"53/tcp", "53/udp", "9153/tcp"}) || spec.Architecture != "amd64" || spec.OS != "linux" {
		t.Errorf("coredns image ports %v platform %s/%s", spec.ExposedPorts, spec.OS, spec.Architecture)
	}
	// The binary the image is built from is skiff-dns.
	found := false
	for _, b := range binaries {
		if b.name == "coredns" {
			found = b.pkg == "skiff.dev/dns/cmd/skiff-dns"
		}
	}
	if !found {
		t.Errorf("coredns is not built from skiff.dev/dns/cmd/skiff-dns: %v", binaries)
	}
}

func TestBusyboxApplets(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("/bin/busybox is not installed (Debian package busybox-static)")
	}
	applets, err := busyboxApplets("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, a := range applets {
		have[a] = true
	}
	for _, a := range []string{"sh", "wget", "nslookup", "sleep", "cat", "ls", "echo"} {
		if !have[a] {
			t.Errorf("applet %s missing from %v", a, applets)
		}
	}
	if err := checkStatic("/bin/busybox"); err != nil {
		t.Errorf("checkStatic(/bin/busybox): %v", err)
	}
}

func TestCheckStaticRejectsDynamicBinaries(t *testing.T) {
	if err := checkStatic("/bin/ls"); err == nil {
		t.Error("checkStatic(/bin/ls) accepted a dynamically linked binary")
	}
}
