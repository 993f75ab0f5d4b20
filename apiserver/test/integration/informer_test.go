package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/apiserver/apitest"
	"skiff.dev/client"
	"skiff.dev/client/config"
	"skiff.dev/client/informer"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/scheme"
)

// recorder counts what handlers saw, per object and resourceVersion.
type recorder struct {
	mu      sync.Mutex
	adds    map[string]int
	updates map[string]int // name@rv
	deletes map[string]int
}

func newRecorder() *recorder {
	return &recorder{adds: map[string]int{}, updates: map[string]int{}, deletes: map[string]int{}}
}

func (r *recorder) handler() informer.Handler {
	return informer.Handler{
		OnAdd: func(o scheme.Object) {
			r.mu.Lock()
			r.adds[o.GetMetadata().GetName()]++
			r.mu.Unlock()
		},
		OnUpdate: func(_, o scheme.Object) {
			r.mu.Lock()
			r.updates[o.GetMetadata().GetName()+"@"+o.GetMetadata().GetResourceVersion()]++
			r.mu.Unlock()
		},
		OnDelete: func(o scheme.Object) {
			r.mu.Lock()
			r.deletes[o.GetMetadata().GetName()]++
			r.mu.Unlock()
		},
	}
}

func compactAll(t *testing.T, s *apitest.Server) {
	ep, _ := os.ReadFile(filepath.Join(s.Opts.DataDir, "etcd", "endpoint"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{strings.TrimSpace(string(ep))}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	r, err := cli.Get(ctxT(t), "/registry/x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctxT(t), r.Header.Revision); err != nil {
		t.Fatal(err)
	}
}

// TestInformerSurvivesRestartAndExpiry: handlers see every create, update and
// delete exactly once, across an apiserver restart (the watch resumes) and a
// compaction that expires the informer's resourceVersion (it relists).
func TestInformerSurvivesRestartAndExpiry(t *testing.T) {
	s := apitest.Start(t)
	cfg, err := config.Load(s.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	r, _ := cfg.Resolve("")
	conn, err := r.Dial() // outlives the restarts: gRPC reconnects to the same port
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cms := client.For[*corev1.ConfigMap](client.New(conn), "default")
	inf := informer.New(cms.Dynamic(), informer.Options{Indexers: map[string]informer.IndexFunc{
		"team": func(o scheme.Object) []string { return []string{o.GetMetadata().GetLabels()["team"]} },
	}})
	rec := newRecorder()
	inf.AddHandler(rec.handler())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go inf.Run(ctx)
	if !inf.WaitForSync(ctxT(t)) {
		t.Fatal("informer never synced")
	}

	updates := map[string]bool{}
	write := func(prefix string, n int) {
		for i := range n {
			cm := configMap("default", fmt.Sprintf("%s-%d", prefix, i), map[string]string{"v": "1"})
			cm.Metadata.Labels = map[string]string{"team": prefix}
			created := mustCreate(t, s, cm)
			created.Data["v"] = "2"
			a, err := update(ctxT(t), s.API, created)
			if err != nil {
				t.Fatal(err)
			}
			u := unpack(t, a, &corev1.ConfigMap{})
			updates[u.Metadata.Name+"@"+u.Metadata.ResourceVersion] = true
		}
	}
	settle := func(want int) {
		waitFor(t, func() bool { return len(inf.List()) == want })
	}
	write("a", 10)
	settle(10)

	s.Restart()
	write("b", 10)
	settle(20)

	// Expire the informer's resourceVersion: compact, restart (a fresh watch
	// cache cannot resume from before it), and change things meanwhile.
	compactAll(t, s)
	s.Restart()
	// Writes go through the fresh connection; the informer's reconnects on its own.
	fresh := client.For[*corev1.ConfigMap](client.New(s.Conn), "default")
	for i := range 5 {
		if _, err := fresh.Delete(ctxT(t), fmt.Sprintf("a-%d", i), client.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	write("c", 5)
	// Converged: the informer holds exactly what the server has.
	converged := func() bool {
		live, err := fresh.List(ctxT(t), client.ListOptions{})
		if err != nil || len(live.Items) != len(inf.List()) {
			return false
		}
		for _, cm := range live.Items {
			got, ok := inf.Get("default/" + cm.Metadata.Name)
			if !ok || got.GetMetadata().GetResourceVersion() != cm.Metadata.ResourceVersion {
				return false
			}
		}
		return true
	}
	waitFor(t, converged)
	// The store is there; each handler gets its notifications on its own
	// goroutine, so wait for the last ones to reach it.
	waitFor(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for i := range 5 {
			if rec.adds[fmt.Sprintf("c-%d", i)] == 0 || rec.deletes[fmt.Sprintf("a-%d", i)] == 0 {
				return false
			}
		}
		return true
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, p := range []string{"a", "b", "c"} {
		n := 10
		if p == "c" {
			n = 5
		}
		for i := range n {
			name := fmt.Sprintf("%s-%d", p, i)
			if rec.adds[name] != 1 {
				t.Errorf("%s added %d times", name, rec.adds[name])
			}
		}
	}
	// An update is delivered at most once. When a relist happens (after the
	// compaction) a create and its update made meanwhile arrive as one add
	// of the latest state, as client-go's informers do; nothing is lost
	// from the final state and nothing is delivered twice.
	for k, n := range rec.updates {
		if n != 1 {
			t.Errorf("update %s delivered %d times", k, n)
		}
		if !updates[k] {
			t.Errorf("handlers saw an update that never happened: %s", k)
		}
	}
	for i := range 10 {
		name := fmt.Sprintf("a-%d", i)
		if want := map[bool]int{true: 1, false: 0}[i < 5]; rec.deletes[name] != want {
			t.Errorf("%s deleted %d times, want %d", name, rec.deletes[name], want)
		}
	}
	if got := len(inf.ByIndex("team", "b")); got != 10 {
		t.Errorf("index team=b has %d objects", got)
	}
}
