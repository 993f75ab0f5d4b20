package nodelifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/placement"
	"skiff.dev/proto/scheme"
)

// taintEvictionWorkers is upstream's UpdateWorkerSize.
const taintEvictionWorkers = 8

// scheduledEviction is a pod's pending deletion.
type scheduledEviction struct {
	node string
	at   time.Time
}

// taintEviction is upstream's taint eviction controller, level-triggered
// by node: each sync decides, for every pod on the node, from the node's
// NoExecute taints and the pod's tolerations, whether and when it goes.
// Pending deletions are kept only to cancel them (with an event) and to
// wake the node's sync when the earliest is due.
type taintEviction struct {
	client      *client.Client
	nodes       informers.Lister[*corev1.Node]
	podInformer *informer.Informer
	synced      []informer.Registration
	recorder    record.Recorder
	log         *slog.Logger
	now         func() time.Time
	metrics     *metrics
	queue       workqueue.Queue // node names

	mu        sync.Mutex
	scheduled map[string]scheduledEviction // by pod key
	// firstSeen is when a NoExecute taint without timeAdded was first
	// seen, by node and then key and effect: its tolerationSeconds count
	// from there.
	firstSeen map[string]map[string]time.Time
}

func newTaintEviction(cc controllers.Context, nodes *informers.Typed[*corev1.Node], pods *informers.Typed[*corev1.Pod],
	m *metrics, now func() time.Time) *taintEviction {
	t := &taintEviction{client: cc.Client, nodes: nodes.Lister(), podInformer: pods.Informer(),
		recorder: cc.EventRecorder(taintEvictionName), log: cc.Log().With("loop", taintEvictionName), now: now, metrics: m,
		queue:     workqueue.NewWithMetrics("noexec_taint_node", cc.Registerer),
		scheduled: map[string]scheduledEviction{}, firstSeen: map[string]map[string]time.Time{}}
	t.synced = append(t.synced,
		pods.Informer().AddHandler(informer.Handler{
			OnAdd:    func(o scheme.Object) { t.podUpdated(nil, o.(*corev1.Pod)) },
			OnUpdate: func(old, o scheme.Object) { t.podUpdated(old.(*corev1.Pod), o.(*corev1.Pod)) },
			OnDelete: func(o scheme.Object) { t.podUpdated(o.(*corev1.Pod), nil) },
		}),
		nodes.Informer().AddHandler(informer.Handler{
			OnAdd: func(o scheme.Object) { t.queue.Add(o.GetMetadata().GetName()) },
			OnUpdate: func(old, o scheme.Object) {
				if !noExecuteTaintsEqual(old.(*corev1.Node), o.(*corev1.Node)) {
					t.queue.Add(o.GetMetadata().GetName())
				}
			},
			OnDelete: func(o scheme.Object) { t.queue.Add(o.GetMetadata().GetName()) },
		}))
	return t
}

// podUpdated queues the pod's node when what decides its eviction changed:
// its node or its tolerations, or its being there at all.
func (t *taintEviction) podUpdated(old, pod *corev1.Pod) {
	if old != nil && pod != nil && old.GetSpec().GetNodeName() == pod.GetSpec().GetNodeName() &&
		tolerationsEqual(old.GetSpec().GetTolerations(), pod.GetSpec().GetTolerations()) {
		return
	}
	for _, p := range []*corev1.Pod{old, pod} {
		if n := p.GetSpec().GetNodeName(); n != "" {
			t.queue.Add(n)
		}
	}
}

func tolerationsEqual(a, b []*corev1.Toleration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func noExecuteTaints(n *corev1.Node) []*corev1.Taint {
	var out []*corev1.Taint
	for _, t := range n.GetSpec().GetTaints() {
		if t.GetEffect() == effectNoExecute {
			out = append(out, t)
		}
	}
	return out
}

func noExecuteTaintsEqual(a, b *corev1.Node) bool {
	ta, tb := noExecuteTaints(a), noExecuteTaints(b)
	if len(ta) != len(tb) {
		return false
	}
	for i := range ta {
		if !proto.Equal(ta[i], tb[i]) {
			return false
		}
	}
	return true
}

func (t *taintEviction) run(ctx context.Context) {
	t.log.Info("starting controller")
	defer t.log.Info("shutting down controller")
	controller.Run(ctx, t.queue, taintEvictionWorkers, t.sync, t.log)
}

// evictionTime is when a pod with tolerations goes from a node with
// taints (all NoExecute): now when a taint is not tolerated; else, for each
// taint, the first toleration matching it (upstream's
// GetMatchingTolerations) bounds the pod's stay to tolerationSeconds
// (none: forever; zero or less: not at all) from when the taint was added,
// and the earliest bound wins. ok is false when the pod may stay forever.
func evictionTime(tolerations []*corev1.Toleration, taints []*corev1.Taint, added func(*corev1.Taint) time.Time, now time.Time) (at time.Time, ok bool) {
	for _, taint := range taints {
		var used *corev1.Toleration
		for _, tol := range tolerations {
			if placement.ToleratesTaint(tol, taint) {
				used = tol
				break
			}
		}
		if used == nil {
			return now, true
		}
		if used.TolerationSeconds == nil {
			continue
		}
		deadline := added(taint).Add(time.Duration(max(0, *used.TolerationSeconds)) * time.Second)
		if !ok || deadline.Before(at) {
			at, ok = deadline, true
		}
	}
	return at, ok
}

// taintAdded is the taint's timeAdded, or when this loop first saw it.
func (t *taintEviction) taintAdded(node string, now time.Time) func(*corev1.Taint) time.Time {
	return func(taint *corev1.Taint) time.Time {
		if !taint.GetTimeAdded().IsZero() {
			return taint.GetTimeAdded().AsTime()
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		seen := t.firstSeen[node]
		if seen == nil {
			seen = map[string]time.Time{}
			t.firstSeen[node] = seen
		}
		id := taint.GetKey() + ":" + taint.GetEffect()
		if at, ok := seen[id]; ok {
			return at
		}
		seen[id] = now
		return now
	}
}

// forgetUnseen drops the first sightings of taints the node no longer has.
func (t *taintEviction) forgetUnseen(node string, taints []*corev1.Taint) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := t.firstSeen[node]
	for id := range seen {
		keep := false
		for _, taint := range taints {
			if taint.GetTimeAdded().IsZero() && taint.GetKey()+":"+taint.GetEffect() == id {
				keep = true
			}
		}
		if !keep {
			delete(seen, id)
		}
	}
	if len(seen) == 0 {
		delete(t.firstSeen, node)
	}
}

// schedule records a pod's deletion time; an earlier one already pending
// is kept, as upstream keeps the first scheduled eviction.
func (t *taintEviction) schedule(key, node string, at time.Time) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.scheduled[key]; ok && s.node == node && s.at.Before(at) {
		return s.at
	}
	t.scheduled[key] = scheduledEviction{node: node, at: at}
	return at
}

// cancel forgets a pod's pending deletion, saying so when there was one
// and the pod is still there to be told about.
func (t *taintEviction) cancel(key string, pod *corev1.Pod) {
	t.mu.Lock()
	_, ok := t.scheduled[key]
	delete(t.scheduled, key)
	t.mu.Unlock()
	if ok && pod != nil {
		t.recorder.Eventf(pod, record.Normal, "TaintManagerEviction", "Cancelling deletion of Pod %s", key)
	}
}

// scheduledOn lists the pods with pending deletions on a node.
func (t *taintEviction) scheduledOn(node string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for key, s := range t.scheduled {
		if s.node == node {
			out = append(out, key)
		}
	}
	return out
}

// sync decides the fate of every pod on a node. Due pods are deleted; the
// node is synced again when the earliest pending deletion is due.
func (t *taintEviction) sync(ctx context.Context, name string) error {
	node, err := t.nodes.Get("", name)
	if apierrors.IsNotFound(err) {
		// Its pods are the pod garbage collector's now.
		for _, key := range t.scheduledOn(name) {
			t.cancel(key, nil)
		}
		t.forgetUnseen(name, nil)
		return nil
	}
	if err != nil {
		return err
	}
	now := t.now()
	taints := noExecuteTaints(node)
	t.forgetUnseen(name, taints)
	added := t.taintAdded(name, now)

	present := map[string]bool{}
	var due []*corev1.Pod
	var next time.Time
	for _, o := range t.podInformer.ByIndex(nodeNameIndex, name) {
		pod := o.(*corev1.Pod)
		key := informer.Key(pod)
		present[key] = true
		if pod.GetMetadata().GetDeletionTimestamp() != nil {
			t.cancel(key, nil) // going already
			continue
		}
		at, ok := time.Time{}, false
		if len(taints) > 0 {
			at, ok = evictionTime(pod.GetSpec().GetTolerations(), taints, added, now)
		}
		if !ok {
			t.cancel(key, pod)
			continue
		}
		if at = t.schedule(key, name, at); !at.After(now) {
			due = append(due, pod)
		} else if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for _, key := range t.scheduledOn(name) {
		if !present[key] {
			ns, podName, _ := controller.SplitMetaNamespaceKey(key)
			t.cancel(key, &corev1.Pod{Metadata: &metav1.ObjectMeta{Namespace: ns, Name: podName}})
		}
	}

	if len(due) > 0 {
		// Deletion cannot be undone: the taints are read afresh first. A
		// node whose taints moved on is synced again on its update.
		fresh, err := client.For[*corev1.Node](t.client, "").Get(ctx, name)
		if err != nil {
			return err
		}
		if !noExecuteTaintsEqual(node, fresh) {
			return nil
		}
	}
	var errs []error
	for _, pod := range due {
		if err := t.evict(ctx, pod); err != nil {
			errs = append(errs, err)
		}
	}
	if !next.IsZero() {
		t.queue.AddAfter(name, next.Sub(now))
	}
	if len(errs) > 0 {
		return fmt.Errorf("evicting pods from node %s: %w", name, errs[0])
	}
	return nil
}

// evict is upstream's addConditionAndDeletePod: the pod, read afresh, gets
// the DisruptionTarget condition saying why it goes, then is deleted
// (gracefully) with its UID and resourceVersion as preconditions, so a
// recreated or just-changed pod is not the one deleted.
func (t *taintEviction) evict(ctx context.Context, cached *corev1.Pod) error {
	key := informer.Key(cached)
	t.mu.Lock()
	at := t.scheduled[key].at
	t.mu.Unlock()
	pods := client.For[*corev1.Pod](t.client, cached.GetMetadata().GetNamespace())
	pod, err := pods.Get(ctx, cached.GetMetadata().GetName())
	if apierrors.IsNotFound(err) {
		t.cancel(key, nil)
		return nil
	}
	if err != nil {
		return err
	}
	if pod.GetMetadata().GetUid() != cached.GetMetadata().GetUid() || pod.GetMetadata().GetDeletionTimestamp() != nil {
		t.cancel(key, nil)
		return nil
	}
	if !tolerationsEqual(pod.GetSpec().GetTolerations(), cached.GetSpec().GetTolerations()) {
		return nil // the cache is behind; the pod's update queues the node again
	}
	t.log.Info("deleting pod", "pod", key)
	t.recorder.Eventf(pod, record.Normal, "TaintManagerEviction", "Marking for deletion Pod %s", key)
	if !hasDisruptionTarget(pod) {
		pod = proto.Clone(pod).(*corev1.Pod)
		if pod.Status == nil {
			pod.Status = &corev1.PodStatus{}
		}
		pod.Status.Conditions = append(pod.Status.Conditions, &corev1.PodCondition{Type: "DisruptionTarget", Status: condTrue,
			Reason: "DeletionByTaintManager", Message: "Taint manager: deleting due to NoExecute taint",
			LastTransitionTime: metav1.NewTime(t.now())})
		if pod, err = pods.UpdateStatus(ctx, pod); err != nil {
			if apierrors.IsNotFound(err) {
				t.cancel(key, nil)
				return nil
			}
			return err
		}
	}
	uid, rv := pod.GetMetadata().GetUid(), pod.GetMetadata().GetResourceVersion()
	_, err = pods.Delete(ctx, pod.GetMetadata().GetName(), client.DeleteOptions{Preconditions: &apipb.Preconditions{Uid: &uid, ResourceVersion: &rv}})
	if apierrors.IsNotFound(err) {
		t.cancel(key, nil)
		return nil
	}
	if err != nil {
		return err
	}
	t.metrics.podDeletions.Inc()
	t.metrics.podDeletionLatency.Observe(max(0, t.now().Sub(at).Seconds()))
	t.mu.Lock()
	delete(t.scheduled, key)
	t.mu.Unlock()
	return nil
}

func hasDisruptionTarget(p *corev1.Pod) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "DisruptionTarget" && c.GetStatus() == condTrue {
			return true
		}
	}
	return false
}
