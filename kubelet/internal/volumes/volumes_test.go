package volumes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/kubelet/internal/envvars"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// fakeMounter keeps a mount table in memory so content tests need no root.
type fakeMounter struct {
	mu     sync.Mutex
	mounts map[string]int64 // dir -> size
}

func (f *fakeMounter) MountTmpfs(dir string, size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.mounts[dir]; ok {
		return fmt.Errorf("%s mounted twice", dir)
	}
	f.mounts[dir] = size
	return nil
}

func (f *fakeMounter) Unmount(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mounts, dir)
	return nil
}

func (f *fakeMounter) MountPoints(dir string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for mp := range f.mounts {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

type store struct {
	mu      sync.Mutex
	cms     map[string]*corev1.ConfigMap
	secrets map[string]*corev1.Secret
}

func (s *store) configMap(ns, name string) (*corev1.ConfigMap, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cm, ok := s.cms[ns+"/"+name]; ok {
		return cm, nil
	}
	return nil, apierrors.NewNotFound("configmaps", name)
}

func (s *store) secret(ns, name string) (*corev1.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec, ok := s.secrets[ns+"/"+name]; ok {
		return sec, nil
	}
	return nil, apierrors.NewNotFound("secrets", name)
}

func ptr[T any](v T) *T { return &v }

func q(s string) *metav1.Quantity { return &metav1.Quantity{String_: s} }

func newTest(t *testing.T, src Sources) (*Manager, *fakeMounter, *store) {
	t.Helper()
	st := &store{cms: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	if src.ConfigMap == nil {
		src.ConfigMap = st.configMap
	}
	if src.Secret == nil {
		src.Secret = st.secret
	}
	m := New(t.TempDir(), src)
	fm := &fakeMounter{mounts: map[string]int64{}}
	m.mount = fm
	return m, fm, st
}

func newPod(vols ...*corev1.Volume) *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: "web-0", Namespace: "ns1", Uid: "uid-1", Labels: map[string]string{"app": "web"}},
		Spec: &corev1.PodSpec{Volumes: vols, Containers: []*corev1.Container{{Name: "app", Resources: &corev1.ResourceRequirements{
			Limits: map[string]*metav1.Quantity{"memory": q("256Mi"), "cpu": q("500m")},
		}}}},
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func perm(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// visible lists the user-visible names of a projected volume.
func visible(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "..") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestConfigMapVolumeAndAtomicUpdate(t *testing.T) {
	m, _, st := newTest(t, Sources{})
	st.cms["ns1/cfg"] = &corev1.ConfigMap{Data: map[string]string{"a.conf": "A", "b.conf": "B"}, BinaryData: map[string][]byte{"bin": {0, 1, 2}}}
	pod := newPod(&corev1.Volume{Name: "cfg", VolumeSource: &corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: &corev1.LocalObjectReference{Name: "cfg"}, DefaultMode: ptr(int32(0o600)),
	}}})
	ctx := context.Background()
	if err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(m.root, "pods/uid-1/volumes/kubernetes.io~configmap/cfg")
	if got := visible(t, dir); !reflect.DeepEqual(got, []string{"a.conf", "b.conf", "bin"}) {
		t.Errorf("files = %v", got)
	}
	if read(t, filepath.Join(dir, "a.conf")) != "A" || read(t, filepath.Join(dir, "bin")) != "\x00\x01\x02" {
		t.Error("wrong contents")
	}
	if p := perm(t, filepath.Join(dir, "a.conf")); p != 0o600 {
		t.Errorf("mode = %o, want 600", p)
	}
	link, _ := os.Readlink(filepath.Join(dir, "a.conf"))
	if link != "..data/a.conf" {
		t.Errorf("a.conf -> %q, want ..data/a.conf", link)
	}
	ts1, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil || !strings.HasPrefix(ts1, "..20") {
		t.Fatalf("..data -> %q, %v", ts1, err)
	}

	// Nothing changed: no new timestamped directory.
	if err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if ts, _ := os.Readlink(filepath.Join(dir, "..data")); ts != ts1 {
		t.Errorf("unchanged payload rewrote the volume (%s -> %s)", ts1, ts)
	}

	// An update swaps ..data; a dropped key disappears, the old directory goes.
	st.mu.Lock()
	st.cms["ns1/cfg"] = &corev1.ConfigMap{Data: map[string]string{"a.conf": "A2", "c.conf": "C"}}
	st.mu.Unlock()
	if err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	ts2, _ := os.Readlink(filepath.Join(dir, "..data"))
	if ts2 == ts1 {
		t.Fatal("..data was not swapped")
	}
	if _, err := os.Stat(filepath.Join(dir, ts1)); !os.IsNotExist(err) {
		t.Errorf("old data directory %s still there", ts1)
	}
	if got := visible(t, dir); !reflect.DeepEqual(got, []string{"a.conf", "c.conf"}) {
		t.Errorf("files after update = %v", got)
	}
	if read(t, filepath.Join(dir, "a.conf")) != "A2" {
		t.Error("a.conf not updated")
	}
	if _, err := os.Stat(filepath.Join(dir, "..data_tmp")); !os.IsNotExist(err) {
		t.Error("..data_tmp left behind")
	}
}

func TestConfigMapAndSecretItemsOptionalAndErrors(t *testing.T) {
	m, mounts, st := newTest(t, Sources{})
	st.cms["ns1/cfg"] = &corev1.ConfigMap{Data: map[string]string{"k1": "v1", "k2": "v2"}}
	st.secrets["ns1/sec"] = &corev1.Secret{Data: map[string][]byte{"tls.key": []byte("KEY"), "tls.crt": []byte("CRT")}}
	pod := newPod(
		&corev1.Volume{Name: "items", VolumeSource: &corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: &corev1.LocalObjectReference{Name: "cfg"},
			Items:                []*corev1.KeyToPath{{Key: "k1", Path: "sub/dir/one"}, {Key: "k2", Path: "two", Mode: ptr(int32(0o400))}},
		}}},
		&corev1.Volume{Name: "opt", VolumeSource: &corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: &corev1.LocalObjectReference{Name: "absent"}, Optional: ptr(true),
		}}},
		&corev1.Volume{Name: "tls", VolumeSource: &corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: "sec", Items: []*corev1.KeyToPath{{Key: "tls.key", Path: "key.pem"}}, DefaultMode: ptr(int32(0o440)),
		}}},
	)
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	vols := filepath.Join(m.root, "pods/uid-1/volumes")
	if got := read(t, filepath.Join(vols, "kubernetes.io~configmap/items/sub/dir/one")); got != "v1" {
		t.Errorf("sub/dir/one = %q", got)
	}
	if p := perm(t, filepath.Join(vols, "kubernetes.io~configmap/items/two")); p != 0o400 {
		t.Errorf("two mode %o, want 400", p)
	}
	if p := perm(t, filepath.Join(vols, "kubernetes.io~configmap/items/sub/dir/one")); p != 0o644 {
		t.Errorf("default mode %o, want 644", p)
	}
	if got := visible(t, filepath.Join(vols, "kubernetes.io~configmap/opt")); len(got) != 0 {
		t.Errorf("optional missing configmap: files %v, want none", got)
	}
	secDir := filepath.Join(vols, "kubernetes.io~secret/tls")
	if got := visible(t, secDir); !reflect.DeepEqual(got, []string{"key.pem"}) || read(t, filepath.Join(secDir, "key.pem")) != "KEY" {
		t.Errorf("secret files %v", got)
	}
	if p := perm(t, filepath.Join(secDir, "key.pem")); p != 0o440 {
		t.Errorf("secret mode %o, want 440", p)
	}
	if _, ok := mounts.mounts[secDir]; !ok {
		t.Errorf("secret volume is not on tmpfs: %v", mounts.mounts)
	}
	if _, ok := mounts.mounts[filepath.Join(vols, "kubernetes.io~configmap/items")]; ok {
		t.Error("configMap volume should be on disk")
	}

	// Failures name the volume and the object, as FailedMount events do.
	bad := newPod(
		&corev1.Volume{Name: "a", VolumeSource: &corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: &corev1.LocalObjectReference{Name: "x"}}}},
		&corev1.Volume{Name: "b", VolumeSource: &corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "y"}}},
		&corev1.Volume{Name: "c", VolumeSource: &corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: &corev1.LocalObjectReference{Name: "cfg"}, Items: []*corev1.KeyToPath{{Key: "nope", Path: "p"}}}}},
		&corev1.Volume{Name: "d", VolumeSource: &corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", Items: []*corev1.KeyToPath{{Key: "nope", Path: "p"}}}}},
		&corev1.Volume{Name: "e", VolumeSource: &corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: &corev1.LocalObjectReference{Name: "cfg"}, Items: []*corev1.KeyToPath{{Key: "k1", Path: "../escape"}}}}},
		&corev1.Volume{Name: "f", VolumeSource: &corev1.VolumeSource{Nfs: &corev1.NFSVolumeSource{Server: "s", Path: "/"}}},
	)
	bad.Metadata.Uid = "uid-2"
	err := m.Setup(context.Background(), bad)
	want := []string{
		`MountVolume.SetUp failed for volume "a" : configmap "x" not found`,
		`MountVolume.SetUp failed for volume "b" : secret "y" not found`,
		`MountVolume.SetUp failed for volume "c" : configmap references non-existent config key: nope`,
		`MountVolume.SetUp failed for volume "d" : secret references non-existent secret key: nope`,
		`MountVolume.SetUp failed for volume "e" : invalid path: must not contain '..': ../escape`,
		`MountVolume.SetUp failed for volume "f" : unsupported volume type`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("errors:\n%v\nwant\n%s", err, strings.Join(want, "\n"))
	}
	var nf *envvars.NotFoundError
	if !errors.As(err, &nf) {
		t.Error("a missing configmap should be a NotFoundError")
	}
}

func TestDownwardAPIAndProjected(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	calls := 0
	src := Sources{
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		Token: func(_ context.Context, pod *corev1.Pod, aud string, secs int64) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			return fmt.Sprintf("tok-%s-%s-%d-%d", pod.GetMetadata().GetName(), aud, secs, calls), nil
		},
		NodeAllocatable: map[string]*metav1.Quantity{"cpu": q("4")},
	}
	m, mounts, st := newTest(t, src)
	st.cms["ns1/kube-root-ca.crt"] = &corev1.ConfigMap{Data: map[string]string{"ca.crt": "CA"}}
	st.secrets["ns1/extra"] = &corev1.Secret{Data: map[string][]byte{"x": []byte("X")}}
	pod := newPod(
		&corev1.Volume{Name: "podinfo", VolumeSource: &corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []*corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}, Mode: ptr(int32(0o400))},
			{Path: "mem_limit", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.memory", Divisor: q("1Mi")}},
			{Path: "cpu_limit", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.cpu", Divisor: q("1m")}},
		}}}},
		&corev1.Volume{Name: "kube-api-access-abcde", VolumeSource: &corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr(int32(0o644)),
			Sources: []*corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(3607))}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: &corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []*corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []*corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{ApiVersion: "v1", FieldPath: "metadata.namespace"}}}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: &corev1.LocalObjectReference{Name: "extra"}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: &corev1.LocalObjectReference{Name: "absent"}, Optional: ptr(true)}},
			},
		}}},
	)
	ctx := context.Background()
	if err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	vols := filepath.Join(m.root, "pods/uid-1/volumes")
	da := filepath.Join(vols, "kubernetes.io~downward-api/podinfo")
	for f, want := range map[string]string{"labels": `app="web"`, "name": "web-0", "mem_limit": "256", "cpu_limit": "500"} {
		if got := read(t, filepath.Join(da, f)); got != want {
			t.Errorf("downwardAPI %s = %q, want %q", f, got, want)
		}
	}
	if p := perm(t, filepath.Join(da, "name")); p != 0o400 {
		t.Errorf("name mode %o", p)
	}
	pr := filepath.Join(vols, "kubernetes.io~projected/kube-api-access-abcde")
	if got := visible(t, pr); !reflect.DeepEqual(got, []string{"ca.crt", "namespace", "token", "x"}) {
		t.Errorf("projected files %v", got)
	}
	if read(t, filepath.Join(pr, "token")) != "tok-web-0--3607-1" || read(t, filepath.Join(pr, "ca.crt")) != "CA" || read(t, filepath.Join(pr, "namespace")) != "ns1" {
		t.Error("wrong projected contents")
	}
	for _, d := range []string{da, pr} {
		if _, ok := mounts.mounts[d]; !ok {
			t.Errorf("%s is not on tmpfs", d)
		}
	}

	// The token is reused until 80% of its lifetime, then fetched again and
	// swapped in atomically.
	mu.Lock()
	now = now.Add(2000 * time.Second)
	mu.Unlock()
	if err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(pr, "token")); got != "tok-web-0--3607-1" {
		t.Errorf("token refreshed too early: %s", got)
	}
	mu.Lock()
	now = now.Add(1000 * time.Second) // 3000 s > 0.8 * 3607
	mu.Unlock()
	if err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(pr, "token")); got != "tok-web-0--3607-2" {
		t.Errorf("token after 80%% of its life = %s, want a fresh one", got)
	}

	// No token source: the error says what is missing.
	m2, _, _ := newTest(t, Sources{})
	err := m2.Setup(ctx, newPod(&corev1.Volume{Name: "tok", VolumeSource: &corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []*corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}))
	if err == nil || !strings.Contains(err.Error(), "Sources.Token is nil") {
		t.Errorf("nil token source: %v", err)
	}
}

func TestEmptyDir(t *testing.T) {
	m, mounts, _ := newTest(t, Sources{NodeAllocatable: map[string]*metav1.Quantity{"memory": q("8Gi")}})
	pod := newPod(
		&corev1.Volume{Name: "scratch", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		&corev1.Volume{Name: "implied"},
		&corev1.Volume{Name: "mem", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: "Memory", SizeLimit: q("64Mi")}}},
		&corev1.Volume{Name: "mem-big", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: "Memory", SizeLimit: q("1Gi")}}},
	)
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	ed := filepath.Join(m.root, "pods/uid-1/volumes/kubernetes.io~empty-dir")
	for _, n := range []string{"scratch", "implied", "mem"} {
		if p := perm(t, filepath.Join(ed, n)); p != 0o777 {
			t.Errorf("%s mode %o, want 777", n, p)
		}
	}
	want := map[string]int64{
		filepath.Join(ed, "mem"):     64 << 20,
		filepath.Join(ed, "mem-big"): 256 << 20, // capped by the pod's memory limit
	}
	if !reflect.DeepEqual(mounts.mounts, want) {
		t.Errorf("tmpfs mounts %v, want %v", mounts.mounts, want)
	}
	// Setup again mounts nothing twice.
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}

	// Without any limit the size is the node's allocatable memory.
	unlimited := newPod(&corev1.Volume{Name: "m", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: "Memory"}}})
	unlimited.Metadata.Uid = "uid-3"
	unlimited.Spec.Containers[0].Resources = nil
	if err := m.Setup(context.Background(), unlimited); err != nil {
		t.Fatal(err)
	}
	if got := mounts.mounts[filepath.Join(m.root, "pods/uid-3/volumes/kubernetes.io~empty-dir/m")]; got != 8<<30 {
		t.Errorf("unlimited pod tmpfs size %d, want node allocatable", got)
	}
}

func TestHostPathTypes(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		path, typ, err string
	}{
		{dir, "", ""},
		{filepath.Join(dir, "nope"), "", ""},
		{dir, "Directory", ""},
		{file, "Directory", "hostPath type check failed: " + file + " is not a directory"},
		{filepath.Join(dir, "nope"), "Directory", "hostPath type check failed: " + filepath.Join(dir, "nope") + " is not a directory"},
		{filepath.Join(dir, "made/deep"), "DirectoryOrCreate", ""},
		{file, "DirectoryOrCreate", "hostPath type check failed: " + file + " is not a directory"},
		{file, "File", ""},
		{dir, "File", "hostPath type check failed: " + dir + " is not a file"},
		{filepath.Join(dir, "new"), "FileOrCreate", ""},
		{filepath.Join(dir, "noparent/new"), "FileOrCreate", "open " + filepath.Join(dir, "noparent/new") + ": no such file or directory"},
		{sock, "Socket", ""},
		{file, "Socket", "hostPath type check failed: " + file + " is not a socket file"},
		{"/dev/null", "CharDevice", ""},
		{file, "CharDevice", "hostPath type check failed: " + file + " is not a character device"},
		{"/dev/null", "BlockDevice", "hostPath type check failed: /dev/null is not a block device"},
		{dir, "Weird", "Weird is an invalid volume type"},
	} {
		err := checkHostPath(&corev1.HostPathVolumeSource{Path: tc.path, Type: ptr(tc.typ)})
		if (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
			t.Errorf("%s %s: err = %v, want %q", tc.typ, tc.path, err, tc.err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "made/deep")); err != nil || !st.IsDir() {
		t.Error("DirectoryOrCreate did not create the directory")
	}
	if st, err := os.Stat(filepath.Join(dir, "new")); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o644&^umask() {
		t.Errorf("FileOrCreate did not create a 0644 file: %v", err)
	}
}

func umask() os.FileMode {
	d, _ := os.MkdirTemp("", "umask")
	defer os.RemoveAll(d)
	f := filepath.Join(d, "f")
	os.WriteFile(f, nil, 0o777)
	st, _ := os.Stat(f)
	return 0o777 &^ st.Mode().Perm()
}

func TestMounts(t *testing.T) {
	hostDir := t.TempDir()
	m, _, st := newTest(t, Sources{Env: func(pod *corev1.Pod, c *corev1.Container) ([]*runtimeapi.KeyValue, error) {
		return envvars.Env(pod, c, envvars.Sources{})
	}})
	st.cms["ns1/cfg"] = &corev1.ConfigMap{Data: map[string]string{"app.conf": "conf"}}
	pod := newPod(
		&corev1.Volume{Name: "data", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		&corev1.Volume{Name: "cfg", VolumeSource: &corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: &corev1.LocalObjectReference{Name: "cfg"}}}},
		&corev1.Volume{Name: "host", VolumeSource: &corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}},
	)
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	vols := filepath.Join(m.root, "pods/uid-1/volumes")
	c := &corev1.Container{
		Name: "app",
		Env:  []*corev1.EnvVar{{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
		VolumeMounts: []*corev1.VolumeMount{
			{Name: "data", MountPath: "/data"},
			{Name: "data", MountPath: "/logs", SubPathExpr: "logs/$(POD)"},
			{Name: "cfg", MountPath: "/etc/app"},
			{Name: "cfg", MountPath: "/etc/app.conf", SubPath: "app.conf"},
			{Name: "host", MountPath: "/host", ReadOnly: true, MountPropagation: ptr("HostToContainer")},
		},
	}
	got, err := m.Mounts(pod, c)
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := os.Readlink(filepath.Join(vols, "kubernetes.io~configmap/cfg/..data"))
	resolvedVols, _ := filepath.EvalSymlinks(vols)
	want := []*runtimeapi.Mount{
		{ContainerPath: "/data", HostPath: filepath.Join(vols, "kubernetes.io~empty-dir/data")},
		{ContainerPath: "/logs", HostPath: filepath.Join(resolvedVols, "kubernetes.io~empty-dir/data/logs/web-0")},
		{ContainerPath: "/etc/app", HostPath: filepath.Join(vols, "kubernetes.io~configmap/cfg"), Readonly: true},
		{ContainerPath: "/etc/app.conf", HostPath: filepath.Join(resolvedVols, "kubernetes.io~configmap/cfg", ts, "app.conf"), Readonly: true},
		{ContainerPath: "/host", HostPath: hostDir, Readonly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mounts, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ContainerPath != w.ContainerPath || g.HostPath != w.HostPath || g.Readonly != w.Readonly || g.Propagation != w.Propagation {
			t.Errorf("mount %d:\n got %v\nwant %v", i, g, w)
		}
	}
	if st, err := os.Stat(filepath.Join(vols, "kubernetes.io~empty-dir/data/logs/web-0")); err != nil || !st.IsDir() || st.Mode().Perm() != 0o777 {
		t.Errorf("subPathExpr directory not created with the volume's mode: %v", err)
	}

	// The pod's hosts file is mounted once the pod worker wrote it.
	os.WriteFile(filepath.Join(m.PodDir("uid-1"), EtcHostsFile), []byte("# hosts\n"), 0o644)
	got, _ = m.Mounts(pod, &corev1.Container{Name: "x"})
	if len(got) != 1 || got[0].ContainerPath != "/etc/hosts" || got[0].HostPath != filepath.Join(m.PodDir("uid-1"), EtcHostsFile) {
		t.Errorf("etc-hosts mount: %v", got)
	}
}

func TestMountErrors(t *testing.T) {
	outside := t.TempDir()
	m, _, _ := newTest(t, Sources{})
	pod := newPod(&corev1.Volume{Name: "data", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(m.root, "pods/uid-1/volumes/kubernetes.io~empty-dir/data")
	// A container wrote a symlink leading out of its volume.
	if err := os.Symlink(outside, filepath.Join(vol, "evil")); err != nil {
		t.Fatal(err)
	}
	os.Symlink("/etc/passwd", filepath.Join(vol, "passwd"))
	for _, tc := range []struct {
		vm   *corev1.VolumeMount
		want string
	}{
		{&corev1.VolumeMount{Name: "nope", MountPath: "/x"}, `cannot find volume "nope" to mount into container "app"`},
		{&corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "/abs"}, "error SubPath `/abs` must not be an absolute path"},
		{&corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "a/../../b"}, "unable to provision SubPath `a/../../b`: must not contain '..'"},
		{&corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "evil"}, "not within volume path"},
		{&corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "passwd"}, "not within volume path"},
		{&corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "evil/sub"}, `failed to create subPath directory for volumeMount "data" of container "app"`},
		{&corev1.VolumeMount{Name: "data", MountPath: "/x", SubPathExpr: "$(X)"}, "subPathExpr needs the container's environment"},
		{&corev1.VolumeMount{Name: "data", MountPath: "/x", MountPropagation: ptr("Bidirectional")}, "only allowed for privileged containers"},
		{&corev1.VolumeMount{Name: "data", MountPath: "/x", MountPropagation: ptr("Sideways")}, `invalid MountPropagation mode: "Sideways"`},
	} {
		_, err := m.Mounts(pod, &corev1.Container{Name: "app", VolumeMounts: []*corev1.VolumeMount{tc.vm}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.vm, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "sub")); !os.IsNotExist(err) {
		t.Error("a subPath through a symlink created a directory outside the volume")
	}
	// Bidirectional works for a privileged container.
	got, err := m.Mounts(pod, &corev1.Container{Name: "app", SecurityContext: &corev1.SecurityContext{Privileged: ptr(true)},
		VolumeMounts: []*corev1.VolumeMount{{Name: "data", MountPath: "/x", MountPropagation: ptr("Bidirectional")}}})
	if err != nil || got[0].Propagation != runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL {
		t.Errorf("privileged Bidirectional: %v %v", got, err)
	}
	// A volume that was never set up is an error, not an empty bind mount.
	other := newPod(&corev1.Volume{Name: "data", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	other.Metadata.Uid = "never-set-up"
	if _, err := m.Mounts(other, &corev1.Container{Name: "app", VolumeMounts: []*corev1.VolumeMount{{Name: "data", MountPath: "/x"}}}); err == nil || !strings.Contains(err.Error(), "is not set up") {
		t.Errorf("not set up: %v", err)
	}
}

func TestTeardown(t *testing.T) {
	m, mounts, st := newTest(t, Sources{})
	st.secrets["ns1/s"] = &corev1.Secret{Data: map[string][]byte{"k": []byte("v")}}
	hostDir := t.TempDir()
	os.WriteFile(filepath.Join(hostDir, "keep"), []byte("x"), 0o644)
	pod := newPod(
		&corev1.Volume{Name: "s", VolumeSource: &corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
		&corev1.Volume{Name: "m", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: "Memory"}}},
		&corev1.Volume{Name: "h", VolumeSource: &corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}},
	)
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if len(mounts.mounts) != 2 {
		t.Fatalf("mounts %v", mounts.mounts)
	}
	if err := m.Teardown("uid-1"); err != nil {
		t.Fatal(err)
	}
	if len(mounts.mounts) != 0 {
		t.Errorf("still mounted: %v", mounts.mounts)
	}
	if _, err := os.Stat(m.PodDir("uid-1")); !os.IsNotExist(err) {
		t.Error("pod directory left behind")
	}
	if _, err := os.Stat(filepath.Join(hostDir, "keep")); err != nil {
		t.Error("teardown touched the hostPath")
	}
	if err := m.Teardown("uid-1"); err != nil {
		t.Errorf("second teardown: %v", err)
	}
}

func TestMountInfoParsing(t *testing.T) {
	info := []byte(`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
100 22 0:50 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/s rw,relatime - tmpfs tmpfs rw
101 22 0:51 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/with\040space rw - tmpfs tmpfs rw
102 22 0:52 / /var/lib/kubelet/pods/u10/volumes/kubernetes.io~secret/s rw - tmpfs tmpfs rw
103 100 0:53 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/s/nested rw - tmpfs tmpfs rw
`)
	got := mountPointsUnder(info, "/var/lib/kubelet/pods/u1")
	want := []string{
		"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/s/nested",
		"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/with space",
		"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/s",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// TestAtomicSwap: a reader that follows ..data once sees one consistent
// version of every file while updates land, never a mix.
func TestAtomicSwap(t *testing.T) {
	dir := t.TempDir()
	write := func(v string) {
		if _, err := writeAtomic(dir, map[string]File{"a": {Data: []byte(v), Mode: 0o644}, "sub/b": {Data: []byte(v), Mode: 0o644}}); err != nil {
			t.Error(err)
		}
	}
	write("v0")
	done := make(chan struct{})
	errs := make(chan string, 1)
	go func() {
		defer close(errs)
		for {
			select {
			case <-done:
				return
			default:
			}
			ts, err := os.Readlink(filepath.Join(dir, "..data"))
			if err != nil {
				errs <- "..data missing during an update: " + err.Error()
				return
			}
			a, errA := os.ReadFile(filepath.Join(dir, ts, "a"))
			b, errB := os.ReadFile(filepath.Join(dir, ts, "sub/b"))
			if errA != nil || errB != nil {
				continue // that version was retired while we read it
			}
			if string(a) != string(b) {
				errs <- fmt.Sprintf("mixed versions: a=%s b=%s", a, b)
				return
			}
		}
	}()
	for i := 1; i <= 200; i++ {
		write(fmt.Sprintf("v%d", i))
	}
	close(done)
	if e, ok := <-errs; ok {
		t.Fatal(e)
	}
	if got := read(t, filepath.Join(dir, "sub/b")); got != "v200" {
		t.Errorf("sub/b = %s", got)
	}
	ents, _ := os.ReadDir(dir)
	var hidden []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "..") {
			hidden = append(hidden, e.Name())
		}
	}
	if len(hidden) != 2 { // ..data and one timestamped directory
		t.Errorf("hidden entries %v, want ..data and one data directory", hidden)
	}
}

func TestConcurrentPods(t *testing.T) {
	m, mounts, st := newTest(t, Sources{})
	st.secrets["ns1/s"] = &corev1.Secret{Data: map[string][]byte{"k": []byte("v")}}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			pod := newPod(&corev1.Volume{Name: "s", VolumeSource: &corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}})
			pod.Metadata.Uid = fmt.Sprintf("uid-%d", i)
			for j := 0; j < 3; j++ {
				if err := m.Setup(context.Background(), pod); err != nil {
					t.Error(err)
				}
			}
			if _, err := m.Mounts(pod, &corev1.Container{Name: "app", VolumeMounts: []*corev1.VolumeMount{{Name: "s", MountPath: "/s"}}}); err != nil {
				t.Error(err)
			}
			if err := m.Teardown(pod.Metadata.Uid); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if len(mounts.mounts) != 0 {
		t.Errorf("left mounted: %v", mounts.mounts)
	}
}

// Without mounts (hollow nodes), a secret's content is written to a plain
// directory and the kernel's mount table is left alone.
func TestWithoutMountsNothingIsMounted(t *testing.T) {
	st := &store{cms: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{
		"ns1/sec": {Data: map[string][]byte{"password": []byte("s3cret")}}}}
	m := NewWithoutMounts(t.TempDir(), Sources{ConfigMap: st.configMap, Secret: st.secret})
	pod := newPod(&corev1.Volume{Name: "sec", VolumeSource: &corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
		&corev1.Volume{Name: "mem", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: "Memory"}}})
	if err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(m.root, "pods/uid-1/volumes/kubernetes.io~secret/sec/password")); got != "s3cret" {
		t.Errorf("password = %q", got)
	}
	if mounts, err := (sysMounter{}).MountPoints(m.root); err != nil || len(mounts) != 0 {
		t.Errorf("mount points under the root: %v (%v), want none", mounts, err)
	}
	if err := m.Teardown("uid-1"); err != nil {
		t.Fatal(err)
	}
}
