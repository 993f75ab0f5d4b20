package volumes

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
)

const tmpfsMagic = 0x01021994

// TestRealTmpfs mounts real tmpfs volumes and checks Teardown leaves no
// mount and no directory. It needs root (mount(2)).
func TestRealTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounting tmpfs for secret and memory-backed emptyDir volumes requires CAP_SYS_ADMIN")
	}
	st := &store{secrets: map[string]*corev1.Secret{"ns1/s": {Data: map[string][]byte{"password": []byte("hunter2")}}}}
	m := New(t.TempDir(), Sources{Secret: st.secret})
	pod := newPod(
		&corev1.Volume{Name: "s", VolumeSource: &corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
		&corev1.Volume{Name: "mem", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: "Memory", SizeLimit: q("16Mi")}}},
	)
	pod.Metadata.Uid = "tmpfs-test-uid"
	t.Cleanup(func() { m.Teardown(pod.Metadata.Uid) })
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	// Setup again is a refresh, not a second mount.
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	vols := filepath.Join(m.PodDir(pod.Metadata.Uid), "volumes")
	secDir := filepath.Join(vols, "kubernetes.io~secret/s")
	memDir := filepath.Join(vols, "kubernetes.io~empty-dir/mem")
	for _, d := range []string{secDir, memDir} {
		var fs syscall.Statfs_t
		if err := syscall.Statfs(d, &fs); err != nil {
			t.Fatal(err)
		}
		if fs.Type != tmpfsMagic {
			t.Errorf("%s is not a tmpfs (type %#x)", d, fs.Type)
		}
	}
	if got := read(t, filepath.Join(secDir, "password")); got != "hunter2" {
		t.Errorf("secret = %q", got)
	}
	var fs syscall.Statfs_t
	syscall.Statfs(memDir, &fs)
	if size := int64(fs.Blocks) * fs.Bsize; size != 16<<20 {
		t.Errorf("memory emptyDir size %d, want 16Mi", size)
	}
	mps, err := sysMounter{}.MountPoints(m.PodDir(pod.Metadata.Uid))
	if err != nil || len(mps) != 2 {
		t.Fatalf("mount points %v, %v", mps, err)
	}

	if err := m.Teardown(pod.Metadata.Uid); err != nil {
		t.Fatal(err)
	}
	info, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(info), m.PodDir(pod.Metadata.Uid)) {
		t.Errorf("still mounted after teardown:\n%s", info)
	}
	if _, err := os.Stat(m.PodDir(pod.Metadata.Uid)); !os.IsNotExist(err) {
		t.Error("pod directory left behind")
	}
}

func TestMakeRShared(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: making the kubelet root rshared is a mount(2)")
	}
	dir := t.TempDir()
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	for i := 0; i < 2; i++ { // the second call finds it done
		if err := MakeRShared(dir); err != nil {
			t.Fatal(err)
		}
	}
	info, _ := os.ReadFile("/proc/self/mountinfo")
	n := 0
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) > 6 && f[4] == realPath(dir) {
			n++
			if !strings.Contains(line, " shared:") {
				t.Errorf("not shared: %s", line)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d mounts on %s, want 1", n, dir)
	}
}
