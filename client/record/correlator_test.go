package record

import (
	"testing"
	"time"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// The patch of a repeated event is a merge patch of exactly the fields
// upstream's two-way diff yields, so it cannot clobber anything else.
func TestCountPatch(t *testing.T) {
	ev := &corev1.Event{Metadata: &metav1.ObjectMeta{Name: "p.1", Namespace: "ns"}, Reason: "BackOff", Message: `say "hi"`, Count: 3,
		LastTimestamp: metav1.NewTime(time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC))}
	want := `{"count":3,"lastTimestamp":"2026-03-01T12:00:05Z","message":"say \"hi\""}`
	if got := string(countPatch(ev)); got != want {
		t.Errorf("patch %s, want %s", got, want)
	}
}

// Keys keep their fields apart: upstream's plain concatenation would make
// ("ab", "c") and ("a", "bc") one object.
func TestKeysKeepFieldsApart(t *testing.T) {
	a := &corev1.Event{InvolvedObject: &corev1.ObjectReference{Namespace: "ab", Name: "c"}}
	b := &corev1.Event{InvolvedObject: &corev1.ObjectReference{Namespace: "a", Name: "bc"}}
	if spamKey(a) == spamKey(b) || eventKey(a) == eventKey(b) {
		t.Error("events about different objects share a key")
	}
}
