// Package resourcequota is upstream's ResourceQuota admission plugin: a
// write that would take a namespace's usage over one of its quotas is
// refused, and one that fits is charged to every quota it falls under
// before it is stored.
//
// The charge is what makes quota safe under concurrency: status.used of
// each quota the object counts against is raised in a write guarded by the
// quota's resourceVersion, before the object is admitted. Of two creates
// that read the same usage, one write fails with Conflict, and that create
// reads the quota again and is checked against the new usage, so no two
// writes squeeze under a limit that only one fits. Within one apiserver the
// charges of a namespace are also serialised, so they rarely conflict at
// all; across apiservers the guard alone decides. The resourcequota
// controller later recomputes status.used from what is stored, which takes
// back charges for writes that failed after admission.
package resourcequota

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/apiserver/internal/admission"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/quota"
	"skiff.dev/proto/scheme"
)

// PluginName is upstream's name for it.
const PluginName = "ResourceQuota"

// maxAttempts bounds the re-reads after conflicting charges.
const maxAttempts = 20

// Store reads and charges quotas.
type Store interface {
	// Quotas lists the namespace's quotas; fresh asks for a read at least
	// as new as the latest write, else a cached one will do (and the store
	// looks again when its cache has none, as one created a moment ago may
	// not have reached it). The objects may be shared: the plugin clones
	// before changing one.
	Quotas(ctx context.Context, namespace string, fresh bool) ([]*corev1.ResourceQuota, error)
	// UpdateStatus writes q's status, guarded by q's resourceVersion: the
	// API's Conflict when the stored quota moved.
	UpdateStatus(ctx context.Context, q *corev1.ResourceQuota) error
}

// Plugin is the ResourceQuota plugin.
type Plugin struct {
	store Store
	now   func() time.Time

	mu    sync.Mutex
	locks map[string]*nsLock
}

type nsLock struct {
	sync.Mutex
	users int
}

// New returns the plugin; SetStore must be called before it admits.
func New() *Plugin { return &Plugin{now: time.Now, locks: map[string]*nsLock{}} }

// SetStore is the server's hook, once the registry exists.
func (p *Plugin) SetStore(s Store) { p.store = s }

// Name is PluginName.
func (p *Plugin) Name() string { return PluginName }

// Handles creates and updates.
func (p *Plugin) Handles(op admission.Operation) bool {
	return op == admission.Create || op == admission.Update
}

// Validate refuses what exceeds a quota and charges what fits.
func (p *Plugin) Validate(ctx context.Context, a *admission.Attributes) error {
	if a.Subresource != "" || a.Kind == nil || !a.Kind.Namespaced || a.Kind.CreateOnly || a.Object == nil {
		return nil
	}
	if !quota.Handles(a.Kind, quota.Operation(a.Operation)) {
		return nil
	}
	if p.store == nil {
		return apierrors.NewInternal(fmt.Errorf("%s: no quota store", PluginName))
	}
	delta := quota.Usage(a.Kind, a.Object, p.now())
	if a.Operation == admission.Update {
		old := a.OldObject()
		if old == nil || old.GetMetadata().GetResourceVersion() == "" {
			// Create on update: charge it all.
		} else {
			delta = quota.SubtractNonNegative(delta, quota.Usage(a.Kind, old, p.now()))
		}
	}

	unlock := p.lock(a.Namespace)
	defer unlock()
	charged := map[string]bool{}
	for attempt := 0; ; attempt++ {
		quotas, err := p.store.Quotas(ctx, a.Namespace, attempt > 0)
		if err != nil {
			return err
		}
		updates, err := check(a, delta, quotas, charged)
		if err != nil || len(updates) == 0 || a.DryRun {
			return err
		}
		conflicted := false
		for _, q := range updates {
			err := p.store.UpdateStatus(ctx, q)
			switch {
			case err == nil:
				charged[q.GetMetadata().GetName()] = true
			case apierrors.IsConflict(err):
				conflicted = true
			default:
				return err
			}
		}
		if !conflicted {
			return nil
		}
		if attempt+1 >= maxAttempts || ctx.Err() != nil {
			return apierrors.NewForbidden(a.Kind.GroupResource(), a.Name,
				fmt.Sprintf("unable to update quota status after %d attempts: the quota is too contended", attempt+1))
		}
	}
}

// check is upstream's checkRequest: the quotas obj falls under, with
// status.used raised by delta, or the API's Forbidden. Quotas in charged
// were raised by an earlier attempt and are skipped.
func check(a *admission.Attributes, delta quota.List, quotas []*corev1.ResourceQuota, charged map[string]bool) ([]*corev1.ResourceQuota, error) {
	forbidden := func(msg string) error {
		return apierrors.NewForbidden(a.Kind.GroupResource(), a.Name, msg)
	}
	quotas = slices.Clone(quotas)
	slices.SortFunc(quotas, func(x, y *corev1.ResourceQuota) int {
		if x.GetMetadata().GetName() < y.GetMetadata().GetName() {
			return -1
		}
		return 1
	})
	var interesting []*corev1.ResourceQuota
	for _, q := range quotas {
		if charged[q.GetMetadata().GetName()] {
			continue
		}
		match, err := quota.Matches(q, a.Kind, a.Object)
		if err != nil {
			return nil, apierrors.NewInternal(err)
		}
		if !match {
			continue
		}
		hard := quota.FromProto(q.GetStatus().GetHard())
		restricted := quota.MatchingResources(a.Kind, hard.Names())
		if err := quota.Constraints(restricted, a.Object); err != nil {
			return nil, forbidden(fmt.Sprintf("failed quota: %s: %v", q.GetMetadata().GetName(), err))
		}
		used := q.GetStatus().GetUsed()
		for _, r := range restricted {
			if _, ok := used[r]; !ok {
				slices.Sort(restricted)
				return nil, forbidden(fmt.Sprintf("status unknown for quota: %s, resources: %s", q.GetMetadata().GetName(), joinNames(restricted)))
			}
		}
		interesting = append(interesting, q)
	}
	delta = quota.RemoveZeros(delta)
	if len(delta) == 0 {
		return nil, nil
	}
	var out []*corev1.ResourceQuota
	for _, q := range interesting {
		hard := quota.FromProto(q.GetStatus().GetHard())
		used := quota.FromProto(q.GetStatus().GetUsed())
		requested := quota.Mask(delta, hard.Names())
		if len(requested) == 0 {
			continue
		}
		newUsage := quota.Add(used, requested)
		if ok, exceeded := quota.LessThanOrEqual(quota.Mask(newUsage, requested.Names()), hard); !ok {
			return nil, forbidden(fmt.Sprintf("exceeded quota: %s, requested: %s, used: %s, limited: %s",
				q.GetMetadata().GetName(), quota.Mask(requested, exceeded), quota.Mask(used, exceeded), quota.Mask(hard, exceeded)))
		}
		next := proto.Clone(q).(*corev1.ResourceQuota)
		if next.Status == nil {
			next.Status = &corev1.ResourceQuotaStatus{}
		}
		next.Status.Used = newUsage.ToProto()
		out = append(out, next)
	}
	return out, nil
}

func joinNames(names []string) string {
	out := ""
	for i, n := range names {
		if i > 0 {
			out += ","
		}
		out += n
	}
	return out
}

// lock serialises the charges of one namespace in this apiserver.
func (p *Plugin) lock(ns string) func() {
	p.mu.Lock()
	l := p.locks[ns]
	if l == nil {
		l = &nsLock{}
		p.locks[ns] = l
	}
	l.users++
	p.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		p.mu.Lock()
		l.users--
		if l.users == 0 {
			delete(p.locks, ns)
		}
		p.mu.Unlock()
	}
}

var quotaKind, _ = scheme.ForResource("", "resourcequotas")
