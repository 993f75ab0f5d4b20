package volumes

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// File is one file of a projected payload.
type File struct {
	Data []byte
	Mode os.FileMode
}

const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"
)

// writeAtomic projects payload into dir as upstream's AtomicWriter does: the
// files live in a hidden timestamped directory (..2006_01_02_15_04_05.N),
// ..data links to it, and every visible top-level name links through ..data.
// An update writes a new timestamped directory and renames a fresh link over
// ..data, so a reader sees either the old set of files or the new one, never
// a mix. Nothing is written when the payload is what is already there.
func writeAtomic(dir string, payload map[string]File) (changed bool, err error) {
	clean := make(map[string]File, len(payload))
	for p, f := range payload {
		if err := validatePayloadPath(p); err != nil {
			return false, err
		}
		clean[filepath.Clean(p)] = f
	}

	dataDir := filepath.Join(dir, dataDirName)
	oldTs, err := os.Readlink(dataDir)
	if err != nil && !os.IsNotExist(err) {
		return false, fmt.Errorf("error reading link for data directory: %v", err)
	}
	var oldFiles []string
	if oldTs != "" {
		oldFiles, err = listFiles(filepath.Join(dir, oldTs))
		if err != nil {
			return false, err
		}
		if same(clean, oldFiles, filepath.Join(dir, oldTs)) {
			return false, nil
		}
	}

	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, err
	}
	// 0755 so that group and other can walk in whatever the umask.
	if err := os.Chmod(tsDir, 0o755); err != nil {
		os.RemoveAll(tsDir)
		return false, err
	}
	for p, f := range clean {
		full := filepath.Join(tsDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			os.RemoveAll(tsDir)
			return false, err
		}
		if err := os.WriteFile(full, f.Data, f.Mode); err != nil {
			os.RemoveAll(tsDir)
			return false, err
		}
		// WriteFile's mode went through the umask.
		if err := os.Chmod(full, f.Mode); err != nil {
			os.RemoveAll(tsDir)
			return false, err
		}
	}

	tmpLink := filepath.Join(dir, newDataDirName)
	os.Remove(tmpLink) // left by an interrupted write
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		os.RemoveAll(tsDir)
		return false, err
	}
	if err := os.Rename(tmpLink, dataDir); err != nil {
		os.Remove(tmpLink)
		os.RemoveAll(tsDir)
		return false, err
	}

	visible := map[string]bool{}
	for p := range clean {
		top, _, _ := strings.Cut(p, string(os.PathSeparator))
		visible[top] = true
	}
	for top := range visible {
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join(dataDirName, top), link); err != nil {
				return true, err
			}
		}
	}
	for _, p := range oldFiles {
		top, _, _ := strings.Cut(p, string(os.PathSeparator))
		if !visible[top] {
			if err := os.Remove(filepath.Join(dir, top)); err != nil && !os.IsNotExist(err) {
				return true, err
			}
			visible[top] = true // removed once
		}
	}
	if oldTs != "" {
		if err := os.RemoveAll(filepath.Join(dir, oldTs)); err != nil {
			return true, err
		}
	}
	return true, nil
}

// validatePayloadPath refuses what could leave the volume or collide with the
// writer's own ..-names, with upstream's messages.
func validatePayloadPath(p string) error {
	if p == "" {
		return fmt.Errorf("invalid path: must not be empty: %q", p)
	}
	if filepath.IsAbs(p) {
		return fmt.Errorf("invalid path: must be relative path: %s", p)
	}
	if len(p) > 4096 {
		return fmt.Errorf("invalid path: must be less than or equal to %d characters", 4096)
	}
	items := strings.Split(p, string(os.PathSeparator))
	for _, item := range items {
		if item == ".." {
			return fmt.Errorf("invalid path: must not contain '..': %s", p)
		}
		if len(item) > 255 {
			return fmt.Errorf("invalid path: filenames must be less than or equal to %d characters", 255)
		}
	}
	if strings.HasPrefix(items[0], "..") && len(items[0]) > 2 {
		return fmt.Errorf("invalid path: must not start with '..': %s", p)
	}
	return nil
}

// listFiles returns the regular files under dir, relative to it.
func listFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if os.IsNotExist(err) {
		return nil, nil
	}
	sort.Strings(out)
	return out, err
}

func same(payload map[string]File, oldFiles []string, oldDir string) bool {
	if len(payload) != len(oldFiles) {
		return false
	}
	for _, p := range oldFiles {
		f, ok := payload[p]
		if !ok {
			return false
		}
		full := filepath.Join(oldDir, p)
		st, err := os.Lstat(full)
		if err != nil || st.Mode().Perm() != f.Mode.Perm() {
			return false
		}
		b, err := os.ReadFile(full)
		if err != nil || !bytes.Equal(b, f.Data) {
			return false
		}
	}
	return true
}
