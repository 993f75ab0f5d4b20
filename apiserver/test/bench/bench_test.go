// Package bench measures skiff-apiserver against the limit under it: raw etcd
// writes on the same embedded etcd, in the same run. Run with `make bench`;
// every figure is printed with b.ReportMetric.
package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/apiserver/apitest"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

var podKind, _ = scheme.ForResource("", "pods")

func benchPod(name string) *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{"app": "bench"}},
		Spec: &corev1.PodSpec{Containers: []*corev1.Container{{
			Name: "c", Image: "registry.local/pause:3.10",
			Resources: &corev1.ResourceRequirements{Requests: map[string]*metav1.Quantity{
				"cpu": {String_: "100m"}, "memory": {String_: "64Mi"},
			}},
		}}},
	}
}

// rate runs op from c goroutines for d and returns operations per second.
func rate(c int, d time.Duration, op func(worker, i int) error) (float64, error) {
	var n atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				if err := op(w, i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

func etcdClient(b *testing.B, s *apitest.Server) *clientv3.Client {
	ep, err := os.ReadFile(filepath.Join(s.Opts.DataDir, "etcd", "endpoint"))
	if err != nil {
		b.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{strings.TrimSpace(string(ep))}, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	return cli
}

// BenchmarkCreateVsRawEtcd prints raw etcd single-key create transactions per
// second (the limit) and apiserver pod Creates per second at concurrency 1
// and 64, and their ratio.
func BenchmarkCreateVsRawEtcd(b *testing.B) {
	s := apitest.Start(b)
	cli := etcdClient(b, s)
	ctx := context.Background()
	d := 3 * time.Second
	value := make([]byte, 900) // about a pod's stored size
	run := 0
	for range b.N {
		run++
		for _, c := range []int{1, 64} {
			// Alternate short phases so disk and neighbour noise on this VM
			// weighs on both sides of the ratio alike.
			var raw, api float64
			for round := range 4 {
				r, err := rate(c, d/4, func(w, i int) error {
					k := fmt.Sprintf("/bench/raw/%d/%d-%d-%d-%d", c, run, round, w, i)
					_, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", 0)).Then(clientv3.OpPut(k, string(value))).Commit()
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				a, err := rate(c, d/4, func(w, i int) error {
					a, err := anypb.New(benchPod(fmt.Sprintf("p-%d-%d-%d-%d-%d", c, run, round, w, i)))
					if err != nil {
						return err
					}
					_, err = s.API.Create(ctx, &apipb.CreateRequest{Resource: podKind.Ref(), Namespace: "default", Object: a})
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				raw += r / 4
				api += a / 4
			}
			b.ReportMetric(raw, fmt.Sprintf("etcd-puts/s@c%d", c))
			b.ReportMetric(api, fmt.Sprintf("creates/s@c%d", c))
			b.ReportMetric(100*api/raw, fmt.Sprintf("%%-of-etcd@c%d", c))
		}
	}
}

// BenchmarkList10kPods prints the latency of listing 10,000 pods from the
// watch cache through gRPC (p50, p99).
func BenchmarkList10kPods(b *testing.B) {
	s := apitest.Start(b)
	ctx := context.Background()
	if err := createPods(ctx, s, 10000, 64); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		for range 50 {
			start := time.Now()
			resp, err := s.API.List(ctx, &apipb.ListRequest{Resource: podKind.Ref(), Namespace: "default"})
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
			if len(resp.Items) < 10000 {
				b.Fatalf("listed %d pods", len(resp.Items))
			}
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// createPods creates n pods from c workers.
func createPods(ctx context.Context, s *apitest.Server, n, c int) error {
	next := make(chan int)
	errs := make(chan error, c)
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				a, _ := anypb.New(benchPod(fmt.Sprintf("p-%05d", i)))
				if _, err := s.API.Create(ctx, &apipb.CreateRequest{Resource: podKind.Ref(), Namespace: "default", Object: a}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}

// BenchmarkWatchFanout1000 prints events delivered per second to 1,000
// watchers of one resource over gRPC.
func BenchmarkWatchFanout1000(b *testing.B) {
	s := apitest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const watchers, events = 1000, 200
	ref := podKind.Ref()
	list, err := s.API.List(ctx, &apipb.ListRequest{Resource: ref})
	if err != nil {
		b.Fatal(err)
	}
	var received atomic.Int64
	var ready sync.WaitGroup
	for range watchers {
		stream, err := s.API.Watch(ctx, &apipb.WatchRequest{Resource: ref, Namespace: "default", ResourceVersion: list.ResourceVersion})
		if err != nil {
			b.Fatal(err)
		}
		ready.Add(1)
		go func() {
			ready.Done()
			for {
				if _, err := stream.Recv(); err != nil {
					return
				}
				received.Add(1)
			}
		}()
	}
	ready.Wait()
	b.ResetTimer()
	for range b.N {
		received.Store(0)
		start := time.Now()
		for i := range events {
			a, _ := anypb.New(benchPod(fmt.Sprintf("f-%d-%d", time.Now().UnixNano(), i)))
			if _, err := s.API.Create(ctx, &apipb.CreateRequest{Resource: ref, Namespace: "default", Object: a}); err != nil {
				b.Fatal(err)
			}
		}
		for received.Load() < watchers*events {
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("delivered %d of %d events", received.Load(), watchers*events)
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.ReportMetric(float64(received.Load())/time.Since(start).Seconds(), "events/s")
	}
}
