package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
)

// ExpectationsTimeout is how long expectations hold a controller back:
// upstream's 5 minutes, after which a lost watch event no longer stalls it.
const ExpectationsTimeout = 5 * time.Minute

// Expectations are upstream's ControllerExpectations: the creations and
// deletions a controller has asked for and not yet seen in its informers, by
// controller key. Until they are seen (or expire), the controller's cache is
// behind its own writes and it must not sync again, or it would create or
// delete twice. Safe for concurrent use.
type Expectations struct {
	mu  sync.Mutex
	exp map[string]*expectation
	now func() time.Time
}

type expectation struct {
	add, del  int64
	timestamp time.Time
}

// NewExpectations returns empty expectations.
func NewExpectations() *Expectations {
	return &Expectations{exp: map[string]*expectation{}, now: time.Now}
}

// SatisfiedExpectations tells whether the controller key may sync: true when
// every expected creation and deletion was observed, when they expired, or
// when none were ever set.
func (e *Expectations) SatisfiedExpectations(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.exp[key]
	if !ok {
		return true
	}
	return (x.add <= 0 && x.del <= 0) || e.now().Sub(x.timestamp) > ExpectationsTimeout
}

// GetExpectations returns the creations and deletions still expected.
func (e *Expectations) GetExpectations(key string) (add, del int64, exists bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.exp[key]
	if !ok {
		return 0, 0, false
	}
	return x.add, x.del, true
}

// SetExpectations replaces the key's expectations and restarts their TTL.
func (e *Expectations) SetExpectations(key string, add, del int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exp[key] = &expectation{add: int64(add), del: int64(del), timestamp: e.now()}
}

// ExpectCreations expects adds creations (and no deletions).
func (e *Expectations) ExpectCreations(key string, adds int) { e.SetExpectations(key, adds, 0) }

// ExpectDeletions expects dels deletions (and no creations).
func (e *Expectations) ExpectDeletions(key string, dels int) { e.SetExpectations(key, 0, dels) }

// RaiseExpectations adds to existing expectations; none set, nothing to raise.
func (e *Expectations) RaiseExpectations(key string, add, del int) {
	e.change(key, int64(add), int64(del))
}

// LowerExpectations subtracts from existing expectations, as when a create
// the controller expected failed and so will never be observed.
func (e *Expectations) LowerExpectations(key string, add, del int) {
	e.change(key, -int64(add), -int64(del))
}

// CreationObserved records one expected creation as seen.
func (e *Expectations) CreationObserved(key string) { e.change(key, -1, 0) }

// DeletionObserved records one expected deletion as seen.
func (e *Expectations) DeletionObserved(key string) { e.change(key, 0, -1) }

// DeleteExpectations forgets the key, as when its controller object is gone.
func (e *Expectations) DeleteExpectations(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.exp, key)
}

func (e *Expectations) change(key string, add, del int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.exp[key]; ok {
		x.add += add
		x.del += del
	}
}

// UIDTrackingExpectations are upstream's UIDTrackingControllerExpectations:
// Expectations whose deletions are tracked by the deleted objects' keys, so
// that one object seen deleted twice (a graceful deletion, then the removal)
// counts once. Safe for concurrent use.
type UIDTrackingExpectations struct {
	*Expectations

	mu   sync.Mutex
	keys map[string]sets.Set[string]
}

// NewUIDTrackingExpectations wraps e (fresh expectations when nil).
func NewUIDTrackingExpectations(e *Expectations) *UIDTrackingExpectations {
	if e == nil {
		e = NewExpectations()
	}
	return &UIDTrackingExpectations{Expectations: e, keys: map[string]sets.Set[string]{}}
}

// GetUIDs returns the keys of the objects whose deletion is still expected.
func (u *UIDTrackingExpectations) GetUIDs(key string) sets.Set[string] {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.keys[key].Clone()
}

// ExpectDeletions expects the deletion of the objects with deleteKeys
// (KeyFunc of each), replacing earlier expectations of key.
func (u *UIDTrackingExpectations) ExpectDeletions(key string, deleteKeys []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := sets.New(deleteKeys...)
	u.keys[key] = s
	u.Expectations.ExpectDeletions(key, s.Len())
}

// DeletionObserved records the deletion of the object with deleteKey, if
// key expected it; any other deletion, or a repeated one, changes nothing.
func (u *UIDTrackingExpectations) DeletionObserved(key, deleteKey string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if s := u.keys[key]; s.Has(deleteKey) {
		s.Delete(deleteKey)
		u.Expectations.DeletionObserved(key)
	}
}

// DeleteExpectations forgets the key's counts and tracked deletions.
func (u *UIDTrackingExpectations) DeleteExpectations(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.Expectations.DeleteExpectations(key)
	delete(u.keys, key)
}
