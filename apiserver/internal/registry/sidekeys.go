package registry

import (
	"context"
	"errors"

	"skiff.dev/apiserver/internal/storage"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// SideKeys are etcd keys a kind writes in the same transaction as its
// objects, so that each exists exactly while the object holding it does and
// two objects can never hold one: a Service's cluster IPs and node ports
// (internal/servicealloc). A kind with SideKeys in Config.SideKeys is asked
// at three points of every write; the generic code knows nothing else of it.
type SideKeys interface {
	// Prepare runs before defaulting, on create (old nil) and update: it
	// fills in what depends on the cluster's configuration, and carries over
	// what the server assigned earlier and the client left out.
	Prepare(obj, old scheme.Object)
	// Reserve, after validation, chooses the keys obj needs replacing old
	// (nil on create) and fills in the fields they stand for. A dry run
	// chooses the same way and writes nothing.
	Reserve(ctx context.Context, obj, old scheme.Object, dryRun bool) (*SideWrite, error)
	// Release lists the keys that deleting obj frees.
	Release(obj scheme.Object) []string
	// Owner is the value of obj's keys: who holds them.
	Owner(obj scheme.Object) []byte
}

// SideWrite is the side keys of one write, relative to the store's prefix.
type SideWrite struct {
	// Put are written with the object and must each be absent; Release are
	// deleted with it while they still hold the object's Owner value.
	Put, Release []string
	// Retry is told that key, one of Put, was found taken when the write
	// was tried: it chooses again (changing the object and Put) and returns
	// nil, or returns the error the request fails with.
	Retry func(ctx context.Context, key string) error
	// Committed, if set, is told the write succeeded (metrics).
	Committed func()
}

func (sw *SideWrite) committed() {
	if sw != nil && sw.Committed != nil {
		sw.Committed()
	}
}

// maxSideRetries only stops a chooser that never converges: each retry
// learns one more taken key, so a real run ends long before.
const maxSideRetries = 10000

func (res *resource) reserve(ctx context.Context, obj, old scheme.Object, dryRun bool) (*SideWrite, error) {
	if res.side == nil {
		return nil, nil
	}
	return res.side.Reserve(ctx, obj, old, dryRun)
}

func (res *resource) sideOps(obj scheme.Object, sw *SideWrite) []storage.Op {
	if sw == nil {
		return nil
	}
	owner := res.side.Owner(obj)
	ops := make([]storage.Op, 0, len(sw.Put)+len(sw.Release))
	for _, k := range sw.Put {
		ops = append(ops, storage.OpCreate(k, owner))
	}
	for _, k := range sw.Release {
		ops = append(ops, storage.OpDeleteIfValue(k, owner))
	}
	return ops
}

// storeCreate, storeUpdate and storeDelete write the object's key, and its
// side keys in the same transaction when the kind has them.
func (res *resource) storeCreate(ctx context.Context, key string, value []byte, obj scheme.Object, sw *SideWrite) (int64, error) {
	if res.side == nil {
		return res.reg.cfg.Store.Create(ctx, res.prefix+key, value)
	}
	return res.reg.cfg.Store.Txn(ctx, append([]storage.Op{storage.OpCreate(res.prefix+key, value)}, res.sideOps(obj, sw)...)...)
}

func (res *resource) storeUpdate(ctx context.Context, key string, value []byte, rev int64, obj scheme.Object, sw *SideWrite) (int64, error) {
	if res.side == nil {
		rev, _, err := res.reg.cfg.Store.Update(ctx, res.prefix+key, value, rev)
		return rev, err
	}
	return res.reg.cfg.Store.Txn(ctx, append([]storage.Op{storage.OpUpdate(res.prefix+key, value, rev)}, res.sideOps(obj, sw)...)...)
}

// storeDelete removes the object at rev, releasing what it held.
func (res *resource) storeDelete(ctx context.Context, key string, rev int64, obj scheme.Object) (int64, error) {
	if res.side == nil {
		rev, _, err := res.reg.cfg.Store.Delete(ctx, res.prefix+key, rev)
		return rev, err
	}
	sw := &SideWrite{Release: res.side.Release(obj)}
	return res.reg.cfg.Store.Txn(ctx, append([]storage.Op{storage.OpDelete(res.prefix+key, rev)}, res.sideOps(obj, sw)...)...)
}

// retrySide tells a write refused because one of its side keys was taken
// (not its own key: that is AlreadyExists or Conflict as for every kind) to
// the chooser, which picks again or explains. It reports whether to write
// again; when not, err is the request's error (nil: err was not about a
// side key and the caller maps it).
func (res *resource) retrySide(ctx context.Context, err error, key string, sw *SideWrite, attempt int) (bool, error) {
	var te *storage.TxnError
	if sw == nil || !errors.As(err, &te) || te.Key == res.prefix+key {
		return false, nil
	}
	if attempt >= maxSideRetries {
		return false, apierrors.NewInternal(errors.New("too many conflicting allocations, try again"))
	}
	if sw.Retry == nil {
		return false, apierrors.NewInternal(errors.New("allocation " + te.Key + " is already taken"))
	}
	if rerr := sw.Retry(ctx, te.Key); rerr != nil {
		return false, rerr
	}
	return true, nil
}
