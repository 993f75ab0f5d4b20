// Package app is skiffctl as a library: what cmd/skiffctl runs, and what
// tests and other programs call to run skiffctl in-process, exactly as a
// user's shell would (the apiserver is named by --kubeconfig, SKIFFCONFIG or
// ~/.skiff/config). The commands themselves stay in internal/.
package app

import (
	"context"

	"skiff.dev/ctl/internal/cmd"
)

// Streams are a run's stdin, stdout and stderr.
type Streams = cmd.Streams

// LastApplied is the annotation apply keeps the applied configuration in,
// kubectl's kubectl.kubernetes.io/last-applied-configuration.
const LastApplied = cmd.LastApplied

// Main runs skiffctl with args until it is done or interrupted (SIGINT,
// SIGTERM) and returns its exit code.
func Main(s Streams, args []string) int { return cmd.Main(s, args, nil) }

// Run is Main under ctx, whose end is the user's Ctrl-C.
func Run(ctx context.Context, s Streams, args []string) int { return cmd.Run(ctx, s, args, nil) }
