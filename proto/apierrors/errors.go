// Package apierrors carries upstream's API error reasons over gRPC.
//
// Each error is a gRPC status whose code fits the failure (NotFound, Aborted for
// a stale resourceVersion, InvalidArgument, OutOfRange for an expired
// resourceVersion, …) and whose details hold an ErrorInfo with upstream's
// reason ("Conflict", "Invalid", "Expired", …) and, for Invalid, a BadRequest
// listing every field error. Servers build errors here and clients test them
// here, so both sides agree without string matching.
package apierrors

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Reason is upstream's StatusReason.
type Reason string

// The reasons Skiff uses, spelled as upstream's.
const (
	ReasonNotFound      Reason = "NotFound"
	ReasonAlreadyExists Reason = "AlreadyExists"
	ReasonConflict      Reason = "Conflict"
	ReasonInvalid       Reason = "Invalid"
	ReasonForbidden     Reason = "Forbidden"
	ReasonUnauthorized  Reason = "Unauthorized"
	ReasonExpired       Reason = "Expired"
	ReasonTooLarge      Reason = "RequestEntityTooLarge"
	ReasonUnavailable   Reason = "ServiceUnavailable"
	ReasonBadRequest    Reason = "BadRequest"
	ReasonInternal      Reason = "InternalError"
	ReasonTimeout       Reason = "Timeout"
	ReasonTooManyReqs   Reason = "TooManyRequests"
	ReasonUnsupported   Reason = "UnsupportedMediaType"
	ReasonUnknown       Reason = ""
)

// Domain is the ErrorInfo domain of Skiff's errors.
const Domain = "skiff.dev"

var codeOf = map[Reason]codes.Code{
	ReasonNotFound:      codes.NotFound,
	ReasonAlreadyExists: codes.AlreadyExists,
	ReasonConflict:      codes.Aborted,
	ReasonInvalid:       codes.InvalidArgument,
	ReasonForbidden:     codes.PermissionDenied,
	ReasonUnauthorized:  codes.Unauthenticated,
	ReasonExpired:       codes.OutOfRange,
	ReasonTooLarge:      codes.ResourceExhausted,
	ReasonUnavailable:   codes.Unavailable,
	ReasonBadRequest:    codes.InvalidArgument,
	ReasonInternal:      codes.Internal,
	ReasonTimeout:       codes.DeadlineExceeded,
	ReasonTooManyReqs:   codes.ResourceExhausted,
	ReasonUnsupported:   codes.InvalidArgument,
}

// New builds an error with a reason, a message and, optionally, the resource
// ("deployments.apps"), the kind and the name it concerns.
func New(reason Reason, msg string, meta map[string]string) error {
	st := status.New(codeOf[reason], msg)
	info := &errdetails.ErrorInfo{Reason: string(reason), Domain: Domain, Metadata: meta}
	if d, err := st.WithDetails(info); err == nil {
		st = d
	}
	return st.Err()
}

func target(resource, name string) map[string]string {
	return map[string]string{"resource": resource, "name": name}
}

// NewNotFound: `pods "web-0" not found`.
func NewNotFound(resource, name string) error {
	return New(ReasonNotFound, fmt.Sprintf("%s %q not found", resource, name), target(resource, name))
}

// NewAlreadyExists: `pods "web-0" already exists`.
func NewAlreadyExists(resource, name string) error {
	return New(ReasonAlreadyExists, fmt.Sprintf("%s %q already exists", resource, name), target(resource, name))
}

// NewConflict: `Operation cannot be fulfilled on pods "web-0": <why>`.
func NewConflict(resource, name, why string) error {
	return New(ReasonConflict, fmt.Sprintf("Operation cannot be fulfilled on %s %q: %s", resource, name, why), target(resource, name))
}

// StaleMessage is upstream's explanation of an optimistic-concurrency conflict.
const StaleMessage = "the object has been modified; please apply your changes to the latest version and try again"

// NewInvalid reports every field error of an object at once:
// `Deployment.apps "neg" is invalid: spec.replicas: Invalid value: -2: must be …`.
// kindGroup is "Deployment.apps" (or "Pod" in the core group).
func NewInvalid(kindGroup, name string, errs field.ErrorList) error {
	msgs := make([]string, 0, len(errs))
	br := &errdetails.BadRequest{}
	for _, e := range errs {
		msgs = append(msgs, e.Error())
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field: e.Field, Description: e.ErrorBody(), Reason: string(e.Type),
		})
	}
	msg := fmt.Sprintf("%s %q is invalid: ", kindGroup, name)
	if len(msgs) == 1 {
		msg += msgs[0]
	} else {
		msg += "[" + strings.Join(msgs, ", ") + "]"
	}
	kind, _, _ := strings.Cut(kindGroup, ".")
	st := status.New(codes.InvalidArgument, msg)
	info := &errdetails.ErrorInfo{Reason: string(ReasonInvalid), Domain: Domain,
		Metadata: map[string]string{"kind": kind, "name": name}}
	if d, err := st.WithDetails(info, br); err == nil {
		st = d
	}
	return st.Err()
}

// NewForbidden: `pods "x" is forbidden: <why>`.
func NewForbidden(resource, name, why string) error {
	subject := resource
	if name != "" {
		subject = fmt.Sprintf("%s %q", resource, name)
	}
	return New(ReasonForbidden, fmt.Sprintf("%s is forbidden: %s", subject, why), target(resource, name))
}

// NewUnauthorized: the request carried no valid credentials.
func NewUnauthorized(msg string) error { return New(ReasonUnauthorized, msg, nil) }

// NewExpired: the resourceVersion asked for has been compacted away.
func NewExpired(msg string) error { return New(ReasonExpired, msg, nil) }

// NewTooLarge: the object exceeds the size limit.
func NewTooLarge(msg string) error { return New(ReasonTooLarge, msg, nil) }

// NewUnavailable: the storage cannot be reached.
func NewUnavailable(msg string) error { return New(ReasonUnavailable, msg, nil) }

// NewBadRequest: the request itself is malformed.
func NewBadRequest(msg string) error { return New(ReasonBadRequest, msg, nil) }

// CauseResourceVersionTooLarge marks upstream's "Too large resource version"
// Timeout, which clients retry after a second.
const CauseResourceVersionTooLarge = "ResourceVersionTooLarge"

// NewTooLargeResourceVersion: the client asked for a revision the server has
// not reached, as upstream's cacher answers after waiting for it.
func NewTooLargeResourceVersion(rv, current int64) error {
	return New(ReasonTimeout, fmt.Sprintf("Too large resource version: %d, current: %d", rv, current),
		map[string]string{"cause": CauseResourceVersionTooLarge, "retryAfterSeconds": "1"})
}

// IsTooLargeResourceVersion reports that error; the request may be retried.
func IsTooLargeResourceVersion(err error) bool {
	return is(err, ReasonTimeout) && Metadata(err)["cause"] == CauseResourceVersionTooLarge
}

// NewInternal wraps an unexpected server error.
func NewInternal(err error) error {
	return New(ReasonInternal, fmt.Sprintf("Internal error occurred: %v", err), nil)
}

// ReasonOf returns the reason of err, from its details or, for errors built
// elsewhere (a transport failure), from its gRPC code.
func ReasonOf(err error) Reason {
	if err == nil {
		return ReasonUnknown
	}
	st, ok := status.FromError(err)
	if !ok {
		return ReasonUnknown
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return Reason(info.GetReason())
		}
	}
	for r, c := range codeOf {
		if c == st.Code() && r != ReasonBadRequest && r != ReasonTooManyReqs && r != ReasonUnsupported {
			return r
		}
	}
	return ReasonUnknown
}

// Message is the error's message without gRPC's "rpc error: code = …" prefix.
func Message(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

// Metadata returns the ErrorInfo metadata (resource, kind, name) of err.
func Metadata(err error) map[string]string {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetMetadata()
		}
	}
	return nil
}

// FieldViolation is one field error of an Invalid error.
type FieldViolation struct {
	Field       string // "spec.replicas"
	Description string // "Invalid value: -2: must be greater than or equal to 0"
	Type        string // upstream's field.ErrorType, "FieldValueInvalid"
}

// FieldViolations returns the field errors of an Invalid error.
func FieldViolations(err error) []FieldViolation {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	var out []FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, FieldViolation{Field: v.GetField(), Description: v.GetDescription(), Type: v.GetReason()})
			}
		}
	}
	return out
}

func is(err error, r Reason) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if ReasonOf(e) == r {
			return true
		}
	}
	return false
}

func IsNotFound(err error) bool      { return is(err, ReasonNotFound) }
func IsAlreadyExists(err error) bool { return is(err, ReasonAlreadyExists) }
func IsConflict(err error) bool      { return is(err, ReasonConflict) }
func IsInvalid(err error) bool       { return is(err, ReasonInvalid) }
func IsForbidden(err error) bool     { return is(err, ReasonForbidden) }
func IsUnauthorized(err error) bool  { return is(err, ReasonUnauthorized) }
func IsExpired(err error) bool       { return is(err, ReasonExpired) }
func IsTooLarge(err error) bool      { return is(err, ReasonTooLarge) }
func IsUnavailable(err error) bool   { return is(err, ReasonUnavailable) }
func IsTimeout(err error) bool       { return is(err, ReasonTimeout) }

// IsBadRequest reports a malformed request (bad selector, bad patch).
func IsBadRequest(err error) bool { return is(err, ReasonBadRequest) }

// IsTooManyRequests reports a refusal to act now (an eviction a disruption budget forbids).
func IsTooManyRequests(err error) bool { return is(err, ReasonTooManyReqs) }
