package app

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	cri "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Importer loads one image tarball into the runtime.
type Importer func(ctx context.Context, file string) error

// CtrImporter imports through containerd's ctr into the CRI plugin's
// namespace (k8s.io), as k3s does for air-gapped nodes. The CRI has no
// import call, so until the kubelet speaks containerd's own API this needs
// ctr on PATH and the runtime to be containerd.
func CtrImporter(socket string) Importer {
	return func(ctx context.Context, file string) error {
		out, err := exec.CommandContext(ctx, "ctr", "-n", "k8s.io", "-a", socket, "images", "import", file).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr images import %s: %w: %s", file, err, out)
		}
		return nil
	}
}

// preloadImages imports every *.tar of dir whose images the runtime does
// not hold yet (checked with ImageStatus, so a restart imports nothing).
func preloadImages(ctx context.Context, dir string, images cri.ImageManagerService, imp Importer, log *slog.Logger) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("--image-preload-dir: %w", err)
	}
	slices.Sort(files)
	var errs []error
	for _, f := range files {
		names, err := tarballImageNames(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		present := len(names) > 0
		for _, n := range names {
			st, err := images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: n}, false)
			if err != nil || st.GetImage() == nil {
				present = false
				break
			}
		}
		if present {
			log.Debug("Preloaded image already present", "file", f, "images", names)
			continue
		}
		if err := imp(ctx, f); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("Imported image", "file", f, "images", names)
	}
	return errors.Join(errs...)
}

// tarballImageNames reads the image references a tarball carries: the
// RepoTags of a docker archive's manifest.json (what go-containerregistry's
// tarball writes) or the name annotations of an OCI layout's index.json.
func tarballImageNames(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		switch filepath.Clean(h.Name) {
		case "manifest.json":
			var m []struct{ RepoTags []string }
			if err := json.NewDecoder(tr).Decode(&m); err != nil {
				return nil, fmt.Errorf("%s: manifest.json: %w", file, err)
			}
			for _, e := range m {
				names = append(names, e.RepoTags...)
			}
		case "index.json":
			var idx struct {
				Manifests []struct{ Annotations map[string]string }
			}
			if err := json.NewDecoder(tr).Decode(&idx); err != nil {
				return nil, fmt.Errorf("%s: index.json: %w", file, err)
			}
			for _, m := range idx.Manifests {
				if n := m.Annotations["io.containerd.image.name"]; n != "" {
					names = append(names, n)
				} else if n := m.Annotations["org.opencontainers.image.ref.name"]; strings.Contains(n, "/") {
					// Often only a tag ("3.10"); a full reference is usable.
					names = append(names, n)
				}
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
