package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A failure in New returns its error: it used to close the nil server it
// was about to return, and panic over the error.
func TestNewFailsWithItsError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o := NewOptions()
	o.DataDir = filepath.Join(file, "data")
	s, err := New(t.Context(), *o, nil)
	if s != nil || err == nil || !strings.HasPrefix(err.Error(), "--data-dir: ") {
		t.Fatalf("New with a data dir under a file: %v, %v; want the --data-dir error", s, err)
	}
}
