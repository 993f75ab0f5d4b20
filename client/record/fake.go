package record

import (
	"fmt"

	"skiff.dev/proto/scheme"
)

// FakeRecorder is client-go's: each event becomes "Type Reason Message" on
// Events, for tests to read. A full channel blocks the caller, as upstream,
// so size the buffer for the events a test expects.
type FakeRecorder struct {
	// Events receives every event; a FakeRecorder{} with a nil Events
	// discards them.
	Events chan string
}

// NewFakeRecorder returns a FakeRecorder whose Events holds bufferSize events.
func NewFakeRecorder(bufferSize int) *FakeRecorder {
	return &FakeRecorder{Events: make(chan string, bufferSize)}
}

// Event sends "eventtype reason message" on Events.
func (f *FakeRecorder) Event(obj scheme.Object, eventtype, reason, message string) {
	if f.Events != nil {
		f.Events <- eventtype + " " + reason + " " + message
	}
}

// Eventf sends the formatted event on Events.
func (f *FakeRecorder) Eventf(obj scheme.Object, eventtype, reason, messageFmt string, args ...any) {
	f.Event(obj, eventtype, reason, fmt.Sprintf(messageFmt, args...))
}

var _ Recorder = (*FakeRecorder)(nil)
