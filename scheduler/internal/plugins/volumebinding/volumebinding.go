// Package volumebinding is upstream's VolumeBinding plugin
// (pkg/scheduler/framework/plugins/volumebinding): a pod's
// PersistentVolumeClaims decide which nodes it fits, and claims whose
// class waits for the first consumer are bound for the node chosen.
//
//   - PreFilter: the pod's claims (its persistentVolumeClaim volumes and
//     the claims of its generic ephemeral volumes) must exist and not be
//     being deleted; an unbound claim of an Immediate class rejects the
//     pod until the persistentvolume-binder binds it.
//   - Filter: a bound claim's volume must exist and its nodeAffinity match
//     the node; each unbound WaitForFirstConsumer claim needs, on that
//     node, an Available volume that fits it (smallest first, as the
//     binder chooses) or a class whose provisioner may provision there
//     (allowedTopologies, no selector on the claim).
//   - Reserve: the node's choices are assumed, so the next pods do not
//     pick the same volumes before the informers see the binding.
//   - PreBind: the chosen volumes get their claimRef (the binder then
//     completes the binding), the claims to provision get
//     volume.kubernetes.io/selected-node, and the pod waits, at most
//     BindTimeout, until every claim is bound.
//   - Unreserve: the assumptions are forgotten.
//
// Left out: CSI storage capacity and the volume-capacity score (both
// behind feature gates upstream), and the migration of in-tree plugins.
package volumebinding

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	corev1 "skiff.dev/proto/api/core/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/claimbinding"
	"skiff.dev/scheduler/internal/framework"
)

// Name is upstream's plugin name.
const Name = "VolumeBinding"

// Upstream's reasons.
const (
	ErrReasonBindConflict       = "node(s) didn't find available persistent volumes to bind"
	ErrReasonNodeConflict       = "node(s) had volume node affinity conflict"
	ErrReasonNotEnoughSpace     = "node(s) did not have enough free storage"
	ErrReasonPVNotExist         = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
	ErrUnboundImmediateClaims   = "pod has unbound immediate PersistentVolumeClaims"
	annSelectedNode             = "volume.kubernetes.io/selected-node"
	annBindCompleted            = "pv.kubernetes.io/bind-completed"
	annBoundByController        = "pv.kubernetes.io/bound-by-controller"
	noProvisioner               = "kubernetes.io/no-provisioner"
	stateKey                    = Name
	defaultBindTimeout          = 600 * time.Second
	defaultPollInterval         = 200 * time.Millisecond
	bindingWaitForFirstConsumer = "WaitForFirstConsumer"
)

// Plugin is the VolumeBinding plugin.
type Plugin struct {
	client  *client.Client
	claims  informers.Lister[*corev1.PersistentVolumeClaim]
	volumes informers.Lister[*corev1.PersistentVolume]
	classes informers.Lister[*storagev1.StorageClass]
	synced  []informer.Registration
	// BindTimeout bounds PreBind's wait for the claims to be bound
	// (upstream's bindTimeoutSeconds, 600).
	BindTimeout  time.Duration
	PollInterval time.Duration

	mu sync.Mutex
	// assumed are volumes reserved for a pod ("namespace/name") but not yet
	// seen bound by the informer.
	assumed map[string]string
}

// New builds the plugin over the scheduler's informers; without a factory
// it lets every pod through (for tests of profiles).
func New(c *client.Client, f *informers.Factory) *Plugin {
	p := &Plugin{client: c, BindTimeout: defaultBindTimeout, PollInterval: defaultPollInterval, assumed: map[string]string{}}
	if f == nil {
		return p
	}
	pvc := informers.For[*corev1.PersistentVolumeClaim](f)
	pv := informers.For[*corev1.PersistentVolume](f)
	sc := informers.For[*storagev1.StorageClass](f)
	p.claims, p.volumes, p.classes = pvc.Lister(), pv.Lister(), sc.Lister()
	p.synced = []informer.Registration{pvc.Informer(), pv.Informer(), sc.Informer()}
	return p
}

// Name is the plugin's name.
func (*Plugin) Name() string { return Name }

// Synced are the informers the plugin reads, for the scheduler to wait on.
func (p *Plugin) Synced() []informer.Registration { return p.synced }

// binding is a volume chosen for a claim.
type binding struct {
	claim  *corev1.PersistentVolumeClaim
	volume *corev1.PersistentVolume
}

// podVolumes is what one node needs done for the pod.
type podVolumes struct {
	bindings  []binding
	provision []*corev1.PersistentVolumeClaim
}

type state struct {
	skip    bool
	bound   []*corev1.PersistentVolumeClaim
	delayed []*corev1.PersistentVolumeClaim
	mu      sync.Mutex
	byNode  map[string]*podVolumes
	// chosen is the node Reserve took.
	chosen *podVolumes
}

func getState(cs *framework.CycleState) (*state, bool) {
	v, ok := cs.Read(stateKey)
	if !ok {
		return nil, false
	}
	s, ok := v.(*state)
	return s, ok
}

// claimNames are the claims a pod uses, including those of its generic
// ephemeral volumes ("<pod>-<volume>").
func claimNames(pod *corev1.Pod) []string {
	var out []string
	for _, v := range pod.GetSpec().GetVolumes() {
		switch src := v.GetVolumeSource(); {
		case src.GetPersistentVolumeClaim() != nil:
			out = append(out, src.GetPersistentVolumeClaim().GetClaimName())
		case src.GetEphemeral() != nil:
			out = append(out, pod.GetMetadata().GetName()+"-"+v.GetName())
		}
	}
	return out
}

// PreFilter sorts the pod's claims into bound and delayed, and rejects the
// pod while a claim is missing or an Immediate one is unbound.
func (p *Plugin) PreFilter(_ context.Context, cs *framework.CycleState, pi *framework.PodInfo, _ []*framework.NodeInfo) *framework.Status {
	s := &state{byNode: map[string]*podVolumes{}}
	cs.Write(stateKey, s)
	names := claimNames(pi.Pod)
	if len(names) == 0 || p.claims == nil {
		s.skip = true
		return nil
	}
	ns := pi.Pod.GetMetadata().GetNamespace()
	immediate := 0
	for _, n := range names {
		c, err := p.claims.Get(ns, n)
		if apierrors.IsNotFound(err) {
			return framework.NewStatus(framework.UnschedulableAndUnresolvable, fmt.Sprintf("persistentvolumeclaim %q not found", n))
		}
		if err != nil {
			return framework.AsStatus(err)
		}
		if c.GetMetadata().GetDeletionTimestamp() != nil {
			return framework.NewStatus(framework.UnschedulableAndUnresolvable, fmt.Sprintf("persistentvolumeclaim %q is being deleted", n))
		}
		switch {
		case c.GetSpec().GetVolumeName() != "":
			s.bound = append(s.bound, c)
		case p.delayBinding(c):
			s.delayed = append(s.delayed, c)
		default:
			immediate++
		}
	}
	if immediate > 0 {
		return framework.NewStatus(framework.UnschedulableAndUnresolvable, ErrUnboundImmediateClaims)
	}
	return nil
}

func (p *Plugin) delayBinding(c *corev1.PersistentVolumeClaim) bool {
	n := claimbinding.ClaimClass(c)
	if n == "" {
		return false
	}
	sc, err := p.classes.Get("", n)
	return err == nil && sc.GetVolumeBindingMode() == bindingWaitForFirstConsumer
}

// Filter checks the node against the pod's claims.
func (p *Plugin) Filter(_ context.Context, cs *framework.CycleState, _ *framework.PodInfo, ni *framework.NodeInfo) *framework.Status {
	s, ok := getState(cs)
	if !ok || s.skip {
		return nil
	}
	node := ni.Node
	for _, c := range s.bound {
		v, err := p.volumes.Get("", c.GetSpec().GetVolumeName())
		if err != nil {
			return framework.NewStatus(framework.UnschedulableAndUnresolvable, ErrReasonPVNotExist)
		}
		if !claimbinding.NodeFits(v, node) {
			return framework.NewStatus(framework.UnschedulableAndUnresolvable, ErrReasonNodeConflict)
		}
	}
	if len(s.delayed) == 0 {
		return nil
	}
	pv := &podVolumes{}
	taken := map[string]bool{}
	for _, c := range s.delayed {
		if v := p.findVolume(c, node, taken); v != nil {
			taken[v.GetMetadata().GetName()] = true
			pv.bindings = append(pv.bindings, binding{claim: c, volume: v})
			continue
		}
		if !p.canProvision(c, node) {
			return framework.NewStatus(framework.UnschedulableAndUnresolvable, ErrReasonBindConflict)
		}
		pv.provision = append(pv.provision, c)
	}
	s.mu.Lock()
	s.byNode[ni.Name()] = pv
	s.mu.Unlock()
	return nil
}

// findVolume is the smallest Available volume on node that fits the claim
// and that neither this pod nor another assumed pod has taken; a volume
// pre-bound to the claim wins.
func (p *Plugin) findVolume(c *corev1.PersistentVolumeClaim, node *corev1.Node, taken map[string]bool) *corev1.PersistentVolume {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, err := claimbinding.FindMatchingVolume(c, p.volumes.List(nil), claimbinding.Match{Node: node,
		Taken:    func(name string) bool { return taken[name] },
		Reserved: func(name string) bool { return p.assumed[name] != "" }})
	if err != nil {
		return nil // a selector validation refused; no volume can match it
	}
	return v
}

// canProvision: the claim's class has a provisioner, the claim selects no
// particular volume, and the class's allowedTopologies admit the node.
func (p *Plugin) canProvision(c *corev1.PersistentVolumeClaim, node *corev1.Node) bool {
	if c.GetSpec().GetSelector() != nil {
		return false // upstream: claims with a selector are not provisioned
	}
	sc, err := p.classes.Get("", claimbinding.ClaimClass(c))
	if err != nil || sc.GetProvisioner() == "" || sc.GetProvisioner() == noProvisioner {
		return false
	}
	terms := sc.GetAllowedTopologies()
	if len(terms) == 0 {
		return true
	}
	nl := node.GetMetadata().GetLabels()
	for _, t := range terms {
		ok := true
		for _, r := range t.GetMatchLabelExpressions() {
			if v, has := nl[r.Key]; !has || !slices.Contains(r.Values, v) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// Reserve assumes the node's volume choices for the pod.
func (p *Plugin) Reserve(_ context.Context, cs *framework.CycleState, pi *framework.PodInfo, node string) *framework.Status {
	s, ok := getState(cs)
	if !ok || s.skip || len(s.delayed) == 0 {
		return nil
	}
	s.mu.Lock()
	pv := s.byNode[node]
	s.mu.Unlock()
	if pv == nil {
		return framework.NewStatus(framework.Error, "no volume decisions for node "+node)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range pv.bindings {
		name := b.volume.GetMetadata().GetName()
		if owner, ok := p.assumed[name]; ok && owner != pi.Key() {
			return framework.NewStatus(framework.Unschedulable, ErrReasonBindConflict)
		}
	}
	for _, b := range pv.bindings {
		p.assumed[b.volume.GetMetadata().GetName()] = pi.Key()
	}
	s.chosen = pv
	return nil
}

// Unreserve forgets the pod's assumptions.
func (p *Plugin) Unreserve(_ context.Context, cs *framework.CycleState, pi *framework.PodInfo, _ string) {
	s, ok := getState(cs)
	if !ok || s.chosen == nil {
		return
	}
	p.forget(pi.Key(), s.chosen)
	s.chosen = nil
}

func (p *Plugin) forget(pod string, pv *podVolumes) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range pv.bindings {
		if p.assumed[b.volume.GetMetadata().GetName()] == pod {
			delete(p.assumed, b.volume.GetMetadata().GetName())
		}
	}
}

// PreBind writes the bindings and provisioning requests, then waits until
// the binder has bound every claim of the pod.
func (p *Plugin) PreBind(ctx context.Context, cs *framework.CycleState, pi *framework.PodInfo, node string) *framework.Status {
	s, ok := getState(cs)
	if !ok || s.skip || s.chosen == nil {
		return nil
	}
	pv := s.chosen
	for _, b := range pv.bindings {
		if err := p.bindVolume(ctx, b); err != nil {
			return framework.AsStatus(err)
		}
	}
	written := map[string]string{} // claim name → resourceVersion of our write
	for _, c := range pv.provision {
		rv, err := p.selectNode(ctx, c, node)
		if err != nil {
			return framework.AsStatus(err)
		}
		written[c.GetMetadata().GetName()] = rv
	}
	ctx, cancel := context.WithTimeout(ctx, p.BindTimeout)
	defer cancel()
	t := time.NewTicker(p.PollInterval)
	defer t.Stop()
	for {
		done, err := p.allBound(pi.Pod.GetMetadata().GetNamespace(), pv, written)
		if err != nil {
			return framework.AsStatus(err)
		}
		if done {
			p.forget(pi.Key(), pv) // the informer has the bindings now
			return nil
		}
		select {
		case <-ctx.Done():
			return framework.AsStatus(fmt.Errorf("binding volumes: timed out waiting for the condition: %w", ctx.Err()))
		case <-t.C:
		}
	}
}

// bindVolume pre-binds the volume to the claim, as upstream's
// BindPodVolumes does: the binder finishes the claim's side.
func (p *Plugin) bindVolume(ctx context.Context, b binding) error {
	pvs := client.For[*corev1.PersistentVolume](p.client, "")
	cur, err := pvs.Get(ctx, b.volume.GetMetadata().GetName())
	if err != nil {
		return fmt.Errorf("binding volume %s: %w", b.volume.GetMetadata().GetName(), err)
	}
	m := b.claim.GetMetadata()
	if ref := cur.GetSpec().GetClaimRef(); ref != nil {
		if ref.Namespace == m.GetNamespace() && ref.Name == m.GetName() && (ref.Uid == "" || ref.Uid == m.GetUid()) {
			return nil
		}
		return fmt.Errorf("volume %s was bound to %s/%s meanwhile", cur.GetMetadata().GetName(), ref.Namespace, ref.Name)
	}
	v := proto.Clone(cur).(*corev1.PersistentVolume)
	v.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", ApiVersion: "v1", Namespace: m.GetNamespace(),
		Name: m.GetName(), Uid: m.GetUid(), ResourceVersion: m.GetResourceVersion()}
	if v.Metadata.Annotations == nil {
		v.Metadata.Annotations = map[string]string{}
	}
	v.Metadata.Annotations[annBoundByController] = "yes"
	if _, err := pvs.Update(ctx, v); err != nil {
		return fmt.Errorf("binding volume %s: %w", v.GetMetadata().GetName(), err)
	}
	return nil
}

// selectNode asks the claim's provisioner for a volume on node; it
// returns the resourceVersion that carries the request.
func (p *Plugin) selectNode(ctx context.Context, c *corev1.PersistentVolumeClaim, node string) (string, error) {
	claims := client.For[*corev1.PersistentVolumeClaim](p.client, c.GetMetadata().GetNamespace())
	for attempt := 0; ; attempt++ {
		cur, err := claims.Get(ctx, c.GetMetadata().GetName())
		if err != nil {
			return "", fmt.Errorf("selecting node for claim %s: %w", c.GetMetadata().GetName(), err)
		}
		if cur.GetSpec().GetVolumeName() != "" || cur.GetMetadata().GetAnnotations()[annSelectedNode] == node {
			return cur.GetMetadata().GetResourceVersion(), nil
		}
		cl := proto.Clone(cur).(*corev1.PersistentVolumeClaim)
		if cl.Metadata.Annotations == nil {
			cl.Metadata.Annotations = map[string]string{}
		}
		cl.Metadata.Annotations[annSelectedNode] = node
		out, err := claims.Update(ctx, cl)
		if err == nil {
			return out.GetMetadata().GetResourceVersion(), nil
		}
		if !apierrors.IsConflict(err) || attempt >= 4 {
			return "", fmt.Errorf("selecting node for claim %s: %w", c.GetMetadata().GetName(), err)
		}
	}
}

// allBound: every claim of the decision is bound (upstream's
// checkBindings). A claim to provision whose selected node was taken away
// (the provisioner gave up on it) fails the wait so the pod is scheduled
// again.
func (p *Plugin) allBound(ns string, pv *podVolumes, written map[string]string) (bool, error) {
	check := func(name string, provisioning bool) (bool, error) {
		c, err := p.claims.Get(ns, name)
		if err != nil {
			return false, fmt.Errorf("claim %s: %w", name, err)
		}
		if olderThan(c.GetMetadata().GetResourceVersion(), written[name]) {
			return false, nil // the informer has not seen our write yet
		}
		if c.GetSpec().GetVolumeName() == "" || !hasKey(c.GetMetadata().GetAnnotations(), annBindCompleted) {
			if provisioning && !hasKey(c.GetMetadata().GetAnnotations(), annSelectedNode) {
				return false, fmt.Errorf("selectedNode annotation reset for PVC %q", name)
			}
			return false, nil
		}
		v, err := p.volumes.Get("", c.GetSpec().GetVolumeName())
		if err != nil {
			return false, nil
		}
		return v.GetSpec().GetClaimRef().GetUid() == c.GetMetadata().GetUid(), nil
	}
	for _, b := range pv.bindings {
		if ok, err := check(b.claim.GetMetadata().GetName(), false); !ok || err != nil {
			return false, err
		}
	}
	for _, c := range pv.provision {
		if ok, err := check(c.GetMetadata().GetName(), true); !ok || err != nil {
			return false, err
		}
	}
	return true, nil
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

// olderThan compares resourceVersions (etcd revisions); "" is never newer.
func olderThan(rv, than string) bool {
	a, err1 := strconv.ParseInt(rv, 10, 64)
	b, err2 := strconv.ParseInt(than, 10, 64)
	return err1 == nil && err2 == nil && a < b
}
