package cmd

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestExplain(t *testing.T) {
	// explain needs no server: it reads the documentation skiffctl embeds.
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := Run(context.Background(), Streams{In: strings.NewReader(""), Out: &out, Err: &errb}, args, nil)
		return out.String(), errb.String(), code
	}
	must := func(args ...string) string {
		t.Helper()
		out, errOut, code := run(args...)
		if code != 0 {
			t.Fatalf("skiffctl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	out := must("explain", "deployment.spec.replicas")
	want := "GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\nFIELD: replicas <integer>\n\nDESCRIPTION:\n    Number of desired pods."
	if !strings.HasPrefix(out, want) {
		t.Fatalf("explain:\n%s", out)
	}
	if out := must("explain", "pods"); !strings.Contains(out, "  spec\t<PodSpec>\n") {
		t.Fatalf("explain pods:\n%s", out)
	}
	if _, errOut, code := run("explain", "pod.spec.nope"); code != 1 || !strings.Contains(errOut, `field "spec.nope" does not exist`) {
		t.Fatalf("unknown field: %q", errOut)
	}
}
