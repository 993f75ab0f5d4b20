package imagegc

import "golang.org/x/sys/unix"

// statfs is cadvisor's measure of a filesystem: its blocks, and those
// available to unprivileged users (the root reserve is not free to pods).
func statfs(path string) (FsStats, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return FsStats{}, err
	}
	bs := uint64(st.Bsize)
	return FsStats{Capacity: st.Blocks * bs, Available: st.Bavail * bs}, nil
}
