package record

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/client"
	"skiff.dev/client/fake"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// clock is an injectable clock that moves a microsecond on every reading,
// so events recorded in a row get distinct names, as on a real clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Microsecond)
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	t     *testing.T
	cs    *fake.Clientset
	b     *Broadcaster
	reg   *prometheus.Registry
	clock *clock
}

// start runs a broadcaster against a fake apiserver; o's Now and
// Registerer are filled in.
func start(t *testing.T, o Options) *env {
	t.Helper()
	cs := fake.NewClientset()
	t.Cleanup(cs.Close)
	e := &env{t: t, cs: cs, reg: prometheus.NewRegistry(), clock: newClock()}
	o.Now, o.Registerer = e.clock.now, e.reg
	if o.RetryDelay == 0 {
		o.RetryDelay = time.Millisecond
	}
	e.b = NewBroadcaster(cs.Client, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := e.b.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// metric is the value of a counter on the registry, 0 if absent.
func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// handled is how many queued events Run has finished with.
func (e *env) handled() int {
	return int(e.metric("skiff_events_written_total", "operation", "create") + e.metric("skiff_events_written_total", "operation", "patch") +
		e.metric("skiff_events_dropped_total", "reason", "spam") + e.metric("skiff_events_dropped_total", "reason", "write_failed"))
}

// waitHandled polls until Run has finished with n events.
func (e *env) waitHandled(n int) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.handled() < n {
		if time.Now().After(deadline) {
			e.t.Fatalf("Run finished with %d events, want %d", e.handled(), n)
		}
		time.Sleep(time.Millisecond)
	}
	if got := e.handled(); got != n {
		e.t.Fatalf("Run finished with %d events, want %d", got, n)
	}
}

// events lists the Events in ns, oldest name first.
func (e *env) events(ns string) []*corev1.Event {
	e.t.Helper()
	l, err := client.For[*corev1.Event](e.cs.Client, ns).List(context.Background(), client.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].GetMetadata().GetName() < l.Items[j].GetMetadata().GetName() })
	return l.Items
}

func (e *env) count(verb string) int {
	n := 0
	for _, a := range e.cs.Actions() {
		if a.Verb == verb && a.Resource == "events" {
			n++
		}
	}
	return n
}

func pod(name string) *corev1.Pod {
	return &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: "team-a", Name: name, Uid: "uid-" + name, ResourceVersion: "7"}}
}

func TestSameEventTwiceIsCountedOnOneEvent(t *testing.T) {
	e := start(t, Options{Host: "node-1"})
	rec := e.b.NewRecorder("default-scheduler")
	p := pod("web-0")

	first := e.clock.t.Add(time.Microsecond)
	rec.Event(p, Normal, "Scheduled", "Successfully assigned team-a/web-0 to node-1")
	e.waitHandled(1)
	e.clock.advance(3 * time.Second)
	rec.Eventf(p, Normal, "Scheduled", "Successfully assigned %s/%s to %s", "team-a", "web-0", "node-1")
	e.waitHandled(2)

	evs := e.events("team-a")
	if len(evs) != 1 {
		t.Fatalf("%d Events, want 1: %v", len(evs), evs)
	}
	ev := evs[0]
	if want := fmt.Sprintf("web-0.%x", first.UnixNano()); ev.GetMetadata().GetName() != want {
		t.Errorf("name %q, want %q", ev.GetMetadata().GetName(), want)
	}
	if ev.GetCount() != 2 {
		t.Errorf("count %d, want 2", ev.GetCount())
	}
	if got, want := ev.GetFirstTimestamp().AsTime(), first.Truncate(time.Second); !got.Equal(want) {
		t.Errorf("firstTimestamp %v, want %v", got, want)
	}
	if got, want := ev.GetLastTimestamp().AsTime(), first.Add(3*time.Second).Truncate(time.Second); !got.Equal(want) {
		t.Errorf("lastTimestamp %v, want %v", got, want)
	}
	o := ev.GetInvolvedObject()
	if o.GetKind() != "Pod" || o.GetApiVersion() != "v1" || o.GetNamespace() != "team-a" || o.GetName() != "web-0" ||
		o.GetUid() != "uid-web-0" || o.GetResourceVersion() != "7" {
		t.Errorf("involvedObject %v", o)
	}
	if ev.GetType() != Normal || ev.GetReason() != "Scheduled" || ev.GetMessage() != "Successfully assigned team-a/web-0 to node-1" {
		t.Errorf("type %q reason %q message %q", ev.GetType(), ev.GetReason(), ev.GetMessage())
	}
	if ev.GetSource().GetComponent() != "default-scheduler" || ev.GetSource().GetHost() != "node-1" ||
		ev.GetReportingComponent() != "default-scheduler" || ev.GetReportingInstance() != "node-1" {
		t.Errorf("source %v reportingComponent %q reportingInstance %q", ev.GetSource(), ev.GetReportingComponent(), ev.GetReportingInstance())
	}
	if c, p := e.count("create"), e.count("patch"); c != 1 || p != 1 {
		t.Errorf("%d creates and %d patches, want one of each", c, p)
	}
	if got := e.metric("skiff_events_recorded_total", "type", Normal); got != 2 {
		t.Errorf("skiff_events_recorded_total{type=Normal} = %v, want 2", got)
	}
}

func TestDeletedEventIsCreatedAgain(t *testing.T) {
	e := start(t, Options{})
	rec := e.b.NewRecorder("deployment-controller")
	p := pod("web-0")
	rec.Event(p, Warning, "BackOff", "Back-off restarting failed container")
	e.waitHandled(1)
	name := e.events("team-a")[0].GetMetadata().GetName()
	// Events expire (TTL) while the recorder still remembers them.
	if _, err := client.For[*corev1.Event](e.cs.Client, "team-a").Delete(context.Background(), name, client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.Event(p, Warning, "BackOff", "Back-off restarting failed container")
	e.waitHandled(2)
	evs := e.events("team-a")
	if len(evs) != 1 || evs[0].GetMetadata().GetName() != name || evs[0].GetCount() != 2 {
		t.Fatalf("Events %v, want %s again with count 2", evs, name)
	}
}

func TestBurstIsRateLimitedPerObject(t *testing.T) {
	e := start(t, Options{})
	rec := e.b.NewRecorder("kubelet")
	// Distinct reasons: neither counted nor aggregated, so each is a write.
	for i := range 30 {
		rec.Event(pod("crashing"), Warning, fmt.Sprintf("Reason%d", i), "boom")
	}
	rec.Event(pod("healthy"), Normal, "Started", "Started container")
	e.waitHandled(31)

	var crashing, healthy int
	for _, ev := range e.events("team-a") {
		switch ev.GetInvolvedObject().GetName() {
		case "crashing":
			crashing++
		case "healthy":
			healthy++
		}
	}
	if crashing != 25 || healthy != 1 {
		t.Errorf("%d Events about crashing and %d about healthy, want 25 and 1", crashing, healthy)
	}
	if got := e.metric("skiff_events_dropped_total", "reason", "spam"); got != 5 {
		t.Errorf("skiff_events_dropped_total{reason=spam} = %v, want 5", got)
	}

	// The bucket refills one event every five minutes.
	e.clock.advance(5 * time.Minute)
	rec.Event(pod("crashing"), Warning, "Reason30", "boom")
	rec.Event(pod("crashing"), Warning, "Reason31", "boom")
	e.waitHandled(33)
	if got := len(e.events("team-a")); got != 27 {
		t.Errorf("%d Events after five minutes, want 27", got)
	}
}

func TestRepeatedEventBurstCountsDroppedOccurrences(t *testing.T) {
	e := start(t, Options{})
	rec := e.b.NewRecorder("kubelet")
	for range 30 {
		rec.Event(pod("crashing"), Warning, "BackOff", "Back-off restarting failed container")
	}
	e.waitHandled(30)
	evs := e.events("team-a")
	if len(evs) != 1 || evs[0].GetCount() != 25 {
		t.Fatalf("Events %v, want one with count 25", evs)
	}
	// As upstream, occurrences the spam filter dropped still count once
	// the object may write again.
	e.clock.advance(5 * time.Minute)
	rec.Event(pod("crashing"), Warning, "BackOff", "Back-off restarting failed container")
	e.waitHandled(31)
	if evs := e.events("team-a"); len(evs) != 1 || evs[0].GetCount() != 31 {
		t.Fatalf("Events %v, want one with count 31", evs)
	}
}

func TestSimilarEventsAreAggregated(t *testing.T) {
	e := start(t, Options{})
	rec := e.b.NewRecorder("default-scheduler")
	p := pod("web-0")
	for i := range 10 {
		rec.Eventf(p, Warning, "FailedScheduling", "0/%d nodes are available", i)
	}
	e.waitHandled(10)
	evs := e.events("team-a")
	if len(evs) != 10 {
		t.Fatalf("%d Events, want 9 single ones and an aggregate", len(evs))
	}
	var combined []*corev1.Event
	for _, ev := range evs {
		if strings.HasPrefix(ev.GetMessage(), "(combined from similar events): ") {
			combined = append(combined, ev)
		}
	}
	if len(combined) != 1 || combined[0].GetMessage() != "(combined from similar events): 0/9 nodes are available" ||
		combined[0].GetCount() != 1 || combined[0].GetReason() != "FailedScheduling" || combined[0].GetType() != Warning {
		t.Fatalf("aggregate Events %v", combined)
	}

	// Further similar events bump the aggregate, which carries the latest message.
	rec.Event(p, Warning, "FailedScheduling", "0/10 nodes are available")
	e.waitHandled(11)
	evs = e.events("team-a")
	if len(evs) != 10 {
		t.Fatalf("%d Events, want still 10", len(evs))
	}
	for _, ev := range evs {
		if ev.GetMetadata().GetName() == combined[0].GetMetadata().GetName() {
			if ev.GetCount() != 2 || ev.GetMessage() != "(combined from similar events): 0/10 nodes are available" {
				t.Errorf("aggregate count %d message %q, want 2 and the latest message", ev.GetCount(), ev.GetMessage())
			}
		}
	}
	if got := e.metric("skiff_events_aggregated_total"); got != 2 {
		t.Errorf("skiff_events_aggregated_total = %v, want 2", got)
	}

	// Ten minutes after the last similar event the group starts afresh.
	e.clock.advance(11 * time.Minute)
	rec.Event(p, Warning, "FailedScheduling", "0/11 nodes are available")
	e.waitHandled(12)
	if got := len(e.events("team-a")); got != 11 {
		t.Errorf("%d Events, want 11: a new single one", got)
	}
}

func TestClusterScopedObjectEventsGoToDefault(t *testing.T) {
	e := start(t, Options{})
	node := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "node-1", Uid: "uid-n"}}
	e.b.NewRecorder("node-controller").Event(node, Normal, "RegisteredNode", "Node node-1 event: Registered Node node-1 in Controller")
	e.waitHandled(1)
	evs := e.events("default")
	if len(evs) != 1 {
		t.Fatalf("%d Events in default, want 1", len(evs))
	}
	if o := evs[0].GetInvolvedObject(); o.GetKind() != "Node" || o.GetApiVersion() != "v1" || o.GetNamespace() != "" || o.GetName() != "node-1" {
		t.Errorf("involvedObject %v", o)
	}
}

// blockEvents makes every Event write wait until the returned func is
// called; entered receives each blocked request.
func blockEvents(cs *fake.Clientset) (entered <-chan fake.Action, release func()) {
	in := make(chan fake.Action, 100)
	gate := make(chan struct{})
	cs.PrependReactor("*", "events", func(a fake.Action) (bool, scheme.Object, error) {
		if a.Verb != "create" && a.Verb != "patch" {
			return false, nil, nil
		}
		in <- a
		<-gate
		return false, nil, nil
	})
	var once sync.Once
	return in, func() { once.Do(func() { close(gate) }) }
}

func TestRecordingNeverBlocksOnASlowAPIServer(t *testing.T) {
	e := start(t, Options{QueueSize: 5})
	entered, release := blockEvents(e.cs)
	defer release()
	rec := e.b.NewRecorder("replicaset-controller")

	rec.Event(pod("p0"), Normal, "SuccessfulCreate", "Created pod: p0")
	<-entered // Run is now stuck writing p0

	returned := make(chan struct{})
	go func() {
		defer close(returned)
		for i := 1; i <= 10; i++ {
			rec.Event(pod(fmt.Sprintf("p%d", i)), Normal, "SuccessfulCreate", "Created pod")
		}
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Event blocked while the apiserver hung")
	}
	if got := e.metric("skiff_events_dropped_total", "reason", "queue_full"); got != 5 {
		t.Errorf("skiff_events_dropped_total{reason=queue_full} = %v, want 5", got)
	}
	release()
	e.waitHandled(6)
	if got := len(e.events("team-a")); got != 6 {
		t.Errorf("%d Events, want the 6 that were queued", got)
	}
}

func TestUnavailableWritesAreRetriedThenDropped(t *testing.T) {
	e := start(t, Options{})
	var mu sync.Mutex
	down := 3
	e.cs.PrependReactor("create", "events", func(fake.Action) (bool, scheme.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if down > 0 {
			down--
			return true, nil, apierrors.NewUnavailable("etcd is down")
		}
		return false, nil, nil
	})
	rec := e.b.NewRecorder("job-controller")
	rec.Event(pod("p"), Normal, "Completed", "Job completed")
	e.waitHandled(1)
	if got := len(e.events("team-a")); got != 1 || e.count("create") != 4 {
		t.Errorf("%d Events after %d creates, want 1 after 4", got, e.count("create"))
	}

	// Down for good: given up after maxTries.
	mu.Lock()
	down = 1000
	mu.Unlock()
	e.cs.ClearActions()
	rec.Event(pod("q"), Normal, "Completed", "Job completed")
	e.waitHandled(2)
	if got := e.count("create"); got != maxTries {
		t.Errorf("%d creates, want %d", got, maxTries)
	}
	if got := e.metric("skiff_events_dropped_total", "reason", "write_failed"); got != 1 {
		t.Errorf("skiff_events_dropped_total{reason=write_failed} = %v, want 1", got)
	}
}

func TestRejectedWritesAreNotRetried(t *testing.T) {
	e := start(t, Options{})
	e.cs.PrependReactor("create", "events", func(a fake.Action) (bool, scheme.Object, error) {
		return true, nil, apierrors.NewForbidden("events", a.Name, "namespace team-a is terminating")
	})
	e.b.NewRecorder("job-controller").Event(pod("p"), Normal, "Completed", "Job completed")
	e.waitHandled(1)
	if got := e.count("create"); got != 1 {
		t.Errorf("%d creates, want 1", got)
	}
}

func TestInvalidEventsAreNotQueued(t *testing.T) {
	e := start(t, Options{})
	rec := e.b.NewRecorder("job-controller")
	rec.Event(pod("p"), "Error", "Completed", "not a type upstream accepts")
	rec.Event(nil, Normal, "Completed", "no object")
	if got := e.metric("skiff_events_dropped_total", "reason", "invalid"); got != 2 {
		t.Errorf("skiff_events_dropped_total{reason=invalid} = %v, want 2", got)
	}
	if got := e.metric("skiff_events_recorded_total", "type", "Error"); got != 0 {
		t.Errorf("an invalid event was queued")
	}
}

func TestBroadcastersShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := NewBroadcaster(nil, Options{Registerer: reg})
	b := NewBroadcaster(nil, Options{Registerer: reg})
	a.NewRecorder("a").Event(pod("p"), Normal, "R", "m")
	b.NewRecorder("b").Event(pod("p"), Warning, "R", "m")
	e := &env{t: t, reg: reg}
	if n, w := e.metric("skiff_events_recorded_total", "type", Normal), e.metric("skiff_events_recorded_total", "type", Warning); n != 1 || w != 1 {
		t.Errorf("recorded Normal %v Warning %v, want 1 and 1", n, w)
	}
}

func TestFakeRecorder(t *testing.T) {
	var r Recorder = NewFakeRecorder(2)
	r.Eventf(pod("p"), Warning, "FailedScheduling", "0/%d nodes are available", 3)
	r.Event(pod("p"), Normal, "Scheduled", "Successfully assigned team-a/p to node-1")
	fr := r.(*FakeRecorder)
	for _, want := range []string{"Warning FailedScheduling 0/3 nodes are available", "Normal Scheduled Successfully assigned team-a/p to node-1"} {
		if got := <-fr.Events; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	(&FakeRecorder{}).Event(pod("p"), Normal, "R", "a nil Events discards")
}
