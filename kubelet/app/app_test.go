package app

import (
	"archive/tar"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/labels"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/nodestatus"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Bad flags are refused before anything connects, naming the flag.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--hostname-override", "Bad_Name"}, `--hostname-override: node name "bad_name"`},
		{[]string{"--node-ip", "10.0.0.300"}, `--node-ip: "10.0.0.300" is not an IP address`},
		{[]string{"--node-ip", "10.0.0.1,10.0.0.2"}, "--node-ip: [10.0.0.1 10.0.0.2]: two addresses must be of different IP families"},
		{[]string{"--node-ip", "127.0.0.1"}, `--node-ip: "127.0.0.1" cannot be a node's address`},
		{[]string{"--container-runtime-endpoint", "tcp://1.2.3.4:5"}, "--container-runtime-endpoint: \"tcp://1.2.3.4:5\": only unix:// endpoints"},
		{[]string{"--container-runtime-endpoint", "run/c.sock"}, "--container-runtime-endpoint: \"run/c.sock\" is not an absolute socket path"},
		{[]string{"--root-dir", "var/lib/kubelet"}, `--root-dir: "var/lib/kubelet" is not an absolute path`},
		{[]string{"--cgroup-driver", "systemd"}, "--cgroup-driver: systemd is not supported; use cgroupfs"},
		{[]string{"--image-gc-high-threshold", "70", "--image-gc-low-threshold", "80"}, "--image-gc-high-threshold/--image-gc-low-threshold"},
		{[]string{"--container-log-max-size", "lots"}, "--container-log-max-size/--container-log-max-files"},
		{[]string{"--container-log-max-files", "1"}, "--container-log-max-size/--container-log-max-files"},
		{[]string{"--container-log-monitor-interval", "1s"}, "--container-log-monitor-interval: must be at least 3s"},
		{[]string{"--eviction-hard", "memory.available=100Mi"}, `--eviction-hard: malformed pair "memory.available=100Mi", expect string<string`},
		{[]string{"--eviction-hard", "memory.free<100Mi"}, "--eviction-hard: unsupported eviction signal memory.free"},
		{[]string{"--eviction-hard", "nodefs.available<110%"}, "--eviction-hard: eviction percentage threshold nodefs.available must be <= 100%: 110%"},
		{[]string{"--eviction-hard", "memory.available<0"}, "--eviction-hard: eviction threshold memory.available must be positive: 0"},
		{[]string{"--eviction-soft", "memory.available<lots"}, `--eviction-soft: eviction threshold memory.available: "lots"`},
		{[]string{"--eviction-soft", "memory.available<1Gi"}, "--eviction-soft/--eviction-soft-grace-period: grace period must be specified for the soft eviction threshold memory.available"},
		{[]string{"--eviction-soft-grace-period", "memory.available=-1m"}, "--eviction-soft-grace-period: invalid eviction grace period specified: -1m, must be a positive value"},
		{[]string{"--eviction-minimum-reclaim", "nodefs.available=-1Gi"}, "--eviction-minimum-reclaim: negative eviction minimum reclaim specified for nodefs.available"},
		{[]string{"--eviction-pressure-transition-period", "-1s"}, "--eviction-pressure-transition-period: must not be negative"},
		{[]string{"--cgroup-driver", "none"}, `--cgroup-driver: "none" is not a cgroup driver`},
		{[]string{"--enforce-node-allocatable", "pods,kube-reserved"}, `--enforce-node-allocatable: "kube-reserved" is not supported`},
		{[]string{"--enforce-node-allocatable", "pods,none"}, `--enforce-node-allocatable: "none" must not be given with other values`},
		{[]string{"--enforce-node-allocatable", "nodes"}, `--enforce-node-allocatable: "nodes": want pods or none`},
		{[]string{"--cgroups-per-qos=false"}, "--enforce-node-allocatable: pods is not supported unless --cgroups-per-qos is true"},
		{[]string{"--cgroups-per-qos=maybe"}, `invalid argument "maybe" for "--cgroups-per-qos"`},
		{[]string{"--pod-max-pids", "-2"}, "--pod-max-pids: must be -1 (no limit) or more, got -2"},
		{[]string{"--pod-max-pids", "many"}, `invalid argument "many" for "--pod-max-pids"`},
		{[]string{"--pod-infra-container-image", ""}, "--pod-infra-container-image: must not be empty"},
		{[]string{"--cluster-dns", "10.96.0.10,dns"}, `--cluster-dns: "dns" is not an IP address`},
		{[]string{"--cluster-domain", "Cluster_Local"}, `--cluster-domain: "Cluster_Local"`},
		{[]string{"--system-reserved", "cpu=lots"}, `--system-reserved: cpu="lots"`},
		{[]string{"--kube-reserved", "memory"}, `--kube-reserved: "memory" is not name=quantity`},
		{[]string{"--kube-reserved", "gpu=1"}, `--kube-reserved: "gpu" is not a reservable resource`},
		{[]string{"--max-pods", "0"}, "--max-pods: must be at least 1, got 0"},
		{[]string{"--node-lease-duration-seconds", "0"}, "--node-lease-duration-seconds: must be positive"},
		{[]string{"--node-status-update-frequency", "0s"}, "--node-status-update-frequency: must be positive"},
		{[]string{"--node-status-report-frequency", "-1s"}, "--node-status-report-frequency: must be positive"},
		{[]string{"--port", "70000"}, "--port: 70000 is not a port"},
		{[]string{"--metrics-bind-address", "10248"}, `--metrics-bind-address: "10248" is not host:port`},
		{[]string{"--log-format", "xml"}, `--log-format: "xml"`},
		{[]string{"--kubeconfig", "/nonexistent/config"}, "/nonexistent/config"},
	} {
		cmd := NewCommand()
		cmd.SetArgs(tc.args)
		cmd.SetContext(context.Background())
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.err)
		}
	}
}

// Upstream's defaults, and the node name from the host.
func TestDefaults(t *testing.T) {
	o := NewOptions()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.ContainerRuntimeEndpoint != "unix:///run/containerd/containerd.sock" || o.RootDir != "/var/lib/kubelet" ||
		o.PodLogsDir != "/var/log/pods" || o.MaxPods != 110 || o.NodeLeaseDurationSeconds != 40 ||
		o.NodeStatusReportFrequency != 5*time.Minute || o.NodeStatusUpdateFrequency != 10*time.Second ||
		o.Port != 10250 || o.ClusterDomain != "cluster.local" || o.PodInfraContainerImage != "skiff.local/pause:3.10" ||
		o.CNIBinDir != "/usr/lib/cni" || o.CNIConfDir != "/etc/cni/net.d" || o.MetricsBindAddress != "127.0.0.1:10248" {
		t.Errorf("defaults %+v", o)
	}
	if !o.CgroupsPerQOS || !slices.Equal(o.EnforceNodeAllocatable, []string{"pods"}) || o.PodMaxPids != -1 {
		t.Errorf("cgroup defaults: --cgroups-per-qos %v --enforce-node-allocatable %v --pod-max-pids %d", o.CgroupsPerQOS, o.EnforceNodeAllocatable, o.PodMaxPids)
	}
	host, _ := os.Hostname()
	if n, err := o.NodeName(); err != nil || n != strings.ToLower(host) {
		t.Errorf("NodeName = %q, %v; host %q", n, err, host)
	}
	o.HostnameOverride = " Node-A "
	if n, _ := o.NodeName(); n != "node-a" {
		t.Errorf("NodeName with override = %q", n)
	}
	if r := reserved("cpu=100m,memory=100Mi"); r["cpu"].GetString_() != "100m" || r["memory"].GetString_() != "100Mi" {
		t.Errorf("reserved %v", r)
	}
}

// fakePlugins makes a CNI bin dir whose plugins answer VERSION.
func fakePlugins(t *testing.T) string {
	dir := t.TempDir()
	script := "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\",\"1.1.0\"]}'\n"
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The kubelet over a fake apiserver and runtime registers its node, holds
// its Lease, sees only its own pods, writes the CNI conflist once the node
// has a podCIDR, and preloads images.
func TestKubeletRuns(t *testing.T) {
	cs := fake.NewClientset(
		&corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "mine", Uid: "uid-mine"}, Spec: &corev1.PodSpec{NodeName: "node-1",
			Containers: []*corev1.Container{{Name: "c", Image: "skiff.local/pause:3.10"}}}},
		&corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "theirs"}, Spec: &corev1.PodSpec{NodeName: "node-2"}},
	)
	defer cs.Close()
	rt := cri.NewFake()
	rt.FakeStatus = &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true}, {Type: runtimeapi.NetworkReady, Status: true}}}
	rt.SetFakeImages([]string{"skiff.local/pause:3.10"})

	preload := t.TempDir()
	writeDockerArchive(t, filepath.Join(preload, "pause.tar"), "skiff.local/pause:3.10")
	writeDockerArchive(t, filepath.Join(preload, "agnhost.tar"), "skiff.local/agnhost:2.53")
	var mu sync.Mutex
	var imported []string
	importer := func(_ context.Context, f string) error {
		mu.Lock()
		defer mu.Unlock()
		imported = append(imported, filepath.Base(f))
		return nil
	}

	o := NewOptions()
	o.RootDir, o.CNIConfDir, o.CNIBinDir, o.ImagePreloadDir = t.TempDir(), t.TempDir(), fakePlugins(t), preload
	o.NodeIPs = []string{"10.0.0.5"}
	o.KubeReserved = "cpu=100m,memory=100Mi"
	// A fake runtime, but this host's cgroups: they stay untouched.
	o.CgroupsPerQOS, o.EnforceNodeAllocatable = false, nil
	reg := prometheus.NewRegistry()
	k, err := New(Config{Options: *o, NodeName: "node-1", Client: cs.Client, Runtime: rt, Registry: reg, Importer: importer,
		Machine: func() (*nodestatus.Machine, error) {
			return &nodestatus.Machine{NumCores: 2, MemoryBytes: 4 << 30, EphemeralStorageBytes: 20 << 30}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- k.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	nodes := client.For[*corev1.Node](cs.Client, "")
	leases := client.For[*coordinationv1.Lease](cs.Client, "kube-node-lease")
	poll(t, "the node and its lease", func() bool {
		_, nerr := nodes.Get(ctx, "node-1")
		_, lerr := leases.Get(ctx, "node-1")
		return nerr == nil && lerr == nil
	})
	n, _ := nodes.Get(ctx, "node-1")
	if a := n.Status.Allocatable; a["cpu"].GetString_() != "1900m" || a["memory"].GetString_() != "3896Mi" {
		t.Errorf("allocatable %v", a)
	}
	// The kubepods cgroup keeps the hard eviction threshold inside it.
	for enforce, want := range map[bool][2]string{true: {"1900m", "3996Mi"}, false: {"2", "4Gi"}} {
		l := k.status.KubepodsLimits(enforce)
		cpu, mem := l["cpu"], l["memory"]
		if cpu.String() != want[0] || mem.String() != want[1] {
			t.Errorf("kubepods limits (enforcing node allocatable: %v): cpu %s memory %s, want %v", enforce, cpu.String(), mem.String(), want)
		}
	}
	poll(t, "the pod informer", k.pods.HasSynced)
	var names []string
	for _, p := range k.Pods().List(labels.Everything()) {
		names = append(names, p.Metadata.Name)
	}
	if !slices.Equal(names, []string{"mine"}) {
		t.Errorf("the kubelet sees pods %v, want only its own", names)
	}

	// The controller-manager gives the node a podCIDR: the conflist follows.
	n.Spec = &corev1.NodeSpec{}
	n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.1.0/24", []string{"10.244.1.0/24"}
	if _, err := nodes.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	conflist := filepath.Join(o.CNIConfDir, "10-skiff.conflist")
	poll(t, "the CNI conflist", func() bool { _, err := os.Stat(conflist); return err == nil })
	b, _ := os.ReadFile(conflist)
	if !strings.Contains(string(b), "10.244.1.0/24") || !strings.Contains(string(b), filepath.Join(o.RootDir, "cni", "networks")) {
		t.Errorf("conflist %s", b)
	}

	poll(t, "the preload", func() bool { mu.Lock(); defer mu.Unlock(); return len(imported) > 0 })
	mu.Lock()
	if !slices.Equal(imported, []string{"agnhost.tar"}) {
		t.Errorf("imported %v, want only the image the runtime lacked", imported)
	}
	mu.Unlock()

	// The pod workers run the node's pod (and only it) on the runtime.
	poll(t, "the pod's sandbox", func() bool {
		rt.FakeRuntimeService.Lock()
		defer rt.FakeRuntimeService.Unlock()
		return len(rt.Sandboxes) > 0
	})
	rt.FakeRuntimeService.Lock()
	for _, sb := range rt.Sandboxes {
		if sb.Metadata.GetName() != "mine" {
			t.Errorf("sandbox for %v", sb.Metadata)
		}
	}
	rt.FakeRuntimeService.Unlock()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == "kubelet_node_name" && mf.GetMetric()[0].GetLabel()[0].GetValue() == "node-1"
	}
	if !found {
		t.Error("no kubelet_node_name{node=\"node-1\"} metric")
	}
}

func writeDockerArchive(t *testing.T, path string, tags ...string) {
	t.Helper()
	m, _ := json.Marshal([]map[string]any{{"Config": "sha256:c", "RepoTags": tags, "Layers": []string{}}})
	writeTar(t, path, map[string][]byte{"manifest.json": m})
}

func writeTar(t *testing.T, path string, files map[string][]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for name, b := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestTarballImageNames(t *testing.T) {
	dir := t.TempDir()
	oci := filepath.Join(dir, "oci.tar")
	idx, _ := json.Marshal(map[string]any{"manifests": []map[string]any{
		{"annotations": map[string]string{"io.containerd.image.name": "skiff.local/busybox:1.35", "org.opencontainers.image.ref.name": "1.35"}},
		{"annotations": map[string]string{"org.opencontainers.image.ref.name": "skiff.local/pause:3.10"}},
		{"annotations": map[string]string{"org.opencontainers.image.ref.name": "latest"}},
	}})
	writeTar(t, oci, map[string][]byte{"index.json": idx, "oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`)})
	names, err := tarballImageNames(oci)
	if err != nil || !slices.Equal(names, []string{"skiff.local/busybox:1.35", "skiff.local/pause:3.10"}) {
		t.Errorf("OCI layout names %v, %v", names, err)
	}
	docker := filepath.Join(dir, "docker.tar")
	writeDockerArchive(t, docker, "skiff.local/agnhost:2.53", "skiff.local/agnhost:latest")
	if names, err := tarballImageNames(docker); err != nil || len(names) != 2 {
		t.Errorf("docker archive names %v, %v", names, err)
	}
	bad := filepath.Join(dir, "bad.tar")
	writeTar(t, bad, map[string][]byte{"manifest.json": []byte("{")})
	if _, err := tarballImageNames(bad); err == nil || !strings.Contains(err.Error(), "manifest.json") {
		t.Errorf("bad manifest: %v", err)
	}
}

// A static pod runs with no apiserver at all (upstream's promise that a
// control plane can be bootstrapped from static pods): the Node is
// computed locally for admission, and API pods' dependencies (Services)
// are not waited for.
func TestStaticPodRunsWithoutAPIServer(t *testing.T) {
	// Port 1 on loopback: every call fails at once with Unavailable.
	cc, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	rt := cri.NewFake()
	rt.FakeStatus = &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true}, {Type: runtimeapi.NetworkReady, Status: true}}}
	rt.SetFakeImages([]string{"skiff.local/pause:3.10", "skiff.local/agnhost:2.53"})

	o := NewOptions()
	o.RootDir, o.CNIConfDir, o.CNIBinDir, o.PodManifestPath = t.TempDir(), t.TempDir(), fakePlugins(t), t.TempDir()
	o.NodeIPs = []string{"10.0.0.5"}
	o.CgroupsPerQOS, o.EnforceNodeAllocatable = false, nil // this host's cgroups stay untouched
	manifest := `apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - name: etcd
    image: skiff.local/agnhost:2.53
    imagePullPolicy: Never
    resources:
      requests:
        cpu: 100m
        memory: 64Mi
`
	if err := os.WriteFile(filepath.Join(o.PodManifestPath, "etcd.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := New(Config{Options: *o, NodeName: "node-1", Client: client.New(cc), Runtime: rt,
		Machine: func() (*nodestatus.Machine, error) {
			return &nodestatus.Machine{NumCores: 2, MemoryBytes: 4 << 30, EphemeralStorageBytes: 20 << 30}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- k.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	poll(t, "the static pod's container running", func() bool {
		rt.FakeRuntimeService.Lock()
		defer rt.FakeRuntimeService.Unlock()
		for _, c := range rt.Containers {
			if c.Metadata.GetName() == "etcd" && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				return true
			}
		}
		return false
	})
	rt.FakeRuntimeService.Lock()
	for _, sb := range rt.Sandboxes {
		if sb.Metadata.GetName() != "etcd-node-1" || sb.Metadata.GetNamespace() != "kube-system" {
			t.Errorf("sandbox %v, want kube-system/etcd-node-1", sb.Metadata)
		}
	}
	rt.FakeRuntimeService.Unlock()
	if k.Node() != nil {
		t.Errorf("a Node from the API while there is none: %v", k.Node())
	}
}

// The pod cgroup manager is there by default, and not where no cgroup may be
// made: without --cgroups-per-qos, and in hollow nodes.
func TestCgroupsWiring(t *testing.T) {
	cs := fake.NewClientset()
	defer cs.Close()
	for _, tc := range []struct {
		name     string
		perQoS   bool
		noMounts bool
		want     bool
	}{
		{"default", true, false, true},
		{"--cgroups-per-qos=false", false, false, false},
		{"hollow node", true, true, false},
	} {
		o := NewOptions()
		o.CgroupsPerQOS, o.PodMaxPids = tc.perQoS, 4096
		if !tc.perQoS {
			o.EnforceNodeAllocatable = nil
		}
		// New makes no cgroup: that waits for Run.
		k, err := New(Config{Options: *o, NodeName: "node-1", Client: cs.Client, Runtime: cri.NewFake(), NoMounts: tc.noMounts})
		if err != nil {
			t.Fatal(err)
		}
		parts := k.workers.(*podParts)
		if got := parts.cgroups != nil; got != tc.want {
			t.Errorf("%s: pod cgroup manager %v, want %v", tc.name, got, tc.want)
		}
	}
}
