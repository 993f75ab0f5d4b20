// Package garbagecollector is upstream's garbage collector controller: it
// deletes the objects whose owners are gone, and carries out the Foreground
// and Orphan propagation policies of a deletion.
//
// As upstream, one handler on the shared informer of every kind (Events
// excepted) feeds a single graph builder goroutine, which keeps a graph of
// objects by UID with their owners and dependents. An owner that a dependent
// names but no informer has shown is a virtual node. The builder queues
// candidates for the workers:
//
//   - garbage_collector_attempt_to_delete: an object whose owners may all be
//     gone (it is deleted, with Background propagation unless it carries the
//     orphan or foregroundDeletion finalizer itself); one with some live
//     owners only loses its dangling references; an owner deleted in the
//     foreground, whose dependents are deleted (themselves in the foreground
//     when they have dependents) and which loses its foregroundDeletion
//     finalizer once no dependent with blockOwnerDeletion is left; a virtual
//     node, checked against the apiserver.
//   - garbage_collector_attempt_to_orphan: an owner deleted with the orphan
//     finalizer: every dependent loses its reference, then the owner its
//     finalizer.
//
// No decision rests on the caches alone: the workers read the object and
// each owner afresh from the apiserver (an owner is absent when the read is
// NotFound or finds another UID; confirmed absences are kept in a small LRU
// as upstream's absentOwnerCache), delete with the UID and resourceVersion as
// preconditions, and write with JSON merge patches that pin the
// resourceVersion they were computed from.
//
// Scope, as upstream: a namespaced dependent's owner is looked up in the
// dependent's namespace (or cluster-wide for a cluster-scoped kind), so one
// observed in another namespace is absent for it and an
// OwnerRefInvalidNamespace Warning Event is recorded on the dependent. A
// cluster-scoped dependent naming a namespaced kind cannot be resolved: it
// gets the Event too (here as soon as the reference is seen, since the
// scheme knows every kind's scope) and, as upstream, is left alone rather
// than deleted.
//
// Left out: discovery-driven monitors (the kinds are skiff.dev/proto/scheme's,
// fixed at build time), strategic merge patches (every patch is a JSON merge
// patch, upstream's fallback), the debug graph dump.
package garbagecollector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/client/record"
	"skiff.dev/client/workqueue"
	"skiff.dev/controller-manager/internal/controllers"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// Name is the controller's name, upstream's.
const Name = "garbagecollector"

const (
	defaultWorkers = 20 // --concurrent-gc-syncs
	// initialSyncTimeout is how long Run waits for the informers before it
	// collects anyway, as upstream (every decision is checked live).
	initialSyncTimeout   = 30 * time.Second
	absentOwnerCacheSize = 500
)

var (
	errEnqueuedVirtualDelete = errors.New("enqueued virtual delete event")
	// A cluster-scoped object referring to a namespaced owner will not
	// resolve on retry.
	errNamespacedOwnerOfClusterScoped = errors.New("cluster-scoped objects cannot refer to namespaced owners")
)

// restMappingError: an owner reference names a kind the scheme lacks.
type restMappingError struct{ apiVersion, kind string }

func (e *restMappingError) Error() string {
	return fmt.Sprintf("unable to get REST mapping for %s/%s.", e.apiVersion, e.kind)
}

// GarbageCollector is the controller.
type GarbageCollector struct {
	client   *client.Client
	log      *slog.Logger
	recorder record.Recorder
	workers  int

	graph  *graph
	absent *referenceCache
	// changes feeds the graph builder: informer events and virtual deletes.
	changes         *eventQueue
	attemptToDelete workqueue.Queue
	attemptToOrphan workqueue.Queue
	synced          []informer.Registration

	syncErrors         prometheus.Counter
	initialSyncTimeout time.Duration
}

// New builds the garbage collector over the shared informers of every kind.
func New(cc controllers.Context) (controllers.Controller, error) {
	log := cc.Log()
	workers := cc.WorkersFor(Name, defaultWorkers)
	var rec record.Recorder
	if cc.Recorder != nil {
		rec = cc.Recorder("garbage-collector-controller")
	}
	absent := newReferenceCache(absentOwnerCacheSize)
	gc := &GarbageCollector{
		client:   cc.Client,
		log:      log,
		recorder: rec,
		workers:  workers,
		graph: newGraph(absent, func(apiVersion, kind string) (bool, bool) {
			k, ok := scheme.ForGVK(apiVersion, kind)
			return ok && k.Namespaced, ok
		}),
		absent:             absent,
		changes:            newEventQueue(),
		attemptToDelete:    workqueue.NewWithMetrics("garbage_collector_attempt_to_delete", cc.Registerer),
		attemptToOrphan:    workqueue.NewWithMetrics("garbage_collector_attempt_to_orphan", cc.Registerer),
		syncErrors:         syncErrorCounter(cc.Registerer),
		initialSyncTimeout: initialSyncTimeout,
	}
	for _, k := range scheme.All() {
		if ignored(k) {
			continue
		}
		apiVersion, kind := k.APIVersion(), k.Kind
		push := func(typ eventType, obj, old scheme.Object) {
			ev := &event{typ: typ, apiVersion: apiVersion, kind: kind, obj: obj.GetMetadata()}
			if old != nil {
				ev.old = old.GetMetadata()
			}
			gc.changes.push(ev)
		}
		reg := cc.Informers.ForKind(k).AddHandler(informer.Handler{
			OnAdd:    func(obj scheme.Object) { push(addEvent, obj, nil) },
			OnUpdate: func(old, cur scheme.Object) { push(updateEvent, cur, old) },
			OnDelete: func(obj scheme.Object) { push(deleteEvent, obj, nil) },
		})
		gc.synced = append(gc.synced, reg)
	}
	return gc, nil
}

// ignored are upstream's DefaultIgnoredResources: Events.
func ignored(k *scheme.Kind) bool { return k.Group == "" && k.Resource == "events" }

func syncErrorCounter(reg prometheus.Registerer) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Subsystem: "garbagecollector_controller",
		Name:      "resources_sync_error_total",
		Help:      "Number of garbage collector resources sync errors",
	})
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(prometheus.Counter); ok {
				return existing
			}
		}
	}
	return c
}

// Name is upstream's controller name.
func (gc *GarbageCollector) Name() string { return Name }

// Run builds the graph and runs the workers until ctx ends.
func (gc *GarbageCollector) Run(ctx context.Context) error {
	gc.log.Info("Starting controller")
	defer gc.log.Info("Shutting down controller")
	var wg sync.WaitGroup
	defer func() {
		gc.attemptToDelete.ShutDown()
		gc.attemptToOrphan.ShutDown()
		wg.Wait()
	}()
	wg.Go(func() { gc.runGraphBuilder(ctx) })

	syncCtx, cancel := context.WithTimeout(ctx, gc.initialSyncTimeout)
	synced := informers.WaitForCacheSync(syncCtx, gc.synced...)
	cancel()
	switch {
	case ctx.Err() != nil:
		return nil
	case synced:
		gc.log.Info("Garbage collector: all resource monitors have synced")
	default:
		gc.syncErrors.Inc()
		gc.log.Info("Garbage collector: not all resource monitors could be synced, proceeding anyways")
	}
	gc.log.Info("Proceeding to collect garbage")
	for range gc.workers {
		wg.Go(func() { gc.runWorker(ctx, gc.attemptToDelete, gc.attemptToDeleteWorker) })
		wg.Go(func() { gc.runWorker(ctx, gc.attemptToOrphan, gc.attemptToOrphanWorker) })
	}
	<-ctx.Done()
	return nil
}

// runGraphBuilder applies events to the graph one at a time and hands the
// resulting work to the queues.
func (gc *GarbageCollector) runGraphBuilder(ctx context.Context) {
	for {
		ev, ok := gc.changes.pop(ctx)
		if !ok {
			return
		}
		gc.dispatch(gc.graph.process(ev))
	}
}

func (gc *GarbageCollector) dispatch(c changes) {
	for _, uid := range c.attemptToDelete {
		gc.attemptToDelete.Add(uid)
	}
	for _, uid := range c.attemptToDeleteRateLimited {
		gc.attemptToDelete.AddRateLimited(uid)
	}
	for _, uid := range c.attemptToOrphan {
		gc.attemptToOrphan.Add(uid)
	}
	for _, inv := range c.invalidOwnerRefs {
		gc.log.Info("item references an owner but does not match namespaces", "item", inv.dependent.String(), "owner", inv.owner.String())
		gc.reportInvalidOwnerRef(inv)
	}
}

func (gc *GarbageCollector) reportInvalidOwnerRef(inv invalidOwnerRef) {
	if gc.recorder == nil {
		return
	}
	k, ok := scheme.ForGVK(inv.dependent.APIVersion, inv.dependent.Kind)
	if !ok {
		return
	}
	obj := k.New()
	m := obj.GetMetadata()
	m.Name, m.Namespace, m.Uid = inv.dependent.Name, inv.dependent.Namespace, inv.dependent.UID
	gc.recorder.Eventf(obj, record.Warning, "OwnerRefInvalidNamespace", "ownerRef %s does not exist in namespace %q", inv.owner, inv.dependent.Namespace)
}

// enqueueVirtualDeleteEvent tells the graph builder that ref does not exist.
func (gc *GarbageCollector) enqueueVirtualDeleteEvent(ref objectReference) {
	gc.changes.push(&event{virtual: true, typ: deleteEvent, apiVersion: ref.APIVersion, kind: ref.Kind,
		obj: &metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace, Uid: ref.UID}})
}

type action int

const (
	forgetItem action = iota
	requeueItem
)

func (gc *GarbageCollector) runWorker(ctx context.Context, q workqueue.Queue, work func(context.Context, string) action) {
	for {
		uid, quit := q.Get()
		if quit {
			return
		}
		if gc.processItem(ctx, uid, work) == requeueItem && ctx.Err() == nil {
			q.AddRateLimited(uid)
		} else {
			q.Forget(uid)
		}
		q.Done(uid)
	}
}

// processItem runs work, turning a panic into a retry so one bad object
// does not take the controller-manager down.
func (gc *GarbageCollector) processItem(ctx context.Context, uid string, work func(context.Context, string) action) (a action) {
	defer func() {
		if r := recover(); r != nil {
			gc.log.Error("Observed a panic; requeuing", "uid", uid, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			a = requeueItem
		}
	}()
	return work(ctx, uid)
}

func (gc *GarbageCollector) attemptToDeleteWorker(ctx context.Context, uid string) action {
	n, ok := gc.graph.view(uid)
	if !ok {
		// Removed meanwhile: its deletion was observed.
		return forgetItem
	}
	err := gc.attemptToDeleteItem(ctx, n)
	switch {
	case errors.Is(err, errEnqueuedVirtualDelete), errors.Is(err, errNamespacedOwnerOfClusterScoped):
		return forgetItem
	case err != nil:
		if ctx.Err() == nil {
			gc.log.Error("Error syncing item", "item", n.identity.String(), "err", err)
		}
		return requeueItem
	case !gc.graph.observed(uid):
		// Until an informer shows it, a virtual node that exists is
		// checked again, lest one created and deleted while a watch was
		// down stays in the graph forever (upstream's issue 56121).
		gc.log.Debug("item hasn't been observed via informer yet", "item", n.identity.String())
		return requeueItem
	}
	return forgetItem
}

// attemptToDeleteItem reads the live object of item and deletes it if every
// owner is absent and nothing blocks; it removes dangling references when
// some owner lives, and finishes foreground deletions.
func (gc *GarbageCollector) attemptToDeleteItem(ctx context.Context, item nodeView) error {
	gc.log.Debug("Processing item", "item", item.identity.String(), "virtual", item.virtual)
	// Being deleted is a one-way trip: wait for the deletion, then see to
	// the dependents.
	if item.beingDeleted && !item.deletingDependents {
		return nil
	}
	latest, err := gc.getObject(ctx, item.identity)
	switch {
	case apierrors.IsNotFound(err):
		// A virtual node for an owner that never existed, or an object
		// deleted before its event arrived.
		gc.enqueueVirtualDeleteEvent(item.identity)
		return errEnqueuedVirtualDelete
	case err != nil:
		return err
	}
	lm := latest.GetMetadata()
	if lm.GetUid() != item.identity.UID {
		gc.enqueueVirtualDeleteEvent(item.identity)
		return errEnqueuedVirtualDelete
	}
	if item.deletingDependents {
		return gc.processDeletingDependentsItem(ctx, item)
	}
	refs := ownerRefsOf(lm)
	if len(refs) == 0 {
		return nil
	}
	solid, dangling, waiting, err := gc.classifyReferences(ctx, item, refs)
	if err != nil {
		return err
	}
	switch {
	case len(solid) != 0:
		if len(dangling) == 0 && len(waiting) == 0 {
			return nil
		}
		// Owners waiting for their dependents' deletion lose this one
		// too, or they would wait for it forever.
		gc.log.Info("remove dangling references and waiting references for item", "item", item.identity.String(),
			"dangling", uidsOf(dangling), "waitingForDependentsDeletion", uidsOf(waiting))
		return gc.removeOwnerRefs(ctx, item.identity, latest, append(uidsOf(dangling), uidsOf(waiting)...))
	case len(waiting) != 0 && len(item.dependents) != 0:
		for _, dep := range item.dependents {
			if dep.deletingDependents {
				// Some owner and some dependent both delete in the
				// foreground: to break a possible cycle this item stops
				// blocking its owners (false positives are possible, as
				// upstream's).
				gc.log.Info("processing item, some of its owners and its dependent have FinalizerDeletingDependents, to prevent potential cycle, its ownerReferences are going to be modified to be non-blocking, then the item is going to be deleted with Foreground",
					"item", item.identity.String(), "dependent", dep.identity.String())
				latest, err = gc.unblockOwnerRefs(ctx, item.identity, latest)
				if err != nil {
					return err
				}
				break
			}
		}
		gc.log.Info("at least one owner of item has FinalizerDeletingDependents, and the item itself has dependents, so it is going to be deleted in Foreground",
			"item", item.identity.String())
		return gc.deleteItem(ctx, item.identity, latest, "Foreground")
	default:
		// No solid owner and none waiting: garbage. The item's own
		// propagation finalizers, if any, are honoured.
		policy := "Background"
		switch {
		case hasFinalizer(lm, finalizerOrphanDependents):
			policy = "Orphan"
		case hasFinalizer(lm, finalizerDeleteDependents):
			policy = "Foreground"
		}
		gc.log.Info("Deleting item", "item", item.identity.String(), "propagationPolicy", policy)
		return gc.deleteItem(ctx, item.identity, latest, policy)
	}
}

func (gc *GarbageCollector) deleteItem(ctx context.Context, item objectReference, latest scheme.Object, policy string) error {
	m := latest.GetMetadata()
	err := gc.deleteObject(ctx, item, m.GetResourceVersion(), ownerRefsOf(m), policy)
	if apierrors.IsNotFound(err) {
		gc.enqueueVirtualDeleteEvent(item)
		return errEnqueuedVirtualDelete
	}
	return err
}

// processDeletingDependentsItem handles an owner deleted in the foreground.
func (gc *GarbageCollector) processDeletingDependentsItem(ctx context.Context, item nodeView) error {
	blocking := item.blockingDependents()
	if len(blocking) == 0 {
		gc.log.Info("remove DeleteDependents finalizer for item", "item", item.identity.String())
		return gc.removeFinalizer(ctx, item.identity, finalizerDeleteDependents)
	}
	for _, dep := range blocking {
		if !dep.deletingDependents {
			gc.log.Debug("adding dependent to attemptToDelete, because its owner is deletingDependents",
				"item", item.identity.String(), "dependent", dep.identity.String())
			gc.attemptToDelete.Add(dep.identity.UID)
		}
	}
	return nil
}

// classifyReferences sorts refs by their owners' live state: solid (exists,
// not waiting for its dependents), dangling (absent), waiting (deleted in the
// foreground).
func (gc *GarbageCollector) classifyReferences(ctx context.Context, item nodeView, refs []ownerRef) (solid, dangling, waiting []ownerRef, err error) {
	for _, ref := range refs {
		isDangling, owner, err := gc.isDangling(ctx, ref, item)
		if err != nil {
			return nil, nil, nil, err
		}
		switch {
		case isDangling:
			dangling = append(dangling, ref)
		case beingDeleted(owner.GetMetadata()) && hasFinalizer(owner.GetMetadata(), finalizerDeleteDependents):
			waiting = append(waiting, ref)
		default:
			solid = append(solid, ref)
		}
	}
	return solid, dangling, waiting, nil
}

// isDangling reports whether ref names an owner that does not exist for item;
// when it reads the owner it returns it.
func (gc *GarbageCollector) isDangling(ctx context.Context, ref ownerRef, item nodeView) (bool, scheme.Object, error) {
	key := ref.coordinates()
	if gc.absent.has(key) {
		return true, nil, nil
	}
	key.Namespace = item.identity.Namespace
	if gc.absent.has(key) {
		return true, nil, nil
	}
	k, ok := scheme.ForGVK(ref.APIVersion, ref.Kind)
	if !ok {
		return false, nil, &restMappingError{apiVersion: ref.APIVersion, kind: ref.Kind}
	}
	if !k.Namespaced {
		key.Namespace = ""
	}
	if item.identity.Namespace == "" && k.Namespaced {
		gc.log.Info("item is cluster-scoped, but refers to a namespaced owner", "item", item.identity.String(), "owner", key.String())
		return false, nil, errNamespacedOwnerOfClusterScoped
	}
	owner, err := gc.client.Resource(k, key.Namespace).Get(ctx, ref.Name)
	switch {
	case apierrors.IsNotFound(err):
		gc.absent.add(key)
		gc.log.Debug("item's owner is not found", "item", item.identity.String(), "owner", key.String())
		return true, nil, nil
	case err != nil:
		return false, nil, err
	}
	if owner.GetMetadata().GetUid() != ref.UID {
		gc.absent.add(key)
		gc.log.Debug("item's owner is not found, UID mismatch", "item", item.identity.String(), "owner", key.String())
		return true, nil, nil
	}
	return false, owner, nil
}

func (gc *GarbageCollector) attemptToOrphanWorker(ctx context.Context, uid string) action {
	owner, ok := gc.graph.view(uid)
	if !ok {
		return forgetItem
	}
	if err := gc.orphanDependents(ctx, owner.identity, owner.dependents); err != nil {
		gc.log.Error("orphanDependents failed", "owner", owner.identity.String(), "err", err)
		return requeueItem
	}
	if err := gc.removeFinalizer(ctx, owner.identity, finalizerOrphanDependents); err != nil {
		gc.log.Error("removeOrphanFinalizer failed", "owner", owner.identity.String(), "err", err)
		return requeueItem
	}
	return forgetItem
}

// orphanDependents removes owner's reference from every dependent, in
// parallel.
func (gc *GarbageCollector) orphanDependents(ctx context.Context, owner objectReference, dependents []dependentView) error {
	errs := make([]error, len(dependents))
	var wg sync.WaitGroup
	for i, dep := range dependents {
		wg.Go(func() {
			err := controller.RetryOnConflict(func() error {
				latest, err := gc.getObject(ctx, dep.identity)
				if err != nil {
					return err
				}
				if latest.GetMetadata().GetUid() != dep.identity.UID {
					return nil
				}
				return gc.removeOwnerRefs(ctx, dep.identity, latest, []string{owner.UID})
			})
			if err != nil && !apierrors.IsNotFound(err) {
				errs[i] = fmt.Errorf("orphaning %s failed, %w", dep.identity, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("failed to orphan dependents of owner %s, got errors: %w", owner, err)
	}
	gc.log.Debug("successfully updated all dependents", "owner", owner.String())
	return nil
}

// kindOf resolves a reference's kind and the namespace to address it in.
func kindOf(ref objectReference) (*scheme.Kind, string, error) {
	k, ok := scheme.ForGVK(ref.APIVersion, ref.Kind)
	if !ok {
		return nil, "", &restMappingError{apiVersion: ref.APIVersion, kind: ref.Kind}
	}
	if !k.Namespaced {
		return k, "", nil
	}
	if ref.Namespace == "" {
		return nil, "", errNamespacedOwnerOfClusterScoped
	}
	return k, ref.Namespace, nil
}

func (gc *GarbageCollector) getObject(ctx context.Context, ref objectReference) (scheme.Object, error) {
	k, ns, err := kindOf(ref)
	if err != nil {
		return nil, err
	}
	return gc.client.Resource(k, ns).Get(ctx, ref.Name)
}

func (gc *GarbageCollector) patchObject(ctx context.Context, ref objectReference, patch []byte) (scheme.Object, error) {
	k, ns, err := kindOf(ref)
	if err != nil {
		return nil, err
	}
	return gc.client.Resource(k, ns).Patch(ctx, ref.Name, "merge", patch, "", false)
}

// deleteObject deletes item as it was at resourceVersion. If only a change
// unrelated to its owners made that stale, it deletes without the
// resourceVersion, so frequent updates do not starve the collector.
func (gc *GarbageCollector) deleteObject(ctx context.Context, item objectReference, resourceVersion string, owners []ownerRef, policy string) error {
	k, ns, err := kindOf(item)
	if err != nil {
		return err
	}
	uid := item.UID
	pre := &apipb.Preconditions{Uid: &uid}
	if resourceVersion != "" {
		pre.ResourceVersion = &resourceVersion
	}
	d := gc.client.Resource(k, ns)
	_, err = d.Delete(ctx, item.Name, client.DeleteOptions{Preconditions: pre, PropagationPolicy: policy})
	if apierrors.IsConflict(err) && resourceVersion != "" {
		live, liveErr := d.Get(ctx, item.Name)
		if apierrors.IsNotFound(liveErr) {
			return nil
		}
		if liveErr == nil {
			lm := live.GetMetadata()
			if lm.GetUid() == item.UID && lm.GetResourceVersion() != resourceVersion && slices.Equal(ownerRefsOf(lm), owners) {
				pre.ResourceVersion = nil
				_, err = d.Delete(ctx, item.Name, client.DeleteOptions{Preconditions: pre, PropagationPolicy: policy})
			}
		}
	}
	return err
}

// Merge patch bodies, upstream's objectForPatch and objectForFinalizersPatch.
// The resourceVersion makes the apiserver refuse a patch computed from a
// state that is no longer current.
type ownerRefsPatch struct {
	Metadata struct {
		UID             string              `json:"uid"`
		ResourceVersion string              `json:"resourceVersion"`
		OwnerReferences []ownerReferenceDoc `json:"ownerReferences"`
	} `json:"metadata"`
}

type ownerReferenceDoc struct {
	APIVersion         string `json:"apiVersion"`
	Kind               string `json:"kind"`
	Name               string `json:"name"`
	UID                string `json:"uid"`
	Controller         *bool  `json:"controller,omitempty"`
	BlockOwnerDeletion *bool  `json:"blockOwnerDeletion,omitempty"`
}

type finalizersPatch struct {
	Metadata struct {
		ResourceVersion string   `json:"resourceVersion"`
		Finalizers      []string `json:"finalizers"`
	} `json:"metadata"`
}

// patchOwnerRefs rewrites latest's owner references through edit, which
// returns each one's new form and whether to keep it; no change, no patch.
func (gc *GarbageCollector) patchOwnerRefs(ctx context.Context, item objectReference, latest scheme.Object, edit func(*metav1.OwnerReference) (ownerReferenceDoc, bool)) (scheme.Object, error) {
	m := latest.GetMetadata()
	var p ownerRefsPatch
	p.Metadata.UID = m.GetUid()
	p.Metadata.ResourceVersion = m.GetResourceVersion()
	p.Metadata.OwnerReferences = []ownerReferenceDoc{}
	changed := false
	for _, r := range m.GetOwnerReferences() {
		doc, keep := edit(r)
		if !keep {
			changed = true
			continue
		}
		if doc != docOf(r) {
			changed = true
		}
		p.Metadata.OwnerReferences = append(p.Metadata.OwnerReferences, doc)
	}
	if !changed {
		return latest, nil
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return gc.patchObject(ctx, item, body)
}

func docOf(r *metav1.OwnerReference) ownerReferenceDoc {
	return ownerReferenceDoc{APIVersion: r.GetApiVersion(), Kind: r.GetKind(), Name: r.GetName(), UID: r.GetUid(),
		Controller: r.Controller, BlockOwnerDeletion: r.BlockOwnerDeletion}
}

// removeOwnerRefs drops the references to uids from latest.
func (gc *GarbageCollector) removeOwnerRefs(ctx context.Context, item objectReference, latest scheme.Object, uids []string) error {
	_, err := gc.patchOwnerRefs(ctx, item, latest, func(r *metav1.OwnerReference) (ownerReferenceDoc, bool) {
		return docOf(r), !slices.Contains(uids, r.GetUid())
	})
	return err
}

// unblockOwnerRefs sets blockOwnerDeletion=false on latest's references.
func (gc *GarbageCollector) unblockOwnerRefs(ctx context.Context, item objectReference, latest scheme.Object) (scheme.Object, error) {
	return gc.patchOwnerRefs(ctx, item, latest, func(r *metav1.OwnerReference) (ownerReferenceDoc, bool) {
		d := docOf(r)
		if r.GetBlockOwnerDeletion() {
			f := false
			d.BlockOwnerDeletion = &f
		}
		return d, true
	})
}

// removeFinalizer drops finalizer from owner, retrying on conflicts.
func (gc *GarbageCollector) removeFinalizer(ctx context.Context, owner objectReference, finalizer string) error {
	err := controller.RetryOnConflict(func() error {
		obj, err := gc.getObject(ctx, owner)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cannot finalize owner %s, because cannot get it: %w. The garbage collector will retry later", owner, err)
		}
		m := obj.GetMetadata()
		if m.GetUid() != owner.UID {
			// That owner is gone; this is another object of its name.
			return nil
		}
		if !hasFinalizer(m, finalizer) {
			gc.log.Debug("finalizer already removed from object", "finalizer", finalizer, "object", owner.String())
			return nil
		}
		var p finalizersPatch
		p.Metadata.ResourceVersion = m.GetResourceVersion()
		p.Metadata.Finalizers = slices.DeleteFunc(slices.Clone(m.GetFinalizers()), func(f string) bool { return f == finalizer })
		body, err := json.Marshal(p)
		if err != nil {
			return err
		}
		_, err = gc.patchObject(ctx, owner, body)
		return err
	})
	if apierrors.IsConflict(err) {
		return fmt.Errorf("updateMaxRetries(%d) has reached. The garbage collector will retry later for owner %v: %w", controller.DefaultRetry.Steps, owner, err)
	}
	return err
}

func uidsOf(refs []ownerRef) []string {
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.UID)
	}
	return out
}

// eventQueue is the graph builder's unbounded FIFO (upstream's graphChanges):
// informer handlers never wait for the builder.
type eventQueue struct {
	mu    sync.Mutex
	items []*event
	wake  chan struct{}
}

func newEventQueue() *eventQueue { return &eventQueue{wake: make(chan struct{}, 1)} }

func (q *eventQueue) push(ev *event) {
	q.mu.Lock()
	q.items = append(q.items, ev)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop waits for the next event; false once ctx ends.
func (q *eventQueue) pop(ctx context.Context) (*event, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			ev := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			q.mu.Unlock()
			return ev, true
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			return nil, false
		}
	}
}
