package nodes

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

const (
	registryUser = "puller"
	registryPass = "pull-s3cret"
	// registryRepo is where the test pushes agnhost; pods name it with the
	// address the node reaches the host at.
	registryRepo = "e2e/agnhost:pull-test"
)

// authRegistry is go-containerregistry's in-memory registry behind HTTP
// Basic authentication, counting what it serves so the test can tell a pull
// that reached it from one that did not.
type authRegistry struct {
	next http.Handler
	// fromNode is the node's address; authorized manifest requests from it
	// are real pulls by the node's containerd.
	fromNode  string
	nodePulls atomic.Int64
	denied    atomic.Int64
}

func (a *authRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u, p, ok := r.BasicAuth()
	if !ok || u != registryUser || p != registryPass {
		a.denied.Add(1)
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	if host, _, _ := net.SplitHostPort(r.RemoteAddr); host == a.fromNode && strings.Contains(r.URL.Path, "/manifests/") {
		a.nodePulls.Add(1)
	}
	a.next.ServeHTTP(w, r)
}

// podEvents are the messages of the events about pod name by reason, those
// of one reason joined by " | ".
func podEvents(ctx context.Context, cl *client.Client, name string) (map[string]string, error) {
	l, err := client.For[*corev1.Event](cl, "default").List(ctx, client.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return nil, err
	}
	got := map[string]string{}
	for _, e := range l.Items {
		if got[e.Reason] != "" {
			got[e.Reason] += " | "
		}
		got[e.Reason] += e.Message
	}
	return got, nil
}

func TestKubeletPullsFromRegistryWithPullSecret(t *testing.T) {
	c, cl := kubeletClusterN(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := c.Nodes[0]

	// The registry listens on every address, but the nftables guard admits
	// its port only from loopback and the node veths.
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := c.AllowHostPort(port); err != nil {
		l.Close()
		t.Fatal(err)
	}
	reg := &authRegistry{next: registry.New(registry.Logger(log.New(io.Discard, "", 0))), fromNode: node.IP}
	srv := &http.Server{Handler: reg}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	// Push from the host over loopback; the node pulls the same repository
	// through its gateway, the address pods name.
	nodeAddr := net.JoinHostPort(node.HostIP, strconv.Itoa(port))
	image := nodeAddr + "/" + registryRepo
	img, err := tarball.ImageFromPath(filepath.Join("..", "..", "bin", "images", "agnhost-2.53.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pushRef, err := name.ParseReference("127.0.0.1:"+strconv.Itoa(port)+"/"+registryRepo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(pushRef, img, remote.WithContext(ctx),
		remote.WithAuth(&authn.Basic{Username: registryUser, Password: registryPass})); err != nil {
		t.Fatalf("push %s: %v", pushRef, err)
	}
	if err := node.TrustRegistry(nodeAddr); err != nil {
		t.Fatal(err)
	}

	// Keyed by bare host:port, as `kubectl create secret docker-registry
	// --docker-server=host:port` writes it.
	auth := base64.StdEncoding.EncodeToString([]byte(registryUser + ":" + registryPass))
	dockerConfig, _ := json.Marshal(map[string]any{"auths": map[string]any{
		nodeAddr: map[string]string{"username": registryUser, "password": registryPass, "auth": auth}}})
	if _, err := client.For[*corev1.Secret](cl, "default").Create(ctx, &corev1.Secret{
		Metadata: &metav1.ObjectMeta{Name: "regcred"}, Type: "kubernetes.io/dockerconfigjson",
		Data: map[string][]byte{".dockerconfigjson": dockerConfig}}); err != nil {
		t.Fatal(err)
	}
	pods := client.For[*corev1.Pod](cl, "default")
	pod := func(podName, policy string, secret bool) *corev1.Pod {
		ctr := agnhost("web")
		ctr.Image, ctr.ImagePullPolicy = image, policy
		p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: podName}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{ctr}}}
		if secret {
			p.Spec.ImagePullSecrets = []*corev1.LocalObjectReference{{Name: "regcred"}}
		}
		return p
	}

	pulled := t.Run("with the pull secret the image is pulled and runs", func(t *testing.T) {
		if _, err := pods.Create(ctx, pod("with-secret", "Always", true)); err != nil {
			t.Fatal(err)
		}
		var got *corev1.Pod
		eventually(t, 60*time.Second, "with-secret Running and Ready", func() (bool, string) {
			var err error
			got, err = pods.Get(ctx, "with-secret")
			if err != nil {
				return false, err.Error()
			}
			for _, cs := range got.GetStatus().GetContainerStatuses() {
				if r := cs.GetState().GetWaiting().GetReason(); r == "ErrImagePull" || r == "ImagePullBackOff" {
					ev, _ := podEvents(ctx, cl, "with-secret")
					t.Fatalf("with-secret: %s; events %v", r, ev)
				}
			}
			return got.GetStatus().GetPhase() == "Running" && condition(got, "Ready") == "True", got.GetStatus().String()
		})
		if n := reg.nodePulls.Load(); n == 0 {
			t.Errorf("the registry served no manifest to the node (%s); the image came from somewhere else", node.IP)
		}
		if cs := got.Status.ContainerStatuses; len(cs) != 1 || cs[0].Image != image {
			t.Errorf("container statuses: %v", cs)
		}
		if body, err := podGet(got.Status.PodIP, "/hostname"); err != nil || body != "with-secret" {
			t.Errorf("/hostname of the pulled agnhost: %q (%v)", body, err)
		}
		eventually(t, 10*time.Second, "Pulling and Pulled events", func() (bool, string) {
			ev, err := podEvents(ctx, cl, "with-secret")
			if err != nil {
				return false, err.Error()
			}
			ok := strings.Contains(ev["Pulling"], image) && strings.HasPrefix(ev["Pulled"], "Successfully pulled image "+strconv.Quote(image))
			return ok, fmt.Sprint(ev)
		})
	})

	t.Run("without it the pull is refused and backs off", func(t *testing.T) {
		w, err := pods.Watch(ctx, client.ListOptions{FieldSelector: "metadata.name=no-secret"})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		if _, err := pods.Create(ctx, pod("no-secret", "Always", false)); err != nil {
			t.Fatal(err)
		}
		// ErrImagePull may last only until the next sync: the watch sees
		// every status the kubelet writes.
		var reasons []string
		var pullMsg string
		deadline := time.After(45 * time.Second)
		for len(reasons) == 0 || reasons[len(reasons)-1] != "ImagePullBackOff" {
			select {
			case ev, ok := <-w.Events():
				if !ok {
					t.Fatalf("watch ended: %v (reasons so far %v)", w.Err(), reasons)
				}
				for _, cs := range ev.Object.GetStatus().GetContainerStatuses() {
					wt := cs.GetState().GetWaiting()
					if r := wt.GetReason(); r != "" && (len(reasons) == 0 || reasons[len(reasons)-1] != r) {
						reasons = append(reasons, r)
						if r == "ErrImagePull" {
							pullMsg = wt.GetMessage()
						}
					}
				}
			case <-deadline:
				t.Fatalf("no ImagePullBackOff after 45s; waiting reasons seen: %v", reasons)
			}
		}
		t.Logf("waiting reasons %v; ErrImagePull message %q", reasons, pullMsg)
		if !strings.Contains(strings.Join(reasons, ","), "ErrImagePull,ImagePullBackOff") {
			t.Errorf("waiting reasons %v: want ErrImagePull then ImagePullBackOff", reasons)
		}
		// Refused for want of credentials, not for an unreachable or
		// misconfigured (HTTPS) registry.
		if !strings.Contains(pullMsg, "401") {
			t.Errorf("ErrImagePull message does not name the 401: %q", pullMsg)
		}
		if reg.denied.Load() == 0 {
			t.Error("the registry denied nothing")
		}
		got, err := pods.Get(ctx, "no-secret")
		if err != nil {
			t.Fatal(err)
		}
		if got.GetStatus().GetPhase() != "Pending" {
			t.Errorf("phase %q, want Pending", got.GetStatus().GetPhase())
		}
	})

	t.Run("IfNotPresent with the image present pulls nothing", func(t *testing.T) {
		if !pulled {
			t.Skip("the image was never pulled")
		}
		before := reg.nodePulls.Load()
		// No secret: nothing to pull, so nothing to authenticate.
		if _, err := pods.Create(ctx, pod("present", "IfNotPresent", false)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "present Running and Ready", func() (bool, string) {
			got, err := pods.Get(ctx, "present")
			if err != nil {
				return false, err.Error()
			}
			return got.GetStatus().GetPhase() == "Running" && condition(got, "Ready") == "True", got.GetStatus().String()
		})
		var ev map[string]string
		eventually(t, 10*time.Second, "a Pulled event", func() (bool, string) {
			var err error
			ev, err = podEvents(ctx, cl, "present")
			return err == nil && ev["Pulled"] != "", fmt.Sprint(ev, err)
		})
		if want := fmt.Sprintf("Container image %q already present on machine", image); ev["Pulled"] != want {
			t.Errorf("Pulled event %q, want %q", ev["Pulled"], want)
		}
		if _, ok := ev["Pulling"]; ok {
			t.Errorf("a Pulling event for an image present: %v", ev)
		}
		if n := reg.nodePulls.Load() - before; n != 0 {
			t.Errorf("the registry served %d manifests to the node for an IfNotPresent image present", n)
		}
	})
}
