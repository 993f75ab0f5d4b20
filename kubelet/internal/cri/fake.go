package cri

import (
	"context"

	critesting "k8s.io/cri-api/pkg/apis/testing"
)

// Fake is cri-api's in-memory runtime and image services as one Runtime,
// for unit tests and hollow nodes.
type Fake struct {
	*critesting.FakeRuntimeService
	*critesting.FakeImageService
}

// NewFake returns an empty fake runtime.
func NewFake() *Fake {
	return &Fake{critesting.NewFakeRuntimeService(), critesting.NewFakeImageService()}
}

// Close closes nothing: both services are in memory.
func (f *Fake) Close(context.Context) error { return nil }

var _ Runtime = (*Fake)(nil)
