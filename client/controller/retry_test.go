package controller

import (
	"errors"
	"testing"

	"skiff.dev/proto/apierrors"
)

func TestRetryOnConflict(t *testing.T) {
	conflict := apierrors.NewConflict("pods", "web-0", "the object has been modified")
	other := errors.New("connection refused")
	for _, tc := range []struct {
		name      string
		errs      []error // what fn returns call by call; nil after the list ends
		wantCalls int
		wantErr   error
	}{
		{name: "success first time", wantCalls: 1},
		{name: "conflicts then success", errs: []error{conflict, conflict}, wantCalls: 3},
		{name: "other errors are not retried", errs: []error{other}, wantCalls: 1, wantErr: other},
		{name: "conflict then another error", errs: []error{conflict, other}, wantCalls: 2, wantErr: other},
		{name: "gives up after DefaultRetry's steps", errs: []error{conflict, conflict, conflict, conflict, conflict, conflict},
			wantCalls: DefaultRetry.Steps, wantErr: conflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := RetryOnConflict(func() error {
				calls++
				if calls <= len(tc.errs) {
					return tc.errs[calls-1]
				}
				return nil
			})
			if calls != tc.wantCalls {
				t.Errorf("fn ran %d times, want %d", calls, tc.wantCalls)
			}
			if err != tc.wantErr {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
