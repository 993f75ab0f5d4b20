package pods

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/client/informers"
	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/kuberuntime"
	"skiff.dev/kubelet/internal/staticpods"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

const manifest = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: kube-system
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: app
    image: agnhost:2.53
`

type staticHarness struct {
	*harness
	dir string
}

// startStatic runs the workers with a file source on a temp directory
// (polled every 20 ms) and the node registered in the fake API.
func startStatic(t *testing.T, objs ...*corev1.Pod) *staticHarness {
	t.Helper()
	return startStaticWith(t, nil, objs...)
}

func startStaticWith(t *testing.T, tweak func(*Config), objs ...*corev1.Pod) *staticHarness {
	t.Helper()
	dir := t.TempDir()
	cs := fake.NewClientset()
	if err := cs.Tracker().Add(&corev1.Node{Metadata: &metav1.ObjectMeta{Name: "node-1", Uid: "node-uid"}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range objs {
		if err := cs.Tracker().Add(p); err != nil {
			t.Fatal(err)
		}
	}
	a := &api{APIClient: cs.Client.API}
	c := &client.Client{API: a}
	f := informers.NewFactory(cs.Client, informers.Options{})
	pods := informers.For[*corev1.Pod](f)
	rt := &runtime{Fake: cri.NewFake()}
	rt.SetFakeImages([]string{"agnhost:2.53"})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.Default()
	}
	src := staticpods.NewSource(dir, "node-1", staticpods.Options{Period: 20 * time.Millisecond, Logger: log})
	cfg := Config{
		Client: c, NodeName: "node-1", Runtime: rt, Pods: pods.Lister(), HasSynced: pods.Informer().HasSynced,
		Logger: log, Status: simpleStatus, RelistPeriod: 20 * time.Millisecond, ResyncPeriod: 50 * time.Millisecond,
		Static: src.Updates(),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := pods.Informer().AddHandler(m.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- m.Run(ctx) }()
	go func() { done <- src.Run(ctx) }()
	f.Start(ctx)
	if !informers.WaitForCacheSync(ctx, reg) {
		t.Fatal("informer never synced")
	}
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		f.Shutdown()
		cs.Close()
	})
	return &staticHarness{&harness{cs, a, rt, m, nil, cancel}, dir}
}

func (h *staticHarness) write(t *testing.T, content string) {
	t.Helper()
	// Written aside and renamed, as editors and config tools do: the
	// source never reads half a file.
	tmp := filepath.Join(h.dir, ".web.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(h.dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
}

func (h *staticHarness) mirror() (*corev1.Pod, error) {
	return client.For[*corev1.Pod](h.cs.Client, "kube-system").Get(context.Background(), "web-node-1")
}

// running is the pod UIDs with a ready sandbox in the runtime.
func (h *staticHarness) running() []string {
	h.rt.FakeRuntimeService.Lock()
	defer h.rt.FakeRuntimeService.Unlock()
	var out []string
	for _, sb := range h.rt.FakeRuntimeService.Sandboxes {
		if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			out = append(out, sb.Labels[kuberuntime.LabelPodUID])
		}
	}
	slices.Sort(out)
	return out
}

func (h *staticHarness) containerIDs() []string {
	h.rt.FakeRuntimeService.Lock()
	defer h.rt.FakeRuntimeService.Unlock()
	var out []string
	for id, c := range h.rt.FakeRuntimeService.Containers {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// runningWithMirror waits for the static pod of the manifest to run and
// its mirror to show it Running, and returns the mirror.
func (h *staticHarness) runningWithMirror(t *testing.T) *corev1.Pod {
	t.Helper()
	var mirror *corev1.Pod
	eventually(t, "static pod running with a Running mirror pod", func() bool {
		var err error
		mirror, err = h.mirror()
		return err == nil && mirror.GetMetadata().GetDeletionTimestamp() == nil && mirror.GetStatus().GetPhase() == "Running" &&
			len(h.running()) == 1 && mirror.Metadata.Annotations[staticpods.ConfigMirrorAnnotation] == h.running()[0]
	})
	return mirror
}

func TestStaticPodRunsWithAMirrorPod(t *testing.T) {
	h := startStatic(t)
	h.write(t, manifest)
	mirror := h.runningWithMirror(t)
	uid := h.running()[0]
	md := mirror.Metadata
	if md.Uid == uid {
		t.Error("the mirror pod has the static pod's UID; the API gives it its own")
	}
	for k, want := range map[string]string{
		"kubernetes.io/config.source": "file", "kubernetes.io/config.hash": uid, "kubernetes.io/config.mirror": uid,
	} {
		if md.Annotations[k] != want {
			t.Errorf("mirror annotation %s = %q, want %q", k, md.Annotations[k], want)
		}
	}
	if md.Annotations["kubernetes.io/config.seen"] == "" {
		t.Error("no config.seen annotation")
	}
	if o := md.OwnerReferences; len(o) != 1 || o[0].Kind != "Node" || o[0].Name != "node-1" || o[0].Uid != "node-uid" || !o[0].GetController() {
		t.Errorf("mirror owners %v, want node-1 as controller", o)
	}
	if mirror.Spec.NodeName != "node-1" || mirror.Spec.Containers[0].Image != "agnhost:2.53" {
		t.Errorf("mirror spec %v", mirror.Spec)
	}
	// The kubelet's own view: the static pod, not its mirror.
	eventually(t, "Pod(web-node-1) is the static pod with the status written to its mirror", func() bool {
		p, ok := h.m.Pod("kube-system", "web-node-1")
		return ok && p.Metadata.Uid == uid && p.Status.GetPhase() == "Running"
	})
	if all := h.m.Pods(); len(all) != 1 || all[0].Metadata.Uid != uid {
		t.Errorf("Pods() = %d pods, want only the static one", len(all))
	}
}

func TestDeletedMirrorPodIsRecreated(t *testing.T) {
	h := startStatic(t)
	h.write(t, manifest)
	first := h.runningWithMirror(t)
	containers := h.containerIDs()
	// A user's graceful delete: the kubelet deletes it for good and makes
	// a new one; the static pod goes on.
	if _, err := client.For[*corev1.Pod](h.cs.Client, "kube-system").Delete(context.Background(), "web-node-1", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a new mirror pod showing the pod Running", func() bool {
		m, err := h.mirror()
		return err == nil && m.Metadata.Uid != first.Metadata.Uid && m.Metadata.DeletionTimestamp == nil && m.GetStatus().GetPhase() == "Running"
	})
	if got := h.containerIDs(); !slices.Equal(got, containers) {
		t.Errorf("containers %v after the mirror's deletion, want %v untouched", got, containers)
	}
}

func TestEditedManifestRestartsThePodAndReplacesTheMirror(t *testing.T) {
	h := startStatic(t)
	h.write(t, manifest)
	first := h.runningWithMirror(t)
	oldUID := h.running()[0]
	h.write(t, manifest+"    env: [{name: MODE, value: new}]\n")
	var mirror *corev1.Pod
	eventually(t, "the new version running alone with a new mirror", func() bool {
		var err error
		mirror, err = h.mirror()
		r := h.running()
		return err == nil && len(r) == 1 && r[0] != oldUID && mirror.Metadata.Uid != first.Metadata.Uid &&
			mirror.Metadata.Annotations[staticpods.ConfigMirrorAnnotation] == r[0] && mirror.GetStatus().GetPhase() == "Running"
	})
	if env := mirror.Spec.Containers[0].Env; len(env) != 1 || env[0].Value != "new" {
		t.Errorf("mirror spec env %v, want the edited manifest's", env)
	}
	h.rt.mu.Lock()
	stops := append([]int64(nil), h.rt.stops...)
	h.rt.mu.Unlock()
	if len(stops) == 0 || stops[0] < 2 || stops[0] > 3 {
		t.Errorf("StopContainer timeouts %v, want the old pod stopped with its grace period 3", stops)
	}
}

func TestRemovedManifestStopsThePodAndDeletesTheMirror(t *testing.T) {
	h := startStatic(t)
	h.write(t, manifest)
	mirror := h.runningWithMirror(t)
	if err := os.Remove(filepath.Join(h.dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod stopped and mirror deleted", func() bool {
		_, err := h.mirror()
		h.rt.FakeRuntimeService.Lock()
		defer h.rt.FakeRuntimeService.Unlock()
		return err != nil && len(h.rt.FakeRuntimeService.Sandboxes) == 0 && len(h.rt.FakeRuntimeService.Containers) == 0
	})
	h.api.mu.Lock()
	defer h.api.mu.Unlock()
	for _, d := range h.api.deletes {
		if d.GetName() != "web-node-1" || d.GetGracePeriodSeconds() != 0 || d.GetPreconditions().GetUid() != mirror.Metadata.Uid {
			t.Errorf("delete %v, want only the mirror's, grace 0, its UID as precondition", d)
		}
	}
	if len(h.api.deletes) == 0 {
		t.Error("the mirror pod was not deleted through the API")
	}
}

func TestMirrorPodInTheAPIIsNotRun(t *testing.T) {
	// A mirror pod whose manifest is gone (removed while the kubelet was
	// down): only a reflection, never run, and deleted as an orphan.
	orphan := pod("old-node-1", "mirror-uid", 30)
	orphan.Metadata.Annotations = map[string]string{staticpods.ConfigMirrorAnnotation: "gone", staticpods.ConfigSourceAnnotation: "file"}
	h := startStatic(t, orphan)
	h.write(t, manifest)
	h.runningWithMirror(t)
	eventually(t, "orphaned mirror pod deleted", func() bool {
		_, err := h.get(t, "old-node-1")
		return err != nil
	})
	sandboxes := 0
	for _, c := range h.rt.FakeRuntimeService.GetCalls() {
		if c == "RunPodSandbox" {
			sandboxes++
		}
	}
	if sandboxes != 1 {
		t.Errorf("%d sandboxes run, want 1: the static pod's and not the mirror's", sandboxes)
	}
	if r := h.running(); len(r) != 1 || r[0] == "mirror-uid" {
		t.Errorf("running %v", r)
	}
}

func TestRejectedStaticPodReportsOnItsMirror(t *testing.T) {
	h := startStaticWith(t, func(c *Config) {
		c.Admit = func(*corev1.Pod) (bool, string, string) {
			return false, "OutOfcpu", "Node didn't have enough resource: cpu, requested: 4000, used: 0, capacity: 2000"
		}
	})
	h.write(t, manifest)
	eventually(t, "mirror pod Failed with the admission's reason", func() bool {
		m, err := h.mirror()
		return err == nil && m.GetStatus().GetPhase() == "Failed" && m.GetStatus().GetReason() == "OutOfcpu"
	})
	if calls := h.rt.FakeRuntimeService.GetCalls(); slices.Contains(calls, "RunPodSandbox") {
		t.Error("a rejected static pod was run")
	}
}
