package controller

import (
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"skiff.dev/proto/apierrors"
)

// DefaultRetry is client-go's retry.DefaultRetry: five tries about 10 ms
// apart, for conflicts between writers of the same object, which clear fast.
// (client-go/util/retry itself would pull apimachinery's whole API machinery
// in for two small functions, and its IsConflict does not know our errors.)
var DefaultRetry = wait.Backoff{Steps: 5, Duration: 10 * time.Millisecond, Factor: 1.0, Jitter: 0.1}

// DefaultBackoff is client-go's retry.DefaultBackoff, for errors that take
// longer to clear than conflicts.
var DefaultBackoff = wait.Backoff{Steps: 4, Duration: 10 * time.Millisecond, Factor: 5.0, Jitter: 0.1}

// RetryOnConflict runs fn again, with DefaultRetry's backoff, while it fails
// with Conflict; fn should read the object afresh each time. It returns fn's
// last error, as client-go's retry.RetryOnConflict.
func RetryOnConflict(fn func() error) error {
	return OnError(DefaultRetry, apierrors.IsConflict, fn)
}

// OnError runs fn until it succeeds, fails with an error retriable does not
// accept, or backoff runs out of steps; it returns fn's last error.
func OnError(backoff wait.Backoff, retriable func(error) bool, fn func() error) error {
	var err error
	for {
		if err = fn(); err == nil || !retriable(err) {
			return err
		}
		if backoff.Steps <= 1 {
			return err
		}
		time.Sleep(backoff.Step())
	}
}
