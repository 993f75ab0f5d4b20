package cmd

import (
	"testing"

	"skiff.dev/proto/scheme"
)

func TestDescribeEveryKindHasALayout(t *testing.T) {
	for _, k := range scheme.All() {
		if _, ok := describers[k.Kind]; !ok {
			t.Errorf("no describer for %s", k.Kind)
		}
	}
}
