// Package imagebuild turns a list of files into a single-layer OCI image and
// writes it as a tarball that `ctr images import` (and so a kubelet's image
// preload) accepts. Builds are reproducible: the same inputs give the same
// digest, which is how Write knows it has nothing to do.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Epoch is every image's and file's timestamp, so rebuilding from the same
// inputs gives the same bytes.
var Epoch = time.Unix(0, 0).UTC()

// DefaultPath is the PATH of every image, as Docker's default.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Entry is one file of a layer.
type Entry struct {
	// Path inside the image, absolute ("/bin/sh").
	Path string
	// Type is tar.TypeReg, tar.TypeDir or tar.TypeSymlink.
	Type byte
	Mode int64
	// Data is a regular file's content, or Source the host file to copy.
	Data   []byte
	Source string
	// Linkname is a symlink's target.
	Linkname string
}

// File is a regular file read from the host at build time.
func File(p, source string, mode int64) Entry {
	return Entry{Path: p, Type: tar.TypeReg, Mode: mode, Source: source}
}

// Content is a regular file with the given content.
func Content(p, data string, mode int64) Entry {
	return Entry{Path: p, Type: tar.TypeReg, Mode: mode, Data: []byte(data)}
}

// Dir is a directory.
func Dir(p string, mode int64) Entry { return Entry{Path: p, Type: tar.TypeDir, Mode: mode} }

// Symlink is a symbolic link at p pointing to target.
func Symlink(p, target string) Entry {
	return Entry{Path: p, Type: tar.TypeSymlink, Mode: 0o777, Linkname: target}
}

// Spec describes one image.
type Spec struct {
	// Ref is the image's name, "skiff.local/pause:3.10".
	Ref        string
	Entries    []Entry
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	// ExposedPorts are Docker's EXPOSE ("53/udp", "9153/tcp"): what a
	// reader of the image learns it serves.
	ExposedPorts []string
	// Architecture and OS of the image config ("amd64", "linux").
	Architecture string
	OS           string
}

// LayerTar returns the uncompressed tar of entries: sorted by path, parent
// directories added where missing, owned by root, stamped with Epoch.
func LayerTar(entries []Entry) ([]byte, error) {
	byPath := map[string]Entry{}
	for _, e := range entries {
		p := path.Clean(e.Path)
		if !path.IsAbs(p) || p == "/" {
			return nil, fmt.Errorf("entry path %q must be absolute and not /", e.Path)
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("entry %q given twice", p)
		}
		e.Path = p
		byPath[p] = e
	}
	for p := range byPath {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if existing, ok := byPath[d]; ok {
				if existing.Type != tar.TypeDir {
					return nil, fmt.Errorf("%q is inside %q, which is not a directory", p, d)
				}
				continue
			}
			byPath[d] = Dir(d, 0o755)
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := byPath[p]
		hdr := &tar.Header{
			Name:     strings.TrimPrefix(p, "/"),
			Typeflag: e.Type,
			Mode:     e.Mode,
			ModTime:  Epoch,
			Format:   tar.FormatPAX,
		}
		var data []byte
		switch e.Type {
		case tar.TypeDir:
			hdr.Name += "/"
		case tar.TypeSymlink:
			hdr.Linkname = e.Linkname
		case tar.TypeReg:
			data = e.Data
			if e.Source != "" {
				var err error
				if data, err = os.ReadFile(e.Source); err != nil {
					return nil, err
				}
			}
			hdr.Size = int64(len(data))
		default:
			return nil, fmt.Errorf("entry %q: unsupported type %q", p, e.Type)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Image builds the image spec describes.
func Image(spec Spec) (v1.Image, error) {
	layerTar, err := LayerTar(spec.Entries)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec.Ref, err)
	}
	layer, err := tarball.LayerFromOpener(
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil },
		tarball.WithCompressionLevel(gzip.BestCompression),
	)
	if err != nil {
		return nil, err
	}
	// Docker media types: a `docker save` tarball, the format tarball.Write
	// produces, cannot carry others, and reading it back (to compare digests,
	// or by containerd's importer) yields these.
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: "skiff-images", Comment: spec.Ref},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = spec.Architecture
	cf.OS = spec.OS
	cf.Created = v1.Time{Time: Epoch}
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.Env = spec.Env
	cf.Config.WorkingDir = spec.WorkingDir
	// Left nil when empty, so images without ports keep their digests.
	if len(spec.ExposedPorts) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range spec.ExposedPorts {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	return mutate.ConfigFile(img, cf)
}

// Write builds spec's image and writes it to path as a tarball tagged with
// spec.Ref, unless the file already holds an image of the same digest. It
// returns the digest and whether it wrote the file.
func Write(filePath string, spec Spec) (v1.Hash, bool, error) {
	tag, err := name.NewTag(spec.Ref, name.StrictValidation)
	if err != nil {
		return v1.Hash{}, false, err
	}
	img, err := Image(spec)
	if err != nil {
		return v1.Hash{}, false, err
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, false, err
	}
	if old, err := tarball.ImageFromPath(filePath, &tag); err == nil {
		if d, err := old.Digest(); err == nil && d == digest {
			return digest, false, nil
		}
	}
	// Write beside the target and rename, so a reader (a kubelet importing
	// the preload directory) never sees half a tarball.
	tmp, err := os.CreateTemp(filepath.Dir(filePath), ".tmp-"+filepath.Base(filePath))
	if err != nil {
		return v1.Hash{}, false, err
	}
	defer os.Remove(tmp.Name())
	if err := tarball.Write(tag, img, tmp); err != nil {
		tmp.Close()
		return v1.Hash{}, false, err
	}
	if err := tmp.Close(); err != nil {
		return v1.Hash{}, false, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return v1.Hash{}, false, err
	}
	if err := os.Rename(tmp.Name(), filePath); err != nil {
		return v1.Hash{}, false, err
	}
	return digest, true, nil
}
