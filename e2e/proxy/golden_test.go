package proxy

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every golden rule set of the proxier's unit tests, which knftables' fake
// takes without checking a rule's syntax, loads into a real kernel.
func TestGoldenRuleSetsLoad(t *testing.T) {
	needRoot(t)
	files, err := filepath.Glob("../../proxy/internal/nftables/testdata/*.golden")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".golden"), func(t *testing.T) {
			ns := newNS(t)
			if out, err := exec.Command("ip", "netns", "exec", ns.name, "nft", "-f", f).CombinedOutput(); err != nil {
				t.Fatalf("nft -f %s: %v\n%s", f, err, out)
			}
		})
	}
}
