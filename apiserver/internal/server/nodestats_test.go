package server

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"skiff.dev/apiserver/internal/authorizer"
	"skiff.dev/apiserver/internal/kubeletclient"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

func TestNodeProxyRelaysTheKubeletsReads(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	k := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		switch r.URL.Path {
		case "/stats/summary":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"node":{"nodeName":"n1"},"pods":[]}`))
		case "/healthz":
			http.Error(w, "[-]pleg failed", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	defer k.Close()
	z := &recordingAuthorizer{}
	s := newService(t, z)
	s.SetKubeletClient(kubeletclient.New(kubeletclient.Config{}))
	host, port, _ := net.SplitHostPort(k.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	ctx := context.Background()
	nodes, _ := scheme.ForResource("", "nodes")
	node := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1"}}
	if _, err := s.reg.Create(ctx, nodes, "", node, false); err != nil {
		t.Fatal(err)
	}
	node.Status = &corev1.NodeStatus{
		Addresses:       []*corev1.NodeAddress{{Type: "InternalIP", Address: host}},
		DaemonEndpoints: &corev1.NodeDaemonEndpoints{KubeletEndpoint: &corev1.DaemonEndpoint{Port: int32(p)}},
	}
	if _, err := s.reg.UpdateStatus(ctx, nodes, "", node, false); err != nil {
		t.Fatal(err)
	}
	// n3's kubelet is gone: nothing listens at its address.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	_, cport, _ := net.SplitHostPort(closed.Addr().String())
	cp, _ := strconv.Atoi(cport)
	n3 := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n3"}, Status: &corev1.NodeStatus{
		Addresses:       []*corev1.NodeAddress{{Type: "InternalIP", Address: "127.0.0.1"}},
		DaemonEndpoints: &corev1.NodeDaemonEndpoints{KubeletEndpoint: &corev1.DaemonEndpoint{Port: int32(cp)}}}}
	if _, err := s.reg.Create(ctx, nodes, "", n3, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.reg.UpdateStatus(ctx, nodes, "", n3, false); err != nil {
		t.Fatal(err)
	}
	z.take()

	resp, err := s.NodeProxy(ctx, &apipb.NodeProxyRequest{Name: "n1", Path: "/stats/summary", Query: "only_cpu_and_memory=true"})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetBody()) != `{"node":{"nodeName":"n1"},"pods":[]}` || resp.GetContentType() != "application/json" {
		t.Errorf("NodeProxy = %q %q", resp.GetContentType(), resp.GetBody())
	}
	if got := z.take(); len(got) != 1 || !reflect.DeepEqual(got[0], authorizer.Attributes{Verb: "get", APIVersion: "v1", Resource: "nodes", Subresource: "proxy", Name: "n1"}) {
		t.Errorf("authorizer asked %+v, want get nodes/proxy n1", got)
	}

	for _, tc := range []struct {
		req    *apipb.NodeProxyRequest
		reason apierrors.Reason
		msg    string
	}{
		{&apipb.NodeProxyRequest{Name: "n1", Path: "/exec/default/web/app"}, apierrors.ReasonBadRequest, `path "/exec/default/web/app" is not served by the node proxy`},
		{&apipb.NodeProxyRequest{Name: "n1", Path: "/stats/summary/../../exec"}, apierrors.ReasonBadRequest, "is not served by the node proxy"},
		{&apipb.NodeProxyRequest{Name: "n2", Path: "/stats/summary"}, apierrors.ReasonNotFound, `"n2" not found`},
		{&apipb.NodeProxyRequest{Name: "n1", Path: "healthz"}, apierrors.ReasonInternal, "[-]pleg failed"},
		{&apipb.NodeProxyRequest{Name: "n3", Path: "/stats/summary"}, apierrors.ReasonUnavailable, "connection refused"},
	} {
		_, err := s.NodeProxy(ctx, tc.req)
		if apierrors.ReasonOf(err) != tc.reason || err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("NodeProxy(%s %s) = %v, want %s containing %q", tc.req.GetName(), tc.req.GetPath(), err, tc.reason, tc.msg)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"GET /stats/summary?only_cpu_and_memory=true", "GET /healthz?"}; strings.Join(asked, "|") != strings.Join(want, "|") {
		t.Errorf("kubelet was asked %q, want %q", asked, want)
	}

	z.deny = "get"
	if _, err := s.NodeProxy(ctx, &apipb.NodeProxyRequest{Name: "n1", Path: "/pods"}); apierrors.ReasonOf(err) != apierrors.ReasonForbidden {
		t.Errorf("NodeProxy without get nodes/proxy = %v, want Forbidden", err)
	}
}
