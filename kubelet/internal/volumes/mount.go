package volumes

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// mounter is the part of the kernel's mount table the manager touches,
// replaceable in tests that must not need root.
type mounter interface {
	// MountTmpfs mounts a fresh tmpfs on dir; size 0 leaves the kernel's
	// default (half of RAM).
	MountTmpfs(dir string, size int64) error
	Unmount(dir string) error
	// MountPoints lists the mount points at or below dir, in the order to
	// unmount them.
	MountPoints(dir string) ([]string, error)
}

type sysMounter struct{}

// dirMounter keeps tmpfs volumes as plain directories: for simulated nodes
// (many in one process, perhaps without root), whose containers are fakes
// and whose memory nothing must hold.
type dirMounter struct{}

func (dirMounter) MountTmpfs(string, int64) error       { return nil }
func (dirMounter) Unmount(string) error                 { return nil }
func (dirMounter) MountPoints(string) ([]string, error) { return nil, nil }

func (sysMounter) MountTmpfs(dir string, size int64) error {
	opts := ""
	if size > 0 {
		opts = "size=" + strconv.FormatInt(size, 10)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

func (sysMounter) Unmount(dir string) error {
	err := syscall.Unmount(dir, 0)
	if err == syscall.EBUSY {
		// A container still holding it: detach now, the kernel frees it
		// when the last user goes.
		err = syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	if err != nil && err != syscall.EINVAL && err != syscall.ENOENT {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

func (sysMounter) MountPoints(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	// The kernel lists resolved paths; a root directory reached through a
	// symlink must not hide its mounts (and have them removed through).
	return mountPointsUnder(b, realPath(dir)), nil
}

// realPath resolves symlinks where the path exists, else cleans it.
func realPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// MakeRShared makes dir a recursively shared mount (bind-mounting it on
// itself first when it is no mount point), as upstream's kubelet does with
// its root directory at start: the runtime can then give containers
// HostToContainer and Bidirectional propagation from the volumes below it.
// Needs root; the bind mount stays until the mount namespace goes.
func MakeRShared(dir string) error {
	dir = realPath(dir)
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	mounted, shared := false, false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 7 || unescapeOctal(f[4]) != dir {
			continue
		}
		mounted, shared = true, false // the last mount on dir is the visible one
		for _, opt := range f[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				shared = true
			}
		}
	}
	if shared {
		return nil
	}
	if !mounted {
		if err := syscall.Mount(dir, dir, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s on itself: %w", dir, err)
		}
	}
	if err := syscall.Mount("", dir, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s rshared: %w", dir, err)
	}
	return nil
}

// mountPointsUnder parses mountinfo (field 5 is the mount point, octal
// escaped) and returns those at or below dir, last mounted first.
func mountPointsUnder(mountinfo []byte, dir string) []string {
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := unescapeOctal(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// mountinfo lists mounts in the order they were made, so the reverse
	// unmounts what is on top (or inside) first.
	slices.Reverse(out)
	return out
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isMountPoint(m mounter, dir string) (bool, error) {
	mps, err := m.MountPoints(dir)
	if err != nil {
		return false, err
	}
	dir = realPath(dir)
	for _, mp := range mps {
		if mp == dir {
			return true, nil
		}
	}
	return false, nil
}
