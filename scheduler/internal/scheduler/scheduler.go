// Package scheduler is skiff-scheduler's core: informers on nodes and pods
// feed the cache and the queue; one loop pops a pod, runs its profile's
// plugins over a snapshot of the nodes, assumes the pod on the chosen node
// and binds it asynchronously, so the next pod is scheduled while the
// Binding is written.
package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/scheme"
	"skiff.dev/scheduler/internal/cache"
	"skiff.dev/scheduler/internal/framework"
	"skiff.dev/scheduler/internal/queue"
)

// DiagnosisAnnotation holds, for a pod that could not be scheduled, which
// plugin rejected each node and why (at most MaxDiagnosisNodes nodes), so
// `skiffctl describe pod` can show it.
const DiagnosisAnnotation = "scheduler.skiff.dev/diagnosis"

// MaxDiagnosisNodes bounds the annotation.
const MaxDiagnosisNodes = 20

// Config wires a scheduler.
type Config struct {
	Client   *client.Client
	Profiles []Profile
	// PercentageOfNodesToScore: 0 is adaptive, as upstream.
	PercentageOfNodesToScore int32
	Parallelism              int
	Registerer               prometheus.Registerer
	Logger                   *slog.Logger
	// Informers, if set, is a factory shared with the rest of an embedding
	// process, so each kind is watched once; nil builds one of the
	// scheduler's own. Run starts it (those of its informers not yet
	// running), with Run's context.
	Informers *informers.Factory
}

// Scheduler is a running scheduler.
type Scheduler struct {
	cfg      Config
	log      *slog.Logger
	client   *client.Client
	profiles map[string]*profileFramework
	queue    *queue.Queue
	cache    *cache.Cache
	snapshot *cache.Snapshot
	factory  *informers.Factory
	ownsF    bool // the factory is the scheduler's own: Run waits for it to stop
	nodes    *informer.Informer
	pods     *informer.Informer
	pdbs     *informer.Informer
	// synced are the handler registrations and informers scheduling waits
	// for: until a handler has had every object, the cache may lack nodes.
	synced []informer.Registration
	next   int // where the next cycle starts filtering
	rnd    *rand.Rand
	// nominated are pending pods that preempted, by the node they wait for:
	// other pods of lower or equal priority count them there.
	nominatedMu sync.Mutex
	nominated   map[string]map[string]*framework.PodInfo
	events      *record.Broadcaster
	recorder    record.Recorder
	m           *metrics
	bindWG      sync.WaitGroup
}

// New builds a scheduler.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Parallelism <= 0 {
		cfg.Parallelism = 16
	}
	if len(cfg.Profiles) == 0 {
		cfg.Profiles = []Profile{{SchedulerName: "default-scheduler"}}
	}
	m := newMetrics(cfg.Registerer)
	s := &Scheduler{cfg: cfg, log: cfg.Logger, client: cfg.Client, profiles: map[string]*profileFramework{},
		cache: cache.New(), snapshot: cache.NewSnapshot(), rnd: rand.New(rand.NewPCG(1, 2)),
		m: m, nominated: map[string]map[string]*framework.PodInfo{}}
	s.factory = cfg.Informers
	if s.factory == nil {
		s.factory = informers.NewFactory(cfg.Client, informers.Options{Logger: cfg.Logger})
		s.ownsF = true
	}
	var less func(a, b *framework.QueuedPodInfo) bool
	for _, p := range cfg.Profiles {
		if p.SchedulerName == "" {
			return nil, fmt.Errorf("profiles: schedulerName is required")
		}
		if _, dup := s.profiles[p.SchedulerName]; dup {
			return nil, fmt.Errorf("profiles: schedulerName %q appears twice", p.SchedulerName)
		}
		f, err := newProfileFramework(p, cfg.Client, s.factory, cfg.PercentageOfNodesToScore, m.extension)
		if err != nil {
			return nil, err
		}
		s.profiles[p.SchedulerName] = f
		if less == nil {
			less = f.queueSort.Less
		}
	}
	s.queue = queue.New(queue.Options{Less: less, Pending: m.pending})
	s.events = record.NewBroadcaster(cfg.Client, record.Options{Logger: cfg.Logger, Registerer: cfg.Registerer})
	s.recorder = s.events.NewRecorder("default-scheduler")
	s.nodes = informers.For[*corev1.Node](s.factory).Informer()
	s.pods = informers.For[*corev1.Pod](s.factory).Informer()
	s.pdbs = informers.For[*policyv1.PodDisruptionBudget](s.factory).Informer()
	nodesReg := s.nodes.AddHandler(informer.Handler{
		OnAdd: func(o scheme.Object) {
			s.cache.SetNode(o.(*corev1.Node))
			s.queue.MoveAllOnEvent(queue.NodeAdd)
		},
		OnUpdate: func(old, o scheme.Object) {
			s.cache.SetNode(o.(*corev1.Node))
			if old.GetMetadata().GetResourceVersion() != o.GetMetadata().GetResourceVersion() {
				s.queue.MoveAllOnEvent(queue.NodeUpdate)
			}
		},
		OnDelete: func(o scheme.Object) { s.cache.RemoveNode(o.GetMetadata().GetName()) },
	})
	podsReg := s.pods.AddHandler(informer.Handler{
		OnAdd: func(o scheme.Object) { s.podChanged(o.(*corev1.Pod)) },
		OnUpdate: func(old, o scheme.Object) {
			op, np := old.(*corev1.Pod), o.(*corev1.Pod)
			s.nominate(np)
			// Our own writes (status, the diagnosis annotation) and other
			// status changes cannot make a pending pod fit: only its spec or
			// labels can, as upstream's isPodUpdated judges.
			if np.GetSpec().GetNodeName() == "" && proto.Equal(op.GetSpec(), np.GetSpec()) &&
				maps.Equal(op.GetMetadata().GetLabels(), np.GetMetadata().GetLabels()) &&
				np.GetMetadata().GetDeletionTimestamp() == nil {
				return
			}
			s.podChanged(np)
		},
		OnDelete: func(o scheme.Object) {
			p := o.(*corev1.Pod)
			k := informer.Key(p)
			s.unnominate(k)
			if p.GetSpec().GetNodeName() != "" || s.cache.IsAssumed(k) {
				s.cache.RemovePod(k)
				s.queue.MoveAllOnEvent(queue.PodDelete)
			}
			s.queue.Delete(k)
		},
	})
	s.synced = []informer.Registration{nodesReg, podsReg, s.pdbs}
	// VolumeBinding: a claim bound, a volume created or a class added may
	// make a pod waiting for its volumes schedulable.
	volumeEvent := func(scheme.Object) { s.queue.MoveAllOnEvent(queue.Event("PersistentVolumeOrClaimChange")) }
	s.synced = append(s.synced,
		informers.For[*corev1.PersistentVolumeClaim](s.factory).Informer().AddHandler(informer.Handler{
			OnAdd: volumeEvent, OnUpdate: func(_, o scheme.Object) { volumeEvent(o) }}),
		informers.For[*corev1.PersistentVolume](s.factory).Informer().AddHandler(informer.Handler{
			OnAdd: volumeEvent, OnUpdate: func(_, o scheme.Object) { volumeEvent(o) }}),
		informers.For[*storagev1.StorageClass](s.factory).Informer().AddHandler(informer.Handler{
			OnAdd: volumeEvent, OnUpdate: func(_, o scheme.Object) { volumeEvent(o) }}))
	return s, nil
}

// nominate records (or clears) a pending pod's nominated node.
func (s *Scheduler) nominate(p *corev1.Pod) {
	k := informer.Key(p)
	s.unnominate(k)
	node := p.GetStatus().GetNominatedNodeName()
	if node == "" || p.GetSpec().GetNodeName() != "" || p.GetMetadata().GetDeletionTimestamp() != nil {
		return
	}
	s.nominatedMu.Lock()
	defer s.nominatedMu.Unlock()
	if s.nominated[node] == nil {
		s.nominated[node] = map[string]*framework.PodInfo{}
	}
	s.nominated[node][k] = framework.NewPodInfo(p)
}

func (s *Scheduler) unnominate(key string) {
	s.nominatedMu.Lock()
	defer s.nominatedMu.Unlock()
	for node, m := range s.nominated {
		delete(m, key)
		if len(m) == 0 {
			delete(s.nominated, node)
		}
	}
}

// nominatedFor returns the pods nominated to node that pod must leave room
// for: those of higher or equal priority, other than itself.
func (s *Scheduler) nominatedFor(pod *framework.PodInfo) func(node string) []*framework.PodInfo {
	s.nominatedMu.Lock()
	empty := len(s.nominated) == 0
	s.nominatedMu.Unlock()
	if empty {
		return nil
	}
	prio := pod.Pod.GetSpec().GetPriority()
	key := pod.Key()
	return func(node string) []*framework.PodInfo {
		s.nominatedMu.Lock()
		defer s.nominatedMu.Unlock()
		var out []*framework.PodInfo
		for k, p := range s.nominated[node] {
			if k != key && p.Pod.GetSpec().GetPriority() >= prio {
				out = append(out, p)
			}
		}
		return out
	}
}

func (s *Scheduler) podChanged(p *corev1.Pod) {
	k := informer.Key(p)
	s.nominate(p)
	if p.GetSpec().GetNodeName() != "" {
		s.cache.SetPod(p)
		s.queue.Delete(k)
		return
	}
	if _, ours := s.profiles[p.GetSpec().GetSchedulerName()]; !ours || p.GetMetadata().GetDeletionTimestamp() != nil {
		return
	}
	if s.cache.IsAssumed(k) {
		return // bound a moment ago; the informer has not seen it yet
	}
	s.queue.Add(framework.NewPodInfo(p))
}

// Run schedules until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		if s.ownsF {
			// No handler runs once Run has returned.
			s.factory.Shutdown()
		}
	}()
	s.factory.Start(ctx)
	go s.queue.Run(ctx)
	go s.events.Run(ctx)
	if !informers.WaitForCacheSync(ctx, s.synced...) {
		return nil
	}
	s.log.Info("scheduler caches synced; scheduling", "profiles", len(s.profiles))
	for ctx.Err() == nil {
		qp, ok := s.queue.Pop(ctx)
		if !ok {
			break
		}
		s.scheduleOne(ctx, qp)
	}
	s.bindWG.Wait()
	return nil
}

func (s *Scheduler) scheduleOne(ctx context.Context, qp *framework.QueuedPodInfo) {
	start := time.Now()
	pod := qp.Pod
	key := qp.Key()
	cur, ok := s.pods.Get(key)
	if !ok || cur.(*corev1.Pod).GetSpec().GetNodeName() != "" || cur.GetMetadata().GetDeletionTimestamp() != nil {
		s.queue.Done(key)
		return
	}
	f := s.profiles[pod.GetSpec().GetSchedulerName()]
	if f == nil {
		s.queue.Done(key)
		return
	}
	s.cache.Update(s.snapshot)
	nodes := s.snapshot.List
	state := framework.NewCycleState()

	for _, pl := range f.preFilter {
		t := time.Now()
		st := pl.PreFilter(ctx, state, qp.PodInfo, nodes)
		f.observe("PreFilter", t, st)
		if !st.IsSuccess() {
			st.Plugin = pl.Name()
			d := &framework.Diagnosis{NodeToStatus: map[string]*framework.Status{}}
			for _, n := range nodes {
				d.NodeToStatus[n.Name()] = st
			}
			s.fail(ctx, f, qp, d, len(nodes), start, "")
			return
		}
	}
	t := time.Now()
	feasible, diag, next := f.findFeasible(ctx, state, qp.PodInfo, nodes, s.next, s.cfg.Parallelism, s.nominatedFor(qp.PodInfo))
	f.observe("Filter", t, nil)
	s.next = next
	if len(feasible) == 0 {
		t := time.Now()
		nominated, why := s.preempt(ctx, f, state, qp, diag)
		f.observe("PostFilter", t, nil)
		if nominated != "" {
			s.log.Info("preempting", "pod", key, "node", nominated)
		}
		s.fail(ctx, f, qp, diag, len(nodes), start, why)
		return
	}
	t = time.Now()
	scores := f.scoreNodes(ctx, state, qp.PodInfo, feasible)
	f.observe("Score", t, nil)
	host := selectHost(scores, s.rnd.IntN)

	s.cache.Assume(qp.PodInfo, host)
	for i, pl := range f.reserve {
		if st := pl.Reserve(ctx, state, qp.PodInfo, host); !st.IsSuccess() {
			for j := i; j >= 0; j-- {
				f.reserve[j].Unreserve(ctx, state, qp.PodInfo, host)
			}
			s.cache.Forget(key)
			s.queue.Requeue(qp, false)
			s.m.attempt("error", f.name, start)
			return
		}
	}
	s.m.attempt("scheduled", f.name, start)
	s.bindWG.Add(1)
	go func() {
		defer s.bindWG.Done()
		s.bind(ctx, f, state, qp, host)
	}()
}

// bind runs permit, pre-bind, bind and post-bind off the scheduling loop.
func (s *Scheduler) bind(ctx context.Context, f *profileFramework, state *framework.CycleState, qp *framework.QueuedPodInfo, host string) {
	key := qp.Key()
	fail := func(st *framework.Status) {
		for _, pl := range f.reserve {
			pl.Unreserve(ctx, state, qp.PodInfo, host)
		}
		s.cache.Forget(key)
		s.queue.Requeue(qp, false)
		s.log.Warn("binding failed", "pod", key, "node", host, "err", st.Message())
		s.event(qp.Pod, "Warning", "FailedScheduling", fmt.Sprintf("Binding rejected: %s", st.Message()))
	}
	for _, pl := range f.permit {
		if st, wait := pl.Permit(ctx, state, qp.PodInfo, host); !st.IsSuccess() {
			if st.Code != framework.Wait {
				fail(st)
				return
			}
			time.Sleep(wait)
		}
	}
	for _, pl := range f.preBind {
		if st := pl.PreBind(ctx, state, qp.PodInfo, host); !st.IsSuccess() {
			fail(st)
			return
		}
	}
	var bound bool
	t := time.Now()
	for _, pl := range f.bind {
		st := pl.Bind(ctx, state, qp.PodInfo, host)
		if st != nil && st.Code == framework.Skip {
			continue
		}
		f.observe("Bind", t, st)
		if !st.IsSuccess() {
			fail(st)
			return
		}
		bound = true
		break
	}
	if !bound {
		fail(framework.NewStatus(framework.Error, "no bind plugin bound the pod"))
		return
	}
	for _, pl := range f.postBind {
		pl.PostBind(ctx, state, qp.PodInfo, host)
	}
	s.queue.Done(key)
	s.m.sli.WithLabelValues(fmt.Sprint(min(qp.Attempts, 15))).Observe(time.Since(qp.InitialAttemptTimestamp).Seconds())
	m := qp.Pod.GetMetadata()
	s.event(qp.Pod, "Normal", "Scheduled", fmt.Sprintf("Successfully assigned %s/%s to %s", m.GetNamespace(), m.GetName(), host))
}

// fail records why a pod did not fit: a FailedScheduling event, the
// PodScheduled condition, and the per-node diagnosis annotation.
func (s *Scheduler) fail(ctx context.Context, f *profileFramework, qp *framework.QueuedPodInfo, d *framework.Diagnosis, total int, start time.Time, preemption string) {
	msg := d.Summary(total)
	if preemption != "" {
		msg += " preemption: " + preemption
	}
	s.m.attempt("unschedulable", f.name, start)
	s.queue.Requeue(qp, true)
	s.event(qp.Pod, "Warning", "FailedScheduling", msg)
	go s.recordFailure(ctx, qp.Pod, msg, d)
}

func (s *Scheduler) recordFailure(ctx context.Context, pod *corev1.Pod, msg string, d *framework.Diagnosis) {
	pods := client.For[*corev1.Pod](s.client, pod.GetMetadata().GetNamespace())
	name := pod.GetMetadata().GetName()
	names := make([]string, 0, len(d.NodeToStatus))
	for n := range d.NodeToStatus {
		names = append(names, n)
	}
	sort.Strings(names)
	diag := map[string]string{}
	for _, n := range names[:min(len(names), MaxDiagnosisNodes)] {
		st := d.NodeToStatus[n]
		diag[n] = st.Plugin + ": " + st.Message()
	}
	if len(names) > MaxDiagnosisNodes {
		diag["..."] = fmt.Sprintf("%d more nodes", len(names)-MaxDiagnosisNodes)
	}
	b, _ := json.Marshal(diag)
	if pod.GetMetadata().GetAnnotations()[DiagnosisAnnotation] != string(b) {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{DiagnosisAnnotation: string(b)}}})
		if _, err := pods.Patch(ctx, name, "merge", patch, ""); err != nil {
			s.log.Debug("recording the diagnosis failed", "pod", name, "err", err)
		}
	}
	cond := &corev1.PodCondition{Type: "PodScheduled", Status: "False", Reason: "Unschedulable", Message: msg, LastTransitionTime: metav1.Now()}
	for _, c := range pod.GetStatus().GetConditions() {
		if c.Type == "PodScheduled" && c.Status == "False" && c.Message == msg {
			return
		}
	}
	c := map[string]any{"type": cond.Type, "status": cond.Status, "reason": cond.Reason, "message": cond.Message,
		"lastTransitionTime": cond.LastTransitionTime.AsTime().Format(time.RFC3339)}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []any{c}}})
	if _, err := pods.Patch(ctx, name, "merge", patch, "status"); err != nil {
		s.log.Debug("updating PodScheduled failed", "pod", name, "err", err)
	}
}

// event records an Event for the pod; the broadcaster aggregates repeats
// and drops rather than slow scheduling when the apiserver lags.
func (s *Scheduler) event(p *corev1.Pod, typ, reason, msg string) {
	s.recorder.Event(p, typ, reason, msg)
}
