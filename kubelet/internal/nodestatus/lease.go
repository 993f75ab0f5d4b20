package nodestatus

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"skiff.dev/client"
	coordinationv1 "skiff.dev/proto/api/coordination/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// LeaseNamespace holds every node's Lease.
const LeaseNamespace = "kube-node-lease"

// renewLease is upstream's node lease controller's sync: update the Lease
// from the copy last written (no read), creating it when missing and
// re-reading it on a conflict, up to upstream's maxUpdateRetries (5).
func (m *Manager) renewLease(ctx context.Context) error {
	leases := client.For[*coordinationv1.Lease](m.cfg.Client, LeaseNamespace)
	m.mu.Lock()
	base := m.lease
	m.mu.Unlock()
	var err error
	for range 5 {
		if base == nil {
			if base, err = m.ensureLease(ctx, leases); err != nil {
				return err
			}
			if base == nil { // just created: that was the renewal
				return nil
			}
		}
		var l *coordinationv1.Lease
		if l, err = leases.Update(ctx, m.newLease(base)); err == nil {
			m.mu.Lock()
			m.lease = l
			m.mu.Unlock()
			return nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return err
		}
		base = nil
	}
	return fmt.Errorf("lease %s/%s: %w", LeaseNamespace, m.cfg.NodeName, err)
}

// ensureLease reads the Lease, or creates it and returns nil.
func (m *Manager) ensureLease(ctx context.Context, leases *client.Typed[*coordinationv1.Lease]) (*coordinationv1.Lease, error) {
	l, err := leases.Get(ctx, m.cfg.NodeName)
	if err == nil {
		return l, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}
	created, err := leases.Create(ctx, m.newLease(nil))
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.lease = created
	m.mu.Unlock()
	return nil, nil
}

// newLease is upstream's newLease: the node's identity and duration, the
// renew time now, and the Node as owner so the Lease goes with it.
func (m *Manager) newLease(base *coordinationv1.Lease) *coordinationv1.Lease {
	var l *coordinationv1.Lease
	if base == nil {
		name := m.cfg.NodeName
		secs := int32(m.cfg.LeaseDuration / time.Second)
		l = &coordinationv1.Lease{
			Metadata: &metav1.ObjectMeta{Namespace: LeaseNamespace, Name: name},
			Spec:     &coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &secs},
		}
	} else {
		l = proto.Clone(base).(*coordinationv1.Lease)
	}
	now := m.clock.Now()
	l.Spec.RenewTime = &metav1.MicroTime{Seconds: now.Unix(), Nanos: int32(now.Nanosecond() / 1000 * 1000)}
	if len(l.Metadata.OwnerReferences) == 0 {
		if n := m.Node(); n != nil && n.GetMetadata().GetUid() != "" {
			l.Metadata.OwnerReferences = []*metav1.OwnerReference{{
				ApiVersion: "v1", Kind: "Node", Name: n.GetMetadata().GetName(), Uid: n.GetMetadata().GetUid(),
			}}
		}
	}
	return l
}
