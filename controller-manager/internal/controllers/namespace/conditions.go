package namespace

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// The status conditions this controller keeps on a terminating namespace,
// upstream's NamespaceConditionTypes, in upstream's order.
const (
	DeletionDiscoveryFailure           = "NamespaceDeletionDiscoveryFailure"
	DeletionGroupVersionParsingFailure = "NamespaceDeletionGroupVersionParsingFailure"
	DeletionContentFailure             = "NamespaceDeletionContentFailure"
	ContentRemaining                   = "NamespaceContentRemaining"
	FinalizersRemaining                = "NamespaceFinalizersRemaining"
)

var conditionTypes = []string{
	DeletionDiscoveryFailure,
	DeletionGroupVersionParsingFailure,
	DeletionContentFailure,
	ContentRemaining,
	FinalizersRemaining,
}

// A condition that did not fail this pass is written False with these, so
// a user sees a cleared failure rather than a stale one.
var (
	okReasons = map[string]string{
		DeletionDiscoveryFailure:           "ResourcesDiscovered",
		DeletionGroupVersionParsingFailure: "ParsedGroupVersions",
		DeletionContentFailure:             "ContentDeleted",
		ContentRemaining:                   "ContentRemoved",
		FinalizersRemaining:                "ContentHasNoFinalizers",
	}
	okMessages = map[string]string{
		DeletionDiscoveryFailure:           "All resources successfully discovered",
		DeletionGroupVersionParsingFailure: "All legacy kube types successfully parsed",
		DeletionContentFailure:             "All content successfully deleted, may be waiting on finalization",
		ContentRemaining:                   "All content successfully removed",
		FinalizersRemaining:                "All content-preserving finalizers finished",
	}
)

// conditionUpdater collects what one pass over a namespace's content found
// and turns it into status conditions, as upstream's namespaceConditionUpdater.
type conditionUpdater struct {
	failed              []*corev1.NamespaceCondition
	deleteContentErrors []error
}

func (u *conditionUpdater) fail(typ, reason, message string) {
	u.failed = append(u.failed, &corev1.NamespaceCondition{Type: typ, Status: "True", Reason: reason, Message: message})
}

func (u *conditionUpdater) discoveryErr(err error) {
	u.fail(DeletionDiscoveryFailure, "DiscoveryFailed", apierrors.Message(err))
}

func (u *conditionUpdater) groupVersionErr(err error) {
	u.fail(DeletionGroupVersionParsingFailure, "GroupVersionParsingFailed", err.Error())
}

func (u *conditionUpdater) deleteContentErr(err error) {
	u.deleteContentErrors = append(u.deleteContentErrors, err)
}

// contentTotals records what is left: instances by resource
// ("pods." for the core group, as upstream prints a GroupResource) and by
// the finalizers holding them.
func (u *conditionUpdater) contentTotals(remaining, finalizers map[string]int) {
	if msgs := counts(remaining, "%s has %d resource instances"); len(msgs) > 0 {
		u.fail(ContentRemaining, "SomeResourcesRemain", "Some resources are remaining: "+strings.Join(msgs, ", "))
	}
	if msgs := counts(finalizers, "%s in %d resource instances"); len(msgs) > 0 {
		u.fail(FinalizersRemaining, "SomeFinalizersRemain", "Some content in the namespace has finalizers remaining: "+strings.Join(msgs, ", "))
	}
}

// counts is sorted so that an unchanged state gives an unchanged message
// and no status write.
func counts(m map[string]int, format string) []string {
	var out []string
	for k, n := range m {
		if n > 0 {
			out = append(out, fmt.Sprintf(format, k, n))
		}
	}
	sort.Strings(out)
	return out
}

// update writes the pass's conditions into status and reports whether
// anything a user sees changed. A condition's lastTransitionTime moves only
// when its status flips.
func (u *conditionUpdater) update(status *corev1.NamespaceStatus, now time.Time) bool {
	if c := find(u.failed, DeletionContentFailure); c == nil && len(u.deleteContentErrors) > 0 {
		msgs := make([]string, 0, len(u.deleteContentErrors))
		for _, err := range u.deleteContentErrors {
			msgs = append(msgs, apierrors.Message(err))
		}
		sort.Strings(msgs)
		u.fail(DeletionContentFailure, "ContentDeletionFailed",
			fmt.Sprintf("Failed to delete all resource types, %d remaining: %v", len(msgs), strings.Join(msgs, ", ")))
	}
	changed := false
	for _, typ := range conditionTypes {
		want := find(u.failed, typ)
		if want == nil {
			want = &corev1.NamespaceCondition{Type: typ, Status: "False", Reason: okReasons[typ], Message: okMessages[typ]}
		}
		old := find(status.Conditions, typ)
		switch {
		case old == nil:
			want.LastTransitionTime = metav1.NewTime(now)
			status.Conditions = append(status.Conditions, want)
			changed = true
		case old.Status != want.Status || old.Reason != want.Reason || old.Message != want.Message:
			if old.Status != want.Status {
				old.LastTransitionTime = metav1.NewTime(now)
			}
			old.Status, old.Reason, old.Message = want.Status, want.Reason, want.Message
			changed = true
		}
	}
	return changed
}

func find(cs []*corev1.NamespaceCondition, typ string) *corev1.NamespaceCondition {
	for _, c := range cs {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}
