// Command skiff-images builds the images Skiff's nodes run, since no public
// registry is reachable from its machines: skiff.local/pause:3.10 (the
// sandbox), skiff.local/agnhost:2.53 (our agnhost on busybox, as upstream's
// image), skiff.local/busybox:1.35 (Debian's busybox-static) and
// skiff.local/coredns:1.15 (skiff-dns, the cluster DNS addon). Each is a
// `docker save`-format tarball in --out that `ctr images import` and a
// kubelet's --image-preload-dir accept.
//
// The Go binaries are built by this tool with `go build` (CGO_ENABLED=0,
// -trimpath, stripped) into a temporary directory, so `go run
// ./images/cmd/skiff-images` from the repository (or anywhere inside the Go
// workspace) is all `make images` needs. A tarball is rewritten only when its
// image's digest changes.
package main

import (
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"skiff.dev/images/internal/imagebuild"
)

// The images and the file each is written to in --out.
const (
	PauseRef   = "skiff.local/pause:3.10"
	AgnhostRef = "skiff.local/agnhost:2.53"
	BusyboxRef = "skiff.local/busybox:1.35"
	CoreDNSRef = "skiff.local/coredns:1.15"
)

// binaries are the Go programs the images hold, by name: each is built
// from its package inside the Go workspace.
var binaries = []struct{ name, pkg string }{
	{"pause", "skiff.dev/images/cmd/pause"},
	{"agnhost", "skiff.dev/images/cmd/agnhost"},
	{"coredns", "skiff.dev/dns/cmd/skiff-dns"},
}

// TarballName is the file in --out holding ref ("pause-3.10.tar").
func TarballName(ref string) string {
	ref = strings.TrimPrefix(ref, "skiff.local/")
	return strings.ReplaceAll(ref, ":", "-") + ".tar"
}

func main() {
	out := flag.String("out", "bin/images", "directory the image tarballs are written to")
	busybox := flag.String("busybox", "/bin/busybox", "a statically linked busybox (Debian's busybox-static)")
	goTool := flag.String("go", "go", "the go command that builds the binaries")
	arch := flag.String("arch", runtime.GOARCH, "architecture of the images")
	flag.Parse()
	log.SetFlags(0)
	if err := run(*out, *busybox, *goTool, *arch); err != nil {
		log.Fatalf("skiff-images: %v", err)
	}
}

func run(out, busybox, goTool, arch string) error {
	if err := checkStatic(busybox); err != nil {
		return fmt.Errorf("%w (install Debian's busybox-static: apt-get install busybox-static)", err)
	}
	if arch != runtime.GOARCH {
		// The applet list comes from running busybox here.
		return fmt.Errorf("--arch %s: only the host's architecture (%s) is supported", arch, runtime.GOARCH)
	}
	applets, err := busyboxApplets(busybox)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "skiff-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bins := map[string]string{}
	for _, b := range binaries {
		bin := filepath.Join(tmp, b.name)
		if err := goBuild(goTool, arch, b.pkg, bin); err != nil {
			return err
		}
		if err := checkStatic(bin); err != nil {
			return err
		}
		bins[b.name] = bin
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	specs := append(Specs(bins["pause"], bins["agnhost"], busybox, applets, arch), CoreDNSSpec(bins["coredns"], arch))
	for _, spec := range specs {
		p := filepath.Join(out, TarballName(spec.Ref))
		digest, wrote, err := imagebuild.Write(p, spec)
		if err != nil {
			return fmt.Errorf("%s: %w", spec.Ref, err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		verb := "unchanged"
		if wrote {
			verb = "wrote"
		}
		fmt.Printf("%-9s %-26s %s %6.1f MB  %s\n", verb, spec.Ref, p, float64(fi.Size())/1e6, digest)
	}
	return nil
}

// Specs returns the three images from the built binaries and busybox.
func Specs(pauseBin, agnhostBin, busybox string, applets []string, arch string) []imagebuild.Spec {
	spec := func(ref string, entries []imagebuild.Entry, entrypoint, cmd []string) imagebuild.Spec {
		return imagebuild.Spec{
			Ref: ref, Entries: entries, Entrypoint: entrypoint, Cmd: cmd,
			Env: []string{imagebuild.DefaultPath}, WorkingDir: "/",
			Architecture: arch, OS: "linux",
		}
	}
	return []imagebuild.Spec{
		spec(PauseRef, []imagebuild.Entry{imagebuild.File("/pause", pauseBin, 0o755)}, []string{"/pause"}, nil),
		spec(AgnhostRef, append(busyboxRoot(busybox, applets),
			imagebuild.File("/agnhost", agnhostBin, 0o755),
			// netexec's /upload writes here, as upstream's image has it.
			imagebuild.Dir("/uploads", 0o777),
		), []string{"/agnhost"}, nil),
		// As Docker's busybox image: no entrypoint, a shell by default.
		spec(BusyboxRef, busyboxRoot(busybox, applets), nil, []string{"sh"}),
	}
}

// CoreDNSSpec is the cluster DNS image, as upstream's coredns image: the
// static binary alone at /coredns (no shell, nothing to exec into), run
// as root so the addon's drop-ALL-add-NET_BIND_SERVICE capabilities let
// it bind port 53, reading the Corefile the addon mounts from its
// ConfigMap.
func CoreDNSSpec(corednsBin, arch string) imagebuild.Spec {
	return imagebuild.Spec{
		Ref: CoreDNSRef,
		Entries: []imagebuild.Entry{
			imagebuild.File("/coredns", corednsBin, 0o755),
			// The mount point of the ConfigMap, there for a read-only root.
			imagebuild.Dir("/etc/coredns", 0o755),
		},
		Entrypoint:   []string{"/coredns"},
		Cmd:          []string{"-conf", "/etc/coredns/Corefile"},
		Env:          []string{imagebuild.DefaultPath},
		WorkingDir:   "/",
		ExposedPorts: []string{"53/tcp", "53/udp", "9153/tcp"},
		Architecture: arch, OS: "linux",
	}
}

// busyboxRoot is a minimal root filesystem: busybox in /bin with a symlink
// per applet, the users and groups upstream's busybox image has, and the
// directories programs expect.
func busyboxRoot(busybox string, applets []string) []imagebuild.Entry {
	entries := []imagebuild.Entry{
		imagebuild.File("/bin/busybox", busybox, 0o755),
		imagebuild.Content("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"+
			"daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"+
			"nobody:x:65534:65534:nobody:/home:/bin/false\n", 0o644),
		imagebuild.Content("/etc/group", "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n", 0o644),
		imagebuild.Content("/etc/nsswitch.conf", "hosts: files dns\n", 0o644),
		imagebuild.Dir("/etc", 0o755),
		imagebuild.Dir("/home", 0o755),
		imagebuild.Dir("/root", 0o700),
		imagebuild.Dir("/tmp", 0o1777),
		imagebuild.Dir("/usr/bin", 0o755),
		imagebuild.Dir("/usr/sbin", 0o755),
		imagebuild.Dir("/var/run", 0o755),
		imagebuild.Dir("/var/tmp", 0o1777),
		// Scripts start with #!/usr/bin/env.
		imagebuild.Symlink("/usr/bin/env", "/bin/busybox"),
	}
	for _, a := range applets {
		if a == "busybox" {
			continue
		}
		entries = append(entries, imagebuild.Symlink("/bin/"+a, "busybox"))
	}
	return entries
}

// busyboxApplets lists the applets busybox was built with.
func busyboxApplets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busybox, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		// Every applet becomes /bin/<name>; a name with a slash would escape.
		if strings.ContainsRune(a, '/') || a == "." || a == ".." {
			continue
		}
		applets = append(applets, a)
	}
	sort.Strings(applets)
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list printed no applets", busybox)
	}
	return applets, nil
}

func goBuild(goTool, arch, pkg, out string) error {
	cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

// checkStatic fails unless path is an ELF executable with no dynamic loader,
// which an image without a libc needs.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New(path + " is dynamically linked")
		}
	}
	return nil
}
