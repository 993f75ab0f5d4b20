package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Op is one key's part of a Txn: what is written there, and what the
// transaction requires of the key beforehand. Build it with OpCreate,
// OpUpdate, OpDelete, OpCheck or OpDeleteIfValue.
type Op struct {
	kind  opKind
	key   string
	value []byte
	rev   int64
}

type opKind int

const (
	opCreate opKind = iota
	opUpdate
	opDelete
	opCheck
	opDeleteIfValue
)

// OpCreate writes value under key, which must be absent.
func OpCreate(key string, value []byte) Op { return Op{kind: opCreate, key: key, value: value} }

// OpUpdate writes value under key, which must still be at revision rev.
func OpUpdate(key string, value []byte, rev int64) Op {
	return Op{kind: opUpdate, key: key, value: value, rev: rev}
}

// OpDelete removes key, which must still be at revision rev.
func OpDelete(key string, rev int64) Op { return Op{kind: opDelete, key: key, rev: rev} }

// OpCheck writes nothing: key must still be at revision rev (0: absent).
func OpCheck(key string, rev int64) Op { return Op{kind: opCheck, key: key, rev: rev} }

// OpDeleteIfValue removes key only while it holds exactly value, and never
// fails the transaction: releasing what another owner holds is a no-op.
func OpDeleteIfValue(key string, value []byte) Op {
	return Op{kind: opDeleteIfValue, key: key, value: value}
}

// Key is the op's key, relative to the store's prefix.
func (o Op) Key() string { return o.key }

func (o Op) guarded() bool { return o.kind != opDeleteIfValue }

// TxnError is a transaction refused because one key was not as an op
// required: Err is ErrExists (an OpCreate's key, or an OpCheck's at 0, is
// taken), ErrConflict (the key moved past the revision) or ErrNotFound (the
// key is gone). Current is the key's value when it has one.
type TxnError struct {
	Key     string
	Err     error
	Current KV
}

func (e *TxnError) Error() string { return fmt.Sprintf("%s: %v", e.Key, e.Err) }
func (e *TxnError) Unwrap() error { return e.Err }

// Txn applies ops in one etcd transaction: all of them, or, when any
// guarded key is not as its op requires, none, with a *TxnError naming the
// first such key in ops' order. It returns the revision of the write.
func (s *Store) Txn(ctx context.Context, ops ...Op) (int64, error) {
	if len(ops) == 0 {
		return 0, errors.New("empty transaction")
	}
	defer s.observe("txn", ops[0].key, time.Now())
	var cmps []clientv3.Cmp
	var then, els []clientv3.Op
	var guarded []Op
	for _, o := range ops {
		k := s.prefix + o.key
		switch o.kind {
		case opCreate:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", 0))
			then = append(then, clientv3.OpPut(k, string(o.value)))
		case opUpdate:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", o.rev))
			then = append(then, clientv3.OpPut(k, string(o.value)))
		case opDelete:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", o.rev))
			then = append(then, clientv3.OpDelete(k))
		case opCheck:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", o.rev))
		case opDeleteIfValue:
			then = append(then, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", string(o.value))},
				[]clientv3.Op{clientv3.OpDelete(k)}, nil))
		}
		if o.guarded() {
			guarded = append(guarded, o)
			els = append(els, clientv3.OpGet(k))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		return 0, wrap(err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	// The reads of the else branch saw the keys at the revision the
	// comparisons failed at, so one of them explains the refusal.
	for i, o := range guarded {
		var cur KV
		exists := false
		if r := resp.Responses[i].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
			cur, exists = s.kv(r.Kvs[0]), true
		}
		var why error
		switch {
		case o.kind == opCreate || o.rev == 0:
			if exists {
				why = ErrExists
			}
		case !exists:
			why = ErrNotFound
		case cur.Rev != o.rev:
			why = ErrConflict
		}
		if why != nil {
			return 0, &TxnError{Key: o.key, Err: why, Current: cur}
		}
	}
	return 0, &TxnError{Key: guarded[0].key, Err: ErrConflict}
}

// KeepLeased keeps value under key, attached to an etcd lease of ttl, so the
// key disappears ttl after its writer stops calling. Call it more often than
// ttl with the lease it returned last time (0 the first time): a live lease
// is only kept alive, which writes nothing to etcd's history; a lease that
// expired, or a key someone removed or changed, is granted or written again.
func (s *Store) KeepLeased(ctx context.Context, key string, value []byte, ttl time.Duration, lease int64) (int64, error) {
	defer s.observe("lease", key, time.Now())
	if lease != 0 {
		if _, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(lease)); err != nil {
			if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return lease, wrap(err)
			}
			lease = 0
		}
	}
	if lease == 0 {
		secs := int64((ttl + time.Second - 1) / time.Second)
		g, err := s.cli.Grant(ctx, max(secs, 1))
		if err != nil {
			return 0, wrap(err)
		}
		lease = int64(g.ID)
	}
	k := s.prefix + key
	_, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(k), "=", lease), clientv3.Compare(clientv3.Value(k), "=", string(value))).
		Else(clientv3.OpPut(k, string(value), clientv3.WithLease(clientv3.LeaseID(lease)))).
		Commit()
	if err != nil {
		return lease, wrap(err)
	}
	return lease, nil
}

// RevokeLease ends a lease KeepLeased returned: its key goes at once.
func (s *Store) RevokeLease(ctx context.Context, lease int64) error {
	if lease == 0 {
		return nil
	}
	_, err := s.cli.Revoke(ctx, clientv3.LeaseID(lease))
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return wrap(err)
	}
	return nil
}
