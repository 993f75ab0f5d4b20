package leaderelection

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"skiff.dev/client/fake"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

func leadConfig(cs *fake.Clientset) Config {
	return Config{Client: cs.Client, Namespace: "kube-system", Name: "kube-controller-manager", Identity: "a",
		LeaseDuration: 300 * time.Millisecond, RenewDeadline: 200 * time.Millisecond, RetryPeriod: 20 * time.Millisecond}
}

// Lead returns what the work returned, ErrLost when the lease goes while
// the caller still wants to run, and nil when the caller stops it.
func TestLead(t *testing.T) {
	t.Run("work's error", func(t *testing.T) {
		cs := fake.NewClientset()
		defer cs.Close()
		boom := errors.New("boom")
		if err := Lead(context.Background(), leadConfig(cs), func(context.Context) error { return boom }); err != boom {
			t.Fatalf("Lead = %v, want the work's error", err)
		}
	})
	t.Run("lost", func(t *testing.T) {
		cs := fake.NewClientset()
		defer cs.Close()
		var leading, failing atomic.Bool
		// Once leading, every renewal fails: the leader must step down
		// within its renew deadline, and Lead must say so.
		cs.PrependReactor("update", "leases", func(fake.Action) (bool, scheme.Object, error) {
			if failing.Load() {
				return true, nil, apierrors.NewUnavailable("etcd is down")
			}
			return false, nil, nil
		})
		done := make(chan error, 1)
		go func() {
			done <- Lead(context.Background(), leadConfig(cs), func(ctx context.Context) error {
				leading.Store(true)
				failing.Store(true)
				<-ctx.Done()
				return nil
			})
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrLost) || !leading.Load() {
				t.Fatalf("Lead = %v after leading %v, want ErrLost", err, leading.Load())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Lead did not return after renewals kept failing")
		}
	})
	t.Run("stopped", func(t *testing.T) {
		cs := fake.NewClientset()
		defer cs.Close()
		ctx, cancel := context.WithCancel(context.Background())
		err := Lead(ctx, leadConfig(cs), func(ctx context.Context) error {
			cancel()
			<-ctx.Done()
			return nil
		})
		if err != nil {
			t.Fatalf("Lead after the caller's cancel = %v, want nil", err)
		}
	})
}
