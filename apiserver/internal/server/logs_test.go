package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"skiff.dev/apiserver/internal/kubeletclient"
	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// logsCluster is a Service over a real registry whose node n1's kubelet
// is an httptest TLS server running kubelet, served over gRPC.
func logsCluster(t *testing.T, kubelet http.HandlerFunc) *client.Client {
	t.Helper()
	k := httptest.NewTLSServer(kubelet)
	t.Cleanup(k.Close)
	s := newService(t, nil)
	s.SetKubeletClient(kubeletclient.New(kubeletclient.Config{}))
	host, port, _ := net.SplitHostPort(k.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	ctx := context.Background()
	nodes, _ := scheme.ForResource("", "nodes")
	pods, _ := scheme.ForResource("", "pods")
	node := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1"}}
	if _, err := s.reg.Create(ctx, nodes, "", node, false); err != nil {
		t.Fatal(err)
	}
	node.Status = &corev1.NodeStatus{
		Addresses:       []*corev1.NodeAddress{{Type: "Hostname", Address: "n1"}, {Type: "InternalIP", Address: host}},
		DaemonEndpoints: &corev1.NodeDaemonEndpoints{KubeletEndpoint: &corev1.DaemonEndpoint{Port: int32(p)}},
	}
	if _, err := s.reg.UpdateStatus(ctx, nodes, "", node, false); err != nil {
		t.Fatal(err)
	}
	for _, pod := range []*corev1.Pod{
		{Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: &corev1.PodSpec{NodeName: "n1",
			Containers:     []*corev1.Container{{Name: "app", Image: "x"}, {Name: "side", Image: "x"}},
			InitContainers: []*corev1.Container{{Name: "setup", Image: "x"}}}},
		{Metadata: &metav1.ObjectMeta{Name: "solo", Namespace: "default"}, Spec: &corev1.PodSpec{NodeName: "n1",
			Containers: []*corev1.Container{{Name: "only", Image: "x"}}}},
		{Metadata: &metav1.ObjectMeta{Name: "pending", Namespace: "default"}, Spec: &corev1.PodSpec{
			Containers: []*corev1.Container{{Name: "c", Image: "x"}}}},
	} {
		if _, err := s.reg.Create(ctx, pods, "default", pod, false); err != nil {
			t.Fatal(err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	apipb.RegisterAPIServer(gs, s)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return client.New(cc)
}

func TestPodLogsRelaysTheKubeletsLog(t *testing.T) {
	var mu sync.Mutex
	var got *url.URL
	c := logsCluster(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.URL
		mu.Unlock()
		io.WriteString(w, "one\ntwo\n")
	})
	tail, since := int64(5), time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	r, err := c.PodLogs(context.Background(), "", "solo", client.LogOptions{Previous: true, Timestamps: true, TailLines: &tail, SinceTime: &since})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(b) != "one\ntwo\n" {
		t.Fatalf("log = %q, %v", b, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got.Path != "/containerLogs/default/solo/only" {
		t.Errorf("kubelet path = %s", got.Path)
	}
	want := url.Values{"previous": {"true"}, "timestamps": {"true"}, "tailLines": {"5"}, "sinceTime": {"2024-01-02T03:04:05Z"}}
	if got.Query().Encode() != want.Encode() {
		t.Errorf("kubelet query = %s, want %s", got.RawQuery, want.Encode())
	}
}

func TestPodLogsErrors(t *testing.T) {
	c := logsCluster(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `container "app" in pod "web" is waiting to start: ContainerCreating`, http.StatusBadRequest)
	})
	secs := int64(10)
	for _, tc := range []struct {
		name   string
		opts   client.LogOptions
		reason apierrors.Reason
		msg    string
	}{
		{"web", client.LogOptions{}, apierrors.ReasonBadRequest, "a container name must be specified for pod web, choose one of: [app side] or one of the init containers: [setup]"},
		{"web", client.LogOptions{Container: "nope"}, apierrors.ReasonBadRequest, "container nope is not valid for pod web"},
		{"pending", client.LogOptions{}, apierrors.ReasonBadRequest, "pod pending does not have a host assigned"},
		{"missing", client.LogOptions{}, apierrors.ReasonNotFound, `pods "missing" not found`},
		{"web", client.LogOptions{Container: "app"}, apierrors.ReasonBadRequest, `container "app" in pod "web" is waiting to start: ContainerCreating`},
		{"web", client.LogOptions{Container: "app", SinceSeconds: &secs, SinceTime: &time.Time{}}, apierrors.ReasonBadRequest, "at most one of `sinceTime` or `sinceSeconds` may be specified"},
	} {
		_, err := c.PodLogs(context.Background(), "default", tc.name, tc.opts)
		if apierrors.ReasonOf(err) != tc.reason || apierrors.Message(err) != tc.msg {
			t.Errorf("%s %+v: %v (%s), want %s %q", tc.name, tc.opts, err, apierrors.ReasonOf(err), tc.reason, tc.msg)
		}
	}
}

// A followed log arrives as the kubelet writes it, and closing the reader
// ends the kubelet's request.
func TestPodLogsFollowStreams(t *testing.T) {
	gone := make(chan struct{})
	c := logsCluster(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("follow") != "true" {
			t.Errorf("follow not passed: %s", r.URL.RawQuery)
		}
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(gone)
	})
	r, err := c.PodLogs(context.Background(), "default", "web", client.LogOptions{Container: "side", Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "first\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	r.Close()
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the kubelet's request did not end when the reader closed")
	}
}
