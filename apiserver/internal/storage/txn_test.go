package storage_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"skiff.dev/apiserver/internal/storage"
)

func TestTxnWritesAllOrNothingAndNamesTheKeyThatStoppedIt(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Create(ctx, "ranges/b", []byte("other")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Txn(ctx, storage.OpCreate("things/x", []byte("x")), storage.OpCreate("ranges/a", []byte("x")), storage.OpCreate("ranges/b", []byte("x")))
	var te *storage.TxnError
	if !errors.As(err, &te) || te.Key != "ranges/b" || !errors.Is(err, storage.ErrExists) || string(te.Current.Value) != "other" {
		t.Fatalf("err = %v, want ErrExists on ranges/b holding other", err)
	}
	for _, k := range []string{"things/x", "ranges/a"} {
		if _, err := s.Get(ctx, k, 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("%s written by a refused transaction: %v", k, err)
		}
	}
	rev, err := s.Txn(ctx, storage.OpCreate("things/x", []byte("x")), storage.OpCreate("ranges/a", []byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Txn(ctx, storage.OpCreate("things/x", []byte("again"))); !errors.As(err, &te) || te.Key != "things/x" || !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second create: %v", err)
	}

	// An update guarded by a stale revision is a conflict on that key; a
	// vanished key is NotFound.
	_, err = s.Txn(ctx, storage.OpUpdate("things/x", []byte("y"), rev-1), storage.OpCreate("ranges/c", []byte("x")))
	if !errors.As(err, &te) || te.Key != "things/x" || !errors.Is(err, storage.ErrConflict) || te.Current.Rev != rev {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := s.Txn(ctx, storage.OpUpdate("things/gone", []byte("y"), rev)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("update of a missing key: %v", err)
	}
	// OpCheck guards without writing.
	if _, err := s.Txn(ctx, storage.OpCheck("things/x", rev), storage.OpCreate("ranges/c", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	if kv, err := s.Get(ctx, "things/x", 0); err != nil || kv.Rev != rev {
		t.Fatalf("OpCheck wrote: %+v %v", kv, err)
	}
	if _, err := s.Txn(ctx, storage.OpCheck("ranges/c", 0)); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("OpCheck at 0 of a present key: %v", err)
	}
}

func TestTxnDeleteIfValueReleasesOnlyWhatItOwns(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rev, err := s.Txn(ctx, storage.OpCreate("things/x", []byte("x")), storage.OpCreate("ranges/mine", []byte("me")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "ranges/theirs", []byte("them")); err != nil {
		t.Fatal(err)
	}
	_, err = s.Txn(ctx, storage.OpDelete("things/x", rev),
		storage.OpDeleteIfValue("ranges/mine", []byte("me")),
		storage.OpDeleteIfValue("ranges/theirs", []byte("me")),
		storage.OpDeleteIfValue("ranges/nobody", []byte("me")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "ranges/mine", 0); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("own key not released: %v", err)
	}
	if kv, err := s.Get(ctx, "ranges/theirs", 0); err != nil || string(kv.Value) != "them" {
		t.Fatalf("another owner's key was released: %+v %v", kv, err)
	}
}

func TestKeepLeasedWritesOnceAndGoesWithItsLease(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	lease, err := s.KeepLeased(ctx, "masterleases/10.0.0.1", []byte("10.0.0.1"), 15*time.Second, 0)
	if err != nil || lease == 0 {
		t.Fatalf("lease %d, %v", lease, err)
	}
	kv, err := s.Get(ctx, "masterleases/10.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.KeepLeased(ctx, "masterleases/10.0.0.1", []byte("10.0.0.1"), 15*time.Second, lease)
	if err != nil || again != lease {
		t.Fatalf("renewal: lease %d (was %d), %v", again, lease, err)
	}
	if kv2, _ := s.Get(ctx, "masterleases/10.0.0.1", 0); kv2.Rev != kv.Rev {
		t.Fatalf("a renewal wrote the key again: revision %d -> %d", kv.Rev, kv2.Rev)
	}
	// A lease that is gone (expired while etcd was away, say) is granted anew
	// and the key comes back.
	if err := s.RevokeLease(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "masterleases/10.0.0.1", 0); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("key outlived its lease: %v", err)
	}
	fresh, err := s.KeepLeased(ctx, "masterleases/10.0.0.1", []byte("10.0.0.1"), 15*time.Second, lease)
	if err != nil || fresh == lease || fresh == 0 {
		t.Fatalf("after revoke: lease %d, %v", fresh, err)
	}
	if _, err := s.Get(ctx, "masterleases/10.0.0.1", 0); err != nil {
		t.Fatalf("key not written back: %v", err)
	}
}
