package nftables

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func TestCoalesce(t *testing.T) {
	const p = "add element ip skiff-proxy "
	for _, tc := range []struct {
		name, in, want string
	}{{
		name: "a map's additions become one command",
		in:   p + "m { 1 : a }\n" + p + "m { 2 : b }\n" + p + "m { 3 : c }\n",
		want: p + "m { 1 : a, 2 : b, 3 : c }\n",
	}, {
		name: "interleaved maps group by map, first seen first, each in order",
		in:   p + "s { 1 : goto x }\n" + p + "e { 1 . 0 : a }\n" + p + "e { 1 . 1 : b }\n" + p + "s { 2 : goto x }\n" + p + "e { 2 . 0 : c }\n",
		want: p + "s { 1 : goto x, 2 : goto x }\n" + p + "e { 1 . 0 : a, 1 . 1 : b, 2 . 0 : c }\n",
	}, {
		name: "another command ends a run: a chain is there before elements that go to it",
		in:   p + "s { 1 : goto x }\nadd chain ip skiff-proxy y\n" + p + "s { 2 : goto y }\n",
		want: p + "s { 1 : goto x }\nadd chain ip skiff-proxy y\n" + p + "s { 2 : goto y }\n",
	}, {
		name: "a deletion ends a run of additions, and a replacement stays delete then add",
		in: p + "m { 1 : a }\ndelete element ip skiff-proxy m { 2 }\ndelete element ip skiff-proxy m { 3 }\n" +
			p + "m { 2 : b }\n" + p + "m { 3 : c }\n",
		want: p + "m { 1 : a }\ndelete element ip skiff-proxy m { 2, 3 }\n" + p + "m { 2 : b, 3 : c }\n",
	}, {
		name: "deletions from different maps stay apart",
		in:   "delete element ip skiff-proxy m { 1 }\ndelete element ip skiff-proxy n { 1 }\ndelete element ip skiff-proxy m { 2 }\n",
		want: "delete element ip skiff-proxy m { 1 }\ndelete element ip skiff-proxy n { 1 }\ndelete element ip skiff-proxy m { 2 }\n",
	}, {
		name: "set elements, comments and tables of other families",
		in:   p + "hp { 10.0.0.1 . 10.0.0.1 comment \"a, b { c }\" }\nadd element ip6 skiff-proxy hp { ::1 . ::1 }\n" + p + "hp { 10.0.0.2 . 10.0.0.2 }\n",
		want: p + "hp { 10.0.0.1 . 10.0.0.1 comment \"a, b { c }\", 10.0.0.2 . 10.0.0.2 }\nadd element ip6 skiff-proxy hp { ::1 . ::1 }\n",
	}, {
		name: "everything else as it was",
		in:   "add table ip skiff-proxy { comment \"x\" ; }\nflush chain ip skiff-proxy c\nadd rule ip skiff-proxy c ip daddr { 1.2.3.4, 5.6.7.8 } drop\n",
		want: "add table ip skiff-proxy { comment \"x\" ; }\nflush chain ip skiff-proxy c\nadd rule ip skiff-proxy c ip daddr { 1.2.3.4, 5.6.7.8 } drop\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := coalesce(tc.in); got != tc.want {
				t.Errorf("coalesce:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// TestCoalescingWritesWhatKnftablesWrites: the elements of a transaction
// as knftables writes them reach nft, and a transaction knftables refused
// is never run.
func TestCoalescingWritesWhatKnftablesWrites(t *testing.T) {
	fake := knftables.NewFake(knftables.IPv4Family, TableName)
	tx := fake.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Map{Name: "m", Type: "ipv4_addr : ipv4_addr"})
	for _, k := range []string{"10.0.0.1", "10.0.0.2"} {
		tx.Add(&knftables.Element{Map: "m", Key: []string{k}, Value: []string{"10.1.0.1"}})
	}
	// cat stands in for nft: what it prints is what nft would read.
	out := &strings.Builder{}
	c := &Coalescing{Interface: fake, Command: func(ctx context.Context) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "cat")
		cmd.Stdout = out
		return cmd
	}}
	if err := c.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	if stdin := out.String(); !strings.Contains(stdin, "add element ip skiff-proxy m { 10.0.0.1 : 10.1.0.1, 10.0.0.2 : 10.1.0.1 }\n") {
		t.Errorf("nft got:\n%s", stdin)
	}
	if m, _ := fake.ListElements(t.Context(), "map", "m"); len(m) != 0 {
		t.Errorf("the inner interface ran a transaction that succeeded: %v", m)
	}

	// A failing nft: the transaction goes to the inner interface for its
	// error (here the fake's, which runs it).
	c.Command = func(ctx context.Context) *exec.Cmd { return exec.CommandContext(ctx, "false") }
	if err := c.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	if m, _ := fake.ListElements(t.Context(), "map", "m"); len(m) != 2 {
		t.Errorf("after nft failed, the inner interface holds %v, want the 2 elements", m)
	}

	bad := fake.NewTransaction()
	bad.Add(&knftables.Element{Map: "m"}) // no key: knftables refuses it
	ran := false
	c.Command = func(ctx context.Context) *exec.Cmd { ran = true; return exec.CommandContext(ctx, "true") }
	if err := c.Run(t.Context(), bad); err == nil || ran {
		t.Errorf("a refused transaction: err %v, nft ran %v; want knftables' error and no nft", err, ran)
	}
}
