package staticpods

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

const web = `apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: app
    image: skiff.local/agnhost:2.53
    args: [netexec]
`

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func newSource(dir, node string) *Source {
	at := time.Date(2026, 5, 1, 12, 0, 0, 123, time.UTC)
	return NewSource(dir, node, Options{Now: func() time.Time { return at }})
}

func names(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Metadata.Namespace+"/"+p.Metadata.Name)
	}
	return out
}

func TestManifestBecomesADefaultedStaticPod(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "web.yaml", web)
	pods, err := newSource(dir, "Skiff-Node-1").read()
	if err != nil || len(pods) != 1 {
		t.Fatalf("read: %v %v", names(pods), err)
	}
	p := pods[0]
	md := p.Metadata
	if md.Name != "web-skiff-node-1" || md.Namespace != "default" || p.Spec.NodeName != "Skiff-Node-1" {
		t.Errorf("name %s/%s on %q, want default/web-skiff-node-1 on the node", md.Namespace, md.Name, p.Spec.NodeName)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(md.Uid) {
		t.Errorf("UID %q is not an md5 hash", md.Uid)
	}
	want := map[string]string{
		"kubernetes.io/config.source": "file", "kubernetes.io/config.hash": md.Uid,
		"kubernetes.io/config.seen": "2026-05-01T12:00:00.000000123Z",
	}
	for k, v := range want {
		if md.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, md.Annotations[k], v)
		}
	}
	if !IsStaticPod(p) || IsMirrorPod(p) || ConfigHash(p) != md.Uid {
		t.Error("not recognised as a static pod")
	}
	s := p.Spec
	c := s.Containers[0]
	if s.RestartPolicy != "Always" || s.GetTerminationGracePeriodSeconds() != 30 || s.DnsPolicy != "ClusterFirst" ||
		c.ImagePullPolicy != "IfNotPresent" || c.TerminationMessagePath != "/dev/termination-log" {
		t.Errorf("upstream's defaults not applied: %v", s)
	}
	if len(s.Tolerations) != 1 || s.Tolerations[0].Operator != "Exists" || s.Tolerations[0].Effect != "NoExecute" {
		t.Errorf("tolerations %v, want the NoExecute one of static pods", s.Tolerations)
	}
	if p.Status.GetPhase() != "Pending" {
		t.Errorf("phase %q", p.Status.GetPhase())
	}
}

func TestUIDHashesThePodItsNodeAndFile(t *testing.T) {
	dir := t.TempDir()
	path := write(t, dir, "web.yaml", web)
	uid := func(node string) string {
		pods, err := newSource(dir, node).read()
		if err != nil || len(pods) != 1 {
			t.Fatalf("read: %v %v", names(pods), err)
		}
		return pods[0].Metadata.Uid
	}
	first := uid("node-1")
	if again := uid("node-1"); again != first {
		t.Errorf("same manifest, UIDs %s then %s", first, again)
	}
	if other := uid("node-2"); other == first {
		t.Error("another node gave the same UID")
	}
	// A comment or reformatting is not a new pod; a changed spec is.
	write(t, dir, "web.yaml", "# the web server\n"+web)
	if u := uid("node-1"); u != first {
		t.Errorf("a comment changed the UID")
	}
	write(t, dir, "web.yaml", web+"    env: [{name: A, value: b}]\n")
	if u := uid("node-1"); u == first {
		t.Errorf("a changed spec kept the UID")
	}
	// The same object in another file is another pod.
	os.Rename(path, filepath.Join(dir, "web2.yaml"))
	write(t, dir, "web2.yaml", web)
	if u := uid("node-1"); u == first {
		t.Errorf("another file kept the UID")
	}
	// A manifest's own UID is kept, as upstream.
	write(t, dir, "web2.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: web, uid: mine}\nspec: {containers: [{name: a, image: x:1}]}\n")
	if u := uid("node-1"); u != "mine" {
		t.Errorf("UID %q, want the manifest's", u)
	}
}

func TestOnlyGoodManifestsAreRead(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", web)
	write(t, dir, "b.json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"api","namespace":"kube-system"},"spec":{"containers":[{"name":"c","image":"i:1"}]}}`)
	write(t, dir, "c.yml", "apiVersion: v1\nkind: Pod\nmetadata: {name: lenient}\nspec: {containers: [{name: c, image: i:1, tpyo: 1}]}\n")
	write(t, dir, ".hidden.yaml", web)                                                 // editors' files
	write(t, dir, "notes.txt", web)                                                    // not a manifest
	write(t, dir, "broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: [\n")           // does not parse
	write(t, dir, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n") // not a Pod
	write(t, dir, "dup.yaml", web)                                                     // a's full name
	write(t, dir, "noname.yaml", "apiVersion: v1\nkind: Pod\nspec: {containers: [{name: c, image: i:1}]}\n")
	os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755)
	pods, err := newSource(dir, "n").read()
	if err != nil {
		t.Fatal(err)
	}
	got := names(pods)
	want := []string{"default/web-n", "kube-system/api-n", "default/lenient-n"}
	if len(got) != len(want) {
		t.Fatalf("pods %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pods %v, want %v", got, want)
		}
	}
}

func TestSourceSendsTheSetWhenItChanges(t *testing.T) {
	dir := t.TempDir()
	s := newSource(filepath.Join(dir, "manifests"), "n")
	// A path that does not exist yet holds no pods: the set is sent, so
	// the kubelet knows the source is read.
	s.poll()
	if got := <-s.Updates(); len(got) != 0 {
		t.Fatalf("first set %v", names(got))
	}
	os.Mkdir(filepath.Join(dir, "manifests"), 0o755)
	write(t, filepath.Join(dir, "manifests"), "web.yaml", web)
	s.poll()
	first := <-s.Updates()
	if len(first) != 1 {
		t.Fatalf("set %v", names(first))
	}
	s.poll()
	select {
	case got := <-s.Updates():
		t.Fatalf("an unchanged directory sent %v again", names(got))
	default:
	}
	write(t, filepath.Join(dir, "manifests"), "web.yaml", web+"    env: [{name: A, value: b}]\n")
	s.poll()
	s.poll() // only the newest set waits
	got := <-s.Updates()
	if len(got) != 1 || got[0].Metadata.Uid == first[0].Metadata.Uid {
		t.Fatalf("after an edit: %v", names(got))
	}
	select {
	case got := <-s.Updates():
		t.Fatalf("a second set %v", names(got))
	default:
	}
	os.Remove(filepath.Join(dir, "manifests", "web.yaml"))
	s.poll()
	if got := <-s.Updates(); len(got) != 0 {
		t.Fatalf("after removal: %v", names(got))
	}
}

func TestSourceReadsASingleFileAndPolls(t *testing.T) {
	dir := t.TempDir()
	path := write(t, dir, "web.yaml", web)
	s := NewSource(path, "n", Options{Period: 10 * time.Millisecond})
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	first := <-s.Updates()
	if len(first) != 1 || first[0].Metadata.Name != "web-n" {
		t.Fatalf("first set %v", names(first))
	}
	write(t, dir, "web.yaml", web+"    env: [{name: A, value: b}]\n")
	select {
	case got := <-s.Updates():
		if len(got) != 1 || got[0].Metadata.Uid == first[0].Metadata.Uid {
			t.Fatalf("after an edit: %v", names(got))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the edit was not read")
	}
}

func TestMirrorPod(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "web.yaml", web)
	pods, _ := newSource(dir, "node-1").read()
	static := pods[0]
	m := MirrorPod(static, "node-1", "node-uid")
	md := m.Metadata
	if md.Uid != "" || md.Name != static.Metadata.Name || md.Namespace != "default" || md.Labels["app"] != "web" {
		t.Errorf("mirror metadata %v", md)
	}
	if md.Annotations[ConfigMirrorAnnotation] != static.Metadata.Uid || md.Annotations[ConfigSourceAnnotation] != "file" {
		t.Errorf("mirror annotations %v", md.Annotations)
	}
	if _, ok := static.Metadata.Annotations[ConfigMirrorAnnotation]; ok {
		t.Error("the static pod's annotations were changed")
	}
	want := &metav1.OwnerReference{ApiVersion: "v1", Kind: "Node", Name: "node-1", Uid: "node-uid"}
	if len(md.OwnerReferences) != 1 || md.OwnerReferences[0].Kind != want.Kind || md.OwnerReferences[0].Name != want.Name ||
		md.OwnerReferences[0].Uid != want.Uid || md.OwnerReferences[0].ApiVersion != "v1" || !md.OwnerReferences[0].GetController() {
		t.Errorf("owner %v, want the node as controller", md.OwnerReferences)
	}
	if !IsMirrorPod(m) || !IsMirrorPodOf(m, static) || m.Spec.Containers[0].Image != "skiff.local/agnhost:2.53" {
		t.Error("not the static pod's mirror")
	}
	other := MirrorPod(static, "node-1", "node-uid")
	other.Metadata.Annotations[ConfigMirrorAnnotation] = "old"
	if IsMirrorPodOf(other, static) {
		t.Error("a mirror of another hash matched")
	}
}

// Inotify: with an hour between reads, a new manifest, a manifest renamed
// over (as editors save) and a removed one are all seen at once.
func TestSourceSeesChangesAtOnce(t *testing.T) {
	dir := t.TempDir()
	s := NewSource(dir, "n", Options{Period: time.Hour})
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	next := func(what string) []*corev1.Pod {
		t.Helper()
		select {
		case got := <-s.Updates():
			return got
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was not seen", what)
			return nil
		}
	}
	if first := next("the empty directory"); len(first) != 0 {
		t.Fatalf("first set %v", names(first))
	}
	write(t, dir, "web.yaml", web)
	added := next("a new manifest")
	if len(added) != 1 || added[0].Metadata.Name != "web-n" {
		t.Fatalf("after a new manifest: %v", names(added))
	}
	// Dot files are no manifests: the editor's temporary file is ignored.
	tmp := write(t, dir, ".web.yaml.swp", web+"    env: [{name: A, value: b}]\n")
	if err := os.Rename(tmp, filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	edited := next("a manifest renamed over")
	if len(edited) != 1 || edited[0].Metadata.Uid == added[0].Metadata.Uid {
		t.Fatalf("after an edit: %v", names(edited))
	}
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if gone := next("a removed manifest"); len(gone) != 0 {
		t.Fatalf("after removal: %v", names(gone))
	}
}
