package nodes

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client"
	"skiff.dev/client/config"
	"skiff.dev/e2e/local"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

const agnhostImage = "skiff.local/agnhost:2.53"

var podKind, _ = scheme.ForResource("", "pods")

// kubeletCluster brings up two nodes with their kubelets, or skips naming
// what this machine lacks.
func kubeletCluster(t *testing.T) (*local.Cluster, *client.Client) {
	t.Helper()
	return kubeletClusterN(t, 2)
}

func kubeletClusterN(t testing.TB, nodes int) (*local.Cluster, *client.Client) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("nodes need root (network and mount namespaces, veths, nftables)")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Skip("containerd is not installed: run hack/install-deps.sh")
	}
	binDir, _ := filepath.Abs("../../bin")
	for _, b := range []string{"skiff-apiserver", "skiff-scheduler", "skiff-controller-manager", "skiff-kubelet", "images/agnhost-2.53.tar", "images/busybox-1.35.tar", "images/pause-3.10.tar"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			t.Fatalf("%s/%s is missing: run `make build images` (or `make e2e`) first", binDir, b)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := local.Up(ctx, local.Options{Dir: t.TempDir(), BinDir: binDir, Nodes: nodes, Log: logWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Down(); err != nil {
			t.Error(err)
		}
	})
	kc, err := config.Load(c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	r, err := kc.Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := r.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return c, client.New(conn)
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %s", what, d, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// podGet asks a pod's agnhost netexec, from the host, for path.
func podGet(ip, path string) (string, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + ip + ":8080" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func agnhost(name string) *corev1.Container {
	return &corev1.Container{Name: name, Image: agnhostImage, Args: []string{"netexec", "--http-port=8080", "--udp-port=-1"},
		Ports:          []*corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: "TCP"}},
		ReadinessProbe: &corev1.Probe{Handler: &corev1.ProbeHandler{HttpGet: &corev1.HTTPGetAction{Path: "/healthz", Port: &metav1.IntOrString{IntVal: 8080}}}, PeriodSeconds: 1}}
}

func condition(p *corev1.Pod, typ string) string {
	for _, c := range p.GetStatus().GetConditions() {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

func TestKubeletRunsPods(t *testing.T) {
	c, cl := kubeletCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	nodes := client.For[*corev1.Node](cl, "")
	eventually(t, 60*time.Second, "both nodes Ready with a podCIDR", func() (bool, string) {
		l, err := nodes.List(ctx, client.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		ready := 0
		for _, n := range l.Items {
			for _, cond := range n.GetStatus().GetConditions() {
				if cond.Type == "Ready" && cond.Status == "True" && n.GetSpec().GetPodCIDR() != "" {
					ready++
				}
			}
		}
		return ready == 2, fmt.Sprintf("%d of %d nodes ready", ready, len(l.Items))
	})
	pods := client.For[*corev1.Pod](cl, "default")

	t.Run("a pod with an init container, two containers, a probe and configMap, secret and emptyDir volumes", func(t *testing.T) {
		if _, err := client.For[*corev1.ConfigMap](cl, "default").Create(ctx, &corev1.ConfigMap{
			Metadata: &metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"greeting": "hello"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := client.For[*corev1.Secret](cl, "default").Create(ctx, &corev1.Secret{
			Metadata: &metav1.ObjectMeta{Name: "sec"}, Data: map[string][]byte{"password": []byte("s3cret")}}); err != nil {
			t.Fatal(err)
		}
		work := &corev1.VolumeMount{Name: "work", MountPath: "/work"}
		side := &corev1.Container{Name: "side", Image: busyboxImage, Command: []string{"sh", "-c",
			"cat /etc/cfg/greeting /etc/sec/password /work/init.txt > /work/out.txt; exec sleep 3600"},
			VolumeMounts: []*corev1.VolumeMount{work, {Name: "cfg", MountPath: "/etc/cfg"}, {Name: "sec", MountPath: "/etc/sec"}}}
		web := agnhost("web")
		web.VolumeMounts = []*corev1.VolumeMount{work}
		// sleep as the container's first process ignores SIGTERM: a short
		// grace period keeps the deletion's SIGKILL near.
		grace := int64(2)
		p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "full"}, Spec: &corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			InitContainers: []*corev1.Container{{Name: "init", Image: busyboxImage, Command: []string{"sh", "-c", "echo init > /work/init.txt"},
				VolumeMounts: []*corev1.VolumeMount{work}}},
			Containers: []*corev1.Container{web, side},
			Volumes: []*corev1.Volume{
				{Name: "work", VolumeSource: &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "cfg", VolumeSource: &corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: &corev1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "sec", VolumeSource: &corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
			}}}
		if _, err := pods.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		var got *corev1.Pod
		eventually(t, 60*time.Second, "full Running and Ready", func() (bool, string) {
			var err error
			got, err = pods.Get(ctx, "full")
			if err != nil {
				return false, err.Error()
			}
			return got.GetStatus().GetPhase() == "Running" && condition(got, "Ready") == "True", got.GetStatus().String()
		})
		st := got.Status
		if condition(got, "Initialized") != "True" || condition(got, "ContainersReady") != "True" || condition(got, "PodScheduled") != "True" {
			t.Errorf("conditions: %v", st.Conditions)
		}
		if len(st.InitContainerStatuses) != 1 || st.InitContainerStatuses[0].GetState().GetTerminated().GetReason() != "Completed" {
			t.Errorf("init container status: %v", st.InitContainerStatuses)
		}
		if len(st.ContainerStatuses) != 2 || !st.ContainerStatuses[0].Ready || !st.ContainerStatuses[1].Ready ||
			!strings.HasPrefix(st.ContainerStatuses[0].ContainerID, "containerd://") {
			t.Errorf("container statuses: %v", st.ContainerStatuses)
		}
		if !strings.HasPrefix(st.PodIP, "10.244.") || st.QosClass != "BestEffort" || st.StartTime == nil || st.HostIP == "" {
			t.Errorf("podIP %q qosClass %q startTime %v hostIP %q", st.PodIP, st.QosClass, st.StartTime, st.HostIP)
		}
		eventually(t, 20*time.Second, "the sidecar's file, read through agnhost's shell", func() (bool, string) {
			body, err := podGet(st.PodIP, "/shell?cmd="+url.QueryEscape("cat /work/out.txt"))
			return err == nil && strings.Contains(body, `hello`) && strings.Contains(body, `s3cret`) && strings.Contains(body, `init`), fmt.Sprint(body, err)
		})
		// The ServiceAccount admission plugin gave it a bound token, which
		// the kubelet mounted.
		body, err := podGet(st.PodIP, "/shell?cmd="+url.QueryEscape("cat /var/run/secrets/kubernetes.io/serviceaccount/namespace"))
		if err != nil || !strings.Contains(body, `"output":"default"`) {
			t.Errorf("the service account volume's namespace file: %q (%v)", body, err)
		}
		// Deleting it stops it and the kubelet removes it for good.
		if _, err := pods.Delete(ctx, "full", client.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 45*time.Second, "full gone after its graceful deletion", func() (bool, string) {
			_, err := pods.Get(ctx, "full")
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	})

	t.Run("a Deployment spreads over both nodes and its pods reach each other across them", func(t *testing.T) {
		replicas := int32(4)
		labels := map[string]string{"app": "spread"}
		d := &appsv1.Deployment{Metadata: &metav1.ObjectMeta{Name: "spread"}, Spec: &appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: &corev1.PodTemplateSpec{Metadata: &metav1.ObjectMeta{Labels: labels}, Spec: &corev1.PodSpec{
				Containers: []*corev1.Container{agnhost("web")},
				TopologySpreadConstraints: []*corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
					WhenUnsatisfiable: "DoNotSchedule", LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
			}}}}
		if _, err := client.For[*appsv1.Deployment](cl, "default").Create(ctx, d); err != nil {
			t.Fatal(err)
		}
		byNode := map[string]*corev1.Pod{}
		eventually(t, 90*time.Second, "4 ready pods on both nodes", func() (bool, string) {
			l, err := pods.List(ctx, client.ListOptions{LabelSelector: "app=spread"})
			if err != nil {
				return false, err.Error()
			}
			ready := 0
			for _, p := range l.Items {
				if condition(p, "Ready") == "True" {
					ready++
					byNode[p.Spec.NodeName] = p
				}
			}
			return ready == 4 && len(byNode) == 2, fmt.Sprintf("%d ready on %d nodes", ready, len(byNode))
		})
		a, b := byNode[c.Nodes[0].Name], byNode[c.Nodes[1].Name]
		for _, p := range []*corev1.Pod{a, b} {
			if body, err := podGet(p.Status.PodIP, "/hostname"); err != nil || body != p.Metadata.Name {
				t.Errorf("%s at %s answers /hostname %q (%v)", p.Metadata.Name, p.Status.PodIP, body, err)
			}
		}
		// a on node 1 asks b on node 2: the request crosses from one node's
		// namespace to the other's.
		q := url.Values{"request": {"hostname"}, "protocol": {"http"}, "host": {b.Status.PodIP}, "port": {"8080"}, "tries": {"1"}}
		body, err := podGet(a.Status.PodIP, "/dial?"+q.Encode())
		var dial struct {
			Responses []string `json:"responses"`
		}
		if err != nil || json.Unmarshal([]byte(body), &dial) != nil || len(dial.Responses) != 1 || dial.Responses[0] != b.Metadata.Name {
			t.Errorf("%s dialing %s: %q (%v)", a.Metadata.Name, b.Metadata.Name, body, err)
		}

		// A rolling update replaces every pod, on both nodes.
		old := map[string]bool{}
		for _, p := range byNode {
			old[p.Metadata.Name] = true
		}
		deploys := client.For[*appsv1.Deployment](cl, "default")
		patch := []byte(`{"spec":{"template":{"metadata":{"annotations":{"rollout":"2"}}}}}`)
		if _, err := deploys.Patch(ctx, "spread", "merge", patch, ""); err != nil {
			t.Fatal(err)
		}
		eventually(t, 120*time.Second, "the rollout replaced every pod on both nodes", func() (bool, string) {
			d, err := deploys.Get(ctx, "spread")
			if err != nil {
				return false, err.Error()
			}
			st := d.GetStatus()
			if st.GetObservedGeneration() != d.Metadata.Generation || st.GetUpdatedReplicas() != 4 || st.GetAvailableReplicas() != 4 || st.GetReplicas() != 4 {
				return false, st.String()
			}
			l, err := pods.List(ctx, client.ListOptions{LabelSelector: "app=spread"})
			if err != nil {
				return false, err.Error()
			}
			nodes := map[string]bool{}
			for _, p := range l.Items {
				if old[p.Metadata.Name] && p.Metadata.DeletionTimestamp == nil {
					return false, "old pod " + p.Metadata.Name + " still there"
				}
				if p.Metadata.Annotations["rollout"] == "2" && condition(p, "Ready") == "True" {
					nodes[p.Spec.NodeName] = true
				}
			}
			return len(nodes) == 2, fmt.Sprintf("new ready pods on %d nodes", len(nodes))
		})
	})

	t.Run("a crashing container backs off with growing delays", func(t *testing.T) {
		p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "crash"}, Spec: &corev1.PodSpec{
			Containers: []*corev1.Container{{Name: "c", Image: busyboxImage, Command: []string{"sh", "-c", "exit 3"}}}}}
		if _, err := pods.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		// When each restart is first seen: as upstream, the first restart is
		// at once, then the delays are 10 s, 20 s, doubling.
		seen := map[int32]time.Time{}
		eventually(t, 90*time.Second, "three restarts, in CrashLoopBackOff with the last exit code", func() (bool, string) {
			got, err := pods.Get(ctx, "crash")
			if err != nil {
				return false, err.Error()
			}
			for _, cs := range got.GetStatus().GetContainerStatuses() {
				if _, ok := seen[cs.RestartCount]; !ok {
					seen[cs.RestartCount] = time.Now()
				}
				last := cs.GetLastState().GetTerminated()
				if cs.RestartCount >= 3 && cs.GetState().GetWaiting().GetReason() == "CrashLoopBackOff" && last.GetExitCode() == 3 && last.GetReason() == "Error" {
					return true, ""
				}
			}
			return false, got.GetStatus().String()
		})
		first, second := seen[2].Sub(seen[1]), seen[3].Sub(seen[2])
		if second < first+5*time.Second || first < 5*time.Second {
			t.Errorf("delays before restarts 2 and 3: %s and %s, want about 10 s then 20 s", first.Round(time.Second), second.Round(time.Second))
		}
	})

	t.Run("a pod over its memory limit is OOMKilled", func(t *testing.T) {
		p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "hog"}, Spec: &corev1.PodSpec{RestartPolicy: "Never",
			Containers: []*corev1.Container{{Name: "c", Image: busyboxImage,
				// 64 MiB held in a shell variable, under a 16 MiB limit.
				Command:   []string{"sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); sleep 5"},
				Resources: &corev1.ResourceRequirements{Limits: map[string]*metav1.Quantity{"memory": {String_: "16Mi"}}}}}}}
		if _, err := pods.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "hog OOMKilled and Failed", func() (bool, string) {
			got, err := pods.Get(ctx, "hog")
			if err != nil {
				return false, err.Error()
			}
			for _, cs := range got.GetStatus().GetContainerStatuses() {
				if cs.GetState().GetTerminated().GetReason() == "OOMKilled" && got.Status.Phase == "Failed" {
					return true, ""
				}
			}
			return false, got.GetStatus().String()
		})
		if st := func() string { p, _ := pods.Get(ctx, "hog"); return fmt.Sprint(p.GetStatus().GetQosClass()) }(); st != "Burstable" {
			t.Errorf("qosClass %s, want Burstable", st)
		}
	})

	t.Run("deleting a pod runs its preStop hook, then SIGTERM", func(t *testing.T) {
		marker := t.TempDir()
		hostPath := "Directory"
		grace := int64(10)
		p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "graceful"}, Spec: &corev1.PodSpec{TerminationGracePeriodSeconds: &grace,
			Containers: []*corev1.Container{{Name: "c", Image: busyboxImage,
				Command:      []string{"sh", "-c", "trap 'echo term >> /marker/log; exit 0' TERM; echo started >> /marker/log; while true; do sleep 0.1; done"},
				Lifecycle:    &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo prestop >> /marker/log"}}}},
				VolumeMounts: []*corev1.VolumeMount{{Name: "marker", MountPath: "/marker"}}}},
			Volumes: []*corev1.Volume{{Name: "marker", VolumeSource: &corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: marker, Type: &hostPath}}}}}}
		if _, err := pods.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		read := func() string { b, _ := os.ReadFile(filepath.Join(marker, "log")); return string(b) }
		eventually(t, 60*time.Second, "graceful started", func() (bool, string) { return read() == "started\n", read() })
		if _, err := pods.Delete(ctx, "graceful", client.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "graceful gone", func() (bool, string) {
			_, err := pods.Get(ctx, "graceful")
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		if got := read(); got != "started\nprestop\nterm\n" {
			t.Errorf("the container's record of its end: %q, want started, prestop, term", got)
		}
	})

	t.Run("a hostPort reaches the pod through its node's address (portmap)", func(t *testing.T) {
		web := agnhost("web")
		web.Ports[0].HostPort = 18081
		p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "hostport"}, Spec: &corev1.PodSpec{
			NodeName: c.Nodes[0].Name, Containers: []*corev1.Container{web}}}
		if _, err := pods.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "hostport Ready", func() (bool, string) {
			got, err := pods.Get(ctx, "hostport")
			return err == nil && condition(got, "Ready") == "True", fmt.Sprint(err)
		})
		hc := &http.Client{Timeout: 5 * time.Second}
		var body string
		eventually(t, 20*time.Second, "GET node:18081/hostname", func() (bool, string) {
			resp, err := hc.Get("http://" + c.Nodes[0].IP + ":18081/hostname")
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return body == "hostport", body
		})
	})

	t.Run("a static pod runs from its node's manifest directory, with a mirror pod in the API", func(t *testing.T) {
		n := c.Nodes[0]
		dir := filepath.Join(n.Dir, "manifests")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		manifest := "apiVersion: v1\nkind: Pod\nmetadata: {name: static-web}\nspec:\n  containers:\n  - name: web\n    image: " + agnhostImage +
			"\n    args: [netexec, --http-port=8080, --udp-port=-1]\n"
		if err := os.WriteFile(filepath.Join(dir, "static-web.yaml"), []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		mirror := "static-web-" + n.Name
		var uid string
		eventually(t, 60*time.Second, "mirror pod "+mirror+" Running", func() (bool, string) {
			p, err := pods.Get(ctx, mirror)
			if err != nil {
				return false, err.Error()
			}
			uid = p.Metadata.Uid
			ok := p.Metadata.Annotations["kubernetes.io/config.mirror"] != "" && p.GetStatus().GetPhase() == "Running" && p.Spec.NodeName == n.Name
			return ok, p.GetStatus().String()
		})
		p, _ := pods.Get(ctx, mirror)
		// Its name, and so its hostname, carries the node's, as upstream.
		if body, err := podGet(p.Status.PodIP, "/hostname"); err != nil || body != mirror {
			t.Errorf("the static pod answers /hostname %q (%v), want %s", body, err, mirror)
		}
		// A deleted mirror comes back; the pod itself kept running.
		zero := int64(0)
		if _, err := pods.Delete(ctx, mirror, client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the mirror pod recreated", func() (bool, string) {
			p, err := pods.Get(ctx, mirror)
			return err == nil && p.Metadata.Uid != uid, fmt.Sprint(err)
		})
		// Removing the manifest stops the pod and deletes its mirror.
		if err := os.Remove(filepath.Join(dir, "static-web.yaml")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "the mirror pod gone with its manifest", func() (bool, string) {
			_, err := pods.Get(ctx, mirror)
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	})

	// Last: it stops a kubelet for good.
	t.Run("a node whose kubelet stops is tainted and its pods replaced on the other", func(t *testing.T) {
		dead := c.Nodes[1]
		one := int64(1)
		replicas := int32(2)
		labels := map[string]string{"app": "survivor"}
		d := &appsv1.Deployment{Metadata: &metav1.ObjectMeta{Name: "survivor"}, Spec: &appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: &corev1.PodTemplateSpec{Metadata: &metav1.ObjectMeta{Labels: labels}, Spec: &corev1.PodSpec{
				Containers: []*corev1.Container{agnhost("web")},
				// Evicted a second after the taint, not the default five minutes.
				Tolerations: []*corev1.Toleration{{Key: "node.kubernetes.io/unreachable", Operator: "Exists", Effect: "NoExecute", TolerationSeconds: &one}},
				TopologySpreadConstraints: []*corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
					WhenUnsatisfiable: "ScheduleAnyway", LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
			}}}}
		if _, err := client.For[*appsv1.Deployment](cl, "default").Create(ctx, d); err != nil {
			t.Fatal(err)
		}
		onDead := func() (ready, total int, where map[string]int) {
			where = map[string]int{}
			l, err := pods.List(ctx, client.ListOptions{LabelSelector: "app=survivor"})
			if err != nil {
				return 0, 0, where
			}
			for _, p := range l.Items {
				if p.Metadata.DeletionTimestamp != nil {
					continue
				}
				total++
				if condition(p, "Ready") == "True" {
					ready++
					where[p.Spec.NodeName]++
				}
			}
			return ready, total, where
		}
		eventually(t, 60*time.Second, "a ready survivor pod on the node that will stop", func() (bool, string) {
			ready, _, where := onDead()
			return ready == 2 && where[dead.Name] > 0, fmt.Sprint(where)
		})
		proc, err := os.FindProcess(dead.Kubelet.PID)
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Kill(); err != nil {
			t.Fatal(err)
		}
		// 40 s of silence (--node-monitor-grace-period), then the taint,
		// then the eviction a second later, then a replacement elsewhere.
		eventually(t, 120*time.Second, dead.Name+" unreachable and its survivor pods replaced on the other node", func() (bool, string) {
			n, err := nodes.Get(ctx, dead.Name)
			if err != nil {
				return false, err.Error()
			}
			tainted := false
			for _, tt := range n.GetSpec().GetTaints() {
				tainted = tainted || tt.Key == "node.kubernetes.io/unreachable" && tt.Effect == "NoExecute"
			}
			ready, _, where := onDead()
			return tainted && ready == 2 && where[dead.Name] == 0, fmt.Sprintf("tainted %v, ready pods by node %v", tainted, where)
		})
	})

	// After the last: it stops the apiserver. A kubelet that starts while
	// no apiserver answers still runs its static pods (how a control plane
	// of static pods comes up at all).
	t.Run("with no apiserver, a restarted kubelet runs a static pod", func(t *testing.T) {
		n := c.Nodes[0]
		if err := c.Stop("skiff-apiserver"); err != nil {
			t.Fatal(err)
		}
		if err := c.RestartKubelet(ctx, n); err != nil {
			t.Fatal(err)
		}
		manifest := "apiVersion: v1\nkind: Pod\nmetadata: {name: offline, namespace: kube-system}\nspec:\n  containers:\n  - name: web\n    image: " + agnhostImage +
			"\n    args: [netexec, --http-port=8080, --udp-port=-1]\n"
		if err := os.WriteFile(filepath.Join(n.Dir, "manifests", "offline.yaml"), []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		rt := criClient(t, n)
		name := "offline-" + n.Name
		var ip string
		eventually(t, 60*time.Second, "the static pod's container running on "+n.Name, func() (bool, string) {
			sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
				State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
				LabelSelector: map[string]string{"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "kube-system"}}})
			if err != nil || len(sbs.Items) == 0 {
				return false, fmt.Sprint("no ready sandbox: ", err)
			}
			ctrs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
				PodSandboxId: sbs.Items[0].Id, State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}})
			if err != nil || len(ctrs.Containers) == 0 {
				return false, fmt.Sprint("no running container: ", err)
			}
			st, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sbs.Items[0].Id})
			if err != nil {
				return false, err.Error()
			}
			ip = st.GetStatus().GetNetwork().GetIp()
			return ip != "", "no IP"
		})
		if body, err := podGet(ip, "/hostname"); err != nil || body != name {
			t.Errorf("the static pod answers /hostname %q (%v), want %s", body, err, name)
		}
	})
}
