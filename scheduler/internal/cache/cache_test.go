package cache

import (
	"fmt"
	"sync"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/scheduler/internal/framework"
)

func node(name string) *corev1.Node {
	return &corev1.Node{Metadata: &metav1.ObjectMeta{Name: name}}
}

func pod(name, nodeName string, port int32) *corev1.Pod {
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: &corev1.PodSpec{NodeName: nodeName, Containers: []*corev1.Container{{
			Name: "c", Ports: []*corev1.ContainerPort{{ContainerPort: 80, HostPort: port, Protocol: "TCP"}},
		}}},
	}
}

// The scheduler updates its snapshot and reads it while informers change
// the cache: a snapshot must share nothing the cache goes on writing (the
// race detector is the judge), and once every assumption is confirmed or
// forgotten the snapshot holds exactly the bound pods.
func TestSnapshotsWhileTheCacheChanges(t *testing.T) {
	c := New()
	const nodes, podsPerWriter, writers = 4, 200, 4
	for i := range nodes {
		c.SetNode(node(fmt.Sprintf("n%d", i)))
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range podsPerWriter {
				name := fmt.Sprintf("p-%d-%d", w, i)
				n := fmt.Sprintf("n%d", i%nodes)
				p := pod(name, n, int32(30000+w*podsPerWriter+i))
				c.Assume(framework.NewPodInfo(p), n)
				switch i % 3 {
				case 0: // bound: the informer confirms it
					c.SetPod(p)
				case 1: // the bind failed
					c.Forget("default/" + name)
				case 2: // bound, then deleted
					c.SetPod(p)
					c.RemovePod("default/" + name)
				}
			}
		}()
	}
	stop := make(chan struct{})
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		s := NewSnapshot()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.Update(s)
			for _, n := range s.List {
				_ = n.Requested.MilliCPU
				for hp := range n.UsedPorts {
					_ = hp
				}
				_ = len(n.Pods)
			}
		}
	}()
	wg.Wait()
	close(stop)
	reader.Wait()

	s := NewSnapshot()
	c.Update(s)
	total := 0
	for _, n := range s.List {
		total += len(n.Pods)
		if len(n.UsedPorts) != len(n.Pods) {
			t.Errorf("%s: %d pods hold %d host ports", n.Name(), len(n.Pods), len(n.UsedPorts))
		}
	}
	want := 0
	for i := range podsPerWriter {
		if i%3 == 0 {
			want++
		}
	}
	if total != want*writers {
		t.Fatalf("snapshot holds %d pods, want %d", total, want*writers)
	}
	for w := range writers {
		if c.IsAssumed(fmt.Sprintf("default/p-%d-0", w)) {
			t.Fatal("a confirmed pod is still assumed")
		}
	}
}
