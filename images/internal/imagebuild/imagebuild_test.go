package imagebuild

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func readTar(t *testing.T, b []byte) map[string]*tar.Header {
	t.Helper()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(b))
	var order []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = hdr
		order = append(order, hdr.Name)
	}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Errorf("tar entries not sorted: %q before %q", order[i-1], order[i])
		}
	}
	return out
}

func TestLayerTarAddsParentsAndIsReproducible(t *testing.T) {
	entries := []Entry{
		Content("/usr/bin/hello", "hi", 0o755),
		Symlink("/bin/sh", "busybox"),
		Dir("/tmp", 0o1777),
	}
	a, err := LayerTar(entries)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LayerTar([]Entry{entries[2], entries[0], entries[1]})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("the same entries in another order gave another layer")
	}
	hdrs := readTar(t, a)
	for _, d := range []string{"usr/", "usr/bin/", "bin/"} {
		if h, ok := hdrs[d]; !ok || h.Typeflag != tar.TypeDir || h.Mode != 0o755 {
			t.Errorf("parent directory %q missing or wrong: %+v", d, h)
		}
	}
	if h := hdrs["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp/ = %+v, want mode 1777", h)
	}
	if h := hdrs["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
		t.Errorf("bin/sh = %+v, want a symlink to busybox", h)
	}
	if h := hdrs["usr/bin/hello"]; h == nil || h.Size != 2 || !h.ModTime.Equal(Epoch) || h.Uid != 0 {
		t.Errorf("usr/bin/hello = %+v", h)
	}
}

func TestLayerTarRejectsBadEntries(t *testing.T) {
	for name, entries := range map[string][]Entry{
		"relative":    {Content("etc/passwd", "", 0o644)},
		"duplicate":   {Dir("/etc", 0o755), Dir("/etc/", 0o755)},
		"under file":  {Content("/bin", "", 0o755), Content("/bin/sh", "", 0o755)},
		"missing src": {File("/x", "/nonexistent/skiff-images-test", 0o644)},
	} {
		if _, err := LayerTar(entries); err == nil {
			t.Errorf("%s: LayerTar accepted %+v", name, entries)
		}
	}
}

func testSpec(t *testing.T, content string) Spec {
	src := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(src, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return Spec{
		Ref:          "skiff.local/test:1.0",
		Entries:      []Entry{File("/app", src, 0o755)},
		Entrypoint:   []string{"/app"},
		Env:          []string{DefaultPath},
		ExposedPorts: []string{"53/udp", "9153/tcp"},
		WorkingDir:   "/",
		Architecture: "amd64",
		OS:           "linux",
	}
}

func TestWriteSkipsAnUnchangedImage(t *testing.T) {
	out := filepath.Join(t.TempDir(), "test.tar")
	d1, wrote, err := Write(out, testSpec(t, "v1"))
	if err != nil || !wrote {
		t.Fatalf("first Write: wrote %v, %v", wrote, err)
	}
	before, _ := os.Stat(out)
	d2, wrote, err := Write(out, testSpec(t, "v1"))
	if err != nil || wrote || d2 != d1 {
		t.Fatalf("second Write of the same inputs: wrote %v digest %v (first %v), %v", wrote, d2, d1, err)
	}
	after, _ := os.Stat(out)
	if !after.ModTime().Equal(before.ModTime()) {
		t.Error("an unchanged image rewrote its tarball")
	}
	d3, wrote, err := Write(out, testSpec(t, "v2"))
	if err != nil || !wrote || d3 == d1 {
		t.Fatalf("Write of new content: wrote %v digest %v, %v", wrote, d3, err)
	}

	tag, _ := name.NewTag("skiff.local/test:1.0")
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d != d3 {
		t.Errorf("tarball holds %v, Write reported %v", d, d3)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "amd64" || cf.OS != "linux" || !reflect.DeepEqual(cf.Config.Entrypoint, []string{"/app"}) ||
		cf.Config.WorkingDir != "/" || !reflect.DeepEqual(cf.Config.Env, []string{DefaultPath}) || len(cf.RootFS.DiffIDs) != 1 ||
		!reflect.DeepEqual(cf.Config.ExposedPorts, map[string]struct{}{"53/udp": {}, "9153/tcp": {}}) {
		t.Errorf("config = %+v", cf)
	}
	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if h := readTar(t, b)["app"]; h == nil || h.Size != 2 || h.Mode != 0o755 {
		t.Errorf("/app in the layer = %+v", h)
	}
	if entries, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".tmp-*")); len(entries) != 0 {
		t.Errorf("temporary files left: %v", entries)
	}
}
