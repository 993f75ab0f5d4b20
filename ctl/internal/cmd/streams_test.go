package cmd

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

func TestParsePortPairs(t *testing.T) {
	got, err := parsePortPairs([]string{"8080:80", ":443", "9090", "http"})
	if err != nil {
		t.Fatal(err)
	}
	want := []forwardedPort{{8080, "80"}, {0, "443"}, {9090, "9090"}, {-1, "http"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := parsePortPairs([]string{"x:80"}); err == nil || !strings.Contains(err.Error(), "error parsing local port 'x'") {
		t.Errorf("bad local port: %v", err)
	}
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web"}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{
		{Name: "app", Ports: []*corev1.ContainerPort{{Name: "http", ContainerPort: 8000}}}}}}
	if p, err := remotePort(pod, "http"); err != nil || p != 8000 {
		t.Errorf("named port: %d, %v", p, err)
	}
	if _, err := remotePort(pod, "grpc"); err == nil || err.Error() != "Pod 'web' does not have a named port 'grpc'" {
		t.Errorf("unknown named port: %v", err)
	}
}

func TestParseFileSpec(t *testing.T) {
	for in, want := range map[string]fileSpec{
		"web:/tmp/x":     {pod: "web", path: "/tmp/x"},
		"ns/web:/tmp/x":  {ns: "ns", pod: "web", path: "/tmp/x"},
		"/local/a:b":     {path: "/local/a:b"},
		"./a:b":          {path: "./a:b"},
		"local/file.txt": {path: "local/file.txt"},
	} {
		if got := parseFileSpec(in); got != want {
			t.Errorf("%q: %+v, want %+v", in, got, want)
		}
	}
}

func TestPickContainer(t *testing.T) {
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "web"}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "a"}, {Name: "b"}}}}
	var errOut bytes.Buffer
	if got := pickContainer(pod, "", false, &errOut); got != "a" || errOut.String() != "Defaulted container \"a\" out of: a, b\n" {
		t.Errorf("default: %q, %q", got, errOut.String())
	}
	pod.Metadata.Annotations = map[string]string{defaultContainerAnnotation: "b"}
	errOut.Reset()
	if got := pickContainer(pod, "", false, &errOut); got != "b" || errOut.Len() != 0 {
		t.Errorf("annotation: %q, %q", got, errOut.String())
	}
	if got := pickContainer(pod, "a", false, &errOut); got != "a" {
		t.Errorf("-c: %q", got)
	}
}

// A tree packed for the pod and unpacked as from the pod lands where
// kubectl cp puts it: the source's prefix replaced by the destination.
func TestTarRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha"), 0o640)
	os.WriteFile(filepath.Join(src, "sub", "b.txt"), []byte("beta"), 0o644)
	var buf bytes.Buffer
	if err := tarPath(&buf, src, "data"); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if err := untar(&buf, "data", dst); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"a.txt": "alpha", "sub/b.txt": "beta"} {
		b, err := os.ReadFile(filepath.Join(dst, p))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", p, b, err)
		}
	}
	if st, _ := os.Stat(filepath.Join(dst, "a.txt")); st.Mode().Perm() != 0o640 {
		t.Errorf("a.txt mode %v", st.Mode())
	}
}
