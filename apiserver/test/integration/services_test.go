package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/apiserver/app"
	corev1 "skiff.dev/proto/api/core/v1"
	discoveryv1 "skiff.dev/proto/api/discovery/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

func fastEndpoints(o *app.Options) {
	o.EndpointReconcileInterval, o.EndpointLeaseTTL = 200*time.Millisecond, 2*time.Second
}

func service(name string, mutate ...func(*corev1.ServiceSpec)) *corev1.Service {
	s := &corev1.Service{Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: &corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []*corev1.ServicePort{{Name: "http", Port: 80}}}}
	for _, m := range mutate {
		m(s.Spec)
	}
	return s
}

// etcdKeys are the keys under /registry/<prefix>, relative to /registry/.
func etcdKeys(t testing.TB, cli *clientv3.Client, prefix string) map[string]string {
	t.Helper()
	resp, err := cli.Get(ctxT(t), "/registry/"+prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), "/registry/")] = string(kv.Value)
	}
	return out
}

func kubernetesEndpoints(t testing.TB, s *apitest.Server) (ips []string, slice []string) {
	t.Helper()
	if ep, err := get(t, s, &corev1.Endpoints{}, "default", "kubernetes"); err == nil {
		for _, ss := range ep.Subsets {
			for _, a := range ss.Addresses {
				ips = append(ips, a.Ip)
			}
		}
	}
	if es, err := get(t, s, &discoveryv1.EndpointSlice{}, "default", "kubernetes"); err == nil {
		for _, e := range es.Endpoints {
			slice = append(slice, e.Addresses...)
		}
	}
	return ips, slice
}

func TestServicesGetClusterIPsNodePortsAndTheKubernetesService(t *testing.T) {
	s := apitest.Start(t, fastEndpoints)
	secure := s.Server.Addr().String()
	securePort := secure[strings.LastIndex(secure, ":")+1:]

	web := mustCreate(t, s, service("web", func(sp *corev1.ServiceSpec) { sp.Type = "NodePort" }))
	ip := netip.MustParseAddr(web.Spec.ClusterIP)
	if !netip.MustParsePrefix("10.96.0.0/12").Contains(ip) || ip == netip.MustParseAddr("10.96.0.1") {
		t.Fatalf("clusterIP %s", ip)
	}
	if np := web.Spec.Ports[0].NodePort; np < 30000 || np > 32767 {
		t.Fatalf("nodePort %d", np)
	}
	_, err := create(ctxT(t), s.API, service("thief", func(sp *corev1.ServiceSpec) { sp.ClusterIP = web.Spec.ClusterIP }))
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "failed to allocate IP "+web.Spec.ClusterIP+": provided IP is already allocated") {
		t.Fatalf("taken IP: %v", err)
	}

	// The kubernetes Service, its Endpoints and its EndpointSlice.
	var k *corev1.Service
	waitFor(t, func() bool {
		k, err = get(t, s, &corev1.Service{}, "default", "kubernetes")
		return err == nil
	})
	p := k.Spec.Ports
	if k.Spec.ClusterIP != "10.96.0.1" || k.Spec.Type != "ClusterIP" || len(p) != 1 || p[0].Name != "https" || p[0].Port != 443 ||
		p[0].Protocol != "TCP" || fmt.Sprint(p[0].TargetPort.GetIntVal()) != securePort || k.Metadata.Labels["component"] != "apiserver" {
		t.Fatalf("kubernetes Service: %v", k)
	}
	waitFor(t, func() bool {
		eps, slice := kubernetesEndpoints(t, s)
		return slices.Equal(eps, []string{"192.0.2.1"}) && slices.Equal(slice, []string{"192.0.2.1"})
	})
	ep, _ := get(t, s, &corev1.Endpoints{}, "default", "kubernetes")
	if ep.Metadata.Labels["endpointslice.kubernetes.io/skip-mirror"] != "true" || fmt.Sprint(ep.Subsets[0].Ports[0].Port) != securePort || ep.Subsets[0].Ports[0].Name != "https" {
		t.Fatalf("Endpoints: %v", ep)
	}
	es, _ := get(t, s, &discoveryv1.EndpointSlice{}, "default", "kubernetes")
	if es.AddressType != "IPv4" || es.Metadata.Labels["kubernetes.io/service-name"] != "kubernetes" || !es.Endpoints[0].Conditions.GetReady() ||
		fmt.Sprint(es.Ports[0].GetPort()) != securePort || es.Ports[0].GetName() != "https" {
		t.Fatalf("EndpointSlice: %v", es)
	}

	// In etcd: one key per allocation, naming its Service; one lease.
	cli := s.EtcdClient()
	keys := etcdKeys(t, cli, "ranges/")
	if !strings.HasPrefix(keys["ranges/serviceips/10.96.0.1"], "default/kubernetes/") ||
		!strings.HasPrefix(keys["ranges/serviceips/"+web.Spec.ClusterIP], "default/web/"+web.Metadata.Uid) ||
		!strings.HasPrefix(keys[fmt.Sprintf("ranges/servicenodeports/%d", web.Spec.Ports[0].NodePort)], "default/web/") || len(keys) != 3 {
		t.Fatalf("allocation keys: %v", keys)
	}
	if l := etcdKeys(t, cli, "masterleases/"); l["masterleases/192.0.2.1"] != "192.0.2.1" || len(l) != 1 {
		t.Fatalf("leases: %v", l)
	}

	// Metrics on the apiserver's registry.
	waitFor(t, func() bool {
		m := scrape(t, s)
		return strings.Contains(m, `kube_apiserver_clusterip_allocator_allocated_ips{cidr="10.96.0.0/12"} 2`) &&
			strings.Contains(m, `kube_apiserver_nodeport_allocator_allocated_ports 1`) &&
			strings.Contains(m, `kube_apiserver_clusterip_allocator_allocation_total{cidr="10.96.0.0/12",scope="dynamic"} 1`) &&
			strings.Contains(m, `kube_apiserver_clusterip_allocator_allocation_errors_total{cidr="10.96.0.0/12",scope="static"} 1`)
	})

	// Deleted, the kubernetes Service comes back, at the same address.
	if _, err := s.API.Delete(ctxT(t), &apipb.DeleteRequest{Resource: kindOf(t, k).Ref(), Namespace: "default", Name: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		k, err = get(t, s, &corev1.Service{}, "default", "kubernetes")
		return err == nil && k.Spec.ClusterIP == "10.96.0.1"
	})
}

func scrape(t testing.TB, s *apitest.Server) string {
	t.Helper()
	resp, err := http.Get(s.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Two apiservers on one etcd, 200 Services created at once through both,
// in a range with room for 253: no address is given twice, none is lost.
func TestTwoApiserversNeverGiveOneIPTwice(t *testing.T) {
	narrow := func(o *app.Options) { o.ServiceClusterIPRange = "10.0.0.0/24" }
	a := apitest.Start(t, fastEndpoints, narrow)
	ep, err := os.ReadFile(filepath.Join(a.Opts.DataDir, "etcd", "endpoint"))
	if err != nil {
		t.Fatal(err)
	}
	b := apitest.Start(t, fastEndpoints, narrow, func(o *app.Options) {
		o.EtcdServers = []string{strings.TrimSpace(string(ep))}
		o.AdvertiseAddress = "192.0.2.2"
	})
	// Both listed in the kubernetes Service's endpoints.
	waitFor(t, func() bool {
		eps, slice := kubernetesEndpoints(t, a)
		return slices.Equal(eps, []string{"192.0.2.1", "192.0.2.2"}) && slices.Equal(slice, eps)
	})
	// Then quiet: renewing a lease writes nothing, and the two apiservers
	// (on different secure ports here) do not rewrite the endpoints in turn.
	cli := a.EtcdClient()
	revision := func() int64 {
		r, err := cli.Get(ctxT(t), "/registry/masterleases/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	time.Sleep(500 * time.Millisecond) // each apiserver's first pass is done
	before := revision()
	time.Sleep(time.Second) // five rounds each
	if after := revision(); after != before {
		t.Fatalf("etcd went from revision %d to %d while nothing changed", before, after)
	}

	const n = 200
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var mu sync.Mutex
	owner := map[string]string{}
	var failures []string
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			srv := []*apitest.Server{a, b}[i%2]
			name := fmt.Sprintf("s%03d", i)
			out, err := create(ctxT(t), srv.API, service(name))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, name+": "+err.Error())
				return
			}
			got := unpack(t, out, &corev1.Service{})
			if prev, dup := owner[got.Spec.ClusterIP]; dup {
				failures = append(failures, fmt.Sprintf("%s given to %s and %s", got.Spec.ClusterIP, prev, name))
			}
			owner[got.Spec.ClusterIP] = name
		}()
	}
	wg.Wait()
	t.Logf("%d creates through two apiservers in %v", n, time.Since(start))
	if len(failures) > 0 {
		t.Fatalf("%d failures: %v", len(failures), failures[:min(5, len(failures))])
	}
	keys := etcdKeys(t, cli, "ranges/serviceips/")
	if len(keys) != n+1 { // and the kubernetes Service's
		t.Fatalf("%d IP keys for %d Services", len(keys), n+1)
	}
	for ip, name := range owner {
		if !strings.HasPrefix(keys["ranges/serviceips/"+ip], "default/"+name+"/") {
			t.Fatalf("%s: key %q", ip, keys["ranges/serviceips/"+ip])
		}
	}

	// A stopped apiserver leaves the endpoints at once: it revokes its lease.
	b.Stop()
	waitFor(t, func() bool {
		eps, slice := kubernetesEndpoints(t, a)
		return slices.Equal(eps, []string{"192.0.2.1"}) && slices.Equal(slice, eps)
	})
}

// One that dies leaves them when its lease expires: here a lease nobody
// renews, as a killed apiserver's.
func TestADeadApiserversAddressGoesWithItsLease(t *testing.T) {
	s := apitest.Start(t, fastEndpoints)
	cli := s.EtcdClient()
	ctx := ctxT(t)
	lease, err := cli.Grant(ctx, 1) // etcd rounds this up to its minimum, about 2s
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/registry/masterleases/192.0.2.99", "192.0.2.99", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		eps, slice := kubernetesEndpoints(t, s)
		return slices.Equal(eps, []string{"192.0.2.1", "192.0.2.99"}) && slices.Equal(slice, eps)
	})
	waitFor(t, func() bool {
		eps, slice := kubernetesEndpoints(t, s)
		return slices.Equal(eps, []string{"192.0.2.1"}) && slices.Equal(slice, eps)
	})
}
