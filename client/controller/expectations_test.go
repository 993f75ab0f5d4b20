package controller

import (
	"sync"
	"testing"
	"time"
)

// fakeClock moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestExpectations() (*Expectations, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	e := NewExpectations()
	e.now = clk.now
	return e, clk
}

func TestExpectations(t *testing.T) {
	const key = "default/web"
	for _, tc := range []struct {
		name          string
		run           func(e *Expectations, clk *fakeClock)
		wantSatisfied bool
	}{
		{name: "never set", run: func(*Expectations, *fakeClock) {}, wantSatisfied: true},
		{name: "creations pending", run: func(e *Expectations, _ *fakeClock) {
			e.ExpectCreations(key, 2)
			e.CreationObserved(key)
		}, wantSatisfied: false},
		{name: "creations observed", run: func(e *Expectations, _ *fakeClock) {
			e.ExpectCreations(key, 2)
			e.CreationObserved(key)
			e.CreationObserved(key)
		}, wantSatisfied: true},
		{name: "deletions pending", run: func(e *Expectations, _ *fakeClock) {
			e.ExpectDeletions(key, 1)
			e.CreationObserved(key)
		}, wantSatisfied: false},
		{name: "deletions observed", run: func(e *Expectations, _ *fakeClock) {
			e.ExpectDeletions(key, 1)
			e.DeletionObserved(key)
		}, wantSatisfied: true},
		{name: "expired after the TTL", run: func(e *Expectations, clk *fakeClock) {
			e.ExpectCreations(key, 3)
			clk.step(ExpectationsTimeout + time.Second)
		}, wantSatisfied: true},
		{name: "not yet expired at the TTL", run: func(e *Expectations, clk *fakeClock) {
			e.ExpectCreations(key, 3)
			clk.step(ExpectationsTimeout)
		}, wantSatisfied: false},
		{name: "setting again restarts the TTL", run: func(e *Expectations, clk *fakeClock) {
			e.ExpectCreations(key, 3)
			clk.step(ExpectationsTimeout - time.Second)
			e.ExpectCreations(key, 1)
			clk.step(2 * time.Second)
		}, wantSatisfied: false},
		{name: "lowered after a failed create", run: func(e *Expectations, _ *fakeClock) {
			e.SetExpectations(key, 2, 0)
			e.CreationObserved(key)
			e.LowerExpectations(key, 1, 0)
		}, wantSatisfied: true},
		{name: "raised", run: func(e *Expectations, _ *fakeClock) {
			e.ExpectDeletions(key, 1)
			e.RaiseExpectations(key, 0, 1)
			e.DeletionObserved(key)
		}, wantSatisfied: false},
		{name: "deleted", run: func(e *Expectations, _ *fakeClock) {
			e.ExpectCreations(key, 5)
			e.DeleteExpectations(key)
		}, wantSatisfied: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clk := newTestExpectations()
			tc.run(e, clk)
			if got := e.SatisfiedExpectations(key); got != tc.wantSatisfied {
				add, del, ok := e.GetExpectations(key)
				t.Errorf("SatisfiedExpectations = %v, want %v (add %d, del %d, exists %v)", got, tc.wantSatisfied, add, del, ok)
			}
		})
	}
}

func TestExpectationsObservedConcurrently(t *testing.T) {
	const key, n = "default/web", 50
	e := NewExpectations()
	e.SetExpectations(key, n, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { e.CreationObserved(key) })
		wg.Go(func() { e.DeletionObserved(key) })
	}
	wg.Wait()
	if add, del, _ := e.GetExpectations(key); add != 0 || del != 0 || !e.SatisfiedExpectations(key) {
		t.Errorf("after %d concurrent observations: add %d, del %d, satisfied %v", n, add, del, e.SatisfiedExpectations(key))
	}
	// Observations nobody expected do not create expectations.
	e.CreationObserved("default/other")
	if _, _, ok := e.GetExpectations("default/other"); ok {
		t.Error("an unexpected observation created expectations")
	}
}

func TestUIDTrackingExpectations(t *testing.T) {
	const key = "default/web"
	u := NewUIDTrackingExpectations(nil)
	u.ExpectDeletions(key, []string{"default/web-a", "default/web-b"})
	if u.SatisfiedExpectations(key) {
		t.Fatal("satisfied before any deletion")
	}
	u.DeletionObserved(key, "default/web-a")
	// A graceful deletion is seen twice; and pods the controller did not
	// delete do not count.
	u.DeletionObserved(key, "default/web-a")
	u.DeletionObserved(key, "default/unrelated")
	if u.SatisfiedExpectations(key) {
		t.Fatal("satisfied with web-b's deletion still pending")
	}
	if got := u.GetUIDs(key); got.Len() != 1 || !got.Has("default/web-b") {
		t.Errorf("GetUIDs = %v, want [default/web-b]", got.UnsortedList())
	}
	u.DeletionObserved(key, "default/web-b")
	if !u.SatisfiedExpectations(key) {
		t.Error("not satisfied after both deletions")
	}

	u.ExpectCreations(key, 1)
	u.ExpectDeletions("default/db", []string{"default/db-0"})
	u.DeleteExpectations("default/db")
	if !u.SatisfiedExpectations("default/db") || u.GetUIDs("default/db").Len() != 0 {
		t.Error("DeleteExpectations left expectations behind")
	}
	if u.SatisfiedExpectations(key) {
		t.Error("ExpectCreations through the tracking expectations was lost")
	}
}
