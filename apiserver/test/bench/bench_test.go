// Package bench measures skiff-apiserver against the limit under it: raw etcd
// writes on the same embedded etcd, in the same run. Run with `make bench`;
// every figure is printed with b.ReportMetric.
package bench

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/apiserver/internal/storage"
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

// BenchmarkCreateVsRawEtcd prints raw etcd single-key create transactions per
// second (the limit) and apiserver pod Creates per second at concurrency 1
// and 64, and their ratio.
func BenchmarkCreateVsRawEtcd(b *testing.B) {
	s := apitest.Start(b)
	cli := s.EtcdClient()
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

// BenchmarkWatchResume1000 prints what it costs 1,000 kubelet-like watchers
// (each watching its node's pods) to resume at once after an apiserver
// restart, each from a revision before the new cache's window and before
// its own pod was created: the time until every watcher has received its
// pod, the etcd replays the cache made, and the heap it took (peak
// HeapInuse above the idle heap, and bytes allocated). Then the same
// resumptions as one etcd replay per watcher, as the cache made them before
// (naive-*), without even decoding or sending the events.
func BenchmarkWatchResume1000(b *testing.B) {
	s := apitest.Start(b)
	ctx := context.Background()
	const watchers, nodes = 1000, 500
	if err := createNodePods(ctx, s, nodes, 16); err != nil {
		b.Fatal(err)
	}
	list, err := s.API.List(ctx, &apipb.ListRequest{Resource: podKind.Ref(), Namespace: "default"})
	if err != nil {
		b.Fatal(err)
	}
	type pod struct {
		node string
		rev  int64
	}
	var pods []pod
	for _, item := range list.Items {
		var p corev1.Pod
		if err := proto.Unmarshal(item.Value, &p); err != nil {
			b.Fatal(err)
		}
		rv, _ := strconv.ParseInt(p.GetMetadata().GetResourceVersion(), 10, 64)
		pods = append(pods, pod{p.GetSpec().GetNodeName(), rv})
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].rev < pods[j].rev })
	// Two watchers a node, each from a little before its pod was created:
	// together they reach back over the whole history.
	node := make([]string, watchers)
	from := make([]int64, watchers)
	for i := range watchers {
		p := pods[i%len(pods)]
		node[i], from[i] = p.node, max(1, p.rev-1-int64(i*7919%50))
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		s.Restart()
		b.StartTimer()
		var peak atomic.Uint64
		heap := sampleHeap(&peak)
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, watchers)
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		for i := range watchers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stream, err := s.API.Watch(wctx, &apipb.WatchRequest{
					Resource: podKind.Ref(), FieldSelector: "spec.nodeName=" + node[i],
					ResourceVersion: strconv.FormatInt(from[i], 10),
				})
				if err == nil {
					_, err = stream.Recv()
				}
				if err != nil {
					errs <- fmt.Errorf("watch of %s from %d: %w", node[i], from[i], err)
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		cancel()
		base, alloc := heap()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(elapsed.Milliseconds()), "resume-ms")
		b.ReportMetric(gatherCounter(b, s, "apiserver_watch_cache_replays_total", "pods"), "etcd-replays")
		b.ReportMetric(float64(peak.Load()-min(peak.Load(), base))/(1<<20), "peak-heap-MB")
		b.ReportMetric(float64(alloc)/(1<<20), "alloc-MB")

		// The same resumptions, one etcd replay each, straight from etcd.
		b.StopTimer()
		st := storage.New(s.EtcdClient(), s.Opts.EtcdPrefix, nil)
		to, err := st.CurrentRevision(ctx)
		if err != nil {
			b.Fatal(err)
		}
		peak.Store(0)
		heap = sampleHeap(&peak)
		start = time.Now()
		var failed atomic.Value
		var events atomic.Int64
		for i := range watchers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				evs, err := st.Replay(ctx, "pods/", from[i], to)
				if err != nil {
					failed.CompareAndSwap(nil, err)
				}
				events.Add(int64(len(evs)))
			}()
		}
		wg.Wait()
		elapsed = time.Since(start)
		base, alloc = heap()
		if err, ok := failed.Load().(error); ok {
			b.Fatal(err)
		}
		b.ReportMetric(float64(elapsed.Milliseconds()), "naive-replay-ms")
		b.ReportMetric(watchers, "naive-etcd-replays")
		b.ReportMetric(float64(events.Load()), "naive-replayed-events")
		b.ReportMetric(float64(peak.Load()-min(peak.Load(), base))/(1<<20), "naive-peak-heap-MB")
		b.ReportMetric(float64(alloc)/(1<<20), "naive-alloc-MB")
		b.StartTimer()
	}
}

// createNodePods creates one pod on each of n nodes, from c workers.
func createNodePods(ctx context.Context, s *apitest.Server, n, c int) error {
	next := make(chan int)
	var failed atomic.Value
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				p := benchPod(fmt.Sprintf("node-pod-%05d", i))
				p.Spec.NodeName = fmt.Sprintf("node-%05d", i)
				a, _ := anypb.New(p)
				if _, err := s.API.Create(ctx, &apipb.CreateRequest{Resource: podKind.Ref(), Namespace: "default", Object: a}); err != nil {
					failed.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		return err
	}
	return nil
}

// sampleHeap records the peak HeapInuse in peak until the returned function
// is called; that returns the heap in use before sampling began and the
// bytes allocated since.
func sampleHeap(peak *atomic.Uint64) func() (base, alloc uint64) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, total := ms.HeapInuse, ms.TotalAlloc
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() (uint64, uint64) {
		close(stop)
		<-stopped
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return base, ms.TotalAlloc - total
	}
}

// gatherCounter reads one resource's counter from the apiserver's registry.
func gatherCounter(b *testing.B, s *apitest.Server, name, resource string) float64 {
	mfs, err := s.Server.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "resource" && l.GetValue() == resource {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
