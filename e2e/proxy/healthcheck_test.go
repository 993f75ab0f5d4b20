package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/knftables"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	proxyapp "skiff.dev/proxy/app"
)

// The node's address facing the "load balancer" namespace, and the port
// the apiserver would have allocated.
const (
	hcNodeIP   = "10.99.210.1"
	hcProberIP = "10.99.210.2"
	hcPort     = 32100
)

type hcAnswer struct {
	code   int
	weight string
	body   struct {
		Service struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		} `json:"service"`
		LocalEndpoints      int  `json:"localEndpoints"`
		ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
	}
}

// The health check node port of an eTP=Local LoadBalancer on the real
// proxy, probed over real HTTP from another namespace as a cloud load
// balancer probes a node: 503 while the node has no endpoint of the
// Service, 200 once it has one, and gone with the Service.
func TestHealthCheckNodePort(t *testing.T) {
	needRoot(t)
	node, prober := newNS(t), newNS(t)
	link(t, node, "vlb", hcNodeIP+"/24", prober, "eth0", hcProberIP+"/24")

	svc := &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "lb"},
		Spec: &corev1.ServiceSpec{Type: "LoadBalancer", ClusterIP: "10.99.100.30", ClusterIPs: []string{"10.99.100.30"},
			ExternalTrafficPolicy: "Local", HealthCheckNodePort: hcPort,
			Ports: []*corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30100}}}}
	endpoint := func(ip, node string) *discoveryv1.Endpoint {
		return &discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: proto.String(node),
			Conditions: &discoveryv1.EndpointConditions{Ready: proto.Bool(true)}}
	}
	slice := &discoveryv1.EndpointSlice{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: "lb-1",
		Labels: map[string]string{"kubernetes.io/service-name": "lb"}}, AddressType: "IPv4",
		Ports:     []*discoveryv1.EndpointPort{{Name: proto.String("http"), Protocol: proto.String("TCP"), Port: proto.Int32(8080)}},
		Endpoints: []*discoveryv1.Endpoint{endpoint("10.99.1.2", "another-node")}}
	cs := fake.NewClientset(svc, slice, &corev1.Node{Metadata: &metav1.ObjectMeta{Name: nodeName},
		Status: &corev1.NodeStatus{Addresses: []*corev1.NodeAddress{{Type: "InternalIP", Address: hcNodeIP}}}})
	t.Cleanup(cs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pc := &cluster{node: node, cs: cs, nft: newNSNFT(t, node, knftables.IPv4Family, proxyapp.TableName)}
	pc.startProxy(t, ctx)

	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: prober.dial}}
	url := fmt.Sprintf("http://%s:%d/", hcNodeIP, hcPort)
	probe := func() (hcAnswer, error) {
		var a hcAnswer
		resp, err := c.Get(url)
		if err != nil {
			return a, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return a, err
		}
		a.code, a.weight = resp.StatusCode, resp.Header.Get("X-Load-Balancing-Endpoint-Weight")
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			return a, fmt.Errorf("Content-Type %q", ct)
		}
		if err := json.Unmarshal(b, &a.body); err != nil {
			return a, fmt.Errorf("%w: %s", err, b)
		}
		return a, nil
	}
	await := func(what string, ok func(hcAnswer, error) bool) hcAnswer {
		t.Helper()
		var a hcAnswer
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if a, err = probe(); ok(a, err) {
				return a
			}
		}
		t.Fatalf("%s: last answer %+v, %v", what, a, err)
		return a
	}

	a := await("503 with no endpoint on this node", func(a hcAnswer, err error) bool {
		return err == nil && a.code == http.StatusServiceUnavailable
	})
	if a.body.Service.Namespace != "default" || a.body.Service.Name != "lb" || a.body.LocalEndpoints != 0 ||
		!a.body.ServiceProxyHealthy || a.weight != "0" {
		t.Errorf("without a local endpoint: %+v", a)
	}

	slice.Endpoints = append(slice.Endpoints, endpoint("10.99.2.2", nodeName))
	sliceClient := client.For[*discoveryv1.EndpointSlice](cs.Client, "default")
	cur, err := sliceClient.Get(ctx, slice.Metadata.Name)
	if err != nil {
		t.Fatal(err)
	}
	slice.Metadata.ResourceVersion = cur.Metadata.ResourceVersion
	if _, err := sliceClient.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	a = await("200 once an endpoint is on this node", func(a hcAnswer, err error) bool {
		return err == nil && a.code == http.StatusOK
	})
	if a.body.LocalEndpoints != 1 || !a.body.ServiceProxyHealthy || a.weight != "1" {
		t.Errorf("with one local endpoint: %+v", a)
	}

	if _, err := client.For[*corev1.Service](cs.Client, "default").Delete(ctx, "lb", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await("the port closed with the Service", func(_ hcAnswer, err error) bool { return errors.Is(err, syscall.ECONNREFUSED) })
}
