package nftables

import (
	"bytes"
	"context"
	"os/exec"
	"strings"

	"sigs.k8s.io/knftables"
)

// Coalescing is a knftables.Interface whose Run gives nft the element
// operations of a transaction as few commands as they can be: knftables
// writes one `add element` command per element, and nft spends about 10 µs
// on each command whatever it holds (100,000 endpoint elements: 1.5 s one
// per command, 1.0 s as one command, on this machine kind), which is most
// of a big full sync. Everything but Run is the inner Interface's.
type Coalescing struct {
	knftables.Interface
	// Command is nft reading a transaction on its stdin; nil runs
	// `nft -f -` from PATH. The e2e tests run it in a namespace.
	Command func(ctx context.Context) *exec.Cmd
}

// Run runs tx, coalesced, in one nft.
func (c *Coalescing) Run(ctx context.Context, tx *knftables.Transaction) error {
	text := tx.String()
	if strings.HasPrefix(text, errorMark) || strings.Contains(text, "\n"+errorMark) {
		// knftables refused an operation when it was added; it returns that
		// error without running anything.
		return c.Interface.Run(ctx, tx)
	}
	var cmd *exec.Cmd
	if c.Command != nil {
		cmd = c.Command(ctx)
	} else {
		cmd = exec.CommandContext(ctx, "nft", "-f", "-")
	}
	cmd.Stdin = strings.NewReader(coalesce(text))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if cmd.Run() == nil {
		return nil
	}
	// A failed transaction changed nothing. Running it again as knftables
	// writes it gives knftables' own error (IsNotFound, IsAlreadyExists)
	// and nft's message names the operation's own line, not a merged one.
	return c.Interface.Run(ctx, tx)
}

// errorMark starts the comment Transaction.String ends with when an
// operation was refused.
const errorMark = "# ERROR: "

// coalesce rewrites nft commands, one per line as knftables writes them,
// so that element operations on one set or map become one command: each
// run of consecutive `add element` commands becomes one command per set,
// in the order the sets first appear (additions to different sets
// commute, and each set's own keep their order), and consecutive
// `delete element` commands on one set become one. Every other command
// stays where it is and ends a run.
func coalesce(text string) string {
	var out strings.Builder
	out.Grow(len(text))
	type group struct {
		prefix string
		bodies []string
	}
	var run []*group // the current run of additions
	index := map[string]*group{}
	var dels *group // the current run of deletions from one set
	flush := func() {
		for _, g := range run {
			writeElements(&out, g.prefix, g.bodies)
		}
		run = run[:0]
		clear(index)
		if dels != nil {
			writeElements(&out, dels.prefix, dels.bodies)
			dels = nil
		}
	}
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		prefix, body, ok := elementOp(line)
		switch {
		case ok && strings.HasPrefix(prefix, "add "):
			if dels != nil {
				flush()
			}
			g := index[prefix]
			if g == nil {
				g = &group{prefix: prefix}
				index[prefix] = g
				run = append(run, g)
			}
			g.bodies = append(g.bodies, body)
		case ok && dels != nil && dels.prefix == prefix:
			dels.bodies = append(dels.bodies, body)
		case ok:
			flush()
			dels = &group{prefix: prefix, bodies: []string{body}}
		default:
			flush()
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}
	flush()
	return out.String()
}

// elementOp splits `add element ip t m { BODY }` (or delete) into its
// command up to the brace and the element.
func elementOp(line string) (prefix, body string, ok bool) {
	if !strings.HasPrefix(line, "add element ") && !strings.HasPrefix(line, "delete element ") {
		return "", "", false
	}
	i := strings.Index(line, " { ")
	if i < 0 || !strings.HasSuffix(line, " }") || len(line) < i+5 {
		return "", "", false
	}
	return line[:i], line[i+3 : len(line)-2], true
}

func writeElements(out *strings.Builder, prefix string, bodies []string) {
	out.WriteString(prefix)
	out.WriteString(" { ")
	for i, b := range bodies {
		if i > 0 {
			out.WriteString(", ")
		}
		out.WriteString(b)
	}
	out.WriteString(" }\n")
}
