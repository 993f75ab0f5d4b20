package daemonset

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"skiff.dev/client"
	"skiff.dev/client/controller"
	"skiff.dev/client/record"
	"skiff.dev/controller-manager/internal/controllers/history"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

const (
	// templateGenerationLabel is upstream's DaemonSetTemplateGenerationKey
	// on pods; templateGenerationAnnotation its source on the DaemonSet.
	templateGenerationLabel      = "pod-template-generation"
	templateGenerationAnnotation = "deprecated.daemonset.template.generation"

	successfulCreateReason = "SuccessfulCreate"
	failedCreateReason     = "FailedCreate"
	successfulDeleteReason = "SuccessfulDelete"
	failedDeleteReason     = "FailedDelete"
	failedDaemonPodReason  = "FailedDaemonPod"
	selectingAllReason     = "SelectingAll"
)

// templateGeneration is the DaemonSet's template generation: upstream's
// annotation when the apiserver keeps one, else none.
func templateGeneration(ds *appsv1.DaemonSet) (int64, bool) {
	v, ok := ds.GetMetadata().GetAnnotations()[templateGenerationAnnotation]
	if !ok {
		return 0, false
	}
	g, err := strconv.ParseInt(v, 10, 64)
	return g, err == nil
}

// isPodUpdated is upstream's IsPodUpdated: the pod carries the current
// revision's hash, or the current template generation.
func isPodUpdated(ds *appsv1.DaemonSet, pod *corev1.Pod, hash string) bool {
	l := pod.GetMetadata().GetLabels()
	if hash != "" && l[history.ControllerRevisionHashLabel] == hash {
		return true
	}
	g, ok := templateGeneration(ds)
	return ok && l[templateGenerationLabel] == strconv.FormatInt(g, 10)
}

func isPodReady(p *corev1.Pod) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

// isPodAvailable is upstream's podutil.IsPodAvailable.
func isPodAvailable(p *corev1.Pod, minReadySeconds int32, now time.Time) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() != "Ready" {
			continue
		}
		if c.GetStatus() != "True" {
			return false
		}
		if minReadySeconds == 0 {
			return true
		}
		t := c.GetLastTransitionTime()
		return !t.IsZero() && !t.AsTime().Add(time.Duration(minReadySeconds)*time.Second).After(now)
	}
	return false
}

func isPodTerminal(p *corev1.Pod) bool {
	ph := p.GetStatus().GetPhase()
	return ph == "Succeeded" || ph == "Failed"
}

func surgeAllowed(ds *appsv1.DaemonSet) bool {
	if ds.GetSpec().GetUpdateStrategy().GetType() == "OnDelete" {
		return false
	}
	n, err := ds.GetSpec().GetUpdateStrategy().GetRollingUpdate().GetMaxSurge().ScaledValue(1, true)
	return err == nil && n > 0
}

func isRollingUpdate(ds *appsv1.DaemonSet) bool {
	t := ds.GetSpec().GetUpdateStrategy().GetType()
	return t == "" || t == "RollingUpdate"
}

// byCreationAndPhase is upstream's podByCreationTimestampAndPhase: running
// (scheduled) pods first, then older first, then by name.
func byCreationAndPhase(pods []*corev1.Pod) {
	sort.SliceStable(pods, func(i, j int) bool {
		a, b := pods[i], pods[j]
		if (a.GetSpec().GetNodeName() != "") != (b.GetSpec().GetNodeName() != "") {
			return a.GetSpec().GetNodeName() != ""
		}
		ta, tb := a.GetMetadata().GetCreationTimestamp().AsTime(), b.GetMetadata().GetCreationTimestamp().AsTime()
		if !ta.Equal(tb) {
			return ta.Before(tb)
		}
		return a.GetMetadata().GetName() < b.GetMetadata().GetName()
	})
}

// reconcile is upstream's syncDaemonSet.
func (c *Controller) reconcile(ctx context.Context, key string) error {
	ns, name, err := controller.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	cached, err := c.dsLister.Get(ns, name)
	if apierrors.IsNotFound(err) {
		c.exp.DeleteExpectations(key)
		return nil
	}
	if err != nil {
		return err
	}
	ds := proto.Clone(cached).(*appsv1.DaemonSet)
	if ds.Spec == nil {
		ds.Spec = &appsv1.DaemonSetSpec{}
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.GetSelector())
	if err != nil {
		c.log.Error("Invalid selector", "daemonset", key, "err", err)
		return nil
	}
	if sel.Empty() {
		c.recorder.Eventf(ds, record.Warning, selectingAllReason, "This daemon set is selecting all pods. A non-empty selector is required.")
		return nil
	}
	if ds.Metadata.GetDeletionTimestamp() != nil {
		// The garbage collector removes its pods; nothing to do.
		return nil
	}
	nodes := c.nodeLister.List(labels.Everything())

	cur, old, err := c.constructHistory(ctx, ds, sel)
	if err != nil {
		return fmt.Errorf("failed to construct revisions of DaemonSet: %w", err)
	}
	hash := cur.GetMetadata().GetLabels()[history.ControllerRevisionHashLabel]

	if !c.exp.SatisfiedExpectations(key) {
		// Creations or deletions are in flight: only report.
		return c.updateStatus(ctx, ds, sel, nodes, hash, false)
	}
	if err := c.manage(ctx, ds, sel, nodes, hash); err != nil {
		return err
	}
	// Rolling updates wait for the manage step's writes to be observed.
	if c.exp.SatisfiedExpectations(key) && isRollingUpdate(ds) {
		if err := c.rollingUpdate(ctx, ds, sel, nodes, hash); err != nil {
			return err
		}
	}
	if err := c.cleanupHistory(ctx, ds, sel, old); err != nil {
		return fmt.Errorf("failed to clean up revisions of DaemonSet: %w", err)
	}
	return c.updateStatus(ctx, ds, sel, nodes, hash, true)
}

// daemonPods are the DaemonSet's pods after adoption and release.
func (c *Controller) daemonPods(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector) ([]*corev1.Pod, error) {
	all := c.podLister.Namespace(ds.Metadata.GetNamespace()).List(labels.Everything())
	m := controller.NewRefManager(c.client, ds, dsKind, sel, nil)
	return controller.Claim(ctx, m, all)
}

// nodesToDaemonPods groups the DaemonSet's pods by the node they are on or
// pinned to. Terminal pods already being deleted are left out unless
// includeDeletedTerminal: the kubelet or the pod GC is done with them.
func (c *Controller) nodesToDaemonPods(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector, includeDeletedTerminal bool) (map[string][]*corev1.Pod, error) {
	pods, err := c.daemonPods(ctx, ds, sel)
	if err != nil {
		return nil, err
	}
	out := map[string][]*corev1.Pod{}
	for _, p := range pods {
		if !includeDeletedTerminal && isPodTerminal(p) && p.GetMetadata().GetDeletionTimestamp() != nil {
			continue
		}
		n, err := targetNodeName(p)
		if err != nil {
			c.log.Info("Failed to get target node name of Pod in DaemonSet", "pod", controller.KeyFunc(p), "err", err)
			continue
		}
		out[n] = append(out[n], p)
	}
	return out, nil
}

// manage is upstream's manage: a pod for every eligible node lacking one,
// none on a node that should not run one, failed pods replaced (with
// backoff), extra pods on a node removed.
func (c *Controller) manage(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector, nodes []*corev1.Node, hash string) error {
	byNode, err := c.nodesToDaemonPods(ctx, ds, sel, false)
	if err != nil {
		return fmt.Errorf("couldn't get node to daemon pod mapping for daemon set %q: %w", ds.Metadata.GetName(), err)
	}
	spec := newPodSpec(ds.Spec.GetTemplate())
	var create, del []string
	known := map[string]bool{}
	for _, n := range nodes {
		known[n.GetMetadata().GetName()] = true
		cr, dl := c.podsShouldBeOnNode(ds, spec, n, byNode, hash)
		create = append(create, cr...)
		del = append(del, dl...)
	}
	// Pods pinned to a node that no longer exists and never scheduled.
	for name, pods := range byNode {
		if known[name] {
			continue
		}
		for _, p := range pods {
			if p.GetSpec().GetNodeName() == "" && p.GetMetadata().GetDeletionTimestamp() == nil {
				del = append(del, p.GetMetadata().GetName())
			}
		}
	}
	sort.Strings(create)
	c.backoff.gc(c.now())
	return c.syncNodes(ctx, ds, del, create, hash)
}

// podsShouldBeOnNode is upstream's: the node needing a pod, or the pods to
// delete there.
func (c *Controller) podsShouldBeOnNode(ds *appsv1.DaemonSet, spec *corev1.PodSpec, n *corev1.Node, byNode map[string][]*corev1.Pod, hash string) (create, del []string) {
	name := n.GetMetadata().GetName()
	shouldRun, shouldContinue := nodeShouldRunDaemonPod(n, spec)
	pods, exists := byNode[name]
	switch {
	case shouldRun && !exists:
		create = append(create, name)
	case shouldContinue:
		var running []*corev1.Pod
		for _, p := range pods {
			if p.GetMetadata().GetDeletionTimestamp() != nil {
				continue
			}
			switch p.GetStatus().GetPhase() {
			case "Failed":
				// The kubelet may keep rejecting it: back off before the
				// next replacement.
				bk := controller.KeyFunc(ds) + "/" + name
				now := c.now()
				if d, in := c.backoff.inBackoff(bk, now); in {
					c.queue.AddAfter(controller.KeyFunc(ds), d)
					continue
				}
				c.backoff.next(bk, now)
				c.recorder.Eventf(ds, record.Warning, failedDaemonPodReason,
					"Found failed daemon pod %s/%s on node %s, will try to kill it", p.GetMetadata().GetNamespace(), p.GetMetadata().GetName(), name)
				del = append(del, p.GetMetadata().GetName())
			case "Succeeded":
				del = append(del, p.GetMetadata().GetName())
			default:
				running = append(running, p)
			}
		}
		if !surgeAllowed(ds) {
			// One pod per node: keep the oldest.
			if len(running) > 1 {
				byCreationAndPhase(running)
				for _, p := range running[1:] {
					del = append(del, p.GetMetadata().GetName())
				}
			}
			break
		}
		if len(running) <= 1 {
			if len(running) == 0 && shouldRun {
				create = append(create, name)
			}
			break
		}
		// Surging: at most the oldest new and the oldest old pod; the old one
		// goes once it is not ready or the new one is available.
		byCreationAndPhase(running)
		var oldestNew, oldestOld *corev1.Pod
		for _, p := range running {
			if p.GetMetadata().GetLabels()[history.ControllerRevisionHashLabel] == hash {
				if oldestNew == nil {
					oldestNew = p
					continue
				}
			} else if oldestOld == nil {
				oldestOld = p
				continue
			}
			del = append(del, p.GetMetadata().GetName())
		}
		if oldestNew != nil && oldestOld != nil {
			if !isPodReady(oldestOld) || isPodAvailable(oldestNew, ds.Spec.GetMinReadySeconds(), c.now()) {
				del = append(del, oldestOld.GetMetadata().GetName())
			}
		}
	case !shouldContinue && exists:
		for _, p := range pods {
			if p.GetMetadata().GetDeletionTimestamp() == nil {
				del = append(del, p.GetMetadata().GetName())
			}
		}
	}
	return create, del
}

// podTemplate is upstream's CreatePodTemplate: the DaemonSet's template
// with the daemon tolerations and the generation and hash labels.
func podTemplate(ds *appsv1.DaemonSet, hash string) *corev1.PodTemplateSpec {
	t := proto.Clone(ds.Spec.GetTemplate()).(*corev1.PodTemplateSpec)
	if t == nil {
		t = &corev1.PodTemplateSpec{}
	}
	if t.Spec == nil {
		t.Spec = &corev1.PodSpec{}
	}
	if t.Metadata == nil {
		t.Metadata = &metav1.ObjectMeta{}
	}
	addDaemonPodTolerations(t.Spec)
	l := maps.Clone(t.Metadata.Labels)
	if l == nil {
		l = map[string]string{}
	}
	g, ok := templateGeneration(ds)
	if !ok {
		g = ds.GetMetadata().GetGeneration()
	}
	l[templateGenerationLabel] = strconv.FormatInt(g, 10)
	if hash != "" {
		l[history.ControllerRevisionHashLabel] = hash
	}
	t.Metadata.Labels = l
	return t
}

func namespaceTerminating(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(apierrors.Message(err), "because it is being terminated")
}

// syncNodes is upstream's: delete the pods named (in parallel) and create a
// pod for each node named, in slow-start batches, at most burstReplicas of
// each, with expectations for what the informer must then show.
func (c *Controller) syncNodes(ctx context.Context, ds *appsv1.DaemonSet, del, create []string, hash string) error {
	key := controller.KeyFunc(ds)
	createDiff, deleteDiff := min(len(create), burstReplicas), min(len(del), burstReplicas)
	c.exp.SetExpectations(key, createDiff, deleteDiff)
	var (
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	tmpl := podTemplate(ds, hash)
	ref := controller.NewControllerRef(ds, dsKind)
	batch := min(createDiff, 1)
	for pos := 0; pos < createDiff; pos, batch = pos+batch, min(2*batch, createDiff-(pos+batch)) {
		before := len(errs)
		var wg sync.WaitGroup
		for i := pos; i < pos+batch; i++ {
			node := create[i]
			wg.Go(func() {
				if err := c.createPod(ctx, ds, tmpl, ref, node); err != nil {
					c.exp.CreationObserved(key)
					if !namespaceTerminating(err) {
						fail(err)
					}
				}
			})
		}
		wg.Wait()
		if skipped := createDiff - (pos + batch); len(errs) > before && skipped > 0 {
			c.exp.LowerExpectations(key, skipped, 0)
			break
		}
	}
	var wg sync.WaitGroup
	for _, name := range del[:deleteDiff] {
		wg.Go(func() {
			if err := c.deletePodNamed(ctx, ds, name); err != nil {
				c.exp.DeletionObserved(key)
				if !apierrors.IsNotFound(err) {
					fail(err)
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Controller) createPod(ctx context.Context, ds *appsv1.DaemonSet, tmpl *corev1.PodTemplateSpec, ref *metav1.OwnerReference, node string) error {
	spec := proto.Clone(tmpl.GetSpec()).(*corev1.PodSpec)
	spec.Affinity = replaceNodeNameAffinity(spec.Affinity, node)
	tm := tmpl.GetMetadata()
	pod := &corev1.Pod{
		Metadata: &metav1.ObjectMeta{
			GenerateName:    ds.Metadata.GetName() + "-",
			Namespace:       ds.Metadata.GetNamespace(),
			Labels:          maps.Clone(tm.GetLabels()),
			Annotations:     maps.Clone(tm.GetAnnotations()),
			Finalizers:      append([]string(nil), tm.GetFinalizers()...),
			OwnerReferences: []*metav1.OwnerReference{ref},
		},
		Spec: spec,
	}
	created, err := client.For[*corev1.Pod](c.client, ds.Metadata.GetNamespace()).Create(ctx, pod)
	if err != nil {
		if !namespaceTerminating(err) {
			c.recorder.Eventf(ds, record.Warning, failedCreateReason, "Error creating: %v", apierrors.Message(err))
		}
		return err
	}
	c.recorder.Eventf(ds, record.Normal, successfulCreateReason, "Created pod: %v", created.GetMetadata().GetName())
	return nil
}

// deletePodNamed deletes a pod of the cache, guarded by its UID.
func (c *Controller) deletePodNamed(ctx context.Context, ds *appsv1.DaemonSet, name string) error {
	ns := ds.Metadata.GetNamespace()
	opts := client.DeleteOptions{}
	if p, err := c.podLister.Get(ns, name); err == nil {
		uid := p.GetMetadata().GetUid()
		opts.Preconditions = &apipb.Preconditions{Uid: &uid}
	}
	_, err := client.For[*corev1.Pod](c.client, ns).Delete(ctx, name, opts)
	if err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return apierrors.NewNotFound(podKind.GroupResource(), name)
		}
		c.recorder.Eventf(ds, record.Warning, failedDeleteReason, "Error deleting: %v", apierrors.Message(err))
		return err
	}
	c.recorder.Eventf(ds, record.Normal, successfulDeleteReason, "Deleted pod: %v", name)
	return nil
}

// updateStatus is upstream's updateDaemonSetStatus.
func (c *Controller) updateStatus(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector, nodes []*corev1.Node, hash string, observed bool) error {
	byNode, err := c.nodesToDaemonPods(ctx, ds, sel, false)
	if err != nil {
		return err
	}
	now := c.now()
	spec := newPodSpec(ds.Spec.GetTemplate())
	mrs := ds.Spec.GetMinReadySeconds()
	st := proto.Clone(ds.GetStatus()).(*appsv1.DaemonSetStatus)
	if st == nil {
		st = &appsv1.DaemonSetStatus{}
	}
	var desired, current, mis, ready, updated, available int32
	for _, n := range nodes {
		run, _ := nodeShouldRunDaemonPod(n, spec)
		pods := byNode[n.GetMetadata().GetName()]
		if !run {
			if len(pods) > 0 {
				mis++
			}
			continue
		}
		desired++
		if len(pods) == 0 {
			continue
		}
		current++
		pods = append([]*corev1.Pod(nil), pods...)
		byCreationAndPhase(pods)
		p := pods[0]
		if isPodReady(p) {
			ready++
			if isPodAvailable(p, mrs, now) {
				available++
			}
		}
		if isPodUpdated(ds, p, hash) {
			updated++
		}
	}
	st.DesiredNumberScheduled, st.CurrentNumberScheduled, st.NumberMisscheduled = desired, current, mis
	st.NumberReady, st.UpdatedNumberScheduled, st.NumberAvailable = ready, updated, available
	st.NumberUnavailable = desired - available
	if observed {
		st.ObservedGeneration = ds.Metadata.GetGeneration()
	}
	if mrs > 0 && ready != available {
		c.queue.AddAfter(controller.KeyFunc(ds), time.Duration(mrs)*time.Second)
	}
	if proto.Equal(st, ds.GetStatus()) {
		return nil
	}
	out := proto.Clone(ds).(*appsv1.DaemonSet)
	out.Status = st
	api := client.For[*appsv1.DaemonSet](c.client, ds.Metadata.GetNamespace())
	_, err = api.UpdateStatus(ctx, out)
	if apierrors.IsConflict(err) {
		// One retry on a fresh copy, as upstream's StatusUpdateRetries.
		fresh, gerr := api.Get(ctx, ds.Metadata.GetName())
		if gerr != nil {
			return gerr
		}
		if fresh.GetMetadata().GetUid() != ds.Metadata.GetUid() {
			return nil
		}
		st.CollisionCount = collisionCount(fresh)
		fresh.Status = st
		_, err = api.UpdateStatus(ctx, fresh)
	}
	return err
}
